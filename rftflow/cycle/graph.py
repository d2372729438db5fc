"""The cycle's stages in one place: their order, the edges between the DAG's tasks, each stage's inputs (the
upstream stages whose manifests it reads, under the role it reads them as, and the model it starts from), what
the summary and MLflow read, and how long each task may run in a worker.

dags/rft_cycle.py wires the same tasks by hand, so the DAG file still reads as the stage list with its edges
visible; tests/dags/test_rft_cycle_structure.py checks that the two agree. Everything else (the stage modules of
rftflow.cycle.stages, rftflow.publish.summary, rftflow.orchestration.operators) reads the graph instead of naming
stages again: a stage module knows its inputs by role ("baseline", "candidate"), never by another stage's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

SHORT = timedelta(minutes=30)  # plans, the gate, promote, iterate, the report: bookkeeping


@dataclass(frozen=True)
class Stage:
    name: str
    downstream: tuple[str, ...] = ()
    starts_from: tuple[str, ...] = ()  # the stages whose checkpoint it starts from, the first complete one wins
    reads: dict[str, str] = field(default_factory=dict)  # role -> the upstream stage (or part) whose manifest it reads
    parts: tuple[str, ...] = ()        # sub-stages it writes beside its own manifest (each eval it ran, ...)
    summarized: bool = False           # read by the cycle's summary and report
    tracked: bool = False              # its results go to the cycle's MLflow run as soon as it ends
    # how long the task may run in a worker (Airflow's execution_timeout, per run of execute); remote jobs and
    # the local trainer are waited for deferred, bounded by the wait each backend sizes from its recipe
    timeout: timedelta = SHORT
    why_timeout: str = ""


EVAL_TIMEOUT = timedelta(hours=12)
EVAL_WHY = "local evaluation and sampling run in the worker (a CPU pass over a large set); remote ones defer"

STAGES: tuple[Stage, ...] = (
    Stage("validate_data", ("baseline_eval",), summarized=True, timeout=timedelta(hours=1),
          why_timeout="schema and dataset checks, and the AWS preflight"),
    Stage("baseline_eval", ("diversity_check",), parts=("registry", "champion"), summarized=True, tracked=True,
          timeout=EVAL_TIMEOUT,
          why_timeout=EVAL_WHY),
    Stage("diversity_check", ("plan_training",), starts_from=("baseline_eval",), summarized=True, tracked=True,
          timeout=EVAL_TIMEOUT,
          why_timeout=EVAL_WHY),
    Stage("plan_training", ("sft", "rft", "stop")),
    Stage("stop", ("report",), reads={"recheck": "diversity_recheck", "diversity": "diversity_check"},
          summarized=True, tracked=True),
    Stage("sft", ("diversity_recheck",), starts_from=("baseline_eval",), summarized=True,
          timeout=timedelta(hours=1), why_timeout="submit or start the trainer, then defer; complete on resume"),
    Stage("diversity_recheck", ("plan_rft",), starts_from=("sft",), summarized=True, tracked=True,
          timeout=EVAL_TIMEOUT, why_timeout=EVAL_WHY),
    Stage("plan_rft", ("rft", "stop")),
    Stage("rft", ("checkpoint_eval",), starts_from=("sft", "baseline_eval"), reads={"recheck": "diversity_recheck"},
          summarized=True,
          timeout=timedelta(hours=1), why_timeout="submit or start the trainer, then defer; complete on resume"),
    Stage("checkpoint_eval", ("gate",), starts_from=("rft",), reads={"training": "rft", "sft": "sft"},
          parts=("rft_start", "drift"), summarized=True, tracked=True, timeout=EVAL_TIMEOUT, why_timeout=EVAL_WHY),
    Stage("gate", ("choose_outcome", "promote", "iterate"),
          reads={"baseline": "baseline_eval", "champion": "baseline_eval.champion", "candidate": "checkpoint_eval",
                 "training": "rft", "rft_start_eval": "checkpoint_eval.rft_start", "drift": "checkpoint_eval.drift"},
          summarized=True, tracked=True),
    Stage("choose_outcome", ("approve_promotion", "promote", "iterate", "reject", "report")),
    Stage("approve_promotion", ("promote",), timeout=timedelta(minutes=5),
          why_timeout="the wait for a person is its response_timeout, deferred"),
    Stage("promote", ("report",), reads={"registry": "baseline_eval.registry", "baseline": "baseline_eval",
                                         "candidate": "checkpoint_eval"},
          summarized=True),
    Stage("iterate", ("start_next_cycle",)),
    Stage("start_next_cycle", ("report",)),
    Stage("reject", ("report",), timeout=timedelta(minutes=5)),
    # the summary reads every stage by role (rftflow.publish.summary); the report and the UI read the summary
    Stage("report", reads={"validation": "validate_data", "baseline": "baseline_eval",
                           "champion": "baseline_eval.champion", "diversity": "diversity_check",
                           "sft": "sft", "recheck": "diversity_recheck", "training": "rft",
                           "candidate": "checkpoint_eval", "sft_eval": "checkpoint_eval.rft_start", "gate": "gate",
                           "promote": "promote", "stop": "stop"}),
)
REPORT = "report"  # the stage whose inputs are the whole cycle

BY_NAME = {s.name: s for s in STAGES}
EDGES = {s.name: set(s.downstream) for s in STAGES}
SUMMARIZED = tuple(s.name for s in STAGES if s.summarized)
TRACKED = tuple(s.name for s in STAGES if s.tracked)


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; the cycle's stages: {', '.join(BY_NAME)}") from None


def inputs_of(ctx: Any) -> Inputs:
    """The inputs of the stage at `ctx` (a rftflow.backends.base.StageContext) in its run, from the graph."""
    spec = stage(ctx.stage)
    return Inputs(folders={role: ctx.for_stage(up).uri for role, up in spec.reads.items()},
                  starts_from=tuple(ctx.for_stage(up).uri for up in spec.starts_from),
                  upstream={role: inputs_of(ctx.for_stage(up)) for role, up in spec.reads.items() if up in BY_NAME})


@dataclass(frozen=True)
class Inputs:
    """What a stage reads from its run: each upstream stage's folder by role, and the folders whose checkpoint
    it starts from (the first complete one wins). Built by `inputs_of(ctx)` from the graph; a stage module reads
    `inputs.manifest("baseline")`, never a path it made up from another stage's name."""

    folders: dict[str, str] = field(default_factory=dict)
    starts_from: tuple[str, ...] = ()
    upstream: dict[str, Inputs] = field(default_factory=dict)  # the inputs of each upstream stage, by role
    # manifests read so far, by folder: an upstream stage has finished before this one runs, so each is read once
    _read: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def manifest(self, role: str) -> Any:
        """The upstream stage's complete StageManifest, or None when it did not run (or did not finish)."""
        return self._load(self._folder(role))

    def manifest_uri(self, role: str) -> str:
        from rftflow.artifacts.store import join

        return join(self._folder(role), "manifest.json")

    def checkpoint(self, role: str) -> str | None:
        manifest = self.manifest(role)
        return manifest.checkpoint_uri if manifest else None

    def start_model(self) -> str:
        """The model the stage starts from: the first of its starts_from stages with a complete checkpoint."""
        if not self.starts_from:
            raise ValueError("not a stage that starts from a model (rftflow.cycle.graph)")
        for folder in self.starts_from:
            manifest = self._load(folder)
            if manifest is not None and manifest.checkpoint_uri:
                return manifest.checkpoint_uri
        raise RuntimeError(f"none of {list(self.starts_from)} has a complete manifest with a checkpoint in this run")

    def of(self, role: str) -> Inputs:
        """The inputs of the upstream stage read as `role` (e.g. what the training stage started from)."""
        return self.upstream[role]

    def lineage(self) -> dict[str, str]:
        """role -> manifest URI of every upstream stage that completed: recorded in the stage's own manifest."""
        return {role: self.manifest_uri(role) for role in self.folders if self.manifest(role) is not None}

    def _load(self, folder: str) -> Any:
        if folder not in self._read:
            from rftflow.artifacts.manifest import load_complete

            self._read[folder] = load_complete(folder)
        return self._read[folder]

    def _folder(self, role: str) -> str:
        try:
            return self.folders[role]
        except KeyError:
            raise KeyError(f"{role!r} is not an input of this stage in rftflow.cycle.graph; "
                           f"its inputs: {', '.join(self.folders) or 'none'}") from None


def part(name: str, of: str) -> str:
    """The stage folder name of a part (sub-stage) of a stage, e.g. part("drift", "checkpoint_eval")."""
    if name not in stage(of).parts:
        raise ValueError(f"{of} has no part {name!r}; its parts: {', '.join(stage(of).parts) or 'none'}")
    return f"{of}.{name}"


def timeout(task_id: str) -> timedelta:
    """The task's execution_timeout (a task outside the graph gets the bookkeeping one)."""
    return BY_NAME[task_id].timeout if task_id in BY_NAME else SHORT
