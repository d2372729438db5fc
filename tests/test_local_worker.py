"""Training runs in a child process: a killed child gives the caller a clear error and a retried stage resumes
from its last checkpoint; a timeout stops the child; a failure inside it is reported with its cause."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from rftflow.backends.base import StageContext
from rftflow.backends.local import LocalBackend
from rftflow.local.runner import WorkerError, WorkerTimeout

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "include" / "data" / "tiny"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "shared-tiny"
    backend = LocalBackend(work_dir=str(shared / "work"))
    base = backend.resolve_model("tiny", StageContext(str(shared / "artifacts"), "t", "r", 0, "base"))
    root = tmp_path_factory.mktemp("worker")
    sft_path = root / "sft.jsonl"
    sft_path.write_text("".join((TINY / "sft.jsonl").read_text().splitlines(keepends=True)[:256]))
    return backend, base, StageContext(str(root / "artifacts"), "tests", "run-1", 0, "sft"), str(sft_path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_training_child_is_a_clear_error_and_the_retry_resumes_from_its_checkpoint(env):
    backend, base, ctx, sft_path = env
    cfg = {"max_steps": 60, "batch_size": 4, "logging_steps": 5, "save_steps": 10, "warmup_steps": 0}
    stage = Path(ctx.uri)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["manifest"] = backend.sft(ctx, base, sft_path, cfg)
        except WorkerError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 240
    while not list(stage.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert thread.is_alive() and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    pid = int((stage / "logs" / "sft.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    thread.join(60)
    assert "manifest" not in outcome, "the child finished before it could be killed"
    assert "killed by SIGKILL" in str(outcome["error"]) and "out-of-memory" in str(outcome["error"])
    assert not (stage / "manifest.json").exists() and not _alive(pid)
    saved = sorted(int(p.parent.name.split("-")[1]) for p in stage.glob("checkpoints/*/trainer_state.json"))

    manifest = backend.sft(ctx, base, sft_path, cfg)  # the retry
    assert manifest.metrics["resumed_from_step"] == saved[-1] >= 10
    assert manifest.metrics["steps"] == 60
    steps = [json.loads(line)["step"] for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5))  # rows after the checkpoint were dropped, then logged again once
    assert (stage / "manifest.json").is_file()


def test_a_child_past_its_timeout_is_stopped(env):
    backend, base, ctx, sft_path = env
    ctx = ctx.for_stage("sft_timeout")
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout, match="ran past its timeout of 1 s and was stopped"):
        backend.sft(ctx, base, sft_path, {"max_steps": 100_000, "timeout_s": 1})
    assert time.monotonic() - t0 < 30
    assert not (Path(ctx.uri) / "logs" / "sft.pid").exists() and not (Path(ctx.uri) / "manifest.json").exists()


def test_a_failure_inside_the_child_names_its_cause(env, tmp_path):
    backend, base, ctx, _ = env
    broken = tmp_path / "broken-model"
    shutil.copytree(base, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
    with pytest.raises(WorkerError) as err:
        backend.evaluate(ctx.for_stage("eval_broken"), str(broken), str(TINY / "eval.jsonl"), "numeric",
                         {"max_prompts": 2})
    message = str(err.value)
    assert message.startswith("generate worker failed: ") and "no-such-architecture" in message
    assert "log: " in message and Path(message.rsplit("log: ", 1)[1].split()[0]).is_file()


def test_a_model_that_is_not_there_fails_before_any_child_starts(env, tmp_path):
    backend, _, ctx, _ = env
    with pytest.raises(ValueError, match="expected 'tiny', 'tiny:seed=N' or a Hugging Face model directory"):
        backend.resolve_model(str(tmp_path / "nothing"), ctx)
