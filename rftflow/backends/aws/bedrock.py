"""The `bedrock` backend: Amazon Nova reinforcement fine-tuning (and fine-tuning) as Bedrock model customization
jobs, with evaluation and the diversity check through Bedrock runtime `converse`; and reinforcement fine-tuning
of the open-weight models Bedrock customizes (openai.gpt-oss-20b, qwen.qwen3-32b) through its OpenAI-compatible
fine-tuning API, evaluated with chat completions on the same endpoint (rftflow.backends.aws.bedrock_openai).

Evaluation of a custom model: an on-demand deployment of it answers the eval prompts through `converse`, and
the answers are scored here with the same reward handler the job trained on. A Bedrock evaluation job was
not used: it cannot run our reward function, reports its own metric set, and gives no per-prompt pass/fail
that the gate and the per-category breakdown need; converse keeps baseline and candidate on one path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from typing import Any, ClassVar

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest
from rftflow.backends.aws import bedrock_jobs as jobs
from rftflow.backends.aws.backend import (
    BEDROCK_MODEL,
    METRICS,
    NOVA_2_LITE,
    PENDING_SLACK_HOURS,
    AwsBackend,
    now_iso,
    sft_converse_row,
)
from rftflow.backends.base import Generation, PendingJob, SamplingPlan, StageContext
from rftflow.cycle.recipes import RFTConfig, SFTConfig

log = logging.getLogger(__name__)

KIND = "bedrock_customization"
OPEN_WEIGHT_KIND = "bedrock_open_weight_rft"
BEDROCK_WAITER_DELAY_S = 300


class BedrockBackend(AwsBackend):
    """Stages as Bedrock jobs and converse calls. Options: rftflow.backends.aws.backend.AwsOptions (role_arn required
    for training: the Bedrock service role)."""

    name: ClassVar[str] = "bedrock"

    def resolve_model(self, model: str, ctx: StageContext) -> str:
        """Nova 2 Lite by any of its names -> its Bedrock model id; custom-model ARNs as they are."""
        from rftflow.backends.aws import bedrock_openai

        m = model.strip()
        if m in NOVA_2_LITE:
            return BEDROCK_MODEL
        if m.startswith("arn:aws") and ":bedrock:" in m:
            return m
        open_weight = bedrock_openai.open_weight_model(m)
        if open_weight:
            return open_weight
        if bedrock_openai.parse_checkpoint(m):
            return m
        raise ValueError(f"model {model!r}: the bedrock backend customizes Amazon Nova 2 Lite (nova-2-lite or "
                         f"another of its names, or a Bedrock custom-model ARN) and the open-weight "
                         f"{', '.join(bedrock_openai.OPEN_WEIGHT_MODELS)} (or a {bedrock_openai.CHECKPOINT_SCHEME} "
                         "checkpoint of an earlier stage); 'tiny' is the local backend's model")

    @staticmethod
    def is_open_weight(model: str) -> bool:
        from rftflow.backends.aws import bedrock_openai

        m = model.strip()
        return bool(bedrock_openai.open_weight_model(m) or m.startswith(bedrock_openai.CHECKPOINT_SCHEME))

    def needs_role(self, model: str) -> bool:
        return not self.is_open_weight(model)  # the OpenAI-compatible API takes no service role

    def check_recipe(self, stage: str, model: str, overrides: dict[str, Any], reward_arn: str) -> None:
        from rftflow.backends.aws.recipes import render_bedrock

        if stage not in ("sft", "rft"):
            return
        fields = set((SFTConfig if stage == "sft" else RFTConfig).model_fields)
        if self.is_open_weight(model):
            if stage == "sft":
                raise ValueError(f"Bedrock customizes {model} with reinforcement fine-tuning only (no SFT path); "
                                 "set sft_policy to 'never'")
            render_bedrock("rft_open_weight", overrides, local_fields=fields)
        else:
            render_bedrock(stage, overrides, local_fields=fields)

    def open_weight_client(self, region: str | None = None) -> Any:
        """The OpenAI-compatible endpoint's client, authenticated with the configured Bedrock API key or a
        short-term key signed with the AWS connection's credentials."""
        from rftflow.backends.aws.bedrock_openai import OpenWeightClient

        region = region or self.region
        credentials = None
        if not self.options.api_key:
            hook = self.aws.hook("bedrock")
            if hook is not None:
                credentials = hook.get_session(region_name=region).get_credentials()
        return OpenWeightClient(region, url=self.options.openai_base_url, api_key=self.options.api_key,
                                credentials=credentials)

    @staticmethod
    def _is_custom(model: str) -> bool:
        return ":custom-model/" in model

    # ------------------------------------------------------------------ training

    def train(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str | None,
              overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """REINFORCEMENT_FINE_TUNING with the reward Lambda as grader (bedrock/rft.yaml; bedrock/rft_open_weight.yaml
        and the OpenAI-compatible API for an open-weight model), or FINE_TUNING on demonstrations in the Converse
        format (bedrock/sft.yaml)."""
        if kind == "rft":
            if reward is None:
                raise ValueError("rft: a reward is required")
            if self.is_open_weight(model_uri):
                return self._open_weight_rft(ctx, model_uri, data_uri, reward, overrides)
            return self._customize(ctx, "rft", model_uri, data_uri, reward, overrides)
        if self.is_open_weight(model_uri):
            raise ValueError(f"model {model_uri!r}: Bedrock customizes its open-weight models with reinforcement "
                             "fine-tuning only (no SFT path); set sft_policy to 'never', or run the SFT stage on "
                             "the local backend first")
        return self._customize(ctx, "sft", model_uri, data_uri, None, overrides)

    def _customize(self, ctx: StageContext, stage: str, model_uri: str, data_uri: str, reward: str | None,
                   overrides: dict[str, Any] | None) -> StageManifest | PendingJob:
        from rftflow.backends.aws.naming import stage_job_base
        from rftflow.backends.aws.recipes import render_bedrock

        started_at = now_iso()
        overrides = dict(overrides or {})
        local_fields = set((SFTConfig if stage == "sft" else RFTConfig).model_fields)
        recipe = render_bedrock(stage, overrides, local_fields=local_fields)
        model = self.resolve_model(model_uri, ctx)
        self._check_region(recipe.base_model, "SFT" if stage == "sft" else "RFT")
        base_model = model if model.startswith("arn:") else jobs.foundation_model_arn(recipe.base_model, self.region)
        reward_arn = self.reward_lambda(reward) if reward else None
        remote = self.remote_uri(ctx)
        data_file = store.join(remote, "input", f"{stage}.jsonl")
        output_uri = store.join(remote, "job-output") + "/"
        role = self.role_arn()
        tags = {"rftflow:dag": ctx.dag_id, "rftflow:run": ctx.run_id, "rftflow:cycle": ctx.cycle,
                "rftflow:stage": ctx.stage}

        def build(name: str) -> dict[str, Any]:
            return jobs.customization_request(recipe, name=name, role_arn=role, base_model_arn=base_model,
                                              train_uri=data_file, output_uri=output_uri,
                                              reward_lambda_arn=reward_arn, tags=tags)

        def prepare(name: str) -> None:
            self.stage_records(data_uri, data_file, kind="sft" if stage == "sft" else "rft",
                               convert=sft_converse_row if stage == "sft" else None)

        base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
        submitted = jobs.find_or_create(self.aws.client("bedrock"), base, build, prepare=prepare)
        pending = PendingJob(KIND, submitted.name, details={
            "stage_kind": stage, "customization_type": recipe.customization_type, "region": self.region,
            "remote_uri": remote, "output_uri": output_uri, "model_uri": model, "base_model": base_model,
            "data_uri": data_uri, "staged_data_uri": data_file, "reward": reward,
            "reward_lambda_arn": reward_arn, "started_at": started_at, "hyper_parameters": recipe.hyper_parameters,
            "max_wait_hours": recipe.job.max_wait_hours, "created": submitted.created,
            "request_digest": submitted.digest, "overrides": overrides, "notes": recipe.notes,
            "wait_timeout_s": self._attempts(recipe.job.max_wait_hours) * BEDROCK_WAITER_DELAY_S,
        })
        self.save_pending(ctx, pending)
        if submitted.status == "Completed":
            return self.complete(ctx, pending, {"status": "success", "job_name": submitted.name})
        return pending

    def _open_weight_rft(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                         overrides: dict[str, Any] | None) -> StageManifest | PendingJob:
        """Upload the prompts (Files API, purpose fine-tune), create the reinforcement job with the reward Lambda
        as grader, save the pending job; a retry finds the job by its stage-unique training file."""
        import time

        from rftflow.backends.aws import bedrock_openai as ow
        from rftflow.backends.aws.naming import stage_job_base
        from rftflow.backends.aws.recipes import render_bedrock
        from rftflow.data.dataset import read_records

        started_at = now_iso()
        overrides = dict(overrides or {})
        recipe = render_bedrock("rft_open_weight", overrides, local_fields=set(RFTConfig.model_fields))
        model = self.resolve_model(model_uri, ctx)
        checkpoint = ow.parse_checkpoint(model)
        if checkpoint:
            raise ValueError(f"{model_uri}: continuing RFT from a fine-tuned open-weight model is not offered by "
                             "Bedrock's fine-tuning API (a job starts from openai.gpt-oss-20b or qwen.qwen3-32b); "
                             "start the cycle from the base model")
        self._check_region(model, "RFT")
        records = read_records(train_uri, kind="rft")
        if not ow.MIN_ROWS <= len(records) <= ow.MAX_ROWS:
            raise ValueError(f"{train_uri}: {len(records)} prompts; Bedrock open-weight RFT takes "
                             f"{ow.MIN_ROWS:,} to {ow.MAX_ROWS:,} (rft-prepare-data-open-weight)")
        reward_arn = self.reward_lambda(reward)
        content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ow.training_rows(records)).encode()
        base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
        filename = f"{base}-{hashlib.sha256(content).hexdigest()[:12]}.jsonl"
        client = self.open_weight_client()
        file_id, uploaded = client.upload(filename, content)
        body = ow.job_request(model, file_id, reward_arn, recipe.hyper_parameters)
        submitted = client.find_or_create(body)
        hours = recipe.job.max_wait_hours
        pending = PendingJob(OPEN_WEIGHT_KIND, submitted.job_id, details={
            "stage_kind": "rft", "customization_type": "REINFORCEMENT_FINE_TUNING", "api": "openai-compatible",
            "region": self.region, "endpoint": client.url, "model_uri": model_uri, "base_model": model,
            "data_uri": train_uri, "training_file": file_id, "training_file_name": filename,
            "training_file_uploaded": uploaded, "rows": len(records), "reward": reward,
            "reward_lambda_arn": reward_arn, "started_at": started_at, "hyper_parameters": recipe.hyper_parameters,
            "max_wait_hours": hours, "created": submitted.created, "request_digest": submitted.digest,
            "overrides": overrides, "notes": recipe.notes,
            "deadline": time.time() + self._attempts(hours) * BEDROCK_WAITER_DELAY_S,
            "wait_timeout_s": self._attempts(hours) * BEDROCK_WAITER_DELAY_S,
        })
        self.save_pending(ctx, pending)
        if submitted.status == "succeeded":
            return self.complete(ctx, pending, {"status": "success", "job_name": submitted.job_id})
        return pending

    def _complete_open_weight(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        from rftflow.backends.aws import bedrock_openai as ow
        from rftflow.backends.aws.pricing import bedrock_job_cost

        details = pending.details
        client = self.open_weight_client(details.get("region"))
        if event.get("status") != "success":
            running = False
            detail = ""
            try:
                job = client.retrieve(pending.job_name)
                running = job.get("status") in ow.ACTIVE
                detail = f"(job status {job.get('status')}: {(job.get('error') or {}).get('message', '')})"
            except Exception:  # the description only enriches the message
                pass
            raise self.failed_event(pending, event, detail, still_running=running)
        job = client.retrieve(pending.job_name)
        if job.get("status") != "succeeded" or not job.get("fine_tuned_model"):
            raise RuntimeError(f"{pending.job_name}: expected succeeded with a fine_tuned_model; got "
                               f"{job.get('status')} ({job.get('error')})")
        model = job["fine_tuned_model"]
        checkpoint = ow.checkpoint_uri(details["region"], model)
        seconds = ow.job_seconds(job)
        tokens = int(job.get("trained_tokens") or 0)
        cost = bedrock_job_cost(details["base_model"], seconds, tokens, self.prices)
        record = {"service": "bedrock", "api": "openai-compatible", "kind": "REINFORCEMENT_FINE_TUNING",
                  "name": pending.job_name, "status": job["status"], "fine_tuned_model": model,
                  "created_by_this_run": details.get("created"), "request_digest": details.get("request_digest"),
                  **cost}
        rows = [{"step": i, "message": e.get("message"), **(e.get("data") or {})}
                for i, e in enumerate(reversed(client.events(pending.job_name)))]
        metrics_uri = store.join(ctx.uri, METRICS)
        store.write_jsonl(metrics_uri, rows)
        metrics = {"steps_logged": len(rows), "trained_tokens": tokens, "billable_seconds": record["billable_seconds"],
                   "estimated_cost_usd": record["estimated_cost_usd"]}
        return self.finish(
            ctx, details["started_at"], checkpoint_uri=checkpoint, metrics=metrics, jobs=[record],
            inputs={"model_uri": details["model_uri"], "base_model": details["base_model"],
                    "data_uri": details["data_uri"], "reward": details.get("reward"),
                    "reward_lambda_arn": details.get("reward_lambda_arn"), "training_file": details["training_file"],
                    "hyper_parameters": details["hyper_parameters"], "overrides": details.get("overrides", {}),
                    "notes": details.get("notes", [])},
            outputs={"metrics_uri": metrics_uri, "fine_tuned_model": model, "endpoint": details.get("endpoint")},
        )

    def _check_region(self, base_model: str, customization: str) -> None:
        """Fail before any upload where Bedrock does not customize the model (it would answer the create call
        with a ValidationException); the table and its sources are in rftflow.backends.aws.availability."""
        from rftflow.backends.aws.availability import TABLE, region_problems

        if not any(a.model == base_model and a.backend == "bedrock" for a in TABLE):
            return  # a model the table does not list: AWS has the last word
        problems = region_problems("bedrock", self.region, customizations=(customization,), model=base_model)
        if problems:
            raise ValueError(f"bedrock backend: {'; '.join(problems)}; set region_name (Variable "
                             "rftflow_bedrock_region_name) or the connection's region to one of those")

    def _attempts(self, hours: float) -> int:
        """Trigger attempts covering the job's own limit plus the same queueing slack SageMaker waits get."""
        total = self.options.max_wait_hours or (hours + PENDING_SLACK_HOURS)
        return max(1, int(total * 3600 // BEDROCK_WAITER_DELAY_S) + 1)

    # ------------------------------------------------------------------ deferral

    def trigger_for(self, pending: PendingJob) -> Any:
        """The provider's BedrockCustomizeModelCompletedTrigger with a wait of days, not its 2.5 h default."""
        if pending.kind == OPEN_WEIGHT_KIND:
            from rftflow.orchestration.open_weight_trigger import OpenWeightJobTrigger

            keep = {k: v for k, v in self.options.model_dump().items()
                    if k in ("aws_conn_id", "region_name", "openai_base_url") and v is not None}
            return OpenWeightJobTrigger(job_id=pending.job_name, region=pending.details["region"],
                                        deadline=float(pending.details["deadline"]),
                                        poll_s=float(BEDROCK_WAITER_DELAY_S), options=keep)
        from airflow.providers.amazon.aws.triggers.bedrock import BedrockCustomizeModelCompletedTrigger

        return BedrockCustomizeModelCompletedTrigger(
            job_name=pending.job_name, waiter_delay=BEDROCK_WAITER_DELAY_S,
            waiter_max_attempts=self._attempts(float(pending.details.get("max_wait_hours", 96))),
            aws_conn_id=self.options.aws_conn_id, region_name=pending.details.get("region") or self.options.region_name,
        )

    def stop(self, pending: PendingJob) -> None:
        if pending.kind == OPEN_WEIGHT_KIND:
            self.open_weight_client(pending.details.get("region")).cancel(pending.job_name)
            return
        jobs.stop_job(self.aws.client("bedrock"), pending.job_name)

    def complete_training(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        """After the trigger fires: the custom model's ARN becomes the stage's checkpoint."""
        from rftflow.backends.aws.pricing import bedrock_job_cost

        if pending.kind == OPEN_WEIGHT_KIND:
            return self._complete_open_weight(ctx, pending, event)
        client = self.aws.client("bedrock")
        details = pending.details
        if event.get("status") != "success":
            detail, running = "", False
            try:
                found = client.get_model_customization_job(jobIdentifier=pending.job_name)
                detail = f"(job status {found.get('status')}: {found.get('failureMessage', '')})"
                running = found.get("status") in jobs.ACTIVE
            except Exception:  # the description only enriches the message
                pass
            raise self.failed_event(pending, event, detail, still_running=running)
        job = client.get_model_customization_job(jobIdentifier=pending.job_name)
        if job.get("status") != "Completed":
            raise RuntimeError(f"{pending.job_name}: expected Completed; got {job.get('status')} "
                               f"({job.get('failureMessage', '')})")
        model_arn = job.get("outputModelArn")
        if not model_arn:
            raise RuntimeError(f"{pending.job_name}: completed without an outputModelArn")
        seconds = jobs.job_seconds(job)
        trained_tokens = self._trained_tokens(details)
        cost = bedrock_job_cost(details["customization_type"], seconds, trained_tokens, self.prices)
        record = {"service": "bedrock", "kind": details["customization_type"], "name": pending.job_name,
                  "arn": job.get("jobArn"), "status": job["status"], "output_model_arn": model_arn,
                  "created_by_this_run": details.get("created"), "request_digest": details.get("request_digest"),
                  **cost}
        rows = jobs.read_step_metrics(details["output_uri"], job.get("jobArn", pending.job_name))
        metrics_uri = store.join(ctx.uri, METRICS)
        store.write_jsonl(metrics_uri, rows)
        metrics = {**self.training_metrics_summary(rows), "billable_seconds": record["billable_seconds"],
                   "estimated_cost_usd": record["estimated_cost_usd"]}
        return self.finish(
            ctx, details["started_at"], checkpoint_uri=model_arn, metrics=metrics, jobs=[record],
            inputs={"model_uri": details["model_uri"], "base_model": details["base_model"],
                    "data_uri": details["data_uri"], "reward": details.get("reward"),
                    "reward_lambda_arn": details.get("reward_lambda_arn"),
                    "hyper_parameters": details["hyper_parameters"], "overrides": details.get("overrides", {}),
                    "notes": details.get("notes", [])},
            outputs={"metrics_uri": metrics_uri, "job_output_uri": details["output_uri"],
                     "output_model_arn": model_arn},
        )

    @staticmethod
    def _trained_tokens(details: dict[str, Any]) -> int:
        """Tokens trained for per-token pricing (FINE_TUNING): ~4 characters a token, times epochs."""
        if details["customization_type"] != "FINE_TUNING":
            return 0
        chars = len(store.read_text(details["staged_data_uri"]))
        return int(chars / 4 * int(details["hyper_parameters"].get("epochCount", 1)))

    # ------------------------------------------------------------------ evaluation and diversity

    def _inference_target(self, ctx: StageContext, model_uri: str) -> tuple[str, list[dict[str, Any]]]:
        """(model id for converse, job records): a custom model is served by an on-demand deployment."""
        model = self.resolve_model(model_uri, ctx)
        if not self._is_custom(model):
            return self.converse_model_id(model_uri if model_uri.strip() in NOVA_2_LITE else model), []
        name = "rftflow-" + hashlib.sha256(model.encode()).hexdigest()[:16]
        arn = jobs.ensure_deployment(self.aws.client("bedrock"), model, name,
                                     tags={"rftflow:model": model.rsplit("/", 1)[-1]},
                                     wait_s=self.options.deployment_wait_s)
        return arn, [{"service": "bedrock", "kind": "custom_model_deployment", "name": name, "arn": arn,
                      "model_arn": model, "estimated_cost_usd": 0.0,
                      "note": "on-demand deployment: billed per token through converse, nothing while idle"}]

    @staticmethod
    def _open_weight_model_id(model_uri: str) -> tuple[str | None, str]:
        """(region or None for this backend's, model id) for chat completions: the base model by its id, a
        fine-tuned one by what its job returned, on the endpoint of the region it was trained in."""
        from rftflow.backends.aws import bedrock_openai as ow

        found = ow.parse_checkpoint(model_uri.strip())
        if found:
            return found
        return None, ow.open_weight_model(model_uri) or model_uri

    def _open_weight_sample(self, model_uri: str, records: list[Any], k: int, temperature: float, top_p: float,
                            max_tokens: int, seed: int) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
        import time

        from rftflow.backends.aws import bedrock_openai as ow
        from rftflow.backends.aws.pricing import inference_cost

        region, model = self._open_weight_model_id(model_uri)
        client = self.open_weight_client(region)
        started = time.time()
        out, usage = ow.sample(client, model, records, k, temperature=temperature, top_p=top_p,
                               max_tokens=max_tokens, seed=seed, concurrency=self.options.converse_concurrency)
        base = model if ow.open_weight_model(model) else next(
            (m for m in ow.OPEN_WEIGHT_MODELS if m in model), model)  # a fine-tuned id names its base
        cost = inference_cost(base, usage["input_tokens"], usage["output_tokens"], self.prices)
        job = {"service": "bedrock", "api": "openai-compatible", "kind": "chat_completions", "model_id": model,
               "endpoint": client.url, "samples": len(records) * k, "temperature": temperature,
               "seconds": round(time.time() - started, 3), "requests": usage["requests"], **cost}
        return out, job

    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> Generation:
        """The plan's passes through converse (a custom model through its on-demand deployment), or chat
        completions on the OpenAI-compatible endpoint for an open-weight model; scored here like every
        backend's, with the stage's reward handler."""
        if self.is_open_weight(model_uri):
            return self.sample_passes(plan, functools.partial(self._open_weight_sample, model_uri),
                                      self._open_weight_model_id(model_uri)[1])
        model_id, extra = self._inference_target(ctx, model_uri)
        return self.sample_passes(plan, functools.partial(self._converse, model_id), model_id, extra)
