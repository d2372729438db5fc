"""The `rftflow` command: each subcommand reaches its implementation and returns a useful exit code; run,
champion and history explain every option, print tables (or --json), and end quietly on a closed pipe."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rftflow.artifacts.registry import Champion, ChampionRegistry
from rftflow.cli import demo
from rftflow.cli import main as cli
from rftflow.cycle.params import DEFAULTS, PROJECT_ROOT
from rftflow.publish.summary import read_index


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


# --------------------------------------------------------------------------- run / champion / history
OWN = ("run", "champion", "history")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    ap = cli.build_parser()
    (action,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", OWN)
def test_every_option_has_help(command, capsys):
    parser = _subparsers()[command]
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"rftflow {command} {action.option_strings}"
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    for action in parser._actions:
        for option in action.option_strings:
            assert option in shown


def test_set_with_an_unknown_name_lists_the_valid_ones(capsys):
    assert cli.main(["run", "--set", "max_cycle=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) max_cycle" in err
    assert "valid names:" in err and all(name in err for name in DEFAULTS)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--conf", "{not json"], "--conf: not JSON"),
    (["--conf", "[1, 2]"], "expected a JSON object"),
    (["--set", "max_cycles"], "expected KEY=VALUE"),
    (["--set", "rollouts_per_prompt=99"], "rollouts_per_prompt"),
])
def test_run_rejects_bad_params_before_starting_airflow(argv, expected, capsys, tmp_path):
    home = tmp_path / "home"
    assert cli.main(["run", "--airflow-home", str(home), *argv]) == 2
    assert expected in capsys.readouterr().err
    assert not home.exists(), "nothing was started"


def test_run_fast_uses_the_demo_smoke_settings_and_set_wins():
    args = argparse.Namespace(fast=True, conf='{"base_model": "tiny"}', set=["diversity_prompts=64"])
    conf = cli._conf_from(args)
    assert conf["recipe_overrides"] == demo.FAST["recipe_overrides"]
    assert conf["diversity_prompts"] == 64 and conf["base_model"] == "tiny"


@pytest.fixture
def two_cycles(tmp_path, monkeypatch):
    """A promoted and a rejected cycle of the default family in a tmp artifact root (no MLflow)."""
    from finished_cycles import write_finished_cycle

    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    root = (tmp_path / "art").as_uri()
    write_finished_cycle(root, "manual__2026-11-25T09:00:00+00:00", family=DEFAULTS["model_family"])
    write_finished_cycle(root, "manual__2026-11-26T09:00:00+00:00", family=DEFAULTS["model_family"],
                         improved=False)
    return root


def test_champion_table_by_default_and_json_on_request(two_cycles, capsys):
    assert cli.main(["champion", "--artifact-root", two_cycles]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"champion of {DEFAULTS['model_family']} (in {two_cycles})")
    assert "pass_at_1 0.550" in table and "manual__2026-11-25T09:00:00+00:00, cycle 1" in table
    assert len(table.splitlines()) <= 8 and "{" not in table
    assert cli.main(["champion", "--artifact-root", two_cycles, "--history", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["champion"]["run_id"] == "manual__2026-11-25T09:00:00+00:00"
    assert data["artifact_root"] == two_cycles and len(data["history"]) == 1


def test_history_table_and_json(two_cycles, capsys):
    assert cli.main(["history", "--artifact-root", two_cycles]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"2 finished cycles in {two_cycles}, oldest first:"
    assert lines[1].split() == ["finished", "family", "run", "cycle", "outcome", "pass@1", "why"]
    assert "PROMOTED  0.400 -> 0.550" in lines[2] and "REJECTED  0.400 -> 0.350" in lines[3]
    assert cli.main(["history", "--artifact-root", two_cycles, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["outcome"] for c in data] == ["promoted", "rejected"]
    assert cli.main(["history", "--artifact-root", two_cycles, "-v"]) == 0
    verbose = capsys.readouterr().out
    report = demo.local_path(data[0]["report_html_uri"])
    assert f"report: {report}" in verbose and Path(report).exists()


def test_champion_and_history_also_look_where_the_demo_wrote(two_cycles, tmp_path, monkeypatch, capsys):
    empty = (tmp_path / "empty").as_uri()
    monkeypatch.setenv("RFTFLOW_ARTIFACT_ROOT", empty)
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    (tmp_path / "art").rename(demo_dir / "artifacts")  # the cycles now sit where a demo writes them
    monkeypatch.setattr(demo, "DEMO_DIR", demo_dir)
    demo_root = (demo_dir / "artifacts").as_uri()
    assert cli.main(["champion"]) == 0
    assert f"(in {demo_root})" in capsys.readouterr().out
    assert cli.main(["history"]) == 0
    assert f"2 finished cycles in {demo_root}" in capsys.readouterr().out
    assert cli.main(["champion", "--family", "nobody"]) == 1
    assert f"no champion registered for nobody in {empty} or {demo_root}" in capsys.readouterr().out


def _many_cycles(root: Path, n: int) -> str:
    """n indexed cycle summaries (index entries only: what `history` reads)."""
    index = root / "index" / "fam"
    index.mkdir(parents=True)
    for i in range(n):
        (index / f"rft_cycle__run{i:04d}__cycle-1.json").write_text(json.dumps({
            "dag_id": "rft_cycle", "run_id": f"run{i:04d}", "cycle": 1, "model_family": "fam",
            "outcome": "rejected", "outcome_reason": "x" * 200}))
    return root.as_uri()


@pytest.mark.parametrize("command", [["history"], ["history", "--json"], ["history", "-v"]])
def test_a_closed_pipe_ends_quietly(command, tmp_path):
    """The reader is gone before the first write: every write hits a closed pipe (EPIPE)."""
    root = _many_cycles(tmp_path / "art", 400)
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "rftflow.cli.main", *command, "--artifact-root", root],
                          stdout=write, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, timeout=120)
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_history_piped_into_head(tmp_path):
    root = _many_cycles(tmp_path / "art", 400)  # ~100 KB of table: more than a pipe buffer holds
    rftflow = Path(sys.executable).parent / "rftflow"
    proc = subprocess.run(f"{rftflow} history --artifact-root {root} | head -n 2", shell=True, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines()[0] == f"400 finished cycles in {root}, oldest first:"
    assert len(proc.stdout.splitlines()) == 2
    assert proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_run_prints_the_outcome_and_report_path_at_the_end(tmp_path, monkeypatch, capsys):
    """A real `rftflow run --fast` (SFT off: the shortest path to the report task), then its last lines."""
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    root = (tmp_path / "art").as_uri()
    rc = cli.main(["run", "--fast", "--set", "sft_policy=never", "--set", "base_model=tiny",
                   "--airflow-home", str(tmp_path / "home"), "--artifact-root", root])
    out = capsys.readouterr().out
    assert rc == 0, out
    (summary,) = read_index(root, DEFAULTS["model_family"])
    report = demo.local_path(summary["report_html_uri"])
    assert Path(report).exists()
    assert f"report: {report}\n" in out
    assert f"cycle 1 of run {summary['run_id']}: {summary['outcome'].upper()} - " in out
    assert f"AIRFLOW_HOME={tmp_path / 'home'}" in out  # how to see the run in the UI


# What `airflow dags test` prints while rft_cycle's sft task runs (structlog lines, as in .demo/cycle-1.log).
_DAGS_TEST_OUTPUT = """\
2026-12-02T01:13:08.254007Z [info     ] [DAG TEST] starting task_id=sft map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-12-02T01:13:08.303036Z [info     ] sft: waiting for local_trainer 94e1 (deferred) [airflow.task.operators.rftflow.orchestration.operators.TrainingStageOperator] loc=operators.py:182
2026-12-02T01:13:08.421986Z [info     ] [DAG TEST] running trigger in line [airflow.sdk.definitions.dag] loc=dag.py:1534
2026-12-02T01:13:14.446471Z [info     ] sft: loading the model and data [rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger] loc=progress_trigger.py:46
2026-12-02T01:13:18.463430Z [info     ] sft: step 5/40 (12%) | loss 5.0150 | 358.1 samples/s | elapsed 0s | left ~3s [rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger] loc=progress_trigger.py:46
2026-12-02T01:13:22.479670Z [info     ] sft: step 10/40 (25%) | loss 3.6619 | 90.0 samples/s, 2154 tokens/s | elapsed 4s | left ~11s [rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger] loc=progress_trigger.py:46
2026-12-02T01:13:26.494274Z [info     ] sft: checkpoint saved at step 20/40 (checkpoint-20) [rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger] loc=progress_trigger.py:46
2026-12-02T01:13:30.508246Z [info     ] sft: training done at step 40/40 in 12s; saving the final model [rftflow.orchestration.local_progress_trigger.LocalTrainerProgressTrigger] loc=progress_trigger.py:46
2026-12-02T01:13:30.971187Z [info     ] [DAG TEST] end task task_id=sft map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-12-02T01:13:30.984559Z [info     ] [DAG TEST] starting task_id=diversity_recheck map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
"""


def _fed(progress, text: str, chunk: int = 37):
    for start in range(0, len(text), chunk):  # the log grows in pieces, lines cut anywhere
        progress.feed(text[start:start + chunk])
    progress.close()


@pytest.mark.parametrize(("every_s", "step_lines"), [
    (0.0, ["sft: step 5/40 (12%) | loss 5.0150 | 358.1 samples/s | elapsed 0s | left ~3s",
           "sft: step 10/40 (25%) | loss 3.6619 | 90.0 samples/s, 2154 tokens/s | elapsed 4s | left ~11s"]),
    (float("inf"), ["sft: step 5/40 (12%) | loss 5.0150 | 358.1 samples/s | elapsed 0s | left ~3s"]),
])
def test_the_terminal_display_falls_back_to_plain_lines_without_a_tty(every_s, step_lines):
    import io
    import re

    from rftflow.publish.terminal import CycleProgress

    out = io.StringIO()  # not a TTY: no rich live display, no escape codes
    progress = CycleProgress(out, every_s=every_s)
    assert progress._live is None
    _fed(progress, _DAGS_TEST_OUTPUT)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    clock = re.compile(r"^   \d\d:\d\d:\d\d ")
    assert [clock.sub("", line) for line in lines if clock.match(line)] == ["sft", "diversity_recheck"]
    assert [line.strip() for line in lines if not clock.match(line)] == [
        *step_lines, "sft: training done at step 40/40 in 12s; saving the final model"]


def test_the_terminal_display_on_a_tty_shows_the_task_and_the_step():
    import io

    from rftflow.publish.terminal import CycleProgress

    out = io.StringIO()
    progress = CycleProgress(out, rich=True)
    states = []
    for line in _DAGS_TEST_OUTPUT.splitlines(keepends=True):
        progress.feed(line)
        states.append((progress.task, progress.step, progress.detail))
    progress.close()
    assert ("sft", None, "deferred: waiting for the trainer") in states
    assert ("sft", (10, 40), "") in states and ("diversity_recheck", None, "") == states[-1]
    shown = out.getvalue()
    assert "\x1b[" in shown  # drawn in place
    assert " sft done in " in shown and "step 10/40, left ~11s" in shown and "sft: saving the final model" in shown
