"""Credentials never reach what rftflow records or prints: URIs, cycle.json, the UI's index, manifests, logs.

The end-to-end test plants secrets where an operator's configuration puts them (MLFLOW_TRACKING_URI with
user:password, a model URI with a token, a secret environment variable) and greps every file a finished
cycle wrote, plus the log, for them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rftflow.artifacts import store
from rftflow.redact import MASK, install_log_redaction, redact, redact_text, redact_uri, redacted_errors


@pytest.mark.parametrize("uri, expected", [
    ("http://user:s3cr3t@mlflow:5000", "http://user:***@mlflow:5000"),
    ("https://user:s3cr3t@mlflow.example/path?x=1", "https://user:***@mlflow.example/path?x=1"),
    ("https://ghp_token123@api.example/v1", "https://***@api.example/v1"),
    ("smtp://mailer:pw-123@smtp.example:587", "smtp://mailer:***@smtp.example:587"),
    ("http://minio:minio-secret@127.0.0.1:9000", "http://minio:***@127.0.0.1:9000"),
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/services/***"),
    ("https://discord.com/api/webhooks/123/SECRETTOKEN", "https://discord.com/api/webhooks/123/***"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA1&part=2",
     "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Credential=***&part=2"),
    ("https://hook.example/in?token=abc&channel=x", "https://hook.example/in?token=***&channel=x"),
    ("s3://bucket/runs/a", "s3://bucket/runs/a"),
    ("file:///tmp/a@b/c", "file:///tmp/a@b/c"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("not a uri", "not a uri"),
])
def test_redact_uri(uri, expected):
    assert redact_uri(uri) == expected


def test_redact_text_finds_uris_in_sentences_json_and_html():
    text = ('failed at http://u:pw-one@host:5000/api (x); "uri": "smtp://m:pw-two@mail:25", '
            '<a href="https://u:pw-three@h/x">link</a>')
    clean = redact_text(text)
    assert "pw-one" not in clean and "pw-two" not in clean and "pw-three" not in clean
    assert clean.count(MASK) == 3 and "host:5000/api (x)" in clean and '">link</a>' in clean


def test_values_of_secret_environment_variables_are_masked(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "planted-password-0451")
    monkeypatch.setenv("SOME_TOKEN_FILE", "/var/run/secrets/not-a-secret-path")
    assert redact_text("login with planted-password-0451 failed") == f"login with {MASK} failed"
    assert redact_text("/var/run/secrets/not-a-secret-path") == "/var/run/secrets/not-a-secret-path"
    assert redact({"a": ["x planted-password-0451"], "n": 3}) == {"a": [f"x {MASK}"], "n": 3}


def test_log_records_and_their_tracebacks_are_redacted():
    install_log_redaction()
    install_log_redaction()  # idempotent: one wrapper
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("rftflow.test_redact")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("tracking at %s failed", "http://u:pw-log@h:1")
        try:
            raise ConnectionError("cannot reach http://u:pw-exc@h:1/api")
        except ConnectionError:
            logger.exception("tracking failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(logging.Formatter().format(r) for r in records)
    assert "pw-log" not in text and "pw-exc" not in text
    assert "http://u:***@h:1" in text and "ConnectionError" in text


def test_an_error_quoting_a_credential_is_reraised_masked():
    with pytest.raises(ConnectionError) as err, redacted_errors():
        raise ConnectionError("cannot reach http://u:pw-err@h:1/api")
    assert "pw-err" not in str(err.value) and "http://u:***@h:1/api" in str(err.value)
    with pytest.raises(KeyError), redacted_errors():  # nothing to mask: the very same error
        raise KeyError("plain")


def _finished_cycle(root: str, run_id: str, model_uri: str) -> dict:
    """A rejected local cycle written as its tasks write it (stage manifests, then build and publish the summary)."""
    from rftflow.artifacts.manifest import StageManifest, write_manifest
    from rftflow.cycle.context import stage_context
    from rftflow.cycle.params import parse_params
    from rftflow.publish.summary import build_summary, publish_summary

    p = parse_params({"artifact_root": root, "base_model": model_uri})
    ctx = stage_context(p, "rft_cycle", run_id, "report")
    evals = {"pass_at_1": 0.4, "mean_reward": 0.4, "n": 8}

    def manifest(stage: str, **fields) -> None:
        write_manifest(ctx.for_stage(stage).uri, StageManifest(
            dag_id="rft_cycle", run_id=run_id, cycle=1, stage=stage, backend="local", started_at="t",
            finished_at="t", duration_s=1.0, **fields))

    manifest("validate_data", metrics={"ok": True}, inputs={"train_uri": p.train_uri})
    manifest("baseline_eval", checkpoint_uri=model_uri, metrics=evals, inputs={"model_uri": model_uri})
    manifest("baseline_eval.registry", checkpoint_uri=model_uri, inputs={"start": model_uri})
    manifest("diversity_check", checkpoint_uri=model_uri, metrics={"mixed": 0.5},
             decision={"decision": "rft", "reason": "mixed"})
    rft = ctx.for_stage("rft").uri
    store.write_text(store.join(rft, "metrics.jsonl"), '{"step": 1, "critic/rewards/mean": 0.4}\n')
    manifest("rft", checkpoint_uri=store.join(rft, "model"), inputs={"model_uri": model_uri},
             outputs={"metrics_uri": store.join(rft, "metrics.jsonl")})
    manifest("checkpoint_eval", checkpoint_uri=store.join(rft, "model"), metrics=evals)
    manifest("gate", checkpoint_uri=store.join(rft, "model"),
             decision={"decision": "reject", "reason": "no gain", "reasons": [], "table": "-"})
    published = publish_summary(p, ctx, build_summary(p, ctx))
    return store.read_json(published["cycle_json_uri"])


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_finished_cycle_records_no_planted_secret(tmp_path, monkeypatch, caplog):
    """Every artifact a cycle writes (manifests, cycle.json, the report, the UI's index) and its log."""
    planted = ["PLANTED-mlflow-pass-7c1", "PLANTED-env-secret-value-99", "PLANTED-model-token-3e"]
    # An MLflow server that refuses connections, reached with credentials in the URI (as operators set it).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://rftflow:{planted[0]}@127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("RFTFLOW_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", planted[1])
    monkeypatch.setenv("RFTFLOW_MLFLOW_UI_URL", f"https://viewer:{planted[0]}@mlflow.example")
    root = tmp_path / "artifacts"
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        summary = _finished_cycle(root.as_uri(), "manual__secrets", f"https://hf:{planted[2]}@models.example/m")
        logging.getLogger("rftflow.test").error("env secret %s", os.environ["MLFLOW_TRACKING_PASSWORD"])
    assert summary["mlflow"].get("error") or summary["mlflow"].get("tracking_uri")  # tracking was attempted
    files = _all_files(root)
    assert any(f.name == "cycle.json" for f in files) and any("index" in f.parts for f in files)
    for f in files:
        data = f.read_bytes()
        for secret in planted:
            assert secret.encode() not in data, f"{secret} found in {f.relative_to(root)}"
    log_text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in planted:
        assert secret not in log_text, f"{secret} in the log"
    assert "http://rftflow:***@127.0.0.1:9" in store.read_text(store.join(root.as_uri(), "rft_cycle",
                                                                          "manual__secrets", "cycle-1", "report",
                                                                          "cycle.json"))


def test_the_ui_index_hides_credentials_written_before_redaction(tmp_path):
    from rftflow.publish.summary import read_index

    root = tmp_path.as_uri()
    store.write_json(store.join(root, "index", "fam", "old.json"),
                     {"run_id": "r", "cycle": 1, "model_family": "fam",
                      "mlflow": {"tracking_uri": "http://u:old-secret-pw@h:5000"}})
    (entry,) = read_index(root, "fam")
    assert entry["mlflow"]["tracking_uri"] == "http://u:***@h:5000"
