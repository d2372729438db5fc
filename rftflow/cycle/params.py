"""The run's params and the rft_cycle trigger form generated from them.

`CycleParams` declares every param once, with its default, type, bounds and choices; the form (`build_params`:
typed, JSON-schema-validated Airflow Params) takes those from it and adds only words and sections (`FORM`).
The form is laid out in sections (Airflow 3 renders a Param's `section` as a collapsible group); a field
whose type admits null is optional in the form, every other one is required and has a default. The
internal fields `cycle` and `parent_run_id` are not declared as Params, so the form does not show them:
the iterate branch still passes them in the next run's conf, and Airflow hands undeclared conf keys to
the tasks' params, where `parse_params` reads them (the model's defaults fill them in when absent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_artifact_root() -> str:
    return os.environ.get("RFTFLOW_ARTIFACT_ROOT") or (PROJECT_ROOT / ".artifacts").as_uri()


class CycleParams(BaseModel):
    """Everything a cycle needs, with its defaults and bounds: the one declaration of the run's params.

    The trigger form (`build_params`) takes each field's type, bounds, choices and default from here and adds
    only its words and section; `validate_data` parses the run's params once, fails on any bad value (guards and
    every stage's recipe overrides included) and hands the resolved copy to every later task by XCom.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    backend: Literal["local", "ray", "sagemaker", "bedrock"] = "local"
    base_model: str = Field("champion", min_length=1)
    fallback_model: str = Field("tiny", min_length=1)
    # The demo's family (rftflow.cli.demo.FAMILY): a default trigger after `make demo` continues from its champion.
    model_family: str = Field("tiny-demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    train_uri: str = Field("include/data/tiny/train.jsonl", min_length=1)
    eval_uri: str = Field("include/data/tiny/eval.jsonl", min_length=1)
    sft_uri: str | None = "include/data/tiny/sft.jsonl"
    reward: str = Field("numeric", min_length=1)
    rollouts_per_prompt: int = Field(8, ge=2, le=16)
    diversity_prompts: int = Field(256, ge=8, le=20000)
    min_mixed_fraction: float = Field(0.1, ge=0, le=1)
    max_all_fail_fraction: float = Field(0.7, ge=0, le=1)
    max_all_pass_fraction: float = Field(0.9, ge=0, le=1)
    sft_policy: Literal["auto", "always", "never"] = "auto"
    training_method: Literal["auto", "full", "lora"] = "auto"
    recipe_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    gate_metric: Literal["pass_at_1", "mean_reward"] = "pass_at_1"
    min_abs_gain: float = Field(0.02, ge=0, le=1)
    min_rel_gain: float = Field(0.0, ge=0, le=10)
    gate_confidence: float = Field(0.95, gt=0.5, lt=1)
    on_missing_evidence: Literal["hold", "reject", "promote"] = "hold"
    protected_slices: list[str] = Field(default_factory=list)
    guards: dict[str, Any] = Field(default_factory=dict)
    max_cycles: int = Field(1, ge=1, le=20)
    cycle: int = Field(1, ge=1, le=20)
    parent_run_id: str | None = None
    artifact_root: str | None = None  # None: default_artifact_root(), filled in by parse_params
    require_approval: bool = False
    notify: list[str] = Field(default_factory=list)

    @field_validator("train_uri", "eval_uri", "sft_uri")
    @classmethod
    def _resolve_data_uri(cls, v: str | None) -> str | None:
        if not v or "://" in v:
            return v
        path = Path(v)
        if not path.is_absolute():
            # Relative paths name files shipped with the project (include/data/...).
            path = (PROJECT_ROOT / path) if not path.exists() else path.resolve()
        return path.as_uri()

    @field_validator("recipe_overrides")
    @classmethod
    def _known_stages(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = set(v) - set(RECIPE_STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; expected {', '.join(RECIPE_STAGES)}")
        return v

    @model_validator(mode="after")
    def _gate_settings(self) -> CycleParams:
        self.gate_config()  # a typo in `guards` fails here, in validate_data, not at the gate
        return self

    def gate_config(self) -> Any:
        """The gate's settings: the form's top-level fields, then `guards` for everything else."""
        from rftflow.scoring.gate import GateConfig

        top = {"metric": self.gate_metric, "min_abs_gain": self.min_abs_gain, "min_rel_gain": self.min_rel_gain,
               "confidence": self.gate_confidence, "on_missing_evidence": self.on_missing_evidence,
               "protected_slices": self.protected_slices}
        twice = sorted(set(top) & set(self.guards))
        if twice:
            raise ValueError(f"guards sets {twice}, which the form sets as its own fields; set them there")
        try:
            return GateConfig(**top, **self.guards)
        except ValidationError as err:
            raise ValueError("guards: " + "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'guards'}: {e['msg']}" for e in err.errors())) from None

    def overrides(self, stage: str) -> dict[str, Any]:
        """Recipe overrides for a stage, with the trigger form's top-level knobs folded in."""
        out: dict[str, Any] = {}
        if stage in ("sft", "rft"):
            out["method"] = self.training_method
        if stage == "diversity":
            out.update(k=self.rollouts_per_prompt, max_prompts=self.diversity_prompts,
                       min_mixed_fraction=self.min_mixed_fraction,
                       max_all_fail_fraction=self.max_all_fail_fraction,
                       max_all_pass_fraction=self.max_all_pass_fraction)
        if stage == "rft":
            out["num_generations"] = self.rollouts_per_prompt
        out.update(self.recipe_overrides.get(stage, {}))
        return out


RECIPE_STAGES = ("sft", "rft", "eval", "diversity")  # the stages recipe_overrides may name

# Every field's default, as the form and the CLI show it (the model is the source).
DEFAULTS: dict[str, Any] = {
    name: (f.default_factory() if f.default_factory is not None else f.default)
    for name, f in CycleParams.model_fields.items()
}


def parse_params(raw: dict[str, Any]) -> CycleParams:
    """Validate the run's params; the error lists every bad field in words. Unset (None) fields take their
    default, and an empty artifact_root the workers' (RFTFLOW_ARTIFACT_ROOT, else the project's .artifacts)."""
    from rftflow.cycle.recipes import format_validation_error

    data = {k: v for k, v in raw.items() if v is not None or k in ("sft_uri", "parent_run_id")}
    if not data.get("artifact_root"):
        data["artifact_root"] = default_artifact_root()
    try:
        return CycleParams.model_validate(data)
    except ValidationError as err:
        raise ValueError("invalid rft_cycle params:\n" + format_validation_error("params", err)) from None


# Set by the iterate branch for the next cycle's run; not form fields (see the module docstring).
INTERNAL = ("cycle", "parent_run_id")

# Form sections, in the order the form shows them.
SECTIONS = ("Data", "Model", "Training", "Gate", "Operations", "Advanced")

# The built-in rewards (include/rewards/*.py; rftflow.rewards.runner.builtin_names()), offered as suggestions:
# the field stays free text for a handler path or a Lambda ARN. Listed here, not imported, because the
# DAG file parses this module and rftflow.rewards.runner is not needed for that (a test keeps the lists equal).
BUILTIN_REWARDS = ("numeric", "exact_match", "code_tests", "llm_judge", "shaping", "shaped_numeric",
                   "shaped_exact_match", "shaped_code_tests", "shaped_llm_judge")

# What recipe_overrides overrides: the local recipes' main settings (include/recipes/local/*.yaml; a test
# compares them). Shown in the field's description because the JSON box itself can only show `{}`.
RECIPE_DEFAULTS_SHOWN: dict[str, dict[str, Any]] = {
    "sft": {"max_steps": 1600, "batch_size": 64, "learning_rate": 1.5e-3, "warmup_steps": 80,
            "max_length": 160, "save_steps": 500},
    "rft": {"max_steps": 60, "prompts_per_step": 32, "learning_rate": 5.0e-5, "warmup_steps": 10,
            "max_new_tokens": 24, "temperature": 1.0, "beta": 0.0, "loss_type": "dapo"},
    "eval": {"max_new_tokens": 24, "batch_size": 128, "pass_at_k": 0, "max_prompts": None},
    "diversity": {"temperature": 1.0, "max_new_tokens": 24, "pass_threshold": 1.0},
}

# What `guards` overrides: rftflow.scoring.gate.GateConfig's defaults for the settings the form has no field for.
GUARD_DEFAULTS_SHOWN: dict[str, Any] = {
    "margin": 0.0, "split_min_prompts": 1000, "slice_min_n": 30, "slice_drop_tolerance": 0.05,
    "reward_rise_min": 0.05, "reward_gap_max": 0.3, "length_ratio_min": 0.5, "length_ratio_max": 2.0,
    "kl_max": 1.0, "entropy_collapse_ratio": 0.5, "entropy_min": None, "entropy_max": None,
    "format_rise_max": 0.05, "window": 3, "look_correction": True, "resamples": 10000, "seed": 0,
}

# A rough time/cost per cycle, per backend (static: the form cannot compute from the other fields).
# Local: the figures measured on 2 CPU cores (README "Measured"); AWS: docs/aws.md section 6, priced
# with the table in rftflow.backends.aws.pricing (list prices, estimates; every AWS stage records its own cost).
ESTIMATES = {
    "local": "about 15 min a cycle on 2 CPU cores with the local recipes and the tiny track when SFT "
             "runs (about 4 min without SFT; the demo's shortened recipes: about 7 and 2 min); no cost",
    "ray": "the local figures divided by the workers' speed-up, plus Ray's own start-up per stage "
           "(benchmarks/bench_ray.py measures both; README 'Measured'); the cluster's own cost",
    "sagemaker": "about 12 h and $1,400 a cycle with SFT, $940 without (LoRA on ml.p5.48xlarge, sample-size "
                 "data; docs/aws.md section 6, prices from rftflow.backends.aws.pricing)",
    "bedrock": "about 6 h and $600 for the RFT job at the placeholder $100 per job-hour, plus about $0.50 "
               "of evaluation (docs/aws.md section 6, prices from rftflow.backends.aws.pricing)",
}

# The model's JSON-schema keys the form takes over (Airflow's form reads them; pydantic writes them from
# each field's type, Literal choices and Field bounds). Titles and the rest are the form's own (FORM).
SCHEMA_KEYS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
               "maxLength", "pattern", "items")

# Fields the model always fills (an empty dict or list) that the form still lets a person clear: shown as
# optional (`[type, "null"]`), and parse_params reads None as the default.
CLEARABLE = ("recipe_overrides", "protected_slices", "guards", "notify")


def _shown(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _listing(defaults: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_shown(v)}" for k, v in defaults.items())


# Long explanations are Markdown (description_md): the form renders lists and code there, plain text as
# one block. Airflow shows description_md only where `description` is unset.
_RECIPE_DEFAULTS_MD = "\n".join(f"- **{stage}**: {_listing(v)}" for stage, v in RECIPE_DEFAULTS_SHOWN.items())
_ESTIMATES_MD = "\n".join(f"- **{k}**: {v}" for k, v in ESTIMATES.items())

# How the form shows each field, in the form's order: section, title, words, suggestions. No types or bounds
# here: build_params takes them, and every default, from CycleParams.
FORM: dict[str, dict[str, Any]] = {
    # ----------------------------------------------------------------------------------------- data
    "train_uri": dict(section="Data", title="RFT training data (JSONL)",
                      description="Prompts with reference answers, one JSON object a line: a project path "
                                  "(include/data/...), file:// or s3:// URI. rftflow validate checks it."),
    "eval_uri": dict(section="Data", title="Held-out eval data (JSONL)",
                     description="Prompts the gate compares baseline and candidate on; never trained on."),
    "sft_uri": dict(section="Data", title="SFT demonstrations (JSONL)",
                    description="Optional. Demonstrations for the SFT branch; needed when the diversity "
                                "check can send the cycle to SFT first (sft_policy auto or always)."),
    # ---------------------------------------------------------------------------------------- model
    "backend": dict(section="Model", title="Backend",
                    values_display={"local": "local (TRL on this machine)",
                                    "ray": "ray (TRL on a Ray cluster: Ray Train and Ray tasks)",
                                    "sagemaker": "sagemaker (SageMaker Training Jobs or serverless)",
                                    "bedrock": "bedrock (Bedrock RFT jobs)"},
                    description_md="Who trains: local TRL, the same TRL stages as jobs on a Ray cluster "
                                   "(the ray_default connection names it), SageMaker (Training Jobs, or serverless "
                                   "customization for Nova and open-weight hub models), or Bedrock (Nova, "
                                   "gpt-oss-20b, Qwen3 32B).\n\n"
                                   f"Time and cost of one cycle (estimates):\n{_ESTIMATES_MD}"),
    "base_model": dict(section="Model", title="Start model",
                       examples=["champion", "tiny", "nova-2-lite", "openai.gpt-oss-20b",
                                 "huggingface-reasoning-qwen3-8b"],
                       description="'champion' (the current champion of the model family), 'tiny', "
                                   "an HF model directory or URI, a Nova model id/ARN, a Bedrock "
                                   "open-weight model (openai.gpt-oss-20b, qwen.qwen3-32b) or a SageMaker "
                                   "hub model id (serverless flavour)."),
    "fallback_model": dict(section="Model", title="Model when no champion",
                           description="Used when base_model is 'champion' and none is registered yet."),
    "model_family": dict(section="Model", title="Model family",
                         description="Champion registry key and Asset name: cycles of one family compete "
                                     "for one champion. The default is the demo's family, so a trigger "
                                     "after make demo continues from the demo's champion."),
    "training_method": dict(section="Model", title="Training method",
                            description="auto: LoRA for models above the recipe's lora_above_params "
                                        "(1.5B; Nova on AWS), every weight below it; full: every weight "
                                        "is trained; lora: adapters (recipe lora.* settings) merged into "
                                        "the checkpoint afterwards."),
    # ------------------------------------------------------------------------------------- training
    "reward": dict(section="Training", title="Reward function", examples=list(BUILTIN_REWARDS),
                   description="A built-in (pick from the list: numeric, exact_match, code_tests, "
                               "llm_judge, shaping, shaped_<name>), or type a handler .py path, or a "
                               "Lambda ARN for AWS backends. Try it first: rftflow test NAME rollouts.jsonl"),
    "rollouts_per_prompt": dict(section="Training", title="Rollouts per prompt (k)",
                                description="Samples per prompt, in the diversity check and as the GRPO "
                                            "group size: advantages are relative within a prompt's k."),
    "sft_policy": dict(section="Training", title="SFT policy",
                       description="auto: SFT first only when the diversity check finds the rollouts "
                                   "nearly all fail; always: SFT before RFT every cycle; never: skip SFT."),
    "max_cycles": dict(section="Training", title="Max cycles",
                       description="How many SFT/RFT/eval cycles one trigger may chain: an inconclusive "
                                   "gain iterates from the candidate until this many cycles ran."),
    "recipe_overrides": dict(section="Training", title="Recipe overrides",
                             # No inline code spans: the form draws them taller than the line.
                             description_md='Optional, per stage, e.g. {"rft": {"max_steps": 30}, '
                                            '"sft": {"lora.r": 8}}. What it overrides, the local '
                                            "recipes' defaults (include/recipes/local/):\n"
                                            f"{_RECIPE_DEFAULTS_MD}\n\nThe diversity check's k and "
                                            "max_prompts come from the fields of this form.",
                             # One JSON box per stage the model accepts (its validator names them).
                             properties={s: {"type": "object"} for s in RECIPE_STAGES},
                             additionalProperties=False),
    # ----------------------------------------------------------------------------------------- gate
    "gate_metric": dict(section="Gate", title="Gate metric",
                        description="What must improve: pass@1 (share of eval prompts answered correctly, "
                                    "greedy) or the mean reward over the eval set."),
    "min_abs_gain": dict(section="Gate", title="Required absolute gain",
                         description="The candidate must beat the baseline and the champion by at least "
                                     "this much on the gate metric (0.02 = 2 points of pass@1)."),
    "min_rel_gain": dict(section="Gate", title="Required relative gain",
                         description="And by at least this fraction of the baseline's value (0.05 = 5%); "
                                     "0 = off."),
    "gate_confidence": dict(section="Gate", title="Gate confidence",
                            description="How sure the gate must be that the gain is real (one-sided lower "
                                        "bound): 0.95 means a no-better candidate passes at most 5% of the "
                                        "time, spread over every decision made on the same eval set."),
    "on_missing_evidence": dict(section="Gate", title="When evidence is missing",
                                description="An enabled check that cannot be evaluated (no training "
                                            "metrics, no per-prompt results): hold for a person to "
                                            "approve, reject, or promote on the evidence there is."),
    "protected_slices": dict(section="Gate", title="Protected slices",
                             description="'field=value' slices of the eval set that must not drop at all, "
                                         "e.g. 'category=add'."),
    "guards": dict(section="Gate", title="Gate and guard settings",
                   description="Any other rftflow.scoring.gate.GateConfig field: margin, split_min_prompts, "
                               "slice_min_n, slice_drop_tolerance, reward_gap_max, length_ratio_min/max, "
                               "kl_max, entropy_collapse_ratio, entropy_min/max, format_rise_max, window, "
                               "look_correction, resamples, seed. Defaults: "
                               f"{_listing(GUARD_DEFAULTS_SHOWN)}."),
    "require_approval": dict(section="Gate", title="Ask a person to approve before promoting",
                             description="On: a promotion waits for a reviewer under Required Actions. "
                                         "A candidate the gate holds always waits for one."),
    # ----------------------------------------------------------------------------------- operations
    "artifact_root": dict(section="Operations", title="Artifact root",
                          description="Optional. Where every stage writes, and where the champion registry "
                                      "and cycle index live: file:///path or s3://bucket/prefix. Empty: "
                                      "RFTFLOW_ARTIFACT_ROOT of the workers, else .artifacts/ in the project."),
    "notify": dict(section="Operations", title="Notify",
                   description="Optional. Targets for gate decisions and failures, one a line, e.g. "
                               "'sns:arn:...', 'slack:conn_id', 'email:a@b.c'. Empty = off."),
    # ------------------------------------------------------------------------------------- advanced
    "diversity_prompts": dict(section="Advanced", title="Prompts sampled by the diversity check",
                              description="A seeded sample of the training prompts, k rollouts each; "
                                          "more prompts: a steadier all-fail/mixed/all-pass split."),
    "min_mixed_fraction": dict(section="Advanced", title="Min mixed share for RFT",
                               description="Share of prompts whose rollouts disagree (some pass, some "
                                           "fail) below which RFT has too little signal to learn from."),
    "max_all_fail_fraction": dict(section="Advanced", title="All-fail share above which SFT comes first",
                                  description="Above this share of all-failing prompts the model "
                                              "cannot yet solve the task: SFT first (policy auto)."),
    "max_all_pass_fraction": dict(section="Advanced", title="All-pass share above which the cycle stops",
                                  description="Above this share of all-passing prompts there is "
                                              "nothing left to learn: the cycle stops."),
}


def form_schema(prop: dict[str, Any], clearable: bool = False) -> dict[str, Any]:
    """The form's schema keys of one model property: an optional type (`X | None`, pydantic's anyOf) becomes
    `type: [X, "null"]`, as Airflow's form renders optional fields; `clearable` makes the type admit null too."""
    alternatives = prop.get("anyOf") or [prop]
    (shape,) = [a for a in alternatives if a.get("type") != "null"]  # the X of `X | None`
    out = {k: shape[k] for k in SCHEMA_KEYS if k in shape}
    if clearable or len(alternatives) > 1:
        out["type"] = [shape["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def build_params() -> dict[str, Any]:
    """Airflow Params for the trigger form (airflow.sdk is already imported by any DAG file): each field's
    default, type, choices and bounds from CycleParams, its words and section from FORM."""
    from airflow.sdk import Param

    props = CycleParams.model_json_schema()["properties"]
    form: dict[str, Any] = {}
    for name, shown in FORM.items():
        default = default_artifact_root() if name == "artifact_root" else DEFAULTS[name]
        words = {k: v for k, v in shown.items() if k != "section"}  # section first: the serialized DAG is unchanged
        form[name] = Param(default, section=shown["section"], **form_schema(props[name], name in CLEARABLE), **words)
    return form
