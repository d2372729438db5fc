"""The code_tests reward: every reference format (cases judged by the grader, assert-style tests judged by the
judge process), code extraction, what crosses between the judge and the solution, the isolation modes and the
seccomp tables. The attack corpus is in tests/rewards/sandbox_attacks/ (tests/rewards/test_sandbox_attacks.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rftflow.rewards.contract import validate_output
from rftflow.rewards.runner import builtin_dir, load_reward

TESTS = {"tests": ["assert f(1) == 2", "assert f(5) == 6"]}
MARKER = "rftflow-code-sandbox"
HAS_BWRAP = shutil.which("bwrap") is not None


def sandbox_processes() -> list[int]:
    """Live processes whose command line carries the sandbox marker (a rollout that outlived its run)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if MARKER.encode() in cmdline and state != b"Z":
            found.append(int(name))
    return found


@pytest.fixture
def code_tests(monkeypatch):
    """The handler module; after each test no process of any rollout may be left."""
    monkeypatch.setenv("CODE_TESTS_TIMEOUT_S", "3")
    module = load_reward("code_tests").module
    yield module
    assert sandbox_processes() == [], "a rollout left a process behind"


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


def scores(results: dict[str, dict]) -> dict[str, float]:
    return {k: v["aggregate_reward_score"] for k, v in results.items()}


GOOD = "def f(x):\n    return x + 1"


# ------------------------------------------------------------------------------------------------ scoring


def test_scores_the_share_of_tests_passed(code_tests, monkeypatch):
    results = run(code_tests, sample("good", reply(GOOD)), sample("half", reply("def f(x):\n    return 2")),
                  sample("none", reply("def f(x):\n    return 0")))
    assert scores(results) == {"good": 1.0, "half": 0.5, "none": 0.0}
    metrics = metric_names(results["good"])
    assert metrics.pop("isolation") in (2.0, 3.0)
    assert metrics == {"pass_rate": 1.0, "all_passed": 1.0, "code_found": 1.0, "tests_total": 2.0}
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
    # cases: the grader compares, the expected values never enter the sandbox
    ({"entry_point": "f", "cases": [{"args": [1], "expected": 2}, {"args": [5], "expected": 6}]}, 1.0),
    ({"entry_point": "f", "cases": [{"args": [1], "expected": 2}, {"kwargs": {"x": 5}, "expected": 7}]}, 0.5),
    ({"entry_point": "f", "cases": [{"args": [0.1], "expected": 1.1}], "rel_tol": 1e-12}, 1.0),
    ({"inputs": [[1], [2]], "outputs": [[2], 3], "fn_name": "f"}, 1.0),          # APPS: [x] or x
    ({"input_output": '{"inputs": [[1]], "outputs": [2], "fn_name": "f"}'}, 1.0),  # APPS, as stored
])
def test_reference_answer_formats(code_tests, ref, expected):
    result = run(code_tests, sample("s", reply(GOOD), ref))["s"]
    assert result["aggregate_reward_score"] == pytest.approx(expected)


IO_PROGRAM = "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\nexit(0)"


@pytest.mark.parametrize(("program", "ref", "expected"), [
    (IO_PROGRAM, {"cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5", "output": "10"}]}, 1.0),
    (IO_PROGRAM, {"cases": [{"input": "1 2\n", "output": "4\n"}, {"input": "5 5", "output": "10  \n\n"}]}, 0.5),
    ("print(open(0).read().strip())", {"cases": [{"input": "a\nb\n", "output": "a\nb"}]}, 1.0),
    ("print(input())\nprint(input())", {"cases": [{"input": "a\nb\n", "output": "a\nb"}]}, 1.0),
    ("import os\nos.write(1, b'7\\n')", {"cases": [{"input": "", "output": "7"}]}, 1.0),
    ("print(0.1 + 0.2)", {"cases": [{"input": "", "output": "0.3"}], "abs_tol": 1e-9}, 1.0),
    ("print(0.1 + 0.2)", {"cases": [{"input": "", "output": "0.3"}]}, 0.0),                   # exact by default
    ("print(1)\nraise ValueError", {"cases": [{"input": "", "output": "1"}]}, 0.0),            # a runtime error
    ("print(1)\nraise SystemExit(3)", {"cases": [{"input": "", "output": "1"}]}, 0.0),
    ("a, b = map(int, input().split())\nprint(a + b)", {"inputs": ["1 2", "3 4"], "outputs": ["3", "7"]}, 1.0),
])
def test_stdin_stdout_cases(code_tests, program, ref, expected):
    result = run(code_tests, sample("s", reply(program), ref))["s"]
    assert result["aggregate_reward_score"] == pytest.approx(expected)


def test_return_values_are_compared_as_json_values(code_tests):
    ref = {"entry_point": "f", "cases": [{"args": [], "expected": [1, [2, 3]]}]}
    programs = {
        "tuple": "def f():\n    return (1, (2, 3))",              # a tuple equals a JSON list
        "int-float": "def f():\n    return [1.0, [2, 3.0]]",     # numbers compare numerically
        "bool": "def f():\n    return [True, [2, 3]]",           # bool is not a number
        "str": "def f():\n    return ['1', [2, 3]]",
        "more": "def f():\n    return [1, [2, 3], 4]",
        "object": "class E:\n    def __eq__(self, other):\n        return True\ndef f():\n    return E()",
        "object-in-list": "class E:\n    def __eq__(self, other):\n        return True\ndef f():\n    return [1, E()]",
    }
    results = run(code_tests, *(sample(k, reply(v), ref) for k, v in programs.items()))
    assert scores(results) == {"tuple": 1.0, "int-float": 1.0, "bool": 0.0, "str": 0.0, "more": 0.0,
                               "object": 0.0, "object-in-list": 0.0}
    keyed = {"entry_point": "f", "cases": [{"args": [], "expected": {"1": "a", "b": None}}]}
    assert run(code_tests, sample("keys", reply("def f():\n    return {1: 'a', 'b': None}"), keyed))["keys"][
        "aggregate_reward_score"] == 1.0


def test_assert_tests_see_plain_data_and_proxies_not_the_programs_objects(code_tests):
    program = """
class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False

class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
        return self
    def pop(self):
        return self.items.pop()

def f(x):
    return AlwaysEqual()

def squares(n):
    for i in range(n):
        yield i * i

def sort_in_place(items):
    items.sort()

def check_positive(x):
    if x < 0:
        raise ValueError("negative")
    return x
"""
    tests = [
        "assert f(1) == 2",                                   # 1 the AlwaysEqual hack: never equal in the judge
        "assert not (f(1) != 2)",                             # 2 nor unequal-to-false
        "s = Stack()\ns.push(1).push(2)\nassert s.pop() == 2",  # 3 methods on a program's object
        "assert list(squares(4)) == [0, 1, 4, 9]",            # 4 a generator, listed by the solution process
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",   # 5 in-place mutation is copied back
        "try:\n    check_positive(-1)\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError",  # 6
        "assert check_positive(4) == 4",                      # 7
        "assert isinstance(f(1), object)",                     # 8
    ]
    outcome = code_tests.run_in_sandbox(program, [(t, True) for t in tests], timeout_s=10)
    assert outcome["reported"] and outcome["total"] == 8
    assert outcome["passed"] == 6  # 1 and 2 fail
    assert outcome["failure"].startswith("assert f(1) == 2 -> AssertionError")


def test_reference_answer_is_read_top_level_first_then_from_metadata(code_tests):
    top_only = sample("top", reply(GOOD))
    del top_only["metadata"]["reference_answer"]
    meta_only = sample("meta", reply(GOOD))
    del meta_only["reference_answer"]
    results = run(code_tests, top_only, meta_only)
    assert results["top"]["aggregate_reward_score"] == results["meta"]["aggregate_reward_score"] == 1.0


@pytest.mark.parametrize(("ref", "message"), [
    ({"cases": [{"args": [1], "expected": 2}]}, "need entry_point"),
    ({"entry_point": "f", "cases": [{"args": [1]}]}, "no expected value"),
    ({"entry_point": "f", "cases": [{"args": [1], "expected": 2}, {"input": "x", "output": "y"}]}, "all be call-style"),
    ({"cases": []}, "non-empty list"),
    ({"inputs": [1, 2], "outputs": [1]}, "same length"),
    ({"entry_point": "f", "cases": [{"args": [1], "expected": 2}], "rel_tol": -1}, "non-negative"),
    ({"unexpected": 1}, "reference_answer must be"),
])
def test_unusable_tests_are_reported(code_tests, ref, message):
    with pytest.raises(ValueError, match=message):
        code_tests.parse_tests(ref)
    result = run(code_tests, sample("bad", reply(GOOD), ref))["bad"]
    assert metric_names(result).get("error_invalid_tests") == 1.0


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


def test_the_program_runs_with_an_empty_environment(code_tests, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    program = "import os\ndef f():\n    return dict(os.environ)"
    ref = {"entry_point": "f", "cases": [{"args": [], "expected": {}}]}
    flood = "import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)\n" + GOOD
    results = run(code_tests, sample("env", reply(program), ref), sample("flood", reply(flood)))
    assert scores(results) == {"env": 1.0, "flood": 1.0}  # printing goes nowhere and harms nothing


def test_a_timeout_keeps_the_answers_given_before_it(code_tests, monkeypatch):
    monkeypatch.setenv("CODE_TESTS_TIMEOUT_S", "1.5")
    program = "import time\ndef f(x):\n    if x > 2:\n        time.sleep(60)\n    return x + 1"
    ref = {"entry_point": "f", "cases": [{"args": [1], "expected": 2}, {"args": [2], "expected": 3},
                                         {"args": [3], "expected": 4}, {"args": [4], "expected": 5}]}
    started = time.monotonic()
    result = run(code_tests, sample("slow", reply(program), ref))["slow"]
    assert time.monotonic() - started < 6
    assert result["aggregate_reward_score"] == 0.5
    assert metric_names(result)["timeout"] == 1.0


def test_timeout_from_metadata_is_capped(code_tests, monkeypatch):
    monkeypatch.setenv("CODE_TESTS_MAX_TIMEOUT_S", "1")
    started = time.monotonic()
    result = run(code_tests, sample("slow", reply("import time\ntime.sleep(30)\n" + GOOD), timeout_s=100))["slow"]
    assert result["aggregate_reward_score"] == 0.0 and metric_names(result)["timeout"] == 1.0
    assert time.monotonic() - started < 10


def test_run_in_sandbox_reports_counts_failures_and_isolation(code_tests):
    outcome = code_tests.run_in_sandbox("def f(x):\n    return x", [("assert f(1) == 1", True),
                                                                   ("assert f(1) == 2", True)], timeout_s=5)
    assert outcome["reported"] and not outcome["timed_out"] and outcome["why"] == "done"
    assert (outcome["passed"], outcome["total"]) == (1, 2)
    assert outcome["failure"] == "assert f(1) == 2 -> AssertionError"
    assert "seccomp" in outcome["isolation"] and outcome["level"] >= 2
    assert outcome["left_behind"] == 0


# ------------------------------------------------------------------------------------------------ isolation modes


@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is not installed (apt-get install bubblewrap)")
def test_bwrap_mode_gives_namespaces_seccomp_and_an_empty_tmpfs(code_tests):
    info = code_tests.isolation("bwrap")
    assert info["mode"] == "bwrap" and info["level"] == 3, info
    assert {"namespaces", "seccomp", "empty-environment", "non-dumpable-grader"} <= set(info["features"])
    program = """
import os, socket
def f():
    seen = {}
    for key, probe in [("pid", os.getpid), ("ppid", os.getppid), ("uid", os.getuid), ("cwd", os.getcwd),
                       ("files", lambda: sorted(os.listdir("."))), ("hostname", socket.gethostname),
                       ("env", lambda: dict(os.environ)), ("usr_writable", lambda: os.access("/usr", os.W_OK)),
                       ("proc", lambda: os.listdir("/proc")), ("etc", lambda: os.listdir("/etc"))]:
        try:
            seen[key] = probe()
        except OSError as exc:
            seen[key] = type(exc).__name__
    return seen
def g():
    with open("scratch.txt", "w") as fh:
        fh.write("ok")
    return open("scratch.txt").read()
"""
    # pid 2 under the judge (pid 1) in its own pid namespace, nobody, in an empty tmpfs, no environment, a
    # read-only system, and neither /proc nor /etc readable (Landlock on top of the mount namespace)
    want = {"pid": 2, "ppid": 1, "uid": 65534, "cwd": "/work", "files": [], "hostname": "sandbox", "env": {},
            "usr_writable": False, "proc": "PermissionError", "etc": "PermissionError"}
    seen = code_tests.run_in_sandbox(program, {"entry_point": "f", "cases": [{"args": [], "expected": want}]},
                                     isolation="bwrap")
    assert seen["passed"] == 1, seen
    write = code_tests.run_in_sandbox(program, {"entry_point": "g", "cases": [{"args": [], "expected": "ok"}]},
                                      isolation="bwrap")
    assert write["passed"] == 1  # a writable tmpfs of its own


def test_seccomp_mode_refuses_writes_but_reads_the_standard_library(code_tests):
    info = code_tests.isolation("seccomp")
    assert info["mode"] == "seccomp" and info["level"] == 2 and "seccomp" in info["features"], info
    program = ("import collections, heapq, fractions\n"
               "def g():\n    open('scratch.txt', 'w').write('ok')\n    return 1\n"
               "def h():\n    return sorted(collections.Counter('abca').items())\n")
    write = code_tests.run_in_sandbox(program, {"entry_point": "g", "cases": [{"args": [], "expected": 1}]},
                                      isolation="seccomp")
    assert write["reported"] and write["passed"] == 0  # PermissionError: no file system writes in this mode
    read = code_tests.run_in_sandbox(program, {"entry_point": "h", "cases": [{"args": [], "expected":
                                                                                [["a", 2], ["b", 1], ["c", 1]]}]},
                                     isolation="seccomp")
    assert read["passed"] == 1


def test_rlimits_only_is_refused_unless_allowed(code_tests, monkeypatch):
    outcome = code_tests.run_in_sandbox(GOOD, TESTS, isolation="rlimits")
    assert outcome["why"] == "isolation_unavailable" and outcome["passed"] == 0
    result = code_tests._score("s", outcome, True)
    assert metric_names(result)["error_isolation_unavailable"] == 1.0
    monkeypatch.setenv("CODE_TESTS_MIN_ISOLATION", "rlimits")
    outcome = code_tests.run_in_sandbox(GOOD, TESTS, isolation="rlimits")
    assert (outcome["passed"], outcome["level"]) == (2, 1)


def test_the_grader_marks_itself_non_dumpable(code_tests):
    code_tests.lambda_handler([sample("s", reply(GOOD))], None)
    import ctypes
    assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE


# ------------------------------------------------------------------------------------------------ seccomp tables


def _header_numbers(path: Path) -> dict[str, int]:
    numbers = {}
    for name, value in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", path.read_text()):
        numbers.setdefault(name, int(value))
    return numbers


@pytest.mark.parametrize(("machine", "header"), [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    ("aarch64", "/usr/include/asm-generic/unistd.h"),
])
def test_syscall_tables_match_the_kernel_headers(code_tests, machine, header):
    if not Path(header).is_file():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    numbers = _header_numbers(Path(header))
    table = code_tests._SYSCALLS[machine]
    checked = {name: nr for name, nr in table.items() if name in numbers}
    assert {name: numbers[name] for name in checked} == checked
    assert len(checked) >= len(table) - 3  # the few the headers may predate (e.g. fchmodat2)
    for name in (*code_tests._KILL_CALLS, *code_tests._ENOSYS_CALLS, *code_tests._WRITE_CALLS):
        assert name in table or name not in numbers, f"{machine}: {name} exists but is not in the table"


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("deny_writes", [True, False])
def test_seccomp_programs_are_well_formed(code_tests, machine, deny_writes):
    program = code_tests.seccomp_program(machine, deny_writes=deny_writes)
    assert len(program) % 8 == 0 and 20 < len(program) // 8 < 4096
    instructions = [(int.from_bytes(program[i:i + 2], "little"), program[i + 2], program[i + 3],
                     int.from_bytes(program[i + 4:i + 8], "little")) for i in range(0, len(program), 8)]
    assert instructions[-1] == (0x06, 0, 0, 0x7FFF0000)           # default: allow
    assert instructions[1][3] == code_tests._AUDIT_ARCH[machine]  # other ABIs are killed
    for pc, (code, jt, jf, _) in enumerate(instructions):
        if code & 0x07 == 0x05:  # a jump stays inside the program
            assert pc + 1 + max(jt, jf) < len(instructions)
    assert code_tests.seccomp_program("sparc64", deny_writes=True) is None


# ------------------------------------------------------------------------------------------------ deployments


def test_the_handler_runs_as_a_non_root_user_with_the_system_python():
    """The docker-compose image runs Airflow as a non-root user: the same file, run by such a user with a
    system interpreter, gets bwrap where the kernel allows user namespaces, else seccomp."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not Path(python).is_file():
        pytest.skip("needs root (to switch to nobody) and a system python3")
    where = Path(tempfile.mkdtemp(prefix="rftflow-nonroot-", dir="/tmp"))
    where.chmod(0o755)
    handler = where / "code_tests.py"
    shutil.copy(builtin_dir() / "code_tests.py", handler)
    handler.chmod(0o644)
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import code_tests as ct\n"
        "ref = {'entry_point': 'f', 'cases': [{'args': [1], 'expected': 2}]}\n"
        "s = [{'id': 'a', 'messages': [{'role': 'assistant', 'content': 'def f(x):\\n    return x + 1'}],"
        " 'reference_answer': ref}]\n"
        "out = {m: ct.isolation(m) for m in sys.argv[2:]}\n"
        "out['scores'] = [r['aggregate_reward_score'] for r in ct.lambda_handler(s)]\n"
        "print(json.dumps(out))\n")
    modes = ["seccomp"] + (["bwrap"] if HAS_BWRAP else [])
    proc = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", python, "-c",
                           script, str(where), *modes], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"}, cwd="/")
    shutil.rmtree(where)
    assert proc.returncode == 0, proc.stderr
    import json
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scores"] == [1.0]
    assert out["seccomp"]["level"] == 2 and "uid-nobody" not in out["seccomp"]["features"]
    if HAS_BWRAP:
        assert out["bwrap"]["level"] == 3, out["bwrap"]  # unprivileged user namespaces are allowed here


def test_handler_is_self_contained(tmp_path):
    """Each built-in deploys as one file: importing it needs nothing but the standard library."""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import code_tests; print(sorted(code_tests.__dict__)[:1])", str(builtin_dir())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
