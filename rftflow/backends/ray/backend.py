"""The `ray` backend: the local backend's TRL stages as jobs on a Ray cluster.

SFT and GRPO run under Ray Train (`TorchTrainer` over the same rftflow.backends.local.training code, `num_workers` DDP
workers); eval and diversity sampling fan out over Ray tasks; scoring, the manifests and the decisions are the
local backend's own code, run when the job has ended. Every stage submits one Ray job through the Jobs REST API
(rftflow.backends.ray.client) and defers on `RayJobTrigger`: no worker slot is held while the cluster works.

- Submission ids are deterministic ({stage, cycle, digest of the job}): a retried task finds its job on the
  cluster and adopts it (pending, running or finished) instead of starting a second; only a job that failed or
  was stopped is followed by a new attempt (`-2`, `-3`, ...), which resumes from the checkpoints rank 0
  uploaded.
- Inputs and outputs move through the artifact root: the job reads the model, data and reward file by URI and
  writes the stage folder. Local input files (a project path) are shipped into the stage folder first when the
  artifact root is remote; a file:// artifact root means the cluster sees that path (set `shared_disk` to say
  the same of other local paths).
- Settings: the `ray_default` Airflow connection (host/port/schema: the dashboard URL; password: a token;
  extra {"headers": {...}, "runtime_env": {...}}), else env RFTFLOW_RAY_<NAME> / Variables rftflow_ray_<name>
  (address, token, ...), else http://127.0.0.1:8265. Scaling per stage: include/recipes/ray/{stage}.yaml's
  `ray:` section (num_workers, cpus_per_worker, use_gpu, ...), overridable per run in recipe_overrides.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest
from rftflow.backends.base import EVALUATE, Backend, Generation, PendingJob, SamplingPlan, StageContext
from rftflow.backends.local.backend import LocalBackend, _digest, sampling_engine
from rftflow.backends.ray import job as ray_job
from rftflow.backends.ray.client import LIVE, RayApiError, RayJobs, plain
from rftflow.cycle.recipes import (
    RECIPES_DIR,
    STAGE_MODELS,
    RecipeError,
    RFTConfig,
    SFTConfig,
    _override_paths,
    build_config,
    deep_merge,
    format_validation_error,
    load_yaml,
    yaml_key_lines,
)
from rftflow.options import resolve

log = logging.getLogger(__name__)

RAY_JOB = "ray_job"  # PendingJob.kind
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Settings the job needs to reach the artifact root, forwarded from the Airflow side (no secrets among them:
# credentials come from the cluster's own identity, e.g. IRSA on EKS, or the names listed in `job_env`).
FORWARDED_ENV = ("RFTFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "HF_HUB_OFFLINE")


class RayScaling(BaseModel):
    """The `ray:` section of a Ray recipe: how many workers, of what, run the stage."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(2, ge=1, le=4096, description="Ray Train workers (training) or sampling tasks.")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, gt=0, le=16)
    threads_per_worker: int | None = Field(None, ge=1, le=1024, description="torch threads (default: the CPUs)")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp everywhere; fsdp and deepspeed need use_gpu (TRL/accelerate settings).")
    deepspeed_config: dict[str, Any] | None = Field(None, description="A DeepSpeed JSON config, inline.")

    @property
    def threads(self) -> int:
        """torch threads per worker: as set, else the CPUs it reserves (at least one)."""
        return self.threads_per_worker or max(int(self.cpus_per_worker), 1)


class RayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conn_id: str | None = Field("ray_default", description="Airflow connection with the cluster's address.")
    address: str | None = Field(None, description="Dashboard URL, e.g. http://raycluster-head-svc:8265.")
    token: str | None = Field(None, description="Bearer token (RAY_AUTH_MODE=token clusters, Anyscale).")
    headers: dict[str, str] = Field(default_factory=dict)
    runtime_env: dict[str, Any] = Field(default_factory=dict, description="Ray runtime_env for every job "
                                        "(pip, container image, env_vars, ...).")
    job_env: list[str] = Field(default_factory=list, description="More env var names forwarded to the job.")
    python: str = Field("python", description="The interpreter the job's entrypoint runs on the cluster.")
    shared_disk: bool = Field(False, description="The cluster sees this machine's paths: local inputs are read "
                                                 "where they are instead of shipped through the artifact root.")
    poll_s: float = Field(5.0, gt=0, le=3600)
    unreachable_s: float = Field(600.0, gt=0, description="Give up the wait after the cluster was unreachable "
                                                          "this long.")
    reward_workers: int = Field(0, ge=0, le=64)
    reward_timeout_s: float = Field(60.0, gt=0)
    work_dir: str | None = None
    torch_threads: int = Field(2, ge=1, le=1024, description="Threads of the local children (tiny-model build, "
                                                             "drift) on the Airflow side.")


def resolve_ray_options(given: dict[str, Any]) -> RayOptions:
    """Options given in code, else env RFTFLOW_RAY_<NAME> / Variable rftflow_ray_<name>, else the connection."""
    options = resolve(RayOptions, given, ("ray",), "ray backend")
    if options.address is None and options.conn_id and options.conn_id != "none":
        _from_connection(options)
    if options.address is None:
        options.address = DEFAULT_ADDRESS
    return options


def _from_connection(options: RayOptions) -> None:
    import sys

    if "airflow.sdk" not in sys.modules:
        return
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(options.conn_id)
    except Exception:  # no such connection: the default address applies
        return
    if conn.host:
        scheme = conn.schema or "http"
        host = conn.host if "://" in conn.host else f"{scheme}://{conn.host}"
        options.address = f"{host}:{conn.port}" if conn.port else host
    options.token = options.token or conn.password or None
    extra = conn.extra_dejson or {}
    options.headers = {**extra.get("headers", {}), **options.headers}
    options.runtime_env = {**extra.get("runtime_env", {}), **options.runtime_env}


class RayBackend(LocalBackend):
    """Stages as Ray jobs; the local backend's sampling, scoring and manifests."""

    name: ClassVar[str] = "ray"

    def __init__(self, **options: Any):
        self.options = resolve_ray_options(options)
        super().__init__(torch_threads=self.options.torch_threads, work_dir=self.options.work_dir,
                         reward_workers=self.options.reward_workers,
                         reward_timeout_s=self.options.reward_timeout_s, detach_training=True)
        self._scaling: dict[str, RayScaling] = {}

    def jobs(self) -> RayJobs:
        return RayJobs(self.options.address or DEFAULT_ADDRESS, token=self.options.token,
                       headers=self.options.headers)

    # ------------------------------------------------------------------------------ recipes

    def _recipe(self, stage: str, overrides: dict[str, Any] | None) -> Any:
        """include/recipes/ray/{stage}.yaml: the local recipe's fields plus a `ray:` scaling section."""
        cfg, scaling = load_ray_recipe(stage, overrides)
        self._scaling[stage] = scaling
        return cfg

    def scaling(self, stage: str, overrides: dict[str, Any] | None = None) -> RayScaling:
        return self._scaling.get(stage) or load_ray_recipe(stage, overrides)[1]

    def preflight(self, *, model: str, reward: str, overrides: dict[str, dict[str, Any]],
                  stages: tuple[str, ...]) -> list[str]:
        """Every stage's recipe with its overrides (diversity always runs), the reward, and the cluster."""
        from rftflow.rewards.contract import RewardLoadError
        from rftflow.rewards.runner import load_reward

        problems = []
        for stage in dict.fromkeys((*stages, "diversity")):
            try:
                load_ray_recipe(stage, overrides.get(stage))
            except ValueError as err:  # RecipeError included
                problems.append(f"recipe_overrides.{stage} does not fit the ray {stage} recipe: {err}")
        try:
            load_reward(reward)
        except RewardLoadError as err:
            problems.append(f"reward: {err}")
        try:
            version = self.jobs().version()
            log.info("Ray cluster %s: Ray %s", self.options.address, version.get("ray_version"))
        except RayApiError as err:
            problems.append(f"{err} (set the ray_default connection or RFTFLOW_RAY_ADDRESS)")
        return problems

    # ------------------------------------------------------------------------------ inputs

    def _ship(self, ctx: StageContext, uri: str, name: str) -> str:
        """A URI of `uri` the cluster can read: remote URIs as they are; a local file or folder as an absolute
        file:// URI when the cluster shares this disk (a file:// artifact root, or shared_disk), else a copy
        under the stage folder on the (remote) artifact root."""
        local = store.local_path(uri)
        if local is None:
            return uri
        path = Path(local).resolve()
        if self.options.shared_disk or store.local_path(ctx.artifact_root) is not None:
            return path.as_uri()
        target = store.join(ctx.uri, "inputs", name)
        if path.is_dir():
            store.put_dir(str(path), target)
        else:
            store.put_file(str(path), target)
        return target

    def _reward_params(self, ctx: StageContext, reward: str) -> dict[str, Any]:
        """A built-in reward travels by name; a handler file through the artifact root."""
        spec = self.reward_function(reward)  # a bad spec fails here, before anything is submitted
        from rftflow.rewards.runner import builtin_dir

        if Path(spec.path).resolve().is_relative_to(builtin_dir().resolve()):
            return {"reward_spec": reward}
        handler = getattr(spec, "handler", None)
        return {"reward_uri": self._ship(ctx, spec.path, Path(spec.path).name),
                "reward_handler": handler if handler and handler != "lambda_handler" else None}

    # ------------------------------------------------------------------------------ jobs

    def _job_env(self) -> dict[str, str]:
        import os

        names = (*FORWARDED_ENV, *self.options.job_env)
        return {name: os.environ[name] for name in names if os.environ.get(name)}

    def _submit(self, ctx: StageContext, kind: str, digest: str, build: Callable[[], dict[str, Any]],
                scaling: RayScaling) -> str:
        """Adopt this stage's job when the cluster has it (not failed or stopped), else submit the next attempt
        with the spec `build()` makes (inputs are shipped only then, not again on every adoption)."""
        jobs = self.jobs()
        base = f"rftflow-{ctx.stage}-c{ctx.cycle}-{_digest(ctx.uri + '|' + kind + '|' + digest)[:12]}"
        attempt = 1
        while True:
            submission = base if attempt == 1 else f"{base}-{attempt}"
            info = jobs.info(submission)
            if info is not None and (info["status"] in LIVE or info["status"] == "SUCCEEDED"):
                log.info("%s: adopting Ray job %s (%s) instead of submitting another", ctx.stage, submission,
                         info["status"])
                return submission
            if info is not None:  # failed or stopped: a new attempt resumes from its uploaded checkpoints
                log.info("%s: Ray job %s ended %s; submitting attempt %d", ctx.stage, submission, info["status"],
                         attempt + 1)
                attempt += 1
                continue
            spec = {**build(), "name": submission, "stage_uri": ctx.uri, "job_digest": digest}
            uri = ray_job.spec_uri(ctx.uri, kind)
            store.write_json(uri, spec)
            runtime_env = json.loads(json.dumps(self.options.runtime_env))
            runtime_env["env_vars"] = {**self._job_env(), **runtime_env.get("env_vars", {})}
            try:
                # --parent $$: the entrypoint shell's pid, so a driver orphaned before it starts exits at once
                jobs.submit(submission, f"{self.options.python} -m rftflow.backends.ray.job {shlex.quote(uri)} "
                                        "--parent $$",
                            runtime_env=runtime_env,
                            metadata={"rftflow_stage": ctx.stage, "rftflow_run_id": ctx.run_id[:200],
                                      "rftflow_cycle": str(ctx.cycle), "rftflow_kind": kind},
                            entrypoint_num_gpus=0)
            except RayApiError:
                if jobs.info(submission) is not None:  # another attempt of this task submitted it first
                    return submission
                raise
            log.info("%s: submitted Ray job %s to %s (%s)", ctx.stage, submission, self.options.address,
                     f"{scaling.num_workers} worker(s)")
            return submission

    def _pending(self, submission: str, **details: Any) -> PendingJob:
        timeout = float(details["timeout_s"])
        return PendingJob(RAY_JOB, submission, details={
            **details, "address": self.options.address, "deadline": time.time() + timeout,
            # the deferral's own limit: a backstop past the stage's timeout, which the trigger enforces
            "wait_timeout_s": timeout + 600})

    # ------------------------------------------------------------------------------ training

    def _train(self, kind: str, ctx: StageContext, model_uri: str, data_uri: str, params: dict[str, Any],
               cfg: SFTConfig | RFTConfig, inputs: dict[str, Any]) -> StageManifest | PendingJob:
        started = time.time()
        stage = "sft" if kind == "sft" else "rft"
        scaling = self.scaling(stage)
        if scaling.strategy != "ddp" and not scaling.use_gpu:
            raise ValueError(f"recipe ray.strategy={scaling.strategy} needs GPUs (ray.use_gpu: true); on CPUs "
                             "only ddp runs")
        params = dict(params)
        if "reward_spec" in params:
            params.update(self._reward_params(ctx, params.pop("reward_spec")))
        digest = _digest(json.dumps({"kind": kind, "model_uri": model_uri, "data_uri": data_uri,
                                     "cfg": cfg.model_dump(), "params": params,
                                     "scaling": scaling.model_dump()}, sort_keys=True, default=str))
        submission = self._submit(ctx, kind, digest, lambda: {
            "kind": kind, "model_uri": self._ship(ctx, model_uri, "base_model"),
            "data_uri": self._ship(ctx, data_uri, Path(str(data_uri)).name), "cfg": cfg.model_dump(),
            "params": {**params, "trainer_args": strategy_args(scaling)}, "resume": True,
            "scaling": scaling.model_dump(), "threads_per_worker": scaling.threads}, scaling)
        return self.save_pending(ctx, self._pending(submission, stage_kind=kind, started=started,
                                                     cfg=cfg.model_dump(), inputs=inputs, timeout_s=cfg.timeout_s,
                                                     job_digest=digest))

    # ------------------------------------------------------------------------------ eval and diversity

    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> PendingJob:
        """One Ray job samples the plan's passes over Ray tasks (the recipe's `ray:` workers); `generated` reads
        its completions once it has ended."""
        scaling = self.scaling("eval" if plan.kind == EVALUATE else "diversity")
        engine = sampling_engine(plan.config)
        prompts_uri = store.join(ctx.uri, "work", "prompts.jsonl")
        job = {"kind": "generate", "prompts_uri": prompts_uri, "passes": plan.passes,
               "out_uri": store.join(ctx.uri, "work", "completions.jsonl"),
               "workers": scaling.num_workers, "cpus_per_worker": scaling.cpus_per_worker,
               "gpus_per_worker": scaling.gpus_per_worker if scaling.use_gpu else 0,
               "threads_per_worker": scaling.threads,
               # tasks sharing a GPU share its memory: each vLLM engine takes its share of the recipe's fraction
               "engine": {**engine, "vllm_gpu_memory_utilization": engine["vllm_gpu_memory_utilization"]
                          * min(scaling.gpus_per_worker, 1.0)}}
        digest = _digest(json.dumps({**job, "model_uri": model_uri, "prompts": plan.record_ids()},
                                    sort_keys=True, default=str))

        def build() -> dict[str, Any]:
            store.write_jsonl(prompts_uri, [{"id": r.id, "messages": r.prompt_messages()} for r in plan.records])
            return {**job, "model_uri": self._ship(ctx, model_uri, "model")}

        submission = self._submit(ctx, "generate", digest, build, scaling)
        return self._pending(submission, job_digest=digest, timeout_s=plan.config.timeout_s)

    # ------------------------------------------------------------------------------ waiting and completing

    load_pending = Backend.load_pending  # with the stage on the artifact root, not the local trainer's folder

    def trigger_for(self, pending: PendingJob) -> Any:
        from rftflow.orchestration.ray_trigger import RayJobTrigger

        return RayJobTrigger(submission_id=pending.job_name, deadline=float(pending.details["deadline"]),
                             options=self.trigger_options(), poll_s=self.options.poll_s,
                             unreachable_s=self.options.unreachable_s)

    def trigger_options(self) -> dict[str, Any]:
        """What the trigger needs to find the cluster; secrets (token, headers) it re-reads where it runs."""
        return {"address": self.options.address, "conn_id": self.options.conn_id}

    def stop(self, pending: PendingJob) -> None:
        if pending.kind != RAY_JOB:
            return
        try:
            stopped = self.jobs().stop(pending.job_name)
            log.info("Ray job %s: %s", pending.job_name, "stop requested" if stopped else "had already ended")
        except RayApiError as err:
            log.warning("Ray job %s could not be stopped: %s", pending.job_name, err)

    def _result(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any], job_kind: str,
                log_name: str) -> dict[str, Any]:
        """What the ended job wrote (its result.json), or the error that tells why it did not succeed."""
        d = pending.details
        status = event.get("status")
        result_at = ray_job.result_uri(ctx.uri, job_kind)
        done = store.read_json(result_at) if store.exists(result_at) else None
        if done and done.get("job_digest") not in (None, d.get("job_digest")):
            done = None  # an earlier job's result in this folder, not this one's
        if status != "SUCCEEDED":
            error = (done or {}).get("error") or {}
            said = f"\nthe job's error: {error.get('type')}: {error.get('message')}" if error else ""
            raise RuntimeError(
                f"{ctx.stage}: Ray job {pending.job_name} on {d.get('address')} ended {status}: "
                f"{plain(event.get('message') or 'no message').strip().splitlines()[0]}{said}"
                + (f"\nits last log lines:\n{event['log_tail']}" if event.get("log_tail") else ""))
        if not done or not done.get("ok"):
            error = (done or {}).get("error") or {"message": "it wrote no result"}
            raise RuntimeError(f"{ctx.stage}: Ray job {pending.job_name} succeeded but {error.get('message')}")
        self._keep_log(ctx, pending.job_name, log_name)
        return done["result"]

    def complete_training(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        d = pending.details
        kind = d["stage_kind"]
        result = self._result(ctx, pending, event, kind, f"{kind}.log")
        local_dir, _ = self._stage_dir(ctx)
        if store.local_path(ctx.uri) is None:  # the GRPO reward trend is read from the metrics here
            store.get_file(store.join(ctx.uri, "metrics.jsonl"), str(local_dir / "metrics.jsonl"))
        cfg = (SFTConfig if kind == "sft" else RFTConfig).model_validate(d["cfg"])
        return self._finish_training(kind, ctx, local_dir, None, float(d["started"]), result, cfg, d["inputs"])

    def generated(self, ctx: StageContext, pending: PendingJob, plan: SamplingPlan,
                  event: dict[str, Any]) -> Generation:
        result = self._result(ctx, pending, event, "generate", f"{plan.kind}.log")
        lines = store.read_jsonl(store.join(ctx.uri, "work", "completions.jsonl"))
        if len(lines) != len(plan.records):
            raise RuntimeError(f"{ctx.stage}: Ray job {pending.job_name} wrote {len(lines)} completions for "
                               f"{len(plan.records)} prompts")
        return Generation({p["name"]: [line[p["name"]] for line in lines] for p in plan.passes},
                          timings={**result.get("timings", {}), "job_seconds": result.get("job_seconds")})

    def _keep_log(self, ctx: StageContext, submission: str, name: str) -> None:
        """The job's log into the stage folder (logs/), where the report links it."""
        try:
            text = self.jobs().logs(submission)
        except RayApiError as err:
            log.info("Ray job %s: log not kept (%s)", submission, err)
            return
        store.write_text(store.join(ctx.uri, "logs", name), text)


def load_ray_recipe(stage: str, overrides: dict[str, Any] | None) -> tuple[Any, RayScaling]:
    """(the stage's typed recipe, its scaling): the local recipe (include/recipes/local/{stage}.yaml), then
    include/recipes/ray/{stage}.yaml (its `ray:` section, and any field it sets again), then the run's
    overrides; a bad field is a RecipeError naming the file, line and field."""
    stage_key = "eval" if stage == "evaluate" else stage
    local, path = RECIPES_DIR / "local" / f"{stage_key}.yaml", RECIPES_DIR / "ray" / f"{stage_key}.yaml"
    data = deep_merge(load_yaml(local) if local.exists() else {}, load_yaml(path) if path.exists() else {})
    merged = deep_merge(data, overrides or {})
    # A bad field is reported against the ray file (where a user changes things; the local one is tested).
    lines = yaml_key_lines(path) if path.exists() else {}
    try:
        scaling = RayScaling.model_validate(merged.pop("ray", None) or {})
    except ValidationError as err:
        raise RecipeError(format_validation_error(f"{path}: ray", err, {
            k[1:]: v for k, v in lines.items() if k[:1] == ("ray",)})) from None
    cfg = build_config(STAGE_MODELS[stage_key], merged, str(path), lines,
                       _override_paths({k: v for k, v in (overrides or {}).items() if k != "ray"}))
    return cfg, scaling


def strategy_args(scaling: RayScaling) -> dict[str, Any]:
    """What the recipe's `ray.strategy` adds to TRL's training arguments on every worker (ddp: nothing, the
    Trainer wraps the model in DDP over Ray Train's process group by itself)."""
    if scaling.strategy == "fsdp":
        return {"fsdp": "full_shard auto_wrap",
                "fsdp_config": {"use_orig_params": True, "sync_module_states": True}}
    if scaling.strategy == "deepspeed":
        return {"deepspeed": scaling.deepspeed_config or {
            "zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}}
    return {}
