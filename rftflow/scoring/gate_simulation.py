"""Simulated evals for the gate: how often it promotes a no-better candidate, and how often a real gain.

Used by tests/scoring/test_gate_simulation.py and benchmarks/bench_gate.py. A simulation states its discordance
rate q (the share of prompts where exactly one of the two models passes): power depends on it as much as
on the gain (q of 0.10-0.20 is typical for a fine-tuned model against its start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rftflow.scoring.gate import EvalEvidence, GateConfig, decide

# A healthy GRPO log and drift: every guard passes, so the simulations measure the statistics alone.
HEALTHY_TRAINING = [{"step": s, "critic/rewards/mean": 0.60 + s / 1000, "response_length/mean": 12.0,
                     "actor/entropy": 0.50 - s / 2000} for s in range(5, 65, 5)]
HEALTHY_DRIFT = {"kl": 0.05, "completions": 0, "tokens": 0}


def simulate_pairs(n: int, p_ref: float, gain: float, discordance: float, rng: np.random.Generator,
                   reference: np.ndarray | None = None) -> tuple[list[dict], list[dict]]:
    """Per-prompt pass/fail rows of a reference and a candidate that disagree on about `discordance` of the
    prompts and differ by `gain` in expected pass rate. With `reference` (a bool array), the candidate is
    drawn against those observed results instead of a fresh reference."""
    q = max(discordance, abs(gain))
    p_gain, p_lose = (q + gain) / 2, (q - gain) / 2
    if reference is None:
        u = rng.random(n)
        gained, lost = u < p_gain, (u >= p_gain) & (u < p_gain + p_lose)
        # Concordant prompts pass for both with the probability that keeps the reference near p_ref.
        both = rng.random(n) < max(0.0, min(1.0, (p_ref - p_lose) / max(1e-9, 1 - q)))
        ref = np.where(gained, False, np.where(lost, True, both))
        cand = np.where(gained, True, np.where(lost, False, both))
    else:
        ref = np.asarray(reference, dtype=bool)
        rate = min(max(float(ref.mean()), 1e-9), 1 - 1e-9)
        flip = rng.random(n) < np.where(ref, min(1.0, p_lose / rate), min(1.0, p_gain / (1 - rate)))
        cand = ref ^ flip
    return _rows(ref), _rows(cand)


def _rows(passed: np.ndarray) -> list[dict]:
    return [{"id": f"p{i}", "passed": bool(v), "reward": float(v), "metadata": {}} for i, v in enumerate(passed)]


def evidence_of(rows: list[dict], label: str) -> EvalEvidence:
    rate = float(np.mean([r["passed"] for r in rows]))
    return EvalEvidence({"pass_at_1": rate, "mean_reward": rate, "mean_response_tokens": 12.0}, rows, label)


def _decide(base: list[dict], cand: list[dict], cfg: GateConfig, look: int) -> str:
    return decide(evidence_of(base, "baseline"), evidence_of(cand, "candidate"), None, HEALTHY_TRAINING, cfg,
                  cycle=1, max_cycles=1, look=look, drift=HEALTHY_DRIFT).decision


def promotion_rate(n: int, gain: float, discordance: float, trials: int, *, seed: int = 0, p_ref: float = 0.6,
                   cfg: GateConfig | None = None, look: int = 1) -> float:
    """Share of `trials` single gate decisions that promote a candidate `gain` better than the baseline."""
    cfg = cfg or GateConfig()
    rng = np.random.default_rng(seed)
    promoted = sum(_decide(*simulate_pairs(n, p_ref, gain, discordance, rng), cfg, look) == "promote"
                   for _ in range(trials))
    return promoted / trials


@dataclass(frozen=True)
class ChainResult:
    chains: int
    cycles: int
    promotions: list[int]  # per chain

    @property
    def share_without_promotion(self) -> float:
        return sum(1 for p in self.promotions if p == 0) / self.chains


def chained_promotions(chains: int, cycles: int, n: int, discordance: float, *, seed: int = 0,
                       p_ref: float = 0.6, cfg: GateConfig | None = None) -> ChainResult:
    """`cycles` gate decisions in a row on one eval set (looks 1..cycles), each with a new candidate no better
    than the current champion, whose observed results become the reference once it is promoted."""
    cfg = cfg or GateConfig()
    rng = np.random.default_rng(seed)
    counts = []
    for _ in range(chains):
        champion = rng.random(n) < p_ref
        promoted = 0
        for look in range(1, cycles + 1):
            base, cand = simulate_pairs(n, p_ref, 0.0, discordance, rng, reference=champion)
            if _decide(base, cand, cfg, look) == "promote":
                promoted += 1
                champion = np.array([r["passed"] for r in cand])
        counts.append(promoted)
    return ChainResult(chains, cycles, counts)


def nested_rows(n: int, rate: float) -> list[dict]:
    """n prompts of which the first round(n * rate) pass: two such sets differ only by prompts the higher
    one gains (a clean improvement), for tests and examples that need per-prompt rows behind a pass rate."""
    passing = round(n * rate)
    return _rows(np.arange(n) < passing)
