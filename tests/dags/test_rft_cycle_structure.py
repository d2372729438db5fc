"""The DAG file parses cleanly, cheaply, and wires the stages as the product spec lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft", "great_expectations", "sagemaker", "mlflow", "matplotlib",
         "pandas")

EXPECTED_EDGES = {
    "validate_data": {"baseline_eval"},
    "baseline_eval": {"diversity_check"},
    "diversity_check": {"plan_training"},
    "plan_training": {"sft", "rft", "stop"},
    "sft": {"diversity_recheck"},
    "diversity_recheck": {"plan_rft"},
    "plan_rft": {"rft", "stop"},
    "rft": {"checkpoint_eval"},
    "stop": {"report"},
    "checkpoint_eval": {"gate"},
    "gate": {"choose_outcome", "promote", "iterate"},
    "choose_outcome": {"approve_promotion", "promote", "iterate", "reject", "report"},
    "approve_promotion": {"promote"},
    "promote": {"report"},
    "iterate": {"start_next_cycle"},
    "start_next_cycle": {"report"},
    "reject": {"report"},
    "report": set(),
}


def test_dagbag_has_no_import_errors_and_both_dags(dagbag):
    assert dagbag.import_errors == {}
    assert {"rft_cycle", "rft_cycle_on_data"} <= set(dagbag.dag_ids)


def test_parsing_imports_nothing_heavy():
    code = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "assert not b.import_errors, b.import_errors\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_task_ids_and_edges_follow_the_spec(dagbag):
    from rftflow.cycle import graph

    dag = dagbag.dags["rft_cycle"]
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_EDGES
    assert graph.EDGES == EXPECTED_EDGES  # the stage graph the library reads is the DAG's
    assert {s.name: s.starts_from for s in graph.STAGES if s.starts_from} == {
        "diversity_check": ("baseline_eval",), "sft": ("baseline_eval",), "diversity_recheck": ("sft",),
        "rft": ("sft", "baseline_eval"), "checkpoint_eval": ("rft",)}
    # every input a stage reads is an upstream of it in the DAG (or a part of one): nothing is read before it runs
    for s in graph.STAGES:
        for upstream in [*s.reads.values(), *s.starts_from]:
            assert upstream.split(".")[0] in dag.get_task(s.name).get_flat_relative_ids(upstream=True), (s.name, upstream)
    on_data = dagbag.dags["rft_cycle_on_data"]
    (start,) = on_data.tasks
    assert start.trigger_dag_id == "rft_cycle" and start.conf == {"base_model": "champion"}


def test_joins_survive_skipped_branches(dagbag):
    dag = dagbag.dags["rft_cycle"]
    for task_id in ("rft", "promote", "report"):
        assert dag.get_task(task_id).trigger_rule == "none_failed_min_one_success", task_id
    assert dag.get_task("promote").outlets, "promote must emit the champion Asset event"


def test_trigger_form_params_are_typed(dagbag):
    params = dagbag.dags["rft_cycle"].params
    schema = {k: params.get_param(k).schema for k in params}
    assert schema["backend"]["enum"] == ["local", "ray", "sagemaker", "bedrock"]
    assert schema["sft_policy"]["enum"] == ["auto", "always", "never"]
    assert schema["training_method"]["enum"] == ["auto", "full", "lora"]
    assert schema["rollouts_per_prompt"]["minimum"] == 2 and schema["rollouts_per_prompt"]["maximum"] == 16
    assert schema["max_cycles"]["type"] == "integer"


def test_schedules_cron_off_by_default_and_asset_variant(dagbag):
    assert type(dagbag.dags["rft_cycle"].timetable).__name__ == "NullTimetable"
    assert type(dagbag.dags["rft_cycle_on_data"].timetable).__name__ == "AssetTriggeredTimetable"


def test_cron_schedule_comes_from_the_environment():
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "print(type(b.dags['rft_cycle'].timetable).__name__)\n"
    )
    import os

    env = {**os.environ, "RFTFLOW_CYCLE_SCHEDULE": "0 3 * * 1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] in ("CronTriggerTimetable", "CronDataIntervalTimetable")


def test_every_task_has_an_execution_timeout_and_remote_waits_are_bounded_by_the_deferral(dagbag):
    """A hung worker-side step fails its task instead of holding a slot forever; long waits are deferred."""
    from datetime import timedelta

    for dag_id in ("rft_cycle", "rft_cycle_on_data"):
        for task in dagbag.dags[dag_id].tasks:
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"
            assert timedelta(0) < task.execution_timeout <= timedelta(hours=12), task.task_id
    tasks = {t.task_id: t for t in dagbag.dags["rft_cycle"].tasks}
    assert tasks["checkpoint_eval"].execution_timeout == timedelta(hours=12)  # local CPU eval is the long one
    assert tasks["gate"].execution_timeout == timedelta(minutes=30)
