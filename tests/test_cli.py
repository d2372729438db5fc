"""The `rftflow` command: each subcommand reaches its implementation and returns a useful exit code."""

from __future__ import annotations

import json

from rftflow import cli
from rftflow.registry import Champion, ChampionRegistry


def test_validate_sample_data_passes(capsys, tmp_path):
    rc = cli.main(["validate", "include/data/tiny/train.jsonl", "--eval", "include/data/tiny/eval.jsonl",
                   "--backend", "bedrock", "--report-dir", str(tmp_path)])
    assert rc == 0, capsys.readouterr().out


def test_validate_reports_every_bad_line(capsys, tmp_path):
    bad = tmp_path / "train.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}], "reference_answer": "1"})
    bad.write_text("\n".join([good, "{not json", json.dumps({"messages": [{"role": "bot", "content": "x"}],
                                                                 "reference_answer": "1"}), good]) + "\n")
    rc = cli.main(["validate", str(bad), "--backend", "local"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 1
    assert "train.jsonl:2" in text and "train.jsonl:3: messages[0].role" in text


def test_reward_test_scores_rollouts(capsys, tmp_path):
    rollouts = tmp_path / "rollouts.jsonl"
    rows = [{"id": "a", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}],
             "reference_answer": "4"},
            {"id": "b", "messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 6"}],
             "reference_answer": "5"}]
    rollouts.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rc = cli.main(["test", "numeric", str(rollouts)])
    out = capsys.readouterr().out
    assert rc == 0 and "a" in out and "b" in out


def test_champion_and_history(capsys, tmp_path):
    root = (tmp_path / "art").as_uri()
    assert cli.main(["champion", "--family", "fam", "--artifact-root", root]) == 1
    ChampionRegistry(root, "fam").promote(Champion(model_uri="file:///m", run_id="r", cycle=1), None)
    assert cli.main(["champion", "--family", "fam", "--artifact-root", root, "--history"]) == 0
    assert "file:///m" in capsys.readouterr().out
    assert cli.main(["history", "--artifact-root", root]) == 0
