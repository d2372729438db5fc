"""The cycle's three branches: after the diversity check (plan_training), after the recheck on the SFT checkpoint
(plan_rft), and after the gate (choose_outcome). Each returns the task id(s) to run next."""

from __future__ import annotations

from typing import Any, Literal

from rftflow.cycle.params import CycleParams


def plan_training(p: CycleParams, diversity: dict[str, Any]) -> Literal["sft", "rft", "stop"]:
    """The branch after the first diversity check: SFT first, straight to RFT, or nothing to learn."""
    if p.sft_policy == "always":
        return "sft"
    decision = diversity["decision"]
    if decision == "stop_saturated":
        return "stop"
    if decision == "sft_first" and p.sft_policy == "auto":
        return "sft"
    return "rft"


def plan_rft(p: CycleParams, recheck: dict[str, Any]) -> Literal["rft", "stop"]:
    """The branch after the recheck on the SFT checkpoint: RFT only when its rollouts can teach GRPO.

    `sft_first` again means SFT did not make the rollouts mixed (they still nearly all fail): GRPO would
    get no signal, so the cycle stops and says so. `stop_saturated` goes on to rft, which records the SFT
    checkpoint itself as the candidate (nothing left for GRPO to learn; the gate judges the SFT model).
    """
    return "stop" if recheck.get("decision") == "sft_first" else "rft"


def choose_outcome(p: CycleParams, decision: dict[str, Any]) -> str | list[str]:
    """The branch after the gate; promote waits for a person with approval on, and always after a hold."""
    outcome = decision["decision"]
    if outcome == "promote":
        return ["approve_promotion", "promote"] if p.require_approval else "promote"
    if outcome == "hold":  # the gate could not decide on its own: a person does, with the gate table
        return ["approve_promotion", "promote"]
    return outcome  # "iterate" or "reject"
