"""Paired statistics for the gate: is the candidate better than a reference model on the same prompts?

Pass/fail results are compared with the exact McNemar test (a binomial test on the discordant pairs) and
a Clopper-Pearson bound on the paired difference; continuous rewards with a seeded paired bootstrap (the
bound) and a sign-flip permutation test (the p-value). Prompts evaluated by only one of the two models
cannot be paired: those comparisons fall back to Welch's unpaired t-test, and say so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "Comparison",
    "chance_words",
    "compare",
    "holm",
    "look_alpha",
    "pair_rows",
    "split_ids",
]

POWER_Z = 0.8416212335729143  # z for 80% power in the minimum detectable effect
MIN_PAIRED_SHARE = 0.9  # ids shared by both evals, as a share of each, needed to pair them
_CHUNK = 1_000  # bootstrap resamples drawn at a time (bounds memory at CHUNK x n indices)


@dataclass(frozen=True)
class Comparison:
    """Candidate minus reference on one metric, with a one-sided interval and p-values."""

    versus: str  # "baseline", "champion", "baseline: category=add", ...
    metric: str  # pass_at_1 | mean_reward
    test: str  # "exact McNemar" | "paired bootstrap + sign-flip" | "Welch t (unpaired)"
    paired: bool
    n: int  # prompts compared (pairs when paired; the candidate's prompts when not)
    reference_value: float
    candidate_value: float
    diff: float  # candidate - reference
    lower: float  # one-sided lower confidence bound of diff at `confidence`
    upper: float  # one-sided upper confidence bound of diff at `confidence`
    p_better: float  # one-sided p-value of "candidate better" when the two are equally good
    p_worse: float  # one-sided p-value of "candidate worse"
    confidence: float
    mde: float | None  # gain detectable with 80% power at this n and confidence; None when unknown
    gained: int | None = None  # prompts the candidate passes and the reference fails (pass/fail only)
    lost: int | None = None  # the reverse
    n_reference: int | None = None  # the reference's prompts, when unpaired
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        return cls(**data)

    def plain(self, alternative: str = "better") -> str:
        """The comparison in words a data-team user reads without statistics training."""
        points = self.diff * 100 if self.metric == "pass_at_1" else self.diff
        unit = " points" if self.metric == "pass_at_1" else ""
        size = f"{points:+.1f}{unit}" if self.metric == "pass_at_1" else f"{points:+.3f}"
        what = f"{size} ({self.reference_value:.3f} -> {self.candidate_value:.3f} on {self.n} prompts"
        if self.gained is not None:
            what += f": {self.gained} newly passed, {self.lost} newly failed"
        what += ")"
        p = self.p_better if alternative == "better" else self.p_worse
        direction = "gain" if alternative == "better" else "drop"
        return f"{what}; a {direction} this size or larger happens by chance {chance_words(p)} " \
               f"when the two models are equally good"


def chance_words(p: float) -> str:
    """'1 time in 4' for p = 0.25; the phrasing the gate's reasons use for a p-value."""
    if p >= 0.5:
        return "more often than not"
    if p <= 1e-4:
        return "less than 1 time in 10,000"
    return f"1 time in {round(1 / p):,}"


# --------------------------------------------------------------------------- pairing


def _value(row: dict[str, Any], metric: str) -> float | None:
    value = row.get("passed") if metric == "pass_at_1" else row.get("reward")
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pair_rows(reference: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]],
              metric: str) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """(reference values, candidate values, ids, paired) from two evals' per-prompt rows.

    Paired when the two evals share at least MIN_PAIRED_SHARE of each one's prompt ids: the values are then
    aligned on the shared ids. Otherwise each side keeps all its own values and `paired` is False.
    A non-finite or missing value is a ValueError: the gate never judges on silently dropped prompts.
    """
    def values(rows: Sequence[dict[str, Any]], side: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, row in enumerate(rows):
            v = _value(row, metric)
            if v is None:
                raise ValueError(f"{side} eval row {i + 1} (id {row.get('id')!r}) has no finite "
                                 f"{'passed' if metric == 'pass_at_1' else 'reward'} value")
            out[str(row.get("id", i))] = v
        return out

    ref, cand = values(reference, "reference"), values(candidate, "candidate")
    shared = [i for i in cand if i in ref]
    if ref and cand and len(shared) >= MIN_PAIRED_SHARE * max(len(ref), len(cand)):
        return (np.array([ref[i] for i in shared]), np.array([cand[i] for i in shared]), shared, True)
    return np.array(list(ref.values())), np.array(list(cand.values())), list(cand), False


def split_ids(ids: Sequence[str], salt: str = "rftflow-confirmation") -> np.ndarray:
    """True for ids in the confirmation half: a deterministic 50/50 split by a hash of the id."""
    return np.array([hashlib.sha256(f"{salt}:{i}".encode()).digest()[0] < 128 for i in ids], dtype=bool)


# --------------------------------------------------------------------------- tests


def _mcnemar(versus: str, ref: np.ndarray, cand: np.ndarray, confidence: float) -> Comparison:
    ref, cand = ref >= 0.5, cand >= 0.5
    n = len(ref)
    gained, lost = int(np.sum(cand & ~ref)), int(np.sum(~cand & ref))
    m = gained + lost
    alpha = 1.0 - confidence
    if m == 0:
        lower = upper = 0.0
        p_better = p_worse = 1.0
    else:
        # Conditional on the m discordant prompts, gained ~ Binomial(m, pi) and diff = m/n * (2 pi - 1).
        # The Clopper-Pearson bound on pi is dual to the exact one-sided binomial test, so
        # lower > 0 exactly when p_better < alpha.
        pi_low = 0.0 if gained == 0 else float(stats.beta.ppf(alpha, gained, m - gained + 1))
        pi_high = 1.0 if gained == m else float(stats.beta.ppf(1 - alpha, gained + 1, m - gained))
        lower, upper = m / n * (2 * pi_low - 1), m / n * (2 * pi_high - 1)
        p_better = float(stats.binomtest(gained, m, 0.5, alternative="greater").pvalue)
        p_worse = float(stats.binomtest(lost, m, 0.5, alternative="greater").pvalue)
    z = float(stats.norm.ppf(confidence))
    mde = (z + POWER_Z) * math.sqrt(max(m, 1) / n) / math.sqrt(n)
    return Comparison(versus=versus, metric="pass_at_1", test="exact McNemar", paired=True, n=n,
                      reference_value=float(ref.mean()), candidate_value=float(cand.mean()),
                      diff=(gained - lost) / n, lower=lower, upper=upper, p_better=p_better, p_worse=p_worse,
                      confidence=confidence, mde=mde, gained=gained, lost=lost)


def _bootstrap_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(d)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        out[start:start + size] = d[rng.integers(0, n, size=(size, n), dtype=np.int32)].mean(axis=1)
    return out


def _sign_flip_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(d)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        out[start:start + size] = (signs * d).mean(axis=1)
    return out


def _paired_bootstrap(versus: str, metric: str, ref: np.ndarray, cand: np.ndarray, confidence: float,
                      resamples: int, seed: int) -> Comparison:
    d = cand - ref
    n = len(d)
    diff = float(d.mean())
    alpha = 1.0 - confidence
    if not np.any(d):
        lower = upper = 0.0
        p_better = p_worse = 1.0
    else:
        rng = np.random.default_rng(seed)
        boot = _bootstrap_means(d, resamples, rng)
        lower, upper = float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))
        null = _sign_flip_means(d, resamples, rng)
        p_better = float((np.sum(null >= diff - 1e-12) + 1) / (resamples + 1))
        p_worse = float((np.sum(null <= diff + 1e-12) + 1) / (resamples + 1))
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    z = float(stats.norm.ppf(confidence))
    return Comparison(versus=versus, metric=metric, test="paired bootstrap + sign-flip", paired=True, n=n,
                      reference_value=float(ref.mean()), candidate_value=float(cand.mean()), diff=diff,
                      lower=lower, upper=upper, p_better=p_better, p_worse=p_worse, confidence=confidence,
                      mde=(z + POWER_Z) * sd / math.sqrt(n) if n > 1 else None)


def _welch(versus: str, metric: str, ref: np.ndarray, cand: np.ndarray, confidence: float) -> Comparison:
    n_c, n_r = len(cand), len(ref)
    diff = float(cand.mean() - ref.mean())
    var_c = float(cand.var(ddof=1)) / n_c if n_c > 1 else 0.0
    var_r = float(ref.var(ddof=1)) / n_r if n_r > 1 else 0.0
    se = math.sqrt(var_c + var_r)
    if se == 0:
        lower = upper = diff
        p_better = 0.0 if diff > 0 else 1.0
        p_worse = 0.0 if diff < 0 else 1.0
    else:
        dof = (var_c + var_r) ** 2 / sum(v * v / (k - 1) for v, k in ((var_c, n_c), (var_r, n_r)) if k > 1)
        t = float(stats.t.ppf(confidence, dof))
        lower, upper = diff - t * se, diff + t * se
        p_better, p_worse = float(stats.t.sf(diff / se, dof)), float(stats.t.cdf(diff / se, dof))
    z = float(stats.norm.ppf(confidence))
    return Comparison(versus=versus, metric=metric, test="Welch t (unpaired)", paired=False, n=n_c,
                      reference_value=float(ref.mean()), candidate_value=float(cand.mean()), diff=diff,
                      lower=lower, upper=upper, p_better=p_better, p_worse=p_worse, confidence=confidence,
                      mde=(z + POWER_Z) * se if se else None, n_reference=n_r,
                      note="the two evals do not share their prompts, so they cannot be paired; "
                           "an unpaired test needs larger gains")


def compare(versus: str, metric: str, ref: np.ndarray, cand: np.ndarray, *, paired: bool,
            confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Candidate vs reference on `metric` (pass_at_1 values are 0/1, mean_reward values any reals)."""
    if len(ref) == 0 or len(cand) == 0:
        raise ValueError(f"no prompts to compare against the {versus}")
    if not paired:
        return _welch(versus, metric, ref.astype(float), cand.astype(float), confidence)
    if metric == "pass_at_1":
        return _mcnemar(versus, ref, cand, confidence)
    return _paired_bootstrap(versus, metric, ref.astype(float), cand.astype(float), confidence, resamples, seed)


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm-Bonferroni step-down: which hypotheses are rejected at family-wise error `alpha`."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def look_alpha(alpha: float, look: int) -> float:
    """The error rate spent on the `look`-th promote decision made on one eval set.

    alpha * 6 / (pi^2 k^2) sums to alpha over any number of looks, so however many cycles are judged on the
    same eval set, the chance that any no-better candidate is ever promoted stays at most alpha.
    """
    return alpha * 6.0 / (math.pi ** 2 * max(1, look) ** 2)
