"""The cycle history in a real Airflow UI: `airflow standalone` (its own process group) with the project's
dags/ and plugins/, a finished cycle in a tmp artifact root, and headless Chromium driven over the DevTools
protocol: log in, open the plugin's page from the nav, see the cycle, follow its report link, see the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow_ui import (
    CHROMIUM,
    FRAME,
    REJECTED_RUN_ID,
    RUN_ID,
    WORKERS_RUN_ID,
    Browser,
    _get,
    _post,
    admin_token,
    airflow_standalone,
)
from finished_cycles import write_finished_cycle

from rftflow.cycle.params import parse_params


def _visible_runs(browser: Browser) -> list[str]:
    return browser.js(f"Array.from({FRAME}.querySelectorAll('tr.cycle')).filter(r => !r.hidden)"
                      ".map(r => r.dataset.runId)")


def _overflow(browser: Browser) -> dict[str, Any]:
    """How far the framed page and each table container are wider than what they show (0: no overflow)."""
    return browser.js(f"""(() => {{ const d = {FRAME};
        return {{page: d.documentElement.scrollWidth - d.documentElement.clientWidth,
                 frame: d.defaultView.innerWidth - document.querySelector('iframe').clientWidth,
                 tables: Array.from(d.querySelectorAll('.table-wrap')).map(w => w.scrollWidth - w.clientWidth)}};
        }})()""")


def check_cycles_page_in_the_frame(browser: Browser, tmp_path: Path) -> None:
    """The plugin page inside Airflow's frame at 1400 and 1100 px: nothing wider than the frame, badges and
    the trend drawn, and the sort and filter working."""
    browser.wait_for(f"{FRAME} && {FRAME}.querySelector('tr.cycle') && "
                     f"{FRAME}.documentElement.classList.contains('js')", 60)
    assert browser.js(f"{FRAME}.fonts.ready.then(() => true)")
    shots = {}
    for width in (1400, 1100):
        browser.resize(width, 900)
        browser.wait_for(f"document.querySelector('iframe').clientWidth < {width}")
        overflow = _overflow(browser)
        assert overflow["page"] <= 0 and overflow["tables"] and all(t <= 0 for t in overflow["tables"]), overflow
        shots[width] = browser.screenshot(tmp_path / f"cycles-{width}.png")
    browser.resize(1400, 900)
    assert all(p.stat().st_size > 10_000 for p in shots.values())

    # outcome badges and the trend chart, promoted cycle marked
    assert browser.js(f"{FRAME}.querySelector('tr.cycle .badge.outcome.promoted').textContent") == "promoted"
    assert browser.js(f"{FRAME}.querySelector('tr.cycle .badge.outcome.rejected').textContent") == "rejected"
    assert browser.js(f"{FRAME}.querySelectorAll('svg.trend-chart circle.promoted').length") == 1
    assert browser.js(f"{FRAME}.querySelector('svg.trend-chart').getBoundingClientRect().height") > 100

    # sort: newest first as served; by change (promoted +0.150, rejected -0.050) descending, then ascending
    assert _visible_runs(browser) == [REJECTED_RUN_ID, RUN_ID]
    click = f"{FRAME}.querySelector('th[data-sort=change] button.sort').click()"
    browser.js(click)
    assert _visible_runs(browser) == [RUN_ID, REJECTED_RUN_ID]
    browser.js(click)
    assert _visible_runs(browser) == [REJECTED_RUN_ID, RUN_ID]
    assert browser.js(f"{FRAME}.querySelector('th[data-sort=change]').getAttribute('aria-sort')") == "ascending"

    # filter: by outcome, then by free text, then nothing matches, then cleared
    def set_filter(element: str, value: str, event: str) -> None:
        browser.js(f"(() => {{ const e = {FRAME}.getElementById('{element}'); e.value = {json.dumps(value)}; "
                   f"e.dispatchEvent(new Event('{event}')); }})()")

    set_filter("filter-outcome", "promoted", "change")
    assert _visible_runs(browser) == [RUN_ID]
    assert browser.js(f"{FRAME}.getElementById('filter-count').textContent") == "1 of 2 cycles shown"
    set_filter("filter-outcome", "", "change")
    set_filter("filter-text", "GUARD FIRED", "input")  # in the rejected cycle's reason; any case
    assert _visible_runs(browser) == [REJECTED_RUN_ID]
    set_filter("filter-text", "no such cycle", "input")
    assert _visible_runs(browser) == []
    assert browser.js(f"{FRAME}.querySelector('tfoot.none-match').hidden") is False
    set_filter("filter-text", "", "input")
    assert len(_visible_runs(browser)) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium; .ci/run does)")
def test_cycle_history_page_in_airflow_and_chromium(tmp_path, monkeypatch):
    artifact_root = (tmp_path / "artifacts").as_uri()
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    summary = write_finished_cycle(artifact_root, RUN_ID, mlflow={
        "mlflow_run_id": "0123abcd", "mlflow_url": "http://localhost:5000/#/experiments/1/runs/0123abcd"})
    write_finished_cycle(artifact_root, REJECTED_RUN_ID, improved=False)
    workers_root = (tmp_path / "workers-artifacts").as_uri()
    write_finished_cycle(workers_root, WORKERS_RUN_ID, mlflow={
        "mlflow_run_id": "4567", "mlflow_url": "http://localhost:5000/#/experiments/1/runs/4567"})
    workers_params = parse_params({"artifact_root": workers_root}).model_dump(mode="json")
    home = tmp_path / "airflow-home"
    log = tmp_path / "standalone.log"
    browser = None
    try:
        with airflow_standalone(home, artifact_root, log) as base:
            token = admin_token(home, base)

            status, plugins = _get(f"{base}/api/v2/plugins", token)
            assert status == 200, plugins
            (plugin,) = [p for p in json.loads(plugins)["plugins"] if p["name"] == "rftflow"]
            assert plugin["external_views"][0]["url_route"] == "rftflow"
            assert _get(f"{base}/rftflow/")[0] == 401  # the page needs an Airflow login

            browser = Browser(tmp_path / "chromium")
            browser.call("Network.setCookie", session=True, name="_token", value=token, url=base, httpOnly=True)

            # The nav entry embeds the plugin page in the Airflow UI.
            browser.resize(1400, 900)
            browser.open(f"{base}/plugin/rftflow")
            src = browser.wait_for("document.querySelector('iframe') && document.querySelector('iframe').src", 60)
            assert src.rstrip("/").endswith("/rftflow")
            check_cycles_page_in_the_frame(browser, tmp_path)

            browser.open(f"{base}/rftflow/")
            page = browser.js("document.documentElement.outerHTML")
            assert f'data-run-id="{RUN_ID}"' in page
            assert "tiny-finqa" in page and "promoted" in page
            assert "0.400" in page and "0.550" in page
            assert "http://localhost:5000/#/experiments/1/runs/0123abcd" in page

            report_url = browser.js(f"document.querySelector('tr[data-run-id=\"{RUN_ID}\"] a.report-link').href")
            assert report_url.startswith(f"{base}/rftflow/artifacts/")
            browser.open(report_url)
            assert browser.js("document.title").startswith("Cycle report: rft_cycle")
            assert summary["run_id"] in browser.js("document.body.innerText")
            images = browser.js("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
            assert images and all(images), "the report's plots load through the plugin"

            # The training tasks carry the plugin's extra links: a (paused, so never executed) run with the
            # finished cycle's run id shows them on its rft task instance.
            deadline = time.monotonic() + 60
            while (task := _get(f"{base}/api/v2/dags/rft_cycle/tasks/rft", token))[0] != 200:
                assert time.monotonic() < deadline, f"rft_cycle not parsed in time: {task[1][:500]}"
                time.sleep(1)
            _post(f"{base}/api/v2/dags/rft_cycle/dagRuns", {"dag_run_id": RUN_ID, "logical_date": None, "conf": {}},
                  token)
            status, links = _get(f"{base}/api/v2/dags/rft_cycle/dagRuns/{quote(RUN_ID, safe='')}"
                                 "/taskInstances/rft/links", token)
            assert status == 200, links
            links = json.loads(links)["extra_links"]
            assert links["MLflow run"] == "http://localhost:5000/#/experiments/1/runs/0123abcd"
            assert not links["AWS job"]  # a local-backend stage has no AWS job
            assert links["Cycle history"].endswith(f"/rftflow/#run-{quote(RUN_ID, safe='')}")

            # A run whose conf names no artifact_root: its links look where its validate_data return value says
            # the workers wrote (the XCom stored as Airflow stores a task's return value).
            run = quote(WORKERS_RUN_ID, safe="")
            _post(f"{base}/api/v2/dags/rft_cycle/dagRuns",
                  {"dag_run_id": WORKERS_RUN_ID, "logical_date": None, "conf": {}}, token)
            _post(f"{base}/api/v2/dags/rft_cycle/dagRuns/{run}/taskInstances/validate_data/xcomEntries",
                  {"key": "return_value", "value": {"params": workers_params}}, token)
            status, links = _get(f"{base}/api/v2/dags/rft_cycle/dagRuns/{run}/taskInstances/rft/links", token)
            assert status == 200, links
            assert json.loads(links)["extra_links"]["MLflow run"] == "http://localhost:5000/#/experiments/1/runs/4567"
    finally:
        if browser is not None:
            browser.close()
