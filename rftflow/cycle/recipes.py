"""Typed configuration for each stage, loaded from recipe YAML with caller overrides.

One pydantic model per stage; unknown keys and out-of-range values are rejected with a message that
names the recipe file and the field, so the inside of the pipeline can trust what it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RECIPES_DIR = Path(__file__).resolve().parents[2] / "include" / "recipes"


class RecipeError(ValueError):
    """A recipe or override that does not fit its stage's configuration."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _processes(value: Any) -> Any:
    """One clear message for `processes` instead of one per member of its union."""
    if isinstance(value, str) and value.strip().isdigit():  # a form or CLI override
        value = int(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64):
        return value
    raise ValueError("expected auto or a whole number of processes from 1 to 64")


class _Sampler(_Strict):
    """The engine eval and diversity sample with (HF generate on CPU)."""

    vllm: Literal["auto", "on", "off"] = Field(
        "auto", description="Sample with vLLM: auto = when a CUDA GPU is present and vllm imports; on = required "
                            "(a clear error without them); off = HF generate. See docs/gpu.md.")
    vllm_gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0,
                                               description="Share of GPU memory vLLM may take for sampling.")


class EvalConfig(_Sampler):
    """checkpoint_eval / baseline_eval: greedy pass@1, mean reward, response length, optional pass@k."""

    max_new_tokens: int = Field(24, ge=1, le=32768)
    batch_size: int = Field(128, ge=1, le=4096)
    pass_threshold: float = Field(1.0, description="A rollout passes when its reward is >= this.")
    pass_at_k: int = Field(0, ge=0, le=64, description="k sampled rollouts per prompt for pass@k; 0 = off.")
    sample_temperature: float = Field(1.0, gt=0.0, le=5.0)
    sample_top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 1234
    max_prompts: int | None = Field(None, ge=1, description="Evaluate only the first N prompts.")
    breakdown_fields: list[str] = Field(default_factory=lambda: ["category"],
                                        description="Metadata fields to break results down by.")
    timeout_s: float = Field(1800.0, gt=0, description="The sampling child process is stopped after this.")


class DiversityConfig(_Sampler):
    """diversity_check: k rollouts per prompt, classify all-pass / all-fail / mixed, decide."""

    k: int = Field(8, ge=2, le=16, description="Rollouts per prompt (services allow 2-16).")
    max_prompts: int = Field(256, ge=1, description="Prompts sampled from the training set.")
    pass_threshold: float = 1.0
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(24, ge=1, le=32768)
    batch_size: int = Field(64, ge=1, le=4096)
    seed: int = 1234
    min_mixed_fraction: float = Field(0.1, ge=0.0, le=1.0,
                                      description="Below this mixed share there is too little signal for RFT.")
    max_all_fail_fraction: float = Field(0.7, ge=0.0, le=1.0,
                                         description="Above this all-fail share, SFT must come first.")
    max_all_pass_fraction: float = Field(0.9, ge=0.0, le=1.0,
                                         description="Above this all-pass share there is nothing left to learn.")
    write_filtered: bool = Field(False, description="Write the informative (mixed) prompts as a training file.")
    timeout_s: float = Field(1800.0, gt=0, description="The sampling child process is stopped after this.")


class LoraConfig(_Strict):
    r: int = Field(16, ge=1, le=512)
    alpha: int = Field(32, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"


class _Hardware(_Strict):
    """How a trainer uses the machine it lands on (SFT and GRPO alike); on CPU every default is fp32, one process."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on a CUDA GPU that supports it, else fp16 on CUDA, fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less GPU "
                                                            "memory for about a third more compute.")
    lora_above_params: float = Field(1.5e9, gt=0, description="method auto trains LoRA adapters on models with more "
                                                              "parameters than this, full fine-tuning otherwise.")
    processes: Literal["auto"] | int = Field(
        "auto", description="Training processes on this node: auto = one per CUDA device (1 on CPU); more than 1 "
                            "starts the trainer with accelerate launch.")

    _check_processes = field_validator("processes", mode="before")(_processes)


class SFTConfig(_Hardware):
    method: Literal["auto", "full", "lora"] = Field(
        "auto", description="full fine-tuning, LoRA adapters (merged into the saved model), or auto: LoRA above "
                            "lora_above_params parameters.")
    max_steps: int = Field(3000, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    lr_scheduler: Literal["cosine", "constant", "constant_with_warmup", "linear"] = "cosine"
    warmup_steps: int = Field(150, ge=0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_length: int = Field(160, ge=8, le=131072)
    logging_steps: int = Field(50, ge=1)
    save_steps: int = Field(500, ge=1, description="Checkpoint interval; a retried stage resumes from the last.")
    seed: int = 0
    lora: LoraConfig = Field(default_factory=LoraConfig)
    timeout_s: float = Field(3600.0, gt=0, description="The training child process is stopped after this.")
    max_train_seconds: float | None = Field(
        None, gt=0, description="Stop once training itself has run this long (equal-compute controls).")
    train_clock: Literal["wall", "cpu"] = Field(
        "wall", description="Clock for max_train_seconds: wall time, or the training process's CPU time "
                            "(the fairer compute budget on a machine shared with other jobs).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept in the stage folder.")


class RFTConfig(_Hardware):
    method: Literal["auto", "full", "lora"] = Field(
        "auto", description="full fine-tuning, LoRA adapters (merged into the saved model), or auto: LoRA above "
                            "lora_above_params parameters.")
    max_steps: int = Field(60, ge=1, le=1_000_000)
    prompts_per_step: int = Field(32, ge=1, le=4096)
    num_generations: int = Field(8, ge=2, le=64, description="Rollouts per prompt (the GRPO group).")
    max_new_tokens: int = Field(24, ge=1, le=32768)
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    lr_scheduler: Literal["cosine", "constant", "constant_with_warmup", "linear"] = "constant_with_warmup"
    warmup_steps: int = Field(10, ge=0)
    beta: float = Field(0.0, ge=0.0, le=10.0, description="KL coefficient; 0 = no reference model.")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    scale_rewards: Literal["batch", "group", "none"] = "batch"
    num_iterations: int = Field(1, ge=1, le=16)
    max_grad_norm: float = Field(1.0, gt=0.0)
    logging_steps: int = Field(5, ge=1)
    save_steps: int = Field(20, ge=1)
    seed: int = 0
    lora: LoraConfig = Field(default_factory=LoraConfig)
    timeout_s: float = Field(3600.0, gt=0, description="The training child process is stopped after this.")
    max_train_seconds: float | None = Field(
        None, gt=0, description="Stop once training itself has run this long.")
    train_clock: Literal["wall", "cpu"] = Field("wall", description="Clock for max_train_seconds: wall or CPU time.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept in the stage folder.")
    vllm: Literal["auto", "on", "off"] = Field(
        "auto", description="Generate GRPO rollouts with TRL's colocated vLLM: auto = when a CUDA GPU is present "
                            "and vllm imports; on = required (a clear error without them); off = HF generate.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0,
                                               description="Share of GPU memory the colocated vLLM may take "
                                                           "(the rest trains).")

    @model_validator(mode="after")
    def _whole_groups(self) -> RFTConfig:
        if self.num_iterations > self.max_steps:
            raise ValueError(f"num_iterations ({self.num_iterations}) exceeds max_steps ({self.max_steps})")
        return self


_C = TypeVar("_C", bound=BaseModel)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; dotted keys ("lora.r") in overrides address nested fields."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, dict) and isinstance(out.get(head), dict):
            out[head] = deep_merge(out[head], value)
        else:
            out[head] = value
    return out


def _override_paths(overrides: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every field path an overrides dict sets ("lora.r" and {"lora": {"r": ..}} both give ("lora", "r"))."""
    paths: set[tuple[str, ...]] = set()
    for key, value in overrides.items():
        path = prefix + tuple(str(key).split("."))
        paths.add(path)
        if isinstance(value, dict):
            paths |= _override_paths(value, path)
    return paths


def format_validation_error(source: str, err: ValidationError, key_lines: dict[tuple[str, ...], int] | None = None,
                            overridden: set[tuple[str, ...]] | None = None) -> str:
    """One line per problem: `where: field: what was expected; got value`.

    `where` is `file:line` when the field was set in the recipe file, `overrides` when a caller set it.
    """
    key_lines, overridden = key_lines or {}, overridden or set()
    lines = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        field = ".".join(loc) or "<root>"
        where = source
        for n in range(len(loc), 0, -1):
            if loc[:n] in overridden:
                where = f"{source} (overrides)"
                break
            if loc[:n] in key_lines:
                where = f"{source}:{key_lines[loc[:n]]}"
                break
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: {field}: unknown key")
        else:
            got = e.get("input")
            lines.append(f"{where}: {field}: {e['msg']}; got {got!r}")
    return "\n".join(lines)


def build_config(model: type[_C], data: dict[str, Any], source: str = "<config>",
                 key_lines: dict[tuple[str, ...], int] | None = None,
                 overridden: set[tuple[str, ...]] | None = None) -> _C:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(source, err, key_lines, overridden)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level; got {type(data).__name__}")
    return data


def yaml_key_lines(path: str | Path) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key in a YAML file, by its path of keys."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path_ = prefix + (str(key.value),)
                lines[path_] = key.start_mark.line + 1
                walk(value, path_)

    try:
        walk(yaml.compose(Path(path).read_text(encoding="utf-8")), ())
    except (OSError, yaml.YAMLError):
        return {}
    return lines


STAGE_MODELS: dict[str, type[BaseModel]] = {
    "eval": EvalConfig,
    "diversity": DiversityConfig,
    "sft": SFTConfig,
    "rft": RFTConfig,
}


def load_recipe(backend: str, stage: str, overrides: dict[str, Any] | None = None,
                path: str | Path | None = None) -> BaseModel:
    """Load include/recipes/{backend}/{stage}.yaml (or `path`), apply overrides, validate."""
    if stage not in STAGE_MODELS:
        raise RecipeError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_MODELS)}")
    explicit = path is not None
    path = Path(path) if explicit else RECIPES_DIR / backend / f"{stage}.yaml"
    # A backend without a recipe for this stage runs on the typed defaults; a named file must exist.
    data = load_yaml(path) if explicit or path.exists() else {}
    overrides = overrides or {}
    return build_config(STAGE_MODELS[stage], deep_merge(data, overrides), str(path),
                        yaml_key_lines(path) if data else {}, _override_paths(overrides))
