"""The `sagemaker` backend: Amazon Nova SFT and RFT on SageMaker Training Jobs (or serverless customization),
evaluation jobs on the checkpoints, and the diversity check through Bedrock runtime for a base model.

Training stages return a PendingJob the caller defers on (SageMakerTrigger, waits sized for multi-day jobs);
a retried stage re-attaches to its job by name, so a retry never pays twice.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, ClassVar

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest
from rftflow.backends.aws import sagemaker_jobs as jobs
from rftflow.backends.aws.backend import (
    METRICS,
    NOVA_2_LITE,
    SAGEMAKER_MODEL,
    AwsBackend,
    content_digest,
    converse_notes,
    now_iso,
    sft_converse_row,
)
from rftflow.backends.base import DIVERSITY, EVALUATE, Generation, PendingJob, SamplingPlan, StageContext
from rftflow.cycle.recipes import DiversityConfig, EvalConfig, RFTConfig, SFTConfig, build_config

log = logging.getLogger(__name__)

KIND = "sagemaker_training"


class SageMakerBackend(AwsBackend):
    """Stages as SageMaker jobs. Options: see rftflow.backends.aws.backend.AwsOptions (role_arn is required).

    Evaluation: an eval job (gen_qa recipe by default) runs the model on the eval prompts; its per-prompt
    outputs are scored here with the same reward handler as training, so pass@1 and the per-category
    breakdown are computed exactly as on the local backend. `evaluate` waits for that job in the task
    (minutes to an hour); callers that can defer use `start_evaluate` / `start_diversity` instead.
    """

    name: ClassVar[str] = "sagemaker"

    # ------------------------------------------------------------------ models

    def resolve_model(self, model: str, ctx: StageContext) -> str:
        """Nova 2 Lite by any of its names -> `nova-lite-2/prod`; s3:// checkpoints and model packages as they are."""
        m = model.strip()
        if m in NOVA_2_LITE:
            return SAGEMAKER_MODEL
        if m.startswith("s3://") or (m.startswith("arn:aws") and ":model-package/" in m):
            return m
        if jobs.is_open_weight_model(m):
            if self.options.flavour != "serverless":
                raise ValueError(f"model {model!r}: open-weight hub models train on SageMaker serverless "
                                 "customization; set the sagemaker backend's flavour to serverless (Variable "
                                 "rftflow_sagemaker_flavour)")
            return m
        raise ValueError(f"model {model!r}: the sagemaker backend trains Amazon Nova 2 Lite (nova-2-lite or another "
                         "of its names, an s3:// checkpoint of an earlier stage, a model package ARN) and, on the "
                         "serverless flavour, open-weight hub models by id (e.g. huggingface-reasoning-qwen3-8b); "
                         "'tiny' is the local backend's model")

    def is_open_weight(self, model: str) -> bool:
        """An open-weight hub model, or (on the serverless flavour) a model package one of its jobs registered:
        Nova's serverless checkpoints are s3:// escrow URIs, open-weight jobs register model packages."""
        m = model.strip()
        if jobs.is_open_weight_model(m):
            return True
        return self.options.flavour == "serverless" and m.startswith("arn:aws") and ":model-package/" in m

    def reward_response(self, model: str) -> str:
        return "http" if self.is_open_weight(self.resolve_model(model, None)) else "list"  # type: ignore[arg-type]

    def check_recipe(self, stage: str, model: str, overrides: dict[str, Any], reward_arn: str) -> None:
        """Render the stage's recipe as the stage will (the serverless one from the hub model for open-weight
        models); the eval recipe for Nova (open-weight eval jobs take no recipe)."""
        from rftflow.backends.aws.recipes import choose_sagemaker_recipe, render_sagemaker

        m = self.resolve_model(model, None)  # type: ignore[arg-type]
        open_weight = self.is_open_weight(m)
        if stage in ("sft", "rft"):
            overrides = dict(overrides)
            if open_weight:
                key = "serverless.base_model_name" if jobs.is_open_weight_model(m) and ":" not in m else \
                    "serverless.base_model_arn"
                overrides = {key: m, **overrides}
            name = choose_sagemaker_recipe(stage, overrides, self.options.flavour)
            render_sagemaker(name, overrides, job_name="preflight-1", model=m,
                             reward_lambda_arn=reward_arn if stage == "rft" else None,
                             local_fields=set((SFTConfig if stage == "sft" else RFTConfig).model_fields))
        elif stage == "eval" and not open_weight:
            _, recipe_overrides = self._eval_config(EvalConfig, overrides, {"max_new_tokens": 4096})
            name = str(recipe_overrides.get("recipe") or "eval_gen_qa")
            render_sagemaker(name, recipe_overrides, job_name="preflight-1", model=m,
                             reward_lambda_arn=reward_arn if name == "eval_rft" else None)

    def _open_weight_base(self, model: str) -> tuple[str, str | None]:
        """(base model hub-content ARN, source model package ARN or None) of an open-weight model."""
        client = self.aws.client("sagemaker")
        if ":model-package/" in model:
            base_arn, _ = jobs.model_package_base(client, model)
            return base_arn, model
        if ":hub-content/" in model:
            return model, None
        return jobs.describe_hub_model(client, model).arn, None

    # ------------------------------------------------------------------ training

    def train(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str | None,
              overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """Nova SFT (LoRA or full, `method` override) on demonstrations converted to the Converse format, or Nova
        RFT with the reward Lambda (both reward-Lambda recipe fields carry its ARN); open-weight hub models on
        serverless customization."""
        from rftflow.backends.aws.naming import stage_job_base
        from rftflow.backends.aws.recipes import choose_sagemaker_recipe, render_sagemaker

        stage = kind
        if stage == "rft" and reward is None:
            raise ValueError("rft: a reward is required")
        started_at = now_iso()
        overrides = dict(overrides or {})
        model = self.resolve_model(model_uri, ctx)
        open_weight = self.is_open_weight(model)
        if open_weight:  # the hub model the serverless job customizes comes from the cycle's model
            key = "serverless.base_model_name"
            base = model
            if ":hub-content/" in model or ":model-package/" in model:
                key, base = "serverless.base_model_arn", self._open_weight_base(model)[0]
            overrides = {key: base, **({"serverless.accept_eula": True} if key.endswith("_arn") else {}),
                         **overrides}
        recipe_name = choose_sagemaker_recipe(stage, overrides, self.options.flavour)
        reward_arn = self.reward_lambda(reward, response="http" if open_weight else "list") if reward else None
        local_fields = set((SFTConfig if stage == "sft" else RFTConfig).model_fields)

        def render(name: str) -> Any:
            return render_sagemaker(recipe_name, overrides, job_name=name, model=model,
                                    reward_lambda_arn=reward_arn, local_fields=local_fields)

        probe = render("probe-1")  # every recipe problem surfaces here, before anything is uploaded
        remote = self.remote_uri(ctx)
        data_dir = store.join(remote, "input", "train")
        data_file = store.join(data_dir, f"{stage}.jsonl")
        channels = {"train": data_dir + "/"}
        output_path = store.join(remote, "job-output")
        role = self.role_arn()
        base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
        serverless = probe.flavour == "serverless"
        plan = self._serverless_plan(probe, model, reward_arn, open_weight) if serverless else None

        def build(name: str) -> dict[str, Any]:
            recipe = render(name)
            tags = self._tags(ctx)
            if plan is not None:
                return jobs.serverless_request(recipe, plan, name=name, role_arn=role, channels=channels,
                                               output_path=output_path, tags=tags)
            return jobs.training_job_request(recipe, name=name, role_arn=role, region=self.region,
                                             recipe_prefix=self._recipe_dir(remote, name) + "/", channels=channels,
                                             output_path=output_path, tags=tags)

        def prepare(name: str) -> None:
            convert = sft_converse_row if stage == "sft" else None
            if open_weight:
                convert = jobs.open_weight_sft_row if stage == "sft" else jobs.open_weight_rft_row
            self.stage_records(data_uri, data_file, kind="sft" if stage == "sft" else "rft", convert=convert)
            if not serverless:
                store.write_text(store.join(self._recipe_dir(remote, name), jobs.RECIPE_FILE), render(name).yaml_text())

        submitted = jobs.find_or_create(self.aws.hook("sagemaker"), base, build, prepare=prepare)
        pending = PendingJob(KIND, submitted.name, details={
            "stage_kind": stage, "flavour": probe.flavour, "open_weight": open_weight, "recipe": recipe_name,
            "region": self.region,
            "remote_uri": remote, "output_path": output_path, "model_uri": model, "data_uri": data_uri,
            "staged_data_uri": data_file, "reward": reward, "reward_lambda_arn": reward_arn,
            "started_at": started_at, "instance_type": probe.job.instance_type,
            "instance_count": probe.instance_count, "max_runtime_hours": probe.job.max_runtime_hours,
            "created": submitted.created, "request_digest": submitted.digest, "overrides": overrides,
            "notes": probe.notes, "wait_timeout_s": self.wait_attempts(probe.job.max_runtime_hours)
            * self.options.waiter_delay_s,
        })
        self.save_pending(ctx, pending)
        if submitted.status == "Completed":  # a retry found the finished job: nothing to wait for
            return self.complete(ctx, pending, {"status": "success", "job_name": submitted.name})
        return pending

    @staticmethod
    def _recipe_dir(remote: str, name: str) -> str:
        return store.join(remote, "jobs", name, jobs.RECIPE_CHANNEL)

    @staticmethod
    def _tags(ctx: StageContext) -> dict[str, Any]:
        return {"rftflow:dag": ctx.dag_id, "rftflow:run": ctx.run_id, "rftflow:cycle": ctx.cycle,
                "rftflow:stage": ctx.stage}

    def _serverless_plan(self, recipe: Any, model: str, reward_arn: str | None, open_weight: bool = False) -> Any:
        """Everything a serverless request needs, looked up once as SageMaker Python SDK v3 does it: the hub
        model (ARN, gated or not, its recipes), the recipe's default hyperparameters, the EULA rule, the
        evaluator in the AI registry hub, and the model package group."""
        from rftflow.backends.aws.availability import region_problems

        section = recipe.body["serverless"]
        if model.startswith("s3://"):
            raise ValueError(f"serverless jobs start from a hub model, not an S3 checkpoint ({model}); run this "
                             "chain with flavour training_job, or start serverless RFT from the base model")
        from rftflow.backends.aws.availability import NOVA_2_LITE as NOVA_ROW
        from rftflow.backends.aws.availability import OPEN_WEIGHT_HUB

        problems = region_problems("sagemaker", self.region, flavour="serverless",
                                   model=OPEN_WEIGHT_HUB if open_weight else NOVA_ROW)
        if problems:
            raise ValueError("sagemaker backend (serverless): " + "; ".join(problems))
        client = self.aws.client("sagemaker")
        given_arn = section.get("base_model_arn") or None
        name = jobs.hub_model_name_from_arn(given_arn) if given_arn else section["base_model_name"]
        hub_name = given_arn.split(":hub-content/", 1)[1].split("/", 1)[0] if given_arn else jobs.PUBLIC_HUB
        hub_model = jobs.describe_hub_model(client, name, hub_name)
        accept_eula = jobs.eula_acceptance(name, hub_model.gated, bool(section.get("accept_eula")), bool(given_arn))
        hub_recipe = jobs.select_hub_recipe(hub_model, section["customization_technique"], section.get("peft"),
                                            section.get("sequence_length"))
        account = self.aws.client("sts").get_caller_identity()["Account"]
        specs = jobs.hub_hyperparameter_specs(self.aws.client("s3"), hub_recipe, account)
        hyper = jobs.serverless_hyperparameters(specs, recipe.body.get("hyperparameters") or {}, recipe.path)
        evaluator = section.get("evaluator_arn") or None
        if evaluator is None and section["customization_technique"] in ("RLVR", "RLAIF") and reward_arn:
            evaluator = jobs.register_evaluator(client, self.region, account, reward_arn)
        return jobs.ServerlessPlan(
            model_name=name, hub_name=hub_name, base_model_arn=given_arn or hub_model.arn,
            accept_eula=accept_eula, hyperparameters=hyper, model_package_group_arn=jobs.model_package_group_arn(
                client, section["model_package_group"]),
            evaluator_arn=evaluator,
            source_model_package_arn=model if ":model-package/" in model else None)

    # ------------------------------------------------------------------ evaluation and diversity

    def sampling_config(self, kind: str, overrides: dict[str, Any] | None) -> tuple[Any, list[str]]:
        """Our eval / diversity fields from the overrides (Nova writes long answers: 4,096 new tokens for an eval,
        1,024 for the diversity check by default); the eval job's recipe reads the rest."""
        if kind == EVALUATE:
            return self._eval_config(EvalConfig, overrides, {"max_new_tokens": 4096})[0], []
        return self._eval_config(DiversityConfig, overrides, {"max_new_tokens": 1024})[0], []

    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> Generation | PendingJob:
        """An eval job samples (the gen_qa recipe by default; a serverless custom-scorer job for open-weight
        models); for the diversity check on the base model, Bedrock runtime `converse`. The job's per-sample
        outputs are scored with the same reward handler as training (`generated`), so pass@1 and the
        breakdown are computed as on the local backend."""
        cfg = plan.config
        model = self.resolve_model(model_uri, ctx)
        k = 1 if plan.kind == EVALUATE else cfg.k
        if self.is_open_weight(model):
            inference = ({"max_new_tokens": cfg.max_new_tokens, "temperature": 0.0} if plan.kind == EVALUATE else
                         {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p})
            return self._submit_serverless_eval(ctx, model, reward, plan, k, inference)
        if plan.kind == DIVERSITY and not model.startswith("s3://"):
            model_id = self.converse_model_id(model_uri)
            gen = self.sample_passes(plan, functools.partial(self._converse, model_id), model_id)
            gen.notes = converse_notes(type(cfg), plan.overrides)
            return gen
        recipe_overrides = self._eval_config(type(cfg), plan.overrides, {})[1]
        if plan.kind == DIVERSITY:
            recipe_overrides.update({"inference.temperature": cfg.temperature, "inference.top_p": cfg.top_p,
                                     "inference.max_new_tokens": cfg.max_new_tokens})
        return self._submit_eval(ctx, model, reward, plan, k, recipe_overrides)

    @staticmethod
    def _eval_config(model: Any, overrides: dict[str, Any] | None, defaults: dict[str, Any]) -> tuple[Any, dict]:
        """(our eval/diversity config, the eval recipe's overrides) from one overrides dict."""
        from rftflow.backends.aws.recipes import ALIASES, SELECTOR_KEYS

        config, recipe = dict(defaults), {}
        for key, value in (overrides or {}).items():
            if key.split(".", 1)[0] in model.model_fields:
                config[key] = value
            if key not in model.model_fields or key in ALIASES["eval"] or key in SELECTOR_KEYS:
                recipe[key] = value
        return build_config(model, config, "overrides"), recipe

    def _submit_eval(self, ctx: StageContext, model: str, reward: str, plan: SamplingPlan, k: int,
                     recipe_overrides: dict[str, Any]) -> Generation | PendingJob:
        from rftflow.backends.aws import rollouts
        from rftflow.backends.aws.naming import stage_job_base
        from rftflow.backends.aws.recipes import render_sagemaker

        records = plan.records
        recipe_name = str(recipe_overrides.get("recipe") or "eval_gen_qa")
        if plan.kind == DIVERSITY and recipe_name != "eval_gen_qa":
            raise ValueError("the diversity check needs per-sample outputs: use the eval_gen_qa recipe")
        reward_arn = self.reward_lambda(reward) if recipe_name == "eval_rft" else None

        def render(name: str) -> Any:
            return render_sagemaker(recipe_name, recipe_overrides, job_name=name, model=model,
                                    reward_lambda_arn=reward_arn)

        probe = render("probe-1")
        remote = self.remote_uri(ctx)
        # rft_eval reads RFT rows (messages + reference_answer, SageMaker docs "RFT evaluation"); gen_qa its own
        # {query, response, system, metadata} rows
        rft_eval = probe.body.get("evaluation", {}).get("task") == "rft_eval"
        data_name = "rft_eval" if rft_eval else "gen_qa"
        data_dir = store.join(remote, "input", data_name)
        output_path = store.join(remote, "job-output")
        role = self.role_arn()

        def build(name: str) -> dict[str, Any]:
            recipe = render(name)
            return jobs.training_job_request(
                recipe, name=name, role_arn=role, region=self.region,
                recipe_prefix=self._recipe_dir(remote, name) + "/", channels={"train": data_dir + "/"},
                output_path=output_path,
                tags={**self._tags(ctx),
                      "rftflow:data": content_digest("\n".join(r.id for r in records) + f"|k={k}")})

        def prepare(name: str) -> None:
            rows = rollouts.rft_eval_rows(records) if rft_eval else rollouts.gen_qa_rows(records, k)
            store.write_jsonl(store.join(data_dir, f"{data_name}.jsonl"), rows)
            store.write_text(store.join(self._recipe_dir(remote, name), jobs.RECIPE_FILE), render(name).yaml_text())

        base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
        submitted = jobs.find_or_create(self.aws.hook("sagemaker"), base, build, prepare=prepare)
        notes = list(probe.notes)
        if plan.kind == EVALUATE and plan.config.pass_at_k:
            notes.append("pass_at_k: an eval job answers each prompt once (greedy); pass@k is not measured")
        pending = PendingJob(KIND, submitted.name, details={
            "flavour": "training_job", "recipe": recipe_name, "region": self.region,
            "remote_uri": remote, "output_path": output_path, "model_uri": model, "reward_lambda_arn": reward_arn,
            "instance_type": probe.job.instance_type, "instance_count": probe.instance_count,
            "max_runtime_hours": probe.job.max_runtime_hours, "created": submitted.created,
            "request_digest": submitted.digest, "k": k, "job_notes": notes,
            "wait_timeout_s": self.wait_attempts(probe.job.max_runtime_hours) * self.options.waiter_delay_s,
        })
        return self._submitted(ctx, pending, plan, submitted.status)

    def _submitted(self, ctx: StageContext, pending: PendingJob, plan: SamplingPlan,
                   status: str) -> Generation | PendingJob:
        """The pending sampling job, or its outputs when a retry found it finished (nothing to wait for)."""
        if status == "Completed":
            return self.generated(ctx, pending, plan, {"status": "success", "job_name": pending.job_name})
        return pending

    def _submit_serverless_eval(self, ctx: StageContext, model: str, reward: str, plan: SamplingPlan, k: int,
                                inference: dict[str, Any]) -> Generation | PendingJob:
        """A serverless custom-scorer evaluation job on an open-weight model (the base, or a model package on it):
        each prompt k times as gen_qa rows, the reward Lambda registered as the evaluator; its per-sample
        inference_output.jsonl is then scored here with the stage's reward handler, as for Nova eval jobs."""
        from rftflow.backends.aws import rollouts
        from rftflow.backends.aws.naming import stage_job_base

        records = plan.records
        client = self.aws.client("sagemaker")
        base_arn, package = self._open_weight_base(model)
        account = self.aws.client("sts").get_caller_identity()["Account"]
        evaluator = jobs.register_evaluator(client, self.region, account, self.reward_lambda(reward, response="http"))
        group = jobs.model_package_group_arn(client, "rftflow") if package else None
        remote = self.remote_uri(ctx)
        data_dir = store.join(remote, "input", "gen_qa")
        output_path = store.join(remote, "job-output")
        role = self.role_arn()
        hours = 24.0
        data_tag = content_digest("\n".join(r.id for r in records) + f"|k={k}")

        def build(name: str) -> dict[str, Any]:
            return jobs.serverless_eval_request(
                name=name, role_arn=role, base_model_arn=base_arn, evaluator_arn=evaluator,
                channels={"train": data_dir + "/"}, output_path=output_path, hyperparameters=inference,
                max_runtime_hours=hours, tags={**self._tags(ctx), "rftflow:data": data_tag},
                source_model_package_arn=package, model_package_group_arn=group)

        def prepare(name: str) -> None:
            store.write_jsonl(store.join(data_dir, "gen_qa.jsonl"), rollouts.gen_qa_rows(records, k))

        base = stage_job_base(ctx.uri, ctx.dag_id, ctx.stage, ctx.cycle)
        submitted = jobs.find_or_create(self.aws.hook("sagemaker"), base, build, prepare=prepare)
        pending = PendingJob(KIND, submitted.name, details={
            "flavour": "serverless", "open_weight": True,
            "recipe": "serverless_custom_scorer", "region": self.region, "remote_uri": remote,
            "output_path": output_path, "model_uri": model, "base_model_arn": base_arn,
            "evaluator_arn": evaluator, "max_runtime_hours": hours,
            "created": submitted.created, "request_digest": submitted.digest, "k": k, "job_notes": [],
            "wait_timeout_s": self.wait_attempts(hours) * self.options.waiter_delay_s,
        })
        return self._submitted(ctx, pending, plan, submitted.status)

    def settle(self, ctx: StageContext, pending: PendingJob) -> StageManifest:
        return self._settle(ctx, pending)

    def _settle(self, ctx: StageContext, result: StageManifest | PendingJob) -> StageManifest:
        """Wait in the task for a job (describe, then sleep) and complete the stage."""
        if isinstance(result, StageManifest):
            return result
        client = self.aws.client("sagemaker")
        deadline = time.time() + float(result.details.get("wait_timeout_s") or 86400)
        while True:
            status = client.describe_training_job(TrainingJobName=result.job_name)["TrainingJobStatus"]
            if status not in jobs.ACTIVE:
                break
            if time.time() > deadline:
                return self.complete(ctx, result, {"status": "timeout", "message": "in-task wait ran out"})
            time.sleep(self.options.eval_poll_s)
        event = {"status": "success" if status == "Completed" else status.lower(), "job_name": result.job_name}
        return self.complete(ctx, result, event)

    # ------------------------------------------------------------------ deferral

    def trigger_for(self, pending: PendingJob) -> Any:
        """The provider's SageMakerTrigger, waiting as long as the job may run plus queueing slack."""
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

        return SageMakerTrigger(
            job_name=pending.job_name, job_type="training", waiter_delay=self.options.waiter_delay_s,
            waiter_max_attempts=self.wait_attempts(float(pending.details.get("max_runtime_hours", 24))),
            aws_conn_id=self.options.aws_conn_id, region_name=pending.details.get("region") or self.options.region_name,
        )

    def stop(self, pending: PendingJob) -> None:
        """Stop the training job when the task is killed (a finished job is left alone)."""
        jobs.stop_job(self.aws.client("sagemaker"), pending.job_name)

    def _ended_job(self, pending: PendingJob, event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the job's billing record, its description) once it has completed; the reason why it did not, raised."""
        client = self.aws.client("sagemaker")
        region = pending.details.get("region") or self.region
        if event.get("status") != "success":
            detail = ""
            running = False
            try:
                found = client.describe_training_job(TrainingJobName=pending.job_name)
                detail = f"(job status {found['TrainingJobStatus']}: {found.get('FailureReason', '')})"
                running = found["TrainingJobStatus"] in jobs.ACTIVE
            except Exception:  # the description only enriches the message
                pass
            raise self.failed_event(pending, event, f"{detail} logs: {jobs.log_url(region, pending.job_name)}",
                                    still_running=running)
        description = client.describe_training_job(TrainingJobName=pending.job_name)
        if description["TrainingJobStatus"] != "Completed":
            raise RuntimeError(f"{pending.job_name}: expected Completed; got {description['TrainingJobStatus']} "
                               f"({description.get('FailureReason', '')}); logs: {jobs.log_url(region, pending.job_name)}")
        return self._job_record(pending, description, region), description

    def complete_training(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        """After the trigger fires: check the job, follow its checkpoint, write metrics and the manifest."""
        record, description = self._ended_job(pending, event)
        if pending.details.get("open_weight"):
            return self._complete_training(ctx, pending, record, package=description.get("OutputModelPackageArn") or "")
        return self._complete_training(ctx, pending, record)

    def _job_record(self, pending: PendingJob, description: dict[str, Any], region: str) -> dict[str, Any]:
        from rftflow.backends.aws.pricing import serverless_job_cost, training_job_cost

        details = pending.details
        seconds = jobs.billable_seconds(description)
        if details.get("flavour") == "serverless":
            cost = serverless_job_cost(int(description.get("BillableTokenCount") or 0), seconds, self.prices)
        else:
            resources = description.get("ResourceConfig", {})
            cost = training_job_cost(resources.get("InstanceType", details.get("instance_type")),
                                     resources.get("InstanceCount", details.get("instance_count", 1)), seconds,
                                     self.prices)
        return {"service": "sagemaker", "kind": details.get("flavour", "training_job"), "name": pending.job_name,
                "arn": description.get("TrainingJobArn"), "status": description["TrainingJobStatus"],
                "instance_type": details.get("instance_type"), "instance_count": details.get("instance_count"),
                "recipe": details.get("recipe"), "created_by_this_run": details.get("created"),
                "request_digest": details.get("request_digest"), "log_url": jobs.log_url(region, pending.job_name),
                "output_uri": jobs.job_output_prefix(details["output_path"], pending.job_name), **cost}

    def _complete_training(self, ctx: StageContext, pending: PendingJob, record: dict[str, Any],
                           package: str | None = None) -> StageManifest:
        """`package`: an open-weight job's registered model package (its checkpoint); Nova jobs leave a manifest."""
        details = pending.details
        if package is not None:
            if not package:
                raise RuntimeError(f"{pending.job_name}: completed without an OutputModelPackageArn (an open-weight "
                                   "serverless job registers its model in the model package group)")
            checkpoint, where = package, "DescribeTrainingJob.OutputModelPackageArn"
        else:
            checkpoint, where = jobs.follow_checkpoint(details["output_path"], pending.job_name)
        rows = jobs.read_training_metrics(self.aws.hook("sagemaker"), pending.job_name)
        metrics_uri = store.join(ctx.uri, METRICS)
        store.write_jsonl(metrics_uri, rows)
        metrics = {**self.training_metrics_summary(rows), "billable_seconds": record["billable_seconds"],
                   "estimated_cost_usd": record["estimated_cost_usd"]}
        return self.finish(
            ctx, details["started_at"], checkpoint_uri=checkpoint, metrics=metrics, jobs=[record],
            inputs={"model_uri": details["model_uri"], "data_uri": details["data_uri"], "reward": details.get("reward"),
                    "reward_lambda_arn": details.get("reward_lambda_arn"), "recipe": details["recipe"],
                    "overrides": details.get("overrides", {}), "notes": details.get("notes", [])},
            outputs={"metrics_uri": metrics_uri, "checkpoint_manifest": where, "job_output_uri": record["output_uri"],
                     "recipe_uri": store.join(self._recipe_dir(details["remote_uri"], pending.job_name),
                                              jobs.RECIPE_FILE),
                     "log_url": record["log_url"]},
        )

    def generated(self, ctx: StageContext, pending: PendingJob, plan: SamplingPlan,
                  event: dict[str, Any]) -> Generation:
        """The eval job's per-sample outputs: completions to score here, or, from the rft_eval recipe, the reward
        Lambda's own per-sample scores (it scored each answer inside the job)."""
        from rftflow.backends.aws import rollouts

        record, _ = self._ended_job(pending, event)
        d = pending.details
        output = jobs.read_eval_output(d["output_path"], pending.job_name)
        done = {"jobs": [record], "inputs": {"recipe": d.get("recipe")}, "notes": d.get("job_notes", []),
                "outputs": {"job_output_uri": record["output_uri"]}}
        if plan.kind == DIVERSITY:
            return Generation({"sampled": rollouts.completions_from_inference(output.inference_rows, plan.records,
                                                                              int(d["k"]))}, **done)
        aws_summary = jobs.summarize_results(output.results)
        done["outputs"]["results_file"] = output.results_file
        if output.sample_scores and d.get("recipe") == "eval_rft":
            rows = jobs.rows_from_scores(plan.records, output.sample_scores, plan.config.pass_threshold)
            return Generation(rows=rows, metrics={
                "aws_results": aws_summary["aws_results"],
                "pass_at_1_source": "per-sample aggregate_reward_score from rft_eval (the reward Lambda)"}, **done)
        if output.inference_rows:
            return Generation({"greedy": rollouts.completions_from_inference(output.inference_rows, plan.records, 1)},
                              metrics={"aws_results": aws_summary["aws_results"]}, **done)
        if aws_summary.get("pass_at_1") is None:
            log.warning("%s: the eval output has no per-prompt rows and no 0-1 reward score; pass@1 unknown",
                        pending.job_name)
        return Generation(metrics=aws_summary, **done)
