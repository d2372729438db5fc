"""gate: paired tests of the candidate against the baseline and the champion on the eval set's per-prompt rows,
slices, guards (rftflow.scoring.gate decides); writes the decision and its table."""

from __future__ import annotations

import logging
import time
from typing import Any

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest
from rftflow.backends.base import StageContext
from rftflow.cycle.cache import file_digest
from rftflow.cycle.context import now, record, reused
from rftflow.cycle.graph import Inputs, inputs_of
from rftflow.cycle.params import CycleParams

log = logging.getLogger(__name__)


def gate(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    """Paired tests of candidate vs baseline and champion, slices, guards; writes the decision artifact."""
    from rftflow.scoring.gate import decide

    if (m := reused(ctx)) is not None:
        return m.decision
    started = time.time()
    inputs = inputs or inputs_of(ctx)
    baseline, candidate = inputs.manifest("baseline"), inputs.manifest("candidate")
    if baseline is None or candidate is None:
        raise RuntimeError("gate: the baseline or the candidate eval has no complete manifest in this run")
    champion = champion_evidence(inputs.manifest("champion"), baseline)  # None: the family has no champion yet
    drift = inputs.manifest("drift")
    look = record_look(p, ctx)
    result = decide(stage_evidence(baseline, "baseline"), stage_evidence(candidate, "candidate"), champion,
                    train_rows(inputs.manifest("training")), p.gate_config(), cycle=p.cycle,
                    max_cycles=p.max_cycles, rft_start=stage_evidence(inputs.manifest("rft_start_eval"),
                                                                      "SFT checkpoint"),
                    look=look, drift=drift.metrics if drift else None)
    log.info("gate decision: %s\n%s", result.decision, result.table())
    decision = {**result.to_dict(), "candidate_uri": candidate.checkpoint_uri, "table": result.table()}
    record(ctx, p, started, read=inputs, decision=decision, checkpoint_uri=candidate.checkpoint_uri)
    return decision


def train_rows(manifest: StageManifest | None) -> list[dict[str, Any]]:
    """A training stage's per-step metrics, one row per step (a resumed trainer may have logged a step twice;
    the later row is the one that counts)."""
    uri = manifest.outputs.get("metrics_uri") if manifest else None
    if not uri or not store.exists(uri):
        return []
    by_step: dict[Any, dict[str, Any]] = {}
    for i, row in enumerate(store.read_jsonl(uri)):
        by_step[row.get("step", f"row{i}")] = row
    return list(by_step.values())


def eval_rows(uri: str | None) -> list[dict[str, Any]] | None:
    """An eval's per-prompt rows, or None when it wrote none (the gate then holds instead of guessing)."""
    return store.read_jsonl(uri) if uri and store.exists(uri) else None


def stage_evidence(manifest: StageManifest | None, label: str) -> Any:
    """The gate's EvalEvidence for an eval stage's manifest (None for a stage that did not run)."""
    from rftflow.scoring.gate import EvalEvidence

    if manifest is None:
        return None
    return EvalEvidence(manifest.metrics, eval_rows(manifest.outputs.get("rows_uri")), label)


def champion_evidence(champion_eval: StageManifest | None, baseline: StageManifest | None) -> Any:
    """The gate's EvalEvidence for the champion: its eval beside the baseline's, else (a run whose baseline was
    taken before the champion's eval was a part of its own) the metrics and rows that baseline kept; None when
    there is no champion."""
    from rftflow.scoring.gate import EvalEvidence

    if champion_eval is not None:
        return stage_evidence(champion_eval, "champion")
    kept = (baseline.decision or {}).get("champion") if baseline is not None else None
    if kept is None:
        return None
    return EvalEvidence(kept, eval_rows(baseline.outputs.get("champion_rows_uri")), "champion")


def record_look(p: CycleParams, ctx: StageContext) -> int:
    """This decision's number among the gate decisions made for the model family on this eval set's content.

    Each decision leaves one file under the registry (a retried gate finds its own and is not counted
    twice), so the gate can spend its error rate over every look at the same prompts.
    """
    folder = store.join(p.artifact_root, "registry", p.model_family, "looks", file_digest(p.eval_uri)[:32])
    mine = f"{ctx.dag_id}--{ctx.run_id}--cycle-{ctx.cycle}.json".replace("/", "_").replace(":", "_")
    uri = store.join(folder, mine)
    if not store.exists(uri):
        store.write_json(uri, {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "cycle": ctx.cycle, "at": now()})
    looks = sorted(store.read_json(u).get("at", "") + "|" + u.rsplit("/", 1)[-1]
                   for u in store.list_prefix(folder) if u.endswith(".json"))
    return 1 + next(i for i, key in enumerate(looks) if key.endswith("|" + mine))
