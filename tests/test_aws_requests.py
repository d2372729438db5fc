"""Every request our code sends, checked against botocore's real service models (botocore Stubber plus our
stricter model check), and each rule our own validation enforces before AWS ever sees the request."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from rftflow.aws import bedrock_jobs, lambda_deploy, recipes, rollouts, sagemaker_jobs
from rftflow.aws.images import nova_image_uri
from rftflow.aws.modelcheck import RequestError, validate_request
from rftflow.aws.naming import JobNameError, job_name, request_digest, stage_job_base, validate_job_name
from rftflow.config import RecipeError

ROLE = "arn:aws:iam::123456789012:role/rftflow-sagemaker-execution"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rftflow-numeric"
TAGS = {"rftflow:dag": "rft_cycle", "rftflow:run": "manual__2026-01-01T00:00:00+00:00", "rftflow:cycle": 1,
        "rftflow:stage": "rft"}


def client(service: str):
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def sent_through_botocore(service: str, operation: str, request: dict, response: dict) -> None:
    """Send `request` through a real client with a Stubber: botocore validates it against its model."""
    c = client(service)
    method = getattr(c, c.meta.method_to_api_mapping and next(
        k for k, v in c.meta.method_to_api_mapping.items() if v == operation))
    with Stubber(c) as stub:
        stub.add_response(method.__name__, response, expected_params=request)
        method(**request)
        stub.assert_no_pending_responses()


def botocore_alone_accepts(service: str, operation: str, request: dict) -> bool:
    model = boto3.session.Session().get_available_services() and client(service).meta.service_model
    return not ParamValidator().validate(request, model.operation_model(operation).input_shape).has_errors()


def sm_request(name: str = "rft-cycle-rft-c1-0123456789-1", recipe: str = "rft_lora", **overrides):
    r = recipes.render_sagemaker(recipe, overrides, job_name=name, reward_lambda_arn=ARN)
    return sagemaker_jobs.training_job_request(
        r, name=name, role_arn=ROLE, region="us-east-1", recipe_prefix=f"s3://bkt/stage/jobs/{name}/recipe/",
        channels={"train": "s3://bkt/stage/input/train/", "validation": "s3://bkt/stage/input/val/"},
        output_path="s3://bkt/stage/job-output", tags=TAGS)


# --------------------------------------------------------------------------- SageMaker


@pytest.mark.parametrize("recipe", ["rft_lora", "rft_full", "sft_lora", "sft_full", "eval_gen_qa", "eval_rft"])
def test_create_training_job_requests_fit_the_sagemaker_model(recipe):
    request = sm_request(recipe=recipe)
    sent_through_botocore("sagemaker", "CreateTrainingJob", request,
                          {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/x"})


def test_rft_request_carries_image_channels_recipe_limits_and_tags():
    request = sm_request()
    assert request["AlgorithmSpecification"]["TrainingImage"] == \
        "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest"
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation", "recipe"]
    assert request["HyperParameters"] == {"sagemaker_recipe_local_path": "/opt/ml/input/data/recipe/recipe.yaml",
                                          "base_model": "nova-lite-2/prod", "reward_lambda_arn": ARN}
    assert request["ResourceConfig"] == {"InstanceType": "ml.p5.48xlarge", "InstanceCount": 2,
                                         "VolumeSizeInGB": 200}
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 120 * 3600  # days, never the SDK's 3600 s
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["rftflow:run"] == "manual__2026-01-01T00:00:00+00:00" and tags["rftflow:stage"] == "rft"


def test_checkpoint_model_becomes_base_model_location_and_images_follow_the_region():
    r = recipes.render_sagemaker("eval_gen_qa", {}, job_name="j-1", model="s3://escrow/ckpt/step_4")
    request = sagemaker_jobs.training_job_request(r, name="j-1", role_arn=ROLE, region="us-west-2",
                                                  recipe_prefix="s3://b/r/", channels={"train": "s3://b/d/"},
                                                  output_path="s3://b/o", tags={})
    assert request["HyperParameters"]["base_model_location"] == "s3://escrow/ckpt/step_4"
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith("176779409107.dkr.ecr.us-west-2.")
    assert nova_image_uri("sft", "us-east-1").endswith("nova-fine-tune-repo:SM-TJ-SFT-V2-latest")
    with pytest.raises(ValueError, match="region 'sa-east-1': the Nova 2 Lite rft image .* published only in "
                                         "ap-northeast-1, us-east-1, us-west-2"):
        nova_image_uri("rft", "sa-east-1")


def test_serverless_request_fits_the_model():
    r = recipes.render_sagemaker("serverless_rlvr", {"hyperparameters": {"learning_rate": 1e-5}},
                                 job_name="j-1", reward_lambda_arn=ARN)
    model_arn = "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/nova-textgeneration-lite-v2/1.0.0"
    evaluator = "arn:aws:sagemaker:us-east-1:123456789012:hub-content/rftflow-evaluators/JsonDoc/rftflow-x/1.0.0"
    request = sagemaker_jobs.serverless_request(r, name="j-1", role_arn=ROLE, base_model_arn=model_arn,
                                                evaluator_arn=evaluator, channels={"train": "s3://b/d/"},
                                                output_path="s3://b/o", tags=TAGS)
    assert request["ServerlessJobConfig"] == {"BaseModelArn": model_arn, "AcceptEula": False, "JobType": "FineTuning",
                                              "CustomizationTechnique": "RLVR", "Peft": "LORA",
                                              "EvaluatorArn": evaluator}
    assert "ResourceConfig" not in request and "AlgorithmSpecification" not in request
    assert request["HyperParameters"] == {"learning_rate": "1e-05"}
    sent_through_botocore("sagemaker", "CreateTrainingJob", request, {"TrainingJobArn": "arn:aws:sagemaker:x"})


def test_evaluator_registration_requests_fit_the_model():
    create_hub, import_content = sagemaker_jobs.evaluator_requests("rftflow-evaluators", ARN)
    assert json.loads(json.loads(import_content["HubContentDocument"])["JsonContent"])["Reference"] == ARN
    sent_through_botocore("sagemaker", "CreateHub", create_hub, {"HubArn": "arn:aws:sagemaker:x"})
    sent_through_botocore("sagemaker", "ImportHubContent", import_content,
                          {"HubArn": "arn:aws:sagemaker:x", "HubContentArn": "arn:aws:sagemaker:y"})


# --------------------------------------------------------------------------- job names


def test_job_names_are_deterministic_short_and_independent_of_the_try():
    uri = "s3://bkt/art/rft_cycle/manual__2026/cycle-1/rft"
    base = stage_job_base(uri, "rft_cycle", "rft", 1)
    assert base == stage_job_base(uri, "rft_cycle", "rft", 1)
    assert base != stage_job_base(uri.replace("cycle-1", "cycle-2"), "rft_cycle", "rft", 2)
    long = stage_job_base(uri, "a_really_long_dag_identifier_" * 4, "checkpoint_eval", 12)
    assert len(job_name(long, 999)) <= 63
    validate_job_name(job_name(long, 1))


def test_a_name_too_long_is_caught_by_us_not_left_to_aws():
    name = "rft-cycle-" + "x" * 60
    request = sm_request(name=name[:63])  # fine at 63
    request["TrainingJobName"] = name
    assert botocore_alone_accepts("sagemaker", "CreateTrainingJob", request)  # botocore checks no max length
    with pytest.raises(JobNameError, match="at most 63 characters allowed; got 70"):
        validate_job_name(name)
    with pytest.raises(RequestError, match="TrainingJobName: at most 63 characters allowed; got 70"):
        validate_request("sagemaker", "CreateTrainingJob", request)


def test_request_digest_ignores_the_attempt_name():
    a, b = sm_request(name="j-1"), sm_request(name="j-2")
    assert request_digest(a, "j-1") == request_digest(b, "j-2")
    assert request_digest(a, "j-1") != request_digest(sm_request(name="j-1", learning_rate=2e-5), "j-1")


def test_model_check_reports_pattern_enum_and_range_with_the_field():
    request = sm_request()
    request["RoleArn"] = "my-role"
    request["ResourceConfig"]["InstanceType"] = "ml.p9.huge"
    with pytest.raises(RequestError) as err:
        validate_request("sagemaker", "CreateTrainingJob", request)
    assert "RoleArn: 'my-role' does not match the API pattern" in str(err.value)
    assert "ResourceConfig.InstanceType: expected one of" in str(err.value)


# --------------------------------------------------------------------------- Bedrock


def bedrock_request(stage: str = "rft", **overrides):
    r = recipes.render_bedrock(stage, overrides)
    return bedrock_jobs.customization_request(
        r, name="rft-cycle-rft-c1-0123456789-1", role_arn=ROLE,
        base_model_arn=bedrock_jobs.foundation_model_arn(r.base_model, "us-east-1"),
        train_uri="s3://bkt/stage/input/rft.jsonl", output_uri="s3://bkt/stage/job-output/",
        reward_lambda_arn=ARN if stage == "rft" else None, tags=TAGS)


def test_rft_customization_request_fits_the_bedrock_model_with_native_numbers():
    request = bedrock_request()
    assert request["customizationType"] == "REINFORCEMENT_FINE_TUNING"
    rft = request["customizationConfig"]["rftConfig"]
    assert rft["graderConfig"] == {"lambdaGrader": {"lambdaArn": ARN}}
    assert rft["hyperParameters"]["learningRate"] == 1e-5 and isinstance(rft["hyperParameters"]["batchSize"], int)
    assert "hyperParameters" not in request  # the top-level string map is SFT's
    assert request["baseModelIdentifier"] == \
        "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-2-lite-v1:0:256k"
    sent_through_botocore("bedrock", "CreateModelCustomizationJob", request, {"jobArn": "arn:aws:bedrock:x"})


def test_sft_customization_request_sends_string_hyperparameters():
    request = bedrock_request("sft")
    assert request["customizationType"] == "FINE_TUNING"
    assert request["hyperParameters"] == {"epochCount": "2", "learningRate": "1e-05", "learningRateWarmupSteps": "10"}
    sent_through_botocore("bedrock", "CreateModelCustomizationJob", request, {"jobArn": "arn:aws:bedrock:x"})


def test_hyperparameter_out_of_range_is_caught_by_us_first():
    request = bedrock_request()
    request["customizationConfig"]["rftConfig"]["hyperParameters"]["learningRate"] = 0.5
    assert botocore_alone_accepts("bedrock", "CreateModelCustomizationJob", request)  # botocore checks no max
    with pytest.raises(RequestError, match="learningRate: expected <= 0.001; got 0.5"):
        validate_request("bedrock", "CreateModelCustomizationJob", request)
    with pytest.raises(RecipeError, match="learningRate"):
        bedrock_request(learning_rate=0.5)


def test_bedrock_rft_needs_a_lambda_arn():
    r = recipes.render_bedrock("rft")
    kwargs = dict(name="j-1", role_arn=ROLE, base_model_arn="arn:aws:bedrock:us-east-1::foundation-model/x.y",
                  train_uri="s3://bkt/a.jsonl", output_uri="s3://bkt/o/")
    with pytest.raises(bedrock_jobs.BedrockRequestError, match="needs the reward Lambda ARN"):
        bedrock_jobs.customization_request(r, **kwargs)
    with pytest.raises(bedrock_jobs.BedrockRequestError, match="expected a Lambda function ARN"):
        bedrock_jobs.customization_request(r, reward_lambda_arn="arn:aws:s3:::bucket", **kwargs)


def test_deployment_and_converse_requests_fit_their_models():
    from rftflow.dataset import RftRecord

    record = RftRecord(id="r1", messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "2+2?"}], reference_answer="4")
    settings = rollouts.ConverseSettings(model_id="us.amazon.nova-2-lite-v1:0", temperature=1.0, max_tokens=64)
    request = rollouts.converse_request(record, settings)
    assert request["system"] == [{"text": "Be brief."}]
    validate_request("bedrock-runtime", "Converse", request)
    sent_through_botocore("bedrock-runtime", "Converse", request, {
        "output": {"message": {"role": "assistant", "content": [{"text": "4"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 5, "outputTokens": 1, "totalTokens": 6}, "metrics": {"latencyMs": 10}})


# --------------------------------------------------------------------------- Lambda


def test_lambda_create_function_request_fits_the_model():
    settings = lambda_deploy.LambdaSettings(role_arn="arn:aws:iam::123456789012:role/rftflow-reward-lambda",
                                            memory_mb=1024, environment={"NUMERIC_REL_TOL": "0.01"})
    package = lambda_deploy.build_zip(lambda_deploy.handler_path("numeric"))
    request = lambda_deploy.create_request("SageMaker-rftflow-numeric", package, "numeric", settings)
    assert request["Timeout"] >= 300 and request["Handler"] == "numeric.lambda_handler"
    sent_through_botocore("lambda", "CreateFunction", request, {"FunctionArn": ARN})
    sent_through_botocore("lambda", "UpdateFunctionConfiguration",
                          lambda_deploy.configuration_request("SageMaker-rftflow-numeric", "numeric", settings),
                          {"FunctionArn": ARN})


def test_lambda_settings_and_names_are_checked_before_sending():
    with pytest.raises(ValueError, match="timeout_s"):
        lambda_deploy.LambdaSettings(role_arn="arn:aws:iam::123456789012:role/r", timeout_s=3)
    with pytest.raises(ValueError, match="must start with 'SageMaker-'"):
        lambda_deploy.function_name("numeric", "rftflow-numeric")
