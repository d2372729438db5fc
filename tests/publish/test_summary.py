"""The cycle's summary is written once (cycle.json, beside the report); the cycle index points to it."""

from __future__ import annotations

import shutil

from finished_cycles import write_finished_cycle

from rftflow.artifacts import store
from rftflow.publish.summary import INDEX_KEYS, index_uri, read_index


def test_the_index_points_to_cycle_json_and_history_reads_the_summary_there(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    root = (tmp_path / "artifacts").as_uri()
    first = write_finished_cycle(root, "manual__2026-11-24T09:00:00+00:00")
    second = write_finished_cycle(root, "manual__2026-11-24T10:00:00+00:00", improved=False)

    entries = [store.read_json(u) for u in store.list_prefix(index_uri(root, "tiny-finqa"))]
    assert len(entries) == 2 and all(set(e) == set(INDEX_KEYS) for e in entries)  # pointers, not copies
    assert sorted(e["cycle_json_uri"] for e in entries) == sorted([first["cycle_json_uri"], second["cycle_json_uri"]])

    history = read_index(root, "tiny-finqa")
    assert [c["outcome"] for c in history] == [first["outcome"], second["outcome"]] == ["promoted", "rejected"]
    assert history[0]["gate"] == first["gate"] and history[1]["candidate"] == second["candidate"]
    assert read_index(root, "another-family") == []

    # a cycle whose folder was deleted is left out of the history, and the log says which
    shutil.rmtree(store.local_path(second["cycle_json_uri"].rsplit("/report/", 1)[0]))
    assert [c["run_id"] for c in read_index(root, "tiny-finqa")] == [first["run_id"]]
    said = caplog.text + capsys.readouterr().out  # the log goes through Airflow's handlers where they are set up
    assert "cycle.json is gone; the cycle manual__2026-11-24T10:00:00+00:00/1 is left out" in said
