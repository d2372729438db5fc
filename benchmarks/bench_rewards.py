"""Reward throughput: numeric on 10,000 samples in one process (target >= 20,000 samples/s on one core) and
code_tests on 500 samples on 2 cores (target >= 30 samples/s), both fed in batches of 128 as the services do.

For code_tests it prints the grader before the hardening of issue 13 (the handler at BASELINE_COMMIT, read from
git: tests in the solution's interpreter behind an audit hook) and after it (judge and solution in separate
processes, bwrap namespaces where available, seccomp otherwise), on the same assert-style samples, plus the
recommended call-style cases. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rftflow.rewards.runner import load_reward, score

BATCH = 128
NUMERIC_N, NUMERIC_TARGET = 10_000, 20_000
CODE_N, CODE_TARGET, CODE_CORES = 500, 30, 2
BASELINE_COMMIT = "439aef6"  # the last commit before the code_tests hardening (issue 13)
BASELINE_RECORDED = "43-60 samples/s on 2 cores (issue 13)"


def numeric_samples(n: int, seed: int = 0) -> list[dict]:
    """Tiny-style and FinQA-style rollouts: right, wrong, and unparsable answers in realistic proportions."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if i % 2:
            prompt = f"Revenue was {a} in 2019 and {b} in 2020. What was the change?"
            ref: object = str(b - a)
            answer = b - a + rng.choice((0, 0, 0, 1, -10))
            reply = rng.choice((f"{b}-{a}={answer} #### {answer}", f"The change is {answer}.", f"#### {answer}"))
        else:
            rev, inc = rng.uniform(500, 5000), rng.uniform(50, 900)
            prompt = (f"| item | 2012 |\n|---|---|\n| Net revenue | {rev:,.1f} |\n| Net income | {inc:,.1f} |\n"
                      "What was the net margin in 2012? Round to one decimal place.")
            margin = round(inc / rev * 100, 1)
            ref = {"answer": margin, "unit": "percent"}
            shown = margin if rng.random() < 0.7 else round(margin * 1.1, 1)
            reply = rng.choice((f"{inc:,.1f} / {rev:,.1f} * 100 = {shown}%\n#### {shown}",
                                f"<answer>{shown}%</answer>", f"Net margin: \\boxed{{{shown}}}"))
        out.append({"id": f"n{i}", "messages": [{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": reply}],
                    "reference_answer": ref, "metadata": {"reference_answer": ref, "category": "bench"}})
    return out


SOLUTIONS = (
    "```python\ndef add(a, b):\n    return a + b\n```",                       # right
    "```python\ndef add(a, b):\n    return a + b\n```",                       # right
    "```python\ndef add(a, b):\n    return a - b\n```",                       # wrong
    "```python\ndef add(a, b):\n    return a + c\n```",                       # NameError
)
TESTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]}
CASES = {"entry_point": "add", "cases": [{"args": [1, 2], "expected": 3}, {"args": [-1, 1], "expected": 0},
                                         {"args": [10, 5], "expected": 15}]}


def code_samples(n: int, ref: object = TESTS) -> list[dict]:
    return [{"id": f"c{i}", "messages": [{"role": "user", "content": "Write add(a, b)."},
                                         {"role": "assistant", "content": SOLUTIONS[i % len(SOLUTIONS)]}],
             "reference_answer": ref, "metadata": {"reference_answer": ref}} for i in range(n)]


def baseline_handler(folder: Path):
    """The code_tests handler as it was before the hardening, from git; None where git or the commit is missing."""
    repo = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "-C", str(repo), "show", f"{BASELINE_COMMIT}:include/rewards/code_tests.py"],
                                capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = folder / "code_tests_before.py"
    path.write_bytes(source)
    return load_reward(str(path))


def rate(handler, samples: list[dict], repeats: int) -> tuple[float, list[dict]]:
    """Best-of-``repeats`` samples/s for the handler over all samples in batches of 128."""
    best, results = 0.0, []
    for _ in range(repeats):
        started = time.perf_counter()
        results = [r for i in range(0, len(samples), BATCH) for r in handler(samples[i:i + BATCH], None)]
        best = max(best, len(samples) / (time.perf_counter() - started))
    return best, results


def verdict(value: float, target: float) -> str:
    return f"target >= {target:,}: {'met' if value >= target else 'NOT met'}"


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"machine: {cores} CPU cores, Python {sys.version.split()[0]}")

    numeric = load_reward("numeric")
    samples = numeric_samples(NUMERIC_N)
    handler_rate, results = rate(numeric.module.lambda_handler, samples, repeats=5)
    mean = statistics.fmean(r["aggregate_reward_score"] for r in results)
    print(f"numeric     {NUMERIC_N:>6,} samples, handler, 1 process : {handler_rate:>10,.0f} samples/s  "
          f"({verdict(handler_rate, NUMERIC_TARGET)}; mean reward {mean:.2f})")
    started = time.perf_counter()
    score(numeric, samples)
    runner_rate = NUMERIC_N / (time.perf_counter() - started)
    print(f"numeric     {NUMERIC_N:>6,} samples, via score() runner : {runner_rate:>10,.0f} samples/s  "
          "(adds the JSON copy Lambda makes and contract validation)")

    if hasattr(os, "sched_setaffinity") and cores > CODE_CORES:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:CODE_CORES]))  # sandboxes inherit it
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    workers = os.environ.get("CODE_TESTS_WORKERS", f"default {2 * (os.cpu_count() or 1)}")
    print(f"code_tests  {CODE_N:>6,} samples, {used} cores, workers {workers}:")
    with tempfile.TemporaryDirectory() as folder:
        before = baseline_handler(Path(folder))
        if before is None:
            print(f"  before  ({BASELINE_COMMIT} not in this checkout): recorded {BASELINE_RECORDED}")
        else:
            before_rate, results = rate(before.module.lambda_handler, code_samples(CODE_N), repeats=1)
            mean = statistics.fmean(r["aggregate_reward_score"] for r in results)
            print(f"  before  {BASELINE_COMMIT}, tests in the solution's interpreter : {before_rate:>7,.1f} samples/s  "
                  f"(mean reward {mean:.2f}; recorded {BASELINE_RECORDED})")
    code = load_reward("code_tests")
    requested = os.environ.get("CODE_TESTS_ISOLATION")
    modes = [requested] if requested else ["auto", "seccomp"]
    for mode in modes:
        os.environ["CODE_TESTS_ISOLATION"] = mode
        info = code.module.isolation(mode)
        for label, ref in (("assert-style tests", TESTS), ("call-style cases", CASES)):
            after_rate, results = rate(code.module.lambda_handler, code_samples(CODE_N, ref), repeats=1)
            mean = statistics.fmean(r["aggregate_reward_score"] for r in results)
            print(f"  after   {info['mode']:<8} (level {info['level']}), {label:<19}  : {after_rate:>7,.1f} samples/s  "
                  f"({verdict(after_rate, CODE_TARGET)}; mean reward {mean:.2f})")
    if requested is None:
        del os.environ["CODE_TESTS_ISOLATION"]


if __name__ == "__main__":
    main()
