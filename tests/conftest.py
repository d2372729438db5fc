"""Shared test fixtures: a local S3 (moto) server for the session, and artifact roots on both stores.

`artifact_root` runs a test once on a `file://` folder and once on an `s3://` bucket.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its home when first imported: give the session its own SQLite home before any test
# module imports airflow, so tests never touch ~/airflow or the demo's home.
_ROOT = Path(__file__).resolve().parent.parent
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="rftflow-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(_ROOT / "plugins")
os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(os.environ["AIRFLOW_HOME"], "mlflow.db")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Variables that would point the AWS SDKs somewhere other than the test server.
_AWS_ENV_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


class _SerializedApp:
    """Handles one request at a time: moto checks If-Match / If-None-Match and then writes in two steps,
    so two concurrent conditional PUTs could both pass. Real S3 makes them atomic; so does this."""

    def __init__(self, app) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            response = self._app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (free port) for the whole session; yields its endpoint URL.

    While it runs, the environment holds fake credentials (testing/testing), region us-east-1 and
    RFTFLOW_S3_ENDPOINT_URL=<endpoint>; the previous environment is restored when the session ends.
    """
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    werkzeug_log = logging.getLogger("werkzeug")  # one line per request otherwise
    old_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    app = _SerializedApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in _AWS_ENV_CLEARED:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("RFTFLOW_S3_ENDPOINT_URL", endpoint)
        try:
            yield endpoint
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
            werkzeug_log.setLevel(old_level)


@pytest.fixture
def s3_root(moto_server: str) -> str:
    """A fresh, empty bucket on the moto server for this test; yields `s3://<bucket>/artifacts`."""
    import boto3

    bucket = f"rftflow-test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts"


@pytest.fixture
def file_root(tmp_path) -> str:
    """A `file://` URI of a not-yet-created folder inside this test's tmp_path."""
    return (tmp_path / "artifacts").as_uri()


@pytest.fixture(params=["file", "s3"])
def artifact_root(request: pytest.FixtureRequest) -> str:
    """The test runs twice: on a local `file://` root and on an `s3://` root (moto)."""
    return request.getfixturevalue(f"{request.param}_root")


@pytest.fixture(scope="module")
def ray_head(moto_server: str) -> Iterator[str]:
    """A real Ray head on 127.0.0.1 (2 CPUs, free ports) for one test module, stopped by its session id at the
    end; yields its dashboard URL. The `ray` backend finds it through RFTFLOW_RAY_ADDRESS, and its jobs run this
    venv's Python. Started after the moto server, so jobs reach s3:// artifact roots there."""
    import sys

    from rftflow.backends.ray.local_head import start_head

    head = start_head(num_cpus=2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RFTFLOW_RAY_ADDRESS", head.address)
            mp.setenv("RFTFLOW_RAY_PYTHON", sys.executable)
            mp.setenv("RFTFLOW_RAY_POLL_S", "1")
            yield head.address
    finally:
        head.stop()
        assert not head.processes(), "Ray processes outlived the test module"
