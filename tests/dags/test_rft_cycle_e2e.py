"""End to end: rft_cycle through `dag.test()` on the local backend with a tiny configuration.

dag.test() does not raise when a run fails, so every test asserts the run state, the branch taken
and the artifacts written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete, stage_uri

pytestmark = pytest.mark.slow

TINY = {
    "base_model": "tiny",
    "model_family": "tiny-e2e",
    "diversity_prompts": 8,
    "rollouts_per_prompt": 2,
    "recipe_overrides": {
        "sft": {"max_steps": 12, "warmup_steps": 1, "save_steps": 6, "logging_steps": 4},
        "rft": {"max_steps": 2, "prompts_per_step": 4, "save_steps": 1, "logging_steps": 1},
        "eval": {"max_prompts": 16},
    },
}


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _run(dagbag, artifact_root: str, **conf):
    dag = dagbag.dags["rft_cycle"]
    return dag.test(run_conf={**TINY, "artifact_root": artifact_root, **conf})


def _stage(root: str, dr, stage: str, cycle: int = 1):
    return load_complete(stage_uri(root, "rft_cycle", dr.run_id, cycle, stage))


@pytest.fixture
def root(tmp_path: Path) -> str:
    return (tmp_path / "artifacts").as_uri()


def test_all_fail_base_takes_the_sft_branch_and_obeys_the_recheck(airflow_db, dagbag, root):
    """12 SFT steps leave the tiny model failing everything: the recheck says sft_first again, and the
    cycle stops there instead of running GRPO on rollouts that cannot teach it anything."""
    dr = _run(dagbag, root)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["sft"] == "success" and states["diversity_recheck"] == "success"
    diversity = _stage(root, dr, "diversity_check")
    assert diversity.decision["decision"] == "sft_first"
    assert diversity.metrics["all_fail"] == 1.0
    sft = _stage(root, dr, "sft")
    assert sft.checkpoint_uri and store.exists(sft.checkpoint_uri)
    assert _stage(root, dr, "diversity_recheck").decision["decision"] == "sft_first"
    assert states["plan_rft"] == "success" and states["rft"] == "skipped" and states["gate"] == "skipped"
    assert states["stop"] == "success" and states["report"] == "success"
    assert _stage(root, dr, "stop").decision["decision"] == "stop_sft_insufficient"
    summary = store.read_json(store.join(stage_uri(root, "rft_cycle", dr.run_id, 1, "report"), "cycle.json"))
    assert summary["outcome"] == "stopped" and "after SFT" in summary["outcome_reason"]


def test_a_mixed_recheck_goes_on_to_rft_gate_and_report(airflow_db, dagbag, root):
    # sft_policy=always on a base whose rollouts are judged mixed enough (thresholds at the extremes)
    # on_missing_evidence=reject: a held run would wait in dag.test() for a person forever
    dr = _run(dagbag, root, sft_policy="always", min_mixed_fraction=0.0, max_all_fail_fraction=1.0,
              on_missing_evidence="reject")
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["sft"] == "success" and states["rft"] == "success" and states["stop"] == "skipped"
    sft, rft = _stage(root, dr, "sft"), _stage(root, dr, "rft")
    assert rft.inputs.get("model_uri", sft.checkpoint_uri) == sft.checkpoint_uri
    rows = [json.loads(line) for line in store.read_text(rft.outputs["metrics_uri"]).splitlines()]
    assert rows and "critic/rewards/mean" in rows[0]
    gate = _stage(root, dr, "gate").decision
    assert gate["decision"] in ("promote", "iterate", "reject") and gate["reasons"]
    chosen = {"promote": "promote", "iterate": "iterate", "reject": "reject"}[gate["decision"]]
    assert states[chosen] == "success"
    report = load_complete(stage_uri(root, "rft_cycle", dr.run_id, 1, "report")) or None
    cycle_json = store.join(stage_uri(root, "rft_cycle", dr.run_id, 1, "report"), "cycle.json")
    summary = store.read_json(cycle_json)
    assert report is None or report.stage == "report"
    assert summary["outcome"] and summary["outcome_reason"]
    assert store.exists(summary["report_md_uri"])


def test_sft_policy_never_skips_sft(airflow_db, dagbag, root):
    dr = _run(dagbag, root, sft_policy="never")
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["plan_training"] == "success"
    assert states["sft"] == "skipped" and states["diversity_recheck"] == "skipped"
    assert states["rft"] == "success" and states["report"] == "success"
    assert _stage(root, dr, "sft") is None
    rft = _stage(root, dr, "rft")
    baseline = _stage(root, dr, "baseline_eval")
    assert rft.inputs.get("model_uri", baseline.checkpoint_uri) == baseline.checkpoint_uri


@pytest.mark.parametrize("bad", [{"recipe_overrides": {"rft": {"learning_rate": -1}}},
                                 {"guards": {"kl_maxx": 1.0}}], ids=["recipe_override", "guards_typo"])
def test_invalid_params_fail_the_first_task_and_nothing_else_runs(airflow_db, dagbag, root, bad):
    dr = _run(dagbag, root, **bad)
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["validate_data"] == "failed"
    assert all(s in ("upstream_failed", "None", "skipped") for t, s in states.items() if t != "validate_data")
