"""The gate decides on evidence: paired tests on per-prompt rows, slices, guards that fail closed."""

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from rftflow.scoring.gate import EvalEvidence, GateConfig, GateResult, decide
from rftflow.scoring.gate_simulation import simulate_pairs
from rftflow.scoring.paired import chance_words, compare, holm, look_alpha, pair_rows, split_ids

GUARDS = {"reward_hacking", "eval_length_ratio", "train_length_ratio", "kl", "entropy", "format_penalty"}


def prompts(n: int, ref_rate: float, cand_rate: float, *, seed: int = 0, q: float = 0.15,
            category=None) -> tuple[list[dict], list[dict]]:
    """Per-prompt rows of a baseline and a candidate with these pass rates, disagreeing on about q of them."""
    rng = np.random.default_rng(seed)
    base, cand = simulate_pairs(n, ref_rate, cand_rate - ref_rate, q, rng)
    for i, (b, c) in enumerate(zip(base, cand, strict=True)):
        meta = {"category": category(i)} if category else {}
        b["metadata"], c["metadata"] = meta, dict(meta)
    return base, cand


def exact(n: int, ref_pass: list[bool], cand_pass: list[bool], meta=None) -> tuple[list[dict], list[dict]]:
    def rows(passed):
        return [{"id": f"q{i}", "passed": p, "reward": float(p), "metadata": dict(meta[i]) if meta else {}}
                for i, p in enumerate(passed)]
    assert len(ref_pass) == len(cand_pass) == n
    return rows(ref_pass), rows(cand_pass)


def ev(rows: list[dict] | None, label: str = "", tokens: float = 12.0, **metrics) -> EvalEvidence:
    rate = float(np.mean([r["passed"] for r in rows])) if rows else 0.0
    base = {"pass_at_1": rate, "mean_reward": rate, "mean_response_tokens": tokens, "n": len(rows or [])}
    return EvalEvidence({**base, **metrics}, rows, label)


def train(n: int = 12, **overrides) -> list[dict]:
    """Healthy GRPO logging rows (reward up a little, length, KL, entropy steady). An override is a
    (first, last) pair interpolated over the steps, a full list of values, or None to drop the key."""
    curves = {
        "critic/rewards/mean": (0.60, 0.70),
        "actor/entropy": (0.60, 0.45),
        "actor/kl_loss": (0.01, 0.05),
        "response_length/mean": (12.0, 12.5),
        "format_penalty/rate": (0.10, 0.08),
    }
    curves.update(overrides)
    out = []
    for i in range(n):
        t = i / (n - 1)
        row = {"step": (i + 1) * 5}
        for key, ends in curves.items():
            if isinstance(ends, list):
                row[key] = ends[i]
            elif ends is not None:
                row[key] = ends[0] + (ends[1] - ends[0]) * t
        out.append(row)
    return out


def judge(base, cand, *, champion=None, rows=None, cycle=1, max_cycles=1, look=1, drift=None, rft_start=None,
          **cfg) -> GateResult:
    return decide(ev(base, "baseline"), ev(cand, "candidate"), ev(champion, "champion") if champion else None,
                  train() if rows is None else rows, GateConfig(**cfg), cycle=cycle, max_cycles=max_cycles,
                  look=look, drift=drift, rft_start=rft_start)


def check(result: GateResult, name: str):
    return next(r for r in result.reasons if r.check == name)


# --------------------------------------------------------------------------- statistics


def test_mcnemar_p_value_is_the_exact_binomial_on_discordant_pairs_and_dual_to_the_bound():
    base, cand = prompts(500, 0.70, 0.74, seed=3)
    r, c, _, paired = pair_rows(base, cand, "pass_at_1")
    comp = compare("baseline", "pass_at_1", r, c, paired=paired, confidence=0.95)
    gained = sum(1 for x, y in zip(r, c, strict=True) if y and not x)
    lost = sum(1 for x, y in zip(r, c, strict=True) if x and not y)
    assert (comp.gained, comp.lost) == (gained, lost)
    assert comp.diff == pytest.approx((gained - lost) / 500)
    assert comp.p_better == pytest.approx(stats.binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue)
    for g, lo in [(30, 12), (30, 18), (20, 20), (25, 14)]:
        ref, cnd = exact(200, [False] * g + [True] * lo + [True] * 10 + [False] * (190 - g - lo),
                         [True] * g + [False] * lo + [True] * 10 + [False] * (190 - g - lo))
        x = compare("b", "pass_at_1", *pair_rows(ref, cnd, "pass_at_1")[:2], paired=True, confidence=0.95)
        assert (x.lower > 0) == (x.p_better < 0.05), (g, lo, x)


def test_paired_bootstrap_is_seeded_and_reproducible():
    rng = np.random.default_rng(1)
    ref = rng.normal(0.5, 0.3, 400)
    cand = ref + rng.normal(0.03, 0.2, 400)
    a = compare("b", "mean_reward", ref, cand, paired=True, seed=7)
    b = compare("b", "mean_reward", ref, cand, paired=True, seed=7)
    assert a == b
    assert a.lower < a.diff < a.upper
    assert 0 < a.p_better < 0.5


def test_unpaired_fallback_when_the_prompts_differ():
    base, _ = prompts(300, 0.6, 0.6, seed=1)
    _, cand = prompts(300, 0.6, 0.7, seed=2)
    for i, row in enumerate(cand):
        row["id"] = f"other{i}"
    r, c, _, paired = pair_rows(base, cand, "pass_at_1")
    assert not paired
    comp = compare("champion", "pass_at_1", r, c, paired=False)
    assert comp.test == "Welch t (unpaired)" and "cannot be paired" in comp.note
    result = judge(base, base, champion=None)  # sanity: identical candidate never promotes
    assert result.decision != "promote"


def test_pairing_refuses_non_finite_values():
    base, cand = prompts(50, 0.5, 0.5)
    cand[3]["reward"] = float("nan")
    with pytest.raises(ValueError, match="row 4"):
        pair_rows(base, cand, "mean_reward")


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.2], 0.05) == [True, False, False, False]
    assert holm([0.001, 0.012, 0.02], 0.05) == [True, True, True]
    assert holm([], 0.05) == []


def test_look_alpha_sums_to_at_most_alpha():
    assert sum(look_alpha(0.05, k) for k in range(1, 10_000)) < 0.05
    assert look_alpha(0.05, 1) > look_alpha(0.05, 2)


def test_split_is_deterministic_and_about_half():
    ids = [f"p{i}" for i in range(2000)]
    first, second = split_ids(ids), split_ids(list(reversed(ids)))
    assert list(first) == list(reversed(second))
    assert 0.45 < first.mean() < 0.55


def test_chance_words():
    assert chance_words(0.25) == "1 time in 4"
    assert chance_words(0.6) == "more often than not"


# --------------------------------------------------------------------------- the cases that promoted before


def test_two_points_on_500_prompts_is_not_promoted_and_says_how_likely_by_chance():
    base, cand = exact(500, [True] * 346 + [False] * 154, [True] * 316 + [False] * 30 + [True] * 40 + [False] * 114)
    result = judge(base, cand, max_cycles=1)
    assert result.decision == "hold"  # positive but inconclusive on the last cycle: a person decides
    assert "+2.0 points" in result.reason and "by chance 1 time in" in result.reason
    assert judge(base, cand, cycle=1, max_cycles=3).decision == "iterate"


def test_six_points_on_50_prompts_is_not_promoted_and_warns_the_set_is_small():
    base, cand = exact(50, [True] * 30 + [False] * 20, [True] * 28 + [False] * 2 + [True] * 5 + [False] * 15)
    result = judge(base, cand)
    assert result.decision in ("hold", "iterate")
    assert any("eval set is small" in w for w in result.warnings)


def test_a_collapsing_slice_blocks_promotion_while_the_overall_rises():
    cat = [("collapse" if i < 60 else "rest") for i in range(200)]
    ref = [i % 2 == 0 if i < 60 else i % 3 != 0 for i in range(200)]  # collapse slice 0.50
    cand = [i in (0, 10, 20, 30, 40, 50) if i < 60 else True for i in range(200)]  # 0.10, rest all pass
    base, candidate = exact(200, ref, cand, meta=[{"category": c} for c in cat])
    result = judge(base, candidate)
    assert result.candidate_value > result.baseline_value
    assert result.decision == "reject"
    slice_row = check(result, "slice_vs_baseline:category=collapse")
    assert not slice_row.passed and "significant regression" in slice_row.detail


def test_a_small_slice_drop_is_a_warning_and_a_protected_slice_must_not_drop():
    cat = [("a" if i < 100 else "b") for i in range(400)]
    rng = np.random.default_rng(5)
    ref = list(rng.random(400) < 0.6)
    cand = list(ref)
    for i in range(100, 400):  # b improves a lot
        if not cand[i] and rng.random() < 0.6:
            cand[i] = True
    # a drops 6 points (6 newly passed, 12 newly failed): not significant on 100 prompts
    for i in [i for i in range(100) if cand[i]][:12]:
        cand[i] = False
    for i in [i for i in range(100) if not ref[i]][:6]:
        cand[i] = True
    base, candidate = exact(400, ref, cand, meta=[{"category": c} for c in cat])
    result = judge(base, candidate)
    assert result.decision == "promote", result.table()
    assert any("category=a" in w for w in result.warnings)
    protected = judge(base, candidate, protected_slices=["category=a"])
    assert protected.decision == "reject" and "protected slice dropped" in protected.reason


def test_reward_hacking_fires_on_the_gap_even_when_eval_rose():
    base, cand = prompts(400, 0.60, 0.625, seed=2, q=0.05)
    result = judge(base, cand, rows=train(**{"critic/rewards/mean": (0.30, 0.95)}))
    guard = check(result, "reward_hacking")
    assert not guard.passed and result.decision == "reject"
    healthy = check(judge(base, cand, rows=train(**{"critic/rewards/mean": (0.55, 0.70)})), "reward_hacking")
    assert healthy.passed


def test_entropy_collapse_fires_by_default_and_missing_entropy_says_skipped_why():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    collapsed = judge(base, cand, rows=train(**{"actor/entropy": (0.6, 0.1)}))
    assert not check(collapsed, "entropy").passed and collapsed.decision == "reject"
    missing = judge(base, cand, rows=train(**{"actor/entropy": None}))
    entropy = check(missing, "entropy")
    assert entropy.result == "missing" and "actor/entropy" in entropy.detail
    assert missing.decision == "hold"


def test_kl_judges_the_late_spike_not_a_window_mean():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    spike = [0.05] * 11 + [2.6]
    result = judge(base, cand, rows=train(**{"actor/kl_loss": spike}))
    assert not check(result, "kl").passed and result.decision == "reject"


def test_kl_with_beta_zero_uses_the_measured_drift_and_says_so():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    rows = train(**{"actor/kl_loss": None})
    ok = judge(base, cand, rows=rows, drift={"kl": 0.08, "completions": 600, "tokens": 7000})
    assert check(ok, "kl").passed and "measured on the eval set" in check(ok, "kl").detail
    assert ok.decision == "promote"
    drifted = judge(base, cand, rows=rows, drift={"kl": 3.0, "completions": 600, "tokens": 7000})
    assert drifted.decision == "reject"
    unknown = judge(base, cand, rows=rows, drift={"kl": None, "reason": "the bedrock backend cannot"})
    assert check(unknown, "kl").result == "missing" and unknown.decision == "hold"


def test_nan_in_a_training_curve_fails_as_divergence():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    curve = [0.6, 0.62, 0.65, 0.7, float("nan"), 0.72, 0.74, 0.75, 0.76, 0.77, 0.78, 0.8]
    result = judge(base, cand, rows=train(**{"critic/rewards/mean": curve}))
    guard = check(result, "reward_hacking")
    assert not guard.passed and "diverged" in guard.detail and result.decision == "reject"


def test_every_training_metric_missing_holds_by_default():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    assert judge(base, cand, rows=[]).decision == "hold"
    assert judge(base, cand, rows=[], on_missing_evidence="reject").decision == "reject"
    assert judge(base, cand, rows=[], on_missing_evidence="promote").decision == "promote"


def test_missing_per_prompt_rows_hold_instead_of_comparing_point_estimates():
    base, cand = prompts(600, 0.5, 0.7, seed=4)
    result = decide(EvalEvidence({"pass_at_1": 0.5, "mean_reward": 0.5, "mean_response_tokens": 12}, None),
                    ev(cand), None, train(), GateConfig(), cycle=1, max_cycles=1)
    assert result.decision == "hold" and "no per-prompt results" in result.reason


# --------------------------------------------------------------------------- decisions


def test_a_real_gain_promotes_with_every_guard_passing_and_explains_itself():
    base, cand = prompts(500, 0.60, 0.70, seed=1)
    result = judge(base, cand, drift=None)
    assert result.decision == "promote", result.table()
    assert {r.check for r in result.reasons if r.kind == "guard" and not r.passed} == set()
    assert "newly passed" in result.reason and "by chance" in result.reason
    assert {r.check for r in result.reasons if r.kind == "guard"} == GUARDS


def test_the_champion_must_be_beaten_too():
    base, cand = prompts(500, 0.50, 0.65, seed=1)
    champion = [dict(r, passed=True, reward=1.0) if i % 3 else dict(r) for i, r in enumerate(cand)]
    result = judge(base, cand, champion=champion)
    assert result.decision == "reject" and "champion" in result.reason


def test_a_champion_on_other_prompts_is_compared_unpaired_and_says_so():
    base, cand = prompts(500, 0.50, 0.70, seed=1)
    _, other = prompts(500, 0.4, 0.4, seed=9)
    for i, row in enumerate(other):
        row["id"] = f"old{i}"
    result = judge(base, cand, champion=other)
    row = check(result, "gain_vs_champion")
    assert "Welch" in row.detail and "cannot be paired" in row.detail
    assert result.decision == "promote"


def test_the_look_correction_makes_later_decisions_on_one_eval_set_stricter():
    base, cand = exact(500, [True] * 300 + [False] * 200,
                       [True] * 282 + [False] * 18 + [True] * 40 + [False] * 160)  # +4.4 points, 40/18
    assert judge(base, cand, look=1).decision == "promote"
    later = judge(base, cand, look=4)
    assert later.decision == "hold" and "decision 4 on this eval set" in later.split
    assert judge(base, cand, look=4, look_correction=False).decision == "promote"


def test_large_eval_sets_are_split_into_selection_and_confirmation():
    base, cand = prompts(2000, 0.6, 0.66, seed=3)
    result = judge(base, cand)
    checks = {r.check for r in result.reasons}
    assert {"gain_vs_baseline_confirmation", "gain_vs_baseline_selection"} <= checks
    assert "confirmation half" in result.split
    small = judge(*prompts(500, 0.6, 0.66, seed=3))
    assert "not split" in small.split and any("used for every cycle" in w for w in small.warnings)


def test_not_better_rejects():
    base, cand = prompts(500, 0.6, 0.55, seed=3)
    result = judge(base, cand, max_cycles=3, rows=train(**{"critic/rewards/mean": (0.60, 0.62)}))
    assert result.decision == "reject" and "not better than the baseline" in result.reason
    rising = judge(base, cand, max_cycles=3)  # training reward +0.10 while eval fell: reward hacking
    assert rising.decision == "reject" and "reward_hacking" in rising.reason


def test_length_guard_compares_with_the_rft_start_and_skips_a_reference_that_cannot_answer():
    base, cand = prompts(600, 0.0, 0.6, seed=4)
    for r in base:
        r["passed"], r["reward"] = False, 0.0
    noise = ev(base, "baseline", tokens=24.0)
    noise.metrics.update(pass_at_1=0.0, mean_reward=0.0)
    result = decide(noise, ev(cand, tokens=11.0), None, train(), GateConfig(), cycle=1, max_cycles=1)
    length = check(result, "eval_length_ratio")
    assert length.skipped and "answers nothing" in length.detail
    sft = ev(prompts(600, 0.5, 0.5, seed=4)[0], "SFT checkpoint", tokens=22.0)
    result = decide(noise, ev(cand, tokens=10.0), None, train(), GateConfig(), cycle=1, max_cycles=1,
                    rft_start=sft)
    length = check(result, "eval_length_ratio")
    assert not length.passed and "SFT checkpoint" in length.detail


def test_mean_reward_metric_uses_the_paired_bootstrap():
    base, cand = prompts(500, 0.5, 0.65, seed=6)
    result = judge(base, cand, metric="mean_reward")
    assert "paired bootstrap" in check(result, "gain_vs_baseline").detail
    assert result.decision == "promote"


def test_table_and_dict_round_trip():
    base, cand = prompts(500, 0.60, 0.70, seed=1)
    result = judge(base, cand)
    again = GateResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    table = result.table()
    assert table.splitlines()[0].startswith("gate: PROMOTE")
    assert "gain_vs_baseline" in table and "eval set:" in table


def test_config_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        GateConfig(kl_maxx=1.0)
    with pytest.raises(ValidationError):
        GateConfig(confidence=1.5)
    with pytest.raises(ValidationError, match="field=value"):
        GateConfig(protected_slices=["add"])


def test_decision_on_2000_prompts_and_10_slices_is_deterministic():
    base, cand = prompts(2000, 0.6, 0.64, seed=8, category=lambda i: f"c{i % 10}")
    a, b = judge(base, cand, metric="mean_reward"), judge(base, cand, metric="mean_reward")
    assert a == b
    assert sum(1 for c in a.comparisons if ": category=" in c["versus"]) == 10
    assert all(math.isfinite(c["lower"]) for c in a.comparisons)
