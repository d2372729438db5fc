"""The demo's two cycles are valid rft_cycle confs, and its time-boxed recipe fits the local recipes."""

from __future__ import annotations

import pytest

from rftflow.cli import demo
from rftflow.cycle.params import parse_params
from rftflow.cycle.recipes import load_recipe


@pytest.mark.parametrize("fast", [False, True])
def test_demo_cycles_are_valid_confs_with_valid_recipe_overrides(fast):
    (_, first), (_, second) = demo.cycles(fast)
    assert first["base_model"] == "tiny" and second["base_model"] == "champion"
    for conf in (first, second):
        p = parse_params(conf)
        assert p.model_family == demo.FAMILY and p.sft_policy == "auto"
        for stage in ("sft", "rft", "eval"):
            load_recipe("local", stage, p.overrides(stage))  # raises on an unknown key or a bad value


def test_the_full_demo_time_boxes_training_but_leaves_the_recipes_alone():
    (_, first), _ = demo.cycles(False)
    p = parse_params(first)
    for stage in ("sft", "rft"):
        boxed, recipe = load_recipe("local", stage, p.overrides(stage)), load_recipe("local", stage)
        assert 0 < boxed.max_steps < recipe.max_steps, stage
