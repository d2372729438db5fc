"""validate_data: the run's params, every stage's recipe with its overrides on the chosen backend, the backend's
preflight (roles, reward Lambda, cluster) and the datasets, checked before anything is paid for."""

from __future__ import annotations

import logging
import time
from typing import Any

from rftflow.artifacts import store
from rftflow.backends.base import StageContext
from rftflow.cycle import cache
from rftflow.cycle.context import backend_for, record, reused
from rftflow.cycle.graph import Inputs
from rftflow.cycle.params import RECIPE_STAGES, CycleParams
from rftflow.cycle.recipes import RecipeError

log = logging.getLogger(__name__)


def validate_data(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    """Schema and dataset-level checks on train/eval (and SFT demos), plus recipe overrides. Returns (for XCom)
    the checks' figures and `params`: the run's params as resolved here, which every later task reads."""
    from rftflow.data.dataset import read_records
    from rftflow.data.validation import validate_dataset

    resolved = {"params": p.model_dump(mode="json")}
    if (m := reused(ctx)) is not None:
        return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **m.metrics, **resolved}
    started = time.time()
    check_recipes(p)
    from rftflow.publish.notify import validate_targets

    validate_targets(p.notify)
    target = aws_target(p)
    key = cache.validation_cache_key(p, target)
    # the data's verdict is reused; the manifest records this run's own params, not the earlier run's
    if (cached := cache.lookup(p, ctx, "validation", key, outputs=resolved)) is not None:
        return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **cached.metrics, **resolved}
    region, flavour = target
    uses_sft = cache.uses_sft_data(p)
    report = validate_dataset(p.train_uri, p.eval_uri, backend=p.backend, report_dir_uri=ctx.uri, reward=p.reward,
                              region=region, flavour=flavour, model=cache.configured_model(p),
                              customizations=("SFT", "RFT") if uses_sft else ("RFT",))
    metrics: dict[str, Any] = {"ok": report.ok}
    if uses_sft:
        metrics["sft_rows"] = len(read_records(p.sft_uri, kind="sft"))
    summary = report.to_dict()
    manifest = record(ctx, p, started, inputs={"train_uri": p.train_uri, "eval_uri": p.eval_uri,
                                               "sft_uri": p.sft_uri},
                      outputs={**{k: v for k, v in summary.items() if k.endswith("_uri")}, **resolved},
                      metrics={**metrics, **{k: v for k, v in summary.items() if k in ("train_rows", "eval_rows")}})
    cache.remember(p, ctx, "validation", key)
    return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **manifest.metrics, **resolved}


def check_recipes(p: CycleParams) -> None:
    """Every stage's recipe on the chosen backend with the run's overrides; a remote backend also checks what it
    needs before its first paid call (role ARNs, the reward Lambda, the cluster answering). ValueError naming the
    field at fault."""
    from rftflow.cycle.recipes import load_recipe

    if p.backend == "local":
        for stage in RECIPE_STAGES:
            try:
                load_recipe("local", stage, p.overrides(stage))
            except RecipeError as err:
                raise ValueError(f"recipe_overrides.{stage} does not fit the local {stage} recipe:\n{err}") from None
        return
    stages = ("sft", "rft", "eval") if cache.uses_sft_data(p) else ("rft", "eval")
    problems = backend_for(p).preflight(model=cache.configured_model(p), reward=p.reward,
                                        overrides={s: p.overrides(s) for s in stages}, stages=stages)
    if problems:
        raise ValueError(f"the {p.backend} backend cannot run this cycle as configured (nothing was "
                         "submitted):\n- " + "\n- ".join(problems))


def aws_target(p: CycleParams) -> tuple[str | None, str | None]:
    """(region, flavour) an AWS backend would submit to, so validate_data can refuse a region the chosen
    models and images are not published in; (None, None) off AWS or when no region is set."""
    if p.backend not in ("sagemaker", "bedrock"):
        return None, None
    try:
        backend = backend_for(p)
        options = getattr(backend, "options", None)
        return backend.region, getattr(options, "flavour", None)
    except Exception as err:  # no connection or region configured: the submit path says so later
        log.info("validate_data: no AWS region to check (%s)", err)
        return None, None
