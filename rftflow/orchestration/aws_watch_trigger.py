"""What a deferred AWS stage shows in its task log while it waits: the job's status transitions and its latest
metrics, on every wake-up.

`AwsJobWatchTrigger` wraps the amazon provider's trigger (which does the waiting, with its own waiter
semantics and events) and, every `poll_s` seconds, describes the job and logs what changed: SageMaker's
`SecondaryStatusTransitions` (Starting, Downloading, Training, Uploading, ... with their messages) and
`FinalMetricDataList`; Bedrock's customization status and its validation / data-processing / training
details. A describe that fails is logged once and never ends the wait.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class JobWatcher:
    """Describes one job and returns the lines worth logging since the last look."""

    def __init__(self, service: str, job_name: str, region: str | None, aws_conn_id: str | None,
                 client: Any = None):
        if service not in ("sagemaker", "bedrock"):
            raise ValueError(f"service: expected sagemaker or bedrock; got {service!r}")
        self.service, self.job_name = service, job_name
        self.region, self.aws_conn_id = region, aws_conn_id
        self._client = client
        self._seen: set[tuple[str, str]] = set()
        self._last: str | None = None
        self._failed_once = False

    def _api(self) -> Any:
        if self._client is None:
            from rftflow.backends.aws.clients import AwsClients

            self._client = AwsClients(self.aws_conn_id, self.region).client(self.service)
        return self._client

    def poll(self) -> list[str]:
        try:
            if self.service == "sagemaker":
                return self._sagemaker(self._api().describe_training_job(TrainingJobName=self.job_name))
            return self._bedrock(self._api().get_model_customization_job(jobIdentifier=self.job_name))
        except Exception as err:  # the wait goes on; say it once
            if self._failed_once:
                return []
            self._failed_once = True
            return [f"{self.job_name}: could not describe the job ({err}); still waiting for it"]

    def _sagemaker(self, job: dict[str, Any]) -> list[str]:
        lines = []
        for t in job.get("SecondaryStatusTransitions") or []:
            key = (str(t.get("Status")), str(t.get("StartTime")))
            if key not in self._seen:
                self._seen.add(key)
                message = f": {t['StatusMessage']}" if t.get("StatusMessage") else ""
                lines.append(f"{self.job_name}: {t.get('Status')}{message}")
        metrics = ", ".join(f"{m['MetricName']}={m['Value']:.4g}" for m in job.get("FinalMetricDataList") or []
                            if "MetricName" in m and "Value" in m)
        status = f"{job.get('TrainingJobStatus')}/{job.get('SecondaryStatus')}"
        summary = f"{status}; latest metrics {metrics}" if metrics else status
        if summary != self._last:
            self._last = summary
            lines.append(f"{self.job_name}: {summary}")
        return lines

    def _bedrock(self, job: dict[str, Any]) -> list[str]:
        details = job.get("statusDetails") or {}
        parts = [f"{name.replace('Details', '')} {d.get('status')}" for name, d in sorted(details.items())
                 if isinstance(d, dict) and d.get("status")]
        summary = f"{job.get('status')}" + (f" ({', '.join(parts)})" if parts else "")
        if job.get("failureMessage"):
            summary += f": {job['failureMessage']}"
        if summary == self._last:
            return []
        self._last = summary
        return [f"{self.job_name}: {summary}"]


class AwsJobWatchTrigger(BaseTrigger):
    """The provider's trigger `inner` ((classpath, kwargs), as it serializes), plus the job's progress in the log."""

    def __init__(self, inner: list[Any] | tuple[str, dict[str, Any]], service: str, job_name: str,
                 region: str | None = None, aws_conn_id: str | None = "aws_default", poll_s: float = 60.0) -> None:
        super().__init__()
        self.inner = (str(inner[0]), dict(inner[1]))
        self.service, self.job_name, self.region = service, job_name, region
        self.aws_conn_id, self.poll_s = aws_conn_id, float(poll_s)

    @classmethod
    def wrapping(cls, trigger: BaseTrigger, service: str, job_name: str, region: str | None,
                 aws_conn_id: str | None, poll_s: float) -> AwsJobWatchTrigger:
        return cls(trigger.serialize(), service, job_name, region, aws_conn_id, poll_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("rftflow.orchestration.aws_watch_trigger.AwsJobWatchTrigger",
                {"inner": list(self.inner), "service": self.service, "job_name": self.job_name,
                 "region": self.region, "aws_conn_id": self.aws_conn_id, "poll_s": self.poll_s})

    def inner_trigger(self) -> BaseTrigger:
        module, _, name = self.inner[0].rpartition(".")
        return getattr(importlib.import_module(module), name)(**self.inner[1])

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watcher = JobWatcher(self.service, self.job_name, self.region, self.aws_conn_id)
        events = self.inner_trigger().run().__aiter__()
        waiting = asyncio.ensure_future(events.__anext__())
        try:
            while True:
                for line in await asyncio.to_thread(watcher.poll):
                    self.log.info("%s", line)
                done, _ = await asyncio.wait({waiting}, timeout=self.poll_s)
                if waiting in done:
                    for line in await asyncio.to_thread(watcher.poll):  # the final state, before the event
                        self.log.info("%s", line)
                    yield waiting.result()
                    return
        finally:
            if not waiting.done():
                waiting.cancel()
