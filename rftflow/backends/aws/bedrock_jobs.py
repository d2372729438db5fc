"""Bedrock model customization for Nova: the CreateModelCustomizationJob request (reinforcement fine-tuning
with a Lambda grader, or fine-tuning), find-or-create by name, and on-demand deployments of custom models.

Requests are plain dicts checked against botocore's model; the client comes from the provider's BedrockHook.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from rftflow.artifacts import store
from rftflow.backends.aws.clients import error_code, error_message, is_not_found
from rftflow.backends.aws.modelcheck import validate_request
from rftflow.backends.aws.naming import Submitted, job_name, request_digest, validate_job_name
from rftflow.backends.aws.recipes import LAMBDA_ARN, RenderedBedrock
from rftflow.backends.aws.sagemaker_jobs import DIGEST_TAG, MAX_ATTEMPTS, JobConflict, JobOutputError

log = logging.getLogger(__name__)

FAILED = ("Failed", "Stopped", "Stopping")
ACTIVE = ("InProgress",)  # a job that may still finish
_CUSTOM_MODEL_NAME = re.compile(r"([0-9a-zA-Z][_-]?){1,63}")


class BedrockRequestError(ValueError):
    """A Bedrock request our own checks reject before it is sent."""


def foundation_model_arn(model: str, region: str) -> str:
    """`amazon.nova-2-lite-v1:0:256k` -> its foundation-model ARN in `region`; ARNs are returned as they are."""
    if model.startswith("arn:"):
        return model
    return f"arn:aws:bedrock:{region}::foundation-model/{model}"


def bedrock_tags(tags: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": re.sub(r"[^a-zA-Z0-9\s._:/=+@-]", "_", str(k))[:128],
             "value": re.sub(r"[^a-zA-Z0-9\s._:/=+@-]", "_", str(v))[:256]} for k, v in tags.items()]


def customization_request(recipe: RenderedBedrock, *, name: str, role_arn: str, base_model_arn: str,
                          train_uri: str, output_uri: str, reward_lambda_arn: str | None = None,
                          validation_uri: str | None = None, tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """CreateModelCustomizationJob: RFT hyperparameters as native numbers inside rftConfig, SFT's as strings."""
    validate_job_name(name, "jobName")
    custom_model = f"{name}-model"
    if len(custom_model) > 63 or not _CUSTOM_MODEL_NAME.fullmatch(custom_model):
        raise BedrockRequestError(f"customModelName: at most 63 letters, digits, single '-'/'_'; got {custom_model!r}")
    request: dict[str, Any] = {
        "jobName": name,
        "customModelName": custom_model,
        "roleArn": role_arn,
        "clientRequestToken": name,  # the same attempt sent twice is one job
        "baseModelIdentifier": base_model_arn,
        "customizationType": recipe.customization_type,
        "trainingDataConfig": {"s3Uri": train_uri},
        "outputDataConfig": {"s3Uri": output_uri},
        "jobTags": bedrock_tags({**(tags or {}), **recipe.job.tags}),
    }
    if recipe.customization_type == "REINFORCEMENT_FINE_TUNING":
        if not reward_lambda_arn:
            raise BedrockRequestError("rftConfig.graderConfig.lambdaGrader.lambdaArn: reinforcement fine-tuning "
                                      "needs the reward Lambda ARN (deploy one with `rftflow lambda deploy`)")
        if not LAMBDA_ARN.fullmatch(reward_lambda_arn):
            raise BedrockRequestError("rftConfig.graderConfig.lambdaGrader.lambdaArn: expected a Lambda function ARN "
                                      f"(arn:aws:lambda:<region>:<account>:function:<name>); got {reward_lambda_arn!r}")
        request["customizationConfig"] = {"rftConfig": {
            "graderConfig": {"lambdaGrader": {"lambdaArn": reward_lambda_arn}},
            "hyperParameters": dict(recipe.hyper_parameters),
        }}
    else:
        request["hyperParameters"] = {k: _as_string(v) for k, v in recipe.hyper_parameters.items()}
    if validation_uri and recipe.job.send_validation_data:
        request["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
    validate_request("bedrock", "CreateModelCustomizationJob", request)
    return request


def _as_string(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _get(client: Any, name: str) -> dict[str, Any] | None:
    try:
        return client.get_model_customization_job(jobIdentifier=name)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def _digest_of(client: Any, arn: str) -> str | None:
    try:
        tags = client.list_tags_for_resource(resourceARN=arn).get("tags", [])
    except Exception as exc:
        log.warning("cannot read tags of %s (%s); assuming it is this stage's job", arn, error_message(exc))
        return None
    return next((t["value"] for t in tags if t.get("key") == DIGEST_TAG), None)


def find_or_create(client: Any, base: str, build: Callable[[str], dict[str, Any]], *,
                   prepare: Callable[[str], None] | None = None, max_attempts: int = MAX_ATTEMPTS) -> Submitted:
    """Re-attach to this stage's customization job or create it (same rules as SageMaker's find_or_create).

    Bedrock answers a create with HTTP 201 (moto: 200); only the body's jobArn is used, never the status code.
    """
    for attempt in range(1, max_attempts + 1):
        name = job_name(base, attempt)
        request = build(name)
        digest = request_digest(request, name)
        request["jobTags"] = [t for t in request.get("jobTags", []) if t["key"] != DIGEST_TAG] + \
            [{"key": DIGEST_TAG, "value": digest}]
        found = _get(client, name)
        if found is None:
            if prepare is not None:
                prepare(name)
            try:
                response = client.create_model_customization_job(**request)
            except Exception as exc:
                if error_code(exc) not in ("ResourceInUseException", "ConflictException"):
                    raise
                found = _get(client, name)
                if found is None:
                    raise
            else:
                log.info("created Bedrock customization job %s", name)
                return Submitted(name, response.get("jobArn"), "InProgress", True, digest)
        status = found.get("status", "")
        if status in FAILED:
            log.info("Bedrock job %s is %s; trying the next attempt name", name, status)
            continue
        theirs = _digest_of(client, found["jobArn"])
        if theirs is None or theirs == digest:
            log.info("re-attaching to Bedrock job %s (%s)", name, status)
            return Submitted(name, found["jobArn"], status, False, digest)
        if status == "InProgress":
            raise JobConflict(f"Bedrock job {name} of this stage is still running with other settings; stop it "
                              f"(aws bedrock stop-model-customization-job --job-identifier {name}) or wait, then retry")
        log.info("Bedrock job %s completed with other settings; trying the next attempt name", name)
    raise JobConflict(f"{max_attempts} attempts of {base} already exist; clear them or change the stage location")


def stop_job(client: Any, name: str) -> bool:
    found = _get(client, name)
    if found is None or found.get("status") != "InProgress":
        return False
    client.stop_model_customization_job(jobIdentifier=name)
    log.info("requested stop of Bedrock job %s", name)
    return True


def job_seconds(description: dict[str, Any]) -> float:
    start = description.get("creationTime")
    end = description.get("endTime") or description.get("lastModifiedTime")
    if start and end:
        return max(0.0, (end - start).total_seconds())
    return 0.0


def read_step_metrics(output_uri: str, job_arn: str) -> list[dict[str, Any]]:
    """Step-wise metrics CSVs Bedrock leaves under the job's output prefix (columns kept as named)."""
    job_id = job_arn.rsplit("/", 1)[-1]
    rows: list[dict[str, Any]] = []
    try:
        files = [u for u in store.list_prefix(output_uri) if u.endswith(".csv") and job_id in u]
    except FileNotFoundError:
        return []
    for uri in sorted(files):
        reader = csv.DictReader(io.StringIO(store.read_text(uri)))
        for n, raw in enumerate(reader, 1):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value)
                except (TypeError, ValueError):
                    continue
            step = row.pop("step_number", row.pop("step", n))
            rows.append({"step": int(step), **row, "source": uri.rsplit("/", 1)[-1]})
    return rows


# --------------------------------------------------------------------------- on-demand deployments


def ensure_deployment(client: Any, model_arn: str, name: str, *, tags: dict[str, Any] | None = None,
                      wait_s: float = 3600.0, poll_s: float = 30.0,
                      sleep: Callable[[float], None] = time.sleep) -> str:
    """The ARN of an Active on-demand deployment of a custom model, created once under a fixed name."""
    validate_job_name(name, "modelDeploymentName")
    try:
        found = client.get_custom_model_deployment(customModelDeploymentIdentifier=name)
    except Exception as exc:
        if not is_not_found(exc):
            raise
        request = {"modelDeploymentName": name, "modelArn": model_arn, "clientRequestToken": name,
                   "tags": bedrock_tags(tags or {})}
        validate_request("bedrock", "CreateCustomModelDeployment", request)
        client.create_custom_model_deployment(**request)
        log.info("created on-demand deployment %s of %s", name, model_arn)
        found = client.get_custom_model_deployment(customModelDeploymentIdentifier=name)
    if found.get("modelArn") and found["modelArn"] != model_arn:
        raise JobOutputError(f"deployment {name} serves {found['modelArn']}, not {model_arn}; delete it or "
                             "evaluate under another stage location")
    waited = 0.0
    while found.get("status") == "Creating":
        if waited >= wait_s:
            raise TimeoutError(f"deployment {name} still Creating after {wait_s:.0f} s")
        sleep(poll_s)
        waited += poll_s
        found = client.get_custom_model_deployment(customModelDeploymentIdentifier=name)
    if found.get("status") != "Active":
        raise JobOutputError(f"deployment {name} is {found.get('status')}: {found.get('failureMessage', '')}")
    return found["customModelDeploymentArn"]
