"""Notifications: off by default; gate decisions and failures reach the targets of the run and of the
`rftflow_notify` Variable; SNS (against the moto server) and email (against a local SMTP server) go
through the providers' own notifiers; bad targets are named.
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import BaseNotifier
from finished_cycles import write_finished_cycle

from rftflow.orchestration.operators import notify_failure
from rftflow.publish import notify


class RecordingNotifier(BaseNotifier):
    """A real Airflow notifier that keeps what it was asked to send."""

    sent: list[dict[str, Any]] = []

    def __init__(self, target: str, message: notify.Message) -> None:
        super().__init__()
        self.target, self.message = target, message

    def notify(self, context: Any) -> None:
        RecordingNotifier.sent.append({"target": self.target, "subject": self.message.subject,
                                       "text": self.message.text, "context": dict(context)})


@pytest.fixture(autouse=True)
def record_scheme(monkeypatch: pytest.MonkeyPatch):
    notify.register_scheme("record", RecordingNotifier)
    RecordingNotifier.sent = []
    monkeypatch.delenv("AIRFLOW_VAR_RFTFLOW_NOTIFY", raising=False)
    yield
    notify._SCHEMES.pop("record", None)


@pytest.fixture(scope="module")
def cycles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = (tmp_path_factory.mktemp("notify") / "artifacts").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RFTFLOW_TRACKING", "off")
        return {"promoted": write_finished_cycle(root, "manual__2026-11-25T09:00:00+00:00"),
                "rejected": write_finished_cycle(root, "manual__2026-11-25T10:00:00+00:00", improved=False)}


def test_nothing_is_sent_without_targets(cycles):
    assert notify.notify_gate([], cycles["promoted"]) == []
    assert notify.notify_gate(None, cycles["promoted"]) == []
    assert RecordingNotifier.sent == []


def test_gate_message_has_decision_reasons_metrics_and_report_link(cycles):
    summary = cycles["rejected"]
    results = notify.notify_gate(["record:ops"], summary)
    assert results == [{"target": "record:ops", "sent": True}]
    (sent,) = RecordingNotifier.sent
    assert sent["subject"].startswith("[rftflow] tiny-finqa cycle 1/1: REJECTED")
    text = sent["text"]
    assert "Gate: REJECT - guard fired: reward_hacking" in text
    assert "Eval set: 200 prompts, not split" in text and "Warning: the eval set (200 prompts)" in text
    assert "[FAIL] gain_vs_baseline: observed -0.0500, required 97.0% lower bound > 0, gain >= 0.02 - " \
           "pass_at_1 0.400 -> 0.350 (-5.0 points, n=200, 0/10 discordant)" in text
    assert "[skip] format_penalty: required rise <= 0.05 - skipped" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("pass@1")}
    assert "0.400" in lines["pass@1"] and "0.350" in lines["pass@1"]  # baseline vs candidate
    assert "Diversity (diversity_check): all-fail 20%, mixed 55%, all-pass 25% -> rft" in text
    assert f"Report: {summary['report_html_uri']}" in text


def test_promotion_message(cycles):
    notify.notify_gate(["record:ops"], {**cycles["promoted"], "mlflow": {"mlflow_run_id": "r1",
                                                                         "mlflow_url": "http://mlflow/#/r1"}})
    (sent,) = RecordingNotifier.sent
    assert "PROMOTED" in sent["subject"] and "pass_at_1 0.550 vs baseline 0.400" in sent["subject"]
    assert "[pass] gain_vs_baseline" in sent["text"]
    assert "MLflow: http://mlflow/#/r1" in sent["text"]


def test_variable_targets_are_read_at_run_time_and_merged(cycles, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_RFTFLOW_NOTIFY", "record:from-variable, record:ops")
    results = notify.notify_gate(["record:ops"], cycles["promoted"])
    assert [r["target"] for r in results] == ["record:ops", "record:from-variable"]
    assert [s["target"] for s in RecordingNotifier.sent] == ["ops", "from-variable"]


def test_a_failing_target_does_not_stop_the_others(cycles):
    results = notify.notify_gate(["email:not-an-address", "record:ops"], cycles["promoted"])
    assert results[0]["sent"] is False and "expected email:<address>" in results[0]["error"]
    assert results[1] == {"target": "record:ops", "sent": True}


def test_bad_targets_are_named_with_what_was_expected():
    with pytest.raises(notify.NotifyTargetError) as err:
        notify.validate_targets(["sns:my-topic", "pager:x", "email:ops", "slack:", "record:ok"])
    message = str(err.value)
    assert "notify[0]: expected an SNS topic ARN" in message
    assert "notify[1]: 'pager:x': unknown scheme 'pager'; expected one of" in message
    assert "notify[2]: expected email:<address>; got email:'ops'" in message
    assert "notify[3]: 'slack:': nothing after 'slack:'" in message
    assert "notify[4]" not in message
    assert notify.validate_targets(["record:ok", " email:a@b.co "]) == ["record:ok", "email:a@b.co"]


def test_slack_needs_its_provider():
    try:
        import airflow.providers.slack  # noqa: F401
    except ImportError:
        with pytest.raises(notify.NotifyTargetError, match="pip install apache-airflow-providers-slack"):
            notify.validate_targets(["slack:slack_default#ml-ops"])
    else:
        (notifier,) = notify.build_notifiers(["slack:slack_default#ml-ops"], notify.Message("s", "t", "h"))
        assert notifier.channel == "#ml-ops" and notifier.text == "t"


def test_failure_callback_tells_the_run_targets_which_task_failed(monkeypatch):
    callback = notify_failure  # what the DAG sets as every task's on_failure_callback
    ti = SimpleNamespace(dag_id="rft_cycle", task_id="rft", run_id="manual__1", try_number=3, log_url="http://af/log")
    context = {"ti": ti, "run_id": "manual__1", "exception": RuntimeError("CUDA out of memory"),
               "params": {"notify": ["record:ops"], "model_family": "tiny-finqa", "cycle": 2, "backend": "local"}}
    callback(context)
    (sent,) = RecordingNotifier.sent
    assert sent["subject"] == "[rftflow] tiny-finqa: rft_cycle.rft failed (manual__1)"
    assert "task rft failed (try 3)" in sent["text"] and "CUDA out of memory" in sent["text"]
    assert "Log: http://af/log" in sent["text"]
    RecordingNotifier.sent = []
    callback({**context, "params": {"notify": []}})  # off by default
    assert RecordingNotifier.sent == []

    # As a DAG-level callback: no task instance, the run and a reason instead.
    callback({"dag_run": SimpleNamespace(dag_id="rft_cycle", run_id="manual__2"), "reason": "task_failure",
              "params": {"notify": ["record:ops"], "model_family": "tiny-finqa"}})
    (sent,) = RecordingNotifier.sent
    assert sent["subject"] == "[rftflow] tiny-finqa: rft_cycle failed (manual__2)"
    assert "rft_cycle run manual__2: the run failed." in sent["text"] and "task_failure" in sent["text"]


# --------------------------------------------------------------------------- the providers' notifiers


def test_sns_target_publishes_through_the_amazon_provider(cycles, moto_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
        {"conn_type": "aws", "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}))
    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    topic = sns.create_topic(Name=f"rftflow-{uuid.uuid4().hex[:8]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"rftflow-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    results = notify.notify_gate([f"sns:{topic}"], cycles["promoted"])
    assert results == [{"target": f"sns:{topic}", "sent": True}]
    (received,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(received["Body"])
    assert body["Subject"].startswith("[rftflow] tiny-finqa cycle 1/1: PROMOTED")
    assert "Gate: PROMOTE" in body["Message"]


class _SmtpSession(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to accept one message: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        envelope: dict[str, Any] = {"to": []}
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == b"MAIL":
                envelope["from"] = line.decode().split(":", 1)[1].strip().strip("<>")
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"RCPT":
                envelope["to"].append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                data = b"".join(iter(lambda: self.rfile.readline(), b".\r\n"))
                self.server.messages.append({**envelope, "data": data})
                self.wfile.write(b"250 OK\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 OK\r\n")


def test_email_target_sends_through_the_smtp_provider(cycles, monkeypatch):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSession)
    server.messages = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": server.server_address[1],
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "rftflow@example.com",
                      "timeout": 5, "retry_limit": 0}}))
        results = notify.notify_gate(["email:ml-team@example.com"], cycles["rejected"])
        assert results == [{"target": "email:ml-team@example.com", "sent": True}]
        (mail,) = server.messages
        assert mail["from"] == "rftflow@example.com" and mail["to"] == ["ml-team@example.com"]
        message = email.message_from_bytes(mail["data"], policy=email.policy.default)
        assert message["Subject"].startswith("[rftflow] tiny-finqa cycle 1/1: REJECTED")
        body = message.get_body(("html",)).get_content()
        assert "[FAIL] gain_vs_baseline" in body and "Report: file://" in body
    finally:
        server.shutdown()
        server.server_close()
