"""stop: the cycle ends before RFT, and says why: the rollouts already pass (nothing to learn), or after SFT they
still nearly all fail (nothing for GRPO to learn from)."""

from __future__ import annotations

import time
from typing import Any

from rftflow.backends.base import StageContext
from rftflow.cycle.context import record, reused
from rftflow.cycle.graph import Inputs, inputs_of
from rftflow.cycle.params import CycleParams


def stop(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    if (m := reused(ctx)) is not None:
        return m.decision
    inputs = inputs or inputs_of(ctx)
    recheck = inputs.manifest("recheck")
    if recheck is not None and (recheck.decision or {}).get("decision") == "sft_first":
        decision = {"decision": "stop_sft_insufficient",
                    "reason": "after SFT the rollouts still nearly all fail, so GRPO has nothing to learn from: "
                              + (recheck.decision or {}).get("reason", "")
                              + " More or better demonstrations, or more SFT steps, come first."}
    else:
        diversity = inputs.manifest("diversity")
        decision = {"decision": "stop_saturated",
                    "reason": (diversity.decision or {}).get("reason", "") if diversity else ""}
    return record(ctx, p, time.time(), read=inputs, decision=decision).decision
