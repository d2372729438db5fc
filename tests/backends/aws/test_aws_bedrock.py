"""The bedrock backend: RFT jobs against moto (which keeps them InProgress forever), job status stubbed at the
hook's client for completion, and eval/diversity through a stubbed Bedrock runtime."""

from __future__ import annotations

import datetime
import json

import pytest
from aws_fakes import BEDROCK_ROLE, LAMBDA_ARN, aws_env, boto  # noqa: F401  (aws_env is a fixture)
from botocore.stub import ANY, Stubber

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete
from rftflow.backends.base import PendingJob, StageContext, get_backend
from rftflow.data.dataset import read_records, write_records

pytestmark = pytest.mark.usefixtures("aws_env")
MODEL_ARN = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-2-lite-v1:0:256k/abcdefghij12"
JOB_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-2-lite-v1:0:256k/x1y2z3"


@pytest.fixture(scope="module")
def backend(request):
    request.getfixturevalue("aws_env")
    return get_backend("bedrock", role_arn=BEDROCK_ROLE, reward_lambda_arn=LAMBDA_ARN, converse_concurrency=1,
                       converse_base_delay_s=0.001)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    out = {}
    for name, n in (("train", 120), ("eval", 6)):
        out[name] = str(folder / f"{name}.jsonl")
        write_records(out[name], read_records(f"include/data/tiny/{name}.jsonl")[:n])
    return out


def ctx_for(root: str, stage: str) -> StageContext:
    return StageContext(root, "rft_cycle", "scheduled__2026-11-25T00:00:00+00:00", 2, stage)


def converse_reply(text: str, out_tokens: int = 7) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 20, "outputTokens": out_tokens, "totalTokens": 20 + out_tokens},
            "metrics": {"latencyMs": 5}}


def completed(name: str, status: str = "Completed", **extra) -> dict:
    start = datetime.datetime(2026, 11, 25, 10, 0, tzinfo=datetime.UTC)
    return {"jobArn": JOB_ARN, "jobName": name, "outputModelName": f"{name}-model", "outputModelArn": MODEL_ARN,
            "roleArn": BEDROCK_ROLE, "status": status, "creationTime": start,
            "endTime": start + datetime.timedelta(hours=3), "baseModelArn": "arn:aws:bedrock:x",
            "trainingDataConfig": {"s3Uri": "s3://b/k"}, "validationDataConfig": {"validators": []},
            "outputDataConfig": {"s3Uri": "s3://b/o/"}, **extra}


def test_rft_submits_once_and_a_retry_reattaches(backend, s3_root, data):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {"num_generations": 8})
    assert isinstance(pending, PendingJob) and pending.kind == "bedrock_customization"
    job = boto("bedrock").get_model_customization_job(jobIdentifier=pending.job_name)
    assert job["status"] == "InProgress" and job["customizationType"] == "REINFORCEMENT_FINE_TUNING"
    assert pending.details["hyper_parameters"]["trainingSamplePerPrompt"] == 8
    assert len(store.read_text(pending.details["staged_data_uri"]).splitlines()) == 120

    again = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {"num_generations": 8})
    assert again.job_name == pending.job_name and again.details["created"] is False
    names = [j["jobName"] for j in boto("bedrock").list_model_customization_jobs()["modelCustomizationJobSummaries"]]
    assert names.count(pending.job_name) == 1 and not any(n.startswith(pending.job_name[:-1] + "2") for n in names)


def test_completion_records_the_custom_model_and_cost(backend, s3_root, data):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {})
    store.write_text(store.join(pending.details["output_uri"], "x1y2z3", "training_artifacts",
                                "step_wise_training_metrics.csv"),
                     "step_number,critic/rewards/mean,actor/entropy\n1,0.2,1.5\n2,0.4,1.4\n")
    with Stubber(backend.aws.client("bedrock")) as stub:  # moto never finishes RFT jobs: stub the status
        stub.add_response("get_model_customization_job", completed(pending.job_name),
                          {"jobIdentifier": pending.job_name})
        manifest = backend.complete(ctx, pending, {"status": "success", "job_name": pending.job_name})
    assert manifest.checkpoint_uri == MODEL_ARN and load_complete(ctx.uri) == manifest
    record = manifest.jobs[0]
    assert record["billable_seconds"] == 3 * 3600
    assert record["estimated_cost_usd"] == pytest.approx(3 * 100.0)  # 3 h at the default table's RFT rate
    rows = [json.loads(x) for x in store.read_text(manifest.outputs["metrics_uri"]).splitlines()]
    assert [r["critic/rewards/mean"] for r in rows] == [0.2, 0.4]
    assert manifest.metrics["reward_last"] == 0.4


def test_failed_job_raises_with_the_service_message(backend, s3_root, data):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {})
    with Stubber(backend.aws.client("bedrock")) as stub:
        stub.add_response("get_model_customization_job",
                          completed(pending.job_name, "Failed", failureMessage="Lambda timed out"))
        with pytest.raises(RuntimeError, match="ended error: .*Failed: Lambda timed out"):
            backend.complete(ctx, pending, {"status": "error", "message": "Waiter encountered a terminal failure"})


def test_trigger_waits_days_and_stop_stops_a_running_job(backend, s3_root, data):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {})
    classpath, kwargs = backend.trigger_for(pending).serialize()
    assert classpath.endswith("BedrockCustomizeModelCompletedTrigger")
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= 96 * 3600  # not the provider's 2.5 h
    backend.stop(pending)
    assert boto("bedrock").get_model_customization_job(jobIdentifier=pending.job_name)["status"] in (
        "Stopping", "Stopped")


def test_evaluate_base_model_through_converse(backend, s3_root, data):
    ctx = ctx_for(s3_root, "baseline_eval")
    records = read_records(data["eval"])
    with Stubber(backend.aws.client("bedrock-runtime")) as stub:
        for i, r in enumerate(records):
            answer = f"#### {r.reference_answer}" if i < 3 else "#### 0"
            stub.add_response("converse", converse_reply(answer), {
                "modelId": "us.amazon.nova-2-lite-v1:0", "messages": ANY,
                "inferenceConfig": {"maxTokens": 1024, "temperature": 0.0, "topP": 1.0}})
        manifest = backend.evaluate(ctx, "nova-2-lite", data["eval"], "numeric")
    assert manifest.metrics["pass_at_1"] == 0.5 and manifest.metrics["n"] == 6
    assert manifest.metrics["mean_response_tokens"] == 7
    converse = manifest.jobs[-1]
    assert converse["input_tokens"] == 120 and converse["output_tokens"] == 42
    assert converse["estimated_cost_usd"] == pytest.approx(120 / 1e6 * 0.30 + 42 / 1e6 * 2.50, abs=1e-4)


def test_evaluate_custom_model_through_its_on_demand_deployment(backend, s3_root, data):
    ctx = ctx_for(s3_root, "checkpoint_eval")
    deployment = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/abcdefghij12"
    records = read_records(data["eval"])
    with Stubber(backend.aws.client("bedrock")) as control, Stubber(backend.aws.client("bedrock-runtime")) as rt:
        control.add_client_error("get_custom_model_deployment", "ResourceNotFoundException", http_status_code=404)
        control.add_response("create_custom_model_deployment", {"customModelDeploymentArn": deployment},
                             {"modelDeploymentName": ANY, "modelArn": MODEL_ARN, "clientRequestToken": ANY,
                              "tags": ANY})
        for r in records:
            rt.add_response("converse", converse_reply(f"#### {r.reference_answer}"),
                            {"modelId": deployment, "messages": ANY, "inferenceConfig": ANY})
        control.add_response("get_custom_model_deployment", {
            "customModelDeploymentArn": deployment, "modelDeploymentName": "x", "modelArn": MODEL_ARN,
            "createdAt": datetime.datetime(2026, 11, 25), "status": "Active"})
        manifest = backend.evaluate(ctx, MODEL_ARN, data["eval"], "numeric")
    assert manifest.metrics["pass_at_1"] == 1.0 and manifest.checkpoint_uri == MODEL_ARN
    assert manifest.jobs[0]["kind"] == "custom_model_deployment"


def test_diversity_retries_throttling_and_decides(backend, s3_root, data):
    ctx = ctx_for(s3_root, "diversity_check")
    records = read_records(data["eval"])[:3]
    path = store.join(s3_root, "three.jsonl")
    write_records(path, records)
    with Stubber(backend.aws.client("bedrock-runtime")) as stub:
        stub.add_client_error("converse", "ThrottlingException", "Too many requests", http_status_code=429)
        for r in records:  # k=2: one right, one wrong each -> every prompt mixed
            stub.add_response("converse", converse_reply(f"#### {r.reference_answer}"))
            stub.add_response("converse", converse_reply("#### -5"))
        manifest = backend.diversity(ctx, "nova-2-lite", path, "numeric",
                                     {"k": 2, "max_prompts": 3, "inference.reasoning_effort": "low"})
        stub.assert_no_pending_responses()
    assert manifest.metrics["mixed"] == 1.0 and manifest.decision["decision"] == "rft"
    assert manifest.jobs[0]["retries"] == 1 and manifest.jobs[0]["samples"] == 6
    # an override converse has no use for is said in the manifest, not silently dropped
    assert manifest.inputs["notes"] == ["override 'inference.reasoning_effort' does not apply to converse "
                                        "rollouts; ignored"]
    assert manifest.metrics["estimated_cost_usd"] == manifest.jobs[0]["estimated_cost_usd"]


def test_bedrock_models_are_checked(backend):
    ctx = ctx_for("s3://b/a", "rft")
    assert backend.resolve_model("nova-lite-2/prod", ctx) == "amazon.nova-2-lite-v1:0:256k"
    assert backend.resolve_model(MODEL_ARN, ctx) == MODEL_ARN
    with pytest.raises(ValueError, match="'tiny' is the local backend's"):
        backend.resolve_model("tiny", ctx)


def test_the_wait_covers_the_job_limit_plus_queueing_slack(backend, s3_root, data):
    from rftflow.backends.aws.backend import PENDING_SLACK_HOURS

    pending = backend.rft(ctx_for(s3_root, "rft"), "nova-2-lite", data["train"], "numeric", {})
    _, kwargs = backend.trigger_for(pending).serialize()
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= (96 + PENDING_SLACK_HOURS) * 3600
    assert pending.details["wait_timeout_s"] >= (96 + PENDING_SLACK_HOURS) * 3600


def test_a_trigger_out_of_attempts_on_a_running_job_says_retry_to_reattach(backend, s3_root, data):
    """The provider's trigger reports running out of attempts as status "error", not "timeout"."""
    from rftflow.backends.aws.backend import WaitEnded

    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", data["train"], "numeric", {})
    with pytest.raises(WaitEnded, match="stopped waiting .*max attempts reached.*retry the task to re-attach"):
        backend.complete(ctx, pending, {"status": "error", "message": "Waiter error: max attempts reached",
                                        "job_name": pending.job_name})


def _failure_context(root: str, stage: str, error: BaseException, state: str = "failed") -> dict:
    from types import SimpleNamespace

    from rftflow.cycle.params import DEFAULTS

    params = {**DEFAULTS, "backend": "bedrock", "base_model": "nova-2-lite", "artifact_root": root, "cycle": 2}
    return {"params": params, "dag": SimpleNamespace(dag_id="rft_cycle"),
            "run_id": "scheduled__2026-11-25T00:00:00+00:00", "task": SimpleNamespace(task_id=stage),
            "ti": SimpleNamespace(state=state), "exception": error}


@pytest.mark.parametrize("error, state, stopped", [
    ("wait", "failed", False),  # it may still finish: clearing the task re-attaches
    ("other", "up_for_retry", False),  # a retry comes back for it
    ("other", "failed", True),  # failed for good: nothing comes back for it
])
def test_stop_remote_job_stops_only_what_the_run_will_not_come_back_for(backend, s3_root, data, monkeypatch,
                                                                       caplog, error, state, stopped):
    from rftflow.backends.aws.backend import WaitEnded
    from rftflow.orchestration.operators import stop_remote_job

    monkeypatch.setenv("RFTFLOW_BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("RFTFLOW_BEDROCK_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    root = f"{s3_root}/stop-{error}-{state}"
    pending = backend.rft(ctx_for(root, "rft"), "nova-2-lite", data["train"], "numeric", {})
    exc = WaitEnded("stopped waiting") if error == "wait" else RuntimeError("reward Lambda misconfigured")
    # listen on the module's logger itself: Airflow may reconfigure the root logging on its first hook
    import logging

    logger = logging.getLogger("rftflow.orchestration.operators")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="rftflow.orchestration.operators"):
            stop_remote_job(_failure_context(root, "rft", exc, state))
    finally:
        logger.removeHandler(caplog.handler)
    status = boto("bedrock").get_model_customization_job(jobIdentifier=pending.job_name)["status"]
    assert (status in ("Stopping", "Stopped")) is stopped, status
    assert ("stopping" if stopped else "left") in caplog.text and pending.job_name in caplog.text


def test_bedrock_format_sft_keeps_its_system_prompt_when_staged(backend, s3_root, tmp_path):
    """The bedrock-conversation-2024 rows of amazon-nova-samples' SFT files (top-level `system`) reach the
    FINE_TUNING job's training file with their system prompt."""
    rows = [{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Answer in one word."}],
             "messages": [{"role": "user", "content": [{"text": f"Capital of country {i}?"}]},
                          {"role": "assistant", "content": [{"text": f"City{i}"}]}]} for i in range(3)]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = ctx_for(s3_root, "sft-system")
    pending = backend.sft(ctx, "nova-2-lite", str(path))
    staged = [json.loads(x) for x in store.read_text(pending.details["staged_data_uri"]).splitlines()]
    assert all(r["system"] == [{"text": "Answer in one word."}] for r in staged)
    assert staged[0]["schemaVersion"] == "bedrock-conversation-2024"
    assert staged[0]["messages"][1] == {"role": "assistant", "content": [{"text": "City0"}]}
