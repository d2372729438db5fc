"""Nova recipes: every shipped recipe renders and validates; overrides are checked before anything is sent."""

from __future__ import annotations

import pytest

from rftflow.backends.aws import recipes
from rftflow.cycle.recipes import RecipeError, RFTConfig

ARN = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rftflow-numeric"
OTHER = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rftflow-exact-match"
RUN_FIELD, ROLLOUT_FIELD = recipes.RUN_LAMBDA, recipes.ROLLOUT_LAMBDA


def render(name: str, overrides: dict | None = None, arn: str | None = ARN, **kw):
    return recipes.render_sagemaker(name, overrides, job_name="rft-cycle-rft-c1-abc-1", reward_lambda_arn=arn, **kw)


def get(body: dict, dotted: str):
    for part in dotted.split("."):
        body = body[part]
    return body


@pytest.mark.parametrize("name", recipes.SAGEMAKER_RECIPES)
def test_every_sagemaker_recipe_renders(name):
    r = render(name)
    assert r.kind in ("sft", "rft", "eval")
    if r.flavour == "training_job":
        assert r.body["run"]["name"] == "rft-cycle-rft-c1-abc-1"
        assert r.job.instance_type in recipes.INSTANCE_TYPES[r.kind]
        assert r.instance_count == r.body["run"]["replicas"]
        assert "job" not in r.body  # our block never reaches the container
    if r.kind == "rft" and r.flavour == "training_job":
        assert r.job.max_runtime_hours >= 72  # sized for RFT, not the SDK's one hour


@pytest.mark.parametrize("name", recipes.BEDROCK_RECIPES)
def test_every_bedrock_recipe_renders(name):
    r = recipes.render_bedrock(name)
    assert r.base_model.startswith("amazon.nova-2-lite" if name != "rft_open_weight" else "openai.gpt-oss")
    assert all(isinstance(v, int | float | str) for v in r.hyper_parameters.values())


def test_both_reward_lambda_fields_get_the_stage_arn():
    body = render("rft_lora").body
    assert get(body, RUN_FIELD) == get(body, ROLLOUT_FIELD) == ARN
    assert "${" not in render("rft_lora").yaml_text()  # the container gets concrete values


def test_one_reward_field_fills_the_other():
    body = render("rft_full", {ROLLOUT_FIELD: OTHER}, arn=None).body
    assert get(body, RUN_FIELD) == OTHER


def test_mismatched_reward_lambda_fields_are_rejected():
    with pytest.raises(RecipeError, match="both reward-Lambda fields must name the same ARN"):
        render("rft_lora", {RUN_FIELD: ARN, ROLLOUT_FIELD: OTHER}, arn=None)
    with pytest.raises(RecipeError, match="the stage's reward Lambda is"):
        render("rft_lora", {RUN_FIELD: OTHER})


def test_rft_without_any_reward_lambda_says_how_to_get_one():
    with pytest.raises(RecipeError, match="rftflow lambda deploy"):
        render("rft_lora", arn=None)


def test_reward_arn_must_be_a_lambda_function_arn():
    with pytest.raises(RecipeError, match="expected a Lambda function ARN"):
        render("rft_lora", arn="arn:aws:iam::123456789012:role/not-a-function")


def test_lora_plus_ratio_in_either_spelling_lands_on_the_recipe_spelling():
    r = render("rft_lora", {"training_config.trainer.peft.lora_tuning.loraplus_lr_ratio": 16.0})
    tuning = r.body["training_config"]["trainer"]["peft"]["lora_tuning"]
    assert tuning == {"alpha": 32, "lora_plus_lr_ratio": 16.0}
    assert any("loraplus_lr_ratio" in note for note in r.notes)
    assert render("sft_lora", {"loraplus_lr_ratio": 8.0}).body["training_config"]["peft"]["lora_tuning"][
        "lora_plus_lr_ratio"] == 8.0


def test_two_spellings_with_different_values_are_rejected():
    with pytest.raises(RecipeError, match="two spellings of the same LoRA\\+ ratio"):
        render("rft_lora", {"loraplus_lr_ratio": 8.0, "lora_plus_lr_ratio": 16.0})


@pytest.mark.parametrize(("overrides", "field", "expected"), [
    ({"learning_rate": 5e-3}, "training_config.trainer.optim_config.lr", "less than or equal to 0.001"),
    ({"num_generations": 32}, "number_generation", "less than or equal to 16"),
    ({"training_config.max_length": 2048}, "training_config.max_length", "greater than or equal to 4096"),
    ({"run.replicas": 3}, "run.replicas", "expected one of 2, 4, 6, 8"),
    ({"job.instance_type": "ml.g5.2xlarge"}, "job.instance_type", "ml.p5.48xlarge"),
    ({"training_config.reasoning_effort": "medium"}, "reasoning_effort", "no 'medium'"),
    ({"training_config.global_batch_size": 256}, "global_batch_size", "LoRA RFT allows 16-128"),
    ({"training_config.trainer.optim_config.lrr": 1e-5}, "optim_config.lrr", "unknown field"),
    ({"job.max_runtime_hours": 30 * 24}, "job.max_runtime_hours", "less than or equal to 672"),
])
def test_out_of_range_overrides_name_the_field_and_the_limit(overrides, field, expected):
    with pytest.raises(RecipeError) as err:
        render("rft_lora", overrides)
    message = str(err.value)
    assert field in message and expected in message
    assert "rft_lora.yaml (with overrides)" in message  # which file


def test_unknown_fields_pass_when_explicitly_allowed():
    r = render("rft_lora", {"training_config.trainer.new_aws_knob": 3, "job.allow_unknown_fields": True})
    assert r.body["training_config"]["trainer"]["new_aws_knob"] == 3


def test_stage_level_names_map_to_recipe_paths_and_local_only_ones_are_noted():
    r = render("rft_lora", {"num_generations": 8, "learning_rate": 2e-6, "max_steps": 40, "seed": 7,
                            "lora": {"alpha": 64}}, local_fields=set(RFTConfig.model_fields))
    tc = r.body["training_config"]
    assert tc["rollout"]["advantage_strategy"]["number_generation"] == 8
    assert tc["trainer"]["optim_config"]["lr"] == 2e-6
    assert tc["trainer"]["max_steps"] == 40
    assert tc["trainer"]["peft"]["lora_tuning"]["alpha"] == 64
    assert any("'seed'" in note and "ignored" in note for note in r.notes)


def test_method_choice_and_consistency():
    assert recipes.choose_sagemaker_recipe("rft", {"method": "full"}) == "rft_full"
    assert recipes.choose_sagemaker_recipe("sft", {}) == "sft_lora"
    assert recipes.choose_sagemaker_recipe("rft", {}, "serverless") == "serverless_rlvr"
    assert recipes.choose_sagemaker_recipe("eval", {"recipe": "eval_rft"}) == "eval_rft"
    with pytest.raises(RecipeError, match="recipe rft_lora is lora"):
        render("rft_lora", {"training_config.trainer.peft.peft_scheme": None})


def test_eval_rft_gets_the_reward_lambda_and_gen_qa_does_not_need_one():
    assert render("eval_rft").body["rl_env"]["reward_lambda_arn"] == ARN
    with pytest.raises(RecipeError, match="rft_eval needs the reward Lambda"):
        render("eval_rft", arn=None)
    assert "rl_env" not in render("eval_gen_qa", arn=None).body


def test_model_path_is_checked():
    assert render("rft_lora", model="s3://escrow/ckpt/step_4").body["run"]["model_name_or_path"] == "s3://escrow/ckpt/step_4"
    with pytest.raises(RecipeError, match="run.model_name_or_path"):
        render("rft_lora", model="tiny")


def test_serverless_rlvr_needs_an_evaluator_or_the_lambda():
    with pytest.raises(RecipeError, match="serverless.evaluator_arn"):
        render("serverless_rlvr", arn=None)
    assert render("serverless_rlvr").flavour == "serverless"


def test_bedrock_hyperparameters_are_typed_and_in_range():
    r = recipes.render_bedrock("rft", {"num_generations": 8, "learning_rate": 2e-5, "max_steps": 10},
                               local_fields=set(RFTConfig.model_fields))
    assert r.hyper_parameters["trainingSamplePerPrompt"] == 8
    assert r.hyper_parameters["learningRate"] == 2e-5
    assert "reasoningEffort" not in r.hyper_parameters  # null means: leave it out
    assert any("'max_steps'" in note for note in r.notes)
    with pytest.raises(RecipeError, match=r"hyper_parameters.learningRate: .*less than or equal to 0.001; got 0.1"):
        recipes.render_bedrock("rft", {"learning_rate": 0.1})
    with pytest.raises(RecipeError, match="hyper_parameters.trainingSamplePerPrompt"):
        recipes.render_bedrock("rft", {"num_generations": 1})
    with pytest.raises(RecipeError, match="hyper_parameters.epochCount"):
        recipes.render_bedrock("sft", {"epochs": 6})


# --------------------------------------------------------------------------- instance types, template values

def test_rft_instance_types_follow_the_recipe_metadata():
    # aws/sagemaker-hyperpod-recipes launcher/recipe_templatization/nova/nova_metadata.json lists, for
    # nova_lite_v2_smtj_p5_p5en_gpu_{lora_,}rft, instance_types ['ml.p5.48xlarge', 'ml.p5en.48xlarge']; no p5e.
    assert render("rft_lora", {"job.instance_type": "ml.p5en.48xlarge"}).job.instance_type == "ml.p5en.48xlarge"
    with pytest.raises(RecipeError, match="job.instance_type: expected one of ml.p5.48xlarge, ml.p5en.48xlarge"):
        render("rft_lora", {"job.instance_type": "ml.p5e.48xlarge"})
    with pytest.raises(RecipeError, match="job.instance_type"):
        render("rft_full", {"job.instance_type": "ml.p5e.48xlarge"})


def test_full_rank_rft_on_p5en_is_allowed_with_the_guide_s_warning():
    # The Nova 2 user guide names ml.p5.48xlarge for full-rank RFT; the metadata file also lists p5en.
    assert not any("full-rank RFT" in n for n in render("rft_full").notes)
    r = render("rft_full", {"job.instance_type": "ml.p5en.48xlarge"})
    assert any("full-rank RFT" in n and "ml.p5.48xlarge" in n for n in r.notes)


def test_sft_recipes_keep_the_template_adam_beta2():
    # recipes_collection/recipes/fine-tuning/nova/nova_2_0/nova_lite/SFT/nova_lite_2_0_p5_gpu_{lora_,}sft.yaml:
    # optim_config.adam_beta2: 0.95
    for name in ("sft_lora", "sft_full"):
        assert get(render(name, arn=None).body, "training_config.optim_config.adam_beta2") == 0.95


def test_peft_scheme_null_string_means_full_rank():
    # nova_lite_2_0_p5_gpu_sft.yaml writes full rank as `peft_scheme: "null"` (a string); ours use YAML null.
    r = render("sft_full", {"training_config.peft.peft_scheme": "null"}, arn=None)
    assert r.method == "full" and get(r.body, "training_config.peft.peft_scheme") == "null"
    r = render("rft_full", {"training_config.trainer.peft.peft_scheme": "null"})
    assert r.method == "full"
    with pytest.raises(RecipeError, match="recipe sft_lora is lora"):
        render("sft_lora", {"training_config.peft.peft_scheme": "null"}, arn=None)
    with pytest.raises(RecipeError, match="peft_scheme"):
        render("sft_full", {"training_config.peft.peft_scheme": "qlora"}, arn=None)
