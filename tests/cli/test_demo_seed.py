"""`python -m rftflow.cli.demo --seed N`: the first cycle starts from tiny:seed=N and both trainers take the seed;
seed 0 leaves the demo's conf exactly as it was."""

from __future__ import annotations

import pytest

from rftflow.cli import demo
from rftflow.cycle.params import parse_params
from rftflow.cycle.recipes import load_recipe


@pytest.mark.parametrize("fast", [False, True])
def test_a_seed_reaches_the_start_model_and_both_trainers(fast):
    (_, first), (_, second) = demo.cycles(fast, 3)
    assert first["base_model"] == "tiny:seed=3" and second["base_model"] == "champion"
    for conf in (first, second):
        p = parse_params(conf)
        assert load_recipe("local", "sft", p.overrides("sft")).seed == 3
        assert load_recipe("local", "rft", p.overrides("rft")).seed == 3
    # the time box is unchanged by the seed
    (_, unseeded), _ = demo.cycles(fast)
    for stage in ("sft", "rft"):
        assert {k: v for k, v in first["recipe_overrides"][stage].items() if k != "seed"} \
            == unseeded["recipe_overrides"][stage]


def test_seed_zero_is_the_default_demo():
    assert demo.cycles(False, 0) == demo.cycles(False) and demo.cycles(True, 0) == demo.cycles(True)
    (_, first), _ = demo.cycles(False)
    assert first["base_model"] == "tiny" and "seed" not in first["recipe_overrides"]["sft"]
