"""The diversity check: pass patterns, fractions, closed-form expectation and the decision."""

from __future__ import annotations

import pytest

from rftflow.cycle.recipes import DiversityConfig
from rftflow.scoring import diversity


def _table(*patterns: tuple[int, int]) -> list[list[float]]:
    """Rewards for prompts given as (passes, k) pairs."""
    return [[1.0] * p + [0.0] * (k - p) for p, k in patterns]


def _analyze(rewards: list[list[float]], **cfg):
    ids = [f"p{i}" for i in range(len(rewards))]
    return diversity.analyze(ids, rewards, DiversityConfig(**cfg))


def test_all_fail_prompts_send_the_model_to_sft_first():
    rows, metrics, decision = _analyze(_table(*[(0, 8)] * 9, (1, 8)))
    assert metrics["all_fail"] == pytest.approx(0.9) and metrics["mixed"] == pytest.approx(0.1)
    assert decision["decision"] == "sft_first"
    assert "90% of prompts fail every rollout" in decision["reason"]


def test_saturated_prompts_stop():
    _, metrics, decision = _analyze(_table(*[(8, 8)] * 19, (7, 8)))
    assert metrics["all_pass"] == pytest.approx(0.95)
    assert decision["decision"] == "stop_saturated"
    assert "nothing left for RL to learn" in decision["reason"]


def test_mixed_prompts_go_to_rft_with_the_numbers_in_the_reason():
    rows, metrics, decision = _analyze(_table((0, 8), (3, 8), (5, 8), (8, 8)))
    assert [r["pattern"] for r in rows] == ["all_fail", "mixed", "mixed", "all_pass"]
    assert (metrics["all_fail"], metrics["mixed"], metrics["all_pass"]) == (0.25, 0.5, 0.25)
    assert metrics["mean_pass_rate"] == pytest.approx(0.5)
    assert metrics["pass_at_k"] == pytest.approx(0.75)
    assert decision["decision"] == "rft"
    assert "50% of prompts are mixed" in decision["reason"] and "4 prompts x 8 rollouts" in decision["reason"]


def test_too_few_mixed_prompts_decides_by_which_side_dominates():
    # 40% all-pass (under the 90% limit) and 55% all-fail (under 70%), only 5% mixed (under 10%).
    rewards = _table(*[(8, 8)] * 8, *[(0, 8)] * 11, (4, 8))
    _, metrics, decision = _analyze(rewards)
    assert decision["decision"] == "sft_first" and "only 5% of prompts are mixed" in decision["reason"]
    rewards = _table(*[(8, 8)] * 11, *[(0, 8)] * 8, (4, 8))
    assert _analyze(rewards)[2]["decision"] == "stop_saturated"


def test_thresholds_come_from_the_config():
    rewards = _table(*[(0, 4)] * 6, *[(2, 4)] * 4)  # 60% all-fail
    assert _analyze(rewards, k=4)[2]["decision"] == "rft"
    assert _analyze(rewards, k=4, max_all_fail_fraction=0.5)[2]["decision"] == "sft_first"


def test_pass_threshold_decides_what_counts_as_a_pass():
    rewards = [[0.6, 0.6, 0.2, 0.2]]
    assert _analyze(rewards, k=4, pass_threshold=0.5)[0][0]["passes"] == 2
    assert _analyze(rewards, k=4, pass_threshold=1.0)[0][0]["pattern"] == "all_fail"


def test_closed_form_expectations():
    assert diversity.expected_mixed(0.5, 2) == pytest.approx(0.5)
    assert diversity.expected_mixed(0.0, 8) == 0.0 and diversity.expected_mixed(1.0, 8) == 0.0
    # Half the prompts always pass, half never: p̄ = 0.5 predicts 99% mixed, yet none are.
    _, metrics, _ = _analyze(_table((8, 8), (0, 8)))
    assert metrics["expected_mixed"] == pytest.approx(1 - 2 * 0.5 ** 8)
    assert metrics["mixed"] == 0.0 and metrics["expected_mixed_per_prompt"] == 0.0
    _, metrics, _ = _analyze(_table((4, 8), (2, 8)))
    per_prompt = (diversity.expected_mixed(0.5, 8) + diversity.expected_mixed(0.25, 8)) / 2
    assert metrics["expected_mixed_per_prompt"] == pytest.approx(per_prompt)


def test_informative_subset_keeps_mixed_prompts_in_order():
    class Rec:
        def __init__(self, id_):
            self.id = id_

    records = [Rec("a"), Rec("b"), Rec("c"), Rec("d")]
    rows = diversity.outcome_rows(["a", "b", "c", "d"], _table((0, 4), (2, 4), (4, 4), (1, 4)), 1.0)
    assert [r.id for r in diversity.informative(records, rows)] == ["b", "d"]


def test_empty_or_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="at least one prompt"):
        diversity.summarize([])
    with pytest.raises(ValueError, match="one reward list per prompt"):
        diversity.outcome_rows(["a"], [], 1.0)
