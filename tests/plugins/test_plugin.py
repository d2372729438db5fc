"""The rftflow Airflow plugin: the cycles page, the artifact route and its guards, and the extra links.

Cycles are written by the real pipeline code (stage manifests -> gate -> build_summary ->
publish_summary, in tests/finished_cycles.py, shared with the CLI, report, tracking, notification and browser
tests); the page is read through FastAPI's TestClient.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "plugins"))

from finished_cycles import DAG_ID, write_finished_cycle  # noqa: E402

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def airflow_auth():
    """Airflow's real SimpleAuthManager, as the API server creates it (no metadata DB needed)."""
    from airflow.api_fastapi.app import create_auth_manager

    return create_auth_manager()


@pytest.fixture
def viewer(airflow_auth):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return SimpleAuthManagerUser(username="viewer", role="viewer")


def _client(root: str, user: Any = None):
    """TestClient on the plugin's app; `user` stands in for the Airflow login (None: not logged in)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient
    from rftflow_plugin import create_app

    app = create_app(root)
    if user is not None:
        app.dependency_overrides[get_user] = lambda: user
    return TestClient(app)


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, dict]:
    """One artifact root for the module: a promoted and a rejected tiny-finqa cycle, one other-family cycle."""
    root = (tmp_path_factory.mktemp("plugin") / "artifacts").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFTFLOW_TRACKING", "off")
        promoted = write_finished_cycle(root, "manual__2026-11-24T09:00:00+00:00", mlflow={
            "mlflow_run_id": "abc123", "mlflow_experiment_id": "1",
            "mlflow_url": "http://mlflow.example:5000/#/experiments/1/runs/abc123"})
        rejected = write_finished_cycle(root, "manual__2026-11-25T09:00:00+00:00", improved=False)
        write_finished_cycle(root, "manual__2026-11-25T10:00:00+00:00", family="other-family")
    return root, promoted, rejected


# --------------------------------------------------------------------------- the page


def test_page_lists_each_cycle_with_metrics_diversity_gate_and_links(two_cycles, viewer):
    root, promoted, rejected = two_cycles
    page = _client(root, viewer).get("/")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Model family <code>tiny-finqa</code>" in html
    # newest first: the rejected run of the 25th above the promoted run of the 24th
    rows = [html.index(f'data-run-id="{c["run_id"]}"') for c in (rejected, promoted)]
    assert rows[0] < rows[1]
    assert "promoted" in html and "rejected" in html
    assert "0.400" in html and "0.550" in html and "+0.150" in html  # pass@1 baseline, candidate, change
    assert "20% / 55% / 25%" in html  # diversity: all-fail / mixed / all-pass
    assert "gain_vs_baseline" in html and "FAIL" in html  # the rejected cycle's failed margin is shown
    # the champion's model URI, short in the cell and whole in its title
    assert f'Champion:</strong> <span class="idline"><code title="{promoted["candidate_model"]}">' in html
    assert 'href="http://mlflow.example:5000/#/experiments/1/runs/abc123"' in html
    assert 'class="report-link" href="artifacts/rft_cycle/' in html
    assert "../dags/rft_cycle/runs/manual__2026-11-24T09%3A00%3A00%2B00%3A00" in html


class _Cells(HTMLParser):
    """The visible text of each cycle row's cells, and every title attribute, of the cycles page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.titles: list[str] = []
        self._row: str | None = None
        self._depth = 0  # <td> nesting inside the current row (the metrics cell holds a table)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("title"):
            self.titles.append(a["title"] or "")
        if tag == "tr" and "cycle" in (a.get("class") or "").split():
            self._row = a["data-run-id"]
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            if self._depth == 0:
                self.rows[self._row].append("")
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None:
            self._depth -= 1
        elif tag == "tr" and self._row is not None and self._depth == 0:
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._depth > 0:
            self.rows[self._row][-1] += data


def test_page_shows_short_ids_badges_trend_sort_and_filter(two_cycles, viewer):
    root, promoted, rejected = two_cycles
    html = _client(root, viewer).get("/").text
    cells = _Cells()
    cells.feed(html)
    run, outcome, metrics, diversity, gate, links = cells.rows[promoted["run_id"]]
    # short ids in the cells, the full values in titles (and copy buttons)
    assert "manual 2026-11-24 09:00" in run and promoted["run_id"] not in run
    assert promoted["run_id"] in cells.titles and promoted["candidate_model"] in cells.titles
    assert f'data-copy="{promoted["run_id"]}"' in html and f'data-copy="{promoted["candidate_model"]}"' in html
    assert "file://" not in outcome and ".../rft/model" in outcome  # no full path in the outcome column
    assert "champion of tiny-finqa is now" in outcome
    # each metric's label shares its row with its values
    assert re.search(r"pass@1\s*0\.400\s*0\.550\s*\+0\.150", metrics)
    assert "20% / 55% / 25%" in diversity and "promote" in gate and "report" in links
    # outcome badges in their own colors, for the cycle and the family's counts
    assert '<span class="badge outcome promoted">promoted</span>' in html
    assert '<span class="badge outcome rejected">rejected</span>' in html
    assert '<span class="badge promoted">1 promoted</span>' in html
    # sortable columns: each row carries what its columns sort by
    assert re.search(rf'data-run-id="{re.escape(promoted["run_id"])}"[^>]*data-sort-change="0\.150000"', html)
    assert re.search(rf'data-run-id="{re.escape(rejected["run_id"])}"[^>]*data-sort-change="-0\.050000"', html)
    assert 'th data-sort="time" aria-sort="descending"' in html
    # the filter lists the outcomes on the page; it is shown only where the script runs
    assert re.search(r'<select id="filter-outcome">\s*<option value="">all</option>\s*'
                     r'<option value="promoted">promoted</option>\s*<option value="rejected">rejected</option>', html)
    assert 'class="toolbar js-only"' in html
    # the trend: tiny-finqa's two cycles, oldest first, baseline and candidate, the promoted one marked
    family = html.split('id="family-tiny-finqa"')[1].split("</section>")[0]
    svg = family.split('<svg class="trend-chart"')[1].split("</svg>")[0]
    assert "Gate metric (pass@1) per cycle, oldest first" in family
    assert svg.count('<circle class="base"') == 2 and svg.count('<circle class="cand"') == 1
    assert svg.count('<circle class="promoted"') == 1 and svg.count('<polyline class="cand"') == 1
    titles = re.findall(r"<title>(candidate [^<]+)</title>", svg)
    assert titles == ["candidate 0.550 - manual 2026-11-24 09:00, cycle 1 (promoted)",
                      "candidate 0.350 - manual 2026-11-25 09:00, cycle 1 (rejected)"]
    # a higher value is drawn higher: the promoted candidate above both baselines
    ys = {t: float(y) for y, t in re.findall(r'cy="([\d.]+)" r="[\d.]+"><title>(\w+ [\d.]+)', svg)}
    assert ys["candidate 0.550"] < ys["baseline 0.400"] < ys["candidate 0.350"]


def test_short_ids_and_uris_in_text():
    from rftflow_plugin import short_id, text_parts

    assert short_id("scheduled__2026-01-02T03:04:05.123+00:00") == "scheduled 2026-01-02 03:04"
    assert short_id("s3://bucket/root/rft_cycle/run/cycle-2/rft/model") == ".../cycle-2/rft/model"
    assert short_id("file:///a/b", keep=3) == "file:///a/b"
    assert short_id("a-custom-run-id-that-is-rather-long") == "a-custom-run...-rather-long"
    parts = text_parts("champion is now s3://b/x/y/z/model; see file:///tmp/r.html")
    assert parts == [{"text": "champion is now "}, {"text": ".../y/z/model", "full": "s3://b/x/y/z/model"},
                     {"text": "; see "}, {"text": "file:///tmp/r.html", "full": "file:///tmp/r.html"}]


def test_trend_axis_and_cycles_without_a_gate():
    from rftflow_plugin import trend_view

    stopped = {"run_id": "manual__2026-01-01T00:00:00+00:00", "cycle": 1, "outcome": "stopped",
               "baseline": {"pass_at_1": 0.93}, "candidate": None, "gate": None}
    graded = {"run_id": "manual__2026-01-02T00:00:00+00:00", "cycle": 1, "outcome": "held",
              "gate": {"metric": "mean_reward", "baseline_value": 0.41, "candidate_value": 0.47}}
    t = trend_view([graded, stopped])
    assert t["metric"] == "mean reward, pass@1" and t["n"] == 2 and t["promoted"] == 0
    assert [p["value"] for p in t["points"]["baseline"]] == ["0.930", "0.410"]  # oldest first
    assert [p["value"] for p in t["points"]["candidate"]] == ["0.470"]
    assert [tick["text"] for tick in t["ticks"]] == ["0.40", "0.50", "0.60", "0.70", "0.80", "0.90", "1.00"]
    assert trend_view([{"run_id": "x", "outcome": "incomplete"}]) is None


def test_report_link_serves_the_report_and_its_plots(two_cycles, viewer):
    root, promoted, _ = two_cycles
    client = _client(root, viewer)
    cycles = client.get("/api/cycles").json()
    row = next(c for f in cycles["families"] for c in f["cycles"] if c["run_id"] == promoted["run_id"])
    report = client.get(row["links"]["report_html"])
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no scripts
    assert "Cycle report: rft_cycle" in report.text
    plots = [src for src in report.text.split('src="')[1:]]
    assert plots, "the report shows plots"
    base = row["links"]["report_html"].rsplit("/", 1)[0]
    image = client.get(f"{base}/{plots[0].split(chr(34))[0]}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    md = client.get(row["links"]["report_md"])
    assert md.status_code == 200 and md.text.startswith("# Cycle report")


def test_family_filter_and_empty_root(two_cycles, viewer, tmp_path):
    root, _, _ = two_cycles
    client = _client(root, viewer)
    assert "other-family" in client.get("/").text
    only = client.get("/", params={"family": "other-family"}).text
    assert "Model family <code>other-family</code>" in only and "Model family <code>tiny-finqa</code>" not in only
    empty = _client((tmp_path / "nothing-here").as_uri(), viewer).get("/")
    assert empty.status_code == 200 and "No finished cycle is indexed yet" in empty.text


def test_everything_needs_an_airflow_login(two_cycles):
    root, promoted, _ = two_cycles
    client = _client(root)  # no cookie, no bearer token
    assert client.get("/").status_code == 401
    assert client.get("/api/cycles").status_code == 401
    rel = promoted["report_html_uri"].split("/artifacts/", 1)[1]
    assert client.get(f"/artifacts/{rel}").status_code == 401


@pytest.mark.parametrize("path", [
    "../secret.txt",
    "rft_cycle/..%2F..%2Fsecret.txt",
    "rft_cycle/run/cycle-1/../../../secret.txt",
    "%2Fetc%2Fpasswd",
    "registry/tiny-finqa/champion.json",  # not a cycle's stage folder
    "rft_cycle/run/cycle-1/rft/model/model.safetensors",  # weights are not served
    "rft_cycle/run/cycle-1/report/missing.html",
])
def test_artifact_route_serves_only_report_files_under_the_root(two_cycles, viewer, tmp_path, path):
    root, _, _ = two_cycles
    (tmp_path / "secret.txt").write_text("not for you")
    response = _client(root, viewer).get(f"/artifacts/{path}")
    assert response.status_code == 404
    assert "not for you" not in response.text


def test_symlink_out_of_the_root_is_refused(two_cycles, viewer, tmp_path):
    root, promoted, _ = two_cycles
    secret = tmp_path / "outside.html"
    secret.write_text("<p>not for you</p>")
    report_dir = Path(promoted["report_html_uri"].removeprefix("file://")).parent
    (report_dir / "leak.html").symlink_to(secret)
    rel = promoted["report_html_uri"].split("/artifacts/", 1)[1].rsplit("/", 1)[0] + "/leak.html"
    assert _client(root, viewer).get(f"/artifacts/{rel}").status_code == 404


def test_page_reads_an_s3_artifact_root(s3_root, viewer, monkeypatch):
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    summary = write_finished_cycle(s3_root, "manual__2026-11-25T11:00:00+00:00")
    client = _client(s3_root, viewer)
    html = client.get("/").text
    assert summary["run_id"] in html and "promoted" in html
    row = client.get("/api/cycles").json()["families"][0]["cycles"][0]
    report = client.get(row["links"]["report_html"])
    assert report.status_code == 200 and "Cycle report" in report.text


# --------------------------------------------------------------------------- plugin registration, links


def test_plugin_registers_app_nav_view_and_training_task_links():
    from airflow.plugins_manager import AirflowPlugin
    from rftflow_plugin import AwsJobLink, MlflowRunLink, RftflowPlugin

    from rftflow.orchestration.operators import TrainingStageOperator

    assert issubclass(RftflowPlugin, AirflowPlugin)
    (app,) = RftflowPlugin.fastapi_apps
    assert app["url_prefix"] == "/rftflow"
    (view,) = RftflowPlugin.external_views
    assert view["destination"] == "nav" and view["href"] == "rftflow/" and not view["href"].startswith("/")
    links = {type(link) for link in RftflowPlugin.operator_extra_links}
    assert {AwsJobLink, MlflowRunLink} <= links
    assert all(link.operators == [TrainingStageOperator] for link in RftflowPlugin.operator_extra_links)


def test_console_urls_for_sagemaker_and_bedrock_jobs():
    from rftflow_plugin import console_url

    sm = console_url({"kind": "sagemaker_training", "job_name": "rft-tiny-c1-rft-0",
                      "arn": "arn:aws:sagemaker:eu-west-2:123456789012:training-job/rft-tiny-c1-rft-0"})
    assert sm == ("https://eu-west-2.console.aws.amazon.com/sagemaker/home?region=eu-west-2"
                  "#/jobs/rft-tiny-c1-rft-0")
    br = console_url({"kind": "bedrock_customization", "job_name": "rft-tiny-c1",
                      "job_arn": "arn:aws:bedrock:us-west-2:123456789012:model-customization-job/abc"})
    assert br.startswith("https://us-west-2.console.aws.amazon.com/bedrock/home?region=us-west-2")
    assert console_url({"kind": "local"}) is None


def test_extra_links_read_the_stage_manifest_and_the_cycle_summary(file_root, monkeypatch):
    from airflow.models.taskinstancekey import TaskInstanceKey
    from rftflow_plugin import AwsJobLink, MlflowRunLink

    from rftflow.artifacts import store
    from rftflow.artifacts.manifest import StageManifest, stage_uri, write_manifest

    monkeypatch.setenv("RFTFLOW_ARTIFACT_ROOT", file_root)
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    run_id = "manual__2026-11-25T12:00:00+00:00"
    key = TaskInstanceKey(dag_id=DAG_ID, task_id="rft", run_id=run_id, try_number=1, map_index=-1)
    conf: dict[str, Any] = {}  # a run triggered without conf: default root, cycle 1
    assert AwsJobLink().get_link(None, ti_key=key) == ""  # nothing ran yet (and no metadata DB here)
    write_manifest(stage_uri(file_root, DAG_ID, run_id, 1, "rft"), StageManifest(
        dag_id=DAG_ID, run_id=run_id, cycle=1, stage="rft", backend="sagemaker", started_at="x", finished_at="y",
        duration_s=3600.0, jobs=[{"kind": "sagemaker_training", "job_name": "rft-job-1", "region": "us-east-1"}]))
    assert AwsJobLink().get_link(None, ti_key=key).endswith("#/jobs/rft-job-1")
    assert MlflowRunLink().get_link(None, ti_key=key) == ""
    store.write_json(store.join(stage_uri(file_root, DAG_ID, run_id, 1, "report"), "cycle.json"),
                     {"mlflow": {"mlflow_run_id": "r1", "mlflow_url": "http://mlflow:5000/#/experiments/2/runs/r1"}})
    assert MlflowRunLink().get_link(None, ti_key=key) == "http://mlflow:5000/#/experiments/2/runs/r1"
    assert conf == {}


@pytest.fixture
def metadata_db(tmp_path, monkeypatch):
    """The two tables the plugin reads a run from (dag_run, xcom) in a SQLite file, as `create_session` hands
    them to the plugin; yields a function that adds a run with its conf and validate_data's return value."""
    import contextlib

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
    from airflow.utils import session as airflow_session
    from sqlalchemy import create_engine, insert
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{tmp_path / 'airflow.db'}")
    DagRun.metadata.create_all(engine, tables=[DagRun.__table__, XComModel.__table__])

    @contextlib.contextmanager
    def create_session():
        with Session(engine) as session, session.begin():
            yield session

    monkeypatch.setattr(airflow_session, "create_session", create_session)

    def add_run(run_id: str, conf: dict[str, Any], returned: dict[str, Any] | None = None) -> None:
        with create_session() as session:
            run = session.execute(insert(DagRun.__table__).values(
                dag_id=DAG_ID, run_id=run_id, run_type="manual", conf=conf, logical_date=None, data_interval_end=None,
                log_template_id=None)).inserted_primary_key[0]
            if returned is not None:  # as the Execution API stores a task's return value: its JSON
                session.add(XComModel(dag_run_id=run, task_id="validate_data", map_index=-1, key=XCOM_RETURN_KEY,
                                      dag_id=DAG_ID, run_id=run_id, value=returned))

    yield add_run
    engine.dispose()


def test_links_find_the_stage_folder_from_validate_datas_params_then_the_conf(metadata_db, tmp_path, monkeypatch):
    """The run's resolved params (validate_data's XCom) name its artifact_root and cycle even when the conf
    does not; a run without them (older, or failed before validate_data finished) falls back to its conf."""
    from airflow.models.taskinstancekey import TaskInstanceKey
    from rftflow_plugin import MlflowRunLink, stage_folder

    from rftflow.artifacts import store
    from rftflow.artifacts.manifest import stage_uri
    from rftflow.cycle.params import parse_params

    default_root, workers_root = (tmp_path / "default").as_uri(), (tmp_path / "workers").as_uri()
    monkeypatch.setenv("RFTFLOW_ARTIFACT_ROOT", default_root)  # the API server's environment, not the workers'
    resolved = parse_params({"artifact_root": workers_root, "cycle": 2}).model_dump(mode="json")
    metadata_db("validated", {"model_family": "tiny-demo"}, {"params": resolved, "manifest_uri": "x"})
    metadata_db("conf_only", {"artifact_root": workers_root, "cycle": 3})
    metadata_db("failed_early", {})

    def key(run_id: str) -> TaskInstanceKey:
        return TaskInstanceKey(dag_id=DAG_ID, task_id="rft", run_id=run_id, try_number=1, map_index=-1)

    assert stage_folder(key("validated"), "rft") == stage_uri(workers_root, DAG_ID, "validated", 2, "rft")
    assert stage_folder(key("conf_only"), "rft") == stage_uri(workers_root, DAG_ID, "conf_only", 3, "rft")
    assert stage_folder(key("failed_early"), "rft") == stage_uri(default_root, DAG_ID, "failed_early", 1, "rft")
    store.write_json(store.join(stage_uri(workers_root, DAG_ID, "validated", 2, "report"), "cycle.json"),
                     {"mlflow": {"mlflow_url": "http://mlflow:5000/#/experiments/2/runs/r2"}})
    assert MlflowRunLink().get_link(None, ti_key=key("validated")) == "http://mlflow:5000/#/experiments/2/runs/r2"
