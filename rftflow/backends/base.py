"""The interface every training backend implements, and the context a stage runs in.

The DAG calls these four stage methods the same way whatever the backend; what differs between
`local`, `sagemaker` and `bedrock` is one small class each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rftflow.artifacts.manifest import StageManifest, stage_uri


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


class Backend(ABC):
    """One training/evaluation backend. Stage methods write under ctx.uri and return its manifest."""

    name: ClassVar[str]

    def resolve_model(self, model: str, ctx: StageContext) -> str:
        """Turn a user-facing model name into the URI/identifier the stages take."""
        return model

    @abstractmethod
    def evaluate(self, ctx: StageContext, model_uri: str, eval_uri: str, reward: str,
                 overrides: dict[str, Any] | None = None) -> StageManifest:
        """Greedy pass@1, mean reward, response length and per-metadata breakdown on the eval set."""

    @abstractmethod
    def diversity(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                  overrides: dict[str, Any] | None = None) -> StageManifest:
        """k rollouts per prompt, their pass pattern, and the rft / sft_first / stop_saturated decision."""

    @abstractmethod
    def sft(self, ctx: StageContext, model_uri: str, sft_uri: str,
            overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """Supervised fine-tuning on demonstrations."""

    @abstractmethod
    def rft(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
            overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """Reinforcement fine-tuning (GRPO) with the reward function."""

    def drift(self, ctx: StageContext, candidate_uri: str, start_uri: str, eval_uri: str, rows_uri: str | None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """KL(candidate || start) per token, estimated on the candidate's own eval completions, for the gate's
        KL guard when training logs none. {"kl": float, "completions": n, "tokens": t}, or {"kl": None,
        "reason": why} where the backend cannot score log-probabilities."""
        return {"kl": None, "reason": f"the {self.name} backend cannot score the eval completions' "
                                      "log-probabilities under two models"}

    def start_evaluate(self, ctx: StageContext, model_uri: str, eval_uri: str, reward: str,
                       overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """`evaluate`, or a PendingJob where the backend runs evaluation as a remote job (then `complete`)."""
        return self.evaluate(ctx, model_uri, eval_uri, reward, overrides)

    def start_diversity(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                        overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """`diversity`, or a PendingJob where the backend samples in a remote job (then `complete`)."""
        return self.diversity(ctx, model_uri, train_uri, reward, overrides)

    def settle(self, ctx: StageContext, pending: PendingJob) -> StageManifest:
        """Wait here for `pending` (its trigger, run in this process) and complete the stage."""
        import asyncio

        async def first_event() -> dict[str, Any]:
            async for event in self.trigger_for(pending).run():
                return event.payload
            raise RuntimeError(f"{pending.job_name}: the wait ended without an event")

        return self.complete(ctx, pending, asyncio.run(first_event()))

    def preflight(self, *, model: str, reward: str, overrides: dict[str, dict[str, Any]],
                  stages: tuple[str, ...]) -> list[str]:
        """What would make the cycle fail later on this backend, checked before anything is paid for (roles,
        the reward Lambda, every stage's recipe with its overrides); one readable line per problem."""
        return []

    def load_pending(self, ctx: StageContext) -> PendingJob | None:
        """The remote job this stage submitted and has not completed, if any (what a killed task stops)."""
        return None

    def trigger_for(self, pending: PendingJob) -> Any:
        """The Airflow trigger (from the amazon provider) that waits for `pending` without a worker slot."""
        raise NotImplementedError(f"backend {self.name!r} runs stages synchronously")

    def stop(self, pending: PendingJob) -> None:
        """Stop the remote job (called when the task is killed); local stages have none to stop."""
        return None

    def complete(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        """Finish a stage whose remote job has ended (called after the deferral resumes)."""
        raise NotImplementedError(f"backend {self.name!r} runs stages synchronously")


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
