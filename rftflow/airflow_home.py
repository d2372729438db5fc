"""A self-contained Airflow home inside the project (SQLite), for the demo, the CLI and the tests.

Runs `airflow dags test` in a child process with that home, so no scheduler or API server is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rftflow.params import PROJECT_ROOT


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


def dags_test(dag_id: str, conf: dict[str, Any], env: dict[str, str], log_path: Path) -> int:
    """Run one DAG run in-process of a child `airflow dags test`; output goes to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.run([airflow_bin(), "dags", "test", dag_id, "--conf", json.dumps(conf)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc.returncode
