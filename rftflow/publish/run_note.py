"""The DAG run's note: the cycle's outcome at a glance in the Airflow UI's run list ("PROMOTED: ...").

Airflow 3's Task SDK cannot set a run's note (its execution API reads notes; only triggering a run sets
one), and a task started by a worker may not open the metadata database. So the note is written

1. through the ORM where the task may (`dag.test()`, `airflow dags test`, `airflow tasks test`: the tasks
   run inside that process, which holds the metadata database); else
2. through the public REST API (PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}) when RFTFLOW_AIRFLOW_API_URL
   names the API server and RFTFLOW_AIRFLOW_API_TOKEN, or RFTFLOW_AIRFLOW_API_USERNAME and
   RFTFLOW_AIRFLOW_API_PASSWORD (the simple auth manager's /auth/token), give the task a user allowed to
   edit runs.

When neither is possible the task logs a warning and goes on: the note is a courtesy, never a failure.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

API_URL_ENV = "RFTFLOW_AIRFLOW_API_URL"
API_TOKEN_ENV = "RFTFLOW_AIRFLOW_API_TOKEN"
API_USER_ENV = "RFTFLOW_AIRFLOW_API_USERNAME"
API_PASSWORD_ENV = "RFTFLOW_AIRFLOW_API_PASSWORD"
MAX_NOTE = 1000  # the dag_run_note column (and the REST API's limit)

# summary outcome -> the word the note starts with
LABELS = {"promoted": "PROMOTED", "held": "HOLD", "hold": "HOLD", "not_promoted": "NOT PROMOTED",
          "rejected": "REJECTED", "stopped": "STOPPED", "iterating": "ITERATE", "incomplete": "INCOMPLETE"}


def note_text(outcome: str, reason: str | None) -> str:
    """"PROMOTED: <reason on one line>", at most MAX_NOTE characters."""
    label = LABELS.get(str(outcome).lower(), str(outcome).upper())
    one_line = re.sub(r"\s+", " ", str(reason or "")).strip() or "no reason recorded"
    text = f"{label}: {one_line}"
    return text if len(text) <= MAX_NOTE else text[:MAX_NOTE - 3] + "..."


def set_run_note(dag_id: str, run_id: str, text: str) -> str | None:
    """Set the run's note; returns how ("database" or "api"), or None after logging a warning."""
    if len(text) > MAX_NOTE:
        raise ValueError(f"run note: at most {MAX_NOTE} characters, got {len(text)}")
    problems = []
    try:
        if _set_in_db(dag_id, run_id, text):
            return "database"
        problems.append(f"no run {run_id} of {dag_id} in the metadata database")
    except Exception as err:  # a worker's task may not open the database (Airflow 3): try the API
        problems.append(f"database: {type(err).__name__}: {_first_line(err)}")
    if os.environ.get(API_URL_ENV):
        try:
            _set_via_api(os.environ[API_URL_ENV], dag_id, run_id, text)
            return "api"
        except Exception as err:
            problems.append(f"API: {type(err).__name__}: {_first_line(err)}")
    else:
        problems.append(f"API: {API_URL_ENV} is not set")
    from rftflow.redact import redact_text

    log.warning("could not set the run's note %r (the task goes on): %s", text,
                redact_text("; ".join(problems)))
    return None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _set_in_db(dag_id: str, run_id: str, text: str) -> bool:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if dag_run is None:
            return False
        if dag_run.dag_run_note is None:
            dag_run.note = (text, None)
        else:
            dag_run.dag_run_note.content = text
    return True


def _set_via_api(base_url: str, dag_id: str, run_id: str, text: str, timeout_s: float = 20.0) -> None:
    import httpx

    base = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {_token(base, timeout_s)}"}
    url = f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
    response = httpx.patch(url, params={"update_mask": "note"}, json={"note": text}, headers=headers,
                           timeout=timeout_s)
    response.raise_for_status()


def _token(base: str, timeout_s: float) -> str:
    if token := os.environ.get(API_TOKEN_ENV):
        return token
    user, password = os.environ.get(API_USER_ENV), os.environ.get(API_PASSWORD_ENV)
    if not user or not password:
        raise ValueError(f"set {API_TOKEN_ENV}, or {API_USER_ENV} and {API_PASSWORD_ENV}, for {API_URL_ENV}")
    import httpx

    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=timeout_s)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return str(body["access_token"])
