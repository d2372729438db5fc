"""Recipes load into typed stage configs; bad keys and values are rejected naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftflow.cycle.recipes import DiversityConfig, EvalConfig, RecipeError, RFTConfig, SFTConfig, load_recipe


def test_local_recipes_load_into_typed_configs_with_the_measured_settings():
    sft = load_recipe("local", "sft")
    rft = load_recipe("local", "rft")
    assert isinstance(sft, SFTConfig) and isinstance(rft, RFTConfig)
    assert isinstance(load_recipe("local", "eval"), EvalConfig)
    assert isinstance(load_recipe("local", "diversity"), DiversityConfig)
    assert (sft.max_steps, sft.batch_size, sft.learning_rate, sft.lr_scheduler, sft.warmup_steps, sft.max_length) == \
        (1600, 64, 1.5e-3, "cosine", 80, 160)
    assert (rft.prompts_per_step, rft.num_generations, rft.learning_rate, rft.lr_scheduler, rft.warmup_steps) == \
        (32, 8, 5e-5, "constant_with_warmup", 10)
    assert (rft.beta, rft.loss_type, rft.scale_rewards, rft.max_new_tokens, rft.temperature, rft.max_steps) == \
        (0.0, "dapo", "batch", 24, 1.0, 60)


def test_overrides_apply_including_dotted_nested_keys():
    cfg = load_recipe("local", "rft", {"max_steps": 5, "lora.r": 4, "method": "lora"})
    assert (cfg.max_steps, cfg.lora.r, cfg.lora.alpha, cfg.method) == (5, 4, 32, "lora")


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rft.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_in_a_recipe_names_file_line_and_field(tmp_path):
    path = _recipe(tmp_path, "max_steps: 10\nlearning_rat: 1.0e-4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe("local", "rft", path=path)
    assert f"{path}:2: learning_rat: unknown key" in str(err.value)


def test_out_of_range_value_names_file_line_field_and_value(tmp_path):
    path = _recipe(tmp_path, "max_steps: 10\nlora:\n  r: 0\ntemperature: -1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe("local", "rft", path=path)
    message = str(err.value)
    assert f"{path}:3: lora.r: Input should be greater than or equal to 1; got 0" in message
    assert f"{path}:4: temperature: Input should be greater than 0; got -1" in message


def test_bad_override_is_attributed_to_the_overrides_not_the_file():
    with pytest.raises(RecipeError) as err:
        load_recipe("local", "sft", {"batch_size": 0, "nonsense": 1})
    message = str(err.value)
    assert "sft.yaml (overrides): batch_size: Input should be greater than or equal to 1; got 0" in message
    assert "sft.yaml (overrides): nonsense: unknown key" in message


def test_cross_field_rule_and_wrong_types_are_rejected():
    with pytest.raises(RecipeError, match="num_iterations .4. exceeds max_steps .2."):
        load_recipe("local", "rft", {"max_steps": 2, "num_iterations": 4})
    with pytest.raises(RecipeError, match="loss_type"):
        load_recipe("local", "rft", {"loss_type": "ppo"})


def test_unknown_stage_missing_file_and_non_mapping_are_clear(tmp_path):
    with pytest.raises(RecipeError, match="unknown stage 'train'"):
        load_recipe("local", "train")
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe("local", "rft", path=tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="expected a mapping at the top level"):
        load_recipe("local", "rft", path=_recipe(tmp_path, "- 1\n- 2\n"))
