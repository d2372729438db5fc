"""diversity_check and diversity_recheck: k rollouts per training prompt on the stage's start model (the baseline,
or the SFT checkpoint for the recheck), their pass pattern, and the rft / sft_first / stop_saturated decision."""

from __future__ import annotations

import logging
from typing import Any

from rftflow.backends.base import StageContext, run_remote
from rftflow.cycle.context import backend_for, reused
from rftflow.cycle.graph import Inputs, inputs_of
from rftflow.cycle.params import CycleParams

log = logging.getLogger(__name__)


def diversity_check(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    """k rollouts per training prompt on the stage's start model; the decision and its reason."""
    inputs = inputs or inputs_of(ctx)
    model_uri = inputs.start_model()
    backend = backend_for(p)
    manifest = reused(ctx) or run_remote(backend, ctx, lambda: backend.start_diversity(
        ctx, model_uri, p.train_uri, p.reward, p.overrides("diversity")))
    decision = manifest.decision or {}
    log.info("%s: %s — %s", ctx.stage, decision.get("decision"), decision.get("reason"))
    return {"decision": decision.get("decision"), "reason": decision.get("reason"), "model_uri": model_uri,
            "mixed": manifest.metrics.get("mixed"), "all_fail": manifest.metrics.get("all_fail"),
            "all_pass": manifest.metrics.get("all_pass")}


diversity_recheck = diversity_check  # the same stage on the SFT checkpoint: the graph gives it its start model
