"""docker-compose.yaml: valid against the compose schema (checked offline by docker-compose, no engine needed),
and wired the way the docs say: Airflow 3 services, Postgres, MLflow, MinIO, the project's folders mounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parent.parent
COMPOSE = PROJECT / "docker-compose.yaml"
BINARY = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    BINARY is None, reason="docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run does)")

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def _compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_UID": "50000"}
    return subprocess.run([BINARY, "-f", str(file), *args], cwd=file.parent, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as docker-compose resolves it (anchors merged, variables filled in)."""
    result = _compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid():
    result = _compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_validation_catches_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    command: api-server\n", "    command: api-server\n    portz: [1]\n"))
    result = _compose("config", "-q", file=broken)
    assert result.returncode != 0 and "portz" in result.stderr


def test_the_stack_has_airflow_3_services_postgres_mlflow_and_minio(resolved):
    services = resolved["services"]
    assert {*AIRFLOW_SERVICES, "airflow-init", "postgres", "mlflow", "minio", "minio-init"} <= set(services)
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]


def test_airflow_services_mount_the_project_and_point_at_minio_and_mlflow(resolved):
    services = resolved["services"]
    for name in AIRFLOW_SERVICES:
        service = services[name]
        targets = {volume.split(":")[1] if isinstance(volume, str) else volume["target"]
                   for volume in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include", "/opt/airflow/rftflow"} <= targets
        env = service["environment"]
        assert env["RFTFLOW_ARTIFACT_ROOT"].startswith("s3://")
        assert env["RFTFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    for folder in ("dags", "plugins", "include", "rftflow"):
        assert (PROJECT / folder).is_dir(), f"docker-compose.yaml mounts ./{folder}, which must exist"
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--artifacts-destination s3://mlflow/" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
