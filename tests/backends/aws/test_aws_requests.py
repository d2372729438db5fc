"""Every request our code sends, checked against botocore's real service models (botocore Stubber plus our
stricter model check), and each rule our own validation enforces before AWS ever sees the request."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from rftflow.backends.aws import bedrock_jobs, lambda_deploy, recipes, rollouts, sagemaker_jobs
from rftflow.backends.aws.images import nova_image_uri
from rftflow.backends.aws.modelcheck import RequestError, validate_request
from rftflow.backends.aws.naming import (
    JobNameError,
    job_name,
    request_digest,
    stage_job_base,
    validate_job_name,
)
from rftflow.cycle.recipes import RecipeError

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


MODEL_ARN = "arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/nova-textgeneration-lite-v2/1.0.0"
EVALUATOR = "arn:aws:sagemaker:us-east-1:123456789012:hub-content/REGISTRY/JsonDoc/rftflow-SageMaker-rftflow-numeric/1.0.0"
GROUP = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/rftflow"
# A hub recipe's override parameters (SmtjOverrideParamsS3Uri), in the spec shape SageMaker Python SDK v3's
# FineTuningOptions reads ({name: {type, default, min, max, enum, required}}; sagemaker-train tests
# unit/train/common_utils/test_finetune_utils.py use the same shape).
HUB_SPECS = {
    "learning_rate": {"type": "float", "default": 1e-05, "min": 1e-07, "max": 0.001},
    "max_steps": {"type": "integer", "default": 100, "min": 1, "max": 100000, "required": True},
    "reasoning_effort": {"type": "string", "default": "high", "enum": ["low", "high"]},
    "data_s3_path": {"type": "string", "default": ""},
    "reward_lambda_arn": {"type": "string", "default": ""},
    "output_path": {"type": "string", "default": ""},
}


def serverless_plan(**changes) -> sagemaker_jobs.ServerlessPlan:
    values = dict(model_name="nova-textgeneration-lite-v2", hub_name="SageMakerPublicHub", base_model_arn=MODEL_ARN,
                  accept_eula=False, hyperparameters=sagemaker_jobs.serverless_hyperparameters(
                      HUB_SPECS, {"learning_rate": 2e-05}, "serverless_rlvr.yaml"),
                  model_package_group_arn=GROUP, evaluator_arn=EVALUATOR)
    return sagemaker_jobs.ServerlessPlan(**{**values, **changes})


def test_serverless_request_fits_the_model():
    r = recipes.render_sagemaker("serverless_rlvr", {}, job_name="j-1", reward_lambda_arn=ARN)
    request = sagemaker_jobs.serverless_request(r, serverless_plan(), name="j-1", role_arn=ROLE,
                                                channels={"train": "s3://b/d/"}, output_path="s3://b/o", tags=TAGS)
    assert request["ServerlessJobConfig"] == {"BaseModelArn": MODEL_ARN, "JobType": "FineTuning",
                                              "CustomizationTechnique": "RLVR", "Peft": "LORA",
                                              "EvaluatorArn": EVALUATOR}
    assert request["ModelPackageConfig"] == {"ModelPackageGroupArn": GROUP}
    assert "ResourceConfig" not in request and "AlgorithmSpecification" not in request
    # every hub default is sent (as the SDK does), ours overriding; the options the request itself carries are not
    assert request["HyperParameters"] == {"learning_rate": "2e-05", "max_steps": "100", "reasoning_effort": "high"}
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["sagemaker-sdk:jumpstart-model-id"] == "nova-textgeneration-lite-v2"
    assert tags["sagemaker-sdk:jumpstart-hub-name"] == "SageMakerPublicHub"
    sent_through_botocore("sagemaker", "CreateTrainingJob", request, {"TrainingJobArn": "arn:aws:sagemaker:x"})
    accepted = sagemaker_jobs.serverless_request(r, serverless_plan(accept_eula=True), name="j-1", role_arn=ROLE,
                                                 channels={"train": "s3://b/d/"}, output_path="s3://b/o", tags={})
    assert accepted["ServerlessJobConfig"]["AcceptEula"] is True


def test_serverless_request_matches_what_sdk_v3_builds_for_the_same_inputs(monkeypatch):
    """The same inputs through SageMaker Python SDK v3's own builders (sagemaker-train 1.27, as installed)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from sagemaker.core.shapes import ModelPackageConfig
    from sagemaker.core.utils.utils import serialize
    from sagemaker.train.common import FineTuningOptions, TrainingType
    from sagemaker.train.common_utils import finetune_utils as sdk
    from sagemaker.train.utils import _get_jumpstart_tags

    for technique, training_type, peft, accept in (("RLVR", TrainingType.LORA, "LORA", False),
                                                   ("SFT", TrainingType.FULL, None, True)):
        name = "serverless_rlvr" if technique == "RLVR" else "serverless_sft"
        r = recipes.render_sagemaker(name, {"serverless.peft": peft, "serverless.sequence_length": "8K"},
                                     job_name="j-1", reward_lambda_arn=ARN)
        evaluator = EVALUATOR if technique == "RLVR" else None
        ours = sagemaker_jobs.serverless_request(
            r, serverless_plan(accept_eula=accept, evaluator_arn=evaluator,
                               hyperparameters=sagemaker_jobs.serverless_hyperparameters(HUB_SPECS, {}, name)),
            name="j-1", role_arn=ROLE, channels={"train": "s3://b/data/train.jsonl"}, output_path="s3://b/o", tags={})
        theirs_config = serialize(sdk._create_serverless_config(MODEL_ARN, technique, training_type, accept,
                                                                evaluator, "8K"))
        assert ours["ServerlessJobConfig"] == theirs_config
        options = FineTuningOptions(HUB_SPECS)
        for key in ("data_s3_path", "reward_lambda_arn", "output_path"):  # RLVRTrainer._process_hyperparameters
            delattr(options, key)
            options._specs.pop(key)
        assert ours["HyperParameters"] == options.to_dict()
        channels = serialize(sdk._convert_input_data_to_channels(sdk._create_input_data_config(
            "s3://b/data/train.jsonl")))
        assert ours["InputDataConfig"] == channels
        assert ours["ModelPackageConfig"] == serialize(ModelPackageConfig(model_package_group_arn=GROUP))
        theirs_tags = {t["key"]: t["value"] for t in _get_jumpstart_tags("nova-textgeneration-lite-v2",
                                                                          "SageMakerPublicHub")}
        assert {t["Key"]: t["Value"] for t in ours["Tags"]} == theirs_tags
        assert sdk.NOVA_REGIONS == ["us-east-1", "us-west-2"]  # the serverless region list we follow


def test_serverless_hyperparameters_are_checked_against_the_hub_recipe():
    with pytest.raises(ValueError, match="hyperparameters.learning_rate: expected <= 0.001; got 0.5"):
        sagemaker_jobs.serverless_hyperparameters(HUB_SPECS, {"learning_rate": 0.5}, "r.yaml")
    with pytest.raises(ValueError, match="hyperparameters.lr: not an option of the hub recipe"):
        sagemaker_jobs.serverless_hyperparameters(HUB_SPECS, {"lr": 1e-5}, "r.yaml")
    with pytest.raises(ValueError, match="hyperparameters.reasoning_effort: expected one of"):
        sagemaker_jobs.serverless_hyperparameters(HUB_SPECS, {"reasoning_effort": "medium"}, "r.yaml")
    with pytest.raises(ValueError, match="hyperparameters.reward_lambda_arn: set by rftflow"):
        sagemaker_jobs.serverless_hyperparameters(HUB_SPECS, {"reward_lambda_arn": ARN}, "r.yaml")


def test_gated_models_need_the_eula_accepted_unless_given_by_arn():
    assert sagemaker_jobs.eula_acceptance("m", gated=False, accept_eula=False, given_as_arn=False) is False
    assert sagemaker_jobs.eula_acceptance("m", gated=True, accept_eula=False, given_as_arn=True) is True
    with pytest.raises(ValueError, match="gated model: read its EULA, then set serverless.accept_eula: true"):
        sagemaker_jobs.eula_acceptance("meta-textgeneration-llama-3-2-1b-instruct", gated=True, accept_eula=False,
                                       given_as_arn=False)


def test_hub_recipe_selection_follows_the_sdk():
    model = sagemaker_jobs.HubModel("m", MODEL_ARN, False, [
        {"CustomizationTechnique": "RLVR", "SmtjRecipeTemplateS3Uri": "s3://t/a", "Peft": "LORA",
         "IsSubscriptionModel": True, "SequenceLength": "8K"},
        {"CustomizationTechnique": "RLVR", "SmtjRecipeTemplateS3Uri": "s3://t/b", "Peft": "LORA",
         "SequenceLength": "8K"},
        {"CustomizationTechnique": "RLVR", "SmtjRecipeTemplateS3Uri": "s3://t/c", "SequenceLength": "32K"},
        {"CustomizationTechnique": "SFT", "HpEksPayloadTemplateS3Uri": "s3://t/d"},
    ])
    assert sagemaker_jobs.select_hub_recipe(model, "RLVR", "LORA")["SmtjRecipeTemplateS3Uri"] == "s3://t/b"
    assert sagemaker_jobs.select_hub_recipe(model, "RLVR", None, "32K")["SmtjRecipeTemplateS3Uri"] == "s3://t/c"
    with pytest.raises(ValueError, match="offers"):
        sagemaker_jobs.select_hub_recipe(model, "RLVR", "LORA", "64K")
    with pytest.raises(ValueError, match="no SFT recipe for serverless jobs"):
        sagemaker_jobs.select_hub_recipe(model, "SFT", "LORA")


def test_evaluator_registration_requests_fit_the_model_and_use_the_ai_registry_hub(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from sagemaker.ai_registry import air_constants as air
    from sagemaker.ai_registry.air_hub import AIRHub

    hub, display = sagemaker_jobs.ai_registry_hub("us-east-1", "123456789012")
    AIRHub._generate_hub_names("us-east-1", "123456789012")  # the SDK's own naming, for the same account
    assert (hub, display) == (AIRHub.hubName, AIRHub.hubDisplayName)
    create_hub, import_content = sagemaker_jobs.evaluator_requests(hub, display, ARN)
    document = json.loads(import_content["HubContentDocument"])
    assert document["SubType"] == air.EVALUATOR_HUB_CONTENT_SUBTYPE
    assert json.loads(document["JsonContent"]) == {"Reference": ARN, "EvaluatorType": air.REWARD_FUNCTION}
    assert import_content["HubContentType"] == air.EVALUATOR_HUB_CONTENT_TYPE
    assert import_content["DocumentSchemaVersion"] == air.EVALUATOR_DOCUMENT_SCHEMA_VERSION
    assert import_content["HubContentSearchKeywords"] == [
        f"{air.TAG_KEY_METHOD}:{air.EVALUATOR_DEFAULT_METHOD}", f"@subtype:{air.EVALUATOR_HUB_CONTENT_SUBTYPE.lower()}",
        f"@{air.DOC_KEY_SUB_TYPE.lower()}:{air.REWARD_FUNCTION.lower()}",
        f"@contenttype:{air.EVALUATOR_BYOLAMBDA.lower()}"]
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
    from rftflow.data.dataset import RftRecord

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
