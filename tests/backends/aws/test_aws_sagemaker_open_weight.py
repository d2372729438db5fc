"""SageMaker serverless customization of open-weight hub models (Qwen3, Llama, ...): RLVR training from the hub
model, its registered model package as the checkpoint, and serverless custom-scorer evaluation jobs for eval
and the diversity check, their per-sample outputs scored with the stage's reward handler. SageMaker's hub and
model-registry calls are answered by botocore's Stubber (moto has no hub), S3 by the moto server; every request
is checked against botocore's model on the way out."""

from __future__ import annotations

import datetime
import importlib
import json
import sys
import zipfile

import pytest
from aws_fakes import LAMBDA_ARN, ROLE, aws_env, boto, gen_qa_answers  # noqa: F401  (aws_env is a fixture)
from botocore.stub import Stubber

from rftflow.artifacts import store
from rftflow.backends.aws import lambda_deploy, sagemaker_jobs
from rftflow.backends.base import PendingJob, StageContext, get_backend
from rftflow.data.dataset import read_records, write_records

pytestmark = pytest.mark.usefixtures("aws_env")
QWEN = "huggingface-reasoning-qwen3-8b"
QWEN_ARN = f"arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/{QWEN}/2.1.0"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/rftflow/3"
GROUP = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/rftflow"


@pytest.fixture
def backend():
    return get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN, flavour="serverless",
                       eval_poll_s=0.01)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    out = {}
    for name, n in (("train", 60), ("eval", 10)):
        out[name] = str(folder / f"{name}.jsonl")
        write_records(out[name], read_records(f"include/data/tiny/{name}.jsonl")[:n])
    return out


def ctx_for(root: str, stage: str) -> StageContext:
    return StageContext(root, "rft_cycle", "manual__2026-12-02T10:00:00+00:00", 1, stage)


def _hub_content(arn: str, kind: str, document: str) -> dict:
    return {"HubContentName": arn.split("/")[-2], "HubContentArn": arn, "HubContentVersion": arn.split("/")[-1],
            "HubContentType": kind, "DocumentSchemaVersion": "2.0.0", "HubName": arn.split("/")[1],
            "HubArn": "arn:aws:sagemaker:us-east-1:123456789012:hub/x", "HubContentDocument": document,
            "HubContentStatus": "Available", "CreationTime": datetime.datetime(2026, 12, 1)}


def _qwen_document() -> str:
    """The hub Model document fields SDK v3 reads (GatedBucket, RecipeCollection)."""
    return json.dumps({"GatedBucket": False, "RecipeCollection": [
        {"CustomizationTechnique": "RLVR", "Peft": "LORA", "SequenceLength": "8K",
         "SmtjRecipeTemplateS3Uri": "s3://hub-recipes/qwen/rlvr/lora/template.yaml",
         "SmtjOverrideParamsS3Uri": "s3://hub-recipes-{customer_id}/qwen/rlvr/lora/params.json"}]})


def _evaluator(account: str) -> tuple[str, dict]:
    hub, _ = sagemaker_jobs.ai_registry_hub("us-east-1", account)
    arn = f"arn:aws:sagemaker:us-east-1:{account}:hub-content/{hub}/JsonDoc/rftflow-numeric/1.0.0"
    doc = json.dumps({"SubType": "AWS/Evaluator", "JsonContent": json.dumps({"Reference": LAMBDA_ARN})})
    return arn, _hub_content(arn, "JsonDoc", doc)


def _described(name: str, status: str, **extra) -> dict:
    now = datetime.datetime(2026, 12, 2)
    return {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
            "TrainingJobStatus": status, "SecondaryStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": ""},
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {"VolumeSizeInGB": 1},
            "StoppingCondition": {}, "CreationTime": now, **extra}


def _capture(client, operation: str) -> list[dict]:
    """The parameters of every `operation` call the client makes (after our own request check)."""
    sent: list[dict] = []
    client.meta.events.register(f"provide-client-params.sagemaker.{operation}",
                                lambda params, **_: sent.append(dict(params)))
    return sent


def test_rlvr_on_an_open_weight_hub_model_trains_serverless_and_its_model_package_is_the_checkpoint(
        backend, s3_root, data):
    account = boto("sts").get_caller_identity()["Account"]
    s3 = boto("s3")
    s3.create_bucket(Bucket=f"hub-recipes-{account}")
    s3.put_object(Bucket=f"hub-recipes-{account}", Key="qwen/rlvr/lora/params.json", Body=json.dumps({
        "learning_rate": {"type": "float", "default": 5e-06, "min": 1e-07, "max": 0.001},
        "rollouts_per_prompt": {"type": "integer", "default": 8, "min": 2, "max": 16}}).encode())
    evaluator, evaluator_found = _evaluator(account)
    client = backend.aws.client("sagemaker")
    sent = _capture(client, "CreateTrainingJob")
    ctx = ctx_for(s3_root, "rft")
    with Stubber(client) as stub:
        stub.add_response("describe_hub_content", _hub_content(QWEN_ARN, "Model", _qwen_document()),
                          {"HubName": "SageMakerPublicHub", "HubContentType": "Model", "HubContentName": QWEN})
        stub.add_response("describe_hub", {"HubName": "h", "HubArn": "arn:aws:sagemaker:x", "HubStatus": "InService",
                                           "CreationTime": datetime.datetime(2026, 12, 1),
                                           "LastModifiedTime": datetime.datetime(2026, 12, 1)})
        stub.add_response("describe_hub_content", evaluator_found)
        stub.add_response("describe_model_package_group", {
            "ModelPackageGroupName": "rftflow", "ModelPackageGroupArn": GROUP,
            "CreationTime": datetime.datetime(2026, 12, 1), "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.")
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:x"})
        pending = backend.rft(ctx, QWEN, data["train"], "numeric", {"hyperparameters": {"rollouts_per_prompt": 4}})
        stub.assert_no_pending_responses()
    assert isinstance(pending, PendingJob) and pending.details["open_weight"] is True
    (request,) = sent
    config = request["ServerlessJobConfig"]
    assert config == {"BaseModelArn": QWEN_ARN, "JobType": "FineTuning", "CustomizationTechnique": "RLVR",
                      "Peft": "LORA", "EvaluatorArn": evaluator}
    assert request["HyperParameters"] == {"learning_rate": "5e-06", "rollouts_per_prompt": "4"}
    assert {"Key": "sagemaker-sdk:jumpstart-model-id", "Value": QWEN} in request["Tags"]
    rows = [json.loads(x) for x in store.read_text(pending.details["staged_data_uri"]).splitlines()]
    assert len(rows) == 60 and rows[0]["reference_answer"] == "64"  # the reward contract's reading
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "64"}  # and the verl-style one
    assert rows[0]["prompt"] == rows[0]["messages"]

    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _described(
            pending.job_name, "Completed", OutputModelPackageArn=PACKAGE, BillableTokenCount=3_000_000))
        manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.checkpoint_uri == PACKAGE
    assert manifest.outputs["checkpoint_manifest"] == "DescribeTrainingJob.OutputModelPackageArn"
    assert manifest.jobs[0]["kind"] == "serverless" and manifest.jobs[0]["estimated_cost_usd"] == pytest.approx(24.0)


def _stub_eval_setup(stub, account: str, *, package: bool) -> None:
    _, evaluator_found = _evaluator(account)
    if package:
        stub.add_response("describe_model_package", {
            "ModelPackageName": "rftflow", "ModelPackageArn": PACKAGE, "CreationTime": datetime.datetime(2026, 12, 2),
            "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "InferenceSpecification": {"Containers": [{"Image": "x", "BaseModel": {
                "HubContentName": QWEN, "HubContentVersion": "2.1.0"}}], "SupportedContentTypes": [],
                "SupportedResponseMIMETypes": []}}, {"ModelPackageName": PACKAGE})
    else:
        stub.add_response("describe_hub_content", _hub_content(QWEN_ARN, "Model", _qwen_document()))
    stub.add_response("describe_hub", {"HubName": "h", "HubArn": "arn:aws:sagemaker:x", "HubStatus": "InService",
                                       "CreationTime": datetime.datetime(2026, 12, 1),
                                       "LastModifiedTime": datetime.datetime(2026, 12, 1)})
    stub.add_response("describe_hub_content", evaluator_found)
    if package:
        stub.add_response("describe_model_package_group", {
            "ModelPackageGroupName": "rftflow", "ModelPackageGroupArn": GROUP,
            "CreationTime": datetime.datetime(2026, 12, 1), "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"})
    stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.")
    stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:x"})


def _submit_eval(client, account: str, package: bool, start) -> tuple[PendingJob, dict]:
    """Run `start` against the stubbed hub and registry calls; (its pending job, the CreateTrainingJob sent)."""
    sent = _capture(client, "CreateTrainingJob")
    with Stubber(client) as stub:
        _stub_eval_setup(stub, account, package=package)
        pending = start()
        stub.assert_no_pending_responses()  # every stubbed call was made, in this order
    (request,) = sent
    return pending, request


def _plant_serverless_eval(pending: PendingJob, answer) -> None:
    """What a serverless evaluation leaves: plain files, `<job>/output/output/<eval job>/eval_results/`
    (SDK v3 evaluators' layout), inference_output.jsonl in gen_qa's {prompt, inference, gold, metadata} form."""
    staged = store.join(pending.details["remote_uri"], "input", "gen_qa", "gen_qa.jsonl")
    rows = gen_qa_answers(staged, answer)
    where = store.join(pending.details["output_path"], pending.job_name, "output", "output", "eval-1", "eval_results")
    store.write_text(store.join(where, "inference_output.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))


def test_evaluating_the_trained_model_package_is_a_serverless_custom_scorer_job_scored_here(backend, s3_root, data):
    account = boto("sts").get_caller_identity()["Account"]
    client = backend.aws.client("sagemaker")
    ctx = ctx_for(s3_root, "checkpoint_eval")
    pending, request = _submit_eval(client, account, True, lambda: backend.start_evaluate(
        ctx, PACKAGE, data["eval"], "numeric"))
    assert request["ServerlessJobConfig"] == {
        "BaseModelArn": QWEN_ARN, "JobType": "Evaluation", "EvaluationType": "CustomScorerEvaluation",
        "AcceptEula": True, "EvaluatorArn": _evaluator(account)[0]}
    assert request["ModelPackageConfig"] == {"ModelPackageGroupArn": GROUP, "SourceModelPackageArn": PACKAGE}
    assert request["HyperParameters"]["task"] == "gen_qa" and request["HyperParameters"]["temperature"] == "0.0"
    assert request["OutputDataConfig"]["CompressionType"] == "NONE"

    first_two = {r.id for r in read_records(data["eval"])[:2]}

    def answer(row: dict) -> str:  # right on all but the first two prompts
        return "#### -1" if json.loads(row["metadata"])["id"] in first_two else f"#### {row['response']}"

    _plant_serverless_eval(pending, answer)
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _described(pending.job_name, "Completed", BillableTokenCount=10_000))
        manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["n"] == 10 and manifest.metrics["pass_at_1"] == pytest.approx(0.8)
    rows = store.read_jsonl(manifest.outputs["rows_uri"])
    assert [r["passed"] for r in rows[:2]] == [False, False] and all(r["passed"] for r in rows[2:])
    assert manifest.checkpoint_uri == PACKAGE


def test_the_diversity_check_on_the_base_hub_model_samples_k_per_prompt_in_one_serverless_job(
        backend, s3_root, data):
    account = boto("sts").get_caller_identity()["Account"]
    client = backend.aws.client("sagemaker")
    ctx = ctx_for(s3_root, "diversity_check")
    pending, request = _submit_eval(client, account, False, lambda: backend.start_diversity(
        ctx, QWEN, data["train"], "numeric", {"k": 4, "max_prompts": 12}))
    assert "ModelPackageConfig" not in request and request["HyperParameters"]["temperature"] == "1.0"
    staged = store.read_text(store.join(pending.details["remote_uri"], "input", "gen_qa", "gen_qa.jsonl"))
    assert len(staged.splitlines()) == 12 * 4

    def answer(row: dict) -> str:  # each prompt passes on its first sample only: all mixed
        return f"#### {row['response']}" if json.loads(row["metadata"])["sample"] == 0 else "#### -1"

    _plant_serverless_eval(pending, answer)
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _described(pending.job_name, "Completed"))
        manifest = backend.complete(ctx, pending, {"status": "success"})
    assert manifest.metrics["mixed"] == 1.0 and manifest.decision["decision"] == "rft"


def test_an_open_weight_model_needs_the_serverless_flavour_and_a_region_that_has_it(s3_root, data, tmp_path):
    jobs_flavour = get_backend("sagemaker", role_arn=ROLE, reward_lambda_arn=LAMBDA_ARN)
    with pytest.raises(ValueError, match="open-weight hub models train on SageMaker serverless"):
        jobs_flavour.rft(ctx_for(s3_root, "rft"), QWEN, data["train"], "numeric")
    from rftflow.data.validation import validate_dataset

    def region(name: str):
        report = validate_dataset(data["train"], data["eval"], backend="sagemaker", region=name, flavour="serverless",
                                  model=QWEN, report_dir_uri=str(tmp_path / name), raise_on_failure=False)
        return next(c for c in report.checks if c.name == "region")

    assert region("eu-west-1").status == "pass"  # open-weight serverless runs there, Nova does not
    refused = region("eu-west-2")
    assert refused.status == "fail" and "ap-northeast-1, eu-west-1, us-east-1, us-west-2" in " ".join(refused.details)


def test_without_an_arn_the_open_weight_path_looks_for_the_http_envelope_lambda():
    bare = get_backend("sagemaker", role_arn=ROLE, flavour="serverless")
    with pytest.raises(ValueError, match=r"no Lambda SageMaker-rftflow-numeric-http .*--response http"):
        bare.reward_lambda("numeric", response="http")


def test_the_http_envelope_package_answers_as_open_weight_reward_functions_do(tmp_path, monkeypatch):
    """SDK v3's reward verifier (rlvr_reward_verifier._unwrap_response): open-weight reward functions return
    {statusCode: 200, body: <JSON list>}; the wrapper gives that from the same handler, and rftflow reads both."""
    from rftflow.rewards.contract import validate_output

    pkg = lambda_deploy.package("numeric", response="http")
    assert pkg.module == lambda_deploy.HTTP_ENVELOPE_MODULE and "numeric.py" in pkg.files
    assert lambda_deploy.package("numeric", response="http").zip_bytes == pkg.zip_bytes  # deterministic
    with zipfile.ZipFile(__import__("io").BytesIO(pkg.zip_bytes)) as archive:
        archive.extractall(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m in ("numeric", pkg.module)]:
        monkeypatch.delitem(sys.modules, name)
    handler = importlib.import_module(pkg.module).lambda_handler
    samples = [{"id": "a", "messages": [{"role": "user", "content": "2+2?"},
                                        {"role": "assistant", "content": "#### 4"}], "reference_answer": "4"},
               {"id": "b", "messages": [{"role": "user", "content": "3+3?"},
                                        {"role": "assistant", "content": "#### 7"}], "reference_answer": "6"}]
    answer = handler(samples, None)
    assert answer["statusCode"] == 200 and isinstance(answer["body"], str)
    results = validate_output(samples, lambda_deploy.unwrap_response(answer))
    assert [r.aggregate_reward_score for r in results] == [1.0, 0.0]
    again = handler({"body": json.dumps(samples)}, None)  # a request sent as an envelope is unwrapped too
    assert json.loads(again["body"]) == json.loads(answer["body"])
    with pytest.raises(RuntimeError, match="answered status 500"):
        lambda_deploy.unwrap_response({"statusCode": 500, "body": "boom"})
    assert lambda_deploy.function_name("numeric", response="http") == "SageMaker-rftflow-numeric-http"
