"""The gate: decide whether an RFT candidate is promoted, iterated on, or rejected.

Compares eval metrics (candidate vs baseline and champion) by configured margins and runs guards on
the training curves (reward hacking, length collapse or blow-up, KL, entropy, format-penalty rate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ENTROPY_KEYS",
    "FORMAT_PENALTY_WORDS",
    "KL_KEYS",
    "GateConfig",
    "GateReason",
    "GateResult",
    "decide",
    "format_penalty_keys",
]

# Training-metric names, verl/Nova lineage first; backends log under these names.
REWARD_KEY = "critic/rewards/mean"
LENGTH_KEY = "response_length/mean"
KL_KEYS = ("actor/kl_loss", "actor/reward_kl_penalty")
ENTROPY_KEYS = ("actor/entropy",)
# A "*format*" key is watched as a penalty only when its name says it counts something bad: a rising
# "format_ok/rate" is good news, a rising "format_penalty/rate" is not.
FORMAT_PENALTY_WORDS = ("penalty", "error", "fail", "invalid", "violation", "bad", "miss")
_EPS = 1e-9  # float slack so that 0.52 - 0.50 clears a 0.02 margin


class GateConfig(BaseModel):
    """Margins the candidate must clear and the limits of the reward-hacking guards."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    metric: Literal["pass_at_1", "mean_reward"] = Field(
        "pass_at_1", description="Eval metric the candidate is judged on (higher is better).")
    min_abs_gain: float = Field(
        0.02, ge=0.0, description="Candidate must beat baseline and champion by at least this much; 0 = off.")
    min_rel_gain: float = Field(
        0.0, ge=0.0, description="...and by at least this fraction of their value (0.05 = 5%); 0 = off.")
    reward_rise_min: float = Field(
        0.05, ge=0.0, description="Training reward rising by more than this (first vs last window) while "
        "eval reward is flat or down fires the reward-hacking guard.")
    eval_flat_tolerance: float = Field(
        0.0, ge=0.0, description="Eval reward gains up to this count as flat for the reward-hacking guard.")
    length_ratio_min: float = Field(
        0.5, gt=0.0, description="Response length below this ratio (candidate/baseline eval, and last/first "
        "training window) is a collapse.")
    length_ratio_max: float = Field(
        2.0, gt=0.0, description="Response length above this ratio is a blow-up.")
    kl_max: float | None = Field(
        1.0, ge=0.0, description="Most KL to the reference allowed in the last training window; None = off.")
    entropy_min: float | None = Field(
        0.0, description="Least policy entropy allowed in the last training window; None = off.")
    entropy_max: float | None = Field(
        None, description="Most policy entropy allowed in the last training window; None = off.")
    format_rise_max: float | None = Field(
        0.05, ge=0.0, description="Most rise allowed in any format-penalty rate (first vs last window); "
        "None = off.")
    window: int = Field(
        3, ge=1, le=1000, description="Logging rows averaged at each end of the training curve.")


class GateReason(BaseModel):
    """One check the gate made: a margin on the eval metric or a guard on the training curves."""

    model_config = ConfigDict(extra="forbid")

    check: str
    kind: Literal["margin", "guard"]
    passed: bool
    skipped: bool = False  # the metrics it needs are missing; a skipped check never blocks
    observed: float | None = None
    required: str = ""
    detail: str = ""


class GateResult(BaseModel):
    """The gate's decision, the one-line reason for it, and every check behind it."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["promote", "iterate", "reject"]
    reason: str
    metric: str
    baseline_value: float | None = None
    candidate_value: float | None = None
    champion_value: float | None = None
    cycle: int
    max_cycles: int
    reasons: list[GateReason] = []

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        return cls.model_validate(data)

    def fired_guards(self) -> list[GateReason]:
        return [r for r in self.reasons if r.kind == "guard" and not r.passed]

    def table(self) -> str:
        """A short fixed-width table for the task log: the decision, then one line per check."""
        head = f"gate: {self.decision.upper()} (cycle {self.cycle} of {self.max_cycles}) - {self.reason}"
        rows = [("check", "kind", "result", "observed", "required", "detail")]
        for r in self.reasons:
            result = "skipped" if r.skipped else ("pass" if r.passed else "FAIL")
            rows.append((r.check, r.kind, result, _fmt(r.observed), r.required, r.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [head]
        for i, row in enumerate(rows):
            cells = [row[j].ljust(widths[j]) for j in range(5)] + [row[5]]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ------")
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN / inf values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The finite values of `key` in step order (rows without it are left out)."""
    ordered = sorted(
        enumerate(rows),
        key=lambda item: (_num(item[1].get("step")) if _num(item[1].get("step")) is not None else item[0],
                          item[0]),
    )
    return [v for _, row in ordered if (v := _num(row.get(key))) is not None]


def _ends(values: list[float], window: int) -> tuple[float, float, int] | None:
    """(first-window mean, last-window mean, window used); windows never overlap; None under 2 values."""
    if len(values) < 2:
        return None
    w = max(1, min(window, len(values) // 2))
    first, last = values[:w], values[-w:]
    return sum(first) / w, sum(last) / w, w


def _last_window(values: list[float], window: int) -> tuple[float, int]:
    """(mean of the last `window` values, window used); `values` is not empty."""
    w = min(window, len(values))
    return sum(values[-w:]) / w, w


def _first_present(rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> tuple[str, list[float]] | None:
    for key in keys:
        values = _series(rows, key)
        if values:
            return key, values
    return None


def format_penalty_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Training-metric keys that count format violations (contain 'format' and a word like 'penalty')."""
    keys: set[str] = set()
    for row in rows:
        for key in row:
            low = str(key).lower()
            if "format" in low and any(word in low for word in FORMAT_PENALTY_WORDS):
                keys.add(str(key))
    return sorted(keys)


def _skipped(check: str, required: str, why: str) -> GateReason:
    return GateReason(check=check, kind="guard", passed=True, skipped=True, required=required,
                      detail=f"skipped: {why}")


# --------------------------------------------------------------------------- margins


def _margin_check(check: str, versus: str, cand: float, other: float, cfg: GateConfig) -> GateReason:
    delta = cand - other
    # Against a zero baseline any gain is an infinite relative gain; "beats" always means delta > 0.
    rel = delta / abs(other) if other != 0 else (math.inf if delta > 0 else 0.0)
    abs_ok = delta > _EPS and delta >= cfg.min_abs_gain - _EPS
    rel_ok = rel >= cfg.min_rel_gain - _EPS
    rel_text = "n/a (0 base)" if other == 0 else f"{rel:+.1%}"
    parts = [f">= {_signed(cfg.min_abs_gain)} abs"] if cfg.min_abs_gain > 0 else []
    parts += [f">= {cfg.min_rel_gain:+.1%} rel"] if cfg.min_rel_gain > 0 else []
    required = ", ".join(parts) or "> 0"
    verdict = "clears" if abs_ok and rel_ok else "misses"
    detail = (f"{cfg.metric} {cand:.3f} vs {versus} {other:.3f}: {_signed(delta)} ({rel_text} rel), "
              f"{verdict} the margin")
    return GateReason(check=check, kind="margin", passed=abs_ok and rel_ok, observed=delta,
                      required=required, detail=detail)


# --------------------------------------------------------------------------- guards


def _reward_hacking(baseline: dict, candidate: dict, rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "reward_hacking"
    required = f"rise <= {cfg.reward_rise_min:g} if eval flat"
    ends = _ends(_series(rows, REWARD_KEY), cfg.window)
    if ends is None:
        return _skipped(check, required, f"needs '{REWARD_KEY}' on at least 2 logged training steps")
    eval_key = "mean_reward"
    b, c = _num(baseline.get(eval_key)), _num(candidate.get(eval_key))
    if b is None or c is None:
        eval_key = cfg.metric
        b, c = _num(baseline.get(eval_key)), _num(candidate.get(eval_key))
    if b is None or c is None:
        return _skipped(check, required, "eval metrics have neither 'mean_reward' nor the gate metric")
    first, last, w = ends
    rise, eval_delta = last - first, c - b
    fired = rise > cfg.reward_rise_min + _EPS and eval_delta <= cfg.eval_flat_tolerance + _EPS
    trend = "flat or down" if eval_delta <= cfg.eval_flat_tolerance + _EPS else "up"
    detail = (f"train reward {first:.3f} -> {last:.3f} ({_signed(rise)}, {w}-row windows) while eval "
              f"{eval_key} {b:.3f} -> {c:.3f} ({_signed(eval_delta)}, {trend})")
    if fired:
        detail += ": the policy learned the training reward, not the task"
    return GateReason(check=check, kind="guard", passed=not fired, observed=rise, required=required,
                      detail=detail)


def _ratio_guard(
    check: str, what: str, before: float, after: float, cfg: GateConfig, note: str
) -> GateReason:
    required = f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}"
    if before <= 0:
        return _skipped(check, required, f"{what} starts at {before:g} tokens, so no ratio")
    ratio = after / before
    low, high = ratio < cfg.length_ratio_min - _EPS, ratio > cfg.length_ratio_max + _EPS
    detail = f"{what} {before:.1f} -> {after:.1f} tokens (x{ratio:.2f}{note})"
    if low:
        detail += ": length collapsed"
    elif high:
        detail += ": length blew up"
    return GateReason(check=check, kind="guard", passed=not (low or high), observed=ratio,
                      required=required, detail=detail)


def _eval_length(baseline: dict, candidate: dict, cfg: GateConfig) -> GateReason:
    check, key = "eval_length_ratio", "mean_response_tokens"
    b, c = _num(baseline.get(key)), _num(candidate.get(key))
    if b is None or c is None:
        return _skipped(check, f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}",
                        f"'{key}' missing from the {'baseline' if b is None else 'candidate'} eval metrics")
    return _ratio_guard(check, "eval response length baseline -> candidate", b, c, cfg, "")


def _train_length(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "train_length_ratio"
    ends = _ends(_series(rows, LENGTH_KEY), cfg.window)
    if ends is None:
        return _skipped(check, f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}",
                        f"needs '{LENGTH_KEY}' on at least 2 logged training steps")
    first, last, w = ends
    return _ratio_guard(check, "training response length first -> last window", first, last, cfg,
                        f", {w}-row windows")


def _kl(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "kl"
    if cfg.kl_max is None:
        return _skipped(check, "off", "kl_max is None")
    required = f"<= {cfg.kl_max:g}"
    found = _first_present(rows, KL_KEYS)
    if found is None:
        return _skipped(check, required, f"no {' / '.join(KL_KEYS)} in the training metrics (beta = 0?)")
    key, values = found
    last, w = _last_window(values, cfg.window)
    fired = last > cfg.kl_max + _EPS
    detail = f"{key} last {w}-row mean {last:.4g}"
    if fired:
        detail += ": the policy drifted too far from the reference"
    return GateReason(check=check, kind="guard", passed=not fired, observed=last, required=required,
                      detail=detail)


def _entropy(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "entropy"
    if cfg.entropy_min is None and cfg.entropy_max is None:
        return _skipped(check, "off", "entropy_min and entropy_max are None")
    bounds = [f">= {cfg.entropy_min:g}"] if cfg.entropy_min is not None else []
    bounds += [f"<= {cfg.entropy_max:g}"] if cfg.entropy_max is not None else []
    required = ", ".join(bounds)
    found = _first_present(rows, ENTROPY_KEYS)
    if found is None:
        return _skipped(check, required, f"no {' / '.join(ENTROPY_KEYS)} in the training metrics")
    key, values = found
    last, w = _last_window(values, cfg.window)
    low = cfg.entropy_min is not None and last < cfg.entropy_min - _EPS
    high = cfg.entropy_max is not None and last > cfg.entropy_max + _EPS
    detail = f"{key} last {w}-row mean {last:.4g}"
    if low:
        detail += ": entropy collapsed (the policy stopped exploring)"
    elif high:
        detail += ": entropy too high (the policy is close to random)"
    return GateReason(check=check, kind="guard", passed=not (low or high), observed=last,
                      required=required, detail=detail)


def _format_rise(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "format_penalty"
    if cfg.format_rise_max is None:
        return _skipped(check, "off", "format_rise_max is None")
    required = f"rise <= {cfg.format_rise_max:g}"
    worst: tuple[float, str, float, float, int] | None = None
    for key in format_penalty_keys(rows):
        # Magnitudes: a penalty logged as a negative reward grows more negative as violations rise.
        ends = _ends([abs(v) for v in _series(rows, key)], cfg.window)
        if ends is None:
            continue
        first, last, w = ends
        if worst is None or last - first > worst[0]:
            worst = (last - first, key, first, last, w)
    if worst is None:
        return _skipped(check, required, "no format-penalty metric on at least 2 logged training steps")
    rise, key, first, last, w = worst
    fired = rise > cfg.format_rise_max + _EPS
    detail = f"{key} {first:.3f} -> {last:.3f} ({_signed(rise)}, {w}-row windows)"
    if fired:
        detail += ": format violations are rising"
    return GateReason(check=check, kind="guard", passed=not fired, observed=rise, required=required,
                      detail=detail)


# --------------------------------------------------------------------------- decision


def decide(
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    train_rows: list[dict[str, Any]],
    cfg: GateConfig,
    *,
    cycle: int,
    max_cycles: int,
) -> GateResult:
    """Judge `candidate` (eval metrics) against `baseline` and `champion` and the RFT training curves.

    promote: beats baseline and champion by both margins, and no guard fires.
    iterate: no guard fires, better than baseline (and not worse than the champion) but short of a
        margin, and `cycle < max_cycles` (cycles count from 1, so the cycle numbered max_cycles is the last).
    reject: otherwise; `reason` says whether a guard fired, nothing improved, or no cycles are left.
    A guard whose metrics are missing is skipped (never fires) and says so in its detail.
    """
    baseline, candidate = baseline or {}, candidate or {}
    rows = [r for r in (train_rows or []) if isinstance(r, dict)]
    metric = cfg.metric
    b, c = _num(baseline.get(metric)), _num(candidate.get(metric))
    h = _num(champion.get(metric)) if champion else None
    reasons: list[GateReason] = []

    if b is None or c is None:
        side = "baseline" if b is None else "candidate"
        reasons.append(GateReason(check="gain_vs_baseline", kind="margin", passed=False,
                                  required=f"'{metric}' in both eval results",
                                  detail=f"the {side} eval metrics have no numeric '{metric}'"))
    else:
        reasons.append(_margin_check("gain_vs_baseline", "baseline", c, b, cfg))
    if not champion:
        reasons.append(GateReason(check="gain_vs_champion", kind="margin", passed=True, skipped=True,
                                  detail="skipped: no champion yet"))
    elif h is None:
        reasons.append(GateReason(check="gain_vs_champion", kind="margin", passed=True, skipped=True,
                                  detail=f"skipped: the champion's metrics have no numeric '{metric}'"))
    elif c is not None:
        reasons.append(_margin_check("gain_vs_champion", "champion", c, h, cfg))

    reasons += [
        _reward_hacking(baseline, candidate, rows, cfg),
        _eval_length(baseline, candidate, cfg),
        _train_length(rows, cfg),
        _kl(rows, cfg),
        _entropy(rows, cfg),
        _format_rise(rows, cfg),
    ]

    fired = [r for r in reasons if r.kind == "guard" and not r.passed]
    margins = {r.check: r for r in reasons if r.kind == "margin"}
    cycles = f"cycle {cycle} of {max_cycles}"
    decision: Literal["promote", "iterate", "reject"]
    if fired:
        decision = "reject"
        reason = "guard fired: " + "; ".join(f"{r.check} ({r.detail})" for r in fired)
    elif b is None or c is None:
        decision, reason = "reject", margins["gain_vs_baseline"].detail + ", so it cannot be judged"
    elif c - b <= _EPS:
        decision = "reject"
        reason = f"not improved: {metric} {c:.3f} vs baseline {b:.3f} ({_signed(c - b)})"
    elif h is not None and c - h <= _EPS:
        decision = "reject"
        reason = f"champion is at least as good: {metric} {c:.3f} vs champion {h:.3f} ({_signed(c - h)})"
    elif all(r.passed for r in margins.values()):
        decision = "promote"
        reason = f"{metric} {c:.3f} beats baseline {b:.3f} ({_signed(c - b)})"
        if h is not None:
            reason += f" and champion {h:.3f} ({_signed(c - h)})"
        reason += " by the margins; no guard fired"
    else:
        missed = [r for r in margins.values() if not r.passed]
        short = "; ".join(r.detail for r in missed)
        if cycle < max_cycles:
            decision = "iterate"
            reason = f"improved but below margin ({short}); next cycle starts from this checkpoint ({cycles})"
        else:
            decision = "reject"
            reason = f"improved but below margin ({short}) and no cycles left ({cycles})"
    return GateResult(decision=decision, reason=reason, metric=metric, baseline_value=b, candidate_value=c,
                      champion_value=h, cycle=cycle, max_cycles=max_cycles, reasons=reasons)
