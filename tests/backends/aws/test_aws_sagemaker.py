"""The sagemaker backend against a moto server (its training jobs complete at once): submit, re-attach on
retry, follow the checkpoint, read eval results and CloudWatch metrics, record cost; failures name the job."""

from __future__ import annotations

import json

import pytest
from aws_fakes import (
    LAMBDA_ARN,
    ROLE,
    aws_env,  # noqa: F401  (fixture)
    boto,
    gen_qa_answers,
    plant_eval_output,
    plant_training_output,
    put_metric_logs,
    tar_gz,
)
from botocore.stub import Stubber

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, load_complete
from rftflow.backends.aws import sagemaker_jobs
from rftflow.backends.aws.naming import stage_job_base
from rftflow.backends.base import PendingJob, StageContext, get_backend
from rftflow.data.dataset import read_records, write_records

EVAL = "include/data/tiny/eval.jsonl"


pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture(scope="module")
def backend(request):
    request.getfixturevalue("aws_env")
    return get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN, eval_poll_s=0.01)


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_records(str(path), read_records("include/data/tiny/train.jsonl")[:120])
    return str(path)


@pytest.fixture
def small_sft(tmp_path) -> str:
    path = tmp_path / "sft.jsonl"
    write_records(str(path), read_records("include/data/tiny/sft.jsonl", kind="sft")[:50])
    return str(path)


@pytest.fixture
def small_eval(tmp_path) -> str:
    path = tmp_path / "eval.jsonl"
    write_records(str(path), read_records(EVAL)[:12])
    return str(path)


def ctx_for(root: str, stage: str) -> StageContext:
    return StageContext(root, "rft_cycle", "manual__2026-11-25T10:00:00+00:00", 1, stage)


def training_jobs() -> list[str]:
    return [j["TrainingJobName"] for j in boto("sagemaker").list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]


def correct_answer(row: dict) -> str:
    return f"The answer is {row['response']}. #### {row['response']}"


def test_rft_submits_one_job_and_completes_from_its_outputs(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", train, "numeric", {"method": "lora", "num_generations": 8})
    assert isinstance(pending, PendingJob) and pending.kind == "sagemaker_training"
    assert len(pending.job_name) <= 63 and pending.job_name.endswith("-1")

    described = boto("sagemaker").describe_training_job(TrainingJobName=pending.job_name)
    recipe = store.read_text(store.join(ctx.uri, "jobs", pending.job_name, "recipe", "recipe.yaml"))
    assert f"reward_lambda_arn: {LAMBDA_ARN}" in recipe and f"lambda_arn: {LAMBDA_ARN}" in recipe
    assert "number_generation: 8" in recipe
    assert described["HyperParameters"]["reward_lambda_arn"] == LAMBDA_ARN
    assert described["StoppingCondition"]["MaxRuntimeInSeconds"] == 120 * 3600
    staged = [json.loads(x) for x in store.read_text(store.join(ctx.uri, "input", "train", "rft.jsonl")).splitlines()]
    assert len(staged) == 120 and staged[0]["reference_answer"] == "64"

    # The container's work: a checkpoint pointer and verl-named log lines.
    plant_training_output(pending.details["output_path"], pending.job_name, "s3://customer-escrow-1/smtj/step_100")
    put_metric_logs(pending.job_name, [
        "step:1 - critic/rewards/mean:0.25 - actor/entropy:1.9 - response_length/mean:120.0",
        "loading weights",
        "{'step': 2, 'critic/rewards/mean': 0.5, 'actor/kl_loss': np.float64(0.01)}",
    ])
    # The caller may lose the pending job across the deferral: the stage saved it (pending.json).
    manifest = backend.complete(ctx, None, {"status": "success", "job_name": pending.job_name})

    assert manifest.checkpoint_uri == "s3://customer-escrow-1/smtj/step_100"
    assert load_complete(ctx.uri) == manifest
    rows = [json.loads(x) for x in store.read_text(manifest.outputs["metrics_uri"]).splitlines()]
    assert rows == [{"step": 1, "critic/rewards/mean": 0.25, "actor/entropy": 1.9, "response_length/mean": 120.0},
                    {"step": 2, "critic/rewards/mean": 0.5, "actor/kl_loss": 0.01}]
    assert manifest.metrics["reward_first"] == 0.25 and manifest.metrics["reward_last"] == 0.5
    job = manifest.jobs[0]
    assert job["name"] == pending.job_name and job["instance_type"] == "ml.p5.48xlarge"
    assert {"billable_seconds", "estimated_cost_usd", "price", "price_source"} <= set(job)


def test_a_stage_run_twice_creates_one_job(backend, s3_root, small_sft):
    ctx = ctx_for(s3_root, "sft")
    first = backend.sft(ctx, "nova-2-lite", small_sft, {"method": "lora"})
    staged = json.loads(store.read_text(store.join(ctx.uri, "input", "train", "sft.jsonl")).splitlines()[0])
    assert staged["schemaVersion"] == "bedrock-conversation-2024"
    assert [m["role"] for m in staged["messages"]] == ["user", "assistant"]
    assert isinstance(staged["messages"][1]["content"][0]["text"], str)
    plant_training_output(first.details["output_path"], first.job_name, "s3://escrow/sft/step_10")
    before = training_jobs()
    again = backend.sft(ctx, "nova-2-lite", small_sft, {"method": "lora"})
    assert isinstance(again, StageManifest)  # moto finished the job: the retry re-attached and completed
    assert training_jobs() == before and again.jobs[0]["name"] == first.job_name
    assert again.checkpoint_uri == "s3://escrow/sft/step_10"
    assert again.jobs[0]["created_by_this_run"] is False


def test_changed_settings_on_a_finished_job_start_the_next_attempt(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    first = backend.rft(ctx, "nova-2-lite", train, "numeric", {"method": "lora"})
    second = backend.rft(ctx, "nova-2-lite", train, "numeric", {"method": "lora", "learning_rate": 2e-6})
    assert isinstance(second, PendingJob)
    assert second.job_name == first.job_name[:-1] + "2"


def test_failed_attempts_are_skipped_and_a_running_job_with_other_settings_is_refused(backend, s3_root):
    hook = backend.aws.hook("sagemaker")
    base = "rft-cycle-rft-c1-0000000000"

    def build(name: str) -> dict:
        return {"TrainingJobName": name, "Tags": []}

    with Stubber(hook.conn) as stub:
        stub.add_response("describe_training_job", {**_described(f"{base}-1", "Failed")})
        stub.add_response("describe_training_job", {**_described(f"{base}-2", "InProgress")})
        stub.add_response("list_tags", {"Tags": [{"Key": sagemaker_jobs.DIGEST_TAG, "Value": "someone-else"}]})
        with pytest.raises(sagemaker_jobs.JobConflict, match=f"{base}-2 of this stage is still running with other"):
            sagemaker_jobs.find_or_create(hook, base, build)


def _described(name: str, status: str) -> dict:
    import datetime

    now = datetime.datetime(2026, 11, 25)
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "TrainingJobStatus": status, "SecondaryStatus": "Training", "ModelArtifacts": {"S3ModelArtifacts": ""},
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {"VolumeSizeInGB": 1},
            "StoppingCondition": {}, "CreationTime": now}


def test_evaluate_scores_per_prompt_outputs_with_the_reward_handler(backend, s3_root, small_eval):
    ctx = ctx_for(s3_root, "checkpoint_eval")
    base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
    pending = backend.start_evaluate(ctx, "s3://escrow/rft/step_100", small_eval, "numeric")
    assert pending.job_name == f"{base}-1"
    gen_qa = store.join(ctx.uri, "input", "gen_qa", "gen_qa.jsonl")
    # half right: every even row answers correctly
    answers = gen_qa_answers(gen_qa, lambda r: correct_answer(r) if int(json.loads(r["metadata"])["id"][-1]) % 2 == 0
                             else "#### 0")
    plant_eval_output(pending.details["output_path"], pending.job_name, answers[::-1])  # order does not matter
    manifest = backend.complete(ctx, pending, {"status": "success"})
    expected = sum(int(r.id[-1]) % 2 == 0 for r in read_records(small_eval)) / 12
    assert manifest.metrics["pass_at_1"] == pytest.approx(expected)
    assert manifest.metrics["n"] == 12 and "category" in manifest.metrics["breakdown"]
    assert manifest.metrics["aws_results"] == {"em": 0.5, "f1": 0.6}
    assert manifest.checkpoint_uri == "s3://escrow/rft/step_100"
    assert len(store.read_text(manifest.outputs["rows_uri"]).splitlines()) == 12
    described = boto("sagemaker").describe_training_job(TrainingJobName=pending.job_name)
    assert described["HyperParameters"]["base_model_location"] == "s3://escrow/rft/step_100"
    assert "nova-evaluation-repo" in described["AlgorithmSpecification"]["TrainingImage"]


def test_evaluate_waits_in_the_task_and_returns_the_manifest(backend, s3_root, small_eval):
    ctx = ctx_for(s3_root, "baseline_eval")
    name = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle) + "-1"
    remote = store.join(ctx.uri, "job-output")
    records = read_records(small_eval)
    plant_eval_output(remote, name, [{"prompt": r.prompt_text(), "inference": "#### " + r.reference_answer,
                                      "metadata": json.dumps({"id": r.id, "sample": 0})} for r in records])
    manifest = backend.evaluate(ctx, "nova-2-lite", small_eval, "numeric", {"max_prompts": 12})
    assert manifest.metrics["pass_at_1"] == 1.0 and manifest.inputs["model_uri"] == "nova-lite-2/prod"


def test_rft_eval_results_only_give_mean_reward_as_pass_at_1(backend, s3_root, small_eval):
    ctx = ctx_for(s3_root, "checkpoint_eval")
    pending = backend.start_evaluate(ctx, "s3://escrow/rft/step_100", small_eval, "numeric", {"recipe": "eval_rft"})
    described = boto("sagemaker").describe_training_job(TrainingJobName=pending.job_name)
    assert described["HyperParameters"].get("reward_lambda_arn") is None  # rl_env is read from the recipe
    recipe = store.read_text(store.join(ctx.uri, "jobs", pending.job_name, "recipe", "recipe.yaml"))
    assert f"reward_lambda_arn: {LAMBDA_ARN}" in recipe and "task: rft_eval" in recipe
    plant_eval_output(pending.details["output_path"], pending.job_name, None, {"results": {"all": {
        "lambda_reward_score": 0.75, "lambda_reward_score_stderr": 0.05, "lambda_correctness": 0.75}}})
    manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["pass_at_1"] == 0.75 and manifest.metrics["mean_reward"] == 0.75
    assert "eval_gen_qa" in manifest.metrics["pass_at_1_source"]


def test_diversity_on_a_checkpoint_repeats_prompts_k_times(backend, s3_root, small_eval):
    ctx = ctx_for(s3_root, "diversity_recheck")
    pending = backend.start_diversity(ctx, "s3://escrow/sft/step_10", small_eval, "numeric",
                                      {"k": 4, "max_prompts": 10, "temperature": 1.0})
    gen_qa = store.join(ctx.uri, "input", "gen_qa", "gen_qa.jsonl")
    staged = [json.loads(x) for x in store.read_text(gen_qa).splitlines()]
    assert len(staged) == 40 and staged[0]["query"] == staged[3]["query"] != staged[4]["query"]
    recipe = store.read_text(store.join(ctx.uri, "jobs", pending.job_name, "recipe", "recipe.yaml"))
    assert "temperature: 1.0" in recipe

    def answer(row: dict) -> str:  # sample 0 right, the others wrong: every prompt mixed
        return correct_answer(row) if json.loads(row["metadata"])["sample"] == 0 else "#### -1"

    plant_eval_output(pending.details["output_path"], pending.job_name, gen_qa_answers(gen_qa, answer))
    manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["mixed"] == 1.0 and manifest.metrics["k"] == 4
    assert manifest.decision["decision"] == "rft"


def test_failed_and_timed_out_jobs_raise_with_the_job_and_logs(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", train, "numeric", {})
    with pytest.raises(RuntimeError, match=f"{pending.job_name} ended failed: boom .*logs: https://us-east-1"):
        backend.complete(ctx, pending, {"status": "failed", "message": "boom"})
    with pytest.raises(RuntimeError, match="may still be running — retry the task to re-attach"):
        backend.complete(ctx, pending, {"status": "timeout", "message": "max attempts"})


def test_completion_refuses_an_event_for_another_job(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    backend.rft(ctx, "nova-2-lite", train, "numeric", {})
    with pytest.raises(RuntimeError, match="the trigger reported job other-job-1, but this stage waits for"):
        backend.complete(ctx, None, {"status": "success", "job_name": "other-job-1"})


def test_missing_checkpoint_manifest_names_every_place_looked(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", train, "numeric", {})
    with pytest.raises(sagemaker_jobs.JobOutputError, match="no checkpoint manifest found; looked at .*output.tar.gz"):
        backend.complete(ctx, pending, {"status": "success"})


def test_trigger_waits_for_days_and_stop_only_stops_running_jobs(backend, s3_root, train):
    ctx = ctx_for(s3_root, "rft")
    pending = backend.rft(ctx, "nova-2-lite", train, "numeric", {})
    trigger = backend.trigger_for(pending)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow.providers.amazon.aws.triggers.sagemaker.SageMakerTrigger"
    assert kwargs["job_name"] == pending.job_name and kwargs["job_type"] == "training"
    assert kwargs["waiter_delay"] * kwargs["waiter_max_attempts"] >= 120 * 3600  # not the provider's ~30 min
    assert pending.details["wait_timeout_s"] >= 120 * 3600
    backend.stop(pending)  # moto finished it: nothing to stop, and no error
    client = backend.aws.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _described(pending.job_name, "InProgress"))
        stub.add_response("stop_training_job", {}, {"TrainingJobName": pending.job_name})
        backend.stop(pending)
        stub.assert_no_pending_responses()


def test_local_artifact_root_needs_a_staging_uri(file_root, train):
    backend = get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN)
    with pytest.raises(ValueError, match="use an s3:// artifact_root or set the staging_uri option"):
        backend.rft(ctx_for(file_root, "rft"), "nova-2-lite", train, "numeric", {})


def test_options_come_from_the_environment_and_models_are_checked(monkeypatch):
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RFTFLOW_AWS_WAITER_DELAY_S", "120")
    backend = get_backend("sagemaker")
    assert backend.options.role_arn == ROLE and backend.options.waiter_delay_s == 120
    with pytest.raises(ValueError, match="'tiny' is the local backend's model"):
        backend.resolve_model("tiny", ctx_for("s3://b/a", "rft"))
    with pytest.raises(ValueError, match="unknown option"):
        get_backend("sagemaker", rol_arn=ROLE)


def test_reward_lambda_is_found_by_its_deployed_name(s3_root):
    backend = get_backend("sagemaker", role_arn=ROLE)
    with pytest.raises(ValueError, match="rftflow lambda deploy numeric"):
        backend.reward_lambda("numeric")
    assert backend.reward_lambda(LAMBDA_ARN) == LAMBDA_ARN


def _hub_model_document(gated: bool = False) -> str:
    """A hub Model document as SageMaker Python SDK v3 reads it (finetune_utils._get_fine_tuning_options_and_model_arn:
    GatedBucket, RecipeCollection entries with CustomizationTechnique, Peft, SmtjRecipeTemplateS3Uri,
    SmtjOverrideParamsS3Uri, SequenceLength)."""
    return json.dumps({"GatedBucket": gated, "RecipeCollection": [
        {"CustomizationTechnique": "RLVR", "Peft": "LORA", "SequenceLength": "8K",
         "SmtjRecipeTemplateS3Uri": "s3://hub-recipes/rlvr/lora/template.yaml",
         "SmtjOverrideParamsS3Uri": "s3://hub-recipes-{customer_id}/rlvr/lora/params.json"},
        {"CustomizationTechnique": "RLVR", "SequenceLength": "8K",
         "SmtjRecipeTemplateS3Uri": "s3://hub-recipes/rlvr/full/template.yaml",
         "SmtjOverrideParamsS3Uri": "s3://hub-recipes-{customer_id}/rlvr/full/params.json"}]})


def _hub_content(arn: str, kind: str, document: str, version: str = "1.0.0") -> dict:
    return {"HubContentName": arn.split("/")[-2], "HubContentArn": arn, "HubContentVersion": version,
            "HubContentType": kind, "DocumentSchemaVersion": "2.0.0", "HubName": arn.split("/")[1],
            "HubArn": "arn:aws:sagemaker:us-east-1:123456789012:hub/x", "HubContentDocument": document,
            "HubContentStatus": "Available", "CreationTime": __import__("datetime").datetime(2026, 11, 25)}


def test_serverless_rlvr_is_built_as_sdk_v3_builds_it_and_follows_the_plain_manifest(s3_root, train):
    backend = get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN, flavour="serverless")
    ctx = ctx_for(s3_root, "rft-serverless")
    account = boto("sts").get_caller_identity()["Account"]
    s3 = boto("s3")
    s3.create_bucket(Bucket=f"hub-recipes-{account}")
    s3.put_object(Bucket=f"hub-recipes-{account}", Key="rlvr/lora/params.json", Body=json.dumps({
        "learning_rate": {"type": "float", "default": 1e-05, "min": 1e-07, "max": 0.001},
        "max_steps": {"type": "integer", "default": 100, "min": 1},
        "data_s3_path": {"type": "string", "default": ""}}).encode())
    model_arn = "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/nova-textgeneration-lite-v2/1.2.0"
    hub, _ = sagemaker_jobs.ai_registry_hub("us-east-1", account)
    evaluator = f"arn:aws:sagemaker:us-east-1:{account}:hub-content/{hub}/JsonDoc/rftflow-SageMaker-rftflow-numeric/1.0.0"
    group = f"arn:aws:sagemaker:us-east-1:{account}:model-package-group/rftflow"
    client = backend.aws.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_response("describe_hub_content", _hub_content(model_arn, "Model", _hub_model_document()),
                          {"HubName": "SageMakerPublicHub", "HubContentType": "Model",
                           "HubContentName": "nova-textgeneration-lite-v2"})
        stub.add_client_error("describe_hub", "ResourceNotFound", http_status_code=400)
        stub.add_response("create_hub", {"HubArn": f"arn:aws:sagemaker:us-east-1:{account}:hub/{hub}"})
        stub.add_client_error("describe_hub_content", "ResourceNotFound", http_status_code=400)
        stub.add_response("import_hub_content", {"HubArn": "arn:aws:sagemaker:x", "HubContentArn": evaluator})
        stub.add_response("describe_hub_content", _hub_content(evaluator, "JsonDoc", "{}"))
        stub.add_client_error("describe_model_package_group", "ValidationException", "ModelPackageGroup not found")
        stub.add_response("create_model_package_group", {"ModelPackageGroupArn": group},
                          {"ModelPackageGroupName": "rftflow",
                           "ModelPackageGroupDescription": "models trained by rftflow serverless stages"})
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.")
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:x"})
        pending = backend.rft(ctx, "nova-2-lite", train, "numeric", {"hyperparameters": {"max_steps": 20}})
        stub.assert_no_pending_responses()  # every stubbed call was made, in this order
    assert pending.details["flavour"] == "serverless"
    plant_training_output(pending.details["output_path"], pending.job_name, "s3://escrow/serverless/step_50",
                          serverless=True)
    with Stubber(client) as stub:
        done = {**_described(pending.job_name, "Completed"), "BillableTokenCount": 2_000_000,
                "TrainingTimeInSeconds": 7200}
        stub.add_response("describe_training_job", done)
        manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.checkpoint_uri == "s3://escrow/serverless/step_50"
    assert manifest.jobs[0]["kind"] == "serverless" and manifest.jobs[0]["estimated_cost_usd"] == pytest.approx(16.0)
    assert manifest.jobs[0]["billable_seconds"] == 7200


def test_serverless_request_sent_carries_the_sdk_fields(s3_root, train, monkeypatch):
    """What reaches CreateTrainingJob: hub defaults with our override, the registry evaluator, the group."""
    backend = get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN, flavour="serverless")
    plan = sagemaker_jobs.ServerlessPlan(
        model_name="nova-textgeneration-lite-v2", hub_name="SageMakerPublicHub",
        base_model_arn="arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/nova-textgeneration-lite-v2/1.2.0",
        accept_eula=False, hyperparameters={"learning_rate": "1e-05", "max_steps": "20"},
        model_package_group_arn="arn:aws:sagemaker:us-east-1:123456789012:model-package-group/rftflow",
        evaluator_arn="arn:aws:sagemaker:us-east-1:123456789012:hub-content/H/JsonDoc/e/1.0.0")
    monkeypatch.setattr(type(backend), "_serverless_plan", lambda self, recipe, model, arn, open_weight=False: plan)
    sent = []
    monkeypatch.setattr(sagemaker_jobs, "find_or_create",
                        lambda hook, base, build, prepare=None: sent.append(build(f"{base}-1")) or
                        sagemaker_jobs.Submitted(f"{base}-1", None, "InProgress", True, "d"))
    backend.rft(ctx_for(s3_root, "rft-serverless-sent"), "nova-2-lite", train, "numeric", {})
    (request,) = sent
    assert request["HyperParameters"] == {"learning_rate": "1e-05", "max_steps": "20"}
    assert request["ServerlessJobConfig"]["EvaluatorArn"].endswith("/JsonDoc/e/1.0.0")
    assert request["ModelPackageConfig"] == {"ModelPackageGroupArn": plan.model_package_group_arn}
    assert "AcceptEula" not in request["ServerlessJobConfig"]


def test_serverless_gated_model_without_the_eula_stops_before_upload(s3_root, train):
    backend = get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN, flavour="serverless")
    model_arn = "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/nova-textgeneration-lite-v2/1.2.0"
    client = backend.aws.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_response("describe_hub_content", _hub_content(model_arn, "Model", _hub_model_document(gated=True)))
        with pytest.raises(ValueError, match="gated model: read its EULA"):
            backend.rft(ctx_for(s3_root, "rft-gated"), "nova-2-lite", train, "numeric", {})


def test_bedrock_format_sft_keeps_its_system_prompt_when_staged(backend, s3_root, tmp_path):
    """Rows shaped like aws-samples/amazon-nova-samples customization/Nova_2.0/SFT_RFT/data/final/sft/
    combined_training_data_with_system.jsonl: Converse content blocks and a top-level `system` list."""
    rows = [{"messages": [{"role": "user", "content": [{"text": f"Question {i}?"}]},
                          {"role": "assistant", "content": [{"text": f"Answer {i}."}]}],
             "system": [{"text": "You are a securities law tool selection specialist."}]} for i in range(4)]
    path = tmp_path / "bedrock_sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = ctx_for(s3_root, "sft-system")
    backend.sft(ctx, "nova-2-lite", str(path), {"method": "lora"})
    staged = [json.loads(x) for x in store.read_text(store.join(ctx.uri, "input", "train", "sft.jsonl")).splitlines()]
    assert staged[0]["system"] == [{"text": "You are a securities law tool selection specialist."}]
    assert [m["role"] for m in staged[0]["messages"]] == ["user", "assistant"]
    assert staged[3]["messages"][0]["content"] == [{"text": "Question 3?"}]


# --------------------------------------------------------------------------- rft_eval (issue 14, item 3)


def _rft_eval_pending(backend, s3_root, small_eval, stage):
    ctx = ctx_for(s3_root, stage)
    pending = backend.start_evaluate(ctx, "s3://escrow/rft/step_100", small_eval, "numeric", {"recipe": "eval_rft"})
    return ctx, pending


def test_rft_eval_uploads_rft_rows_not_gen_qa(backend, s3_root, small_eval):
    # SageMaker docs "RFT evaluation" (nova-rft-evaluation): input rows are `messages` + `reference_answer`.
    ctx, pending = _rft_eval_pending(backend, s3_root, small_eval, "rft-eval-input")
    staged = [json.loads(x) for x in store.read_text(store.join(ctx.uri, "input", "rft_eval", "rft_eval.jsonl")
                                                      ).splitlines()]
    records = read_records(small_eval)
    assert len(staged) == len(records)
    assert staged[0]["id"] == records[0].id and staged[0]["reference_answer"] == records[0].reference_answer
    assert staged[0]["messages"] == records[0].prompt_messages() and staged[0]["messages"][-1]["role"] == "user"
    assert "query" not in staged[0] and "response" not in staged[0]
    assert not store.exists(store.join(ctx.uri, "input", "gen_qa", "gen_qa.jsonl"))
    channels = boto("sagemaker").describe_training_job(TrainingJobName=pending.job_name)["InputDataConfig"]
    train = next(c for c in channels if c["ChannelName"] == "train")
    assert train["DataSource"]["S3DataSource"]["S3Uri"].endswith("/input/rft_eval/")


def test_rft_eval_per_sample_scores_in_the_documented_jsonl_form(backend, s3_root, small_eval):
    # The docs' per-sample output: one line per sample, identical to the Lambda response
    # ({"id", "aggregate_reward_score", "metrics_list"}), beside results_*.json.
    ctx, pending = _rft_eval_pending(backend, s3_root, small_eval, "rft-eval-jsonl")
    records = read_records(small_eval)
    lines = [{"id": r.id, "aggregate_reward_score": 1.0 if i % 3 == 0 else 0.0,
              "metrics_list": [{"name": "accuracy", "value": 1.0 if i % 3 == 0 else 0.0, "type": "Metric"}]}
             for i, r in enumerate(records)]
    store.write_bytes(store.join(pending.details["output_path"], pending.job_name, "output", "output.tar.gz"), tar_gz({
        "eval-result/results_2026-11-25T10-00-00.json": json.dumps(
            {"results": {"custom|rft_eval_rft_eval|0": {"lambda_reward_score": 4 / 12}}}),
        "eval-result/eval_results.jsonl": "".join(json.dumps(x) + "\n" for x in lines[::-1])}))
    manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["pass_at_1"] == pytest.approx(4 / 12) and manifest.metrics["n"] == 12
    assert "category" in manifest.metrics["breakdown"]
    assert manifest.metrics["aws_results"] == {"lambda_reward_score": pytest.approx(4 / 12)}
    rows = [json.loads(x) for x in store.read_text(manifest.outputs["rows_uri"]).splitlines()]
    assert [r["id"] for r in rows] == [r.id for r in records] and rows[0]["metrics"] == {"accuracy": 1.0}


def test_rft_eval_per_sample_scores_in_the_notebook_parquet_form(backend, s3_root, small_eval):
    # AWS's rft_eval notebook (amazon-nova-samples customization/Nova_2.0/04_eval/RFT_Single_Turn_Evaluation_Example/
    # RFT_Eval_Example.ipynb) reads details_*.parquet: `predictions` a repr list, `metrics` a repr dict holding
    # rft_eval_lambda_metric {lambda_reward_score, lambda_correctness}, `specifics` a repr dict with sample_id.
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    ctx, pending = _rft_eval_pending(backend, s3_root, small_eval, "rft-eval-parquet")
    records = read_records(small_eval)
    table = []
    for i, r in enumerate(records):
        score = 1.0 if i < 9 else 0.0
        table.append({
            "predictions": repr([f"<|begin_of_solution|>#### {r.reference_answer}<|end_of_solution|>"]),
            "metrics": repr({"rft_eval_lambda_metric": {"lambda_reward_score": score, "lambda_correctness": score}}),
            "specifics": repr({"sample_id": r.id, "original_line": r.to_json()}),
        })
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(table), buffer)
    store.write_bytes(store.join(pending.details["output_path"], pending.job_name, "output", "output.tar.gz"), tar_gz({
        "eval-result/results_2026-11-25T10-00-00.json": json.dumps(
            {"results": {"custom|rft_eval_rft_eval|0": {"lambda_reward_score": 0.75, "lambda_correctness": 0.75}}}),
        "eval-result/details/model/2026-11-25T10-00-00/details_custom|rft_eval_rft_eval|0_2026-11-25T10-00-00.parquet":
            buffer.getvalue()}))
    manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["pass_at_1"] == 0.75 and "rft_eval" in manifest.metrics["pass_at_1_source"]
    rows = [json.loads(x) for x in store.read_text(manifest.outputs["rows_uri"]).splitlines()]
    assert rows[0]["completion"] == f"#### {records[0].reference_answer}"
    assert rows[0]["metrics"] == {"lambda_correctness": 1.0} and rows[-1]["passed"] is False


def test_rft_eval_output_missing_a_prompt_says_which(backend, s3_root, small_eval):
    ctx, pending = _rft_eval_pending(backend, s3_root, small_eval, "rft-eval-missing")
    records = read_records(small_eval)
    lines = [{"id": r.id, "aggregate_reward_score": 1.0} for r in records[1:]]
    store.write_bytes(store.join(pending.details["output_path"], pending.job_name, "output", "output.tar.gz"),
                      tar_gz({"eval-result/samples.jsonl": "".join(json.dumps(x) + "\n" for x in lines)}))
    with pytest.raises(sagemaker_jobs.JobOutputError, match=f"no score for 1 of 12 prompts \\(e.g. {records[0].id}\\)"):
        backend.complete(ctx, pending, {"status": "success"})
