"""The cycle's stages in one place: their order, the edges between the DAG's tasks, the model each training or
eval stage starts from, what the summary and MLflow read, and how long each task may run in a worker.

dags/rft_cycle.py wires the same tasks by hand, so the DAG file still reads as the stage list with its edges
visible; tests/dags/test_rft_cycle_structure.py checks that the two agree. Everything else (rftflow.cycle.stages,
rftflow.publish.summary, rftflow.orchestration.operators) reads the graph instead of naming stages again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

SHORT = timedelta(minutes=30)  # plans, the gate, promote, iterate, the report: bookkeeping


@dataclass(frozen=True)
class Stage:
    name: str
    downstream: tuple[str, ...] = ()
    starts_from: tuple[str, ...] = ()  # the stages whose checkpoint it starts from, the first complete one wins
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
    Stage("baseline_eval", ("diversity_check",), summarized=True, tracked=True, timeout=EVAL_TIMEOUT,
          why_timeout=EVAL_WHY),
    Stage("diversity_check", ("plan_training",), summarized=True, tracked=True, timeout=EVAL_TIMEOUT,
          why_timeout=EVAL_WHY),
    Stage("plan_training", ("sft", "rft", "stop")),
    Stage("stop", ("report",), summarized=True, tracked=True),
    Stage("sft", ("diversity_recheck",), starts_from=("baseline_eval",), summarized=True,
          timeout=timedelta(hours=1), why_timeout="submit or start the trainer, then defer; complete on resume"),
    Stage("diversity_recheck", ("plan_rft",), starts_from=("sft",), summarized=True, tracked=True,
          timeout=EVAL_TIMEOUT, why_timeout=EVAL_WHY),
    Stage("plan_rft", ("rft", "stop")),
    Stage("rft", ("checkpoint_eval",), starts_from=("sft", "baseline_eval"), summarized=True,
          timeout=timedelta(hours=1), why_timeout="submit or start the trainer, then defer; complete on resume"),
    Stage("checkpoint_eval", ("gate",), starts_from=("rft",), summarized=True, tracked=True, timeout=EVAL_TIMEOUT,
          why_timeout=EVAL_WHY),
    Stage("gate", ("choose_outcome", "promote", "iterate"), summarized=True, tracked=True),
    Stage("choose_outcome", ("approve_promotion", "promote", "iterate", "reject", "report")),
    Stage("approve_promotion", ("promote",), timeout=timedelta(minutes=5),
          why_timeout="the wait for a person is its response_timeout, deferred"),
    Stage("promote", ("report",), summarized=True),
    Stage("iterate", ("start_next_cycle",)),
    Stage("start_next_cycle", ("report",)),
    Stage("reject", ("report",), timeout=timedelta(minutes=5)),
    Stage("report"),
)

BY_NAME = {s.name: s for s in STAGES}
EDGES = {s.name: set(s.downstream) for s in STAGES}
SUMMARIZED = tuple(s.name for s in STAGES if s.summarized)
TRACKED = tuple(s.name for s in STAGES if s.tracked)


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; the cycle's stages: {', '.join(BY_NAME)}") from None


def timeout(task_id: str) -> timedelta:
    """The task's execution_timeout (a task outside the graph gets the bookkeeping one)."""
    return BY_NAME[task_id].timeout if task_id in BY_NAME else SHORT
