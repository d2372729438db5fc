"""The deferred local training task's trigger, with the trainer's progress in the task log.

Waits exactly as `LocalTrainerTrigger` does (result and lease files) and, on each poll, logs the trainer's
progress lines (rftflow.backends.local.progress). In a deployment the triggerer writes a trigger's log lines into the
task instance's log, so the task log shows them under the deferral; `dag.test()` and `airflow dags test`
print them with the other task output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import TriggerEvent

from rftflow.orchestration.local_trigger import LocalTrainerTrigger


class LocalTrainerProgressTrigger(LocalTrainerTrigger):
    """`LocalTrainerTrigger` that also logs the trainer's progress (step n/N, loss or reward, time left)."""

    def __init__(self, job_dir: str, kind: str, owner: str, deadline: float, poll_s: float = 2.0,
                 every_s: float | None = None) -> None:
        super().__init__(job_dir=job_dir, kind=kind, owner=owner, deadline=deadline, poll_s=poll_s)
        self.every_s = every_s

    @classmethod
    def wrapping(cls, trigger: LocalTrainerTrigger) -> LocalTrainerProgressTrigger:
        _, kwargs = trigger.serialize()
        return cls(**kwargs)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return ("rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger", {**kwargs, "every_s": self.every_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rftflow.backends.local.progress import ProgressReporter
        from rftflow.backends.local.runner import trainer_event

        reporter = ProgressReporter(self.kind, self.job_dir, owner=self.owner, every=self.every_s)
        while True:
            # Small file reads, off the triggerer's event loop all the same.
            event = await asyncio.to_thread(trainer_event, self.kind, self.job_dir, self.owner, self.deadline)
            for line in await asyncio.to_thread(reporter.poll):
                self.log.info("%s", line)
            if event is not None:
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_s)
