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

from rftflow.cycle import graph


def task_timeout(task_id: str) -> timedelta:
    """The task's execution_timeout, from the stage graph (rftflow.cycle.graph: each with its reason)."""
    return graph.timeout(task_id)


WAITING = "waiting.json"  # in a task's stage folder: the stage of it that waits for a remote job
CHAMPION_ALIAS = "rftflow-champion"  # AssetAlias the promote task adds rftflow://champion/{family} events to
OPENS_TRACKING = "validate_data"  # the cycle's first task opens its MLflow run
# Tasks whose results go into the cycle's MLflow run as soon as they are known (eval, gain, diversity, gate).
TRACKS_SO_FAR = graph.TRACKED


def _tracked(summary_of: Any, what: str) -> dict[str, Any] | None:
    """Best effort around the cycle's MLflow run: a failure here is logged, never the task's."""
    import logging

    from rftflow.publish.tracking import tracking_enabled

    if not tracking_enabled():  # RFTFLOW_TRACKING=off: nothing is imported, opened or logged
        return None
    try:
        return summary_of()
    except Exception as err:
        logging.getLogger(__name__).warning("MLflow %s skipped (the cycle goes on): %s", what, err)
        return None


def _start_summary(p: Any, ctx: Any) -> dict[str, Any]:
    """What is known of a cycle when it starts: its key, experiment and start params."""
    from rftflow.redact import redact

    return {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "cycle": ctx.cycle, "model_family": p.model_family,
            "backend": p.backend, "max_cycles": p.max_cycles, "parent_run_id": p.parent_run_id,
            "params": redact(p.model_dump(mode="json"))}


def cycle_run(context: Any, stage: str) -> dict[str, Any] | None:
    """The cycle's MLflow run ({"mlflow_run_id", "tracking_uri", ...}), opened now if no task opened it yet."""
    def go() -> dict[str, Any]:
        from rftflow.cycle import context as cycle
        from rftflow.publish.tracking import default_tracking_uri, open_cycle_run

        p, ctx = cycle.for_task(context, stage)
        uri = default_tracking_uri()
        return {**open_cycle_run(_start_summary(p, ctx), uri), "uri": uri}

    return _tracked(go, "run opening")


def log_so_far(context: Any, stage: str) -> dict[str, Any] | None:
    """The cycle's results known after `stage` (eval, gain, diversity, gate), into its MLflow run now."""
    def go() -> dict[str, Any]:
        from rftflow.cycle import context as cycle
        from rftflow.publish.summary import build_summary
        from rftflow.publish.tracking import log_so_far as log_now

        p, ctx = cycle.for_task(context, stage)
        return log_now({**build_summary(p, ctx), "params": _start_summary(p, ctx)["params"]})

    return _tracked(go, "logging")


def note_outcome(context: Any, outcome: str, reason: str | None) -> str | None:
    """Set the DAG run's note to "PROMOTED / HOLD / REJECTED / STOPPED: <reason>"; never fails the task."""
    import logging

    from rftflow.publish.run_note import note_text, set_run_note

    text = note_text(outcome, reason)
    dag_run = context.get("dag_run")
    try:
        how = set_run_note(dag_run.dag_id, dag_run.run_id, text)
    except Exception as err:  # the note is a courtesy
        logging.getLogger(__name__).warning("could not set the run's note (the task goes on): %s", err)
        return None
    if how:
        logging.getLogger(__name__).info("run note: %s", text)
    return how


class CycleTask(BaseOperator):
    """One stage of the cycle: runs `rftflow.cycle.tasks.<task_id>(context, **inputs)` and returns its small dict.

    `inputs` maps argument names to upstream results (`other_task.output`); Airflow resolves them and wires
    the dependency. Plain operators rather than TaskFlow keep the DAG file's parse cost low: no decorator
    machinery and no standard-provider import at parse time.
    """

    template_fields = ("inputs",)
    ui_color = "#e3eefc"

    def __init__(self, *, inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("execution_timeout", task_timeout(kwargs.get("task_id", "")))
        super().__init__(**kwargs)
        self.inputs = inputs or {}

    def execute(self, context: Any) -> Any:
        from rftflow.backends.base import StageDeferred, deferrable
        from rftflow.cycle import tasks
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()  # no credential from a URI or a secret env var in the task log
        try:
            with redacted_errors(), deferrable():
                result = getattr(tasks, self.task_id)(context, **self.inputs)
        except StageDeferred as waiting:  # a remote eval/sampling job: wait without a worker slot
            self._defer_on(context, waiting)
        self._watch(context, result)
        return result

    def _defer_on(self, context: Any, waiting: Any) -> None:
        from rftflow.artifacts import store
        from rftflow.cycle import context as cycle

        pending = waiting.pending
        p, task_ctx = cycle.for_task(context, self.task_id)
        backend = cycle.backend_for(p)
        # which of this task's stages waits: some runners (dag.test) resume with the trigger's event only
        store.write_json(store.join(task_ctx.uri, WAITING), {"stage": waiting.ctx.stage, "job": pending.job_name})
        timeout = pending.details.get("wait_timeout_s")
        self.log.info("%s: waiting for %s %s (deferred: no worker slot is held while it runs)", waiting.ctx.stage,
                      pending.kind, pending.job_name)
        self.defer(trigger=with_progress(backend.trigger_for(pending), None, pending, backend), method_name="resume",
                   kwargs={"stage": waiting.ctx.stage},
                   timeout=timedelta(seconds=float(timeout)) if timeout else None)

    def resume(self, context: Any, event: dict[str, Any] | None = None, stage: str | None = None, **_: Any) -> Any:
        """The job a stage of this task waited for has ended: complete that stage (its backend reads the job
        from the stage's pending.json), then run the task again (finished stages are found complete; another
        remote stage may defer again)."""
        from rftflow.artifacts import store
        from rftflow.cycle import context as cycle
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()
        if stage is None:
            marker = store.join(cycle.for_task(context, self.task_id)[1].uri, WAITING)
            stage = store.read_json(marker)["stage"] if store.exists(marker) else self.task_id
        p, ctx = cycle.for_task(context, stage)
        with redacted_errors():
            cycle.backend_for(p).complete(ctx, None, event or {})
        return self.execute(context)

    def _watch(self, context: Any, result: Any) -> None:
        """What a person watching the cycle sees of this task: its results in the cycle's MLflow run, and
        the outcome in the run's note once it is known."""
        if self.task_id == OPENS_TRACKING:
            opened = cycle_run(context, self.task_id)
            if opened and opened.get("mlflow_run_id"):
                self.log.info("MLflow run of this cycle: %s%s", opened["mlflow_run_id"],
                              f" ({opened['mlflow_url']})" if opened.get("mlflow_url") else "")
        elif self.task_id in TRACKS_SO_FAR:
            log_so_far(context, self.task_id)
        if self.task_id == "choose_outcome" and isinstance(result, list) and "approve_promotion" in result:
            decision = self.inputs.get("decision") or {}
            waiting = "waiting for a reviewer (Required Actions)"
            if decision.get("decision") == "hold":
                note_outcome(context, "hold", f"{waiting}: {decision.get('reason') or ''}")
            else:
                note_outcome(context, "hold", f"{waiting}: the gate passed and promotion needs approval")
        elif self.task_id == "report" and isinstance(result, dict) and result.get("outcome"):
            note_outcome(context, result["outcome"], result.get("outcome_reason"))


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
        kwargs.setdefault("execution_timeout", task_timeout(stage))
        super().__init__(**kwargs)
        self.stage = stage
        self._pending: dict[str, Any] | None = None
        self._params: Any = None  # the run's resolved params, kept for on_kill

    def execute(self, context: Any) -> dict[str, Any]:
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()
        with redacted_errors():
            return self._execute(context)

    def _execute(self, context: Any) -> dict[str, Any]:
        from rftflow.backends.base import PendingJob
        from rftflow.backends.local.progress import every_s
        from rftflow.backends.local.runner import extra_child_env
        from rftflow.cycle import context as cycle
        from rftflow.cycle.stages.training import start_training, training_result
        from rftflow.publish.tracking import RUN_ENV, URI_ENV

        p, ctx = cycle.for_task(context, self.stage)
        self._params = p
        every = every_s()  # a bad RFTFLOW_PROGRESS_EVERY_S fails here, before anything starts
        # A trainer started here logs its step metrics into the cycle's MLflow run as it goes.
        run = cycle_run(context, self.stage) if p.backend == "local" else None
        env = {RUN_ENV: run["mlflow_run_id"], URI_ENV: run["uri"]} if run and run.get("mlflow_run_id") else {}
        # Local training detaches too: the task defers while the trainer (in its own session, holding the
        # stage's lease) runs, so a task killed by Airflow or a lost worker neither kills nor duplicates it.
        with extra_child_env(env):
            result = start_training(p, ctx, detach=True)
        if isinstance(result, PendingJob):
            self._pending = dataclasses.asdict(result)
            self.log.info("%s: waiting for %s %s (deferred)", self.stage, result.kind, result.job_name)
            timeout = result.details.get("wait_timeout_s")
            backend = cycle.backend_for(p)
            self.defer(trigger=with_progress(backend.trigger_for(result), every, result, backend),
                       method_name="execute_complete",
                       timeout=timedelta(seconds=float(timeout)) if timeout else None)
        return training_result(result)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
        """The job has ended: the backend completes the stage from the job it saved with the stage when it
        submitted (pending.json), the one place a pending job is kept; the trigger's event must name it."""
        from rftflow.cycle import context as cycle
        from rftflow.cycle.stages.training import training_result
        from rftflow.redact import install_log_redaction, redacted_errors

        install_log_redaction()
        p, ctx = cycle.for_task(context, self.stage)
        with redacted_errors():
            manifest = cycle.backend_for(p).complete(ctx, None, event or {})
        return training_result(manifest)

    def on_kill(self) -> None:
        if self._pending is None or self._params is None:
            return
        from rftflow.backends.base import PendingJob
        from rftflow.cycle import context as cycle

        cycle.backend_for(self._params).stop(PendingJob(**self._pending))


AWS_WATCHED = {"sagemaker_training": "sagemaker", "bedrock_customization": "bedrock"}


def with_progress(trigger: Any, every: float | None = None, pending: Any = None, backend: Any = None) -> Any:
    """The backend's trigger, logging the job's progress on each wake-up where it can see it: a local
    trainer's progress file (rftflow.orchestration.local_progress_trigger); a SageMaker or Bedrock job's status transitions
    and latest metrics (rftflow.orchestration.aws_watch_trigger, around the provider's trigger, which still does the wait)."""
    from rftflow.orchestration.local_trigger import LocalTrainerTrigger

    if type(trigger) is LocalTrainerTrigger:
        from rftflow.orchestration.local_progress_trigger import LocalTrainerProgressTrigger

        watched = LocalTrainerProgressTrigger.wrapping(trigger)
        watched.every_s = every
        return watched
    service = AWS_WATCHED.get(getattr(pending, "kind", ""))
    options = getattr(backend, "options", None)
    if service and options is not None:
        from rftflow.orchestration.aws_watch_trigger import AwsJobWatchTrigger

        return AwsJobWatchTrigger.wrapping(trigger, service, pending.job_name,
                                           pending.details.get("region") or options.region_name,
                                           options.aws_conn_id, poll_s=float(options.waiter_delay_s))
    return trigger


def notify_failure(context: Any) -> None:
    """on_failure_callback of every cycle task: tells the run's `notify` targets which task failed.
    rftflow.publish.notify (and Airflow's notifier machinery) is imported only when a task fails, not at parse."""
    from rftflow.publish.notify import CycleFailureNotifier
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

    from rftflow.cycle import context as cycle

    log = logging.getLogger(__name__)
    p, ctx = cycle.for_task(context, context["task"].task_id)
    backend = cycle.backend_for(p)
    pending = backend.load_pending(ctx)  # None: nothing submitted (or a backend with no remote jobs)
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
        kwargs.setdefault("execution_timeout", task_timeout(kwargs.get("task_id", "")))
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
