"""The deferrable wait for a local trainer: the triggerer watches its result and lease files.

The training task starts (or adopts) the trainer, defers and exits, so an hours-long stage depends on
neither the task process nor its worker slot; Airflow's own limits on long-running tasks do not apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class LocalTrainerTrigger(BaseTrigger):
    """Fires once the trainer `owner` in `job_dir` wrote its result, lost its lease (killed, hung, replaced)
    or passed `deadline` (epoch seconds). Events: {"status": success | failed | lost | timeout, ...}."""

    def __init__(self, job_dir: str, kind: str, owner: str, deadline: float, poll_s: float = 2.0) -> None:
        super().__init__()
        self.job_dir, self.kind, self.owner = job_dir, kind, owner
        self.deadline, self.poll_s = deadline, poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("rftflow.orchestration.local_trigger.LocalTrainerTrigger",
                {"job_dir": self.job_dir, "kind": self.kind, "owner": self.owner, "deadline": self.deadline,
                 "poll_s": self.poll_s})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rftflow.backends.local.runner import trainer_event

        while True:
            # Small file reads, off the triggerer's event loop all the same.
            event = await asyncio.to_thread(trainer_event, self.kind, self.job_dir, self.owner, self.deadline)
            if event is not None:
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_s)
