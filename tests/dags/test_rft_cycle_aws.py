"""rft_cycle end to end on the AWS backends through `dag.test()`: SageMaker against a moto server (its
training jobs complete at once; a fake Nova container leaves the outputs), Bedrock with the job status
reported by the provider hook (moto keeps RFT jobs InProgress forever). Deferral runs the real triggers."""

from __future__ import annotations

import json

import pytest
from aws_fakes import BEDROCK_ROLE, LAMBDA_ARN, ROLE, FakeNova, boto

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete, stage_uri
from rftflow.data.dataset import read_records, write_records

pytestmark = pytest.mark.slow


@pytest.fixture
def nova(moto_server, monkeypatch, tmp_path):
    """AWS at the moto server, the backends' settings in the environment, and the fake Nova world."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RFTFLOW_BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("RFTFLOW_AWS_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    monkeypatch.setenv("RFTFLOW_AWS_EVAL_POLL_S", "0.05")
    monkeypatch.setenv("RFTFLOW_AWS_WAITER_DELAY_S", "5")  # the triggers' polling interval (jobs end at once)
    data = {}
    for name, n, kind in (("train", 120, "rft"), ("eval", 100, "rft"), ("sft", 220, "sft")):
        records = read_records(f"include/data/tiny/{name}.jsonl", kind=kind)[:n]
        data[name] = str(tmp_path / f"{name}.jsonl")
        write_records(data[name], records)
    answers = {r.prompt_text(): str(r.reference_answer) for name in ("train", "eval")
               for r in read_records(data[name])}
    FakeNova(answers).install(monkeypatch)
    return data


def _conf(backend: str, root: str, data: dict[str, str]) -> dict:
    return {"backend": backend, "base_model": "nova-2-lite", "fallback_model": "nova-2-lite",
            "model_family": f"nova-{backend}-e2e", "artifact_root": root, "train_uri": data["train"],
            "eval_uri": data["eval"], "sft_uri": data["sft"], "reward": "numeric", "rollouts_per_prompt": 2,
            "diversity_prompts": 8, "training_method": "lora"}


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _stage(root: str, dr, stage: str):
    return load_complete(stage_uri(root, "rft_cycle", dr.run_id, 1, stage))


def test_sagemaker_cycle_runs_sft_then_rft_on_training_jobs_and_promotes(airflow_db, dagbag, nova, s3_root):
    dr = dagbag.dags["rft_cycle"].test(run_conf=_conf("sagemaker", s3_root, nova))
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["sft"] == "success" and states["rft"] == "success" and states["promote"] == "success"

    assert _stage(s3_root, dr, "diversity_check").decision["decision"] == "sft_first"  # the base fails all
    sft, rft = _stage(s3_root, dr, "sft"), _stage(s3_root, dr, "rft")
    assert sft.checkpoint_uri.startswith("s3://customer-escrow-") and "-sft-c1-" in sft.checkpoint_uri
    assert rft.inputs["model_uri"] == sft.checkpoint_uri  # RFT starts from the SFT checkpoint
    assert _stage(s3_root, dr, "diversity_recheck").decision["decision"] == "rft"
    rows = [json.loads(x) for x in store.read_text(rft.outputs["metrics_uri"]).splitlines()]
    assert [r["critic/rewards/mean"] for r in rows] == [0.2, 0.4, 0.6]
    candidate = _stage(s3_root, dr, "checkpoint_eval")
    assert candidate.checkpoint_uri == rft.checkpoint_uri and candidate.metrics["pass_at_1"] >= 0.8
    assert _stage(s3_root, dr, "gate").decision["decision"] == "promote"

    # this run's jobs (the moto server is shared by the session): each submitted once, on the first try
    ours = [j["name"] for stage in ("baseline_eval", "sft", "diversity_recheck", "rft", "checkpoint_eval")
            for j in _stage(s3_root, dr, stage).jobs if j.get("service") == "sagemaker"]
    known = set()
    for page in boto("sagemaker").get_paginator("list_training_jobs").paginate():
        known |= {j["TrainingJobName"] for j in page["TrainingJobSummaries"]}
    assert len([n for n in ours if "-sft-c1-" in n]) == 1 and all(n.endswith("-1") and n in known for n in ours)
    for stage in ("sft", "rft"):
        record = _stage(s3_root, dr, stage).jobs[0]
        assert record["estimated_cost_usd"] is not None and record["instance_type"] == "ml.p5.48xlarge"
    # the eval and checkpoint-sampling tasks deferred on their jobs' triggers too (each left its marker)
    waited = {task: store.read_json(store.join(stage_uri(s3_root, "rft_cycle", dr.run_id, 1, task), "waiting.json"))
              for task in ("baseline_eval", "diversity_recheck", "checkpoint_eval")}
    assert {t: w["stage"] for t, w in waited.items()} == {
        "baseline_eval": "baseline_eval", "diversity_recheck": "diversity_recheck",
        "checkpoint_eval": "checkpoint_eval.rft_start"}  # its last wait: the SFT checkpoint's eval


def test_bedrock_cycle_customizes_twice_and_evaluates_through_deployments(airflow_db, dagbag, nova, s3_root):
    # The fake Bedrock job writes no step-wise training metrics (whether Bedrock RFT does is unconfirmed), so
    # the training guards have no evidence: by default the gate would hold the candidate for a person.
    # This run opts in to deciding on the eval evidence alone.
    dr = dagbag.dags["rft_cycle"].test(run_conf={**_conf("bedrock", s3_root, nova), "on_missing_evidence": "promote"})
    states = _states(dr)
    assert str(dr.state) == "success", states
    sft, rft = _stage(s3_root, dr, "sft"), _stage(s3_root, dr, "rft")
    assert ":custom-model/" in sft.checkpoint_uri and ":custom-model/" in rft.checkpoint_uri
    jobs = {j["jobName"]: j for j in boto("bedrock").list_model_customization_jobs()["modelCustomizationJobSummaries"]}
    assert jobs[sft.jobs[0]["name"]]["customizationType"] == "FINE_TUNING"
    assert jobs[rft.jobs[0]["name"]]["customizationType"] == "REINFORCEMENT_FINE_TUNING"
    assert _stage(s3_root, dr, "diversity_recheck").decision["decision"] == "rft"
    candidate = _stage(s3_root, dr, "checkpoint_eval")
    assert candidate.metrics["pass_at_1"] >= 0.8 and candidate.jobs[0]["kind"] == "custom_model_deployment"
    gate = _stage(s3_root, dr, "gate").decision
    assert gate["decision"] == "promote" and states["promote"] == "success"
    missing = {r["check"] for r in gate["reasons"] if r.get("missing")}
    assert {"reward_hacking", "kl", "entropy"} <= missing  # said, not silently passed


def test_bedrock_open_weight_cycle_trains_gpt_oss_through_the_openai_compatible_api(airflow_db, dagbag, nova, s3_root,
                                                                                    monkeypatch):
    from mantle_fake import MantleFake

    answers = {r.messages[-1]["content"]: str(r.reference_answer)
               for name in ("train", "eval") for r in read_records(nova[name])}
    mantle = MantleFake(answers, auto_finish=True)
    monkeypatch.setenv("RFTFLOW_BEDROCK_OPENAI_BASE_URL", mantle.url)
    monkeypatch.setenv("RFTFLOW_BEDROCK_API_KEY", "bedrock-api-key-e2e")
    monkeypatch.setenv("RFTFLOW_BEDROCK_REGION_NAME", "us-west-2")
    try:
        conf = {**_conf("bedrock", s3_root, nova), "base_model": "openai.gpt-oss-20b",
                "fallback_model": "openai.gpt-oss-20b", "model_family": "gpt-oss-e2e", "sft_policy": "never",
                "on_missing_evidence": "promote", "rollouts_per_prompt": 4, "diversity_prompts": 16}
        dr = dagbag.dags["rft_cycle"].test(run_conf=conf)
    finally:
        mantle.close()
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["sft"] in ("skipped", "None") and states["rft"] == "success"
    rft = _stage(s3_root, dr, "rft")
    assert rft.checkpoint_uri.startswith("bedrock-openai://us-west-2/openai.gpt-oss-20b:ft:")
    assert [j["model"] for j in mantle.jobs.values()] == ["openai.gpt-oss-20b"]  # one job, one cycle
    baseline, candidate = _stage(s3_root, dr, "baseline_eval"), _stage(s3_root, dr, "checkpoint_eval")
    assert baseline.metrics["pass_at_1"] == 0.0 and candidate.metrics["pass_at_1"] >= 0.8
    assert candidate.jobs[0]["kind"] == "chat_completions"
    assert _stage(s3_root, dr, "gate").decision["decision"] == "promote" and states["promote"] == "success"
    assert rft.jobs[0]["estimated_cost_usd"] == pytest.approx(2.0 * 5.00)
