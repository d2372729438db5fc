"""Nova recipes for SageMaker and Bedrock: load from include/recipes/, apply overrides, validate, render.

Validation runs before anything is sent: ranges and allowed values from the public recipes and the Bedrock
API, instance types and counts, and the two reward-Lambda fields of an RFT recipe holding one ARN.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rftflow.cycle.recipes import RECIPES_DIR, RecipeError, deep_merge, load_yaml

log = logging.getLogger(__name__)

SAGEMAKER_RECIPES = ("sft_lora", "sft_full", "rft_lora", "rft_full", "eval_gen_qa", "eval_rft",
                     "serverless_rlvr", "serverless_sft")
BEDROCK_RECIPES = ("rft", "sft", "rft_open_weight")

LAMBDA_ARN = re.compile(
    r"arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{2}(-gov)?-[a-z]+-\d{1}:\d{12}:function:[a-zA-Z0-9-_.]+"
    r"(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
LAMBDA_NAME_PREFIX = "SageMaker-"
_UNSET = ("", None)

# The two spellings of LoRA+'s learning-rate ratio: HyperPod RFT recipes say `loraplus_lr_ratio`, the
# Training Job and SFT recipes `lora_plus_lr_ratio`. Our SageMaker recipes are Training Job recipes, so
# overrides in either spelling land on `lora_plus_lr_ratio`.
LORA_PLUS_SPELLINGS = {"loraplus_lr_ratio": "lora_plus_lr_ratio"}

# Stage-level names (the local backend's config fields) -> where they live in each recipe family.
ALIASES: dict[str, dict[str, str]] = {
    "rft": {
        "num_generations": "training_config.rollout.advantage_strategy.number_generation",
        "learning_rate": "training_config.trainer.optim_config.lr",
        "max_steps": "training_config.trainer.max_steps",
        "save_steps": "training_config.trainer.save_steps",
        "max_new_tokens": "training_config.rollout.generator.max_new_tokens",
        "temperature": "training_config.rollout.generator.temperature",
        "beta": "training_config.trainer.kl_loss_coef",
        "prompts_per_step": "training_config.global_batch_size",
        "max_length": "training_config.max_length",
        "weight_decay": "training_config.trainer.optim_config.weight_decay",
        "lora.alpha": "training_config.trainer.peft.lora_tuning.alpha",
        "lora_plus_lr_ratio": "training_config.trainer.peft.lora_tuning.lora_plus_lr_ratio",
    },
    "sft": {
        "learning_rate": "training_config.optim_config.lr",
        "max_steps": "training_config.max_steps",
        "save_steps": "training_config.save_steps",
        "batch_size": "training_config.global_batch_size",
        "warmup_steps": "training_config.lr_scheduler.warmup_steps",
        "max_length": "training_config.max_length",
        "weight_decay": "training_config.optim_config.weight_decay",
        "lora.alpha": "training_config.peft.lora_tuning.alpha",
        "lora_plus_lr_ratio": "training_config.peft.lora_tuning.lora_plus_lr_ratio",
    },
    "eval": {
        "max_new_tokens": "inference.max_new_tokens",
        "temperature": "inference.temperature",
        "top_p": "inference.top_p",
        "top_k": "inference.top_k",
    },
    "bedrock_rft": {
        "num_generations": "hyper_parameters.trainingSamplePerPrompt",
        "learning_rate": "hyper_parameters.learningRate",
        "prompts_per_step": "hyper_parameters.batchSize",
        "batch_size": "hyper_parameters.batchSize",
        "max_new_tokens": "hyper_parameters.inferenceMaxTokens",
        "epochs": "hyper_parameters.epochCount",
    },
    "bedrock_rft_open_weight": {
        "prompts_per_step": "hyper_parameters.batch_size",
        "batch_size": "hyper_parameters.batch_size",
        "epochs": "hyper_parameters.n_epochs",
    },
    "bedrock_sft": {
        "learning_rate": "hyper_parameters.learningRate",
        "warmup_steps": "hyper_parameters.learningRateWarmupSteps",
        "epochs": "hyper_parameters.epochCount",
    },
}

# Keys that choose a recipe rather than set a field in it.
SELECTOR_KEYS = ("method", "recipe", "flavour")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- job settings (ours)


class JobSettings(_Model):
    """How the job runs on AWS; the `job` block of a recipe file, never sent to the container."""

    kind: Literal["sft", "rft", "eval"]
    flavour: Literal["training_job", "serverless"] = "training_job"
    instance_type: str | None = None
    instance_count: int | None = Field(None, ge=1, description="Defaults to run.replicas.")
    max_runtime_hours: float = Field(24.0, gt=0, le=28 * 24, description="SageMaker caps a job at 28 days.")
    volume_size_gb: int = Field(200, ge=1, le=16384)
    image_uri: str | None = None
    tags: dict[str, str] = {}
    allow_unknown_fields: bool = Field(False, description="Send recipe fields this version does not know.")


class BedrockJobSettings(_Model):
    max_wait_hours: float = Field(96.0, gt=0, le=30 * 24)
    send_validation_data: bool = False
    tags: dict[str, str] = {}


# --------------------------------------------------------------------------- SageMaker recipe bodies


class RunSection(_Model):
    name: str = ""
    model_type: str
    model_name_or_path: str
    data_s3_path: str | None = ""
    validation_data_s3_path: str | None = None
    validation_data_s3_path_list: dict[str, str] | None = None
    output_s3_path: str | None = None
    replicas: int = Field(ge=1)
    generation_replicas: int | None = Field(None, ge=1)
    reward_lambda_arn: str | None = None
    model_package_group: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_name: str | None = None
    mlflow_run_name: str | None = None

    @field_validator("model_type")
    @classmethod
    def _nova(cls, value: str) -> str:
        if "amazon.nova" not in value:
            raise ValueError(f"expected a Nova model type such as amazon.nova-2-lite-v1:0:256k; got {value!r}")
        return value


class OptimConfig(_Model):
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.95, ge=0.0, lt=1.0)


class RftLoraTuning(_Model):
    alpha: Literal[16, 32, 64] = 32
    lora_plus_lr_ratio: float = Field(64.0, ge=0.0, le=100.0)


def _null_scheme(value: Any) -> Any:
    """AWS's templates write full rank as the string "null" (nova_lite_2_0_p5_gpu_sft.yaml: `peft_scheme: "null"`),
    our recipes as YAML null; both mean no adapter."""
    return None if isinstance(value, str) and value.strip().lower() in ("null", "none", "") else value


class RftPeft(_Model):
    peft_scheme: Literal["lora"] | None = None
    lora_tuning: RftLoraTuning | None = None

    @field_validator("peft_scheme", mode="before")
    @classmethod
    def _scheme(cls, value: Any) -> Any:
        return _null_scheme(value)


class RftOptim(OptimConfig):
    lr: float = Field(ge=1e-7, le=1e-3, description="SageMaker Training Job RFT range")


class RftTrainer(_Model):
    max_steps: int = Field(ge=5, le=100_000)
    save_steps: int | str | None = Field(None, description="0-100000, or an interpolation such as ${max_steps}")
    save_top_k: int | None = Field(None, ge=0)
    test_steps: int | None = Field(None, ge=0)
    refit_freq: int | None = Field(None, ge=1)
    clip_ratio_high: float | None = Field(None, ge=0.0, le=10.0)
    ent_coeff: float = Field(0.0, ge=0.0, le=1.0)
    loss_scale: float | None = Field(None, gt=0.0)
    kl_loss_coef: float | None = Field(None, ge=0.0, le=10.0)
    optim_config: RftOptim
    peft: RftPeft = RftPeft()

    @field_validator("save_steps")
    @classmethod
    def _save_steps(cls, value: Any) -> Any:
        if isinstance(value, int) and not 0 <= value <= 100_000:
            raise ValueError(f"expected 0-100000; got {value}")
        return value


class RolloutStrategy(_Model):
    type: Literal["off_policy_async"] = "off_policy_async"
    age_tolerance: int = Field(2, ge=0, le=64)


class AdvantageStrategy(_Model):
    number_generation: int = Field(ge=2, le=16, description="rollouts per prompt")


class Generator(_Model):
    max_new_tokens: int = Field(ge=1, le=32768)
    set_random_seed: bool = True
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_k: int = Field(0, ge=-1)


class ApiEndpoint(_Model):
    lambda_arn: str | None = None
    lambda_concurrency_limit: int = Field(12, ge=1, le=1000)
    lambda_batch_size: int | None = Field(None, ge=1, le=1024)


class Rewards(_Model):
    preset_reward_function: Literal["exact_match", "prime_math", "prime_code"] | None = None
    api_endpoint: ApiEndpoint = ApiEndpoint()


class Rollout(_Model):
    rollout_strategy: RolloutStrategy | None = None
    advantage_strategy: AdvantageStrategy
    generator: Generator
    rewards: Rewards = Rewards()


class DataSection(_Model):
    shuffle: bool = False


class RftTrainingConfig(_Model):
    max_length: int = Field(ge=4096, le=32768)
    global_batch_size: Literal[16, 32, 64, 128, 256]
    reasoning_effort: Literal["low", "high"] | None = None
    data: DataSection | None = None
    rollout: Rollout
    trainer: RftTrainer

    @field_validator("reasoning_effort", mode="before")
    @classmethod
    def _no_medium(cls, value: Any) -> Any:
        if value == "medium":
            raise ValueError("SageMaker RFT has no 'medium' reasoning effort; expected low, high or null")
        return value


class RftRecipe(_Model):
    run: RunSection
    training_config: RftTrainingConfig


class SftLoraTuning(_Model):
    alpha: Literal[32, 64, 96, 128, 160, 192] = 64
    lora_plus_lr_ratio: float = Field(64.0, ge=0.0, le=100.0)


class SftPeft(_Model):
    peft_scheme: Literal["lora"] | None = None
    lora_tuning: SftLoraTuning | None = None

    @field_validator("peft_scheme", mode="before")
    @classmethod
    def _scheme(cls, value: Any) -> Any:
        return _null_scheme(value)


class LrScheduler(_Model):
    warmup_steps: int = Field(15, ge=0, le=100)
    min_lr: float = Field(1e-6, ge=0.0)


class ModelImportance(_Model):
    fine_tuned_model: float = Field(1.0, ge=0.0, le=1.0)


class SftOptim(OptimConfig):
    lr: float = Field(gt=0.0, le=1e-3)


class SftTrainingConfig(_Model):
    max_steps: int = Field(ge=4, le=100_000)
    save_steps: int | str | None = None
    save_top_k: int | None = Field(None, ge=0)
    max_length: Literal[8192, 16384, 32768, 65536]
    global_batch_size: Literal[32, 64, 128, 256]
    reasoning_enabled: bool = False
    val_check_interval: int | float | None = None
    limit_val_batches: int | float | None = None
    lr_scheduler: LrScheduler = LrScheduler()
    optim_config: SftOptim
    peft: SftPeft = SftPeft()
    model_importance_score: ModelImportance | None = None


class SftRecipe(_Model):
    run: RunSection
    training_config: SftTrainingConfig


class EvaluationSection(_Model):
    task: Literal["gen_qa", "rft_eval", "mmlu", "mmlu_pro", "bbh", "gpqa", "math", "strong_reject", "ifeval",
                  "mmmu", "llm_judge", "rubric_llm_judge"]
    strategy: Literal["zs_cot", "zs", "fs_cot", "gen_qa", "judge", "rft_eval"]
    metric: str = "all"
    subtask: str | None = None


class InferenceSection(_Model):
    max_new_tokens: int = Field(ge=1, le=32768)
    top_k: int = Field(-1, ge=-1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_logprobs: int = Field(0, ge=0, le=20)
    reasoning_effort: Literal["low", "high"] | None = None


class RlEnv(_Model):
    reward_lambda_arn: str | None = None


class Processor(_Model):
    preset_reward_function: str | None = ""
    lambda_arn: str | None = None
    lambda_type: Literal["rft", "custom_metrics"] = "rft"
    preprocessing: dict[str, Any] | None = None
    postprocessing: dict[str, Any] | None = None
    aggregation: str | None = "average"


class EvalRecipe(_Model):
    run: RunSection
    evaluation: EvaluationSection
    inference: InferenceSection
    rl_env: RlEnv | None = None
    processor: Processor | None = None


class ServerlessSection(_Model):
    """A serverless customization job, in the terms of SageMaker Python SDK v3's trainers."""

    base_model_name: str | None = Field(None, description="SageMakerPublicHub model name")
    base_model_arn: str | None = Field(None, description="or its hub-content ARN (EULA then counts as accepted)")
    customization_technique: Literal["SFT", "DPO", "RLVR", "RLAIF"]
    peft: Literal["LORA"] | None = "LORA"
    accept_eula: bool = Field(False, description="required true for a gated hub model given by name")
    evaluator_arn: str | None = Field(None, description="hub evaluator ARN; empty = register the reward Lambda")
    model_package_group: str = Field("rftflow", min_length=1, max_length=256,
                                     description="name or ARN; the trained model is registered there")
    sequence_length: Literal["1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K"] | None = None


class ServerlessRecipe(_Model):
    serverless: ServerlessSection
    # overrides of the hub recipe's options (its defaults are always sent, as the SDK sends them)
    hyperparameters: dict[str, str | int | float | bool] = {}


# Instance types the Nova 2 Lite Training Job recipes allow, per stage and method. Source:
# aws/sagemaker-hyperpod-recipes launcher/recipe_templatization/nova/nova_metadata.json (RFT: ml.p5.48xlarge and
# ml.p5en.48xlarge; SFT adds ml.p4d.24xlarge; eval ml.p5.48xlarge and ml.p4d.24xlarge). p5e is in no source's list
# (only a doc comment mentioned it) and is refused. For full-rank RFT the Nova 2 user guide names ml.p5.48xlarge
# alone while nova_metadata.json also lists p5en: both are accepted, p5en with a warning (FULL_RANK_RFT_NOTE).
INSTANCE_TYPES: dict[str, tuple[str, ...]] = {
    "rft": ("ml.p5.48xlarge", "ml.p5en.48xlarge"),
    "sft": ("ml.p5.48xlarge", "ml.p5en.48xlarge", "ml.p4d.24xlarge"),
    "eval": ("ml.p5.48xlarge", "ml.p4d.24xlarge"),
}
FULL_RANK_RFT_TYPE = "ml.p5.48xlarge"
FULL_RANK_RFT_NOTE = ("full-rank RFT: the Nova 2 user guide lists only ml.p5.48xlarge (nova_metadata.json also "
                      "lists ml.p5en.48xlarge); if the job fails for lack of memory, use ml.p5.48xlarge")
INSTANCE_COUNTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("rft", "lora"): (2, 4, 6, 8),
    ("rft", "full"): (2, 4, 6, 8),
    ("sft", "lora"): (1, 4, 8, 16, 32),
    ("sft", "full"): (4, 8, 16, 32),
    ("eval", "-"): (1, 2, 4, 8, 16),
}

# --------------------------------------------------------------------------- Bedrock


class BedrockRftHyperParameters(_Model):
    """RFTHyperParameters as the Bedrock API types them: native numbers, ranges from the API reference."""

    epochCount: int = Field(1, ge=1, le=50)
    batchSize: int = Field(64, ge=16, le=512)
    learningRate: float = Field(1e-5, ge=1e-7, le=1e-3)
    maxPromptLength: int | None = Field(None, ge=1, le=131072)
    trainingSamplePerPrompt: int = Field(4, ge=2, le=16)
    inferenceMaxTokens: int | None = Field(None, ge=1, le=131072)
    reasoningEffort: Literal["low", "medium", "high"] | None = None
    evalInterval: int | None = Field(None, ge=1, le=100)


class OpenWeightRftHyperParameters(_Model):
    """method.reinforcement.hyperparameters of Bedrock's OpenAI-compatible fine-tuning API. Bedrock documents
    n_epochs, batch_size and learning_rate_multiplier; the others are OpenAI's reinforcement-method fields,
    sent only when set."""

    n_epochs: int = Field(1, ge=1, le=50)
    batch_size: int = Field(4, ge=1, le=512)
    learning_rate_multiplier: float = Field(1.0, gt=0, le=10)
    eval_interval: int | None = Field(None, ge=1)
    eval_samples: int | None = Field(None, ge=1)
    compute_multiplier: float | None = Field(None, gt=0)
    reasoning_effort: Literal["low", "medium", "high"] | None = None


class BedrockSftHyperParameters(_Model):
    """Nova fine-tuning hyperparameters on Bedrock (sent as strings, as the API's map requires)."""

    epochCount: int = Field(2, ge=1, le=5)
    learningRate: float = Field(1e-5, ge=1e-6, le=1e-4)
    learningRateWarmupSteps: int = Field(10, ge=0, le=100)


class BedrockRecipe(_Model):
    job: BedrockJobSettings = BedrockJobSettings()
    base_model: str = Field(min_length=1)
    hyper_parameters: dict[str, Any]


# --------------------------------------------------------------------------- rendering


@dataclass
class RenderedRecipe:
    """A validated recipe: `body` is what the container (or the API) gets, `job` how the job runs."""

    name: str
    path: str
    kind: str
    method: str
    flavour: str
    body: dict[str, Any]
    job: JobSettings
    notes: list[str] = field(default_factory=list)  # overrides ignored or renamed, for the manifest

    @property
    def instance_count(self) -> int:
        return int(self.job.instance_count or self.body.get("run", {}).get("replicas") or 1)

    def yaml_text(self) -> str:
        import yaml

        return yaml.safe_dump(self.body, sort_keys=False)


@dataclass
class RenderedBedrock:
    name: str
    path: str
    customization_type: str
    base_model: str
    hyper_parameters: dict[str, Any]
    job: BedrockJobSettings
    notes: list[str] = field(default_factory=list)


def recipe_path(backend: str, name: str) -> Path:
    known = SAGEMAKER_RECIPES if backend == "sagemaker" else BEDROCK_RECIPES
    if name not in known:
        raise RecipeError(f"recipe {name!r}: expected one of {', '.join(known)} for backend {backend}")
    return RECIPES_DIR / backend / f"{name}.yaml"


def choose_sagemaker_recipe(stage: str, overrides: dict[str, Any] | None, flavour: str = "training_job") -> str:
    """Which recipe a stage uses: `recipe` override, else by stage, method (lora|full) and flavour."""
    overrides = overrides or {}
    if overrides.get("recipe"):
        return str(overrides["recipe"])
    flavour = str(overrides.get("flavour") or flavour)
    method = str(overrides.get("method") or "lora")
    if method == "auto":  # LoRA above 1.5B parameters (rftflow.backends.local.gpu.training_method): every Nova model
        method = "lora"
    if method not in ("lora", "full"):
        raise RecipeError(f"overrides: method: expected auto, lora or full; got {method!r}")
    if stage in ("eval", "diversity"):
        return "eval_gen_qa"
    if flavour == "serverless":
        return {"rft": "serverless_rlvr", "sft": "serverless_sft"}[stage]
    return f"{stage}_{method}"


def split_overrides(overrides: dict[str, Any] | None, family: str,
                    local_fields: set[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Translate stage-level override names into recipe paths; drop the local-only ones (with a note).

    Returns (recipe overrides, notes). Keys that are neither an alias, a local-only field nor a selector
    pass through as recipe paths and are validated there.
    """
    aliases = ALIASES.get(family, {})
    out: dict[str, Any] = {}
    notes: list[str] = []
    respelled = _respell(_flatten_aliased(overrides or {}, aliases), notes)
    for key, value in respelled.items():
        if key in SELECTOR_KEYS:
            continue
        if key in aliases:
            out[aliases[key]] = value
        elif local_fields and key.split(".", 1)[0] in local_fields:
            notes.append(f"override {key!r} has no equivalent in the {family} recipe; ignored")
        else:
            out[key] = value
    return out, notes


def _flatten_aliased(overrides: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """Flatten only the nested dicts that address an alias such as {"lora": {"alpha": 32}}."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        nested_alias = isinstance(value, dict) and any(a.startswith(f"{key}.") for a in aliases)
        if nested_alias:
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    return flat


def _respell(tree: Any, notes: list[str]) -> Any:
    """Rewrite `loraplus_lr_ratio` to `lora_plus_lr_ratio` anywhere (keys and dotted paths)."""
    if not isinstance(tree, dict):
        return tree
    out: dict[str, Any] = {}
    for key, value in tree.items():
        parts = key.split(".")
        renamed = ".".join(LORA_PLUS_SPELLINGS.get(p, p) for p in parts)
        value = _respell(value, notes)
        if renamed != key:
            notes.append(f"{key!r} written as {renamed!r} (the spelling of SageMaker Training Job recipes)")
            if renamed in tree and tree[renamed] != value:
                raise RecipeError(f"overrides: {key!r} ({value!r}) and {renamed!r} ({tree[renamed]!r}) are two "
                                  "spellings of the same LoRA+ ratio with different values; set one")
        out[renamed] = value
    return out


def render_sagemaker(name: str, overrides: dict[str, Any] | None = None, *, job_name: str,
                     model: str | None = None, reward_lambda_arn: str | None = None,
                     path: str | Path | None = None, local_fields: set[str] | None = None) -> RenderedRecipe:
    """Load a SageMaker recipe, apply overrides, fill name/model/reward ARN, validate; raise RecipeError."""
    path = Path(path) if path else recipe_path("sagemaker", name)
    data = _respell(load_yaml(path), [])
    kind = str(data.get("job", {}).get("kind", name.split("_", 1)[0]))
    family = "eval" if kind == "eval" else kind
    recipe_overrides, notes = split_overrides(overrides, family, local_fields)
    merged = deep_merge(data, recipe_overrides)
    source = f"{path} (with overrides)" if recipe_overrides else str(path)

    job_raw = merged.pop("job", {})
    job = _validate(JobSettings, job_raw, source, "job.")
    body = copy.deepcopy(merged)
    problems: list[str] = []
    warnings: list[str] = []

    if job.flavour == "serverless":
        recipe = _validate(ServerlessRecipe, body, source, "", allow_unknown=job.allow_unknown_fields)
        if recipe.serverless.customization_technique in ("RLVR", "RLAIF") and not (
                recipe.serverless.evaluator_arn or reward_lambda_arn):
            problems.append(f"{source}: serverless.evaluator_arn: an RLVR job needs the reward Lambda ARN or an "
                            "evaluator ARN; got neither")
        if not (recipe.serverless.base_model_arn or recipe.serverless.base_model_name):
            problems.append(f"{source}: serverless.base_model_arn: set it or serverless.base_model_name")
        if reward_lambda_arn:
            _check_lambda_arn(source, "reward Lambda", reward_lambda_arn, problems, warnings)
        method = "lora" if recipe.serverless.peft else "full"
        _raise(problems)
        return RenderedRecipe(name, str(path), kind, method, job.flavour, body, job,
                              list(dict.fromkeys(notes + warnings)))

    run = body.setdefault("run", {})
    run["name"] = job_name
    if model:
        run["model_name_or_path"] = model
    if kind == "rft":
        _fill_reward_arns(body, reward_lambda_arn, source, problems)
    elif body.get("evaluation", {}).get("task") == "rft_eval":
        env = body.setdefault("rl_env", {})
        given = env.get("reward_lambda_arn")
        if given in _UNSET or _is_interpolation(given):
            env["reward_lambda_arn"] = reward_lambda_arn or ""
        elif reward_lambda_arn and given != reward_lambda_arn:
            problems.append(f"{source}: rl_env.reward_lambda_arn is {given!r} but the stage's reward Lambda is "
                            f"{reward_lambda_arn!r}; they must be the same")
        if not env["reward_lambda_arn"]:
            problems.append(f"{source}: rl_env.reward_lambda_arn: rft_eval needs the reward Lambda ARN; got none")

    model_cls = {"rft": RftRecipe, "sft": SftRecipe, "eval": EvalRecipe}[kind]
    _raise(problems)
    _validate(model_cls, body, source, "", allow_unknown=job.allow_unknown_fields)

    method = _method_of(body, kind)
    expected_method = name.rsplit("_", 1)[-1] if name.endswith(("_lora", "_full")) else method
    if method != expected_method:
        problems.append(f"{source}: training_config peft.peft_scheme: recipe {name} is {expected_method}; the "
                        f"overrides make it {method} (choose the {kind}_{method} recipe instead)")
    _check_model_path(source, run.get("model_name_or_path"), problems)
    for where, arn in _lambda_fields(body):
        _check_lambda_arn(source, where, arn, problems, warnings)
    if kind == "rft" and method == "lora" and body["training_config"]["global_batch_size"] > 128:
        problems.append(f"{source}: training_config.global_batch_size: LoRA RFT allows 16-128; got "
                        f"{body['training_config']['global_batch_size']}")
    _check_instances(source, kind, method, job, int(run.get("replicas", 0)), problems)
    if kind == "rft" and method == "full" and job.instance_type in INSTANCE_TYPES["rft"] \
            and job.instance_type != FULL_RANK_RFT_TYPE:
        warnings.append(f"{source}: job.instance_type {job.instance_type}: {FULL_RANK_RFT_NOTE}")
    _raise(problems)
    for warning in warnings:
        log.warning("%s", warning)
    return RenderedRecipe(name, str(path), kind, method, job.flavour, body, job, list(dict.fromkeys(notes + warnings)))


def render_bedrock(name: str, overrides: dict[str, Any] | None = None, *, path: str | Path | None = None,
                   local_fields: set[str] | None = None) -> RenderedBedrock:
    """Load include/recipes/bedrock/{rft,sft}.yaml with overrides; hyperparameters typed and in range."""
    path = Path(path) if path else recipe_path("bedrock", name)
    recipe_overrides, notes = split_overrides(overrides, f"bedrock_{name}", local_fields)
    merged = deep_merge(load_yaml(path), recipe_overrides)
    source = f"{path} (with overrides)" if recipe_overrides else str(path)
    recipe = _validate(BedrockRecipe, merged, source, "")
    hp_model = {"rft": BedrockRftHyperParameters, "rft_open_weight": OpenWeightRftHyperParameters}.get(
        name, BedrockSftHyperParameters)
    hyper = _validate(hp_model, recipe.hyper_parameters, source, "hyper_parameters.")
    values = {k: v for k, v in hyper.model_dump().items() if v is not None}
    customization = "FINE_TUNING" if name == "sft" else "REINFORCEMENT_FINE_TUNING"
    return RenderedBedrock(name, str(path), customization, recipe.base_model, values, recipe.job, notes)


# --------------------------------------------------------------------------- checks


def _validate(model: type[BaseModel], data: Any, source: str, prefix: str, allow_unknown: bool = False) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [e for e in err.errors() if not (allow_unknown and e["type"] == "extra_forbidden")]
        if not errors:
            return model.model_construct(**data)
        lines = []
        for e in errors:
            where = prefix + ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "extra_forbidden":
                lines.append(f"{source}: {where}: unknown field (a typo? if AWS added it, set "
                             "job.allow_unknown_fields: true)")
            elif e["type"] == "missing":
                lines.append(f"{source}: {where}: required field missing")
            else:
                lines.append(f"{source}: {where}: {e['msg']}; got {e.get('input')!r}")
        raise RecipeError("\n".join(lines)) from None


def _raise(problems: list[str]) -> None:
    if problems:
        raise RecipeError("\n".join(problems))


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${")


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


RUN_LAMBDA = "run.reward_lambda_arn"
ROLLOUT_LAMBDA = "training_config.rollout.rewards.api_endpoint.lambda_arn"


def _fill_reward_arns(body: dict[str, Any], stage_arn: str | None, source: str, problems: list[str]) -> None:
    """Both reward-Lambda fields end up holding one concrete ARN: fill one from the other, reject a mismatch."""
    values = {}
    for where in (RUN_LAMBDA, ROLLOUT_LAMBDA):
        value = _get(body, where)
        values[where] = None if value in _UNSET or _is_interpolation(value) else value
    given = {v for v in values.values() if v}
    if len(given) > 1:
        problems.append(f"{source}: {RUN_LAMBDA} is {values[RUN_LAMBDA]!r} but {ROLLOUT_LAMBDA} is "
                        f"{values[ROLLOUT_LAMBDA]!r}; both reward-Lambda fields must name the same ARN")
        return
    if given and stage_arn and stage_arn not in given:
        problems.append(f"{source}: {RUN_LAMBDA}/{ROLLOUT_LAMBDA} name {next(iter(given))!r} but the stage's "
                        f"reward Lambda is {stage_arn!r}; they must be the same")
        return
    arn = next(iter(given)) if given else stage_arn
    if not arn:
        problems.append(f"{source}: {RUN_LAMBDA}: RFT needs the reward Lambda ARN (deploy one with "
                        "`rftflow lambda deploy`); got none")
        return
    _set(body, RUN_LAMBDA, arn)
    _set(body, ROLLOUT_LAMBDA, arn)


def _lambda_fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    fields = []
    for where in (RUN_LAMBDA, ROLLOUT_LAMBDA, "rl_env.reward_lambda_arn", "processor.lambda_arn"):
        value = _get(body, where)
        if value not in _UNSET and not _is_interpolation(value):
            fields.append((where, value))
    return fields


def _check_lambda_arn(source: str, where: str, arn: str, problems: list[str], warnings: list[str]) -> None:
    if not LAMBDA_ARN.fullmatch(arn):
        problems.append(f"{source}: {where}: expected a Lambda function ARN "
                        f"(arn:aws:lambda:<region>:<account>:function:<name>); got {arn!r}")
        return
    function = arn.split(":function:", 1)[1].split(":", 1)[0]
    if not function.startswith(LAMBDA_NAME_PREFIX):
        warnings.append(f"{source}: {where}: function {function!r} does not start with {LAMBDA_NAME_PREFIX!r}; "
                        "AWS's Nova samples require that prefix (managed policies are scoped to it)")


def _check_model_path(source: str, model: Any, problems: list[str]) -> None:
    if not isinstance(model, str) or not model:
        problems.append(f"{source}: run.model_name_or_path: required; got {model!r}")
    elif model.startswith("s3://") or model.startswith("arn:aws") or "/" in model:
        return
    else:
        problems.append(f"{source}: run.model_name_or_path: expected a Nova model path such as "
                        f"nova-lite-2/prod, an s3:// checkpoint or a model package ARN; got {model!r}")


def _method_of(body: dict[str, Any], kind: str) -> str:
    if kind == "eval":
        return "-"
    peft = _get(body, "training_config.trainer.peft" if kind == "rft" else "training_config.peft") or {}
    return "lora" if peft.get("peft_scheme") == "lora" else "full"


def _check_instances(source: str, kind: str, method: str, job: JobSettings, replicas: int,
                     problems: list[str]) -> None:
    allowed_types = INSTANCE_TYPES[kind]
    if job.instance_type not in allowed_types:
        problems.append(f"{source}: job.instance_type: expected one of {', '.join(allowed_types)} for {kind}; "
                        f"got {job.instance_type!r}")
    count = job.instance_count or replicas
    if job.instance_count and replicas and job.instance_count != replicas:
        problems.append(f"{source}: job.instance_count ({job.instance_count}) and run.replicas ({replicas}) "
                        "differ; the container trains on run.replicas instances, so set that one")
    allowed = INSTANCE_COUNTS[(kind, method)]
    if count not in allowed:
        label = f"{kind} ({method})" if method != "-" else kind
        problems.append(f"{source}: run.replicas: expected one of {', '.join(map(str, allowed))} instances for "
                        f"{label}; got {count}")
