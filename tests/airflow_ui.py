"""A real Airflow UI for tests: `airflow standalone` in its own process group with the project's dags/ and plugins/,
its REST API, and headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rftflow.cli.airflow_home import airflow_bin, airflow_env

pytestmark = pytest.mark.slow

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)
RUN_ID = "manual__2026-11-25T09:00:00+00:00"
REJECTED_RUN_ID = "manual__2026-11-26T09:00:00+00:00"
WORKERS_RUN_ID = "manual__2026-11-27T09:00:00+00:00"  # its cycle lies under a root only its params name
# The plugin page as the Airflow UI embeds it (the nav entry's iframe).
FRAME = "document.querySelector('iframe').contentDocument"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _post(url: str, body: dict[str, Any], token: str) -> None:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201), response.read()[:500]


def _stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the whole process group (scheduler, api-server, workers ...), SIGKILL what is left."""
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
            proc.poll()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def admin_token(home: Path, base: str) -> str:
    """A REST API token for the standalone's admin (its generated password is in the Airflow home)."""
    passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
    request = urllib.request.Request(f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


@contextlib.contextmanager
def airflow_standalone(home: Path, artifact_root: str, log: Path) -> Iterator[str]:
    """`airflow standalone` on a free port in its own session; yields its base URL, stops the group after."""
    port = _free_port()
    env = airflow_env(home, artifact_root, AIRFLOW__API__PORT=str(port),
                      AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
                      AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
                      AIRFLOW__CORE__PARALLELISM="4", AIRFLOW__API__WORKERS="1",
                      AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING", RFTFLOW_TRACKING="off",
                      # standalone starts its components as `airflow ...` from PATH
                      PATH=os.pathsep.join([str(Path(airflow_bin()).parent), os.environ.get("PATH", "")]))
    home.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen([airflow_bin(), "standalone"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow standalone exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                status, body = _get(f"{base}/api/v2/monitor/health", timeout=2)
                if status == 200 and json.loads(body)["metadatabase"]["status"] == "healthy":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"airflow standalone not healthy after 150 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        _stop_group(proc)


class Browser:
    """Headless Chromium over the DevTools protocol (one page), started in its own process group."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        from websockets.sync.client import connect

        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Network.enable", session=True)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout} s")
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.ws.recv(timeout=1)))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.js(expression):
                return value
            time.sleep(0.25)
        raise TimeoutError(f"never true in {timeout} s: {expression}")

    def resize(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def screenshot(self, path: Path) -> Path:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        _stop_group(self.proc, grace=5)
