"""The code_tests reward: tests from every reference format, code extraction, and the sandbox — a rollout that
loops, fork-bombs, allocates 10 GB, opens a socket, writes outside its directory or signals another process
scores 0 and leaves no trace."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import pytest

from rftflow.rewards import load_reward, validate_output

TESTS = {"tests": ["assert f(1) == 2", "assert f(5) == 6"]}


@pytest.fixture
def code_tests(monkeypatch, tmp_path):
    """The handler module; sandboxes are created under this test's tmp_path so leftovers can be checked."""
    sandbox_root = tmp_path / "sandboxes"
    sandbox_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox_root))
    monkeypatch.setenv("CODE_TESTS_TIMEOUT_S", "3")
    module = load_reward("code_tests").module
    yield module
    assert list(sandbox_root.iterdir()) == [], "a sandbox directory was left behind"


def reply(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\n"


def sample(sid: str, completion: str, ref=TESTS, **metadata) -> dict:
    return {"id": sid, "messages": [{"role": "user", "content": "Write f(x) that returns x + 1."},
                                    {"role": "assistant", "content": completion}],
            "reference_answer": ref, "metadata": {"reference_answer": ref, **metadata}}


def run(module, *samples) -> dict[str, dict]:
    results = module.lambda_handler(list(samples), None)
    validate_output(list(samples), results)
    return {r["id"]: r for r in results}


def metric_names(result: dict) -> dict[str, float]:
    return {m["name"]: m["value"] for m in result["metrics_list"]}


GOOD = "def f(x):\n    return x + 1"


def test_scores_the_share_of_tests_passed(code_tests, monkeypatch):
    results = run(code_tests, sample("good", reply(GOOD)), sample("half", reply("def f(x):\n    return 2")),
                  sample("none", reply("def f(x):\n    return 0")))
    assert {k: v["aggregate_reward_score"] for k, v in results.items()} == {"good": 1.0, "half": 0.5, "none": 0.0}
    assert metric_names(results["good"]) == {"pass_rate": 1.0, "all_passed": 1.0, "code_found": 1.0,
                                             "tests_total": 2.0}
    monkeypatch.setenv("CODE_TESTS_PARTIAL_CREDIT", "false")
    assert run(code_tests, sample("half", reply("def f(x):\n    return 2")))["half"]["aggregate_reward_score"] == 0


@pytest.mark.parametrize(("ref", "expected"), [
    (["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 5"], 2 / 3),
    ("import math\nassert f(1) == 2\nassert f(2) == math.sqrt(9)", 1.0),
    ("def helper(v):\n    return v + 1\n\nassert f(1) == helper(1)\nassert f(2) == 4", 0.5),
    ({"test_list": ["assert f(1) == X"], "test_setup_code": "X = 2"}, 1.0),
    ({"test": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(9) == 10\n",
      "entry_point": "f"}, 1.0),
    ("import unittest\nclass T(unittest.TestCase):\n    pass\nif f(1) != 2:\n    raise SystemExit(1)", 1.0),
    ({"tests": ["assert f(1) == 2"], "setup": "raise RuntimeError('broken setup')"}, 0.0),
])
def test_reference_answer_formats(code_tests, ref, expected):
    result = run(code_tests, sample("s", reply(GOOD), ref))["s"]
    assert result["aggregate_reward_score"] == pytest.approx(expected)


def test_reference_answer_is_read_top_level_first_then_from_metadata(code_tests):
    top_only = sample("top", reply(GOOD))
    del top_only["metadata"]["reference_answer"]
    meta_only = sample("meta", reply(GOOD))
    del meta_only["reference_answer"]
    results = run(code_tests, top_only, meta_only)
    assert results["top"]["aggregate_reward_score"] == results["meta"]["aggregate_reward_score"] == 1.0


@pytest.mark.parametrize(("completion", "found"), [
    (reply(GOOD), True),
    (reply(GOOD, lang="py"), True),
    (reply(GOOD, lang=""), True),
    (GOOD, True),                                                           # a bare program
    ("```python\n" + GOOD, True),                                           # a cut-off fence
    ("First:\n```python\ndef f(x): return 0\n```\nFixed:\n```python\n" + GOOD + "\n```", True),  # the last one
    ("<think>```python\ndef f(x): return 0\n```</think>" + reply(GOOD), True),
    ("The function adds one to its input.", False),
])
def test_code_extraction(code_tests, completion, found):
    result = run(code_tests, sample("s", completion))["s"]
    assert result["aggregate_reward_score"] == (1.0 if found else 0.0)
    assert metric_names(result).get("no_code", 0.0) == (0.0 if found else 1.0)


def test_broken_programs_and_tests_score_zero_with_a_reason(code_tests):
    results = run(
        code_tests,
        sample("syntax", reply("def f(x) return x")),
        sample("raises", reply("raise ValueError('at import')\ndef f(x): return x + 1")),
        sample("exit", reply("import sys\nsys.exit(0)")),
        sample("hard-exit", reply("import os\nos._exit(0)")),
        sample("bad-tests", reply(GOOD), "assert f(1) ==="),
    )
    reasons = {k: [n for n, v in metric_names(r).items() if v == 1.0 and n not in ("code_found",)]
               for k, r in results.items()}
    assert all(r["aggregate_reward_score"] == 0.0 for r in results.values())
    assert reasons == {"syntax": ["syntax_error"], "raises": ["solution_error"], "exit": ["solution_error"],
                       "hard-exit": ["crashed"], "bad-tests": ["error_invalid_tests"]}


def test_patching_builtins_does_not_change_what_the_tests_see(code_tests):
    hack = "import builtins\nbuiltins.AssertionError = Exception\nbuiltins.len = lambda x: 3\ndef f(x): return 0"
    result = run(code_tests, sample("hack", reply(hack), ["assert len([]) == 0", "assert f(1) == 2"]))["hack"]
    assert result["aggregate_reward_score"] == 0.5


def test_harmful_rollouts_score_zero_and_harm_nothing(code_tests, tmp_path):
    outside = tmp_path / "outside.txt"
    victim_file = tmp_path / "keep.txt"
    victim_file.write_text("precious")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    swallow = "try:\n    {}\nexcept BaseException:\n    pass\n" + GOOD  # the harmful call fails quietly, f is right
    harmful = {
        "loop": "def f(x):\n    while True:\n        pass",
        "sleep": "import time\ntime.sleep(600)\n" + GOOD,
        "fork-bomb": "import os\nwhile True:\n    os.fork()",
        "fork-bomb-quiet": swallow.format("import os\n    while True: os.fork()"),
        "subprocess": swallow.format("import subprocess; subprocess.run(['sh', '-c', 'echo hi'])"),
        "posix-spawn": swallow.format("import _posixsubprocess"),
        "ctypes": swallow.format("import ctypes; ctypes.CDLL(None).fork()"),
        "alloc-10gb": "blob = bytearray(10 * 1024 ** 3)\n" + GOOD,
        "alloc-in-f": "def f(x):\n    blob = bytearray(10 * 1024 ** 3)\n    return x + 1",
        "socket": swallow.format(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"),
        "dns": swallow.format("import socket; socket.getaddrinfo('example.com', 80)"),
        "write-outside": swallow.format(f"open({str(outside)!r}, 'w').write('pwned')"),
        "write-outside-os": swallow.format(f"import os; os.open({str(outside)!r}, os.O_WRONLY | os.O_CREAT)"),
        "delete-outside": swallow.format(f"import os; os.remove({str(victim_file)!r})"),
        "escape-symlink": swallow.format(f"import os; os.symlink({str(outside)!r}, 'link'); open('link', 'w')"),
        "kill": swallow.format(f"import os, signal; os.kill({victim.pid}, signal.SIGKILL)"),
        "raise-limits": swallow.format("import resource; resource.setrlimit(resource.RLIMIT_AS, (-1, -1))"),
    }
    try:
        started = time.monotonic()
        results = run(code_tests, *(sample(k, reply(v)) for k, v in harmful.items()),
                      sample("write-inside", reply("open('scratch.txt', 'w').write('ok')\n" + GOOD)))
        elapsed = time.monotonic() - started
        with pytest.raises(TimeoutError):
            listener.accept()
        assert victim.poll() is None, "the sandbox killed another process"
    finally:
        victim.kill()
        victim.wait()
        listener.close()
    bad = {k: r["aggregate_reward_score"] for k, r in results.items() if k != "write-inside" and
           r["aggregate_reward_score"] != 0.0}
    assert bad == {}, "harmful rollouts that scored above 0"
    assert results["write-inside"]["aggregate_reward_score"] == 1.0
    assert not outside.exists()
    assert victim_file.read_text() == "precious"
    reasons = {k: metric_names(r) for k, r in results.items()}
    assert reasons["loop"]["timeout"] == reasons["sleep"]["timeout"] == 1.0
    for name in ("fork-bomb-quiet", "subprocess", "posix-spawn", "ctypes", "socket", "dns", "write-outside",
                 "write-outside-os", "delete-outside", "escape-symlink", "kill", "raise-limits"):
        assert reasons[name].get("sandbox_violation") == 1.0, name
    assert elapsed < 30


def test_output_floods_and_environment_secrets_do_not_reach_the_rollout(code_tests, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    flood = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)\n" + GOOD
    results = run(code_tests,
                  sample("flood", reply(flood)),
                  sample("env", reply(GOOD), ["import os\nassert 'AWS_SECRET_ACCESS_KEY' not in os.environ",
                                              "import os\nassert os.environ.get('HOME') == os.getcwd()"]))
    assert results["flood"]["aggregate_reward_score"] == 1.0
    assert results["env"]["aggregate_reward_score"] == 1.0


def test_run_in_sandbox_reports_counts_failures_and_isolation(code_tests):
    outcome = code_tests.run_in_sandbox("def f(x):\n    return x", [("assert f(1) == 1", True),
                                                                   ("assert f(1) == 2", True)], timeout_s=5)
    assert outcome["reported"] and not outcome["timed_out"]
    assert (outcome["passed"], outcome["total"]) == (1, 2)
    assert "AssertionError" in outcome["failure"]
    # Namespaces are best effort (only as root on Linux, and a container may forbid them): reported, not required.
    assert isinstance(outcome["isolation"], list)


def test_timeout_from_metadata_is_capped(code_tests, monkeypatch):
    monkeypatch.setenv("CODE_TESTS_MAX_TIMEOUT_S", "1")
    started = time.monotonic()
    result = run(code_tests, sample("slow", reply("import time\ntime.sleep(30)\n" + GOOD), timeout_s=100))["slow"]
    assert result["aggregate_reward_score"] == 0.0 and metric_names(result)["timeout"] == 1.0
    assert time.monotonic() - started < 10
