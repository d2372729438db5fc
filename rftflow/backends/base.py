"""The interface every backend implements, the stages written once over it, and the context a stage runs in.

A backend differs from another in its primitives only (`sampling_config`, `generate`, `train`, and for remote
jobs `generated`, `complete_training`, `trigger_for`, `stop`); evaluation, the diversity check, scoring and
the manifests they write are `Backend` methods every backend shares.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, finish_stage, stage_uri


@dataclass(frozen=True)
class StageContext:
    """Where a stage writes: {artifact_root}/{dag_id}/{run_id}/cycle-{n}/{stage}/."""

    artifact_root: str
    dag_id: str
    run_id: str
    cycle: int
    stage: str

    @property
    def uri(self) -> str:
        return stage_uri(self.artifact_root, self.dag_id, self.run_id, self.cycle, self.stage)

    def for_stage(self, stage: str) -> StageContext:
        return StageContext(self.artifact_root, self.dag_id, self.run_id, self.cycle, stage)


@dataclass
class PendingJob:
    """A remote job the caller waits for (deferrably), then hands to `Backend.complete`."""

    kind: str  # e.g. "sagemaker_training", "bedrock_customization"
    job_name: str
    details: dict[str, Any] = field(default_factory=dict)


EVALUATE, DIVERSITY = "evaluate", "diversity"  # the two stage kinds that sample the model (PendingJob details)
PENDING = "pending.json"  # beside the stage: the job it submitted and waits for
ROWS = "rows.jsonl"
FILTERED_TRAIN = "filtered_train.jsonl"


@dataclass
class SamplingPlan:
    """What an eval or a diversity check asks of `Backend.generate`: the prompts, the sampling passes over them
    (each {name, k, temperature, top_p?, max_new_tokens, seed?, batch_size}: "greedy" and "sampled" for an
    eval, "sampled" for the diversity check), and the stage's typed recipe. The same on every backend."""

    kind: str  # EVALUATE or DIVERSITY
    config: Any  # EvalConfig | DiversityConfig
    records: list[Any]
    passes: list[dict[str, Any]]
    overrides: dict[str, Any] = field(default_factory=dict)  # the run's overrides (a job's own recipe reads some)
    notes: list[str] = field(default_factory=list)

    def record_ids(self) -> list[str]:
        return [r.id for r in self.records]


def sampling_plan(kind: str, cfg: Any, records: list[Any], overrides: dict[str, Any] | None = None,
                  notes: list[str] | None = None) -> SamplingPlan:
    """The prompts and passes a recipe asks for: an eval's first `max_prompts` prompts; the diversity check's
    seeded sample of training prompts, which every backend draws alike."""
    if kind == EVALUATE:
        records = records[:cfg.max_prompts] if cfg.max_prompts else records
    elif kind == DIVERSITY:
        from rftflow.scoring.diversity import sample_prompts

        records = sample_prompts(records, cfg)
    return SamplingPlan(kind, cfg, list(records), sampling_passes(kind, cfg), dict(overrides or {}),
                        list(notes or []))


def sampling_passes(kind: str, cfg: Any) -> list[dict[str, Any]]:
    """An eval's greedy pass (and k sampled answers for pass@k); the diversity check's k rollouts per prompt."""
    if kind == EVALUATE:
        passes: list[dict[str, Any]] = [{"name": "greedy", "k": 1, "temperature": 0.0,
                                         "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size}]
        if cfg.pass_at_k:
            passes.append({"name": "sampled", "k": cfg.pass_at_k, "temperature": cfg.sample_temperature,
                           "top_p": cfg.sample_top_p, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                           "batch_size": cfg.batch_size})
        return passes
    if kind == DIVERSITY:
        return [{"name": "sampled", "k": cfg.k, "temperature": cfg.temperature, "top_p": cfg.top_p,
                 "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "batch_size": cfg.batch_size}]
    raise ValueError(f"unknown sampling stage kind {kind!r}; expected {EVALUATE} or {DIVERSITY}")


@dataclass
class Generation:
    """What `Backend.generate` sampled for a plan, and what it cost.

    completions: pass name -> per prompt (in plan order) -> k completions ({"text", "tokens", ...}); or, for
    a job that scored its answers itself (SageMaker's rft_eval recipe calls the reward Lambda), `rows`
    already scored; neither when the job reported aggregate metrics only. jobs: billed job records (their
    `estimated_cost_usd` sum is the stage's cost); timings: the sampler's own timings.
    """

    completions: dict[str, list[list[dict[str, Any]]]] | None = None
    rows: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Backend(ABC):
    """One training/evaluation backend.

    A backend implements its primitives: `generate` (sample a plan's passes: a child process, Ray tasks,
    converse calls, an eval job), `train` (SFT or GRPO), `complete_training` and, where `generate` answers with
    a pending job, `generated`. Evaluation, the diversity check, scoring with the reward and the stage
    manifests are written once, here, over those primitives, so every backend measures alike.
    """

    name: ClassVar[str]

    # ------------------------------------------------------------------ primitives

    def resolve_model(self, model: str, ctx: StageContext) -> str:
        """Turn a user-facing model name into the URI/identifier the stages take."""
        return model

    @abstractmethod
    def sampling_config(self, kind: str, overrides: dict[str, Any] | None) -> tuple[Any, list[str]]:
        """(the eval or diversity recipe with the run's overrides, notes on overrides that do not apply)."""

    @abstractmethod
    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> Generation | PendingJob:
        """Sample the plan's passes on `model_uri`; a PendingJob where a remote job samples (then `generated`)."""

    def generated(self, ctx: StageContext, pending: PendingJob, plan: SamplingPlan,
                  event: dict[str, Any]) -> Generation:
        """The completions of a sampling job that has ended (`event`: its trigger's); raises when it failed."""
        raise NotImplementedError(f"backend {self.name!r} samples synchronously")

    @abstractmethod
    def train(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str | None,
              overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """SFT (kind "sft", on demonstrations) or GRPO (kind "rft", with the reward) from model_uri."""

    def complete_training(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        """Finish a training stage whose job has ended (`pending` as `awaited` found it)."""
        raise NotImplementedError(f"backend {self.name!r} trains synchronously")

    def reward_function(self, reward: str) -> Any:
        """What scores completions here (a bad reward spec raises, before anything is sampled or paid for)."""
        from rftflow.rewards.runner import load_reward

        return load_reward(reward)

    def scoring_options(self, reward_fn: Any) -> dict[str, Any]:
        """How `reward_fn` runs (rftflow.rewards.runner.score's workers and per-batch timeout)."""
        return {"workers": 0, "timeout_s": 60.0}

    def reused(self, ctx: StageContext) -> StageManifest | None:
        """The stage's complete manifest when the backend returns it instead of running the stage again."""
        return None

    # ------------------------------------------------------------------ stages, written once

    def sft(self, ctx: StageContext, model_uri: str, sft_uri: str,
            overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """Supervised fine-tuning on demonstrations."""
        return self.train(ctx, "sft", model_uri, sft_uri, None, overrides)

    def rft(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
            overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """Reinforcement fine-tuning (GRPO) with the reward function."""
        return self.train(ctx, "rft", model_uri, train_uri, reward, overrides)

    def evaluate(self, ctx: StageContext, model_uri: str, eval_uri: str, reward: str,
                 overrides: dict[str, Any] | None = None) -> StageManifest:
        """Greedy pass@1, mean reward, response length and per-metadata breakdown on the eval set (pass@k when
        the recipe asks); waits here for a remote job (the DAG's tasks defer instead, via start_evaluate).

        Manifest: metrics {pass_at_1, mean_reward, mean_response_tokens, n, pass_at_k, k, sampled_pass_at_1,
        reward_metrics, breakdown, sampling (the sampler's timings), estimated_cost_usd (billed backends)},
        outputs {rows_uri}, checkpoint_uri = the model evaluated."""
        return run_remote(self, ctx, lambda: self.start_evaluate(ctx, model_uri, eval_uri, reward, overrides))

    def diversity(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                  overrides: dict[str, Any] | None = None) -> StageManifest:
        """k rollouts on a seeded sample of training prompts; pass patterns, fractions, decision.

        Manifest: metrics {k, n_prompts, all_pass, all_fail, mixed, mean_pass_rate, expected_mixed,
        expected_mixed_per_prompt, pass_at_k, mean_response_tokens, ...}, decision {decision, reason},
        outputs {rows_uri, filtered_train_uri (when write_filtered)}."""
        return run_remote(self, ctx, lambda: self.start_diversity(ctx, model_uri, train_uri, reward, overrides))

    def start_evaluate(self, ctx: StageContext, model_uri: str, eval_uri: str, reward: str,
                       overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """`evaluate`'s manifest, or the PendingJob of the remote job that samples (then `complete`)."""
        return self._start_sampling(ctx, EVALUATE, model_uri, eval_uri, reward, overrides)

    def start_diversity(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                        overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """`diversity`'s manifest, or the PendingJob of the remote job that samples (then `complete`)."""
        return self._start_sampling(ctx, DIVERSITY, model_uri, train_uri, reward, overrides)

    def _start_sampling(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str,
                        overrides: dict[str, Any] | None) -> StageManifest | PendingJob:
        if (m := self.reused(ctx)) is not None:
            return m
        from rftflow.data.dataset import read_records

        started = time.time()
        cfg, notes = self.sampling_config(kind, overrides)
        plan = sampling_plan(kind, cfg, read_records(data_uri, kind="rft"), overrides, notes)
        self.reward_function(reward)  # a bad reward spec fails before anything is sampled or paid for
        result = self.generate(ctx, model_uri, plan, reward)
        if isinstance(result, Generation):
            return self.finish_sampling(ctx, plan, result, started=started, model_uri=model_uri, data_uri=data_uri,
                                        reward=reward)
        # what completing needs, kept with the job (the backend's own details win: e.g. the resolved model)
        result.details = {"stage_kind": kind, "model_uri": model_uri, "data_uri": data_uri, "reward": reward,
                          "overrides": plan.overrides, "config": cfg.model_dump(), "record_ids": plan.record_ids(),
                          "notes": plan.notes, "started": started, **result.details}
        self.save_pending(ctx, result)
        return result

    def saved_plan(self, details: dict[str, Any]) -> SamplingPlan:
        """The plan a sampling job ran, from its pending job: the recipe it ran with, its prompts by id."""
        from rftflow.cycle.recipes import DiversityConfig, EvalConfig
        from rftflow.data.dataset import read_records

        kind = _sampling_kind(details)
        records = read_records(details["data_uri"], kind="rft")
        if "config" not in details or "record_ids" not in details:  # a job saved before plans were kept with it
            cfg, notes = self.sampling_config(kind, details.get("overrides"))
            return sampling_plan(kind, cfg, records, details.get("overrides"), notes)
        cfg = (EvalConfig if kind == EVALUATE else DiversityConfig).model_validate(details["config"])
        by_id = {r.id: r for r in records}
        missing = [i for i in details["record_ids"] if i not in by_id]
        if missing:
            raise ValueError(f"{details['data_uri']} changed while the job ran: ids {missing[:5]} are gone")
        return SamplingPlan(kind, cfg, [by_id[i] for i in details["record_ids"]], sampling_passes(kind, cfg),
                            dict(details.get("overrides") or {}), list(details.get("notes") or []))

    def finish_sampling(self, ctx: StageContext, plan: SamplingPlan, gen: Generation, *, started: float | str,
                        model_uri: str, data_uri: str, reward: str) -> StageManifest:
        """Score what was sampled with the stage's reward, summarise, decide (diversity), write rows and the
        manifest: one code path for every backend, so their numbers mean the same."""
        from rftflow.scoring import diversity as diversity_mod
        from rftflow.scoring import evaluation

        cfg, records = plan.config, plan.records
        rows, decision, outputs = gen.rows, None, {}
        for name, got in (gen.completions or {}).items():
            if len(got) != len(records):
                raise RuntimeError(f"{ctx.stage}: the {name!r} pass returned completions for {len(got)} of "
                                   f"{len(records)} prompts")
        reward_fn = self.reward_function(reward) if rows is None and gen.completions is not None else None
        if plan.kind == DIVERSITY:
            rows, metrics, decision = diversity_mod.score(records, (gen.completions or {})["sampled"], reward_fn,
                                                          cfg, **self.scoring_options(reward_fn))
        else:
            if reward_fn is not None:
                rows = evaluation.score_rows(records, [c[0] for c in gen.completions["greedy"]], reward_fn,
                                             pass_threshold=cfg.pass_threshold,
                                             sampled=gen.completions.get("sampled"), **self.scoring_options(reward_fn))
            metrics = evaluation.summarize(rows, cfg.breakdown_fields) if rows is not None else \
                {"pass_at_1": None, "mean_reward": None}
        metrics.update(gen.metrics)
        if rows is not None:
            store.write_jsonl(store.join(ctx.uri, ROWS), rows)
            outputs["rows_uri"] = store.join(ctx.uri, ROWS)
        if plan.kind == DIVERSITY and cfg.write_filtered:
            from rftflow.data.dataset import write_records

            keep = diversity_mod.informative(records, rows)
            write_records(store.join(ctx.uri, FILTERED_TRAIN), keep)
            outputs["filtered_train_uri"] = store.join(ctx.uri, FILTERED_TRAIN)
            metrics["filtered_prompts"] = len(keep)
        if gen.timings is not None:
            metrics["sampling"] = gen.timings
        if gen.jobs:
            from rftflow.backends.aws.pricing import total_cost

            priced = any(job.get("estimated_cost_usd") is not None for job in gen.jobs)
            metrics["estimated_cost_usd"] = total_cost(gen.jobs) if priced else None  # None: no price known
        data_key = "eval_uri" if plan.kind == EVALUATE else "train_uri"
        return self.finish(ctx, started, checkpoint_uri=model_uri, metrics=metrics, decision=decision,
                           outputs={**outputs, **gen.outputs}, jobs=gen.jobs,
                           inputs={"model_uri": model_uri, data_key: data_uri, "reward": reward, **gen.inputs,
                                   "config": cfg.model_dump(), "notes": [*plan.notes, *gen.notes]})

    def finish(self, ctx: StageContext, started: float | str, **fields: Any) -> StageManifest:
        """Write the stage's manifest, last: its presence marks the stage complete."""
        return finish_stage(ctx, self.name, started, **fields)

    # ------------------------------------------------------------------ remote jobs

    def save_pending(self, ctx: StageContext, pending: PendingJob) -> PendingJob:
        """Keep the pending job beside the stage, so completing it does not depend on what the caller kept."""
        store.write_json(store.join(ctx.uri, PENDING), dataclasses.asdict(pending))
        return pending

    def load_pending(self, ctx: StageContext) -> PendingJob | None:
        """The job this stage submitted and has not completed, if any (what a killed task stops, what a runner
        that resumes with the trigger's event only completes)."""
        uri = store.join(ctx.uri, PENDING)
        return PendingJob(**store.read_json(uri)) if store.exists(uri) else None

    def awaited(self, ctx: StageContext, pending: PendingJob | None, event: dict[str, Any]) -> PendingJob:
        """The job this stage waited for: the one the task deferred with, else the one saved with the stage
        (some runners, dag.test, resume with the event only); the trigger's event must be about that job."""
        if pending is None or not pending.job_name or not pending.details:
            saved = self.load_pending(ctx)
            if saved is None:
                raise RuntimeError(f"{ctx.stage}: no pending job given and none saved under {ctx.uri}")
            pending = saved
        job = event.get("job_name")
        if job and job != pending.job_name:
            raise RuntimeError(f"{ctx.stage}: the trigger reported job {job}, but this stage waits for "
                               f"{pending.job_name}")
        return pending

    def complete(self, ctx: StageContext, pending: PendingJob | None, event: dict[str, Any]) -> StageManifest:
        """Finish a stage whose remote job has ended (called after the deferral resumes); `pending` may be None:
        the job saved with the stage is used."""
        pending = self.awaited(ctx, pending, event)
        d = pending.details
        if _sampling_kind(d) is None:
            return self.complete_training(ctx, pending, event)
        plan = self.saved_plan(d)
        started = d.get("started", d.get("started_at"))  # started_at: a job saved before this key
        return self.finish_sampling(ctx, plan, self.generated(ctx, pending, plan, event), started=started,
                                    model_uri=d["model_uri"], data_uri=d["data_uri"], reward=d["reward"])

    def settle(self, ctx: StageContext, pending: PendingJob) -> StageManifest:
        """Wait here for `pending` (its trigger, run in this process) and complete the stage."""
        import asyncio

        async def first_event() -> dict[str, Any]:
            async for event in self.trigger_for(pending).run():
                return event.payload
            raise RuntimeError(f"{pending.job_name}: the wait ended without an event")

        return self.complete(ctx, pending, asyncio.run(first_event()))

    def trigger_for(self, pending: PendingJob) -> Any:
        """The Airflow trigger that waits for `pending` without a worker slot."""
        raise NotImplementedError(f"backend {self.name!r} runs stages synchronously")

    def stop(self, pending: PendingJob) -> None:
        """Stop the remote job (called when the task is killed); local stages have none to stop."""
        return None

    # ------------------------------------------------------------------ optional

    def drift(self, ctx: StageContext, candidate_uri: str, start_uri: str, eval_uri: str, rows_uri: str | None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """KL(candidate || start) per token, estimated on the candidate's own eval completions, for the gate's
        KL guard when training logs none. {"kl": float, "completions": n, "tokens": t}, or {"kl": None,
        "reason": why} where the backend cannot score log-probabilities."""
        return {"kl": None, "reason": f"the {self.name} backend cannot score the eval completions' "
                                      "log-probabilities under two models"}

    def preflight(self, *, model: str, reward: str, overrides: dict[str, dict[str, Any]],
                  stages: tuple[str, ...]) -> list[str]:
        """What would make the cycle fail later on this backend, checked before anything is paid for (roles,
        the reward Lambda, every stage's recipe with its overrides); one readable line per problem."""
        return []


def _sampling_kind(details: dict[str, Any]) -> str | None:
    """EVALUATE or DIVERSITY for a sampling job's details (SageMaker eval jobs saved before this said "eval"),
    None for a training job's."""
    kind = details.get("stage_kind")
    kind = EVALUATE if kind == "eval" else kind
    return kind if kind in (EVALUATE, DIVERSITY) else None


class StageDeferred(Exception):  # noqa: N818  (not an error: the stage waits for its job)
    """Raised inside a task that may defer: the stage at `ctx` submitted `pending` and waits for it. The task
    defers on the backend's trigger and, when it fires, completes the stage and runs again from the top (every
    finished stage is then found complete and skipped)."""

    def __init__(self, pending: PendingJob, ctx: StageContext):
        super().__init__(f"{ctx.stage}: waiting for {pending.kind} {pending.job_name}")
        self.pending, self.ctx = pending, ctx


_DEFERRABLE: ContextVar[bool] = ContextVar("rftflow_deferrable", default=False)


@contextmanager
def deferrable() -> Iterator[None]:
    """Within this block a stage that gets a pending job raises StageDeferred instead of waiting for it."""
    token = _DEFERRABLE.set(True)
    try:
        yield
    finally:
        _DEFERRABLE.reset(token)


def run_remote(backend: Backend, ctx: StageContext,
               start: Callable[[], StageManifest | PendingJob]) -> StageManifest:
    """The stage's manifest: `start()`'s, or, when it answers with a pending job, the job's once it ends —
    by deferring (inside `deferrable()`, i.e. an Airflow task) or by waiting here (the CLI, tests)."""
    result = start()
    if isinstance(result, StageManifest):
        return result
    if _DEFERRABLE.get():
        raise StageDeferred(result, ctx)
    return backend.settle(ctx, result)


def get_backend(name: str, **options: Any) -> Backend:
    """The backend class for `name`, imported on demand so parsing the DAG stays cheap."""
    if name == "local":
        from rftflow.backends.local.backend import LocalBackend

        return LocalBackend(**options)
    if name == "sagemaker":
        from rftflow.backends.aws.sagemaker import SageMakerBackend

        return SageMakerBackend(**options)
    if name == "bedrock":
        from rftflow.backends.aws.bedrock import BedrockBackend

        return BedrockBackend(**options)
    if name == "ray":
        from rftflow.backends.ray.backend import RayBackend

        return RayBackend(**options)
    raise ValueError(f"unknown backend {name!r}; expected one of local, ray, sagemaker, bedrock")
