"""MLflow tracking of cycles: one run per cycle with what a reviewer looks for, aliases that follow promotion,
and failures that never reach the cycle. Runs against a real SQLite-backed MLflow store in a tmp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finished_cycles import write_finished_cycle

from rftflow.artifacts import store
from rftflow.publish import tracking


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def promoted_cycle(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, list[dict]], str]:
    """(cycle.json, training rows by stage, report folder URI) of a finished, promoted local cycle."""
    root = (tmp_path_factory.mktemp("tracking") / "artifacts").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFTFLOW_TRACKING", "off")  # publishing must not track on its own here
        summary = write_finished_cycle(root, "manual__2026-11-25T09:00:00+00:00")
    rows = {stage: [json.loads(line) for line in store.read_text(uri).splitlines()]
            for stage, uri in summary["train_metrics_uris"].items()}
    return summary, rows, summary["report_html_uri"].rsplit("/", 1)[0]


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_cycle_is_one_mlflow_run_with_params_metrics_gate_and_report(promoted_cycle, mlflow_uri):
    summary, rows, report_dir = promoted_cycle
    result = tracking.log_cycle(summary, rows, report_dir, tracking_uri=mlflow_uri)
    assert "error" not in result, result
    client = _client(mlflow_uri)
    run = client.get_run(result["mlflow_run_id"])
    experiment = client.get_experiment(result["mlflow_experiment_id"])
    assert experiment.name == "rftflow/tiny-finqa"
    assert run.info.status == "FINISHED"

    assert run.data.params["backend"] == "local"
    assert run.data.params["run_id"] == summary["run_id"]
    assert run.data.params["candidate_model"] == summary["candidate_model"]

    history = client.get_metric_history(run.info.run_id, "rft/critic/rewards/mean")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [r["step"] for r in rows["rft"]]
    assert sorted(history, key=lambda m: m.step)[-1].value == pytest.approx(rows["rft"][-1]["critic/rewards/mean"])
    metrics = run.data.metrics
    assert metrics["eval/baseline/pass_at_1"] == pytest.approx(0.40)
    assert metrics["eval/candidate/pass_at_1"] == pytest.approx(0.55)
    assert metrics["eval/gain/pass_at_1"] == pytest.approx(0.15)
    assert metrics["eval/candidate/by_category/carry/pass_at_1"] == pytest.approx(0.45)
    assert metrics["diversity/diversity_check/mixed"] == pytest.approx(0.55)
    assert metrics["diversity/diversity_check/all_fail"] == pytest.approx(0.20)

    tags = run.data.tags
    assert tags["gate.decision"] == "promote"
    assert tags["rftflow.outcome"] == "promoted"
    assert tags["gate.check.gain_vs_baseline"].startswith("passed")
    assert "promoted" in tags["mlflow.note.content"].lower()

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gate.json", "cycle.json", "report"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/plots"} <= report
    local = Path(client.download_artifacts(run.info.run_id, "gate.json"))
    assert json.loads(local.read_text())["decision"] == "promote"


def test_logging_the_same_cycle_again_reuses_its_run(promoted_cycle, mlflow_uri):
    summary, rows, report_dir = promoted_cycle
    first = tracking.log_cycle(summary, rows, report_dir, tracking_uri=mlflow_uri)
    again = tracking.log_cycle(summary, rows, report_dir, tracking_uri=mlflow_uri)
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    history = _client(mlflow_uri).get_metric_history(first["mlflow_run_id"], "rft/critic/rewards/mean")
    assert len(history) == len(rows["rft"])


def test_promotion_moves_champion_and_candidates_get_challenger(promoted_cycle, mlflow_uri):
    summary, rows, report_dir = promoted_cycle
    result = tracking.track_cycle(summary, rows, report_dir, tracking_uri=mlflow_uri)
    assert result["aliases"]["challenger"]["version"] == result["aliases"]["champion"]["version"]
    client = _client(mlflow_uri)
    champion = client.get_model_version_by_alias("tiny-finqa", "champion")
    assert champion.source == summary["candidate_model"]  # the checkpoint URI itself: weights are not copied
    assert champion.run_id == result["mlflow_run_id"]

    newer = "s3://bucket/rft_cycle/run-2/cycle-1/rft/model"
    moved = tracking.set_alias("tiny-finqa", "challenger", newer, result["mlflow_run_id"], tracking_uri=mlflow_uri)
    assert client.get_model_version_by_alias("tiny-finqa", "challenger").source == newer
    assert client.get_model_version_by_alias("tiny-finqa", "champion").source == summary["candidate_model"]
    again = tracking.set_alias("tiny-finqa", "challenger", newer, result["mlflow_run_id"], tracking_uri=mlflow_uri)
    assert again["version"] == moved["version"]  # the same checkpoint of the same run is one version

    with pytest.raises(ValueError, match="alias: expected one of"):
        tracking.set_alias("tiny-finqa", "production", newer, None, tracking_uri=mlflow_uri)


def test_mlflow_failures_are_returned_not_raised(promoted_cycle, tmp_path):
    summary, rows, report_dir = promoted_cycle
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    broken = f"sqlite:///{tmp_path / 'not-a-folder' / 'mlflow.db'}"
    result = tracking.log_cycle(summary, rows, report_dir, tracking_uri=broken)
    assert set(result) == {"error", "tracking_uri"} and result["error"]
    alias = tracking.set_alias("tiny-finqa", "champion", "file:///m", "r", tracking_uri=broken)
    assert "error" in alias
    assert "error" in tracking.track_cycle(summary, rows, report_dir, tracking_uri=broken)


def test_tracking_can_be_switched_off(promoted_cycle, monkeypatch):
    summary, rows, report_dir = promoted_cycle
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    assert "skipped" in tracking.log_cycle(summary, rows, report_dir, tracking_uri="sqlite:////nowhere/x.db")


def test_default_store_is_sqlite_inside_the_project(monkeypatch):
    from rftflow.cycle.params import PROJECT_ROOT

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.default_tracking_uri() == f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x")
    assert tracking.default_tracking_uri().startswith("arn:aws:sagemaker:")


def test_metric_names_stay_readable_and_valid():
    assert tracking.metric_name("rft", "critic/rewards/mean") == "rft/critic/rewards/mean"
    assert tracking.metric_name("eval", "candidate", "by_category", "a=b?") == "eval/candidate/by_category/a_b_"
    assert tracking.metric_name("x", "../y") == "x/__/y"
    assert tracking.run_url("http://mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    assert tracking.run_url("sqlite:////tmp/m.db", "3", "abc") is None


def test_the_run_opened_at_the_start_gets_live_rows_and_the_report_completes_it(promoted_cycle, tmp_path,
                                                                                monkeypatch):
    """What a cycle does: its first task opens the run, the trainer logs rows as it goes, the report task
    finishes the same run without logging those rows twice."""
    summary, rows, report_dir = promoted_cycle
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    key = {k: summary[k] for k in ("dag_id", "run_id", "cycle", "model_family", "backend", "max_cycles")}
    opened = tracking.open_cycle_run({**key, "start_model": None}, tracking_uri=uri)
    assert "error" not in opened, opened
    assert tracking.open_cycle_run(key, tracking_uri=uri)["mlflow_run_id"] == opened["mlflow_run_id"]
    client = _client(uri)
    run = client.get_run(opened["mlflow_run_id"])
    assert run.info.status == "RUNNING" and run.data.tags["rftflow.outcome"] == "running"
    # the tags a person filters cycles by in the MLflow UI
    assert {k: run.data.tags[k] for k in ("rftflow.dag_id", "rftflow.run_id", "rftflow.cycle")} == \
        {"rftflow.dag_id": summary["dag_id"], "rftflow.run_id": summary["run_id"], "rftflow.cycle": str(summary["cycle"])}
    assert "start_model" not in run.data.params  # unknown at the start: logged by the report

    monkeypatch.setenv(tracking.RUN_ENV, opened["mlflow_run_id"])
    monkeypatch.setenv(tracking.URI_ENV, uri)
    live = tracking.LiveMetrics.from_env("rft")
    for row in rows["rft"][:2]:  # the trainer is halfway when someone looks
        live.log(row)
    assert live.failed is None
    history = client.get_metric_history(opened["mlflow_run_id"], "rft/critic/rewards/mean")
    assert [m.step for m in history] == [r["step"] for r in rows["rft"][:2]]
    other = next(k for k, v in rows["rft"][0].items() if isinstance(v, float) and k not in tracking.TRAIN_METRICS["rft"])
    assert f"rft/{other}" not in client.get_run(opened["mlflow_run_id"]).data.metrics  # only the compared set

    result = tracking.log_cycle(summary, rows, report_dir, tracking_uri=uri)
    assert result["mlflow_run_id"] == opened["mlflow_run_id"]
    run = client.get_run(opened["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["rftflow.outcome"] == "promoted"
    assert run.data.params["start_model"] == summary["start_model"]
    history = client.get_metric_history(opened["mlflow_run_id"], "rft/critic/rewards/mean")
    assert sorted(m.step for m in history) == [r["step"] for r in rows["rft"]]  # each step once
    assert len(_client(uri).search_runs([result["mlflow_experiment_id"]])) == 1


def test_live_metrics_cost_nothing_without_a_run_and_stop_quietly_on_failure(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(tracking.RUN_ENV, raising=False)
    assert tracking.LiveMetrics.from_env("sft") is None
    monkeypatch.setenv(tracking.RUN_ENV, "0123")
    monkeypatch.setenv(tracking.URI_ENV, f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    assert tracking.LiveMetrics.from_env("sft") is None
    monkeypatch.setenv("RFTFLOW_TRACKING", "on")
    live = tracking.LiveMetrics.from_env("sft")
    live.log({"step": 5, "train/loss": 1.5})  # no such run: said once in the trainer's log, training goes on
    live.log({"step": 10, "train/loss": 1.2})
    assert live.failed and capsys.readouterr().out.count("MLflow: live metrics") == 1


def test_the_metric_set_is_what_a_person_compares():
    row = {"step": 7, "train/loss": 1.25, "actor/lr": 1e-4, "actor/grad_norm": 3.0, "train/mean_token_accuracy": 0.5}
    assert tracking.row_metrics("sft", row) == [("sft/train/loss", 1.25, 7), ("sft/train/mean_token_accuracy", 0.5, 7)]
    metrics = tracking.summary_metrics({"baseline": {"pass_at_1": 0.2, "mean_reward": 0.3, "n": 64, "k": 4},
                                        "candidate": {"pass_at_1": 0.5, "mean_reward": 0.6, "n": 64}, "cost_usd": 1.5})
    assert metrics == {"eval/baseline/pass_at_1": 0.2, "eval/baseline/mean_reward": 0.3,
                       "eval/candidate/pass_at_1": 0.5, "eval/candidate/mean_reward": 0.6,
                       "eval/gain/pass_at_1": pytest.approx(0.3), "eval/gain/mean_reward": pytest.approx(0.3),
                       "cost_usd": 1.5}
