"""The deferred wait for a Bedrock open-weight RFT job: the triggerer polls the job on the OpenAI-compatible
endpoint; no worker slot is held while it trains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rftflow.backends.aws.bedrock_openai import OpenWeightClient, wait_event


class OpenWeightJobTrigger(BaseTrigger):
    """Fires when the open-weight RFT job ends or `deadline` (epoch seconds) passes. Events: {"status": success |
    failed | timeout, "job_name", "message"}. No key is stored with the trigger: the client is rebuilt from the
    backend options (the configured Bedrock API key, or a short-term one made from the AWS connection)."""

    def __init__(self, job_id: str, region: str, deadline: float, poll_s: float = 300.0,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.job_id, self.region, self.deadline, self.poll_s = job_id, region, deadline, poll_s
        self.options = dict(options or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("rftflow.orchestration.open_weight_trigger.OpenWeightJobTrigger",
                {"job_id": self.job_id, "region": self.region, "deadline": self.deadline, "poll_s": self.poll_s,
                 "options": self.options})

    def _client(self) -> OpenWeightClient:
        from rftflow.backends.base import get_backend

        return get_backend("bedrock", **self.options).open_weight_client(self.region)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            event = await asyncio.to_thread(wait_event, self._client, self.job_id, self.deadline)
            if event is not None:
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_s)
