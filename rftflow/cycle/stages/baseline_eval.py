"""baseline_eval: the eval of the model the cycle starts from, and of the champion when there is one.

The stage's own manifest is the start model's eval (as checkpoint_eval's is the candidate's), reused from the eval
cache when the same model was evaluated on the same set before. Its parts (rftflow.cycle.graph): `registry`,
the champion pointer as this cycle found it (promote swaps only from it), recorded first so that a retry compares
against the same champion; `champion`, the champion's eval (a cache hit of the start model's own when the
champion is the start model).
"""

from __future__ import annotations

import time
from typing import Any

from rftflow.artifacts.registry import ChampionRegistry
from rftflow.backends.base import StageContext
from rftflow.cycle.cache import cached_eval, record_copy
from rftflow.cycle.context import backend_for, record, reused
from rftflow.cycle.graph import Inputs, part
from rftflow.cycle.params import CycleParams

STAGE = "baseline_eval"
REGISTRY = part("registry", STAGE)
CHAMPION = part("champion", STAGE)


def baseline_eval(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    """Evaluate the start model (and the champion, when there is one)."""
    backend = backend_for(p)
    found = reused(ctx.for_stage(REGISTRY)) or _find_champion(p, ctx, backend)
    model_uri, champion_uri = found.checkpoint_uri, found.outputs.get("champion_model_uri")
    evals = cached_eval(p, ctx, backend, model_uri)
    out = {"model_uri": model_uri, "start": found.inputs["start"], "champion_token": found.outputs["champion_token"],
           "champion_model_uri": champion_uri,
           "pass_at_1": evals.metrics.get("pass_at_1"), "mean_reward": evals.metrics.get("mean_reward")}
    if champion_uri is not None:
        champion_ctx = ctx.for_stage(CHAMPION)
        if champion_uri == model_uri:  # the champion is the start model: its eval is the one just recorded
            champion_eval = reused(champion_ctx) or record_copy(champion_ctx, evals, ctx.uri)
        else:
            champion_eval = cached_eval(p, champion_ctx, backend, champion_uri)
        out["champion_pass_at_1"] = champion_eval.metrics.get("pass_at_1")
    return out


def _find_champion(p: CycleParams, ctx: StageContext, backend: Any) -> Any:
    """Record the champion pointer as it is now, and the model the cycle starts from (the `registry` part)."""
    started = time.time()
    legacy = reused(ctx)
    if legacy is not None and "xcom" in legacy.outputs:  # a run whose baseline kept the pointer in its own outputs
        kept = legacy.outputs["xcom"]
        token, champion_uri, start, model_uri = (kept.get("champion_token"), kept.get("champion_model_uri"),
                                                 kept.get("start"), kept.get("model_uri"))
    else:
        champion, token = ChampionRegistry(p.artifact_root, p.model_family).current()
        champion_uri = champion.model_uri if champion else None
        start = (champion_uri or p.fallback_model) if p.base_model == "champion" else p.base_model
        model_uri = backend.resolve_model(start, ctx)
    return record(ctx.for_stage(REGISTRY), p, started, checkpoint_uri=model_uri,
                  inputs={"start": start, "model_family": p.model_family},
                  outputs={"champion_token": token, "champion_model_uri": champion_uri})


def champion_token(registry: Any, baseline: Any = None) -> str | None:
    """The champion pointer's token when the cycle's baseline was taken (promote swaps only from it), from the
    baseline's `registry` part (`baseline`: a run started before the part existed kept it in its own outputs)."""
    if registry is not None:
        return registry.outputs.get("champion_token")
    if baseline is not None and "xcom" in baseline.outputs:
        return (baseline.outputs.get("xcom") or {}).get("champion_token")
    raise RuntimeError("the baseline eval recorded no champion pointer in this run")
