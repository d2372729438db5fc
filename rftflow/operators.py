"""The cycle's operators and callbacks: training stages run locally, or submit an AWS job and defer.

A deferred stage holds no worker slot while a multi-hour job runs; a retry finds the same
deterministic job (or the stage's complete manifest) instead of paying for a second one.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.branch import BranchMixIn

CHAMPION_ALIAS = "rftflow-champion"  # AssetAlias the promote task adds rftflow://champion/{family} events to


class CycleTask(BaseOperator):
    """One stage of the cycle: runs `rftflow.tasks.<task_id>(context, **inputs)` and returns its small dict.

    `inputs` maps argument names to upstream results (`other_task.output`); Airflow resolves them and wires
    the dependency. Plain operators rather than TaskFlow keep the DAG file's parse cost low: no decorator
    machinery and no standard-provider import at parse time.
    """

    template_fields = ("inputs",)
    ui_color = "#e3eefc"

    def __init__(self, *, inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inputs = inputs or {}

    def execute(self, context: Any) -> Any:
        from rftflow import tasks
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()  # no credential from a URI or a secret env var in the task log
        with redacted_errors():
            return getattr(tasks, self.task_id)(context, **self.inputs)


class CycleBranch(CycleTask, BranchMixIn):
    """A cycle stage that chooses which downstream task ids run (`plan_training`, `choose_outcome`)."""

    ui_color = "#fde9c9"

    def execute(self, context: Any) -> Any:
        return self.do_branch(context, super().execute(context))


class TrainingStageOperator(BaseOperator):
    """`sft` or `rft` of one cycle, on whatever backend the run's params name."""

    ui_color = "#f2d7b6"

    def __init__(self, *, stage: str, **kwargs: Any) -> None:
        if stage not in ("sft", "rft"):
            raise ValueError(f"TrainingStageOperator runs sft or rft, not {stage!r}")
        super().__init__(**kwargs)
        self.stage = stage
        self._pending: dict[str, Any] | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()
        with redacted_errors():
            return self._execute(context)

    def _execute(self, context: Any) -> dict[str, Any]:
        from rftflow import cycle
        from rftflow.backends.base import PendingJob

        p, ctx = cycle.for_task(context, self.stage)
        # Local training detaches too: the task defers while the trainer (in its own session, holding the
        # stage's lease) runs, so a task killed by Airflow or a lost worker neither kills nor duplicates it.
        result = cycle.start_training(p, ctx, detach=True)
        if isinstance(result, PendingJob):
            self._pending = dataclasses.asdict(result)
            self.log.info("%s: waiting for %s %s (deferred)", self.stage, result.kind, result.job_name)
            timeout = result.details.get("wait_timeout_s")
            self.defer(trigger=cycle.backend_for(p).trigger_for(result), method_name="execute_complete",
                       kwargs={"pending": self._pending},
                       timeout=timedelta(seconds=float(timeout)) if timeout else None)
        return cycle.training_result(result)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None,
                         pending: dict[str, Any] | None = None) -> dict[str, Any]:
        from rftflow import cycle
        from rftflow.backends.base import PendingJob
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()
        p, ctx = cycle.for_task(context, self.stage)
        # Some runners (dag.test) resume with the event only; the backend then reloads the job it
        # recorded under the stage folder when it submitted.
        job = PendingJob(**pending) if pending else None
        with redacted_errors():
            manifest = cycle.backend_for(p).complete(ctx, job, event or {})
        return cycle.training_result(manifest)

    def on_kill(self) -> None:
        if self._pending is None:
            return
        from rftflow import cycle
        from rftflow.backends.base import PendingJob

        p = cycle.parse_params(dict(self.params))
        cycle.backend_for(p).stop(PendingJob(**self._pending))


def notify_failure(context: Any) -> None:
    """on_failure_callback of every cycle task: tells the run's `notify` targets which task failed.
    rftflow.notify (and Airflow's notifier machinery) is imported only when a task fails, not at parse."""
    from rftflow.notify import CycleFailureNotifier
    from rftflow.redact import install_log_redaction

    install_log_redaction()
    CycleFailureNotifier()(context)


def stop_remote_job(context: Any) -> None:
    """on_failure_callback of training tasks: a task failed (or marked failed) while deferred gets no
    on_kill, so stop the AWS job it recorded under its stage folder — but only one this run will never
    come back for. Left running, and said so in the log: a job a retry of this task will re-attach to,
    and one the task only stopped waiting for (it may still finish fine; clearing the task re-attaches
    to it, by its deterministic name, instead of paying for a second job)."""
    import logging

    from rftflow import cycle

    log = logging.getLogger(__name__)
    p, ctx = cycle.for_task(context, context["task"].task_id)
    backend = cycle.backend_for(p)
    load_pending = getattr(backend, "load_pending", None)
    if load_pending is None:
        return
    pending = load_pending(ctx)
    if pending is None:
        return
    reason = comes_back_for(context)
    if reason is not None:
        log.warning("%s: left %s %s running: %s", ctx.stage, pending.kind, pending.job_name, reason)
        return
    log.warning("%s: stopping %s %s: the task failed for good and this run will not come back for it",
                ctx.stage, pending.kind, pending.job_name)
    backend.stop(pending)


def comes_back_for(context: Any) -> str | None:
    """Why this run will come back for the failed task's remote job (None when it never will)."""
    ti = context.get("ti") or context.get("task_instance")
    state = str(getattr(ti, "state", "") or "").lower()
    if state.endswith("up_for_retry"):
        return "the task will be retried and re-attaches to it"
    error = context.get("exception")
    if error is not None and (type(error).__name__ in ("WaitEnded", "TaskDeferralTimeout")):
        return ("the task only stopped waiting; the job may still finish — clear the task to re-attach to "
                "it, or stop it in the AWS console")
    return None


class StartNextCycleOperator(BaseOperator):
    """Triggers a cycle run: the next cycle (conf from the `iterate` task), or a fresh one from the champion.

    Wraps the standard provider's TriggerDagRunOperator at run time: importing it at parse time costs
    about a second per DAG file parse.
    """

    template_fields = ("conf",)
    ui_color = "#d7e8f7"

    def __init__(self, *, trigger_dag_id: str, conf: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger_dag_id = trigger_dag_id
        self.conf = conf

    def execute(self, context: Any) -> Any:
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

        conf = dict(self.conf or {})
        run_id = None
        if conf.get("parent_run_id"):  # an iterate: the next cycle's run id shows its lineage
            run_id = f"cycle-{conf['cycle']}__{conf['parent_run_id']}"[:250]
        self.log.info("starting %s (cycle %s) from %s", self.trigger_dag_id, conf.get("cycle", 1),
                      conf.get("base_model", "the champion"))
        trigger = TriggerDagRunOperator(task_id=self.task_id, trigger_dag_id=self.trigger_dag_id, conf=conf,
                                        trigger_run_id=run_id, wait_for_completion=False)
        return trigger.execute(context)
