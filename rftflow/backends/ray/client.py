"""Ray's Jobs REST API, as the Airflow side uses it: submit, look up, stop and read the logs of one job.

Plain HTTP against the cluster's dashboard (`/api/jobs/...`, the API `ray job submit` and
`ray.job_submission.JobSubmissionClient` use), so neither the DAG file, the task nor the triggerer imports
`ray`: an Airflow image needs no Ray to drive a Ray cluster. A token (clusters started with
RAY_AUTH_MODE=token, Anyscale) goes in an `Authorization: Bearer` header; other headers (a KubeRay ingress's
auth) come from the connection.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
LIVE = ("PENDING", "RUNNING")


class RayApiError(RuntimeError):
    """The cluster answered with an error, or could not be reached; the message says which and where."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class RayJobs:
    """The Jobs API of one cluster: `address` is its dashboard URL (http://head:8265)."""

    address: str
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.address.rstrip("/") + path
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (http(s) only)
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace").strip().splitlines()
            raise RayApiError(f"Ray cluster {self.address}: {method} {path} answered {err.code}: "
                              f"{detail[-1] if detail else err.reason}", err.code) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RayApiError(f"Ray cluster {self.address} cannot be reached ({reason}); is the head running and "
                              "its dashboard (port 8265 by default) reachable from here?") from None
        return json.loads(text) if text.strip() else None

    def version(self) -> dict[str, Any]:
        return self._request("GET", "/api/version")

    def submit(self, submission_id: str, entrypoint: str, *, runtime_env: dict[str, Any] | None = None,
               metadata: dict[str, str] | None = None, entrypoint_num_cpus: float | None = None,
               entrypoint_num_gpus: float | None = None) -> str:
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id,
                                "runtime_env": runtime_env or {}, "metadata": metadata or {}}
        if entrypoint_num_cpus is not None:
            body["entrypoint_num_cpus"] = entrypoint_num_cpus
        if entrypoint_num_gpus is not None:
            body["entrypoint_num_gpus"] = entrypoint_num_gpus
        return self._request("POST", "/api/jobs/", body)["submission_id"]

    def info(self, submission_id: str) -> dict[str, Any] | None:
        """The job's details (status, message, start/end times...), or None when the cluster has no such job."""
        try:
            return self._request("GET", f"/api/jobs/{submission_id}")
        except RayApiError as err:
            if err.status == 404:
                return None
            raise

    def stop(self, submission_id: str) -> bool:
        """Ask the cluster to stop the job; True when it was stopped by this call (False: already ended)."""
        return bool(self._request("POST", f"/api/jobs/{submission_id}/stop").get("stopped"))

    def logs(self, submission_id: str) -> str:
        return (self._request("GET", f"/api/jobs/{submission_id}/logs") or {}).get("logs", "")

    def list(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/jobs/") or []


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    """Ray colours its log prefixes; a task log and an error message want the text."""
    return ANSI.sub("", text)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(plain(text).rstrip().splitlines()[-lines:])
