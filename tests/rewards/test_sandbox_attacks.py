"""The code_tests reward against its attack corpus (tests/rewards/sandbox_attacks/programs, 36 programs): in every
isolation mode this machine offers, every attack scores 0 in both test styles, the host is untouched (sentinel
files, a victim process, a listener on 127.0.0.1, the grader itself), the secret planted in the grader's
environment and in a file never reaches the rollout nor any output or log, and no process is left behind; the
honest solutions in the same batch still score 1. ``python tests/rewards/sandbox_attacks/corpus.py`` prints the table."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from rftflow.rewards.runner import load_reward

sys.path.insert(0, str(Path(__file__).resolve().parent / "sandbox_attacks"))
import corpus  # noqa: E402

HAS_BWRAP = shutil.which("bwrap") is not None
CAN_BE_NOBODY = os.geteuid() == 0 and Path("/usr/bin/python3").is_file() and shutil.which("setpriv") is not None
no_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is not installed (apt-get install bubblewrap)")
no_nobody = pytest.mark.skipif(not CAN_BE_NOBODY, reason="needs root (to run the grader as nobody) and /usr/bin/python3")


def test_the_corpus_covers_the_attack_classes():
    programs = corpus.attacks()
    assert len(programs) >= 25
    for name, (summary, source) in programs.items():
        assert "PARAMS = {}" in source and "def f(x):" in source, name
        assert summary.split(":")[0] in (
            "Forging the verdict", "Forging the comparison", "Reading the expected values", "Reading the judge",
            "Stealing secrets", "Smuggling data into the grader's logs", "Killing the grader", "Harming other processes",
            "Harming the grader", "Escaping an in-process guard", "Changing the host", "Exhausting the host",
            "Reaching the network", "Leaving the namespaces as root", "Leaving the file system view",
            "Outliving the run", "Outliving the deadline", "Running other programs", "Going around Python",
            "Poking the kernel", "Exhausting the grader", "Crashing the parsers", "Poisoning later runs"), name


MODES = [
    pytest.param("bwrap", "root", True, marks=no_bwrap, id="bwrap-root"),
    pytest.param("seccomp", "root", True, id="seccomp-root"),
    pytest.param("seccomp", "nobody", False, marks=no_nobody, id="lambda-like-same-user-no-landlock"),
    pytest.param("bwrap", "nobody", True, marks=[no_bwrap, no_nobody], id="bwrap-unprivileged"),
    pytest.param("seccomp", "nobody", True, marks=no_nobody, id="seccomp-unprivileged"),
]


@pytest.mark.parametrize(("mode", "user", "landlock"), MODES)
def test_every_attack_scores_zero_and_leaves_no_trace(mode, user, landlock):
    report = corpus.run(mode, user=user, landlock=landlock)
    print(f"\n{mode} as {user} (landlock {landlock}): {report.elapsed_s:.1f} s\n" + corpus.table([report]))
    assert report.isolation["mode"] == mode and report.isolation["level"] == {"bwrap": 3, "seccomp": 2}[mode]
    if not landlock:
        assert "landlock" not in report.isolation["features"]
    assert report.problems == []  # the grader lived, no secret in its output or logs, no sandbox process left
    assert report.honest == {"honest-call": 1.0, "honest-asserts": 1.0, "honest-io": 1.0}
    failed = {row.attack: (row.scores, row.host_effects, row.secret_seen, row.left_behind) for row in report.rows
              if any(score != 0.0 for score in row.scores.values()) or row.host_effects or row.secret_seen
              or row.left_behind}
    if user == "nobody" and mode == "seccomp" and not landlock:
        # The documented residual of the weakest mode (Lambda: no namespaces, no Landlock, the grader's own
        # user): a file that user can read, the rollout can read too. It has nowhere to send it (no network, no
        # writes, nothing logged: report.problems is empty above), and the grader's environ stays closed.
        assert failed.pop("read_secret_files", None) == ({"cases": 0.0, "asserts": 0.0}, [], True, 0)
    assert failed == {}
    assert report.grader_maxrss_mb < 300  # the floods were capped: the grader stayed small


def test_the_checks_notice_an_attack_that_works():
    """Positive control: with resource limits only (no seccomp, no Landlock, no namespaces; as root a process
    without capabilities) the same programs do read the planted secret file, delete their folder and reach
    the listener, and the scene reports each of those."""
    report = corpus.run("rlimits", only=["read_secret_files", "delete_outside", "connect_localhost"],
                        styles=("cases",), min_isolation="rlimits")
    rows = {row.attack: row for row in report.rows}
    assert report.isolation["level"] == 1
    assert rows["read_secret_files"].secret_seen
    assert rows["delete_outside"].host_effects
    assert any("connection" in effect for effect in rows["connect_localhost"].host_effects)


def test_nothing_from_the_rollout_reaches_the_logs_in_process(monkeypatch, caplog, capfd):
    """The same leak attempts graded in this process (as `rftflow test` or a local GRPO run does): DEBUG logs and
    everything written to this process's stdout/stderr stay clean of the secret and of the program's texts."""
    secret = "rftflowSECRETinprocess0123"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("CODE_TESTS_TIMEOUT_S", "2")
    caplog.set_level("DEBUG")
    programs = corpus.attacks()
    ref = {"entry_point": "f", "cases": [{"args": [3], "expected": 1234567}]}
    batch = []
    for name in ("leak_into_logs", "read_parent_environ", "forge_result_line", "flood_result_pipe", "kill_parent"):
        params = {"sentinel_dir": "/nonexistent", "keep": "/nonexistent/keep", "secret_file": "/nonexistent/s",
                  "victim_pid": 1, "grader_pid": os.getpid(), "port": 9, "pwned": "/tmp/rftflow-pwned-inprocess",
                  "secret_name": "AWS_SECRET_ACCESS_KEY"}
        code = programs[name][1].replace("PARAMS = {}", f"PARAMS = {params!r}", 1)
        batch.append({"id": name, "messages": [{"role": "assistant", "content": f"```python\n{code}\n```"}],
                      "reference_answer": ref})
    results = load_reward("code_tests").module.lambda_handler(batch, None)
    assert [r["aggregate_reward_score"] for r in results] == [0.0] * len(batch)
    out, err = capfd.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (out, err, logged, repr(results)):
        assert secret not in text and "LEAK-" not in text
    assert corpus.marker_processes() == []
