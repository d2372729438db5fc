"""rft_cycle in a real Airflow: `airflow standalone` (scheduler, dag-processor, triggerer, API server in
their own process group), a run triggered through the REST API with a conf, waited for, then the
whole group stopped.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from airflow_ui import _get, airflow_standalone  # noqa: E402

from rftflow.artifacts import store  # noqa: E402
from rftflow.artifacts.manifest import stage_uri  # noqa: E402

pytestmark = pytest.mark.slow

CONF = {
    "base_model": "tiny", "model_family": "tiny-standalone", "sft_policy": "never",
    "diversity_prompts": 8, "rollouts_per_prompt": 2,
    "recipe_overrides": {"rft": {"max_steps": 2, "prompts_per_step": 4, "save_steps": 1, "logging_steps": 1},
                         "eval": {"max_prompts": 16}},
}


def _call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode()}


def _wait(what: str, check, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(3)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_triggered_through_the_rest_api_runs_to_success(tmp_path):
    root = (tmp_path / "artifacts").as_uri()
    home, log = tmp_path / "airflow-home", tmp_path / "standalone.log"
    with airflow_standalone(home, root, log) as base:
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
        request = urllib.request.Request(f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            token = json.loads(response.read())["access_token"]
        _wait("the DAG to be parsed", lambda: _get(f"{base}/api/v2/dags/rft_cycle", token)[0] == 200, 180, log)
        assert _call("PATCH", f"{base}/api/v2/dags/rft_cycle", token, {"is_paused": False})[0] == 200
        status, run = _call("POST", f"{base}/api/v2/dags/rft_cycle/dagRuns", token,
                            {"logical_date": None, "conf": {**CONF, "artifact_root": root}})
        assert status == 200, run
        run_id = run["dag_run_id"]

        def finished():
            code, state = _call("GET", f"{base}/api/v2/dags/rft_cycle/dagRuns/{run_id}", token)
            return state if code == 200 and state.get("state") in ("success", "failed") else None

        final = _wait("the run to finish", finished, 900, log)
        _, tis = _call("GET", f"{base}/api/v2/dags/rft_cycle/dagRuns/{run_id}/taskInstances", token)
        states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
        assert final["state"] == "success", states
        assert states["sft"] == "skipped" and states["rft"] == "success" and states["report"] == "success"
        assert store.exists(store.join(stage_uri(root, "rft_cycle", run_id, 1, "report"), "cycle.json"))
