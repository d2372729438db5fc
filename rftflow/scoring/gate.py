"""The gate: decide whether an RFT candidate is promoted, held for a person, iterated on, or rejected.

It decides on evidence: paired tests on the per-prompt eval results (candidate vs baseline and champion,
overall and per slice), corrected for the number of decisions already made on the same eval set, and
guards on the training curves (reward hacking, length, KL or measured drift, entropy, format penalties,
divergence). A check whose evidence is missing never passes silently: by default the run is held for a
person to decide (`on_missing_evidence`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rftflow.scoring.paired import Comparison, compare, holm, look_alpha, pair_rows, split_ids

__all__ = [
    "ENTROPY_KEYS",
    "FORMAT_PENALTY_WORDS",
    "KL_KEYS",
    "EvalEvidence",
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

Outcome = Literal["promote", "hold", "iterate", "reject"]


class GateConfig(BaseModel):
    """What the candidate must show, and the limits of the guards. Every field is a `guards` key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    metric: Literal["pass_at_1", "mean_reward"] = Field(
        "pass_at_1", description="Eval metric the candidate is judged on (higher is better).")
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="One-sided confidence of the lower bound on the gain that must "
        "clear `margin` (0.95: a no-better candidate passes at most 5% of the time).")
    margin: float = Field(
        0.0, ge=0.0, description="The lower confidence bound of the gain must exceed this.")
    min_abs_gain: float = Field(
        0.02, ge=0.0, description="Extra bar on the point estimate of the gain over baseline and champion.")
    min_rel_gain: float = Field(
        0.0, ge=0.0, description="...and as a fraction of their value (0.05 = 5%); 0 = off.")
    look_correction: bool = Field(
        True, description="Spend the error rate over the decisions made on one eval set (look k uses "
        "alpha * 6/(pi^2 k^2)), so that many cycles cannot promote a lucky model.")
    split_min_prompts: int = Field(
        1000, ge=0, description="From this many eval prompts, iterate decisions use a selection half and "
        "the promote decision a confirmation half (split by id hash); 0 = never split.")
    slice_min_n: int = Field(
        30, ge=2, description="Slices (breakdown field values) with at least this many prompts are tested.")
    slice_drop_tolerance: float = Field(
        0.05, ge=0.0, description="A slice drop larger than this that is not significant is a warning.")
    protected_slices: list[str] = Field(
        default_factory=list, description="'field=value' slices that must not drop at all.")
    on_missing_evidence: Literal["hold", "reject", "promote"] = Field(
        "hold", description="What to do when an enabled check cannot be evaluated: hold for a person, "
        "reject, or promote on the evidence there is.")
    resamples: int = Field(10_000, ge=1000, le=200_000, description="Bootstrap / permutation resamples.")
    seed: int = Field(0, description="Seed of the bootstrap and permutation draws (decisions reproduce).")
    reward_rise_min: float = Field(
        0.05, ge=0.0, description="The reward-hacking guard fires only when the training reward rose by more "
        "than this, and then when the eval reward did not rise, or rose far less (reward_gap_max).")
    reward_gap_max: float = Field(
        0.3, ge=0.0, description="Most the normalised training-reward rise may exceed the normalised "
        "eval rise (both on the same reward's scale) before the reward-hacking guard fires.")
    length_ratio_min: float = Field(
        0.5, gt=0.0, description="Response length below this ratio (candidate eval vs the RFT stage's "
        "start, and last/first training window) is a collapse.")
    length_ratio_max: float = Field(
        2.0, gt=0.0, description="Response length above this ratio is a blow-up.")
    kl_max: float | None = Field(
        1.0, ge=0.0, description="Most KL to the start model: the max of the last training window and "
        "the final value, or the drift measured on the eval set when training logs none; None = off.")
    entropy_collapse_ratio: float | None = Field(
        0.5, gt=0.0, lt=1.0, description="Policy entropy in the last training window below this fraction "
        "of the first window is a collapse; None = off.")
    entropy_min: float | None = Field(
        None, ge=0.0, description="Least policy entropy allowed in the last window (absolute); None = off.")
    entropy_max: float | None = Field(
        None, gt=0.0, description="Most policy entropy allowed in the last training window; None = off.")
    format_rise_max: float | None = Field(
        0.05, ge=0.0, description="Most rise allowed in any format-penalty rate (first vs last window); "
        "None = off.")
    window: int = Field(
        3, ge=1, le=1000, description="Logging rows in each end window of the training curve.")

    @field_validator("protected_slices")
    @classmethod
    def _slice_names(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if "=" not in s or not s.split("=", 1)[0].strip()]
        if bad:
            raise ValueError(f"protected slices must be written 'field=value' (e.g. 'category=add'); got {bad}")
        return [s.strip() for s in v]


@dataclass(frozen=True)
class EvalEvidence:
    """One model's eval on the eval set: the summary metrics and the per-prompt rows behind them."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] | None = None
    label: str = ""


class GateReason(BaseModel):
    """One check the gate made: evidence of a gain, a slice, or a guard on the training curves."""

    model_config = ConfigDict(extra="forbid")

    check: str
    kind: Literal["evidence", "slice", "guard"]
    passed: bool
    skipped: bool = False  # not evaluated; `detail` says why
    missing: bool = False  # skipped because its inputs are missing (fails closed per on_missing_evidence)
    warning: bool = False  # passed, but worth a look
    observed: float | None = None
    required: str = ""
    detail: str = ""

    @property
    def result(self) -> str:
        if self.skipped:
            return "missing" if self.missing else "skipped"
        if not self.passed:
            return "FAIL"
        return "warn" if self.warning else "pass"


class GateResult(BaseModel):
    """The gate's decision, the plain reason for it, and every check and comparison behind it."""

    model_config = ConfigDict(extra="forbid")

    decision: Outcome
    reason: str
    metric: str
    baseline_value: float | None = None
    candidate_value: float | None = None
    champion_value: float | None = None
    cycle: int
    max_cycles: int
    look: int = 1
    alpha: float | None = None  # error rate spent on this decision
    split: str = ""  # how the eval set was used
    reasons: list[GateReason] = []
    comparisons: list[dict[str, Any]] = []  # Comparison.to_dict() rows, overall first, then slices
    warnings: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})

    def fired_guards(self) -> list[GateReason]:
        return [r for r in self.reasons if r.kind == "guard" and not r.passed]

    def table(self) -> str:
        """A fixed-width table for the task log: the decision, then one line per check, then warnings."""
        head = f"gate: {self.decision.upper()} (cycle {self.cycle} of {self.max_cycles}) - {self.reason}"
        rows = [("check", "result", "observed", "required", "detail")]
        for r in self.reasons:
            rows.append((r.check, r.result, _fmt(r.observed), r.required, r.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [head]
        for i, row in enumerate(rows):
            lines.append("  ".join([row[j].ljust(widths[j]) for j in range(4)] + [row[4]]).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ------")
        lines += [f"warning: {w}" for w in self.warnings]
        if self.split:
            lines.append(f"eval set: {self.split}")
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


def _points(metric: str, value: float) -> str:
    return f"{value * 100:+.1f} points" if metric == "pass_at_1" else f"{value:+.3f}"


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) pairs of `key` in step order, non-finite values kept (they mean divergence)."""
    out = []
    for i, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        step = _num(row.get("step"))
        out.append((step if step is not None else float(i), float(value)))
    out.sort(key=lambda item: item[0])
    return out


def _ends(values: list[float], window: int) -> tuple[float, float, int] | None:
    """(first-window mean, last-window mean, window used); windows never overlap; None under 2 values."""
    if len(values) < 2:
        return None
    w = max(1, min(window, len(values) // 2))
    first, last = values[:w], values[-w:]
    return sum(first) / w, sum(last) / w, w


def _diverged(check: str, key: str, series: list[tuple[float, float]]) -> GateReason | None:
    bad = [(s, v) for s, v in series if not math.isfinite(v)]
    if not bad:
        return None
    step, value = bad[0]
    return GateReason(check=check, kind="guard", passed=False, required="finite values",
                      detail=f"{key} is {value} at step {step:g} ({len(bad)} non-finite rows): training "
                             "diverged")


def _first_present(rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> tuple[str, list[tuple[float, float]]] | None:
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


def _skipped(check: str, required: str, why: str, *, missing: bool, kind: str = "guard") -> GateReason:
    return GateReason(check=check, kind=kind, passed=True, skipped=True, missing=missing, required=required,
                      detail=("missing: " if missing else "skipped: ") + why)


# --------------------------------------------------------------------------- evidence


def _evidence_row(check: str, c: Comparison, alpha: float, cfg: GateConfig, role: str) -> GateReason:
    """One comparison as a table row: passes when its lower bound clears the margin (and the point bars)."""
    bar = cfg.margin
    rel = c.diff / abs(c.reference_value) if c.reference_value else (math.inf if c.diff > 0 else 0.0)
    clears = c.lower > bar + _EPS and c.diff >= cfg.min_abs_gain - _EPS and rel >= cfg.min_rel_gain - _EPS
    conf = 1 - alpha
    required = f"{conf:.1%} lower bound > {bar:g}"
    if cfg.min_abs_gain > 0:
        required += f", gain >= {cfg.min_abs_gain:g}"
    if cfg.min_rel_gain > 0:
        required += f", >= {cfg.min_rel_gain:+.0%} rel"
    mde = f"; detectable at this n: {_points(c.metric, c.mde)}" if c.mde is not None else ""
    pairs = f", {c.gained}/{c.lost} discordant" if c.gained is not None else ""
    detail = (f"{c.metric} {c.reference_value:.3f} -> {c.candidate_value:.3f} ({_points(c.metric, c.diff)}, "
              f"n={c.n}{pairs}), bound {_signed(c.lower)}, p={c.p_better:.3g} [{c.test}{role}]{mde}")
    if c.note:
        detail += f"; {c.note}"
    return GateReason(check=check, kind="evidence", passed=clears, observed=c.diff, required=required,
                      detail=detail)


def _values(ev: EvalEvidence | None, metric: str) -> float | None:
    return _num(ev.metrics.get(metric)) if ev is not None else None


def _restrict(rows: list[dict[str, Any]], keep: set[str]) -> list[dict[str, Any]]:
    return [r for r in rows if str(r.get("id")) in keep]


# --------------------------------------------------------------------------- slices


def _slice_values(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """{field: {value: [ids]}} over the metadata fields the rows carry (scalars only)."""
    out: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        for field, value in (row.get("metadata") or {}).items():
            if isinstance(value, dict | list) or value is None:
                continue
            out.setdefault(str(field), {}).setdefault(str(value), []).append(str(row.get("id")))
    return out


def _slices(versus: str, ref_rows: list[dict], cand_rows: list[dict], cfg: GateConfig
            ) -> tuple[list[GateReason], list[Comparison], list[str]]:
    """Paired drop tests per slice: Holm-corrected significant drops and protected-slice drops fail."""
    alpha = 1 - cfg.confidence
    ref_by_id = {str(r.get("id")): r for r in ref_rows}
    fields = _slice_values(cand_rows)
    protected = set(cfg.protected_slices)
    tested: list[tuple[str, Comparison, bool]] = []
    for field, groups in sorted(fields.items()):
        if len(groups) < 2 or len(groups) > 50:  # one value is the whole set; many values are ids, not slices
            continue
        for value, ids in sorted(groups.items()):
            name = f"{field}={value}"
            is_protected = name in protected
            if len(ids) < cfg.slice_min_n and not is_protected:
                continue
            cand_sel = _restrict(cand_rows, set(ids))
            ref_sel = [ref_by_id[str(r.get("id"))] for r in cand_sel if str(r.get("id")) in ref_by_id]
            if not ref_sel:
                continue
            r, c, _, paired = pair_rows(ref_sel, cand_sel, cfg.metric)
            # A fifth of the resamples per slice still resolves p-values far below alpha / (number of slices).
            tested.append((name, compare(f"{versus}: {name}", cfg.metric, r, c, paired=paired,
                                         confidence=cfg.confidence, resamples=max(1000, cfg.resamples // 5),
                                         seed=cfg.seed), is_protected))
    missing_protected = protected - {name for name, _, _ in tested}
    rejected = holm([c.p_worse for _, c, _ in tested], alpha)
    reasons, warnings = [], []
    for (name, c, is_protected), significant in zip(tested, rejected, strict=True):
        drop = -c.diff
        detail = f"{c.reference_value:.3f} -> {c.candidate_value:.3f} ({_points(c.metric, c.diff)}, n={c.n}), " \
                 f"p(drop)={c.p_worse:.3g}"
        if significant and c.diff < 0:
            reasons.append(GateReason(check=f"slice_vs_{versus}:{name}", kind="slice", passed=False,
                                      observed=c.diff, required="no significant drop (Holm)",
                                      detail=detail + ": a significant regression on this slice"))
        elif is_protected and c.diff < -_EPS:
            reasons.append(GateReason(check=f"slice_vs_{versus}:{name}", kind="slice", passed=False,
                                      observed=c.diff, required="protected: no drop",
                                      detail=detail + ": a protected slice dropped"))
        elif drop > cfg.slice_drop_tolerance + _EPS:
            warnings.append(f"{name} fell {_points(c.metric, c.diff)} vs {versus} on {c.n} prompts "
                            f"(not significant: {c.plain('worse')})")
            reasons.append(GateReason(check=f"slice_vs_{versus}:{name}", kind="slice", passed=True, warning=True,
                                      observed=c.diff, required=f"drop <= {cfg.slice_drop_tolerance:g} or "
                                      "not significant", detail=detail + ": dropped, not significantly"))
    for name in sorted(missing_protected):
        reasons.append(_skipped(f"slice_vs_{versus}:{name}", "protected: no drop",
                                f"no eval prompt has {name}", missing=True, kind="slice"))
    if tested and not reasons:
        worst = min(tested, key=lambda t: t[1].diff)
        reasons.append(GateReason(check=f"slices_vs_{versus}", kind="slice", passed=True, observed=worst[1].diff,
                                  required="no significant drop (Holm)",
                                  detail=f"{len(tested)} slices tested; worst {worst[0]} "
                                         f"{_points(cfg.metric, worst[1].diff)}"))
    return reasons, [c for _, c, _ in tested], warnings


# --------------------------------------------------------------------------- guards


def _reward_scale(*series: Iterable[float]) -> float:
    values = [abs(v) for s in series for v in s if math.isfinite(v)]
    if all(0.0 <= v <= 1.0 for v in values):
        return 1.0
    return max(values) or 1.0


def _reward_hacking(reference: EvalEvidence, candidate: EvalEvidence, rows: Sequence[dict],
                    cfg: GateConfig) -> GateReason:
    check = "reward_hacking"
    required = f"eval up, and train rise - eval rise <= {cfg.reward_gap_max:g}"
    series = _series(rows, REWARD_KEY)
    if (bad := _diverged(check, REWARD_KEY, series)) is not None:
        return bad
    ends = _ends([v for _, v in series], cfg.window)
    if ends is None:
        return _skipped(check, required, f"needs '{REWARD_KEY}' on at least 2 logged training steps",
                        missing=True)
    eval_key = "mean_reward"
    b, c = _values(reference, eval_key), _values(candidate, eval_key)
    if b is None or c is None:
        return _skipped(check, required, "eval metrics have no 'mean_reward'", missing=True)
    first, last, w = ends
    scale = _reward_scale([first, last, b, c])
    train_rise, eval_rise = (last - first) / scale, (c - b) / scale
    gap = train_rise - eval_rise
    # Training reward up while eval is flat or down is the plain case; a large gap is the subtler one.
    fired = last - first > cfg.reward_rise_min + _EPS and (eval_rise <= _EPS or gap > cfg.reward_gap_max + _EPS)
    detail = (f"train reward {first:.3f} -> {last:.3f} ({_signed(last - first)}, {w}-row windows) vs eval "
              f"mean_reward {reference.label or 'reference'} {b:.3f} -> candidate {c:.3f} ({_signed(c - b)})")
    if scale != 1.0:
        detail += f", both divided by the reward scale {scale:.3g}"
    if fired:
        detail += (": the policy learned the training reward, not the task" if eval_rise <= _EPS else
                   ": the policy learned the training reward far more than the task")
    return GateReason(check=check, kind="guard", passed=not fired, observed=gap, required=required,
                      detail=detail)


def _ratio_guard(check: str, what: str, before: float, after: float, cfg: GateConfig, note: str,
                 unit: str = "tokens") -> GateReason:
    required = f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}"
    if before <= 0:
        return _skipped(check, required, f"{what} starts at {before:g} {unit}, so no ratio", missing=False)
    ratio = after / before
    low, high = ratio < cfg.length_ratio_min - _EPS, ratio > cfg.length_ratio_max + _EPS
    detail = f"{what} {before:.1f} -> {after:.1f} {unit} (x{ratio:.2f}{note})"
    if low:
        detail += ": length collapsed"
    elif high:
        detail += ": length blew up"
    return GateReason(check=check, kind="guard", passed=not (low or high), observed=ratio, required=required,
                      detail=detail)


def _eval_length(reference: EvalEvidence, candidate: EvalEvidence, cfg: GateConfig) -> GateReason:
    check = "eval_length_ratio"
    required = f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}"
    for key, unit in (("mean_response_tokens", "tokens"), ("mean_response_words", "words")):  # noqa: B007
        b, c = _values(reference, key), _values(candidate, key)
        if b is not None and c is not None:
            break
    else:
        side = reference.label if b is None else "candidate"
        return _skipped(check, required, f"neither 'mean_response_tokens' nor 'mean_response_words' in the {side} "
                        "eval metrics", missing=True)
    answers = _values(reference, "pass_at_1"), _values(reference, "mean_reward")
    if all(v is not None and v <= 0 for v in answers):
        return _skipped(check, required, f"the {reference.label} answers nothing (pass@1 0), so its length is "
                        "noise, not a reference", missing=False)
    return _ratio_guard(check, f"eval response length {reference.label} -> candidate", b, c, cfg, "", unit)


def _train_length(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "train_length_ratio"
    series = _series(rows, LENGTH_KEY)
    if (bad := _diverged(check, LENGTH_KEY, series)) is not None:
        return bad
    ends = _ends([v for _, v in series], cfg.window)
    if ends is None:
        return _skipped(check, f"{cfg.length_ratio_min:g} <= ratio <= {cfg.length_ratio_max:g}",
                        f"needs '{LENGTH_KEY}' on at least 2 logged training steps", missing=True)
    first, last, w = ends
    return _ratio_guard(check, "training response length first -> last window", first, last, cfg,
                        f", {w}-row windows")


def _kl(rows: Sequence[dict], drift: dict[str, Any] | None, cfg: GateConfig) -> GateReason:
    check = "kl"
    if cfg.kl_max is None:
        return _skipped(check, "off", "kl_max is None", missing=False)
    required = f"<= {cfg.kl_max:g}"
    found = _first_present(rows, KL_KEYS)
    if found is not None:
        key, series = found
        if (bad := _diverged(check, key, series)) is not None:
            return bad
        values = [v for _, v in series]
        w = min(cfg.window, len(values))
        worst = max(max(values[-w:]), values[-1])
        fired = worst > cfg.kl_max + _EPS
        detail = f"{key} (training log): max of the last {w} rows {worst:.4g}, final {values[-1]:.4g}"
        if fired:
            detail += ": the policy drifted too far from the reference"
        return GateReason(check=check, kind="guard", passed=not fired, observed=worst, required=required,
                          detail=detail)
    kl = _num((drift or {}).get("kl"))
    if kl is not None:
        fired = kl > cfg.kl_max + _EPS
        detail = (f"measured on the eval set (training logs no KL, beta 0): mean per-token log-prob of the "
                  f"candidate's {drift.get('completions')} completions under candidate minus start model "
                  f"= {kl:.4g}")
        if fired:
            detail += ": the policy drifted too far from its start"
        return GateReason(check=check, kind="guard", passed=not fired, observed=kl, required=required,
                          detail=detail)
    why = (drift or {}).get("reason") or "this backend cannot measure drift on the eval set"
    return _skipped(check, required, f"no {' / '.join(KL_KEYS)} in the training metrics (beta 0?) and {why}",
                    missing=True)


def _entropy(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "entropy"
    if cfg.entropy_collapse_ratio is None and cfg.entropy_min is None and cfg.entropy_max is None:
        return _skipped(check, "off", "entropy_collapse_ratio, entropy_min and entropy_max are None",
                        missing=False)
    bounds = [f"last >= {cfg.entropy_collapse_ratio:g} x first"] if cfg.entropy_collapse_ratio else []
    bounds += [f">= {cfg.entropy_min:g}"] if cfg.entropy_min is not None else []
    bounds += [f"<= {cfg.entropy_max:g}"] if cfg.entropy_max is not None else []
    required = ", ".join(bounds)
    found = _first_present(rows, ENTROPY_KEYS)
    if found is None:
        return _skipped(check, required, f"no {' / '.join(ENTROPY_KEYS)} in the training metrics", missing=True)
    key, series = found
    if (bad := _diverged(check, key, series)) is not None:
        return bad
    ends = _ends([v for _, v in series], cfg.window)
    if ends is None:
        return _skipped(check, required, f"needs '{key}' on at least 2 logged training steps", missing=True)
    first, last, w = ends
    ratio = last / first if first > 0 else None
    collapsed = cfg.entropy_collapse_ratio is not None and ratio is not None and \
        ratio < cfg.entropy_collapse_ratio - _EPS
    low = cfg.entropy_min is not None and last < cfg.entropy_min - _EPS
    high = cfg.entropy_max is not None and last > cfg.entropy_max + _EPS
    detail = f"{key} {first:.4g} -> {last:.4g} ({w}-row windows" + (f", x{ratio:.2f})" if ratio else ")")
    if collapsed or low:
        detail += ": entropy collapsed (the policy stopped exploring)"
    elif high:
        detail += ": entropy too high (the policy is close to random)"
    return GateReason(check=check, kind="guard", passed=not (collapsed or low or high), observed=ratio,
                      required=required, detail=detail)


def _format_rise(rows: Sequence[dict], cfg: GateConfig) -> GateReason:
    check = "format_penalty"
    if cfg.format_rise_max is None:
        return _skipped(check, "off", "format_rise_max is None", missing=False)
    required = f"rise <= {cfg.format_rise_max:g}"
    worst: tuple[float, str, float, float, int] | None = None
    for key in format_penalty_keys(rows):
        series = _series(rows, key)
        if (bad := _diverged(check, key, series)) is not None:
            return bad
        # Magnitudes: a penalty logged as a negative reward grows more negative as violations rise.
        ends = _ends([abs(v) for _, v in series], cfg.window)
        if ends is None:
            continue
        first, last, w = ends
        if worst is None or last - first > worst[0]:
            worst = (last - first, key, first, last, w)
    if worst is None:  # a reward without format metrics has nothing for this guard to watch
        return _skipped(check, required, "the reward logs no format-penalty metric", missing=False)
    rise, key, first, last, w = worst
    fired = rise > cfg.format_rise_max + _EPS
    detail = f"{key} {first:.3f} -> {last:.3f} ({_signed(rise)}, {w}-row windows)"
    if fired:
        detail += ": format violations are rising"
    return GateReason(check=check, kind="guard", passed=not fired, observed=rise, required=required,
                      detail=detail)


# --------------------------------------------------------------------------- decision


def _same_rows(a: EvalEvidence, b: EvalEvidence) -> bool:
    return a.rows is not None and b.rows is not None and a.rows == b.rows


def decide(
    baseline: EvalEvidence,
    candidate: EvalEvidence,
    champion: EvalEvidence | None,
    train_rows: list[dict[str, Any]],
    cfg: GateConfig,
    *,
    cycle: int,
    max_cycles: int,
    rft_start: EvalEvidence | None = None,
    look: int = 1,
    drift: dict[str, Any] | None = None,
) -> GateResult:
    """Judge `candidate` against `baseline` and `champion` on paired per-prompt results, and the RFT run.

    promote: the lower confidence bound of the gain over baseline and champion clears `margin` (on the
        confirmation half when the eval set is split, at the error rate left for this `look` at the set),
        the point estimate clears `min_abs_gain`, no slice regresses and no guard fires.
    hold: an enabled check has no evidence (per `on_missing_evidence`), or the gain is positive but not
        conclusive on the last cycle: a person decides.
    iterate: positive but not conclusive (on the selection half), and cycles are left.
    reject: a guard fired, a slice regressed, or the candidate is not better.
    `rft_start` is the eval of the model the RFT stage started from (the SFT checkpoint when SFT ran):
    the length and reward-hacking guards compare with it. `drift` is the KL measured on the eval set.
    """
    metric = cfg.metric
    rows = [r for r in (train_rows or []) if isinstance(r, dict)]
    rft_ref = rft_start or EvalEvidence(baseline.metrics, baseline.rows, "baseline")
    rft_ref = EvalEvidence(rft_ref.metrics, rft_ref.rows, rft_ref.label or "RFT start")
    if champion is not None and _same_rows(champion, baseline):
        champion = None  # the champion is the start model: one comparison covers both
    b, c = _values(baseline, metric), _values(candidate, metric)
    h = _values(champion, metric)
    reasons: list[GateReason] = []
    comparisons: list[Comparison] = []
    warnings: list[str] = []

    alpha_total = 1 - cfg.confidence
    alpha = look_alpha(alpha_total, look) if cfg.look_correction else alpha_total
    references = [("baseline", baseline)] + ([("champion", champion)] if champion is not None else [])
    n_eval = len(candidate.rows or [])
    split = bool(cfg.split_min_prompts) and n_eval >= cfg.split_min_prompts
    if split:
        split_text = (f"{n_eval} prompts split by id hash: iterate decisions use the selection half, the promote "
                      "decision only the confirmation half")
    else:
        split_text = f"{n_eval} prompts, not split (below {cfg.split_min_prompts}): every decision uses all of them"
        if cfg.split_min_prompts and n_eval:
            warnings.append(f"the eval set ({n_eval} prompts) is used for every cycle's decision; the error rate "
                            "is spent over the looks, but a larger set or a fresh one keeps the gate sharper")
    if cfg.look_correction:
        split_text += f"; decision {look} on this eval set, {1 - alpha:.2%} confidence required"

    promote_ok, not_better, missing_rows = True, [], []
    decisive_all: list[Comparison] = []
    headline: Comparison | None = None
    for name, ref in references:
        if ref.rows is None or candidate.rows is None:
            side = name if ref.rows is None else "candidate"
            missing_rows.append(name)
            reasons.append(_skipped(f"gain_vs_{name}", f"{1 - alpha:.1%} lower bound > {cfg.margin:g}",
                                    f"the {side} eval has no per-prompt results to compare", missing=True,
                                    kind="evidence"))
            continue
        r, cnd, ids, paired = pair_rows(ref.rows, candidate.rows, metric)
        full = compare(name, metric, r, cnd, paired=paired, confidence=1 - alpha, resamples=cfg.resamples,
                       seed=cfg.seed)
        comparisons.append(full)
        headline = headline or full
        if not split or not paired:
            decisive, selection = full, full
            row = _evidence_row(f"gain_vs_{name}", full, alpha, cfg, "")
            reasons.append(row)
        else:
            confirm = split_ids(ids)
            decisive = compare(f"{name} (confirmation half)", metric, r[confirm], cnd[confirm], paired=True,
                               confidence=1 - alpha, resamples=cfg.resamples, seed=cfg.seed)
            selection = compare(f"{name} (selection half)", metric, r[~confirm], cnd[~confirm], paired=True,
                                confidence=1 - alpha_total, resamples=cfg.resamples, seed=cfg.seed)
            comparisons += [selection, decisive]
            row = _evidence_row(f"gain_vs_{name}_confirmation", decisive, alpha, cfg, ", promote")
            reasons += [row, _evidence_row(f"gain_vs_{name}_selection", selection, alpha_total, cfg,
                                           ", iterate")]
        decisive_all.append(decisive)
        promote_ok = promote_ok and row.passed
        if selection.diff <= _EPS:
            not_better.append((name, selection))
        if decisive.mde is not None and decisive.mde > 0.1 and metric == "pass_at_1":
            warnings.append(f"the eval set is small: vs the {name}, only gains of about "
                            f"{_points(metric, decisive.mde)} or more can be told from chance ({decisive.n} prompts)")

    slice_fail = False
    for name, ref in references:
        if ref.rows is None or candidate.rows is None:
            continue
        slice_reasons, slice_comparisons, slice_warnings = _slices(name, ref.rows, candidate.rows, cfg)
        reasons += slice_reasons
        comparisons += slice_comparisons
        warnings += slice_warnings
        slice_fail = slice_fail or any(not r.passed for r in slice_reasons)

    reasons += [
        _reward_hacking(rft_ref, candidate, rows, cfg),
        _eval_length(rft_ref, candidate, cfg),
        _train_length(rows, cfg),
        _kl(rows, drift, cfg),
        _entropy(rows, cfg),
        _format_rise(rows, cfg),
    ]
    fired = [r for r in reasons if r.kind == "guard" and not r.passed]
    slices_failed = [r for r in reasons if r.kind == "slice" and not r.passed]
    missing = [r for r in reasons if r.missing]
    cycles = f"cycle {cycle} of {max_cycles}"
    decision: Outcome
    if fired:
        decision = "reject"
        reason = "guard fired: " + "; ".join(f"{r.check} ({r.detail})" for r in fired)
    elif slice_fail:
        decision = "reject"
        reason = "a slice regressed: " + "; ".join(f"{r.check} ({r.detail})" for r in slices_failed)
    elif not_better:
        decision = "reject"
        name, comp = not_better[0]
        reason = f"not better than the {name}: {comp.plain()}"
    elif missing and cfg.on_missing_evidence != "promote":
        decision = "hold" if cfg.on_missing_evidence == "hold" else "reject"
        what = "; ".join(f"{r.check} ({r.detail.removeprefix('missing: ')})" for r in missing)
        reason = f"evidence is missing, so the gate cannot decide on its own: {what}"
    elif promote_ok and not missing_rows:
        decision = "promote"
        reason = f"better than the {' and the '.join(n for n, _ in references)} beyond chance: " + \
            "; ".join(f"vs the {comp.versus}, {comp.plain()}" for comp in decisive_all)
    elif missing_rows:
        decision = "hold" if cfg.on_missing_evidence != "reject" else "reject"
        reason = f"the {' and '.join(missing_rows)} eval has no per-prompt results, so nothing can be paired"
    else:
        shown = headline.plain() if headline else ""
        if cycle < max_cycles:
            decision = "iterate"
            reason = f"better, but not beyond chance yet ({shown}); the next cycle starts from this " \
                     f"checkpoint ({cycles})"
        else:
            decision = "hold"
            reason = f"better, but not beyond chance ({shown}) and no cycles are left ({cycles}): a person " \
                     "decides"
    return GateResult(decision=decision, reason=reason, metric=metric, baseline_value=b, candidate_value=c,
                      champion_value=h, cycle=cycle, max_cycles=max_cycles, look=look, alpha=alpha,
                      split=split_text, reasons=reasons, comparisons=[x.to_dict() for x in comparisons],
                      warnings=warnings)
