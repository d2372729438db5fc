"""Tests for the gate: margins decide promote / iterate / reject, and each guard fires on its own case."""

import json

import pytest
from pydantic import ValidationError

from rftflow.gate import GateConfig, GateResult, decide

GUARDS = {"reward_hacking", "eval_length_ratio", "train_length_ratio", "kl", "entropy", "format_penalty"}


def evals(pass_at_1: float, mean_reward: float | None = None, tokens: float = 20.0) -> dict:
    return {
        "pass_at_1": pass_at_1,
        "mean_reward": pass_at_1 if mean_reward is None else mean_reward,
        "mean_response_tokens": tokens,
        "n": 100,
        "pass_at_k": None,
        "k": 0,
        "breakdown": {},
    }


def rows(n: int = 10, **overrides) -> list[dict]:
    """Healthy RFT logging rows: reward up a little, length, KL and entropy steady, no format trouble.

    An override is a (first, last) pair, linearly interpolated over the steps, or None to drop the key.
    """
    curves = {
        "critic/rewards/mean": (0.30, 0.34),
        "critic/rewards/max": (1.0, 1.0),
        "critic/rewards/min": (0.0, 0.0),
        "actor/entropy": (1.2, 1.0),
        "actor/kl_loss": (0.01, 0.05),
        "actor/grad_norm": (0.5, 0.4),
        "actor/lr": (1e-5, 1e-5),
        "response_length/mean": (20.0, 22.0),
        "frac_reward_zero_std": (0.3, 0.2),
        "format_penalty/rate": (0.10, 0.08),
    }
    curves.update(overrides)
    out = []
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.0
        row = {"step": (i + 1) * 5}
        for key, ends in curves.items():
            if ends is not None:
                row[key] = ends[0] + (ends[1] - ends[0]) * t
        out.append(row)
    return out


def check(result: GateResult, name: str):
    return next(r for r in result.reasons if r.check == name)


def fired(result: GateResult) -> set[str]:
    return {r.check for r in result.fired_guards()}


CFG = GateConfig()


def test_genuine_improvement_promotes_with_every_guard_passing():
    result = decide(evals(0.40), evals(0.55), None, rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "promote", result.table()
    assert fired(result) == set()
    assert {r.check for r in result.reasons} >= GUARDS | {"gain_vs_baseline", "gain_vs_champion"}
    assert all(not r.skipped for r in result.reasons if r.check in GUARDS)
    assert check(result, "gain_vs_baseline").observed == pytest.approx(0.15)
    assert "no champion" in check(result, "gain_vs_champion").detail


def test_promotes_when_candidate_also_beats_the_champion():
    result = decide(evals(0.40), evals(0.55), evals(0.50), rows(), CFG, cycle=1, max_cycles=1)
    assert result.decision == "promote"
    assert result.champion_value == 0.50
    assert check(result, "gain_vs_champion").passed


def test_margin_exactly_met_promotes_despite_float_rounding():
    # 0.52 - 0.50 is not exactly 0.02 in floating point; a margin met on paper must still be met
    result = decide(evals(0.50), evals(0.52), None, rows(), CFG, cycle=1, max_cycles=1)
    assert result.decision == "promote"


@pytest.mark.parametrize(
    ("name", "baseline", "candidate", "train"),
    [
        # training reward climbs 0.2 -> 0.8 while eval reward does not move
        ("reward_hacking", evals(0.40), evals(0.45, mean_reward=0.40),
         rows(**{"critic/rewards/mean": (0.2, 0.8)})),
        ("eval_length_ratio", evals(0.40, tokens=20.0), evals(0.55, tokens=5.0), rows()),
        ("eval_length_ratio", evals(0.40, tokens=20.0), evals(0.55, tokens=60.0), rows()),
        ("train_length_ratio", evals(0.40), evals(0.55), rows(**{"response_length/mean": (20.0, 4.0)})),
        ("train_length_ratio", evals(0.40), evals(0.55), rows(**{"response_length/mean": (20.0, 90.0)})),
        ("kl", evals(0.40), evals(0.55), rows(**{"actor/kl_loss": (0.5, 3.0)})),
        ("entropy", evals(0.40), evals(0.55), rows(**{"actor/entropy": (1.0, 0.01)})),
        ("format_penalty", evals(0.40), evals(0.55), rows(**{"format_penalty/rate": (0.05, 0.40)})),
    ],
)
def test_each_guard_fires_on_its_own_case_and_rejects(name, baseline, candidate, train):
    # entropy_min is raised so an entropy collapse can fire; no other guard is affected by it
    cfg = GateConfig(entropy_min=0.3)
    result = decide(baseline, candidate, None, train, cfg, cycle=1, max_cycles=3)
    assert fired(result) == {name}, result.table()
    assert result.decision == "reject"
    assert result.reason.startswith("guard fired: " + name)
    # the same case without the trouble promotes, so it was this guard and nothing else
    healthy = decide(evals(0.40), evals(0.55), None, rows(), cfg, cycle=1, max_cycles=3)
    assert healthy.decision == "promote"


def test_entropy_above_max_fires():
    cfg = GateConfig(entropy_max=0.5)
    result = decide(evals(0.40), evals(0.55), None, rows(), cfg, cycle=1, max_cycles=1)
    assert fired(result) == {"entropy"}
    assert "too high" in check(result, "entropy").detail


def test_reward_rising_with_eval_rising_is_not_hacking():
    train = rows(**{"critic/rewards/mean": (0.2, 0.8)})
    result = decide(evals(0.40), evals(0.60), None, train, CFG, cycle=1, max_cycles=1)
    assert check(result, "reward_hacking").passed
    assert result.decision == "promote"


def test_eval_flat_tolerance_counts_small_eval_gains_as_flat():
    train = rows(**{"critic/rewards/mean": (0.2, 0.8)})
    cfg = GateConfig(eval_flat_tolerance=0.1, min_abs_gain=0.0)
    result = decide(evals(0.40), evals(0.45), None, train, cfg, cycle=1, max_cycles=1)
    assert fired(result) == {"reward_hacking"}


def test_falling_format_ok_rate_does_not_count_as_a_format_penalty():
    # "format_ok/rate" going up is good news; only keys that name a penalty/error are watched
    train = rows(**{"format_ok/rate": (0.1, 0.9), "format_penalty/rate": None})
    result = decide(evals(0.40), evals(0.55), None, train, CFG, cycle=1, max_cycles=1)
    assert check(result, "format_penalty").skipped
    assert result.decision == "promote"


def test_negative_format_penalty_reward_growing_fires():
    train = rows(**{"rewards/format_penalty/mean": (-0.05, -0.5), "format_penalty/rate": None})
    result = decide(evals(0.40), evals(0.55), None, train, CFG, cycle=1, max_cycles=1)
    assert fired(result) == {"format_penalty"}
    assert "rewards/format_penalty/mean" in check(result, "format_penalty").detail


def test_below_margin_improvement_iterates_while_cycles_remain():
    result = decide(evals(0.40), evals(0.41), None, rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "iterate"
    assert "below margin" in result.reason and "cycle 1 of 3" in result.reason
    assert not check(result, "gain_vs_baseline").passed


def test_below_margin_improvement_at_the_last_cycle_rejects():
    result = decide(evals(0.40), evals(0.41), None, rows(), CFG, cycle=3, max_cycles=3)
    assert result.decision == "reject"
    assert "no cycles left" in result.reason


def test_no_improvement_rejects():
    result = decide(evals(0.40), evals(0.40), None, rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "reject"
    assert result.reason.startswith("not improved")
    worse = decide(evals(0.40), evals(0.30), None, rows(), CFG, cycle=1, max_cycles=3)
    assert worse.decision == "reject"


def test_champion_better_than_candidate_rejects():
    result = decide(evals(0.40), evals(0.55), evals(0.70), rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "reject"
    assert "champion" in result.reason
    assert check(result, "gain_vs_baseline").passed
    assert not check(result, "gain_vs_champion").passed


def test_candidate_barely_above_champion_iterates():
    result = decide(evals(0.40), evals(0.55), evals(0.54), rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "iterate"
    assert "champion" in result.reason


def test_relative_margin():
    cfg = GateConfig(min_abs_gain=0.0, min_rel_gain=0.10)  # at least 10% better
    assert decide(evals(0.50), evals(0.56), None, rows(), cfg, cycle=1, max_cycles=1).decision == "promote"
    below = decide(evals(0.50), evals(0.54), None, rows(), cfg, cycle=1, max_cycles=1)
    assert below.decision == "reject" and "below margin" in below.reason
    assert "+8.0% rel" in check(below, "gain_vs_baseline").detail
    assert check(below, "gain_vs_baseline").required == ">= +10.0% rel"
    # both margins must hold: a 10% gain of a small number misses the absolute margin
    both = GateConfig(min_abs_gain=0.02, min_rel_gain=0.10)
    assert decide(evals(0.10), evals(0.115), None, rows(), both, cycle=1, max_cycles=2).decision == "iterate"


def test_mean_reward_metric():
    cfg = GateConfig(metric="mean_reward")
    result = decide(evals(0.40, mean_reward=0.1), evals(0.40, mean_reward=0.3), None, rows(), cfg,
                    cycle=1, max_cycles=1)
    assert result.decision == "promote"
    assert result.metric == "mean_reward" and result.candidate_value == 0.3


def test_missing_training_keys_skip_guards_and_say_so():
    train = [{"step": i, "critic/rewards/mean": 0.3} for i in range(6)]  # beta = 0 backend: no KL etc.
    result = decide(evals(0.40), evals(0.55), None, train, CFG, cycle=1, max_cycles=1)
    assert result.decision == "promote"
    for name in ("train_length_ratio", "kl", "entropy", "format_penalty"):
        reason = check(result, name)
        assert reason.skipped and reason.passed
        assert reason.detail.startswith("skipped:")
    assert "actor/kl_loss" in check(result, "kl").detail


def test_missing_eval_keys_skip_guards():
    base = {"pass_at_1": 0.4}
    cand = {"pass_at_1": 0.6}
    result = decide(base, cand, None, rows(), CFG, cycle=1, max_cycles=1)
    assert check(result, "eval_length_ratio").skipped
    assert "mean_response_tokens" in check(result, "eval_length_ratio").detail
    assert not check(result, "reward_hacking").skipped  # falls back to the gate metric
    assert result.decision == "promote"


def test_empty_and_short_training_rows_never_crash():
    for train in ([], [{}], [{"step": 1, "critic/rewards/mean": float("nan")}], rows(n=1)):
        result = decide(evals(0.40), evals(0.55), None, train, CFG, cycle=1, max_cycles=1)
        assert result.decision == "promote"
        assert check(result, "reward_hacking").skipped


def test_missing_gate_metric_rejects_with_a_reason():
    result = decide(evals(0.40), {"mean_reward": 0.9}, None, rows(), CFG, cycle=1, max_cycles=3)
    assert result.decision == "reject"
    assert "candidate eval metrics have no numeric 'pass_at_1'" in result.reason


def test_rows_are_ordered_by_step():
    train = list(reversed(rows(**{"response_length/mean": (20.0, 4.0)})))
    result = decide(evals(0.40), evals(0.55), None, train, CFG, cycle=1, max_cycles=1)
    assert fired(result) == {"train_length_ratio"}
    assert check(result, "train_length_ratio").observed < 0.5


def test_disabled_guards_are_skipped():
    cfg = GateConfig(kl_max=None, format_rise_max=None, entropy_min=None)
    train = rows(**{"actor/kl_loss": (5.0, 9.0), "format_penalty/rate": (0.0, 0.9)})
    result = decide(evals(0.40), evals(0.55), None, train, cfg, cycle=1, max_cycles=1)
    assert result.decision == "promote"
    assert check(result, "kl").skipped and check(result, "format_penalty").skipped


def test_table_and_dict_round_trip():
    result = decide(evals(0.40), evals(0.41), evals(0.40), rows(), CFG, cycle=2, max_cycles=3)
    table = result.table()
    assert table.splitlines()[0].startswith("gate: ITERATE (cycle 2 of 3)")
    for r in result.reasons:
        assert r.check in table
    data = json.loads(json.dumps(result.to_dict()))
    assert GateResult.from_dict(data) == result
    assert {"check", "passed", "observed", "required", "detail"} <= set(data["reasons"][0])


def test_config_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ValidationError):
        GateConfig(min_gain=0.1)
    with pytest.raises(ValidationError):
        GateConfig(metric="accuracy")
    with pytest.raises(ValidationError):
        GateConfig(window=0)
