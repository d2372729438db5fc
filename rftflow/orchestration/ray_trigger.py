"""The deferred wait for a Ray job: the triggerer polls the job over the Jobs REST API, no worker slot held.

On every poll the job's new log lines (the trainers' `step n/N | loss ... | left ~...` lines, Ray Train's own)
go into the task log, and status changes are said once. The trigger fires when the job ends (SUCCEEDED,
FAILED, STOPPED), when the cluster cannot be asked for `unreachable_s` in a row, or at `deadline`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from rftflow.backends.ray.client import TERMINAL, RayApiError, RayJobs, plain, tail

RECENT = 200  # lines remembered to drop Ray's repeated blocks


class LogFollower:
    """The lines of a job's log not yet shown; the log is read whole (the API has no offset) and cut here."""

    def __init__(self, jobs: RayJobs, submission_id: str, shown: int = 0):
        self.jobs, self.submission_id, self.shown = jobs, submission_id, shown
        self._recent: deque[str] = deque()
        self._seen: set[str] = set()

    def new_lines(self) -> list[str]:
        lines = plain(self.jobs.logs(self.submission_id)).splitlines()
        if len(lines) < self.shown:  # a new attempt's log, or a truncated one: start over
            self.shown = 0
        fresh, self.shown = lines[self.shown:], len(lines)
        # Ray Train hands a worker's output to the driver twice on some versions (a block of lines, then the same
        # block again): a line identical to one of the last RECENT lines is said once.
        kept: list[str] = []
        for line in fresh:
            if not line.strip() or line in self._seen:
                continue
            kept.append(line)
            self._recent.append(line)
            self._seen.add(line)
            if len(self._recent) > RECENT:
                self._seen.discard(self._recent.popleft())
        return kept


class RayJobTrigger(BaseTrigger):
    """Events: {"status": SUCCEEDED | FAILED | STOPPED | lost | timeout, "job_name", "message", "log_tail"}."""

    def __init__(self, submission_id: str, deadline: float, options: dict[str, Any], poll_s: float = 5.0,
                 unreachable_s: float = 600.0, follow_logs: bool = True) -> None:
        super().__init__()
        self.submission_id, self.deadline, self.options = submission_id, deadline, dict(options)
        self.poll_s, self.unreachable_s, self.follow_logs = poll_s, unreachable_s, follow_logs
        self.address = self.options.get("address")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # No token or header here (the trigger row is stored in Airflow's database): the triggerer reads them
        # from the connection, env or Variables, as the task did.
        return ("rftflow.orchestration.ray_trigger.RayJobTrigger",
                {"submission_id": self.submission_id, "deadline": self.deadline, "options": self.options,
                 "poll_s": self.poll_s, "unreachable_s": self.unreachable_s, "follow_logs": self.follow_logs})

    def jobs(self) -> RayJobs:
        from rftflow.backends.ray.backend import resolve_ray_options

        options = resolve_ray_options(self.options)
        return RayJobs(options.address or self.address, token=options.token, headers=options.headers)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        jobs = self.jobs()
        follower = LogFollower(jobs, self.submission_id)
        status, failing_since = None, None
        while True:
            try:
                info = await asyncio.to_thread(jobs.info, self.submission_id)
                failing_since = None
            except RayApiError as err:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.unreachable_s:
                    yield TriggerEvent({"status": "lost", "job_name": self.submission_id, "message": str(err),
                                        "log_tail": ""})
                    return
                await asyncio.sleep(self.poll_s)
                continue
            if info is None:
                yield TriggerEvent({"status": "lost", "job_name": self.submission_id, "log_tail": "",
                                    "message": f"the Ray cluster at {self.address} has no job {self.submission_id} "
                                               "(was the head restarted?)"})
                return
            if info.get("status") != status:
                status = info.get("status")
                self.log.info("Ray job %s: %s%s", self.submission_id, status,
                              f" ({info['message']})" if info.get("message") and status != "RUNNING" else "")
            if self.follow_logs:
                try:
                    for line in await asyncio.to_thread(follower.new_lines):
                        self.log.info("%s", line)
                except RayApiError as err:  # logs are a courtesy; the wait goes on
                    self.log.info("Ray job %s: logs not readable now (%s)", self.submission_id, err)
            if status in TERMINAL:
                log_tail = ""
                if status != "SUCCEEDED":
                    try:
                        log_tail = tail(await asyncio.to_thread(jobs.logs, self.submission_id))
                    except RayApiError:
                        log_tail = ""
                yield TriggerEvent({"status": status, "job_name": self.submission_id,
                                    "message": info.get("message") or "", "log_tail": log_tail})
                return
            if time.time() > self.deadline:
                yield TriggerEvent({"status": "timeout", "job_name": self.submission_id, "log_tail": "",
                                    "message": f"still {status} past the stage's time limit"})
                return
            await asyncio.sleep(self.poll_s)
