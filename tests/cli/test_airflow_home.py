"""`airflow dags test` in a project-local home, and answering a human-in-the-loop step it parks on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftflow.cli.airflow_home import airflow_env, dags_test, ensure_db

pytestmark = pytest.mark.slow

APPROVAL_DAG = '''
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG

with DAG(dag_id="held", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    ask = ApprovalOperator(task_id="approve_promotion", subject="Promote?", body="gate table",
                           defaults="Reject", response_timeout=timedelta(days=7))
    ask >> EmptyOperator(task_id="promote")
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("airflow_home")
    dags = root / "dags"
    dags.mkdir()
    (dags / "held.py").write_text(APPROVAL_DAG)
    env = airflow_env(root / "home", AIRFLOW__CORE__DAGS_FOLDER=str(dags))
    ensure_db(root / "home", env)
    return root, env


def _states(env: dict[str, str], log: Path) -> dict[str, str]:
    import subprocess
    import sys

    code = ("import json\nfrom airflow.models.taskinstance import TaskInstance as TI\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as s:\n"
            "    tis = s.query(TI).filter(TI.dag_id == 'held').order_by(TI.start_date).all()\n"
            "    print(json.dumps({t.task_id: str(t.state) for t in tis}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("answer, promote_state", [("Reject", "skipped"), ("Approve", "success")])
def test_a_parked_approval_is_answered_and_the_run_finishes(home, answer, promote_state):
    root, env = home
    told: list[str] = []
    log = root / f"{answer}.log"
    rc = dags_test("held", {}, env, log, answer=answer, on_answer=told.append)
    assert rc == 0, log.read_text()[-3000:]
    assert told == [answer]
    text = log.read_text()
    assert f"answered approve_promotion with {answer!r}" in text
    assert _states(env, log)["promote"] == promote_state
