"""checkpoint_eval: the baseline's eval on the candidate; when SFT ran, also on the SFT checkpoint (what RFT started
from, so the report shows what each added and the guards compare RFT with its own start); and, where the backend
can, the candidate's drift (KL) from that start on the eval set. Each extra result is a part of this stage."""

from __future__ import annotations

import time
from typing import Any

from rftflow.backends.base import StageContext
from rftflow.cycle.cache import cached_eval
from rftflow.cycle.context import backend_for, record, reused
from rftflow.cycle.graph import Inputs, inputs_of, part
from rftflow.cycle.params import CycleParams

STAGE = "checkpoint_eval"
RFT_START_EVAL = part("rft_start", STAGE)  # the eval of the model RFT started from, when SFT ran
DRIFT = part("drift", STAGE)  # the candidate's KL from the RFT start, measured on the eval set


def checkpoint_eval(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    inputs = inputs or inputs_of(ctx)
    candidate_uri = inputs.start_model()
    backend = backend_for(p)
    manifest = cached_eval(p, ctx, backend, candidate_uri)
    out = {"model_uri": candidate_uri, "pass_at_1": manifest.metrics.get("pass_at_1"),
           "mean_reward": manifest.metrics.get("mean_reward")}
    training = inputs.manifest("training")
    training_start = inputs.of("training").start_model()  # what RFT started from: the SFT checkpoint or baseline
    trained = training is not None and (training.decision or {}).get("decision") != "skipped" \
        and training_start != candidate_uri
    if trained and inputs.checkpoint("sft") == training_start:
        start_eval = cached_eval(p, ctx.for_stage(RFT_START_EVAL), backend, training_start)
        out["sft_pass_at_1"] = start_eval.metrics.get("pass_at_1")
    if trained:
        drift_ctx = ctx.for_stage(DRIFT)
        drift = reused(drift_ctx)
        if drift is None:
            started = time.time()
            measured = backend.drift(drift_ctx, candidate_uri, training_start, p.eval_uri,
                                     manifest.outputs.get("rows_uri"), p.overrides("eval"))
            drift = record(drift_ctx, p, started, inputs={"candidate_uri": candidate_uri, "start_uri": training_start},
                           metrics=measured)
        out["drift_kl"] = drift.metrics.get("kl")
    return out
