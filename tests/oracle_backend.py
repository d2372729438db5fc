"""A backend made of primitives only, for tests of what `Backend` writes once over them (tests/backends/test_base.py,
tests/cycle/test_cycle.py): no model, its answers are decided by the prompt's id."""

from __future__ import annotations

from typing import Any, ClassVar

from rftflow.backends.base import EVALUATE, Backend, Generation, PendingJob, SamplingPlan, StageContext
from rftflow.cycle.recipes import load_recipe


class Oracle(Backend):
    """A backend of primitives only: it answers every prompt whose id ends in an even digit with its reference
    answer and the others wrongly; sampled passes alternate right and wrong. `remote`: a job samples, and the
    stage waits for it."""

    name: ClassVar[str] = "oracle"

    def __init__(self, remote: bool = False):
        self.remote = remote
        self.plans: list[SamplingPlan] = []

    def sampling_config(self, kind: str, overrides: dict[str, Any] | None) -> tuple[Any, list[str]]:
        return load_recipe("local", "eval" if kind == EVALUATE else "diversity", overrides), []

    def answers(self, plan: SamplingPlan) -> dict[str, list[list[dict[str, Any]]]]:
        def answer(record: Any, right: bool) -> dict[str, Any]:
            return {"text": str(record.reference_answer) if right else "no idea", "tokens": 3}

        out = {}
        for p in plan.passes:
            if p["name"] == "greedy":
                out["greedy"] = [[answer(r, int(r.id[-1]) % 2 == 0)] for r in plan.records]
            else:
                out[p["name"]] = [[answer(r, j % 2 == 0) for j in range(p["k"])] for r in plan.records]
        return out

    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> Generation | PendingJob:
        self.plans.append(plan)
        if self.remote:
            return PendingJob("oracle_job", f"job-{ctx.stage}", details={"submitted_for": model_uri})
        return Generation(self.answers(plan), timings={"seconds": 0.1})

    def generated(self, ctx: StageContext, pending: PendingJob, plan: SamplingPlan,
                  event: dict[str, Any]) -> Generation:
        if event.get("status") != "success":
            raise RuntimeError(f"{pending.job_name} ended {event.get('status')}")
        return Generation(self.answers(plan), jobs=[{"name": pending.job_name, "estimated_cost_usd": 1.25}],
                          inputs={"job": pending.job_name})

    def train(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str | None,
              overrides: dict[str, Any] | None = None) -> Any:
        return self.finish(ctx, 0.0, checkpoint_uri=model_uri + f"+{kind}")
