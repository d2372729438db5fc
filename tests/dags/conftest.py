"""Fixtures for DAG tests: a migrated SQLite Airflow home for the session, and a fresh artifact root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rftflow.cli.airflow_home import airflow_bin, airflow_env

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory) -> Path:
    """A migrated SQLite Airflow home (the session's AIRFLOW_HOME, set in tests/conftest.py)."""
    import os

    home = Path(os.environ["AIRFLOW_HOME"])
    if not (home / ".migrated").exists():
        subprocess.run([airflow_bin(), "db", "migrate"], env=airflow_env(home), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        (home / ".migrated").write_text("ok\n")
    return home


@pytest.fixture
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))
