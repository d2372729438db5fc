"""Runs a local-backend job in a child process, so a crash, an out-of-memory kill or a timeout there
cannot take the caller down. The caller never imports torch; the child (rftflow.backends.local.worker) does.

Training children hold the stage's trainer lease (rftflow.backends.local.lease): a task killed outright leaves its
trainer running, and the retry adopts it (or, when its lease went stale, replaces it) instead of starting
a second trainer on the same folder. On a node with several GPUs a trainer is started by accelerate launch,
one process per GPU (the recipe's `processes`; rftflow.backends.local.gpu builds the command).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rftflow.backends.local import lease
from rftflow.backends.local.progress import ProgressReporter, every_s, progress_path

log = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parents[3]
_TERM_GRACE_S = 10.0
_POLL_S = 1.0  # how often a waiting parent looks at its trainer's progress
TRAINING_KINDS = ("sft", "grpo")  # the jobs that write a progress file
_EXTRA_ENV: ContextVar[dict[str, str] | None] = ContextVar("rftflow_child_env", default=None)


@contextlib.contextmanager
def extra_child_env(values: Mapping[str, str]) -> Iterator[None]:
    """Environment for the children launched inside this block (e.g. the cycle's MLflow run for its trainer)."""
    token = _EXTRA_ENV.set({**(_EXTRA_ENV.get() or {}), **values})
    try:
        yield
    finally:
        _EXTRA_ENV.reset(token)


def _reporter(kind: str, job_dir: str | Path, owner: str | None = None) -> ProgressReporter | None:
    return ProgressReporter(kind, job_dir, owner=owner) if kind in TRAINING_KINDS else None


def _report(reporter: ProgressReporter | None) -> None:
    """Log the trainer's progress lines that are due (see rftflow.backends.local.progress for the rate)."""
    if reporter is None:
        return
    for line in reporter.poll():
        log.info("%s", line)


class WorkerError(RuntimeError):
    """The worker child failed; the message says how (error, signal, timeout) and where its log is."""

    def __init__(self, message: str, *, kind: str, returncode: int | None, log_path: Path):
        super().__init__(message)
        self.kind = kind
        self.returncode = returncode
        self.log_path = log_path


class WorkerTimeout(WorkerError):
    """The worker ran past its timeout and was stopped."""


class TrainerLost(WorkerError):
    """A leased trainer ended without a result (killed, hung past its heartbeat, or replaced)."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, _TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def child_env(threads: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p),
    })
    env.update(_EXTRA_ENV.get() or {})
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        # OpenMP threads spin only briefly before sleeping. With the default long spin, 2-thread training on
        # 2 cores shared with 2 busy processes ran 0.12 -> 4-5 s/step; with 10k spins it ran 0.3-0.5 s/step
        # and stayed at 0.13 s/step on idle cores (OMP_WAIT_POLICY=PASSIVE: 0.21 idle). Set either to override.
        env["GOMP_SPINCOUNT"] = "10000"
    env.update(extra or {})
    return env


def worker_launch(kind: str, params: dict[str, Any], job_path: Path, env: Mapping[str, str]
                  ) -> tuple[list[str], dict[str, str]]:
    """The child's command and the environment it adds: one process, or (a training job on several CUDA devices,
    as the recipe's `processes` allows) accelerate launch with one process per device. Where there is no NVIDIA
    device node nothing is probed: one process, as on CPU."""
    from rftflow.backends.local import gpu

    if kind not in TRAINING_KINDS:
        return gpu.worker_command(str(job_path), processes=1), {}
    plan = gpu.launch_plan(params.get("cfg") or {}, gpu.cuda_probe(env), env)
    port = _free_port() if plan["processes"] > 1 else None
    return gpu.worker_command(str(job_path), processes=plan["processes"], mixed_precision=plan["mixed_precision"],
                              port=port), plan["env"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(kind: str, params: dict[str, Any], *, job_dir: str | Path, timeout_s: float,
               threads: int = 2, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one job (`build_tiny`, `generate`, `sft`, `grpo`) in a child and return its result dict.

    Files in job_dir: `{kind}.json` (the job), `{kind}.pid` (the child's pid while it runs),
    `{kind}.log` (its stdout and stderr, appended across retries) and `{kind}-result.json`.
    Raises WorkerTimeout after timeout_s, WorkerError when the child fails or is killed.
    """
    proc = launch(kind, params, job_dir=job_dir, threads=threads, env=env)
    return wait_child(proc, kind, job_dir=job_dir, timeout_s=timeout_s)


def launch(kind: str, params: dict[str, Any], *, job_dir: str | Path, threads: int = 2,
           env: Mapping[str, str] | None = None,
           command: tuple[list[str], dict[str, str]] | None = None) -> subprocess.Popen:
    """Start the worker child for one job, in its own session (so it outlives a killed caller when it
    holds a trainer lease, and can be stopped as a process group); returns it without waiting.
    `command` is what worker_launch gave for it (worked out here when not given)."""
    if kind in TRAINING_KINDS:
        every_s()  # a bad RFTFLOW_PROGRESS_EVERY_S fails here, before a trainer starts
    job_dir = Path(job_dir)
    job_path, pid_path = job_dir / f"{kind}.json", job_dir / f"{kind}.pid"
    environment = child_env(threads, env)
    argv, extra = command or worker_launch(kind, params, job_path, environment)  # a recipe it cannot honour fails here
    environment.update(extra)
    job_dir.mkdir(parents=True, exist_ok=True)
    log_path, result_path = job_dir / f"{kind}.log", job_dir / f"{kind}-result.json"
    result_path.unlink(missing_ok=True)
    progress_path(kind, job_dir).unlink(missing_ok=True)  # an earlier trainer's; this one writes its own
    job_path.write_text(json.dumps({"kind": kind, "params": params, "threads": threads,
                                    "result_path": str(result_path)}, indent=2, default=str), encoding="utf-8")
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n=== {kind} worker started {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
        if "accelerate.commands.launch" in argv:
            log.write(" ".join(argv) + "\n")
        log.flush()
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=environment, cwd=str(_PROJECT_ROOT), start_new_session=True,
        )
    pid_path.write_text(str(proc.pid), encoding="utf-8")
    return proc


def wait_child(proc: subprocess.Popen, kind: str, *, job_dir: str | Path, timeout_s: float) -> dict[str, Any]:
    """Wait for a child this process launched; stop it on timeout or when the caller itself is stopped."""
    job_dir = Path(job_dir)
    log_path, result_path = job_dir / f"{kind}.log", job_dir / f"{kind}-result.json"
    reporter = _reporter(kind, job_dir)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                _stop(proc)
                raise WorkerTimeout(
                    f"{kind} worker ran past its timeout of {timeout_s:g} s and was stopped; log: {log_path}",
                    kind=kind, returncode=proc.returncode, log_path=log_path)
            try:
                proc.wait(timeout=min(left, _POLL_S) if reporter else left)
                break
            except subprocess.TimeoutExpired:
                _report(reporter)
    except WorkerTimeout:
        raise
    except BaseException:  # the caller is being stopped (Ctrl-C, Airflow task kill): stop the child too
        _stop(proc)
        raise
    finally:
        (job_dir / f"{kind}.pid").unlink(missing_ok=True)
    _report(reporter)  # the lines of its last second (done, saving)
    return _result(kind, proc.returncode, result_path, log_path)


def read_result(kind: str, job_dir: str | Path) -> dict[str, Any] | None:
    """The result file a worker left in job_dir ({"ok": ..., "result"/"error": ..., "owner": ...}), or None."""
    path = Path(job_dir) / f"{kind}-result.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def result_of(kind: str, payload: dict[str, Any], job_dir: str | Path) -> dict[str, Any]:
    """A finished worker's result (for one this process did not launch: adopted, or waited for deferred)."""
    log_path = Path(job_dir) / f"{kind}.log"
    if payload.get("ok"):
        return payload["result"]
    err = payload.get("error") or {}
    raise WorkerError(f"{kind} worker failed: {err.get('type')}: {err.get('message')}; log: {log_path}",
                      kind=kind, returncode=None, log_path=log_path)


def _result(kind: str, returncode: int, result_path: Path, log_path: Path) -> dict[str, Any]:
    payload = None
    if result_path.exists():
        try:
            payload = json.loads(result_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            payload = None
    if returncode == 0 and payload and payload.get("ok"):
        return payload["result"]
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else str(-returncode)
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -returncode == signal.SIGKILL else ""
        message = f"{kind} worker was killed by {name}{hint}; log: {log_path}"
    elif payload and payload.get("error"):
        err = payload["error"]
        message = f"{kind} worker failed: {err['type']}: {err['message']}; log: {log_path}"
    else:
        message = f"{kind} worker exited with status {returncode}; log: {log_path}\n{_tail(log_path)}"
    raise WorkerError(message, kind=kind, returncode=returncode, log_path=log_path)


# ------------------------------------------------------------------------------------ leased trainers


@dataclass
class Trainer:
    """A training child that holds (or, adopted, held before this process) the stage's trainer lease."""

    kind: str
    job_dir: Path
    owner: str
    started_at: float
    proc: subprocess.Popen | None = None  # None when adopted: another process launched it

    @property
    def adopted(self) -> bool:
        return self.proc is None


def start_or_adopt(kind: str, params: dict[str, Any], *, job_dir: str | Path, threads: int = 2,
                   heartbeat_s: float = lease.HEARTBEAT_S, stale_after_s: float = lease.STALE_AFTER_S,
                   env: Mapping[str, str] | None = None) -> Trainer:
    """The stage's one trainer: the live one when there is one (a retried task adopts it and waits), else a
    new child, after making sure a stale lease's trainer is dead. The child resumes from the last checkpoint."""
    job_dir = Path(job_dir)
    with lease.locked(job_dir):
        current = lease.read_lease(job_dir)
        if current is not None and current.state() == "live":
            log.info("adopting the running %s; waiting for it instead of starting a second trainer",
                     current.describe())
            return Trainer(kind, job_dir, current.owner, current.started_at)
        if current is not None and current.state() == "stale":
            log.warning("trainer lease is stale: %s", lease.ensure_dead(current))
        # before the lease is written: a recipe this machine cannot honour leaves no lease without a trainer
        command = worker_launch(kind, params, job_dir / f"{kind}.json", child_env(threads, env))
        new = lease.new_lease(kind, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s)
        lease.write_lease(job_dir, new)  # before the child starts: it checks that it holds the lease
        proc = launch(kind, {**params, "lease": {"dir": str(job_dir), "owner": new.owner,
                                                 "heartbeat_s": heartbeat_s}},
                      job_dir=job_dir, threads=threads, env=env, command=command)
        new.pid, new.pid_start = proc.pid, lease.process_start(proc.pid)
        lease.write_lease(job_dir, new)
    return Trainer(kind, job_dir, new.owner, new.started_at, proc)


def trainer_event(kind: str, job_dir: str | Path, owner: str, deadline: float | None = None) -> dict[str, Any] | None:
    """How a leased trainer ended ({"status": success | failed | lost | timeout, ...}), or None while it runs.

    Read from files only (result and lease), so the waiting side may be another process: a retried task,
    or the triggerer of a deferred one."""
    if not Path(job_dir).is_dir():
        return {"status": "unobservable", "job_name": owner,
                "message": f"{job_dir} is not visible here: the triggerer needs the stage folder (a file:// "
                           "artifact root it can read, or RFTFLOW_LOCAL_WORK_DIR on a shared volume)"}
    payload = read_result(kind, job_dir)
    if payload is not None and payload.get("owner") == owner:
        if payload.get("ok"):
            return {"status": "success", "job_name": owner}
        err = payload.get("error") or {}
        return {"status": "failed", "job_name": owner, "message": f"{err.get('type')}: {err.get('message')}"}
    current = lease.read_lease(job_dir)
    if current is None or current.owner != owner:
        return {"status": "lost", "job_name": owner,
                "message": "another trainer took over the stage folder; a retry adopts or resumes it"}
    state = current.state()
    if state == "finished":  # finished between the two reads: its result is there now
        return trainer_event(kind, job_dir, owner, deadline) if read_result(kind, job_dir) else {
            "status": "lost", "job_name": owner, "message": "the trainer finished without writing a result"}
    if state == "stale":
        return {"status": "lost", "job_name": owner,
                "message": f"{current.describe()} stopped without a result (killed, or hung past "
                           f"{current.stale_after_s:g} s without a heartbeat); a retry resumes from its last checkpoint"}
    if deadline is not None and time.time() > deadline:
        return {"status": "timeout", "job_name": owner, "message": f"{current.describe()} ran past its timeout"}
    return None


def wait_trainer(trainer: Trainer, *, timeout_s: float, poll_s: float = 1.0) -> dict[str, Any]:
    """Wait for a trainer this process launched (as its parent) or adopted (by watching its files)."""
    if trainer.proc is not None:
        return wait_child(trainer.proc, trainer.kind, job_dir=trainer.job_dir, timeout_s=timeout_s)
    log_path = trainer.job_dir / f"{trainer.kind}.log"
    reporter = _reporter(trainer.kind, trainer.job_dir, trainer.owner)
    try:
        while (event := trainer_event(trainer.kind, trainer.job_dir, trainer.owner,
                                      trainer.started_at + timeout_s)) is None:
            _report(reporter)
            time.sleep(poll_s)
        _report(reporter)
    except BaseException:  # the caller is being stopped: stop the trainer it adopted, as it would its own
        stop_trainer(trainer.kind, trainer.job_dir, trainer.owner)
        raise
    return finished_trainer(trainer.kind, trainer.job_dir, event, log_path)


def finished_trainer(kind: str, job_dir: str | Path, event: dict[str, Any], log_path: Path | None = None
                     ) -> dict[str, Any]:
    """The result dict for a `trainer_event`; a clear WorkerError (WorkerTimeout) for any other ending."""
    job_dir = Path(job_dir)
    log_path = log_path or job_dir / f"{kind}.log"
    (job_dir / f"{kind}.pid").unlink(missing_ok=True)  # the launcher of a detached trainer never waited on it
    status = event.get("status")
    if status == "success":
        payload = read_result(kind, job_dir)
        if payload is None:
            raise WorkerError(f"{kind} trainer reported success but left no result; log: {log_path}",
                              kind=kind, returncode=None, log_path=log_path)
        return result_of(kind, payload, job_dir)
    if status == "timeout":
        stop_trainer(kind, job_dir, str(event.get("job_name")))
        raise WorkerTimeout(f"{kind} trainer {event.get('message', 'ran past its timeout')} and was stopped; "
                            f"log: {log_path}", kind=kind, returncode=None, log_path=log_path)
    error = TrainerLost if status == "lost" else WorkerError
    raise error(f"{kind} trainer {status}: {event.get('message', '')}; log: {log_path}\n{_tail(log_path)}",
                kind=kind, returncode=None, log_path=log_path)


def stop_trainer(kind: str, job_dir: str | Path, owner: str) -> str:
    """Stop the trainer holding the lease when it is `owner` (a task stopping the trainer it started)."""
    with lease.locked(job_dir):
        current = lease.read_lease(job_dir)
        if current is None or current.owner != owner or current.finished:
            return "no trainer of this task is running"
        done = lease.ensure_dead(current)
    log.warning("%s", done)
    return done
