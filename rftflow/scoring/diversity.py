"""The diversity check, for any backend: each prompt's pass pattern over k rollouts, the all-pass /
all-fail / mixed fractions beside the closed-form expectation, and the rft / sft_first / stop_saturated call.

Only mixed prompts carry a GRPO learning signal: a group whose rollouts all score alike has zero advantage.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rftflow.cycle.recipes import DiversityConfig

ALL_PASS, ALL_FAIL, MIXED = "all_pass", "all_fail", "mixed"


def pattern(passes: int, k: int) -> str:
    if k <= 0:
        raise ValueError(f"k: expected at least one rollout per prompt; got {k}")
    return ALL_PASS if passes == k else ALL_FAIL if passes == 0 else MIXED


def expected_mixed(p: float, k: int) -> float:
    """Chance that k independent rollouts with pass probability p are neither all pass nor all fail."""
    return 1.0 - p ** k - (1.0 - p) ** k


def outcome_rows(ids: Sequence[str], rewards: Sequence[Sequence[float]], threshold: float) -> list[dict[str, Any]]:
    """Per prompt: {id, rewards, passes, k, pass_rate, pattern}; a rollout passes when reward >= threshold."""
    if len(ids) != len(rewards):
        raise ValueError(f"expected one reward list per prompt; got {len(rewards)} for {len(ids)} prompts")
    rows = []
    for pid, rs in zip(ids, rewards, strict=True):
        k = len(rs)
        passes = sum(1 for r in rs if r >= threshold)
        rows.append({"id": pid, "rewards": [float(r) for r in rs], "passes": passes, "k": k,
                     "pass_rate": passes / k if k else 0.0, "pattern": pattern(passes, k)})
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fractions of prompts all_pass / all_fail / mixed, the mean pass rate p̄ and two closed-form references.

    `expected_mixed` = 1 − p̄^k − (1 − p̄)^k: the mixed share if every prompt had the same pass rate p̄.
    An observed `mixed` well below it means prompts split into solved and unsolved ones (less RL signal
    than the average suggests). `expected_mixed_per_prompt` averages 1 − p_i^k − (1 − p_i)^k over each
    prompt's own observed pass rate p_i; it is a plug-in estimate and is always ≤ the observed mixed share.
    """
    if not rows:
        raise ValueError("no prompts to analyse: the diversity check needs at least one prompt")
    n = len(rows)
    k = max(r["k"] for r in rows)
    count = {p: sum(1 for r in rows if r["pattern"] == p) for p in (ALL_PASS, ALL_FAIL, MIXED)}
    p_bar = sum(r["pass_rate"] for r in rows) / n
    return {
        "k": k,
        "n_prompts": n,
        "all_pass": count[ALL_PASS] / n,
        "all_fail": count[ALL_FAIL] / n,
        "mixed": count[MIXED] / n,
        "mean_pass_rate": p_bar,
        "expected_mixed": expected_mixed(p_bar, k),
        "expected_mixed_per_prompt": sum(expected_mixed(r["pass_rate"], r["k"]) for r in rows) / n,
        "pass_at_k": 1.0 - count[ALL_FAIL] / n,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def decide(metrics: dict[str, Any], cfg: DiversityConfig) -> dict[str, str]:
    """{"decision": "rft" | "sft_first" | "stop_saturated", "reason": words a person can check}."""
    n, k = metrics["n_prompts"], metrics["k"]
    fail, ok, mixed = metrics["all_fail"], metrics["all_pass"], metrics["mixed"]
    seen = (f"of {n} prompts x {k} rollouts, {_pct(mixed)} mixed, {_pct(fail)} all-fail, {_pct(ok)} all-pass "
            f"(mean pass rate {metrics['mean_pass_rate']:.2f}; mixed expected at that rate "
            f"{_pct(metrics['expected_mixed'])})")
    if fail > cfg.max_all_fail_fraction:
        return {"decision": "sft_first",
                "reason": f"{_pct(fail)} of prompts fail every rollout (limit {_pct(cfg.max_all_fail_fraction)}): "
                          f"the model cannot solve enough of the task for RL to learn from; "
                          f"supervised fine-tuning first. {seen[0].upper()}{seen[1:]}."}
    if ok > cfg.max_all_pass_fraction:
        return {"decision": "stop_saturated",
                "reason": f"{_pct(ok)} of prompts pass every rollout (limit {_pct(cfg.max_all_pass_fraction)}): "
                          f"nothing left for RL to learn on this data. {seen[0].upper()}{seen[1:]}."}
    if mixed < cfg.min_mixed_fraction:
        decision = "sft_first" if fail >= ok else "stop_saturated"
        what = "mostly failing" if decision == "sft_first" else "mostly solved"
        return {"decision": decision,
                "reason": f"only {_pct(mixed)} of prompts are mixed (need {_pct(cfg.min_mixed_fraction)}), too few "
                          f"for a GRPO learning signal, and the rest are {what}. {seen[0].upper()}{seen[1:]}."}
    return {"decision": "rft",
            "reason": f"{_pct(mixed)} of prompts are mixed (need {_pct(cfg.min_mixed_fraction)}): their rollouts "
                      f"disagree, which is the signal GRPO learns from. {seen[0].upper()}{seen[1:]}."}


def analyze(ids: Sequence[str], rewards: Sequence[Sequence[float]],
            cfg: DiversityConfig) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """(per-prompt rows, metrics, decision) from each prompt's k rollout rewards."""
    rows = outcome_rows(ids, rewards, cfg.pass_threshold)
    metrics = summarize(rows)
    return rows, metrics, decide(metrics, cfg)


def informative(records: Sequence[Any], rows: Sequence[dict[str, Any]]) -> list[Any]:
    """The records whose rollouts were mixed (DAPO/GRESO-style filtering), in their original order."""
    mixed = {r["id"] for r in rows if r["pattern"] == MIXED}
    return [rec for rec in records if rec.id in mixed]


def sample_prompts(records: Sequence[Any], cfg: DiversityConfig) -> list[Any]:
    """The seeded sample of training prompts every backend checks (at most cfg.max_prompts, in file order)."""
    if len(records) <= cfg.max_prompts:
        return list(records)
    keep = sorted(random.Random(cfg.seed).sample(range(len(records)), cfg.max_prompts))
    return [records[i] for i in keep]


def score(records: Sequence[Any], sampled: Sequence[Sequence[dict[str, Any]]], reward: Any, cfg: DiversityConfig, *,
          workers: int = 0, timeout_s: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """(rows, metrics, decision) of a diversity check from k sampled completions per prompt ({"text", "tokens"}),
    whichever backend sampled them: each rollout scored with the reward, each prompt's pass pattern, the shares
    and the decision; each row keeps its completions, and the metrics the mean response length."""
    from rftflow.scoring import evaluation

    results = evaluation.score_rollouts(records, [[c["text"] for c in cs] for cs in sampled], reward,
                                        workers=workers, timeout_s=timeout_s)
    rows, metrics, decision = analyze(
        [r.id for r in records], [[float(x.aggregate_reward_score) for x in res] for res in results], cfg)
    for row, cs in zip(rows, sampled, strict=True):
        row["completions"] = [c["text"] for c in cs]
    tokens = [c["tokens"] for cs in sampled for c in cs if c.get("tokens") is not None]
    metrics["mean_response_tokens"] = sum(tokens) / len(tokens) if tokens else None
    return rows, metrics, decision
