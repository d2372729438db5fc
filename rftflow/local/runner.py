"""Runs a local-backend job in a child process, so a crash, an out-of-memory kill or a timeout there
cannot take the caller down. The caller never imports torch; the child (rftflow.local.worker) does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_TERM_GRACE_S = 10.0


class WorkerError(RuntimeError):
    """The worker child failed; the message says how (error, signal, timeout) and where its log is."""

    def __init__(self, message: str, *, kind: str, returncode: int | None, log_path: Path):
        super().__init__(message)
        self.kind = kind
        self.returncode = returncode
        self.log_path = log_path


class WorkerTimeout(WorkerError):
    """The worker ran past its timeout and was stopped."""


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
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        # OpenMP threads spin only briefly before sleeping. With the default long spin, 2-thread training on
        # 2 cores shared with 2 busy processes ran 0.12 -> 4-5 s/step; with 10k spins it ran 0.3-0.5 s/step
        # and stayed at 0.13 s/step on idle cores (OMP_WAIT_POLICY=PASSIVE: 0.21 idle). Set either to override.
        env["GOMP_SPINCOUNT"] = "10000"
    env.update(extra or {})
    return env


def run_worker(kind: str, params: dict[str, Any], *, job_dir: str | Path, timeout_s: float,
               threads: int = 2, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one job (`build_tiny`, `generate`, `sft`, `grpo`) in a child and return its result dict.

    Files in job_dir: `{kind}.json` (the job), `{kind}.pid` (the child's pid while it runs),
    `{kind}.log` (its stdout and stderr, appended across retries) and `{kind}-result.json`.
    Raises WorkerTimeout after timeout_s, WorkerError when the child fails or is killed.
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    job_path, pid_path = job_dir / f"{kind}.json", job_dir / f"{kind}.pid"
    log_path, result_path = job_dir / f"{kind}.log", job_dir / f"{kind}-result.json"
    result_path.unlink(missing_ok=True)
    job_path.write_text(json.dumps({"kind": kind, "params": params, "threads": threads,
                                    "result_path": str(result_path)}, indent=2, default=str), encoding="utf-8")
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n=== {kind} worker started {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rftflow.local.worker", str(job_path)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=child_env(threads, env), cwd=str(_PROJECT_ROOT), start_new_session=True,
        )
        pid_path.write_text(str(proc.pid), encoding="utf-8")
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise WorkerTimeout(
                f"{kind} worker ran past its timeout of {timeout_s:g} s and was stopped; log: {log_path}",
                kind=kind, returncode=proc.returncode, log_path=log_path) from None
        except BaseException:  # the caller is being stopped (Ctrl-C, Airflow task kill): stop the child too
            _stop(proc)
            raise
        finally:
            pid_path.unlink(missing_ok=True)
    return _result(kind, proc.returncode, result_path, log_path)


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
