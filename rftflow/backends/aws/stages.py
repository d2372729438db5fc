"""What the sagemaker and bedrock backends share: options, clients, staging data in S3, the reward Lambda,
evaluation and the diversity check through Bedrock runtime `converse`, and writing stage manifests.

Eval and diversity reuse rftflow.scoring.evaluation and rftflow.scoring.diversity, so their numbers mean what they mean locally.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, package_versions, stage_uri, write_manifest
from rftflow.backends.base import Backend, PendingJob, StageContext
from rftflow.cycle.recipes import DiversityConfig, EvalConfig, build_config
from rftflow.options import setting
from rftflow.scoring.diversity import sample_prompts

log = logging.getLogger(__name__)

PENDING = "pending.json"
ROWS = "rows.jsonl"
METRICS = "metrics.jsonl"
FILTERED_TRAIN = "filtered_train.jsonl"
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


def _option_value(backend: str, name: str) -> str | None:
    return setting(name, (backend, "aws"))


def resolve_options(backend: str, given: dict[str, Any]) -> AwsOptions:
    values: dict[str, Any] = {}
    for name in AwsOptions.model_fields:
        if name in given:
            values[name] = given[name]
            continue
        found = _option_value(backend, name)
        if found is not None:
            values[name] = found
    unknown = set(given) - set(AwsOptions.model_fields)
    if unknown:
        raise ValueError(f"{backend} backend: unknown option(s) {sorted(unknown)}; expected "
                         f"{', '.join(AwsOptions.model_fields)}")
    if isinstance(values.get("aws_conn_id"), str) and values["aws_conn_id"].lower() == "none":
        values["aws_conn_id"] = None
    return AwsOptions.model_validate(values)


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec="seconds")


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def write_jsonl(uri: str, rows: list[dict[str, Any]]) -> None:
    store.write_text(uri, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def sft_converse_row(record: Any) -> dict[str, Any]:
    """A demonstration in the Converse format Nova SFT reads (schemaVersion bedrock-conversation-2024)."""
    system = [{"text": m["content"]} for m in record.messages if m["role"] == "system"]
    messages = [{"role": m["role"], "content": [{"text": m["content"]}]}
                for m in record.messages if m["role"] in ("user", "assistant")]
    row: dict[str, Any] = {"schemaVersion": "bedrock-conversation-2024", "messages": messages}
    if system:
        row["system"] = system
    return row


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
        from rftflow.rewards.runner import load_reward

        return load_reward(reward)

    def reward_workers(self, reward_fn: Any) -> int:
        """Worker processes for local scoring (a Lambda-backed reward is called from this process)."""
        return 0 if isinstance(reward_fn, LambdaReward) else self.options.reward_workers

    # ------------------------------------------------------------------ data

    def stage_records(self, uri: str, target: str, kind: Literal["rft", "sft"] = "rft",
                      convert: Any = None) -> int:
        """Validate a dataset and write it (optionally converted row by row) where the job reads it."""
        from rftflow.data.dataset import read_records

        records = read_records(uri, kind=kind)
        rows = [convert(r) if convert else r.to_json() for r in records]
        write_jsonl(target, rows)
        return len(rows)

    # ------------------------------------------------------------------ manifests

    def finish(self, ctx: StageContext, started_at: str, **fields: Any) -> StageManifest:
        finished = time.time()
        manifest = StageManifest(
            dag_id=ctx.dag_id, run_id=ctx.run_id, cycle=ctx.cycle, stage=ctx.stage, backend=self.name,
            started_at=started_at, finished_at=now_iso(finished),
            duration_s=round(max(0.0, finished - _parse_iso(started_at)), 3), versions=package_versions(), **fields,
        )
        write_manifest(ctx.uri, manifest)  # last: its presence marks the stage complete
        return manifest

    def training_metrics_summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        rewards = [r["critic/rewards/mean"] for r in rows if r.get("critic/rewards/mean") is not None]
        return {"steps_logged": len(rows), "reward_first": rewards[0] if rewards else None,
                "reward_last": rewards[-1] if rewards else None}

    # ------------------------------------------------------------------ eval and diversity via converse

    @staticmethod
    def _split(model: type[BaseModel], overrides: dict[str, Any] | None,
               defaults: dict[str, Any]) -> tuple[Any, list[str]]:
        values, notes = dict(defaults), []
        for key, value in (overrides or {}).items():
            if key.split(".", 1)[0] in model.model_fields:
                values[key] = value
            else:
                notes.append(f"override {key!r} does not apply to converse rollouts; ignored")
        return build_config(model, values, "overrides"), notes

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

    def converse_evaluate(self, ctx: StageContext, model_uri: str, model_id: str, eval_uri: str, reward: str,
                          overrides: dict[str, Any] | None, extra_jobs: list[dict[str, Any]] | None = None,
                          sampler: Any = None) -> StageManifest:
        """Greedy pass@1 (and pass@k when asked) over the eval set, scored with the stage's reward.
        `sampler(records, k, temperature, top_p, max_tokens, seed)` -> (k completions per record, job record);
        default: `converse` on `model_id`."""
        from rftflow.data.dataset import read_records
        from rftflow.scoring import evaluation

        sample = sampler or functools.partial(self._converse, model_id)
        started_at = now_iso()
        cfg, notes = self._split(EvalConfig, overrides, AWS_EVAL_DEFAULTS)
        records = read_records(eval_uri, kind="rft")[:cfg.max_prompts or None]
        reward_fn = self.reward_function(reward)
        greedy, job = sample(records, 1, 0.0, 1.0, cfg.max_new_tokens, cfg.seed)
        jobs = [*(extra_jobs or []), job]
        sampled = None
        if cfg.pass_at_k:
            sampled, sjob = sample(records, cfg.pass_at_k, cfg.sample_temperature, 1.0, cfg.max_new_tokens,
                                   cfg.seed)
            jobs.append(sjob)
        rows = evaluation.score_rows(records, [g[0] for g in greedy], reward_fn, pass_threshold=cfg.pass_threshold,
                                     sampled=sampled, workers=self.reward_workers(reward_fn),
                                     timeout_s=self.options.reward_timeout_s)
        write_jsonl(store.join(ctx.uri, ROWS), rows)
        metrics = evaluation.summarize(rows, cfg.breakdown_fields)
        metrics["estimated_cost_usd"] = _total(jobs)
        return self.finish(ctx, started_at, checkpoint_uri=model_uri, metrics=metrics, jobs=jobs,
                           inputs={"model_uri": model_uri, "model_id": model_id, "eval_uri": eval_uri,
                                   "reward": reward, "config": cfg.model_dump(), "notes": notes},
                           outputs={"rows_uri": store.join(ctx.uri, ROWS)})

    def diversity_config(self, overrides: dict[str, Any] | None) -> tuple[DiversityConfig, list[str]]:
        return self._split(DiversityConfig, overrides, AWS_DIVERSITY_DEFAULTS)

    def finish_diversity(self, ctx: StageContext, started_at: str, model_uri: str, train_uri: str, reward: str,
                         records: list[Any], completions: list[list[dict[str, Any]]], cfg: DiversityConfig,
                         jobs: list[dict[str, Any]], notes: list[str]) -> StageManifest:
        """Score k completions per prompt, analyse pass patterns, decide, write rows and the manifest."""
        from rftflow.data.dataset import write_records
        from rftflow.scoring import diversity as diversity_mod

        reward_fn = self.reward_function(reward)
        rows, metrics, decision = diversity_mod.score(records, completions, reward_fn, cfg,
                                                      workers=self.reward_workers(reward_fn),
                                                      timeout_s=self.options.reward_timeout_s)
        metrics["estimated_cost_usd"] = _total(jobs)
        write_jsonl(store.join(ctx.uri, ROWS), rows)
        outputs: dict[str, Any] = {"rows_uri": store.join(ctx.uri, ROWS)}
        if cfg.write_filtered:
            keep = diversity_mod.informative(records, rows)
            write_records(store.join(ctx.uri, FILTERED_TRAIN), keep)
            outputs["filtered_train_uri"] = store.join(ctx.uri, FILTERED_TRAIN)
            metrics["filtered_prompts"] = len(keep)
        return self.finish(ctx, started_at, checkpoint_uri=model_uri, metrics=metrics, decision=decision,
                           jobs=jobs, outputs=outputs,
                           inputs={"model_uri": model_uri, "train_uri": train_uri, "reward": reward,
                                   "config": cfg.model_dump(), "notes": notes})

    def converse_diversity(self, ctx: StageContext, model_uri: str, model_id: str, train_uri: str, reward: str,
                           overrides: dict[str, Any] | None, extra_jobs: list[dict[str, Any]] | None = None,
                           sampler: Any = None) -> StageManifest:
        """k samples per prompt (`sampler` as for converse_evaluate), then the shared analysis and decision."""
        from rftflow.data.dataset import read_records

        sample = sampler or functools.partial(self._converse, model_id)
        started_at = now_iso()
        cfg, notes = self.diversity_config(overrides)
        records = sample_prompts(read_records(train_uri, kind="rft"), cfg)
        self.reward_function(reward)  # a bad reward spec fails before any paid call
        completions, job = sample(records, cfg.k, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed)
        return self.finish_diversity(ctx, started_at, model_uri, train_uri, reward, records, completions, cfg,
                                     [*(extra_jobs or []), job], notes)

    # ------------------------------------------------------------------ pending jobs

    def save_pending(self, ctx: StageContext, pending: PendingJob) -> PendingJob:
        """Keep the pending job beside the stage, so completion does not depend on what the caller kept."""
        import dataclasses

        store.write_json(store.join(ctx.uri, PENDING), dataclasses.asdict(pending))
        return pending

    def load_pending(self, ctx: StageContext) -> PendingJob | None:
        """The job this stage last submitted or re-attached to (None when it never submitted one)."""
        uri = store.join(ctx.uri, PENDING)
        if not store.exists(uri):
            return None
        return PendingJob(**store.read_json(uri))

    def resolve_pending(self, ctx: StageContext, pending: PendingJob | None,
                        event: dict[str, Any]) -> PendingJob:
        """`pending` when the caller kept it, else the stage's saved one; the event's job must match."""
        if pending is None or not pending.job_name or not pending.details:
            saved = self.load_pending(ctx)
            if saved is None:
                raise RuntimeError(f"{ctx.stage}: no pending job given and none saved at {ctx.uri}/{PENDING}")
            pending = saved
        job = event.get("job_name")
        if job and job != pending.job_name:
            raise RuntimeError(f"{ctx.stage}: the trigger reported job {job}, but this stage waits for "
                               f"{pending.job_name}")
        return pending

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


def _total(jobs: list[dict[str, Any]]) -> float:
    from rftflow.backends.aws.pricing import total_cost

    return total_cost(jobs)


def content_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
