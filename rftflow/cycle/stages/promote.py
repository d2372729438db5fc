"""promote: compare-and-swap the champion pointer to the candidate (a race is reported, never lost); and iterate:
the next cycle's params, starting from the candidate."""

from __future__ import annotations

import logging
import time
from typing import Any

from rftflow.artifacts.registry import Champion, ChampionRegistry, PromotionConflict
from rftflow.backends.base import StageContext
from rftflow.cycle.context import now, record, reused
from rftflow.cycle.graph import Inputs, inputs_of
from rftflow.cycle.params import CycleParams
from rftflow.cycle.stages.baseline_eval import champion_token

log = logging.getLogger(__name__)


def promote(p: CycleParams, ctx: StageContext, candidate_uri: str, inputs: Inputs | None = None) -> dict[str, Any]:
    """Swap the champion to `candidate_uri`, only from the champion the cycle's baseline compared against."""
    if (m := reused(ctx)) is not None:
        return m.decision
    started = time.time()
    inputs = inputs or inputs_of(ctx)
    expected = champion_token(inputs.manifest("registry"), inputs.manifest("baseline"))
    candidate = inputs.manifest("candidate")
    registry = ChampionRegistry(p.artifact_root, p.model_family)
    champion = Champion(model_uri=candidate_uri, metrics=candidate.metrics if candidate else {},
                        run_id=ctx.run_id, cycle=ctx.cycle, promoted_at=now(),
                        manifest_uri=inputs.manifest_uri("candidate"))
    reason = f"champion of {p.model_family} is now {candidate_uri}"
    try:
        token = registry.promote(champion, expected_token=expected)
    except PromotionConflict as err:
        # A retry after a crash between the swap and the manifest below meets its own swap as a conflict:
        # the registry then holds this run's promotion over the baseline's version, which it finishes.
        own = registry.find_promotion(run_id=ctx.run_id, cycle=ctx.cycle, model_uri=candidate_uri,
                                      previous_token=expected)
        if own is None:
            result = {"promoted": False, "model_uri": candidate_uri,
                      "reason": f"the champion changed after this cycle's baseline was taken ({err}); "
                                "the candidate was not compared with the new champion, so it is not promoted"}
            record(ctx, p, started, read=inputs, decision=result, checkpoint_uri=candidate_uri)
            return result
        log.info("promote: the registry already holds this run's promotion (seq %s, an earlier attempt's); "
                 "finishing it", own["seq"])
        token = own["token"]
        champion = Champion.model_validate(own["champion"])
        reason += " (promoted by an earlier attempt of this task, finished by this one)"
    result = {"promoted": True, "model_uri": candidate_uri, "token": token,
              "asset_uri": f"rftflow://champion/{p.model_family}",
              "asset_extra": {"model_uri": candidate_uri, "run_id": ctx.run_id, "cycle": ctx.cycle,
                              "metrics": {k: v for k, v in champion.metrics.items() if isinstance(v, int | float)}},
              "reason": reason}
    record(ctx, p, started, read=inputs, decision=result, checkpoint_uri=candidate_uri)
    return result


def next_cycle_conf(p: CycleParams, run_id: str, candidate_uri: str) -> dict[str, Any]:
    """Params of the next cycle (the iterate task): start from this checkpoint, keep lineage."""
    conf = p.model_dump()
    conf.update(base_model=candidate_uri, cycle=p.cycle + 1, parent_run_id=run_id)
    return conf
