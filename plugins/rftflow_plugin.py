"""Airflow UI for rftflow: a page (nav entry "RFT cycles") listing each model family's cycles and champion,
serving their reports from the artifact root, plus extra links from training tasks to their AWS job and MLflow run.

The page and the files it serves need an Airflow login (the UI's session cookie or a bearer token),
and show only DAGs the user may read.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from rftflow.operators import TrainingStageOperator

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
    from rftflow.params import default_artifact_root

    return default_artifact_root()


# --------------------------------------------------------------------------- artifact paths


def relative_artifact_path(root: str, uri: str | None) -> str | None:
    """`uri` as a path relative to the artifact root, or None when it lies elsewhere."""
    if not uri:
        return None
    from rftflow import store

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
    from rftflow import store

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


def cycle_view(root: str, summary: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of one cycle summary; links are relative to the page (`/rftflow/`)."""
    from rftflow.tracking import diversity_fractions

    s = summary
    baseline, candidate, champion = (s.get(k) if isinstance(s.get(k), dict) else {}
                                     for k in ("baseline", "candidate", "champion"))
    metrics = []
    for key, label, digits in _METRICS:
        b, c = _num(baseline.get(key)), _num(candidate.get(key))
        change = "-" if b is None or c is None else f"{c - b:+.{max(digits, 1)}f}"
        metrics.append({"label": label, "baseline": _fmt(b, digits), "candidate": _fmt(c, digits),
                        "champion": _fmt(champion.get(key), digits), "change": change})
    diversity = []
    for d in s.get("diversity") or []:
        f = diversity_fractions(d.get("metrics") or {})
        decision = d.get("decision") if isinstance(d.get("decision"), dict) else {}
        diversity.append({"stage": d.get("stage", "diversity"), "all_fail": _pct(f.get("all_fail")),
                          "mixed": _pct(f.get("mixed")), "all_pass": _pct(f.get("all_pass")),
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

    return {
        "dag_id": s.get("dag_id"), "run_id": s.get("run_id"), "cycle": s.get("cycle"),
        "max_cycles": s.get("max_cycles"), "backend": s.get("backend"), "model_family": s.get("model_family"),
        "outcome": s.get("outcome") or "unknown", "outcome_reason": s.get("outcome_reason") or "",
        "metrics": metrics, "diversity": diversity, "gate": gate,
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


def families_view(root: str, summaries: list[dict[str, Any]], family: str | None = None) -> list[dict[str, Any]]:
    """Per model family: its champion and its cycles, newest first."""
    from rftflow.registry import ChampionRegistry

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
                champion = {"model_uri": current.model_uri, "run_id": current.run_id, "cycle": current.cycle,
                            "promoted_at": current.promoted_at,
                            "metrics": [(k, _fmt(current.metrics.get(k), d)) for k, _, d in _METRICS
                                        if _num(current.metrics.get(k)) is not None]}
        except Exception as err:  # an unreadable registry must not hide the cycle history
            log.warning("champion of %s unreadable: %s", name, err)
        cycles = sorted(by_family[name], key=_recency, reverse=True)
        out.append({"name": name, "champion": champion, "cycles": [cycle_view(root, c) for c in cycles]})
    return out


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
        from rftflow.summary import read_index

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
            artifact_root=where, family=family, families=families, n_cycles=len(cycles), error=error)
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
        from rftflow import store

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


def stage_folder(ti_key: Any, stage: str, conf: dict[str, Any] | None = None) -> str:
    """Where the run's `stage` writes: the run's own artifact_root and cycle when its conf sets them."""
    from rftflow.manifest import stage_uri

    conf = _run_conf(ti_key) if conf is None else conf
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
    from rftflow import store

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
            from rftflow import store

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
