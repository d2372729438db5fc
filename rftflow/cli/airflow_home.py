"""A self-contained Airflow home inside the project (SQLite), for the demo, the CLI and the tests.

Runs `airflow dags test` in a child process with that home, so no scheduler or API server is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rftflow.cycle.params import PROJECT_ROOT


def airflow_env(home: Path, artifact_root: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])),
    })
    if artifact_root:
        env["RFTFLOW_ARTIFACT_ROOT"] = artifact_root
    env.update(extra)
    return env


def airflow_bin() -> str:
    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


def ensure_db(home: Path, env: dict[str, str]) -> None:
    """`airflow db migrate` once per home (SQLite)."""
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    if marker.exists() and (home / "airflow.db").exists():
        return
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    marker.write_text("ok\n")


def dags_test(dag_id: str, conf: dict[str, Any], env: dict[str, str], log_path: Path,
              answer: str | None = None, on_answer: Any = None, progress: Any = None) -> int:
    """Run one DAG run in-process of a child `airflow dags test`; output goes to log_path.

    `airflow dags test` parks a human-in-the-loop task until someone answers it from outside. With `answer`
    (an option of the approval task, e.g. "Reject"), this function answers it the way the UI's Required
    Actions page does, and calls `on_answer(task_id, answer)` first so the caller can say so.
    `progress` (rftflow.publish.terminal.CycleProgress) is fed the output as it grows, and closed at the end.
    """
    from rftflow.publish.terminal import follow

    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = 0
    try:
        with log_path.open("w") as log:
            proc = subprocess.Popen([airflow_bin(), "dags", "test", dag_id, "--conf", json.dumps(conf)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            told = answered = False
            while proc.poll() is None:
                time.sleep(1 if progress is not None else 2)
                if progress is not None:
                    offset = follow(log_path, offset, progress)
                if answer and not answered and HITL_WAITING in log_path.read_text(errors="replace")[-20000:]:
                    if on_answer is not None and not told:
                        on_answer(answer)
                        told = True
                    done = subprocess.run([sys.executable, "-c", _ANSWER, dag_id, answer], env=env, check=False,
                                          capture_output=True, text=True)
                    log.write(done.stdout + done.stderr)
                    log.flush()
                    answered = done.returncode == 0 and "answered " in done.stdout
        if progress is not None:
            follow(log_path, offset, progress)
    finally:
        if progress is not None:
            progress.close()
    return proc.returncode


HITL_WAITING = "Waiting for Human-in-the-loop input"
# What the REST API's HITL update does (airflow.api_fastapi.core_api.routes.public.hitl), for a run of
# `airflow dags test`, which has no API server to answer through.
_ANSWER = """
import sys
import time
from airflow._shared.timezones import timezone
from airflow.models.dagrun import DagRun
from airflow.models.hitl import HITLUser
from airflow.models.taskinstance import TaskInstance as TI
from airflow.models.trigger import handle_event_submit
from airflow.triggers.base import TriggerEvent
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from sqlalchemy import select
from sqlalchemy.orm import joinedload

dag_id, answer = sys.argv[1], sys.argv[2]
with create_session() as session:
    # Only the newest running run is the one `airflow dags test` is waiting on; an older run parked by an
    # interrupted test stays as it is.
    run_id = session.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id, DagRun.state == "running")
                            .order_by(DagRun.start_date.desc()).limit(1))
    tis = session.scalars(select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id,
                                           TI.state == TaskInstanceState.AWAITING_INPUT)
                          .options(joinedload(TI.hitl_detail))).unique().all()
    for ti in tis:
        detail = ti.hitl_detail
        detail.responded_by = HITLUser(id="rftflow-demo", name="rftflow demo")
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [answer]
        detail.params_input = {}
        session.add(detail)
        handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
        print(f"answered {ti.task_id} with {answer!r}")
"""
