"""What the sagemaker and bedrock backends share: options, clients, staging data in S3, the reward Lambda,
preflight, and sampling through Bedrock runtime `converse` (their `generate` for a base or deployed model).

Scoring, the diversity decision and the manifests are `Backend`'s (rftflow.backends.base), as on every backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from rftflow.artifacts import store
from rftflow.artifacts.manifest import stage_uri
from rftflow.backends.base import EVALUATE, Backend, Generation, PendingJob, SamplingPlan, StageContext
from rftflow.cycle.recipes import DiversityConfig, EvalConfig, build_config
from rftflow.options import resolve

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
PENDING_SLACK_HOURS = 6.0  # queueing and instance start-up before the runtime clock starts


class WaitEnded(RuntimeError):
    """The task stopped waiting for a remote job that may still be running; retrying re-attaches to it."""

# Names a user may give for Nova 2 Lite, and what each service calls it.
NOVA_2_LITE = {"nova-2-lite", "nova-lite-2", "nova-lite-2/prod", "amazon.nova-2-lite-v1:0",
               "amazon.nova-2-lite-v1:0:256k", "nova-textgeneration-lite-v2"}
SAGEMAKER_MODEL = "nova-lite-2/prod"
BEDROCK_MODEL = "amazon.nova-2-lite-v1:0:256k"
CONVERSE_MODEL = "amazon.nova-2-lite-v1:0"

# Defaults for eval and diversity on AWS (Nova writes longer answers than the local tiny model).
AWS_EVAL_DEFAULTS = {"max_new_tokens": 1024}
AWS_DIVERSITY_DEFAULTS = {"max_new_tokens": 1024}


class AwsOptions(BaseModel):
    """Backend options. Each one not passed is read from env RFTFLOW_<BACKEND>_<NAME>, then RFTFLOW_AWS_<NAME>,
    then the Airflow Variables rftflow_<backend>_<name> and rftflow_aws_<name> (e.g. rftflow_sagemaker_role_arn)."""

    model_config = ConfigDict(extra="forbid")

    aws_conn_id: str | None = Field("aws_default", description="Airflow AWS connection ('none' = boto3 defaults).")
    region_name: str | None = Field(None, description="Overrides the connection's region.")
    role_arn: str | None = Field(None, description="SageMaker execution role or Bedrock service role.")
    reward_lambda_arn: str | None = Field(None, description="Reward Lambda for every stage (else looked up).")
    staging_uri: str | None = Field(None, description="s3:// prefix for job inputs/outputs when artifact_root "
                                                      "is local.")
    price_table_uri: str | None = None
    waiter_delay_s: int = Field(60, ge=5, le=3600, description="Polling interval of the deferred wait.")
    max_wait_hours: float | None = Field(None, gt=0, description="Deferred wait; default: the job's own limit "
                                                                 "plus queueing slack.")
    flavour: Literal["training_job", "serverless"] = "training_job"
    inference_model_id: str | None = Field(None, description="Bedrock model/profile id for converse on the base "
                                                             "model (default: the region's Nova 2 Lite profile).")
    converse_concurrency: int = Field(8, ge=1, le=256)
    converse_max_retries: int = Field(8, ge=0, le=30)
    converse_base_delay_s: float = Field(1.0, ge=0.0, le=60.0, description="First backoff after throttling.")
    reward_workers: int = Field(0, ge=0, le=64)
    reward_timeout_s: float = Field(60.0, gt=0)
    eval_poll_s: float = Field(60.0, gt=0, description="Polling interval when an eval job is waited for in-task.")
    deployment_wait_s: float = Field(3600.0, gt=0)
    api_key: str | None = Field(None, description="Bedrock API key for open-weight RFT (the OpenAI-compatible "
                                                  "endpoint); default: a short-term key made from the AWS "
                                                  "connection's credentials.")
    openai_base_url: str | None = Field(None, description="The OpenAI-compatible endpoint (default "
                                                          "https://bedrock-mantle.<region>.api.aws/v1).")


def resolve_options(backend: str, given: dict[str, Any]) -> AwsOptions:
    options = resolve(AwsOptions, given, (backend, "aws"), f"{backend} backend")
    if isinstance(options.aws_conn_id, str) and options.aws_conn_id.lower() == "none":
        options.aws_conn_id = None  # boto3's own credential chain
    return options


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec="seconds")


def sft_converse_row(record: Any) -> dict[str, Any]:
    """A demonstration in the Converse format Nova SFT reads (schemaVersion bedrock-conversation-2024)."""
    system = [{"text": m["content"]} for m in record.messages if m["role"] == "system"]
    messages = [{"role": m["role"], "content": [{"text": m["content"]}]}
                for m in record.messages if m["role"] in ("user", "assistant")]
    row: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024", "messages": messages}
    if system:
        row["system"] = system
    return row


def converse_notes(model: type[BaseModel], overrides: dict[str, Any] | None) -> list[str]:
    """The overrides that are not `model`'s fields: converse rollouts have no use for them, and say so."""
    return [f"override {key!r} does not apply to converse rollouts; ignored" for key in (overrides or {})
            if key.split(".", 1)[0] not in model.model_fields]


class LambdaReward:
    """A reward scored by invoking the deployed Lambda (when no local handler file matches the ARN)."""

    def __init__(self, client: Any, arn: str):
        self.name = arn.rsplit(":", 1)[-1]
        self.path = arn
        self.arn = arn
        self._client = client

    def invoke(self, samples: list[dict[str, Any]] | str, *, timeout_s: float | None = None) -> Any:
        """Raw output for a batch, as rftflow.rewards.runner.score expects of a reward (workers must be 0)."""
        from rftflow.backends.aws.lambda_deploy import LambdaInvoker

        payload = samples if isinstance(samples, str) else json.dumps(samples)
        return LambdaInvoker(self._client, self.arn)(payload.encode("utf-8"))

    def __call__(self, samples: list[dict[str, Any]]) -> list[Any]:
        from rftflow.rewards.contract import validate_output

        return validate_output(samples, self.invoke(samples))


class AwsBackend(Backend):
    """Shared plumbing of the AWS backends; subclasses add their training jobs and trigger."""

    name: ClassVar[str]

    def __init__(self, **options: Any):
        self.options = resolve_options(self.name, options)
        self._clients: Any = None
        self._prices: dict[str, Any] | None = None

    # ------------------------------------------------------------------ clients and settings

    @property
    def aws(self) -> Any:
        if self._clients is None:
            from rftflow.backends.aws.clients import AwsClients

            self._clients = AwsClients(self.options.aws_conn_id, self.options.region_name)
        return self._clients

    @property
    def region(self) -> str:
        return self.aws.region_name

    @property
    def prices(self) -> dict[str, Any]:
        if self._prices is None:
            from rftflow.backends.aws.pricing import load_price_table

            self._prices = load_price_table(self.options.price_table_uri)
        return self._prices

    def role_arn(self) -> str:
        if not self.options.role_arn:
            raise ValueError(f"{self.name} backend: no role ARN; set the Airflow Variable rftflow_{self.name}_role_arn "
                             f"or env RFTFLOW_{self.name.upper()}_ROLE_ARN (docs/aws.md lists the policy it needs)")
        return self.options.role_arn

    def remote_uri(self, ctx: StageContext) -> str:
        """The s3:// folder where this stage's job inputs and outputs live."""
        if ctx.uri.startswith("s3://"):
            return ctx.uri
        if self.options.staging_uri:
            return stage_uri(self.options.staging_uri, ctx.dag_id, ctx.run_id, ctx.cycle, ctx.stage)
        raise ValueError(f"{self.name} backend: jobs read and write S3; use an s3:// artifact_root or set the "
                         f"staging_uri option (Variable rftflow_{self.name}_staging_uri); got {ctx.uri!r}")

    def wait_attempts(self, hours: float) -> int:
        """Trigger attempts that cover `hours` (the job's own limit) plus queueing slack, at waiter_delay_s."""
        total_hours = self.options.max_wait_hours or (hours + PENDING_SLACK_HOURS)
        return max(1, math.ceil(total_hours * 3600 / self.options.waiter_delay_s))

    # ------------------------------------------------------------------ preflight (validate_data)

    def needs_role(self, model: str) -> bool:
        return True

    def reward_response(self, model: str) -> str:
        """The answer shape the reward Lambda must give for `model` ("list", or "http" for SageMaker open-weight)."""
        return "list"

    def check_recipe(self, stage: str, model: str, overrides: dict[str, Any], reward_arn: str) -> None:
        """Render `stage`'s recipe for `model` with `overrides`; raises what the stage would raise."""

    def preflight(self, *, model: str, reward: str, overrides: dict[str, dict[str, Any]],
                  stages: tuple[str, ...]) -> list[str]:
        problems: list[str] = []
        try:
            self.resolve_model(model, None)  # type: ignore[arg-type]
        except ValueError as err:
            return [str(err)]
        if self.needs_role(model):
            try:
                self.role_arn()
            except ValueError as err:
                problems.append(str(err))
        arn = f"arn:aws:lambda:{self.options.region_name or 'us-east-1'}:000000000000:function:SageMaker-preflight"
        try:
            arn = self.reward_lambda(reward, response=self.reward_response(model))
        except ValueError as err:
            problems.append(str(err))
        except Exception as err:  # AWS not reachable from here: the rft stage looks again
            log.warning("validate_data: could not look up the reward Lambda (%s); the rft stage will", err)
        for stage in stages:
            try:
                self.check_recipe(stage, model, overrides.get(stage, {}), arn)
            except ValueError as err:
                problems.append(f"recipe_overrides.{stage}: {err}")
        return problems

    # ------------------------------------------------------------------ rewards

    def reward_lambda(self, reward: str, response: str = "list") -> str:
        """The reward Lambda ARN: the reward itself when it is an ARN, the option, or the deployed function
        (`response` "http": the variant deployed with `--response http`, for open-weight jobs on SageMaker)."""
        if reward.startswith("arn:"):
            return reward
        if self.options.reward_lambda_arn:
            return self.options.reward_lambda_arn
        from rftflow.backends.aws.lambda_deploy import function_arn, function_name

        name = function_name(reward, response=response)
        arn = function_arn(self.aws.client("lambda"), name)
        if arn is None:
            flag = " --response http" if response == "http" else ""
            raise ValueError(f"reward {reward!r}: no Lambda {name} in {self.region}; deploy it with "
                             f"`rftflow lambda deploy {reward}{flag}` or pass a Lambda ARN as the reward")
        return arn

    def reward_function(self, reward: str) -> Any:
        """What scores rollouts here: the local handler for a name/path, else the Lambda itself."""
        if reward.startswith("arn:"):
            return LambdaReward(self.aws.client("lambda"), reward)
        return super().reward_function(reward)

    def scoring_options(self, reward_fn: Any) -> dict[str, Any]:
        """Local scoring in worker processes; a Lambda-backed reward is called from this process."""
        return {"workers": 0 if isinstance(reward_fn, LambdaReward) else self.options.reward_workers,
                "timeout_s": self.options.reward_timeout_s}

    # ------------------------------------------------------------------ data

    def stage_records(self, uri: str, target: str, kind: Literal["rft", "sft"] = "rft",
                      convert: Any = None) -> int:
        """Validate a dataset and write it (optionally converted row by row) where the job reads it."""
        from rftflow.data.dataset import read_records

        records = read_records(uri, kind=kind)
        rows = [convert(r) if convert else r.to_json() for r in records]
        store.write_jsonl(target, rows)
        return len(rows)

    # ------------------------------------------------------------------ manifests

    def training_metrics_summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        rewards = [r["critic/rewards/mean"] for r in rows if r.get("critic/rewards/mean") is not None]
        return {"steps_logged": len(rows), "reward_first": rewards[0] if rewards else None,
                "reward_last": rewards[-1] if rewards else None}

    # ------------------------------------------------------------------ eval and diversity via converse

    def sampling_config(self, kind: str, overrides: dict[str, Any] | None) -> tuple[Any, list[str]]:
        """Our eval / diversity recipe fields from the overrides (Nova answers longer than the tiny model: 1,024
        new tokens by default); any other override does not apply to converse rollouts and is noted."""
        model = EvalConfig if kind == EVALUATE else DiversityConfig
        values = dict(AWS_EVAL_DEFAULTS if kind == EVALUATE else AWS_DIVERSITY_DEFAULTS)
        values.update({k: v for k, v in (overrides or {}).items() if k.split(".", 1)[0] in model.model_fields})
        return build_config(model, values, "overrides"), converse_notes(model, overrides)

    def sample_passes(self, plan: SamplingPlan, sample: Any, model_id: str,
                      extra_jobs: list[dict[str, Any]] | None = None) -> Generation:
        """Each of the plan's passes through `sample(records, k, temperature, top_p, max_tokens, seed)` ->
        (k completions per record, the job record it billed); `converse` on `model_id` by default."""
        completions, jobs = {}, list(extra_jobs or [])
        for p in plan.passes:
            completions[p["name"]], job = sample(plan.records, p["k"], p["temperature"], p.get("top_p", 1.0),
                                                 p["max_new_tokens"], p.get("seed", plan.config.seed))
            jobs.append(job)
        return Generation(completions, jobs=jobs, inputs={"model_id": model_id})

    def converse_model_id(self, model_uri: str) -> str:
        """The model id `converse` takes for a base model: the region's cross-region profile of Nova 2 Lite."""
        if self.options.inference_model_id:
            return self.options.inference_model_id
        if model_uri.startswith("arn:"):
            return model_uri
        if model_uri in NOVA_2_LITE:
            geo = {"us": "us", "eu": "eu", "ap": "apac"}.get(self.region.split("-", 1)[0], "us")
            return f"{geo}.{CONVERSE_MODEL}"
        return model_uri

    def _converse(self, model_id: str, records: list[Any], k: int, temperature: float, top_p: float,
                  max_tokens: int, seed: int) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
        from rftflow.backends.aws import rollouts
        from rftflow.backends.aws.pricing import inference_cost

        settings = rollouts.ConverseSettings(model_id=model_id, temperature=temperature, top_p=top_p,
                                             max_tokens=max_tokens, concurrency=self.options.converse_concurrency,
                                             max_retries=self.options.converse_max_retries,
                                             base_delay_s=self.options.converse_base_delay_s)
        usage = rollouts.Usage()
        started = time.time()
        out = rollouts.sample(self.aws.client("bedrock-runtime"), records, k, settings, seed=seed, usage=usage)
        cost = inference_cost(model_id, usage.input_tokens, usage.output_tokens, self.prices)
        job = {"service": "bedrock-runtime", "kind": "converse", "model_id": model_id, "samples": len(records) * k,
               "temperature": temperature, "seconds": round(time.time() - started, 3), **usage.to_dict(), **cost}
        return out, job

    # ------------------------------------------------------------------ completion helpers

    @staticmethod
    def failed_event(pending: PendingJob, event: dict[str, Any], detail: str = "", *,
                     still_running: bool = False) -> RuntimeError:
        """The error for a trigger event other than success. `still_running`: the service says the job is
        active, so the event only means the wait ended (the provider's triggers report running out of
        attempts as status "error"), and a retry re-attaches to the job."""
        status = event.get("status", "unknown")
        message = event.get("message") or ""
        if status == "timeout" or still_running:
            return WaitEnded(f"{pending.job_name}: stopped waiting ({message or status}); the job may still be "
                             "running — retry the task to re-attach to it (no second job is started)")
        return RuntimeError(f"{pending.job_name} ended {status}: {message} {detail}".strip())


def content_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
