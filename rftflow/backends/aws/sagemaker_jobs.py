"""SageMaker Training Jobs for Nova recipes: build the CreateTrainingJob request, find-or-create by name,
follow the checkpoint pointer, read eval results and the verl-named training metrics from CloudWatch.

Requests are plain dicts checked against botocore's model; jobs go through the amazon provider's hooks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rftflow.artifacts import store
from rftflow.backends.aws.clients import error_code, error_message, is_not_found
from rftflow.backends.aws.images import nova_image_uri
from rftflow.backends.aws.modelcheck import validate_request
from rftflow.backends.aws.naming import Submitted, job_name, request_digest
from rftflow.backends.aws.recipes import RenderedRecipe

log = logging.getLogger(__name__)

RECIPE_CHANNEL = "recipe"
RECIPE_FILE = "recipe.yaml"
RECIPE_CONTAINER_PATH = f"/opt/ml/input/data/{RECIPE_CHANNEL}/{RECIPE_FILE}"  # as the SageMaker SDK v3 sets it
DIGEST_TAG = "rftflow:request"
RECIPE_TAG = "rftflow:recipe"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
MANIFEST_KEY = "checkpoint_s3_bucket"
ACTIVE = ("InProgress", "Stopping")
FAILED = ("Failed", "Stopped")
MAX_ATTEMPTS = 20
_MAX_MEMBER_BYTES = 256 * 1024 * 1024


class JobConflict(RuntimeError):
    """A job of this stage is running with other settings; starting another would pay twice."""


class JobOutputError(RuntimeError):
    """A finished job's output is not where, or not what, it should be."""


# --------------------------------------------------------------------------- request


def aws_tags(tags: dict[str, Any]) -> list[dict[str, str]]:
    """Tag list with values cut to what the API allows (letters, digits, spaces and _.:/=+-@; 256 chars)."""
    out = []
    for key, value in tags.items():
        text = re.sub(r"[^\w\s.:/=+\-@]", "_", str(value))[:256]
        out.append({"Key": re.sub(r"[^\w\s.:/=+\-@]", "_", str(key))[:128], "Value": text})
    return out


def hyperparameters_for(body: dict[str, Any]) -> dict[str, str]:
    """The hyperparameters the SageMaker SDK v3 derives from a Nova recipe (all values strings)."""
    hp = {"sagemaker_recipe_local_path": RECIPE_CONTAINER_PATH}
    run = body.get("run", {})
    model = run.get("model_name_or_path") or ""
    if model.startswith("s3://"):
        hp["base_model_location"] = model
    elif model and not model.startswith("arn:aws"):
        hp["base_model"] = model
    if run.get("reward_lambda_arn"):
        hp["reward_lambda_arn"] = run["reward_lambda_arn"]
    processor_arn = (body.get("processor") or {}).get("lambda_arn")
    if body.get("evaluation") and processor_arn:
        hp["eval_lambda_arn"] = processor_arn
    return hp


def recipe_digest(recipe: RenderedRecipe, name: str) -> str:
    text = recipe.yaml_text().replace(name, "<job>")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def channel(name: str, s3_uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": s3_uri, "S3DataDistributionType": "FullyReplicated"}}}


def training_job_request(recipe: RenderedRecipe, *, name: str, role_arn: str, region: str, recipe_prefix: str,
                         channels: dict[str, str], output_path: str, tags: dict[str, Any]) -> dict[str, Any]:
    """CreateTrainingJob for a Nova recipe on instances: image, channels (train, validation, recipe), limits."""
    if RECIPE_CHANNEL in channels:
        raise ValueError(f"channel name {RECIPE_CHANNEL!r} is reserved for the recipe")
    job = recipe.job
    body = recipe.body
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": job.image_uri or nova_image_uri(recipe.kind, region),
            "TrainingInputMode": "File",
        },
        "HyperParameters": hyperparameters_for(body),
        "InputDataConfig": [channel(k, v) for k, v in channels.items()] + [channel(RECIPE_CHANNEL, recipe_prefix)],
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {"InstanceType": job.instance_type, "InstanceCount": recipe.instance_count,
                           "VolumeSizeInGB": job.volume_size_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(job.max_runtime_hours * 3600)},
        # The recipe travels as a file; its digest in a tag lets a retry tell an identical job from a changed one.
        "Tags": aws_tags({**tags, **job.tags, RECIPE_TAG: recipe_digest(recipe, name)}),
    }
    model = body.get("run", {}).get("model_name_or_path") or ""
    if model.startswith("arn:aws") and ":model-package/" in model:
        request["ModelPackageConfig"] = {"SourceModelPackageArn": model}
    validate_request("sagemaker", "CreateTrainingJob", request)
    return request


def serverless_request(recipe: RenderedRecipe, plan: ServerlessPlan, *, name: str, role_arn: str,
                       channels: dict[str, str], output_path: str, tags: dict[str, Any]) -> dict[str, Any]:
    """CreateTrainingJob with ServerlessJobConfig (no instances, no image), built as SageMaker Python SDK v3's
    RLVRTrainer/SFTTrainer build it (sagemaker.train.common_utils.finetune_utils._create_serverless_config):
    the hub recipe's default hyperparameters (with our overrides), AcceptEula only when true, the evaluator
    registered in the AI registry hub, a ModelPackageConfig, and the JumpStart tags naming the hub model.

    Differences, on purpose: StoppingCondition is always sent (the SDK sends it only when given, leaving the
    service's 24 h default; RFT runs longer); tags are sent in the API's Key/Value shape; no MlflowConfig (the SDK
    may create a default MLflow app; rftflow tracks runs itself).
    """
    section = recipe.body["serverless"]
    config: dict[str, Any] = {
        "BaseModelArn": plan.base_model_arn,
        "JobType": "FineTuning",
        "CustomizationTechnique": section["customization_technique"],
    }
    if plan.accept_eula:  # the SDK's shape serializer leaves a false AcceptEula out
        config["AcceptEula"] = True
    if section.get("peft"):
        config["Peft"] = section["peft"]
    if plan.evaluator_arn:
        config["EvaluatorArn"] = plan.evaluator_arn
    if section.get("sequence_length"):
        config["SequenceLength"] = section["sequence_length"]
    package: dict[str, Any] = {"ModelPackageGroupArn": plan.model_package_group_arn}
    if plan.source_model_package_arn:
        package["SourceModelPackageArn"] = plan.source_model_package_arn
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role_arn,
        "InputDataConfig": [channel(k, v) for k, v in channels.items()],
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ServerlessJobConfig": config,
        "ModelPackageConfig": package,
        "StoppingCondition": {"MaxRuntimeInSeconds": int(recipe.job.max_runtime_hours * 3600)},
        "Tags": aws_tags({**jumpstart_tags(plan.model_name, plan.hub_name), **tags, **recipe.job.tags}),
    }
    if plan.hyperparameters:
        request["HyperParameters"] = dict(plan.hyperparameters)
    validate_request("sagemaker", "CreateTrainingJob", request)
    return request


# --------------------------------------------------------------------------- find or create


def _describe(client: Any, name: str) -> dict[str, Any] | None:
    try:
        return client.describe_training_job(TrainingJobName=name)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def _digest_of(client: Any, arn: str) -> str | None:
    try:
        tags = client.list_tags(ResourceArn=arn).get("Tags", [])
    except Exception as exc:  # tags unreadable (permissions): treat the job as ours, do not duplicate it
        log.warning("cannot read tags of %s (%s); assuming it is this stage's job", arn, error_message(exc))
        return None
    return next((t["Value"] for t in tags if t.get("Key") == DIGEST_TAG), None)


def find_or_create(hook: Any, base: str, build: Callable[[str], dict[str, Any]], *,
                   prepare: Callable[[str], None] | None = None, max_attempts: int = MAX_ATTEMPTS) -> Submitted:
    """Re-attach to this stage's job or create it; never a second job for the same request.

    Attempt names `{base}-1`, `{base}-2`, ... are tried in order. A job that exists with the same request
    digest and is running or completed is re-attached; a failed or stopped one moves on to the next name;
    a running one with another digest raises JobConflict (stop it first). `build(name)` returns the request
    (pure); `prepare(name)` uploads what it references, just before the create call.
    """
    client = hook.conn
    for attempt in range(1, max_attempts + 1):
        name = job_name(base, attempt)
        request = build(name)
        digest = request_digest(request, name)
        request["Tags"] = [t for t in request.get("Tags", []) if t["Key"] != DIGEST_TAG] + \
            [{"Key": DIGEST_TAG, "Value": digest}]
        found = _describe(client, name)
        if found is None:
            if prepare is not None:
                prepare(name)
            try:
                hook.create_training_job(request, wait_for_completion=False, print_log=False)
            except Exception as exc:
                if error_code(exc) != "ResourceInUse":
                    raise
                found = _describe(client, name)  # created meanwhile by a concurrent try
                if found is None:
                    raise
            else:
                log.info("created training job %s", name)
                return Submitted(name, None, "InProgress", True, digest)
        status = found["TrainingJobStatus"]
        if status in FAILED or status == "Stopping":
            log.info("training job %s is %s; trying the next attempt name", name, status)
            continue
        theirs = _digest_of(client, found["TrainingJobArn"])
        if theirs is None or theirs == digest:
            log.info("re-attaching to training job %s (%s)", name, status)
            return Submitted(name, found["TrainingJobArn"], status, False, digest)
        if status == "InProgress":
            raise JobConflict(
                f"training job {name} of this stage is still running with other settings (request {theirs}, now "
                f"{digest}); stop it (aws sagemaker stop-training-job --training-job-name {name}) or wait for it, "
                "then retry the task")
        log.info("training job %s completed with other settings; trying the next attempt name", name)
    raise JobConflict(f"{max_attempts} attempts of {base} already exist; clear them or change the stage location")


def stop_job(client: Any, name: str) -> bool:
    """Stop a running job; True when a stop was requested. Finished jobs are left alone."""
    found = _describe(client, name)
    if found is None or found["TrainingJobStatus"] != "InProgress":
        return False
    client.stop_training_job(TrainingJobName=name)
    log.info("requested stop of training job %s", name)
    return True


def billable_seconds(description: dict[str, Any]) -> float:
    """Billable seconds per instance: BillableTimeInSeconds, else the training time, else start..end."""
    for key in ("BillableTimeInSeconds", "TrainingTimeInSeconds"):
        if description.get(key):
            return float(description[key])
    start, end = description.get("TrainingStartTime"), description.get("TrainingEndTime")
    if start and end:
        return max(0.0, (end - start).total_seconds())
    return 0.0


def log_url(region: str, name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/"
            f"log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3D{name}")


# --------------------------------------------------------------------------- outputs


def job_output_prefix(output_path: str, name: str) -> str:
    return store.join(output_path, name, "output")


def read_tar_members(data: bytes, want: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .tar.gz whose path `want`s them, read in memory (links and huge files skipped)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if not member.isfile() or member.size > _MAX_MEMBER_BYTES or not want(member.name):
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    out[member.name.lstrip("./")] = handle.read()
    except tarfile.TarError as exc:
        raise JobOutputError(f"not a readable tar archive: {exc}") from None
    return out


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def follow_checkpoint(output_path: str, name: str) -> tuple[str, str]:
    """(checkpoint URI, where it was read) for a finished Nova training job.

    Nova writes the checkpoint to a service-owned escrow bucket and leaves a `manifest.json` pointing at
    it (key `checkpoint_s3_bucket`): inside `output/output.tar.gz` on Training Jobs, uncompressed at
    `output/output/manifest.json` on serverless jobs, and in `model.tar.gz` on some images.
    """
    prefix = job_output_prefix(output_path, name)
    tried = []
    plain = store.join(prefix, "output", "manifest.json")
    tried.append(plain)
    if store.exists(plain):
        return _checkpoint_from(store.read_bytes(plain), plain), plain
    for archive in ("output.tar.gz", "model.tar.gz"):
        uri = store.join(prefix, archive)
        tried.append(f"{uri} → manifest.json")
        if not store.exists(uri):
            continue
        members = read_tar_members(store.read_bytes(uri), lambda p: _basename(p) == "manifest.json")
        if members:
            where = f"{uri}!{sorted(members)[0]}"
            return _checkpoint_from(members[sorted(members)[0]], where), where
    raise JobOutputError(f"training job {name}: no checkpoint manifest found; looked at " + "; ".join(tried))


def _checkpoint_from(data: bytes, where: str) -> str:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise JobOutputError(f"{where}: not valid JSON: {exc}") from None
    value = manifest.get(MANIFEST_KEY) if isinstance(manifest, dict) else None
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise JobOutputError(f"{where}: expected {MANIFEST_KEY!r} to be an s3:// URI; got {value!r}")
    return value


@dataclass
class EvalOutput:
    """What an eval job left in its output.tar.gz."""

    results: dict[str, dict[str, float]]   # task key -> metric -> value (lighteval style)
    results_file: str | None
    inference_rows: list[dict[str, Any]]   # gen_qa: {prompt, inference, gold, metadata}
    files: list[str]
    # rft_eval, per sample: {id, aggregate_reward_score, metrics: {name: value}, completion?}
    sample_scores: list[dict[str, Any]] = field(default_factory=list)


def read_eval_output(output_path: str, name: str) -> EvalOutput:
    """Parse `results_*.json` (and gen_qa's `inference_output.jsonl`) from an eval job's output archive."""
    prefix = job_output_prefix(output_path, name)
    archive = store.join(prefix, "output.tar.gz")
    if store.exists(archive):
        members = read_tar_members(store.read_bytes(archive), _is_eval_file)
        source = archive
    else:  # serverless evaluators write plain files
        members = {}
        for uri in store.list_prefix(store.join(prefix, "output")):
            if _is_eval_file(uri):
                members[uri] = store.read_bytes(uri)
        source = store.join(prefix, "output")
    return parse_eval_members(members, source)


def _is_eval_file(path: str) -> bool:
    base = _basename(path)
    return ((base.startswith("results_") and base.endswith(".json")) or base.endswith(".jsonl")
            or (base.startswith("details_") and base.endswith(".parquet")))


def parse_eval_members(members: dict[str, bytes], source: str) -> EvalOutput:
    results_files = sorted(p for p in members if _basename(p).startswith("results_") and p.endswith(".json"))
    if not results_files and not any(_basename(p).endswith((".jsonl", ".parquet")) for p in members):
        raise JobOutputError(f"{source}: no results_*.json, inference_output.jsonl or per-sample scores in the "
                             "eval output")
    results: dict[str, dict[str, float]] = {}
    chosen = results_files[-1] if results_files else None  # names carry a timestamp: the last is the newest
    if chosen:
        try:
            raw = json.loads(members[chosen])
        except ValueError as exc:
            raise JobOutputError(f"{source}!{chosen}: not valid JSON: {exc}") from None
        results = parse_results(raw, f"{source}!{chosen}")
    rows: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for path in sorted(members):
        base = _basename(path)
        if base.endswith(".parquet"):
            scores.extend(_parquet_scores(members[path], f"{source}!{path}"))
            continue
        if not base.endswith(".jsonl"):
            continue
        for n, line in enumerate(members[path].decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                if base != "inference_output.jsonl":
                    break  # another JSONL the job left (logs, traces): not a per-sample score file
                raise JobOutputError(f"{source}!{path}:{n}: not valid JSON: {exc}") from None
            if base == "inference_output.jsonl":
                rows.append(row)
            elif isinstance(row, dict) and "aggregate_reward_score" in row:
                scores.append(_score_row(row, f"{source}!{path}:{n}"))
    return EvalOutput(results, chosen, rows, sorted(members), scores)


# RFT evaluation writes each sample's score in one of two forms (sources differ; both are read):
# - the docs (SageMaker "RFT evaluation", nova-rft-evaluation): JSONL lines identical to the reward Lambda's
#   response, {"id", "aggregate_reward_score", "metrics_list": [{"name", "value", "type"}]};
# - AWS's rft_eval notebook (amazon-nova-samples customization/Nova_2.0/04_eval/RFT_Single_Turn_Evaluation_Example):
#   details_*.parquet rows whose `specifics` (a Python-repr dict) holds sample_id and original_line, `metrics`
#   {'rft_eval_lambda_metric': {'lambda_reward_score': ..., 'lambda_<metric>': ...}} and `predictions` the
#   answer as a repr list.
LAMBDA_METRIC_KEY = "rft_eval_lambda_metric"


def _score_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    score = row.get("aggregate_reward_score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise JobOutputError(f"{where}: aggregate_reward_score: expected a number; got {score!r}")
    metrics = {str(m["name"]): float(m["value"]) for m in row.get("metrics_list") or []
               if isinstance(m, dict) and "name" in m and isinstance(m.get("value"), int | float)}
    return {"id": None if row.get("id") is None else str(row["id"]), "aggregate_reward_score": float(score),
            "metrics": metrics}


def _parquet_scores(data: bytes, where: str) -> list[dict[str, Any]]:
    from rftflow.backends.aws.rollouts import _inference_text, _literal

    try:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as exc:  # not a parquet file, or pyarrow missing: say which file could not be read
        raise JobOutputError(f"{where}: cannot read the per-sample parquet: {exc}") from None
    out = []
    for n, row in enumerate(table, 1):
        metrics = row.get("metrics")
        metrics = _literal(metrics) if isinstance(metrics, str) else metrics
        specifics = row.get("specifics")
        specifics = _literal(specifics) if isinstance(specifics, str) else specifics
        lam = metrics.get(LAMBDA_METRIC_KEY) if isinstance(metrics, dict) else None
        if not isinstance(lam, dict) or "lambda_reward_score" not in lam:
            continue  # a details file of another task
        sample_id = specifics.get("sample_id") if isinstance(specifics, dict) else None
        entry = {"id": None if sample_id is None else str(sample_id),
                 "aggregate_reward_score": float(lam["lambda_reward_score"]),
                 "metrics": {str(k): float(v) for k, v in lam.items()
                             if k != "lambda_reward_score" and isinstance(v, int | float)}}
        if row.get("predictions") is not None:
            entry["completion"] = _inference_text(row["predictions"])
        if entry["id"] is None:
            raise JobOutputError(f"{where}: row {n}: no specifics.sample_id to match the score to a prompt")
        out.append(entry)
    return out


def rows_from_scores(records: list[Any], scores: list[dict[str, Any]], pass_threshold: float) -> list[dict[str, Any]]:
    """Eval rows (the shape rftflow.scoring.evaluation.score_rows gives) from rft_eval's per-sample reward scores.

    Scores are matched to records by id; when the service wrote none, by position if the counts agree.
    """
    by_id = {s["id"]: s for s in scores if s.get("id") is not None}
    if not by_id and len(scores) == len(records):
        by_id = {r.id: s for r, s in zip(records, scores, strict=True)}
    missing = [r.id for r in records if r.id not in by_id]
    if missing:
        raise JobOutputError(f"rft_eval output has no score for {len(missing)} of {len(records)} prompts "
                             f"(e.g. {', '.join(missing[:5])})")
    rows = []
    for record in records:
        score = by_id[record.id]
        reward = score["aggregate_reward_score"]
        rows.append({"id": record.id, "reference_answer": record.reference_answer, "metadata": dict(record.metadata),
                     "completion": score.get("completion"), "reward": reward, "passed": reward >= pass_threshold,
                     "response_tokens": None, "metrics": dict(score.get("metrics", {})),
                     "scored_by": "reward Lambda (rft_eval)"})
    return rows


def parse_results(raw: Any, where: str) -> dict[str, dict[str, float]]:
    """{task: {metric: number}} from a lighteval-style `{"results": {task: {...}}}` document."""
    block = raw.get("results") if isinstance(raw, dict) else None
    if not isinstance(block, dict):
        raise JobOutputError(f"{where}: expected an object with a 'results' mapping; got {type(raw).__name__}")
    out: dict[str, dict[str, float]] = {}
    for task, metrics in block.items():
        if isinstance(metrics, dict):
            out[str(task)] = {str(k): float(v) for k, v in metrics.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)}
    return out


def summarize_results(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Our eval metrics from an rft_eval/gen_qa results document.

    rft_eval reports the reward Lambda's metrics prefixed `lambda_`; `lambda_reward_score` (or the first
    `*reward_score*`) is the mean reward. With a 0/1 reward that mean is pass@1, so it is reported as such
    only when every reward metric looks binary-valued on average (between 0 and 1).
    """
    flat: dict[str, float] = {}
    for metrics in results.values():
        for key, value in metrics.items():
            if not key.endswith("_stderr"):
                flat.setdefault(key, value)
    reward_key = "lambda_reward_score" if "lambda_reward_score" in flat else next(
        (k for k in flat if "reward_score" in k), None)
    out: dict[str, Any] = {"aws_results": flat}
    if reward_key is not None:
        out["mean_reward"] = flat[reward_key]
        if 0.0 <= flat[reward_key] <= 1.0:
            out["pass_at_1"] = flat[reward_key]
            out["pass_at_1_source"] = f"{reward_key} (mean of a 0-1 reward; per-prompt rows need eval_gen_qa)"
    return out


# --------------------------------------------------------------------------- training metrics from logs

_METRIC_PREFIXES = ("critic", "actor", "response_length", "response_length_non_aborted", "response", "prompt_length",
                    "perf", "timing_s", "timing_per_token_ms", "val-score", "val-core", "val-aux", "training",
                    "global_seqlen", "num_turns", "tool_call_counts", "train", "val")
_NUMBER = r"(?:np\.float\d*\(|tensor\()?\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf)\)?"
_METRIC = re.compile(
    r"""["']?(?P<name>(?:""" + "|".join(re.escape(p) for p in _METRIC_PREFIXES) + r""")/[\w@/.\-]+?)["']?"""
    r"""\s*[:=]\s*""" + _NUMBER.replace("(-?", "(?P<value>-?", 1))
_STEP = re.compile(r"""(?:^|[\s,{'"(|-])(?:global_)?step["']?\s*[:=]\s*(\d+)""")


def parse_metric_line(message: str) -> tuple[int | None, dict[str, float]]:
    """(step, {metric: value}) from one log line in verl's console style or a dict/JSON dump; ({}) if none."""
    metrics: dict[str, float] = {}
    for match in _METRIC.finditer(message):
        try:
            metrics[match.group("name")] = float(match.group("value"))
        except (TypeError, ValueError):
            continue
    if not metrics:
        return None, {}
    step_match = _STEP.search(message)
    step = int(step_match.group(1)) if step_match else None
    if step is None and "training/global_step" in metrics:
        step = int(metrics["training/global_step"])
    return step, metrics


def metrics_from_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows {step, metric: value, ...} merged per step, in step order, from CloudWatch log events."""
    rows: dict[int, dict[str, Any]] = {}
    last_step = 0
    for event in events:
        step, metrics = parse_metric_line(str(event.get("message", "")))
        if not metrics:
            continue
        if step is None:
            step = last_step + 1
        last_step = step
        rows.setdefault(step, {"step": step}).update(metrics)
    return [rows[s] for s in sorted(rows)]


def read_training_metrics(hook: Any, name: str, log_group: str = LOG_GROUP) -> list[dict[str, Any]]:
    """The job's verl-named metrics from its CloudWatch streams, read with the provider's logs hook."""
    logs = hook.logs_hook.conn
    streams: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": log_group, "logStreamNamePrefix": f"{name}/"}
    try:
        while True:
            page = logs.describe_log_streams(**kwargs)
            streams.extend(s["logStreamName"] for s in page.get("logStreams", []))
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except Exception as exc:
        if is_not_found(exc):
            return []
        raise
    if not streams:
        return []
    return metrics_from_events(event for _, event in hook.multi_stream_iter(log_group, streams))


# --------------------------------------------------------------------------- serverless helpers
# Mirrors SageMaker Python SDK v3 (sagemaker-train 1.27: common_utils/finetune_utils.py, common.py,
# ai_registry/air_hub.py, ai_registry/evaluator.py, train/utils.py); names below point at the SDK's.

PUBLIC_HUB = "SageMakerPublicHub"               # get_sagemaker_hub_name()
EVALUATOR_DOCUMENT_SCHEMA = "2.0.0"             # EVALUATOR_DOCUMENT_SCHEMA_VERSION
EVALUATOR_KEYWORDS = ["method:lambda", "@subtype:aws/evaluator", "@evaluatortype:rewardfunction",
                      "@contenttype:byolambda"]
# hyperparameters the SDK removes from the hub recipe's options because the job request carries them
HUB_HANDLED_HYPERPARAMETERS = ("data_s3_path", "reward_lambda_arn", "data_path", "validation_data_path",
                               "output_path")
_MODEL_PACKAGE_GROUP_ARN = re.compile(r"^arn:aws:sagemaker:[^:]+:\d+:model-package-group/[^/]+$")


@dataclass
class ServerlessPlan:
    """What a serverless job needs besides the recipe, looked up once before the first request is built."""

    model_name: str
    hub_name: str
    base_model_arn: str
    accept_eula: bool
    hyperparameters: dict[str, str]
    model_package_group_arn: str
    evaluator_arn: str | None = None
    source_model_package_arn: str | None = None


@dataclass
class HubModel:
    name: str
    arn: str
    gated: bool
    recipes: list[dict[str, Any]]


def hub_model_name_from_arn(arn: str) -> str:
    """`arn:aws:sagemaker:<r>:aws:hub-content/<hub>/Model/<name>/<version>` -> name."""
    parts = arn.split(":hub-content/", 1)[-1].split("/")
    if len(parts) < 3 or parts[1] != "Model":
        raise ValueError(f"serverless.base_model_arn: expected a hub-content Model ARN "
                         f"(arn:aws:sagemaker:<region>:aws:hub-content/<hub>/Model/<name>/<version>); got {arn!r}")
    return parts[2]


def describe_hub_model(client: Any, name: str, hub: str = PUBLIC_HUB) -> HubModel:
    """The hub model's ARN, whether it is gated (document GatedBucket), and its RecipeCollection."""
    try:
        found = client.describe_hub_content(HubName=hub, HubContentType="Model", HubContentName=name)
    except Exception as exc:
        if is_not_found(exc) or error_code(exc) == "ResourceNotFound":
            raise ValueError(f"serverless.base_model_name: no model {name!r} in hub {hub}") from None
        raise
    try:
        document = json.loads(found.get("HubContentDocument") or "{}")
    except ValueError as exc:
        raise JobOutputError(f"hub model {name}: HubContentDocument is not JSON: {exc}") from None
    return HubModel(name, found["HubContentArn"], bool(document.get("GatedBucket", False)),
                    list(document.get("RecipeCollection") or []))


def _sequence_tokens(value: Any) -> int:
    text = str(value or "").strip().upper()
    return int(text[:-1]) * 1024 if text.endswith("K") and text[:-1].isdigit() else 0


def select_hub_recipe(model: HubModel, technique: str, peft: str | None,
                      sequence_length: str | None = None) -> dict[str, Any]:
    """The recipe the SDK picks: technique, a Training Job template, the sequence length, then LoRA (Peft set)
    or full, non-subscription first (_get_fine_tuning_options_and_model_arn, _select_recipe_by_training_type)."""
    recipes = [r for r in model.recipes if r.get("CustomizationTechnique") == technique
               and r.get("SmtjRecipeTemplateS3Uri")]
    if not recipes:
        raise ValueError(f"hub model {model.name} has no {technique} recipe for serverless jobs; techniques there: "
                         f"{sorted({str(r.get('CustomizationTechnique')) for r in model.recipes}) or 'none'}")
    if sequence_length:
        wanted = _sequence_tokens(sequence_length)
        matching = [r for r in recipes if _sequence_tokens(r.get("SequenceLength")) == wanted]
        if not matching:
            raise ValueError(f"serverless.sequence_length {sequence_length}: hub model {model.name} offers "
                             f"{sorted({str(r.get('SequenceLength')) for r in recipes})}")
        recipes = matching
    lora = peft is not None
    chosen = [r for r in recipes if bool(r.get("Peft")) == lora]
    picked = next((r for r in chosen if not r.get("IsSubscriptionModel")), None) or next(iter(chosen), None)
    if picked is None:
        raise ValueError(f"hub model {model.name} has no {'LoRA' if lora else 'full-rank'} {technique} recipe; "
                         "change serverless.peft")
    return picked


def hub_hyperparameter_specs(s3_client: Any, recipe: dict[str, Any], account: str) -> dict[str, Any]:
    """The recipe's option specs ({name: {type, default, min, max, enum}}) from SmtjOverrideParamsS3Uri."""
    uri = recipe.get("SmtjOverrideParamsS3Uri")
    if not uri:
        return {}
    path = uri.replace("{customer_id}", account)[len("s3://"):]
    if path.startswith("arn:"):  # an S3 access point: Bucket is the access point ARN
        parts = path.split("/", 2)
        bucket, key = parts[0] + "/" + parts[1], parts[2] if len(parts) > 2 else ""
    else:
        bucket, _, key = path.partition("/")
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        specs = json.loads(body)
    except ValueError as exc:
        raise JobOutputError(f"{uri}: the hub recipe's override parameters are not JSON: {exc}") from None
    return specs if isinstance(specs, dict) else {}


def _check_value(name: str, value: Any, spec: dict[str, Any]) -> str | None:
    kind = spec.get("type")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"expected a number; got {value!r}"
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an integer; got {value!r}"
    if kind == "string" and not isinstance(value, str):
        return f"expected a string; got {value!r}"
    if "min" in spec and isinstance(value, int | float) and value < spec["min"]:
        return f"expected >= {spec['min']}; got {value!r}"
    if "max" in spec and isinstance(value, int | float) and value > spec["max"]:
        return f"expected <= {spec['max']}; got {value!r}"
    if "enum" in spec and value not in spec["enum"]:
        return f"expected one of {spec['enum']}; got {value!r}"
    return None


def serverless_hyperparameters(specs: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, str]:
    """The hub recipe's defaults with our overrides, as strings (FineTuningOptions.to_dict); each override is
    checked against the recipe's spec (type, range, enum) and an unknown name is an error, as in the SDK."""
    values = {k: (v.get("default") if isinstance(v, dict) else v) for k, v in specs.items()
              if k not in HUB_HANDLED_HYPERPARAMETERS}
    problems = []
    for key, value in overrides.items():
        if key in HUB_HANDLED_HYPERPARAMETERS:
            problems.append(f"{where}: hyperparameters.{key}: set by rftflow from the stage; remove it")
        elif specs and key not in specs:
            problems.append(f"{where}: hyperparameters.{key}: not an option of the hub recipe; expected one of "
                            f"{', '.join(sorted(values))}")
        elif isinstance(specs.get(key), dict) and (problem := _check_value(key, value, specs[key])):
            problems.append(f"{where}: hyperparameters.{key}: {problem}")
        else:
            values[key] = value
    if problems:
        raise ValueError("\n".join(problems))
    return {k: str(v) for k, v in values.items() if v is not None}


def eula_acceptance(model: str, gated: bool, accept_eula: bool, given_as_arn: bool) -> bool:
    """_validate_eula_for_gated_model: a model given by ARN counts as accepted; a gated one needs accept_eula."""
    if given_as_arn:
        return True
    if gated and not accept_eula:
        raise ValueError(f"serverless.base_model_name {model!r} is a gated model: read its EULA, then set "
                         "serverless.accept_eula: true")
    return accept_eula


def jumpstart_tags(model_name: str, hub_name: str) -> dict[str, str]:
    """_get_jumpstart_tags: the hub model and hub, as the console and SDK tag serverless jobs."""
    return {"sagemaker-sdk:jumpstart-model-id": model_name, "sagemaker-sdk:jumpstart-hub-name": hub_name}


def ai_registry_hub(region: str, account: str) -> tuple[str, str]:
    """(HubName, HubDisplayName) of the account's AI registry hub (AIRHub._generate_hub_names): the base32-hex
    of sha256("AiRegistry-<region>-<account>") without padding, displayed as that plain string."""
    display = f"AiRegistry-{region}-{account}"
    return base64.b32hexencode(hashlib.sha256(display.encode()).digest()).decode().rstrip("="), display


def evaluator_content_name(lambda_arn: str) -> str:
    """A fixed hub-content name per Lambda (the SDK adds a timestamp; a fixed one lets a retry reuse it)."""
    function = lambda_arn.split(":function:", 1)[1].split(":", 1)[0]
    return re.sub(r"[^a-zA-Z0-9-]+", "-", f"rftflow-{function}").strip("-")[:63]


def evaluator_requests(hub: str, display: str, lambda_arn: str,
                       version: str = "1.0.0") -> tuple[dict[str, Any], dict[str, Any]]:
    """(CreateHub, ImportHubContent) requests registering a reward Lambda as an RLVR evaluator (Evaluator.create)."""
    document = json.dumps({"SubType": "AWS/Evaluator",
                           "JsonContent": json.dumps({"Reference": lambda_arn, "EvaluatorType": "RewardFunction"})})
    create_hub = {"HubName": hub, "HubDisplayName": display, "HubDescription": "AI Registry Hub"}
    import_content = {
        "HubName": hub, "HubContentType": "JsonDoc", "HubContentName": evaluator_content_name(lambda_arn),
        "HubContentVersion": version, "DocumentSchemaVersion": EVALUATOR_DOCUMENT_SCHEMA,
        "HubContentDocument": document, "HubContentSearchKeywords": list(EVALUATOR_KEYWORDS),
    }
    validate_request("sagemaker", "CreateHub", create_hub)
    validate_request("sagemaker", "ImportHubContent", import_content)
    return create_hub, import_content


def _reference_of(found: dict[str, Any]) -> str | None:
    try:
        return json.loads(json.loads(found.get("HubContentDocument") or "{}").get("JsonContent") or "{}").get("Reference")
    except (ValueError, AttributeError):
        return None


def register_evaluator(client: Any, region: str, account: str, lambda_arn: str) -> str:
    """The evaluator ARN for a reward Lambda in the AI registry hub, registering it (and the hub) when needed.

    An evaluator of that name pointing at another Lambda gets a new major version, as the SDK versions them.
    """
    hub, display = ai_registry_hub(region, account)
    version = "1.0.0"
    describe = {"HubName": hub, "HubContentType": "JsonDoc", "HubContentName": evaluator_content_name(lambda_arn)}
    try:
        client.describe_hub(HubName=hub)
    except Exception as exc:
        if not is_not_found(exc) and error_code(exc) != "ResourceNotFound":
            raise
        create_hub, _ = evaluator_requests(hub, display, lambda_arn)
        client.create_hub(**create_hub)
    try:
        found = client.describe_hub_content(**describe)
    except Exception as exc:
        if not is_not_found(exc) and error_code(exc) != "ResourceNotFound":
            raise
    else:
        if _reference_of(found) == lambda_arn:
            return found["HubContentArn"]
        version = f"{int(str(found.get('HubContentVersion', '1.0.0')).split('.')[0]) + 1}.0.0"
    _, import_content = evaluator_requests(hub, display, lambda_arn, version)
    client.import_hub_content(**import_content)
    return client.describe_hub_content(**describe)["HubContentArn"]


def model_package_group_arn(client: Any, name_or_arn: str) -> str:
    """The ARN of the model package group serverless jobs register into (the SDK requires one); a name that does
    not exist yet is created (the SDK would stop and ask for it)."""
    if _MODEL_PACKAGE_GROUP_ARN.match(name_or_arn):
        return name_or_arn
    try:
        return client.describe_model_package_group(ModelPackageGroupName=name_or_arn)["ModelPackageGroupArn"]
    except Exception as exc:
        if not is_not_found(exc) and error_code(exc) not in ("ResourceNotFound", "ValidationException"):
            raise
    request = {"ModelPackageGroupName": name_or_arn,
               "ModelPackageGroupDescription": "models trained by rftflow serverless stages"}
    validate_request("sagemaker", "CreateModelPackageGroup", request)
    return client.create_model_package_group(**request)["ModelPackageGroupArn"]


# --------------------------------------------------------------------------- open-weight hub models (serverless)
# SageMaker AI serverless customization of open-weight models (docs page model-customize-open-weight: Qwen3,
# Llama, gpt-oss, ... by hub model id). Training is the serverless request above with the hub model; evaluation
# is a serverless job too, as SageMaker Python SDK v3's CustomScorerEvaluator submits it
# (sagemaker/train/evaluate/pipeline_templates.py, CUSTOM_SCORER_TEMPLATE[_BASE_MODEL_ONLY]; custom_scorer_evaluator
# sets task and strategy gen_qa and, for open-weight models, evaluation_metric "all").

_HUB_MODEL_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9.]+){2,}$")


def is_open_weight_model(model: str) -> bool:
    """A SageMaker hub model id or hub-content Model ARN that is not Amazon Nova (e.g. huggingface-reasoning-qwen3-8b,
    meta-textgeneration-llama-3-2-1b-instruct)."""
    m = model.strip()
    if ":hub-content/" in m:
        return "/Model/" in m and "nova" not in m.lower()
    return bool(_HUB_MODEL_ID.match(m)) and "nova" not in m.lower()


def model_package_base(client: Any, package_arn: str) -> tuple[str, str]:
    """(base model hub-content ARN, hub model name) of a model package a serverless job registered, read from its
    InferenceSpecification.Containers[0].BaseModel as the SDK's model resolution reads it."""
    found = client.describe_model_package(ModelPackageName=package_arn)
    containers = (found.get("InferenceSpecification") or {}).get("Containers") or []
    base = (containers[0].get("BaseModel") if containers else None) or {}
    name, version = base.get("HubContentName"), base.get("HubContentVersion")
    arn = base.get("HubContentArn")
    if not arn and name and version:
        region, account = package_arn.split(":")[3], package_arn.split(":")[4]
        del account  # public hub content is account-less
        arn = f"arn:aws:sagemaker:{region}:aws:hub-content/{PUBLIC_HUB}/Model/{name}/{version}"
    if not arn or not name:
        raise ValueError(f"{package_arn}: no base model in its inference specification; only model packages made by "
                         "SageMaker's customization jobs can be evaluated serverlessly")
    return arn, name


def open_weight_rft_row(record: Any) -> dict[str, Any]:
    """An RFT prompt for an open-weight RLVR job. Sources differ on the row shape: the reward-function contract
    and SDK v3's reward verifier use `messages` + `reference_answer`; SDK v3's dataset helpers read verl-style
    `prompt` + `reward_model.ground_truth`. Both are written (extra fields are passed to the reward function)."""
    row = record.to_json()
    prompt = record.prompt_messages()
    reference = record.reference_answer
    row["prompt"] = prompt
    row["reward_model"] = {"style": "rule", "ground_truth": reference if isinstance(reference, str)
                           else json.dumps(reference, ensure_ascii=False)}
    return row


def serverless_eval_request(*, name: str, role_arn: str, base_model_arn: str, evaluator_arn: str | None,
                            channels: dict[str, str], output_path: str, hyperparameters: dict[str, Any],
                            max_runtime_hours: float, tags: dict[str, Any], accept_eula: bool = True,
                            source_model_package_arn: str | None = None,
                            model_package_group_arn: str | None = None) -> dict[str, Any]:
    """CreateTrainingJob for a serverless custom-scorer evaluation (JobType Evaluation), the base model alone or a
    customized model package on it, outputs uncompressed under the output path."""
    config: dict[str, Any] = {"BaseModelArn": base_model_arn, "JobType": "Evaluation",
                              "EvaluationType": "CustomScorerEvaluation"}
    if accept_eula:
        config["AcceptEula"] = True
    if evaluator_arn:
        config["EvaluatorArn"] = evaluator_arn
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": role_arn,
        "ServerlessJobConfig": config,
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_runtime_hours * 3600)},
        "HyperParameters": {"task": "gen_qa", "strategy": "gen_qa", "evaluation_metric": "all",
                            **{k: str(v) for k, v in hyperparameters.items()}},
        "OutputDataConfig": {"S3OutputPath": output_path, "CompressionType": "NONE"},
        "InputDataConfig": [channel(k, v) for k, v in channels.items()],
        "Tags": aws_tags(tags),
    }
    if source_model_package_arn:
        if not model_package_group_arn:
            raise ValueError("evaluating a model package needs its model package group ARN")
        request["ModelPackageConfig"] = {"ModelPackageGroupArn": model_package_group_arn,
                                         "SourceModelPackageArn": source_model_package_arn}
    validate_request("sagemaker", "CreateTrainingJob", request)
    return request


def open_weight_sft_row(record: Any) -> dict[str, Any]:
    """A demonstration for an open-weight SFT job: the chat `messages`, plus `prompt`/`completion` text (the
    shape SDK v3's dataset helpers detect as SFT); both readings are written."""
    row = record.to_json()
    messages = row.get("messages") or []
    answer = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    row["prompt"] = "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "assistant")
    row["completion"] = answer
    return row
