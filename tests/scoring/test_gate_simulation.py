"""Simulated evals with fixed seeds: the gate rarely promotes a no-better candidate, finds a real gain,
and stays quiet over many cycles judged on one eval set."""

import pytest

from rftflow.scoring.gate import GateConfig
from rftflow.scoring.gate_simulation import chained_promotions, promotion_rate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("n", [100, 500, 2000])
@pytest.mark.parametrize("q", [0.15, 0.40])
def test_a_candidate_no_better_than_the_baseline_is_promoted_at_most_5_percent_of_the_time(n, q):
    assert promotion_rate(n, 0.0, q, 1000, seed=n) <= 0.05


def test_a_true_five_point_gain_on_500_prompts_is_promoted_at_least_80_percent_of_the_time():
    assert promotion_rate(500, 0.05, 0.15, 1000, seed=11) >= 0.80


def test_twenty_cycles_of_no_better_candidates_on_one_eval_set_promote_nothing_in_95_percent_of_chains():
    assert chained_promotions(200, 20, 500, 0.15, seed=5).share_without_promotion >= 0.95
    # and the look correction is what does it: without it, most chains promote a lucky candidate
    assert chained_promotions(200, 20, 500, 0.15, seed=5,
                              cfg=GateConfig(look_correction=False)).share_without_promotion < 0.8
