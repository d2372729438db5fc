"""Watching a cycle through `dag.test()`: the trainer's progress in the task log while it trains (deferred on
the trigger), the cycle's MLflow run opened by its first task and fed before the report, and the outcome in
the DAG run's note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONF = {
    "base_model": "tiny", "model_family": "tiny-watch", "sft_policy": "always",
    "min_mixed_fraction": 0.0, "max_all_fail_fraction": 1.0, "on_missing_evidence": "reject",
    "diversity_prompts": 8, "rollouts_per_prompt": 2,
    "recipe_overrides": {
        "sft": {"max_steps": 40, "warmup_steps": 1, "save_steps": 20, "logging_steps": 5},
        "rft": {"max_steps": 3, "prompts_per_step": 4, "save_steps": 2, "logging_steps": 1},
        "eval": {"max_prompts": 16},
    },
}
STEP = re.compile(r"\b(sft|grpo): step (\d+)/(\d+) \(\d+%\) \| (loss|reward) ")


def test_a_cycle_shows_progress_live_metrics_and_its_outcome(airflow_db, dagbag, tmp_path: Path, monkeypatch,
                                                             capfd):
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from mlflow import MlflowClient
    from sqlalchemy import select

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RFTFLOW_TRACKING", "on")
    monkeypatch.setenv("RFTFLOW_PROGRESS_EVERY_S", "0")  # a line on every poll the step moved: short stages
    dr = dagbag.dags["rft_cycle"].test(run_conf={**CONF, "artifact_root": (tmp_path / "artifacts").as_uri()})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    assert states["sft"] == "success" and states["rft"] == "success"

    # 1. Progress: logged by the deferred task's trigger while the trainer ran, step n/N with loss or reward.
    # dag.test() runs the trigger in line and prints its log with the task's (the triggerer writes it into
    # the task instance's log): lines of the trigger's logger, in the order they were logged.
    out = capfd.readouterr().out
    trigger_lines = [re.sub(r"^\S+ \[info\s*\] ", "", line).split(" [rftflow.orchestration.local_progress_trigger")[0].rstrip()
                     for line in out.splitlines() if "[rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger]" in line]
    steps = [(m[1], int(m[2]), int(m[3])) for line in trigger_lines if (m := STEP.search(line))]
    sft = [s for kind, s, n in steps if kind == "sft" and n == 40]
    grpo = [s for kind, s, n in steps if kind == "grpo" and n == 3]
    assert sft and grpo, trigger_lines
    assert sft == sorted(sft) and min(sft) < 40, sft  # seen while it trained, not only at its end
    assert any("left ~" in line for line in trigger_lines)
    assert any(line.startswith("sft: checkpoint saved at step 20/40") for line in trigger_lines), trigger_lines
    assert any(line.startswith("sft: training done at step 40/40") for line in trigger_lines), trigger_lines

    # 2. MLflow: one run for the cycle, opened by validate_data; training metrics arrived before the report.
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rftflow/tiny-watch")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["rftflow.cycle_key"].endswith("/cycle-1")
    with create_session() as session:
        started = {ti.task_id: ti.start_date for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id))}
        note = session.scalar(select(DagRun).where(DagRun.dag_id == dr.dag_id, DagRun.run_id == dr.run_id)).note
    report_ms = started["report"].timestamp() * 1000
    assert run.info.start_time < started["baseline_eval"].timestamp() * 1000  # opened by the first task
    loss = client.get_metric_history(run.info.run_id, "sft/train/loss")
    reward = client.get_metric_history(run.info.run_id, "rft/critic/rewards/mean")
    assert sorted(m.step for m in loss) == list(range(5, 41, 5))  # once each: the report did not log them again
    assert sorted(m.step for m in reward) == [1, 2, 3]
    assert max(m.timestamp for m in loss + reward) < report_ms
    baseline = client.get_metric_history(run.info.run_id, "eval/baseline/pass_at_1")
    assert len(baseline) == 1 and baseline[0].timestamp < report_ms
    assert "eval/gain/pass_at_1" in run.data.metrics
    assert "sft/actor/lr" not in run.data.metrics  # only what a person compares

    # 3. The run's note carries the outcome and its reason.
    outcome = run.data.tags["rftflow.outcome"]
    label = {"promoted": "PROMOTED", "rejected": "REJECTED", "iterating": "ITERATE", "not_promoted": "NOT PROMOTED"}
    assert note and note.startswith(label[outcome] + ": ") and "\n" not in note, note
