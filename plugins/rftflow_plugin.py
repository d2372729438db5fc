"""Airflow UI for rftflow: a page (nav entry "RFT cycles") listing each model family's cycles and champion,
serving their reports from the artifact root, plus extra links from training tasks to their AWS job and MLflow run.

The page and the files it serves need an Airflow login (the UI's session cookie or a bearer token),
and show only DAGs the user may read.
"""

from __future__ import annotations

import logging
import math
import mimetypes
import os
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from rftflow.orchestration.operators import TrainingStageOperator

log = logging.getLogger(__name__)

URL_PREFIX = "/rftflow"
TEMPLATES = Path(__file__).resolve().parent / "rftflow_ui" / "templates"
# What the artifact route serves, and as what; everything else (weights, datasets) is refused.
SERVED_TYPES = {
    ".html": "text/html; charset=utf-8", ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
    ".json": "application/json", ".jsonl": "text/plain; charset=utf-8", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".csv": "text/plain; charset=utf-8",
}
# Served HTML reports may show their own images and inline styles, and run nothing.
REPORT_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
MAX_SERVED_BYTES = 64 * 1024 * 1024
_STAGE_PATH = re.compile(r"^[A-Za-z0-9][\w.-]*/[^/]+/cycle-\d+/")  # {dag_id}/{run}/cycle-{n}/...


def artifact_root() -> str:
    """RFTFLOW_ARTIFACT_ROOT, else the project's `.artifacts` folder (as the DAG's params default)."""
    from rftflow.cycle.params import default_artifact_root

    return default_artifact_root()


# --------------------------------------------------------------------------- artifact paths


def relative_artifact_path(root: str, uri: str | None) -> str | None:
    """`uri` as a path relative to the artifact root, or None when it lies elsewhere."""
    if not uri:
        return None
    from rftflow.artifacts import store

    try:
        root_local, uri_local = store.local_path(root), store.local_path(uri)
    except ValueError:
        return None
    if root_local is not None and uri_local is not None:
        base, target = os.path.abspath(root_local), os.path.abspath(uri_local)
        if target.startswith(base.rstrip(os.sep) + os.sep):
            return os.path.relpath(target, base).replace(os.sep, "/")
        return None
    base = root.rstrip("/") + "/"
    return uri[len(base):] if uri.startswith(base) else None


def resolve_artifact(root: str, rel: str) -> tuple[str, str | None]:
    """(uri, local path or None) of a file under the root; ValueError for paths that leave it or are not served."""
    from rftflow.artifacts import store

    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        raise ValueError(f"not a path under the artifact root: {rel!r}")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(rel) != rel:
        raise ValueError(f"not a path under the artifact root: {rel!r}")
    if not _STAGE_PATH.match(rel):
        raise ValueError(f"only files inside a cycle's stage folders are served: {rel!r}")
    if Path(rel).suffix.lower() not in SERVED_TYPES:
        raise ValueError(f"this kind of file is not served: {rel!r}")
    local_root = store.local_path(root)
    if local_root is None:
        return store.join(root, rel), None
    base = os.path.realpath(local_root)
    path = os.path.realpath(os.path.join(base, *parts))  # follows symlinks: a link out of the root is refused
    if not path.startswith(base + os.sep):
        raise ValueError(f"not a path under the artifact root: {rel!r}")
    return store.join(root, rel), path


# --------------------------------------------------------------------------- the cycles page


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: Any, digits: int = 3) -> str:
    v = _num(value)
    if v is None:
        return "-"
    return f"{v:.0f}" if digits == 0 else f"{v:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


_METRICS = (("pass_at_1", "pass@1", 3), ("mean_reward", "mean reward", 3),
            ("mean_response_tokens", "response tokens", 1), ("n", "prompts", 0))
# Outcomes in the order the filter lists them; each has its own badge color on the page.
OUTCOMES = ("promoted", "held", "not_promoted", "iterating", "rejected", "stopped", "incomplete")
_URI = re.compile(r"\b(?:file|s3|gs|hf|https?)://[^\s,;()]+")
_RUN_ID = re.compile(r"^(?P<kind>[A-Za-z]+)__(?P<date>\d{4}-\d\d-\d\d)T(?P<time>\d\d:\d\d)")


def short_id(value: Any, keep: int = 3) -> str:
    """A run id or URI short enough for a table cell; the page puts the full value in a title.

    `manual__2026-11-24T09:00:00+00:00` -> `manual 2026-11-24 09:00`; a URI -> its last `keep` path segments
    (`.../cycle-1/rft/model`); anything else longer than 28 characters keeps its two ends.
    """
    text = "" if value is None else str(value)
    if m := _RUN_ID.match(text):
        return f"{m['kind']} {m['date']} {m['time']}"
    if "://" in text:
        segments = [p for p in text.split("://", 1)[1].rstrip("/").split("/") if p]
        return text if len(segments) <= keep else ".../" + "/".join(segments[-keep:])
    return text if len(text) <= 28 else f"{text[:12]}...{text[-12:]}"


def text_parts(text: Any) -> list[dict[str, str]]:
    """`text` split around the URIs in it: [{"text": ...}, {"text": short URI, "full": URI}, ...]."""
    text, parts, at = str(text or ""), [], 0
    for m in _URI.finditer(text):
        if m.start() > at:
            parts.append({"text": text[at:m.start()]})
        parts.append({"text": short_id(m.group(0)), "full": m.group(0)})
        at = m.end()
    if at < len(text):
        parts.append({"text": text[at:]})
    return parts


def cycle_view(root: str, summary: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one cycle summary; links are relative to the page (`/rftflow/`)."""
    from rftflow.publish.tracking import diversity_fractions

    s = summary
    baseline, candidate, champion = (s.get(k) if isinstance(s.get(k), dict) else {}
                                     for k in ("baseline", "candidate", "champion"))
    metrics = []
    for key, label, digits in _METRICS:
        b, c = _num(baseline.get(key)), _num(candidate.get(key))
        change = "-" if b is None or c is None else f"{c - b:+.{max(digits, 1)}f}"
        metrics.append({"label": label, "baseline": _fmt(b, digits), "candidate": _fmt(c, digits),
                        "champion": _fmt(champion.get(key), digits), "change": change,
                        "direction": "" if b is None or c is None or c == b else ("up" if c > b else "down")})
    diversity = []
    for d in s.get("diversity") or []:
        f = diversity_fractions(d.get("metrics") or {})
        decision = d.get("decision") if isinstance(d.get("decision"), dict) else {}
        diversity.append({"stage": d.get("stage", "diversity"), "all_fail": _pct(f.get("all_fail")),
                          "mixed": _pct(f.get("mixed")), "all_pass": _pct(f.get("all_pass")),
                          "bar": {k: round(100 * (f.get(k) or 0.0), 1) for k in ("all_fail", "mixed", "all_pass")},
                          "decision": decision.get("decision", "-")})
    gate = None
    if isinstance(s.get("gate"), dict):
        checks = []
        for r in s["gate"].get("reasons") or []:
            verdict = ("missing" if r.get("missing") else "skipped") if r.get("skipped") else \
                ("warn" if r.get("warning") else "pass") if r.get("passed") else "FAIL"
            checks.append({"check": r.get("check"), "verdict": verdict,
                           "css": {"skipped": "skip", "missing": "skip", "pass": "pass",
                                   "warn": "skip"}.get(verdict, "fail"),
                           "observed": "" if r.get("observed") is None else f"{r['observed']:.4g}",
                           "required": r.get("required") or "", "detail": r.get("detail") or ""})
        gate = {"decision": s["gate"].get("decision", "-"), "reason": s["gate"].get("reason", ""),
                "checks": checks, "failed": sum(c["verdict"] == "FAIL" for c in checks)}
    mlflow = s.get("mlflow") if isinstance(s.get("mlflow"), dict) else {}

    def link(key: str) -> str | None:
        rel = relative_artifact_path(root, s.get(key))
        return "artifacts/" + quote(rel) if rel else None

    metric, base_value, cand_value = gate_values(s)
    first_mixed = _num(diversity_fractions((s.get("diversity") or [{}])[0].get("metrics") or {}).get("mixed"))
    return {
        "dag_id": s.get("dag_id"), "run_id": s.get("run_id"), "run_short": short_id(s.get("run_id")),
        "cycle": s.get("cycle"), "max_cycles": s.get("max_cycles"), "backend": s.get("backend"),
        "model_family": s.get("model_family"), "finished_at": s.get("finished_at") or "",
        "candidate_model": s.get("candidate_model"), "candidate_short": short_id(s.get("candidate_model"), keep=2),
        "outcome": s.get("outcome") or "unknown", "outcome_reason": s.get("outcome_reason") or "",
        "outcome_parts": text_parts(s.get("outcome_reason")),
        "metrics": metrics, "diversity": diversity, "gate": gate,
        # what the page's sortable columns order by (the row's data-sort-* attributes)
        "sort": {"time": "|".join(str(k) for k in _recency(s)), "outcome": s.get("outcome") or "unknown",
                 "candidate": "" if cand_value is None else f"{cand_value:.6f}",
                 "change": "" if cand_value is None or base_value is None else f"{cand_value - base_value:.6f}",
                 "mixed": "" if first_mixed is None else f"{first_mixed:.6f}"},
        "gate_metric": metric,
        "mlflow_run_id": mlflow.get("mlflow_run_id"),
        "links": {"report_html": link("report_html_uri"), "report_md": link("report_md_uri"),
                  "cycle_json": link("cycle_json_uri"), "mlflow": mlflow.get("mlflow_url"),
                  "airflow_run": f"../dags/{quote(str(s.get('dag_id')))}/runs/{quote(str(s.get('run_id')), safe='')}"},
    }


_RUN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _recency(summary: dict[str, Any]) -> tuple[str, str, int]:
    """Finish time, then the run's own time (two cycles can finish within one second), then cycle."""
    found = _RUN_TIME.search(str(summary.get("run_id", "")))
    started = found.group(0) if found else str(summary.get("run_id", ""))
    return str(summary.get("finished_at") or started), started, int(summary.get("cycle") or 0)


def gate_values(summary: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(metric, baseline value, candidate value) the gate judged the cycle on; pass@1 of the evals when
    the cycle has no gate (stopped, incomplete)."""
    gate = summary.get("gate") if isinstance(summary.get("gate"), dict) else {}
    metric = str(gate.get("metric") or "pass_at_1")
    values = []
    for role in ("baseline", "candidate"):
        ev = summary.get(role) if isinstance(summary.get(role), dict) else {}
        value = _num(gate.get(f"{role}_value"))
        values.append(value if value is not None else _num(ev.get(metric)))
    return metric, values[0], values[1]


def _axis(low: float, high: float) -> tuple[float, float, float]:
    """(bottom, top, tick step) of a y axis holding [low, high] with at most 6 round ticks."""
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0):
        bottom, top = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
        if top - bottom < 1e-9:
            top = bottom + step
        if (top - bottom) / step <= 6:
            return bottom, top, step
    span = high - low
    return low, high, span / 4


# The trend chart's drawing area in SVG user units (the SVG scales to its card).
_CHART = {"width": 640, "height": 220, "left": 48, "right": 16, "top": 16, "bottom": 40, "inset": 20}


def trend_view(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An inline-SVG chart of a family's gate metric, oldest cycle first: baseline and candidate per cycle,
    promoted candidates marked. None when no cycle has a value to draw."""
    ordered = sorted(summaries, key=_recency)
    rows = [(s, *gate_values(s)) for s in ordered]
    values = [v for _, _, b, c in rows for v in (b, c) if v is not None]
    if not values:
        return None
    metrics = sorted({m for _, m, b, c in rows if b is not None or c is not None})
    low, high, tick = _axis(min(values), max(values))
    c = _CHART
    plot_w, plot_h = c["width"] - c["left"] - c["right"] - 2 * c["inset"], c["height"] - c["top"] - c["bottom"]
    step = plot_w / max(1, len(rows) - 1) if len(rows) > 1 else 0.0

    def x(i: int) -> float:
        return round(c["left"] + c["inset"] + (i * step if len(rows) > 1 else plot_w / 2), 1)

    def y(v: float) -> float:
        return round(c["top"] + plot_h * (1 - (v - low) / (high - low)), 1)

    points: dict[str, list[dict[str, Any]]] = {"baseline": [], "candidate": []}
    labels = []
    for i, (s, _, b, cand) in enumerate(rows):
        run = short_id(s.get("run_id"))
        for role, v in (("baseline", b), ("candidate", cand)):
            if v is not None:
                points[role].append({"x": x(i), "y": y(v), "value": f"{v:.3f}", "promoted":
                                     role == "candidate" and s.get("outcome") == "promoted",
                                     "title": f"{role} {v:.3f} - {run}, cycle {s.get('cycle')} "
                                              f"({s.get('outcome') or 'unknown'})"})
        labels.append({"x": x(i), "text": f"#{i + 1}", "title": f"{s.get('run_id')}, cycle {s.get('cycle')}"})
    n_ticks = round((high - low) / tick)
    ticks = [{"y": y(low + i * tick), "text": f"{low + i * tick:.2f}"} for i in range(n_ticks + 1)]
    return {**c, "plot_right": c["width"] - c["right"], "plot_bottom": c["height"] - c["bottom"],
            "metric": ", ".join(m.replace("pass_at_1", "pass@1").replace("mean_reward", "mean reward")
                                for m in metrics),
            "lines": {role: " ".join(f"{p['x']},{p['y']}" for p in pts) for role, pts in points.items()},
            "points": points, "labels": labels, "ticks": ticks, "n": len(rows),
            "promoted": sum(s.get("outcome") == "promoted" for s in ordered)}


def families_view(root: str, summaries: list[dict[str, Any]], family: str | None = None) -> list[dict[str, Any]]:
    """Per model family: its champion, its trend across cycles and its cycles, newest first."""
    from rftflow.artifacts.registry import ChampionRegistry

    by_family: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        by_family.setdefault(str(s.get("model_family") or "-"), []).append(s)
    out = []
    for name in sorted(by_family):
        if family and name != family:
            continue
        champion = None
        try:
            current, _ = ChampionRegistry(root, name).current()
            if current is not None:
                champion = {"model_uri": current.model_uri, "model_short": short_id(current.model_uri),
                            "run_id": current.run_id, "run_short": short_id(current.run_id), "cycle": current.cycle,
                            "promoted_at": current.promoted_at,
                            "metrics": [(label, _fmt(current.metrics.get(k), d)) for k, label, d in _METRICS
                                        if _num(current.metrics.get(k)) is not None]}
        except Exception as err:  # an unreadable registry must not hide the cycle history
            log.warning("champion of %s unreadable: %s", name, err)
        cycles = sorted(by_family[name], key=_recency, reverse=True)
        counts = {o: sum(c.get("outcome") == o for c in cycles) for o in OUTCOMES}
        views = [cycle_view(root, c) for c in cycles]
        out.append({"name": name, "champion": champion, "cycles": views, "trend": trend_view(cycles),
                    "counts": {o: n for o, n in counts.items() if n},
                    "has_champion": any(m["champion"] != "-" for v in views for m in v["metrics"])})
    return out


def outcome_choices(families: list[dict[str, Any]]) -> list[str]:
    """The outcomes the filter offers: those on the page, known ones in OUTCOMES order first."""
    seen = {c["outcome"] for f in families for c in f["cycles"]}
    return [o for o in OUTCOMES if o in seen] + sorted(seen - set(OUTCOMES))


# --------------------------------------------------------------------------- the FastAPI app


def create_app(root: str | None = None) -> Any:
    """The FastAPI app mounted at /rftflow: `/` (cycles page), `/api/cycles` (JSON), `/artifacts/{path}`."""
    import jinja2
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, Response

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    app = FastAPI(title="rftflow cycles", docs_url=None, redoc_url=None, openapi_url=None)

    def current_root() -> str:
        return root or artifact_root()

    def can_read(user: Any, dag_id: str, cache: dict[str, bool]) -> bool:
        if dag_id not in cache:
            from airflow.api_fastapi.app import get_auth_manager
            from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

            cache[dag_id] = bool(get_auth_manager().is_authorized_dag(
                method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user))
        return cache[dag_id]

    def readable_cycles(user: Any, family: str | None) -> tuple[str, list[dict[str, Any]]]:
        from rftflow.publish.summary import read_index

        where = current_root()
        cache: dict[str, bool] = {}
        cycles = [c for c in read_index(where, family) if can_read(user, str(c.get("dag_id")), cache)]
        return where, cycles

    @app.get("/", response_class=HTMLResponse)
    def cycles_page(family: str | None = None, user: Any = Depends(get_user)) -> HTMLResponse:
        error = None
        try:
            where, cycles = readable_cycles(user, family)
            families = families_view(where, cycles)
        except Exception as err:
            log.exception("rftflow cycles page")
            where, cycles, families = current_root(), [], []
            from rftflow.redact import redact_text

            error = redact_text(f"The cycle index could not be read: {type(err).__name__}: {err}")
        page = env.get_template("cycles.html").render(
            artifact_root=where, family=family, families=families, n_cycles=len(cycles), error=error,
            outcomes=outcome_choices(families))
        return HTMLResponse(page)

    @app.get("/api/cycles")
    def cycles_json(family: str | None = None, user: Any = Depends(get_user)) -> dict[str, Any]:
        where, cycles = readable_cycles(user, family)
        return {"artifact_root": where, "families": families_view(where, cycles), "summaries": cycles}

    @app.get("/artifacts/{rel:path}")
    def artifact(rel: str, user: Any = Depends(get_user)) -> Response:
        where = current_root()
        try:
            uri, path = resolve_artifact(where, rel)
        except ValueError as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        if not can_read(user, rel.split("/", 1)[0], {}):
            raise HTTPException(status_code=403, detail="Forbidden")
        suffix = Path(rel).suffix.lower()
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        if suffix == ".html":
            headers["Content-Security-Policy"] = REPORT_CSP
        media_type = SERVED_TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if path is not None:
            if not os.path.isfile(path):
                raise HTTPException(status_code=404, detail=f"no such file under the artifact root: {rel}")
            return FileResponse(path, media_type=media_type, headers=headers)
        from rftflow.artifacts import store

        try:
            data = store.read_bytes(uri)
        except FileNotFoundError:
            raise HTTPException(status_code=404, detail=f"no such file under the artifact root: {rel}") from None
        if len(data) > MAX_SERVED_BYTES:
            raise HTTPException(status_code=413, detail=f"{rel} is larger than {MAX_SERVED_BYTES} bytes")
        return Response(data, media_type=media_type, headers=headers)

    return app


class _LazyApp:
    """Builds the FastAPI app on the first request, so components that only load plugins pay nothing."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


# --------------------------------------------------------------------------- extra links


def _console(region: str, path: str) -> str:
    return f"https://{region}.console.aws.amazon.com/{path}"


def console_url(job: dict[str, Any]) -> str | None:
    """AWS console page of a SageMaker training job or a Bedrock customization job record."""
    arn = next((str(v) for k, v in job.items() if "arn" in k.lower() and str(v).startswith("arn:")), "")
    kind = " ".join(str(job.get(k, "")) for k in ("kind", "service", "type")).lower() + " " + arn
    name = next((str(job[k]) for k in ("job_name", "name", "TrainingJobName", "jobName") if job.get(k)), "")
    region = str(job.get("region") or job.get("region_name") or (arn.split(":")[3] if arn.count(":") >= 5 else "")
                 or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    if "sagemaker" in kind:
        name = name or arn.rsplit("/", 1)[-1]
        return _console(region, f"sagemaker/home?region={region}#/jobs/{quote(name)}") if name else None
    if "bedrock" in kind:
        return _console(region, f"bedrock/home?region={region}#/custom-models")
    return None


def _run_conf(ti_key: Any) -> dict[str, Any]:
    """The DAG run's conf (artifact_root, cycle), read from the metadata DB by the API server."""
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            conf = session.scalar(select(DagRun.conf).where(DagRun.dag_id == ti_key.dag_id,
                                                            DagRun.run_id == ti_key.run_id))
        return conf if isinstance(conf, dict) else {}
    except Exception as err:
        log.debug("no run conf for %s: %s", ti_key, err)
        return {}


def _resolved_params(ti_key: Any) -> dict[str, Any]:
    """`params` of the run's validate_data return value: what the tasks run with (artifact_root filled in from
    the workers' environment, which the API server may not share; cycle set). {} before validate_data finished."""
    try:
        from airflow.models.xcom import XCOM_RETURN_KEY, XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        from rftflow.cycle.context import RESOLVED_BY

        with create_session() as session:
            row = session.execute(select(XComModel.value).where(
                XComModel.dag_id == ti_key.dag_id, XComModel.run_id == ti_key.run_id,
                XComModel.task_id == RESOLVED_BY, XComModel.map_index == -1,
                XComModel.key == XCOM_RETURN_KEY)).first()
        value = XComModel.deserialize_value(row) if row is not None else None
        params = value.get("params") if isinstance(value, dict) else None
        return params if isinstance(params, dict) else {}
    except Exception as err:
        log.debug("no validate_data params for %s: %s", ti_key, err)
        return {}


def run_params(ti_key: Any) -> dict[str, Any]:
    """The run's params as its tasks resolved them, else (an older run, or one that failed before validate_data
    finished) its conf; {} when neither is there, and stage_folder takes the defaults."""
    return _resolved_params(ti_key) or _run_conf(ti_key)


def stage_folder(ti_key: Any, stage: str, conf: dict[str, Any] | None = None) -> str:
    """Where the run's `stage` writes: the run's own artifact_root and cycle (run_params), else the defaults."""
    from rftflow.artifacts.manifest import stage_uri

    conf = run_params(ti_key) if conf is None else conf
    return stage_uri(conf.get("artifact_root") or artifact_root(), ti_key.dag_id, ti_key.run_id,
                     int(conf.get("cycle") or 1), stage)


def _pending_job(ti_key: Any) -> dict[str, Any] | None:
    """The PendingJob a deferred training task handed to its trigger (the task instance's next_kwargs)."""
    try:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            kwargs = session.scalar(select(TaskInstance.next_kwargs).where(
                TaskInstance.dag_id == ti_key.dag_id, TaskInstance.run_id == ti_key.run_id,
                TaskInstance.task_id == ti_key.task_id, TaskInstance.map_index == ti_key.map_index))
        pending = kwargs.get("pending") if isinstance(kwargs, dict) else None
        if isinstance(pending, dict):
            return {"kind": pending.get("kind"), "job_name": pending.get("job_name"), **(pending.get("details") or {})}
    except Exception as err:
        log.debug("no pending job for %s: %s", ti_key, err)
    return None


def stage_jobs(ti_key: Any, conf: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Job records of the task's finished stage manifest, else the job it is waiting for (deferred)."""
    from rftflow.artifacts import store

    manifest = store.join(stage_folder(ti_key, ti_key.task_id, conf), "manifest.json")
    if store.exists(manifest):
        jobs = store.read_json(manifest).get("jobs") or []
        if jobs:
            return jobs
    pending = _pending_job(ti_key)
    return [pending] if pending else []


class AwsJobLink(BaseOperatorLink):
    """The training task's SageMaker or Bedrock job in the AWS console (empty for the local backend)."""

    name = "AWS job"
    operators = [TrainingStageOperator]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            for job in stage_jobs(ti_key):
                if url := console_url(job):
                    return url
        except Exception as err:  # a link must never break the task page
            log.debug("AWS job link for %s: %s", ti_key, err)
        return ""


class MlflowRunLink(BaseOperatorLink):
    """The cycle's MLflow run, once the cycle's report task has logged it."""

    name = "MLflow run"
    operators = [TrainingStageOperator]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from rftflow.artifacts import store

            summary = store.join(stage_folder(ti_key, "report"), "cycle.json")
            if store.exists(summary):
                return (store.read_json(summary).get("mlflow") or {}).get("mlflow_url") or ""
        except Exception as err:
            log.debug("MLflow link for %s: %s", ti_key, err)
        return ""


class CycleReportLink(BaseOperatorLink):
    """This run's rows on the cycles page."""

    name = "Cycle history"
    operators = [TrainingStageOperator]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
        return f"{base.rstrip('/')}{URL_PREFIX}/#run-{quote(ti_key.run_id, safe='')}"


class RftflowPlugin(AirflowPlugin):
    name = "rftflow"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "rftflow cycles"}]
    external_views = [{
        "name": "RFT cycles",
        "href": URL_PREFIX.lstrip("/") + "/",
        "url_route": "rftflow",
        "destination": "nav",
        "category": "browse",
    }]
    operator_extra_links = [AwsJobLink(), MlflowRunLink(), CycleReportLink()]
