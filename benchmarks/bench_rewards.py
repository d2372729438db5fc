"""Reward throughput: numeric on 10,000 samples in one process (target >= 20,000 samples/s on one core) and
code_tests on 500 samples on 2 cores (target >= 30 samples/s), both fed in batches of 128 as the services do.

Prints samples/s per configuration with the target beside it. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time

from rftflow.rewards import load_reward, score

BATCH = 128
NUMERIC_N, NUMERIC_TARGET = 10_000, 20_000
CODE_N, CODE_TARGET, CODE_CORES = 500, 30, 2


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


def code_samples(n: int) -> list[dict]:
    return [{"id": f"c{i}", "messages": [{"role": "user", "content": "Write add(a, b)."},
                                         {"role": "assistant", "content": SOLUTIONS[i % len(SOLUTIONS)]}],
             "reference_answer": TESTS, "metadata": {"reference_answer": TESTS}} for i in range(n)]


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
    code = load_reward("code_tests")
    code_rate, results = rate(code.module.lambda_handler, code_samples(CODE_N), repeats=1)
    mean = statistics.fmean(r["aggregate_reward_score"] for r in results)
    isolation = code.module.run_in_sandbox("x = 1", [("assert x == 1", True)])["isolation"]
    workers = os.environ.get("CODE_TESTS_WORKERS", f"default {2 * (os.cpu_count() or 1)}")
    print(f"code_tests  {CODE_N:>6,} samples, {used} cores, workers {workers}: {code_rate:>8,.1f} samples/s  "
          f"({verdict(code_rate, CODE_TARGET)}; mean reward {mean:.2f}; "
          f"isolation: {', '.join(isolation) or 'audit hook and resource limits only'})")


if __name__ == "__main__":
    main()
