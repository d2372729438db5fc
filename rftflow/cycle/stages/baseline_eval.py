"""baseline_eval: the eval of the model the cycle starts from, and of the champion when that is another model.

Each eval is recorded as a part of this stage (`model`, `champion`: rftflow.cycle.graph), reused from the eval
cache when the same model was evaluated on the same set before.
"""

from __future__ import annotations

import time
from typing import Any

from rftflow.artifacts.registry import ChampionRegistry
from rftflow.backends.base import StageContext
from rftflow.cycle.cache import cached_eval
from rftflow.cycle.context import backend_for, record, reused
from rftflow.cycle.graph import Inputs, part
from rftflow.cycle.params import CycleParams

STAGE = "baseline_eval"


def baseline_eval(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    """Evaluate the start model (and the champion, when it is another model)."""
    if (m := reused(ctx)) is not None:
        return m.outputs["xcom"]
    started = time.time()
    backend = backend_for(p)
    champion, token = ChampionRegistry(p.artifact_root, p.model_family).current()
    if p.base_model == "champion":
        start = champion.model_uri if champion else p.fallback_model
    else:
        start = p.base_model
    model_uri = backend.resolve_model(start, ctx)
    model_ctx = ctx.for_stage(part("model", STAGE))
    evals = cached_eval(p, model_ctx, backend, model_uri)
    champion_eval = None
    if champion is not None:
        champion_eval = evals if champion.model_uri == model_uri else \
            cached_eval(p, ctx.for_stage(part("champion", STAGE)), backend, champion.model_uri)
    champion_metrics = champion_eval.metrics if champion_eval is not None else None
    champion_rows_uri = champion_eval.outputs.get("rows_uri") if champion_eval is not None else None
    xcom = {"model_uri": model_uri, "start": start, "champion_token": token,
            "champion_model_uri": champion.model_uri if champion else None,
            "pass_at_1": evals.metrics.get("pass_at_1"), "mean_reward": evals.metrics.get("mean_reward")}
    from rftflow.artifacts import store

    record(ctx, p, started, inputs={"start": start, "model_uri": model_uri, "eval_uri": p.eval_uri},
           outputs={"eval_manifest_uri": store.join(model_ctx.uri, "manifest.json"), "xcom": xcom,
                    "rows_uri": evals.outputs.get("rows_uri"), "champion_rows_uri": champion_rows_uri},
           checkpoint_uri=model_uri, metrics=evals.metrics,
           decision={"champion": champion_metrics} if champion_metrics is not None else None)
    return xcom


def champion_token(baseline: Any) -> str | None:
    """The champion pointer's token when the cycle's baseline was taken (promote swaps only from it), read from
    the baseline stage's manifest."""
    if baseline is None:
        raise RuntimeError("the baseline eval has no complete manifest in this run")
    return (baseline.outputs.get("xcom") or {}).get("champion_token")
