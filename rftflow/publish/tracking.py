"""MLflow tracking for cycles: one MLflow run per cycle, and the registry aliases `champion`/`challenger`.

The run is opened by the cycle's first task (`open_cycle_run`, keyed by dag_id/run_id/cycle), so it is
there while the cycle runs: the trainers log their step metrics into it as they log them (`LiveMetrics`),
the eval and gate tasks their results (`log_so_far`), and the report task completes and finishes the same
run (`log_cycle`). The metric set is what a person compares between cycles (see `TRAIN_METRICS`,
`EVAL_KEYS` and docs/operations.md).

Tracking is best effort: an unreachable or misconfigured MLflow is logged and returned as
{"error": ...}, never raised, so it cannot fail a cycle. mlflow is imported only when used, and not at all
with RFTFLOW_TRACKING=off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rftflow.artifacts import store
from rftflow.artifacts.manifest import safe_segment
from rftflow.cycle.params import PROJECT_ROOT
from rftflow.redact import redact_text, redact_uri

log = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")
TRACKING_SWITCH = "RFTFLOW_TRACKING"  # "off" turns tracking off (tests, air-gapped runs)
UI_URL_ENV = "RFTFLOW_MLFLOW_UI_URL"  # where people open MLflow, when it differs from the tracking URI
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_EVAL_ROLES = ("baseline", "candidate", "champion")
_DIVERSITY_KEYS = ("all_pass", "all_fail", "mixed", "expected_mixed")
_RUN_PARAMS = ("dag_id", "run_id", "cycle", "max_cycles", "parent_run_id", "model_family", "backend",
               "start_model", "candidate_model")
RUN_ENV = "RFTFLOW_MLFLOW_RUN_ID"  # the cycle's MLflow run, for the trainer child the training task starts
URI_ENV = "RFTFLOW_MLFLOW_TRACKING_URI"  # and where it is
# Per-step training metrics logged (as `{stage}/{name}`): the loss SFT minimises, and for GRPO the reward it
# climbs, its loss and KL, response length and the share of prompts whose rollouts all scored alike.
TRAIN_METRICS = {
    "sft": ("train/loss", "train/mean_token_accuracy"),
    "rft": ("critic/rewards/mean", "actor/loss", "actor/kl_loss", "response_length/mean", "frac_reward_zero_std"),
}
# Eval metrics logged per role (baseline / candidate / champion), overall and per breakdown group.
EVAL_KEYS = ("pass_at_1", "mean_reward", "pass_at_k", "sampled_pass_at_1", "mean_response_tokens")
_GROUP_KEYS = ("pass_at_1", "mean_reward")


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store inside the project (`.mlflow/mlflow.db`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database; a server decides for itself."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):])
    return (db.parent / "artifacts").as_uri()


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, when there is a UI to open (a server, or RFTFLOW_MLFLOW_UI_URL)."""
    base = os.environ.get(UI_URL_ENV) or (tracking_uri if tracking_uri.startswith(("http://", "https://"))
                                          else None)
    if not base:
        return None
    return redact_uri(  # a link to show people: never the credentials of the server URI
        f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}")


# --------------------------------------------------------------------------- names and values


_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")


def metric_name(*parts: Any) -> str:
    """A readable MLflow metric/param name: parts joined by '/', characters MLflow refuses become '_'.

    MLflow allows letters, digits, '_', '-', '.', ' ', ':' and '/' (Nova/verl names such as
    `critic/rewards/mean` stay as they are), but no empty or '.'/'..' path segments.
    """
    segments = []
    for part in parts:
        for seg in str(part).split("/"):
            seg = _BAD_NAME_CHARS.sub("_", seg.strip())
            if seg in ("", ".", ".."):
                seg = seg.replace(".", "_") or "_"
            segments.append(seg)
    return "/".join(segments)[:250]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _eval_metrics(role: str, metrics: dict[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in EVAL_KEYS:
        if (v := _number((metrics or {}).get(key))) is not None:
            out[metric_name("eval", role, key)] = v
    for field, groups in ((metrics or {}).get("breakdown") or {}).items():
        for group, values in (groups or {}).items():
            for key in _GROUP_KEYS:
                if (v := _number((values or {}).get(key))) is not None:
                    out[metric_name("eval", role, f"by_{field}", group, key)] = v
    return out


def diversity_fractions(metrics: dict[str, Any]) -> dict[str, float]:
    """all_pass / all_fail / mixed as fractions of the prompts, whether they were logged as fractions or counts."""
    values = {k: _number(metrics.get(k)) for k in _DIVERSITY_KEYS}
    n = _number(metrics.get("n_prompts"))
    counted = sum(v for k, v in values.items() if v is not None and k != "expected_mixed") > 1.0 + 1e-6
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = value / n if counted and n and (key != "expected_mixed" or value > 1.0) else value
    for key in ("mean_pass_rate", "n_prompts", "k"):
        if (v := _number(metrics.get(key))) is not None:
            out[key] = v
    return out


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The cycle-level numbers of a summary, by MLflow metric name (no per-step training metrics)."""
    out: dict[str, float] = {}
    for role in _EVAL_ROLES:
        out.update(_eval_metrics(role, summary.get(role)))
    baseline, candidate = summary.get("baseline") or {}, summary.get("candidate") or {}
    for key in ("pass_at_1", "mean_reward"):
        b, c = _number(baseline.get(key)), _number(candidate.get(key))
        if b is not None and c is not None:
            out[metric_name("eval", "gain", key)] = c - b
    for entry in summary.get("diversity") or []:
        for key, value in diversity_fractions(entry.get("metrics") or {}).items():
            out[metric_name("diversity", entry.get("stage", "diversity_check"), key)] = value
    for stage in summary.get("stages") or []:
        if (v := _number(stage.get("duration_s"))) is not None:
            out[metric_name("duration_s", stage.get("stage", "stage"))] = v
    validation = summary.get("validation") or {}
    for key in ("train_rows", "eval_rows", "sft_rows"):
        if (v := _number(validation.get(key))) is not None:
            out[metric_name("data", key)] = v
    if (v := _number(summary.get("cost_usd"))) is not None:
        out["cost_usd"] = v
    return out


def row_metrics(stage: str, row: dict[str, Any], index: int = 0) -> list[tuple[str, float, int]]:
    """(name, value, step) of one logged training row: the TRAIN_METRICS of its stage, named `{stage}/{key}`."""
    step = _number(row.get("step"))
    step_i = int(step) if step is not None else index
    return [(metric_name(stage, key), v, step_i) for key in TRAIN_METRICS.get(stage, ())
            if (v := _number(row.get(key))) is not None]


def training_metrics(train_rows: dict[str, list[dict[str, Any]]]) -> list[tuple[str, float, int]]:
    """(name, value, step) for the TRAIN_METRICS of every logged training row, named `{stage}/{key}`."""
    return [m for stage, rows in (train_rows or {}).items() for index, row in enumerate(rows or [])
            for m in row_metrics(stage, row, index)]


def _params(summary: dict[str, Any]) -> dict[str, str]:
    params: dict[str, Any] = {k: summary.get(k) for k in _RUN_PARAMS}
    for key, value in (summary.get("params") or {}).items():
        params.setdefault(key, value)
    out = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out[metric_name(key)] = text[:6000]
    return out


def _gate_tags(gate: dict[str, Any] | None) -> dict[str, str]:
    if not isinstance(gate, dict):
        return {}
    tags = {"gate.decision": str(gate.get("decision")), "gate.reason": str(gate.get("reason") or "")[:5000]}
    for reason in gate.get("reasons") or []:
        verdict = ("missing" if reason.get("missing") else "skipped") if reason.get("skipped") else \
            ("warning" if reason.get("warning") else "passed") if reason.get("passed") else "FAILED"
        text = (f"{verdict}: observed {reason.get('observed')}, required {reason.get('required')}"
                f" - {reason.get('detail') or ''}")
        tags[metric_name(f"gate.check.{reason.get('check', 'check')}")] = text[:5000]
    return tags


def cycle_key(summary: dict[str, Any]) -> str:
    """One MLflow run per (dag, run, cycle): every task of the cycle, and a retried one, finds the same run."""
    return f"{summary.get('dag_id')}/{safe_segment(str(summary.get('run_id')))}/cycle-{summary.get('cycle')}"


def _run_tags(summary: dict[str, Any], key: str) -> dict[str, str]:
    return {"rftflow.cycle_key": key, "rftflow.dag_id": str(summary.get("dag_id")),
            "rftflow.run_id": str(summary.get("run_id")), "rftflow.cycle": str(summary.get("cycle"))}


def _run_name(summary: dict[str, Any]) -> str:
    return f"{summary.get('dag_id')} {summary.get('run_id')} cycle {summary.get('cycle')}"


def _find_run(client: Any, experiment_id: str, key: str) -> Any | None:
    """The cycle's run: a finished one first, else the one opened while the cycle runs (the oldest, should
    two attempts have opened one each)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`rftflow.cycle_key` = '{key}'",
                              max_results=10)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        return finished[0]
    live = sorted((r for r in runs if r.info.status == "RUNNING"), key=lambda r: r.info.start_time or 0)
    return live[0] if live else None


def _opened(client: Any, summary: dict[str, Any], tracking_uri: str) -> tuple[str, Any]:
    """(experiment id, run) of the cycle: found, or created now (RUNNING, with the params known so far)."""
    experiment_id = _experiment_id(client, f"rftflow/{summary.get('model_family') or 'default'}", tracking_uri)
    key = cycle_key(summary)
    run = _find_run(client, experiment_id, key)
    if run is None:
        run = client.create_run(experiment_id, run_name=_run_name(summary),
                                tags={**_run_tags(summary, key), "rftflow.outcome": "running"})
        _log_new_params(client, run, summary, known_only=True)
    return experiment_id, run


def _log_new_params(client: Any, run: Any, summary: dict[str, Any], *, known_only: bool = False) -> None:
    """Params not logged yet (MLflow params never change: one known earlier, e.g. at the start, is kept).
    known_only: leave out the ones still unknown (null), e.g. the candidate model at the start."""
    from mlflow.entities import Param

    have = dict(run.data.params or {}) if run.data else {}
    fresh = {k: v for k, v in _params(summary).items() if k not in have and not (known_only and v == "null")}
    params = [Param(k, v) for k, v in fresh.items()]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start:start + 100])


def _answer(tracking_uri: str, experiment_id: str, run_id: str) -> dict[str, Any]:
    return {"mlflow_run_id": run_id, "mlflow_experiment_id": experiment_id,
            "mlflow_url": run_url(tracking_uri, experiment_id, run_id), "tracking_uri": redact_uri(tracking_uri)}


def _best_effort(what: str, summary: dict[str, Any], tracking_uri: str | None, fn: Any) -> dict[str, Any]:
    if not tracking_enabled():
        return {"skipped": f"MLflow tracking is off ({TRACKING_SWITCH}={os.environ.get(TRACKING_SWITCH)})"}
    uri = tracking_uri or default_tracking_uri()
    try:
        return fn(uri)
    except Exception as err:  # tracking must never fail the cycle
        log.warning("MLflow %s of %s failed at %s (the cycle goes on): %s", what, cycle_key(summary),
                    redact_uri(uri), redact_text(str(err)), exc_info=True)
        return {"error": redact_text(f"{type(err).__name__}: {err}"), "tracking_uri": redact_uri(uri)}


def open_cycle_run(summary: dict[str, Any], tracking_uri: str | None = None) -> dict[str, Any]:
    """Open (or find) the cycle's MLflow run at the start of the cycle, so it shows live curves.

    `summary` needs dag_id, run_id, cycle and model_family; the params known at the start (backend,
    max_cycles, the run's `params`) are logged too. Returns what `log_cycle` returns.
    """
    def go(uri: str) -> dict[str, Any]:
        client = _client(uri)
        experiment_id, run = _opened(client, summary, uri)
        return _answer(uri, experiment_id, run.info.run_id)

    return _best_effort("run opening", summary, tracking_uri, go)


def log_so_far(summary: dict[str, Any], tracking_uri: str | None = None) -> dict[str, Any]:
    """The cycle-level metrics known now (eval, gain, diversity, durations) and the gate tags, into the
    cycle's run while it runs; `summary` is a partial `build_summary`. Values already there are skipped."""
    def go(uri: str) -> dict[str, Any]:
        from mlflow.entities import Metric, RunTag

        client = _client(uri)
        experiment_id, run = _opened(client, summary, uri)
        if run.info.status == "FINISHED":
            return _answer(uri, experiment_id, run.info.run_id)
        have = dict(run.data.metrics or {}) if run.data else {}
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in summary_metrics(summary).items() if have.get(k) != v]
        tags = [RunTag(k, v) for k, v in _gate_tags(summary.get("gate")).items()]
        for start in range(0, len(metrics), _BATCH):
            client.log_batch(run.info.run_id, metrics=metrics[start:start + _BATCH])
        if tags:
            client.log_batch(run.info.run_id, tags=tags)
        return {**_answer(uri, experiment_id, run.info.run_id), "logged": len(metrics)}

    return _best_effort("logging", summary, tracking_uri, go)


class LiveMetrics:
    """Sends a trainer's rows (the TRAIN_METRICS of its stage) to the cycle's run as the trainer logs them.

    Lives in the training child, which the training task starts with RFTFLOW_MLFLOW_RUN_ID and
    RFTFLOW_MLFLOW_TRACKING_URI; without them (tracking off, no run opened) `from_env` is None and mlflow
    is never imported. The first failure is printed to the trainer's log and ends live logging: the
    report task logs every row anyway.
    """

    def __init__(self, stage: str, run_id: str, tracking_uri: str):
        self.stage, self.run_id, self.tracking_uri = stage, run_id, tracking_uri
        self._client: Any = None
        self.failed: str | None = None

    @classmethod
    def from_env(cls, stage: str) -> LiveMetrics | None:
        run_id, uri = os.environ.get(RUN_ENV), os.environ.get(URI_ENV)
        if not run_id or not uri or not tracking_enabled():
            return None
        return cls(stage, run_id, uri)

    def log(self, row: dict[str, Any]) -> None:
        if self.failed is not None:
            return
        try:
            from mlflow.entities import Metric

            if self._client is None:
                self._client = _client(self.tracking_uri)
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v, step in row_metrics(self.stage, row)]
            if metrics:
                self._client.log_batch(self.run_id, metrics=metrics)
        except Exception as err:  # never stop training for tracking
            self.failed = redact_text(f"{type(err).__name__}: {err}")
            print(f"MLflow: live metrics to run {self.run_id} at {redact_uri(self.tracking_uri)} stopped "
                  f"(the report logs them at the end): {self.failed}", flush=True)


# --------------------------------------------------------------------------- public API


def log_cycle(summary: dict[str, Any], train_rows: dict[str, list[dict[str, Any]]], report_dir: str | None,
              tracking_uri: str | None = None) -> dict[str, Any]:
    """Log one finished cycle as an MLflow run in experiment `rftflow/{model_family}`.

    Params, per-step training metrics, eval and diversity metrics, the gate decision and reasons (tags
    and gate.json), the summary (cycle.json) and the report folder as artifacts. Returns
    {"mlflow_run_id", "mlflow_experiment_id", "mlflow_url"}, or {"error": ...} when MLflow failed.
    """
    if not tracking_enabled():
        return {"skipped": f"MLflow tracking is off ({TRACKING_SWITCH}={os.environ.get(TRACKING_SWITCH)})"}
    uri = tracking_uri or default_tracking_uri()
    try:
        return _log_cycle(summary, train_rows, report_dir, uri)
    except Exception as err:  # tracking must never fail the cycle
        log.warning("MLflow tracking of %s failed at %s (the cycle goes on): %s", cycle_key(summary),
                    redact_uri(uri), redact_text(str(err)), exc_info=True)
        return {"error": redact_text(f"{type(err).__name__}: {err}"), "tracking_uri": redact_uri(uri)}


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri),
                                        tags={"rftflow.model_family": name.split("/", 1)[-1]})
    except Exception:
        experiment = client.get_experiment_by_name(name)  # another cycle created it meanwhile
        if experiment is None:
            raise
        return experiment.experiment_id


def _log_cycle(summary: dict[str, Any], train_rows: dict[str, list[dict[str, Any]]], report_dir: str | None,
               tracking_uri: str) -> dict[str, Any]:
    from mlflow.entities import Metric, RunTag

    client = _client(tracking_uri)
    family = str(summary.get("model_family") or "default")
    experiment_id = _experiment_id(client, f"rftflow/{family}", tracking_uri)
    key = cycle_key(summary)
    run = _find_run(client, experiment_id, key)
    if run is not None and run.info.status == "FINISHED":
        run_id = run.info.run_id
        log.info("MLflow run %s already holds %s; not logging it twice", run_id, key)
        return _answer(tracking_uri, experiment_id, run_id)

    tags = {**_run_tags(summary, key), "rftflow.outcome": str(summary.get("outcome")),
            "rftflow.outcome_reason": str(summary.get("outcome_reason") or "")[:5000],
            **_gate_tags(summary.get("gate"))}
    for name in ("report_html_uri", "report_md_uri", "cycle_json_uri"):
        if summary.get(name):
            tags[f"rftflow.{name}"] = str(summary[name])
    try:
        from rftflow.publish.report import summary_text

        tags["mlflow.note.content"] = summary_text(summary)[:5000]
    except Exception as err:  # the description is a courtesy
        log.debug("no run description: %s", err)
    if run is None:  # nobody opened it while the cycle ran (tracking was off then, or MLflow was down)
        run = client.create_run(experiment_id, run_name=_run_name(summary), tags=tags)
    else:  # the run opened at the start of the cycle: complete it
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    run_id = run.info.run_id
    _log_new_params(client, run, summary)
    # What the cycle's tasks and trainers logged live is not logged a second time.
    have = dict(run.data.metrics or {}) if run.data else {}
    seen: dict[str, set[int]] = {}
    for name in {n for n, _, _ in training_metrics(train_rows)} & set(have):
        seen[name] = {m.step for m in client.get_metric_history(run_id, name)}

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in summary_metrics(summary).items() if have.get(k) != v]
    metrics += [Metric(k, v, now, step) for k, v, step in training_metrics(train_rows)
                if step not in seen.get(k, ())]
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _BATCH])

    if isinstance(summary.get("gate"), dict):
        client.log_dict(run_id, summary["gate"], "gate.json")
    client.log_dict(run_id, json.loads(json.dumps(summary, default=str)), "cycle.json")
    if report_dir:
        _log_report(client, run_id, report_dir)
    client.set_terminated(run_id, "FINISHED")
    url = run_url(tracking_uri, experiment_id, run_id)
    log.info("MLflow run %s (%s) logged %d metrics%s", run_id, key, len(metrics), f": {url}" if url else "")
    return _answer(tracking_uri, experiment_id, run_id)


def _log_report(client: Any, run_id: str, report_dir: str) -> None:
    """The report folder (report.md, report.html, plots/) as artifacts under `report/`."""
    local = store.local_path(report_dir)
    if local is not None:
        if Path(local).is_dir():
            client.log_artifacts(run_id, local, "report")
        return
    with tempfile.TemporaryDirectory(prefix="rftflow-report-") as tmp:
        store.get_dir(report_dir, tmp)
        client.log_artifacts(run_id, tmp, "report")


def set_alias(model_family: str, alias: str, model_uri: str, run_id: str | None,
              tracking_uri: str | None = None) -> dict[str, Any]:
    """Register `model_uri` as a version of the registered model `model_family` and point `alias` at it.

    The version's source is the checkpoint URI itself (weights are not copied); `run_id` is the MLflow
    run of the cycle (from `log_cycle`). The same (source, run) reuses its version. Returns
    {"registered_model", "version", "alias", "model_uri"}, or {"error": ...}.
    """
    if alias not in ALIASES:
        raise ValueError(f"alias: expected one of {ALIASES}; got {alias!r}")
    if not tracking_enabled():
        return {"skipped": f"MLflow tracking is off ({TRACKING_SWITCH}={os.environ.get(TRACKING_SWITCH)})"}
    uri = tracking_uri or default_tracking_uri()
    try:
        client = _client(uri)
        try:
            client.get_registered_model(model_family)
        except Exception:
            client.create_registered_model(model_family, tags={"rftflow.model_family": model_family},
                                           description=f"Checkpoints of the {model_family} model family")
        version = None
        if run_id:
            for mv in client.search_model_versions(f"name = '{model_family}' and run_id = '{run_id}'"):
                if mv.source == model_uri:
                    version = mv.version
                    break
        if version is None:
            version = client.create_model_version(model_family, source=model_uri, run_id=run_id,
                                                  tags={"rftflow.model_uri": model_uri}).version
        client.set_registered_model_alias(model_family, alias, version)
        log.info("MLflow: %s@%s -> version %s (%s)", model_family, alias, version, model_uri)
        return {"registered_model": model_family, "version": str(version), "alias": alias, "model_uri": model_uri}
    except Exception as err:  # tracking must never fail the cycle
        log.warning("MLflow alias %s@%s -> %s failed at %s (the cycle goes on): %s", model_family, alias,
                    model_uri, redact_uri(uri), redact_text(str(err)), exc_info=True)
        return {"error": redact_text(f"{type(err).__name__}: {err}"), "tracking_uri": redact_uri(uri)}


def track_cycle(summary: dict[str, Any], train_rows: dict[str, list[dict[str, Any]]], report_dir: str | None,
                tracking_uri: str | None = None) -> dict[str, Any]:
    """`log_cycle`, then `challenger` on the candidate and, when it was promoted, `champion` too."""
    result = log_cycle(summary, train_rows, report_dir, tracking_uri)
    candidate = summary.get("candidate_model")
    if not result.get("mlflow_run_id") or not candidate:
        return result
    family = str(summary.get("model_family") or "default")
    aliases = {"challenger": set_alias(family, "challenger", candidate, result["mlflow_run_id"], tracking_uri)}
    if summary.get("outcome") == "promoted":
        aliases["champion"] = set_alias(family, "champion", candidate, result["mlflow_run_id"], tracking_uri)
    return {**result, "aliases": aliases}
