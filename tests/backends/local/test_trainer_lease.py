"""A local training stage is owned by exactly one live trainer: a task killed outright leaves its trainer
running and the retry adopts it; a dead or hung trainer's stale lease is taken over and training resumes
from the last checkpoint; a trainer whose lease was taken writes nothing more; a finished stage whose
manifest was lost is not trained again; the DAG's training task defers on the trainer instead of
parenting it. metrics.jsonl keeps one row per step through all of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rftflow.backends.base import PendingJob, StageContext
from rftflow.backends.local import lease
from rftflow.backends.local.backend import LocalBackend
from rftflow.backends.local.runner import TrainerLost, WorkerError

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "include" / "data" / "tiny"
CFG = {"max_steps": 60, "batch_size": 4, "logging_steps": 5, "save_steps": 10, "warmup_steps": 0}
FAST_LEASE = {"lease_heartbeat_s": 0.5, "lease_stale_s": 4.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "shared-tiny"
    work = str(shared / "work")
    base = LocalBackend(work_dir=work).resolve_model("tiny", StageContext(str(shared / "artifacts"), "t", "r", 0,
                                                                          "base"))
    root = tmp_path_factory.mktemp("lease")
    sft_path = root / "sft.jsonl"
    sft_path.write_text("".join((TINY / "sft.jsonl").read_text().splitlines(keepends=True)[:256]))
    return work, base, root, str(sft_path)


def _ctx(root: Path, stage: str) -> StageContext:
    return StageContext(str(root / "artifacts"), "tests", "run-lease", 0, stage)


def _task_process(work: str, base: str, ctx: StageContext, sft_path: str) -> subprocess.Popen:
    """A stand-in for an Airflow task process running the sft stage (synchronously, as its parent)."""
    code = ("import json, sys\n"
            "from rftflow.backends.base import StageContext\n"
            "from rftflow.backends.local.backend import LocalBackend\n"
            "a = json.loads(sys.argv[1])\n"
            "LocalBackend(work_dir=a['work'], **a['lease']).sft(StageContext(*a['ctx']), a['base'], a['sft'], a['cfg'])\n")
    args = json.dumps({"work": work, "lease": FAST_LEASE, "ctx": [ctx.artifact_root, ctx.dag_id, ctx.run_id,
                                                                   ctx.cycle, ctx.stage],
                       "base": base, "sft": sft_path, "cfg": CFG})
    return subprocess.Popen([sys.executable, "-c", code, args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(predicate, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    return lease.process_start(pid) is not None


def _running_trainer(stage: Path) -> lease.Lease:
    """The lease of a trainer that has saved a checkpoint and logged a row (so a resume has work to skip)."""
    def ready() -> bool:
        current = lease.read_lease(stage / "logs")
        return (current is not None and current.pid is not None and (stage / "metrics.jsonl").exists()
                and bool(list(stage.glob("checkpoints/checkpoint-*/trainer_state.json"))))

    _wait_for(ready, "a checkpoint")
    found = lease.read_lease(stage / "logs")
    assert found is not None
    return found


def _steps(stage: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]


def _starts(stage: Path) -> int:
    return (stage / "logs" / "sft.log").read_text().count("=== sft worker started")


def test_a_retry_adopts_the_trainer_a_killed_task_left_running(env):
    work, base, root, sft_path = env
    ctx = _ctx(root, "adopt")
    stage = Path(ctx.uri)
    task = _task_process(work, base, ctx, sft_path)
    trainer = _running_trainer(stage)
    task.send_signal(signal.SIGKILL)  # worker lost / OOM-killed task: no handler runs
    task.wait()
    assert _alive(trainer.pid), "the trainer died with its task"
    manifest = LocalBackend(work_dir=work, **FAST_LEASE).sft(ctx, base, sft_path, CFG)  # the retry
    assert _starts(stage) == 1, "the retry started a second trainer"
    assert manifest.metrics["resumed_from_step"] == 0 and manifest.metrics["steps"] == 60
    assert _steps(stage) == list(range(5, 61, 5))
    assert lease.read_lease(stage / "logs").state() == "finished"


def test_a_hung_trainer_is_replaced_once_its_lease_is_stale_and_training_resumes(env):
    work, base, root, sft_path = env
    ctx = _ctx(root, "stale")
    stage = Path(ctx.uri)
    task = _task_process(work, base, ctx, sft_path)
    trainer = _running_trainer(stage)
    os.kill(trainer.pid, signal.SIGSTOP)  # hung: alive, holding memory, no heartbeat
    task.send_signal(signal.SIGKILL)
    task.wait()
    try:
        manifest = LocalBackend(work_dir=work, **FAST_LEASE).sft(ctx, base, sft_path, CFG)
    finally:
        if _alive(trainer.pid):
            os.kill(trainer.pid, signal.SIGKILL)
    assert not _alive(trainer.pid), "the hung trainer was left alive beside its replacement"
    saved_before = manifest.metrics["resumed_from_step"]
    assert saved_before >= 10 and manifest.metrics["steps"] == 60
    assert _starts(stage) == 2
    assert _steps(stage) == list(range(5, 61, 5))  # unique per step across the replacement


def test_a_trainer_whose_lease_was_taken_over_stops_and_writes_nothing_more(env):
    work, base, root, sft_path = env
    backend = LocalBackend(work_dir=work, detach_training=True, **FAST_LEASE)
    ctx = _ctx(root, "fenced")
    stage = Path(ctx.uri)
    pending = backend.sft(ctx, base, sft_path, {**CFG, "max_steps": 100_000, "save_steps": 1000})
    assert isinstance(pending, PendingJob)
    _wait_for(lambda: (stage / "metrics.jsonl").exists(), "a metrics row")
    trainer = lease.read_lease(stage / "logs")
    # Another machine took the stage over (its lease is the one that counts now).
    with lease.locked(stage / "logs"):
        other = lease.new_lease("sft")
        other.host = "elsewhere"
        lease.write_lease(stage / "logs", other)
    _wait_for(lambda: not _alive(trainer.pid), "the fenced trainer to exit", timeout_s=30)
    rows = (stage / "metrics.jsonl").read_text()
    time.sleep(1.0)
    assert (stage / "metrics.jsonl").read_text() == rows
    assert "taken over by another trainer" in (stage / "logs" / "sft.log").read_text()
    with pytest.raises(TrainerLost, match="another trainer took over"):
        backend.complete(ctx, pending, asyncio.run(_first_event(backend.trigger_for(pending))))


async def _first_event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_the_training_task_defers_on_its_trainer_and_completes_from_the_trigger(env):
    work, base, root, sft_path = env
    backend = LocalBackend(work_dir=work, detach_training=True, trigger_poll_s=0.2, **FAST_LEASE)
    ctx = _ctx(root, "deferred")
    pending = backend.sft(ctx, base, sft_path, {**CFG, "max_steps": 20})
    assert isinstance(pending, PendingJob) and pending.kind == "local_trainer"
    assert not (Path(ctx.uri) / "manifest.json").exists()
    trigger = backend.trigger_for(pending)
    classpath, kwargs = trigger.serialize()  # what the triggerer stores and rebuilds it from
    assert classpath == "rftflow.orchestration.local_trigger.LocalTrainerTrigger"
    from rftflow.orchestration.local_trigger import LocalTrainerTrigger

    event = asyncio.run(_first_event(LocalTrainerTrigger(**kwargs)))
    assert event["status"] == "success"
    manifest = LocalBackend(work_dir=work).complete(ctx, None, event)  # resumed with the event only
    assert manifest.metrics["steps"] == 20 and (Path(ctx.uri) / "manifest.json").is_file()
    assert manifest.checkpoint_uri.endswith("/deferred/model")


def test_a_killed_detached_trainer_is_reported_lost_and_the_retry_resumes(env):
    work, base, root, sft_path = env
    backend = LocalBackend(work_dir=work, detach_training=True, trigger_poll_s=0.2, **FAST_LEASE)
    ctx = _ctx(root, "lost")
    stage = Path(ctx.uri)
    pending = backend.sft(ctx, base, sft_path, CFG)
    trainer = _running_trainer(stage)
    os.killpg(trainer.pid, signal.SIGKILL)
    event = asyncio.run(_first_event(backend.trigger_for(pending)))
    assert event["status"] == "lost" and "resumes from its last checkpoint" in event["message"]
    with pytest.raises(WorkerError, match="trainer lost"):
        backend.complete(ctx, pending, event)
    manifest = LocalBackend(work_dir=work, **FAST_LEASE).sft(ctx, base, sft_path, CFG)  # the task's retry
    assert manifest.metrics["resumed_from_step"] >= 10 and manifest.metrics["steps"] == 60
    assert _steps(stage) == list(range(5, 61, 5))


def test_a_finished_stage_whose_manifest_was_lost_is_not_trained_again(env):
    work, base, root, sft_path = env
    backend = LocalBackend(work_dir=work)
    ctx = _ctx(root, "finished")
    stage = Path(ctx.uri)
    first = backend.sft(ctx, base, sft_path, {**CFG, "max_steps": 20})
    weights = hashlib.sha256((stage / "model" / "model.safetensors").read_bytes()).hexdigest()
    rows = (stage / "metrics.jsonl").read_text()
    (stage / "manifest.json").unlink()  # lost (deleted by hand, or a crash before it was written)
    again = backend.sft(ctx, base, sft_path, {**CFG, "max_steps": 20})
    assert _starts(stage) == 1, "the finished stage was trained again"
    assert hashlib.sha256((stage / "model" / "model.safetensors").read_bytes()).hexdigest() == weights
    assert (stage / "metrics.jsonl").read_text() == rows
    assert again.metrics["steps"] == first.metrics["steps"] == 20
    # Manifest and result both lost: the trainer starts, finds the checkpoint at max_steps and trains no further.
    (stage / "manifest.json").unlink()
    (stage / "logs" / "sft-result.json").unlink()
    third = backend.sft(ctx, base, sft_path, {**CFG, "max_steps": 20})
    assert third.metrics["steps"] == 20 and third.metrics["resumed_from_step"] == 20
    assert hashlib.sha256((stage / "model" / "model.safetensors").read_bytes()).hexdigest() == weights
    assert (stage / "metrics.jsonl").read_text() == rows


# ------------------------------------------------------------------------------------ lease states


def _lease(**fields) -> lease.Lease:
    found = lease.new_lease("sft", heartbeat_s=1.0, stale_after_s=10.0)
    for key, value in fields.items():
        setattr(found, key, value)
    return found


def test_lease_states():
    me = os.getpid()
    assert _lease(pid=me, pid_start=lease.process_start(me)).state() == "live"
    assert _lease(pid=me, pid_start=lease.process_start(me), heartbeat_at=time.time() - 11).state() == "stale"
    # The pid now belongs to another process (it was recycled): the trainer is gone.
    assert _lease(pid=me, pid_start=(lease.process_start(me) or 0) + 1).state() == "stale"
    assert _lease(pid=me, pid_start=lease.process_start(me), finished=True).state() == "finished"
    # On another machine only the heartbeat tells.
    elsewhere = _lease(host=socket.gethostname() + "-other", pid=1, pid_start=0)
    assert elsewhere.process_alive() is None and elsewhere.state() == "live"
    elsewhere.heartbeat_at -= 11
    assert elsewhere.state() == "stale"
    assert "cannot be killed from here" in lease.ensure_dead(elsewhere)


def test_renew_only_while_held(tmp_path):
    held = _lease()
    lease.write_lease(tmp_path, held)
    assert lease.renew(tmp_path, held.owner) and lease.holds(tmp_path, held.owner)
    assert not lease.renew(tmp_path, "someone-else") and not lease.holds(tmp_path, "someone-else")
    lease.finish(tmp_path, held.owner)
    assert lease.read_lease(tmp_path).state() == "finished" and not lease.holds(tmp_path, held.owner)


def test_training_detaches_only_where_the_triggerer_can_watch_it(monkeypatch, tmp_path):
    monkeypatch.delenv("RFTFLOW_LOCAL_WORK_DIR", raising=False)
    assert LocalBackend(detach_training=True).detaches(None)  # stage folder on a local artifact root
    assert not LocalBackend(detach_training=True).detaches("s3://b/stage")  # scratch only this machine sees
    assert not LocalBackend().detaches(None)  # library callers wait
    monkeypatch.setenv("RFTFLOW_LOCAL_WORK_DIR", str(tmp_path / "shared"))
    shared = LocalBackend(detach_training=True)
    assert shared.detaches("s3://b/stage") and shared.work_dir == tmp_path / "shared"
    from rftflow.backends.local.runner import trainer_event

    event = trainer_event("grpo", tmp_path / "not-mounted-here", "owner")
    assert event["status"] == "unobservable" and "RFTFLOW_LOCAL_WORK_DIR" in event["message"]


@pytest.mark.parametrize("state, stopped", [("up_for_retry", False), ("failed", True)])
def test_a_failed_training_task_stops_its_detached_trainer_only_when_nothing_comes_back(env, state, stopped):
    from types import SimpleNamespace

    from rftflow.cycle.context import stage_context
    from rftflow.cycle.params import parse_params
    from rftflow.orchestration.operators import stop_remote_job

    work, base, root, sft_path = env
    p = parse_params({"artifact_root": str(root / f"cb-{state}")})
    ctx = stage_context(p, "rft_cycle", "manual__cb", "sft")
    LocalBackend(detach_training=True, **FAST_LEASE).sft(ctx, base, sft_path, {**CFG, "max_steps": 100_000})
    trainer = _running_trainer(Path(ctx.uri))
    context = {"params": p.model_dump(), "dag": SimpleNamespace(dag_id="rft_cycle"), "run_id": "manual__cb",
               "task": SimpleNamespace(task_id="sft"), "ti": SimpleNamespace(state=state),
               "exception": RuntimeError("gate data missing")}
    try:
        stop_remote_job(context)
        assert _alive(trainer.pid) is not stopped
    finally:
        if _alive(trainer.pid):
            os.killpg(trainer.pid, signal.SIGKILL)
