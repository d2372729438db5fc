"""Training runs in a child process: a killed child gives the caller a clear error and a retried stage resumes
from its last checkpoint; a timeout stops the child; a failure inside it is reported with its cause."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from rftflow.backends.base import StageContext
from rftflow.backends.local.backend import LocalBackend
from rftflow.backends.local.runner import WorkerError, WorkerTimeout

ROOT = Path(__file__).resolve().parents[3]
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


def test_the_waiting_task_logs_the_trainers_progress_while_it_trains(env, caplog, monkeypatch):
    """The task that waits for its trainer (as its parent) logs step n/N with loss, rate and time left from
    the progress file the trainer writes, plus its checkpoints and its end."""
    from rftflow.backends.local.progress import STEP_LINE

    monkeypatch.setenv("RFTFLOW_PROGRESS_EVERY_S", "0")  # every poll where the step moved: a short run
    caplog.set_level(logging.INFO, logger="rftflow.backends.local.runner")
    backend, base, ctx, sft_path = env
    ctx = ctx.for_stage("sft_progress")
    # The parent reads the file about once a second: 300 steps of batch 4 last several polls even on a fast
    # machine (40 steps could end within one poll and leave nothing to see "while running").
    cfg = {"max_steps": 300, "batch_size": 4, "logging_steps": 5, "save_steps": 150, "warmup_steps": 0}
    manifest = backend.sft(ctx, base, sft_path, cfg)
    assert manifest.metrics["steps"] == 300
    lines = [r.getMessage() for r in caplog.records if r.name == "rftflow.backends.local.runner"]
    steps = [int(m["step"]) for line in lines if (m := STEP_LINE.search(line)) and m["total"] == "300"]
    # A line about step n < 300 was read from the file while the trainer was at step n: it was running.
    assert steps and steps == sorted(steps) and steps[0] < 300, lines
    assert "sft: training 300 steps" in lines
    assert all(" | elapsed " in line for line in lines if STEP_LINE.search(line))
    assert any(" | loss " in line and "samples/s" in line and " | left ~" in line for line in lines), lines
    assert "sft: checkpoint saved at step 150/300 (checkpoint-150)" in lines
    assert any(line.startswith("sft: training done at step 300/300 in ") for line in lines), lines


def test_progress_lines_come_at_most_once_per_interval_with_every_checkpoint(tmp_path):
    """The reporter against a writer, without a trainer: with an interval longer than the test, one step line
    when training starts and one at its end; checkpoints and phases are never held back."""
    from rftflow.backends.local.progress import ProgressReporter, ProgressWriter, describe, progress_path

    path = progress_path("grpo", tmp_path)
    writer = ProgressWriter(path, "grpo", 30, unit="rollouts", per_step=16.0, owner="me")
    reporter = ProgressReporter("grpo", tmp_path, owner="me", every=1e9)
    other = ProgressReporter("grpo", tmp_path, owner="someone-else", every=0)
    assert reporter.poll() == ["grpo: loading the model and data"] and other.poll() == []
    writer.begin(10, 50.0)  # resumed at step 10
    assert reporter.poll() == ["grpo: training 30 steps, resumed at step 10 from its checkpoint"]
    seen = []
    for step in range(11, 31):
        writer.step(step, 50.0 + step, extra_units=16.0 * (step - 10))
        writer.logged(step, {"critic/rewards/mean": step / 100, "actor/kl_loss": 0.01, "perf/total_num_tokens": 1000 * step})
        if step % 10 == 0:
            writer.saved(step)
        seen += reporter.poll()
    step_lines = [line for line in seen if line.startswith("grpo: step")]
    assert step_lines == [step_lines[0]] and step_lines[0].startswith("grpo: step 11/30 (37%) | reward 0.110, kl 0.0100")
    assert [line for line in seen if "checkpoint" in line] == [
        "grpo: checkpoint saved at step 20/30 (checkpoint-20)", "grpo: checkpoint saved at step 30/30 (checkpoint-30)"]
    writer.end(30, 80.0)
    final = reporter.poll()
    assert final[0] == describe(reporter.latest) and final[0].startswith("grpo: step 30/30 (100%) | reward 0.300")
    assert "rollouts/s" in final[0] and "tokens/s" in final[0] and final[0].endswith("elapsed 1m20s | left ~0s")
    assert final[1] == "grpo: training done at step 30/30 in 1m20s; saving the final model"
    assert reporter.poll() == []  # nothing new, nothing said


def test_a_bad_progress_interval_is_a_clear_error_before_a_trainer_starts(env, monkeypatch, tmp_path):
    backend, base, ctx, sft_path = env
    monkeypatch.setenv("RFTFLOW_PROGRESS_EVERY_S", "often")
    with pytest.raises(ValueError, match="RFTFLOW_PROGRESS_EVERY_S='often': expected seconds"):
        backend.sft(ctx.for_stage("sft_bad_every"), base, sft_path, {"max_steps": 2})
    assert not list((Path(ctx.for_stage("sft_bad_every").uri) / "logs").glob("sft.pid"))


def test_no_checkpoint_line_is_lost_when_two_saves_fall_between_two_polls(tmp_path):
    """The waiting side reads the file about once a second; a trainer can save twice in that time (a short
    run, a slow poller). Both checkpoints are still said, in order, and each only once."""
    from rftflow.backends.local.progress import ProgressReporter, ProgressWriter, progress_path

    writer = ProgressWriter(progress_path("sft", tmp_path), "sft", 40, unit="samples", per_step=4.0)
    reporter = ProgressReporter("sft", tmp_path, every=1e9)
    writer.begin(0, 0.0)
    writer.saved(20)
    writer.saved(40)
    lines = reporter.poll()
    assert [line for line in lines if "checkpoint" in line] == [
        "sft: checkpoint saved at step 20/40 (checkpoint-20)", "sft: checkpoint saved at step 40/40 (checkpoint-40)"]
    assert not [line for line in reporter.poll() if "checkpoint" in line]
