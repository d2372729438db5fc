"""The Airflow operator for training stages: runs locally, or submits an AWS job and defers.

A deferred stage holds no worker slot while a multi-hour job runs; a retry finds the same
deterministic job (or the stage's complete manifest) instead of paying for a second one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import BaseOperator


class TrainingStageOperator(BaseOperator):
    """`sft` or `rft` of one cycle, on whatever backend the run's params name."""

    ui_color = "#f2d7b6"

    def __init__(self, *, stage: str, **kwargs: Any) -> None:
        if stage not in ("sft", "rft"):
            raise ValueError(f"TrainingStageOperator runs sft or rft, not {stage!r}")
        super().__init__(**kwargs)
        self.stage = stage
        self._pending: dict[str, Any] | None = None

    def _context(self, context: Any):
        from rftflow import cycle

        p = cycle.parse_params(dict(context["params"]))
        return p, cycle.stage_context(p, context["dag"].dag_id, context["run_id"], self.stage)

    def execute(self, context: Any) -> dict[str, Any]:
        from rftflow import cycle
        from rftflow.backends.base import PendingJob

        p, ctx = self._context(context)
        result = cycle.start_training(p, ctx)
        if isinstance(result, PendingJob):
            self._pending = dataclasses.asdict(result)
            self.log.info("%s: waiting for %s %s (deferred)", self.stage, result.kind, result.job_name)
            self.defer(trigger=cycle.backend_for(p).trigger_for(result), method_name="execute_complete",
                       kwargs={"pending": self._pending})
        return cycle.training_result(result)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None,
                         pending: dict[str, Any] | None = None) -> dict[str, Any]:
        from rftflow import cycle
        from rftflow.backends.base import PendingJob

        p, ctx = self._context(context)
        job = PendingJob(**(pending or {}))
        manifest = cycle.backend_for(p).complete(ctx, job, event or {})
        return cycle.training_result(manifest)

    def on_kill(self) -> None:
        if self._pending is None:
            return
        from rftflow import cycle
        from rftflow.backends.base import PendingJob

        p = cycle.parse_params(dict(self.params))
        cycle.backend_for(p).stop(PendingJob(**self._pending))


class StartNextCycleOperator(BaseOperator):
    """Triggers the next cycle of the same DAG with the conf the `iterate` task computed.

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

        conf = self.conf
        run_id = f"cycle-{conf['cycle']}__{conf['parent_run_id']}"[:250]
        self.log.info("starting cycle %s of %s from %s", conf["cycle"], conf["max_cycles"], conf["base_model"])
        trigger = TriggerDagRunOperator(task_id=self.task_id, trigger_dag_id=self.trigger_dag_id, conf=conf,
                                        trigger_run_id=run_id, wait_for_completion=False)
        return trigger.execute(context)
