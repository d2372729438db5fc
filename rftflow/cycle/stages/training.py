"""sft and rft: run (local) or submit (remote backends) the training stage from the model the graph says it starts
from; an rft stage after an SFT whose rollouts already all pass records the SFT checkpoint as the candidate."""

from __future__ import annotations

import time
from typing import Any

from rftflow.artifacts.manifest import StageManifest
from rftflow.backends.base import PendingJob, StageContext
from rftflow.cycle.context import backend_for, record, reused
from rftflow.cycle.graph import Inputs, inputs_of
from rftflow.cycle.params import CycleParams


def start_training(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None, *,
                   detach: bool = False) -> StageManifest | PendingJob:
    """Run (local) or submit (AWS, Ray) the sft or rft stage; a complete manifest is reused. detach: a local
    trainer is started (or adopted) and left running, and its PendingJob returned for the task to defer on."""
    if (m := reused(ctx)) is not None:
        return m
    inputs = inputs or inputs_of(ctx)
    model_uri = inputs.start_model()
    if "recheck" in inputs.folders:  # rft: the recheck on the SFT checkpoint may have found nothing to learn
        recheck = inputs.manifest("recheck")
        if recheck is not None and (recheck.decision or {}).get("decision") == "stop_saturated":
            return skip(p, ctx, model_uri, "after SFT the rollouts all pass: " + recheck.decision.get("reason", ""),
                        inputs)
    backend = backend_for(p, detach_training=detach)
    if ctx.stage == "sft":
        if not p.sft_uri:
            raise ValueError("the SFT branch was taken but sft_uri is empty: give demonstrations or set "
                             "sft_policy=never")
        return backend.train(ctx, "sft", model_uri, p.sft_uri, None, p.overrides("sft"))
    return backend.train(ctx, "rft", model_uri, p.train_uri, p.reward, p.overrides("rft"))


def training_result(manifest: StageManifest) -> dict[str, Any]:
    """The small dict a training task leaves in XCom."""
    return {"model_uri": manifest.checkpoint_uri, "stage": manifest.stage,
            "metrics": {k: v for k, v in manifest.metrics.items() if isinstance(v, int | float)}}


def skip(p: CycleParams, ctx: StageContext, model_uri: str, reason: str, inputs: Inputs | None = None) -> StageManifest:
    """Record a training stage that had nothing to learn: its start model is the candidate."""
    return record(ctx, p, time.time(), read=inputs, checkpoint_uri=model_uri, inputs={"model_uri": model_uri},
                  decision={"decision": "skipped", "reason": reason})
