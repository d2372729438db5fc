"""The DAG run's note: the outcome in one line, and a note that cannot be set never fails the task.
(Setting it through the metadata database in `dag.test()` is covered by tests/dags/test_rft_cycle_watching.py.)"""

from __future__ import annotations

import contextlib
import logging
import socket

import pytest

from rftflow.publish.run_note import MAX_NOTE, note_text, set_run_note


@contextlib.contextmanager
def _records():
    """The module's log records (Airflow's logging setup may route them past pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("rftflow.publish.run_note")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_the_note_is_the_outcome_and_its_reason_on_one_line():
    assert note_text("promoted", "champion of tiny is now\n  file:///m") == "PROMOTED: champion of tiny is now file:///m"
    assert note_text("held", "waiting for a reviewer") == "HOLD: waiting for a reviewer"
    assert note_text("rejected", "") == "REJECTED: no reason recorded"
    assert note_text("stopped", "nothing to learn").startswith("STOPPED: ")
    long = note_text("rejected", "x" * 5000)
    assert len(long) == MAX_NOTE and long.endswith("...")


def test_a_note_that_cannot_be_set_is_a_warning_not_a_failure(monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RFTFLOW_AIRFLOW_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RFTFLOW_AIRFLOW_API_TOKEN", "secret-token-value")
    with _records() as records:
        assert set_run_note("no_such_dag", "no_such_run", "PROMOTED: x") is None
    (record,) = records
    assert "could not set the run's note 'PROMOTED: x'" in record.getMessage()
    assert "API: ConnectError" in record.getMessage() and "secret-token-value" not in record.getMessage()


def test_the_api_needs_credentials(monkeypatch):
    monkeypatch.setenv("RFTFLOW_AIRFLOW_API_URL", "http://127.0.0.1:9")
    for name in ("RFTFLOW_AIRFLOW_API_TOKEN", "RFTFLOW_AIRFLOW_API_USERNAME", "RFTFLOW_AIRFLOW_API_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with _records() as records:
        assert set_run_note("no_such_dag", "no_such_run", "HOLD: y") is None
    assert "set RFTFLOW_AIRFLOW_API_TOKEN, or RFTFLOW_AIRFLOW_API_USERNAME and" in records[0].getMessage()
    with pytest.raises(ValueError, match="at most 1000 characters"):
        set_run_note("d", "r", "x" * 1001)
