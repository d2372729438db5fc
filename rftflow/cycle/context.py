"""What a stage is handed, and how a stage that ran no backend work records itself.

A stage function takes (params, StageContext, Inputs): the run's resolved params, the folder it writes
({artifact_root}/{dag_id}/{run_id}/cycle-{n}/{stage}/), and its upstream stages' manifests by role
(rftflow.cycle.graph). `for_task` builds the first two for a running Airflow task.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from rftflow.artifacts.manifest import StageManifest, finish_stage, load_complete
from rftflow.backends.base import Backend, StageContext, get_backend
from rftflow.cycle.graph import Inputs
from rftflow.cycle.params import CycleParams, parse_params

log = logging.getLogger(__name__)

RESOLVED_BY = "validate_data"  # the first task: it parses the run's params once and returns the resolved copy


def stage_context(p: CycleParams, dag_id: str, run_id: str, stage: str) -> StageContext:
    return StageContext(p.artifact_root, dag_id, run_id, p.cycle, stage)


def run_params(context: Any) -> CycleParams:
    """The run's params as validate_data resolved them (its XCom: artifact_root and data paths fixed once, so
    workers with another RFTFLOW_ARTIFACT_ROOT or working directory still agree); parsed from the run's params
    where there is no such XCom (validate_data itself, runs that failed before it, callers outside a task)."""
    task = context.get("task")
    ti = context.get("ti")
    if ti is not None and hasattr(ti, "xcom_pull") and getattr(task, "task_id", None) != RESOLVED_BY:
        try:
            resolved = (ti.xcom_pull(task_ids=RESOLVED_BY) or {}).get("params")
        except Exception as err:  # the XCom backend unreachable: the run's own params say the same
            log.info("no resolved params from %s (%s); parsing the run's params", RESOLVED_BY, err)
            resolved = None
        if resolved:
            return CycleParams.model_validate(resolved)
    return parse_params(dict(context["params"]))


def for_task(context: Any, stage: str) -> tuple[CycleParams, StageContext]:
    """(params, StageContext) for a running Airflow task: the one place tasks learn where they write."""
    p = run_params(context)
    return p, stage_context(p, context["dag"].dag_id, context["run_id"], stage)


def backend_for(p: CycleParams, *, detach_training: bool = False) -> Backend:
    """The run's backend. detach_training: local sft/rft leave the trainer running and return a PendingJob
    (the training task then defers); remote backends always submit and return one."""
    if detach_training and p.backend == "local":
        return get_backend("local", detach_training=True)
    return get_backend(p.backend)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record(ctx: StageContext, p: CycleParams, started: float, *, read: Inputs | None = None,
           **fields: Any) -> StageManifest:
    """Write a bookkeeping manifest for a stage that ran no backend work (validation, gate, ...); `read`: the
    inputs it read, whose manifests it names under inputs.upstream (the stage's lineage)."""
    if read is not None and (lineage := read.lineage()):
        fields["inputs"] = {**fields.get("inputs", {}), "upstream": lineage}
    return finish_stage(ctx, p.backend, started, **fields)


def reused(ctx: StageContext) -> StageManifest | None:
    """The stage's own complete manifest (a retry or a cleared task pays nothing twice)."""
    manifest = load_complete(ctx.uri)
    if manifest is not None:
        log.info("%s: reusing the complete manifest at %s", ctx.stage, ctx.uri)
    return manifest
