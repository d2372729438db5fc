"""rft_cycle end to end with backend=ray through `dag.test()`, against a real Ray head on 127.0.0.1 with 2 CPUs,
on an s3:// artifact root (moto): every stage's inputs and outputs travel through the bucket, so nothing rests
on the Airflow side and the cluster sharing a disk. SFT and GRPO are trained by 2 Ray Train workers; eval and
diversity sampling run as Ray tasks; every stage deferred on its Ray job."""

from __future__ import annotations

import pytest

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete, stage_uri
from rftflow.backends.base import StageContext
from rftflow.backends.local.backend import LocalBackend

pytestmark = pytest.mark.slow

CONF = {
    "backend": "ray",
    "base_model": "tiny",
    "model_family": "tiny-ray-e2e",
    "diversity_prompts": 8,
    "rollouts_per_prompt": 2,
    "sft_policy": "always",
    "min_mixed_fraction": 0.0,
    "max_all_fail_fraction": 1.0,
    "on_missing_evidence": "reject",  # a held run would wait in dag.test() for a person forever
    "recipe_overrides": {
        "sft": {"max_steps": 12, "batch_size": 16, "warmup_steps": 1, "save_steps": 6, "logging_steps": 4},
        "rft": {"max_steps": 2, "prompts_per_step": 4, "num_generations": 4, "save_steps": 1, "logging_steps": 1},
        "eval": {"max_prompts": 32, "batch_size": 8},
    },
}


def _tensors(model_uri: str, tmp_path, name: str) -> dict:
    from safetensors.torch import load_file

    local = tmp_path / name
    store.get_dir(model_uri, str(local))
    return load_file(str(local / "model.safetensors"))


def test_a_cycle_on_a_ray_cluster_trains_with_two_workers_and_evaluates_like_local(
        airflow_db, dagbag, ray_head, s3_root, tmp_path):
    dr = dagbag.dags["rft_cycle"].test(run_conf={**CONF, "artifact_root": s3_root})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    assert states["sft"] == "success" and states["rft"] == "success" and states["gate"] == "success"

    def stage(name: str):
        return load_complete(stage_uri(s3_root, "rft_cycle", dr.run_id, 1, name))

    sft, rft, evaluated = stage("sft"), stage("rft"), stage("checkpoint_eval")
    for manifest in (sft, rft, stage("baseline_eval"), stage("diversity_check"), evaluated):
        assert manifest.backend == "ray", manifest.stage
    assert sft.metrics["steps"] == 12 and sft.metrics["workers"] == 2
    assert rft.metrics["steps"] == 2 and rft.metrics["workers"] == 2
    assert rft.inputs["model_uri"] == sft.checkpoint_uri
    # the stages' files came back through the bucket: metrics, the Ray job's log, the models
    assert store.read_jsonl(sft.outputs["metrics_uri"]) and "Ray Train on 2 worker(s)" in store.read_text(
        sft.outputs["log_uri"])
    base, trained = _tensors(stage("baseline_eval").checkpoint_uri, tmp_path, "base"), _tensors(
        sft.checkpoint_uri, tmp_path, "sft")
    changed = [k for k in base if not base[k].equal(trained[k])]
    assert len(changed) == len(base), "every tensor moves in 12 full-parameter steps"
    # the candidate's eval on the cluster is the one the local backend gives from the same checkpoint
    local = LocalBackend(work_dir=str(tmp_path / "work")).evaluate(
        StageContext((tmp_path / "local").as_uri(), "t", "r", 1, "checkpoint_eval"), evaluated.checkpoint_uri,
        evaluated.inputs["eval_uri"], evaluated.inputs["reward"], CONF["recipe_overrides"]["eval"])
    assert evaluated.checkpoint_uri == rft.checkpoint_uri
    for key in ("pass_at_1", "mean_reward", "mean_response_tokens", "n"):
        assert evaluated.metrics[key] == local.metrics[key], key
    ray_rows = store.read_jsonl(evaluated.outputs["rows_uri"])
    local_rows = store.read_jsonl(local.outputs["rows_uri"])
    assert [r["completion"] for r in ray_rows] == [r["completion"] for r in local_rows]
