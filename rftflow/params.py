"""The rft_cycle trigger form: typed, JSON-schema-validated Airflow Params, and their defaults.

The same defaults feed `CycleParams` (rftflow.cycle), which validates what the schema cannot express.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_artifact_root() -> str:
    return os.environ.get("RFTFLOW_ARTIFACT_ROOT") or (PROJECT_ROOT / ".artifacts").as_uri()


DEFAULTS: dict[str, Any] = {
    "backend": "local",
    "base_model": "champion",
    "fallback_model": "tiny",
    "model_family": "tiny-finqa",
    "train_uri": "include/data/tiny/train.jsonl",
    "eval_uri": "include/data/tiny/eval.jsonl",
    "sft_uri": "include/data/tiny/sft.jsonl",
    "reward": "numeric",
    "rollouts_per_prompt": 8,
    "diversity_prompts": 256,
    "min_mixed_fraction": 0.1,
    "max_all_fail_fraction": 0.7,
    "max_all_pass_fraction": 0.9,
    "sft_policy": "auto",
    "training_method": "full",
    "recipe_overrides": {},
    "gate_metric": "pass_at_1",
    "min_abs_gain": 0.02,
    "min_rel_gain": 0.0,
    "gate_confidence": 0.95,
    "on_missing_evidence": "hold",
    "protected_slices": [],
    "guards": {},
    "max_cycles": 1,
    "cycle": 1,
    "parent_run_id": None,
    "artifact_root": None,
    "require_approval": False,
    "notify": [],
}

_DIVERSITY_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}


def build_params() -> dict[str, Any]:
    """Airflow Params for the trigger form (airflow.sdk is already imported by any DAG file)."""
    from airflow.sdk import Param

    d = DEFAULTS
    return {
        "backend": Param(d["backend"], type="string", enum=["local", "sagemaker", "bedrock"],
                         title="Backend", description="Who trains: local TRL, SageMaker Training Jobs, or Bedrock."),
        "base_model": Param(d["base_model"], type="string", minLength=1, title="Start model",
                            description="'champion' (the current champion of the model family), 'tiny', "
                                        "an HF model directory or URI, or a Nova model id/ARN."),
        "fallback_model": Param(d["fallback_model"], type="string", minLength=1, title="Model when no champion",
                                description="Used when base_model is 'champion' and none is registered yet."),
        "model_family": Param(d["model_family"], type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                              title="Model family", description="Champion registry key and Asset name."),
        "train_uri": Param(d["train_uri"], type="string", minLength=1, title="RFT training data (JSONL)"),
        "eval_uri": Param(d["eval_uri"], type="string", minLength=1, title="Held-out eval data (JSONL)"),
        "sft_uri": Param(d["sft_uri"], type=["string", "null"], title="SFT demonstrations (JSONL)",
                         description="Needed when the SFT branch can run."),
        "reward": Param(d["reward"], type="string", minLength=1, title="Reward function",
                        description="Built-in name (numeric, exact_match, code_tests, shaped_numeric, "
                                    "llm_judge), a handler .py path, or a Lambda ARN for AWS backends."),
        "rollouts_per_prompt": Param(d["rollouts_per_prompt"], type="integer", minimum=2, maximum=16,
                                     title="Rollouts per prompt (k)"),
        "diversity_prompts": Param(d["diversity_prompts"], type="integer", minimum=8, maximum=20000,
                                   title="Prompts sampled by the diversity check"),
        "min_mixed_fraction": Param(d["min_mixed_fraction"], **_DIVERSITY_FRACTION,
                                    title="Min mixed share for RFT"),
        "max_all_fail_fraction": Param(d["max_all_fail_fraction"], **_DIVERSITY_FRACTION,
                                       title="All-fail share above which SFT comes first"),
        "max_all_pass_fraction": Param(d["max_all_pass_fraction"], **_DIVERSITY_FRACTION,
                                       title="All-pass share above which the cycle stops"),
        "sft_policy": Param(d["sft_policy"], type="string", enum=["auto", "always", "never"], title="SFT policy"),
        "training_method": Param(d["training_method"], type="string", enum=["full", "lora"],
                                 title="Training method"),
        "recipe_overrides": Param(d["recipe_overrides"], type="object", title="Recipe overrides",
                                  description='Per stage, e.g. {"rft": {"max_steps": 60}, "sft": {"lora.r": 8}}.',
                                  properties={s: {"type": "object"} for s in ("sft", "rft", "eval", "diversity")},
                                  additionalProperties=False),
        "gate_metric": Param(d["gate_metric"], type="string", enum=["pass_at_1", "mean_reward"],
                             title="Gate metric"),
        "min_abs_gain": Param(d["min_abs_gain"], type="number", minimum=0, maximum=1,
                              title="Required absolute gain"),
        "min_rel_gain": Param(d["min_rel_gain"], type="number", minimum=0, maximum=10,
                              title="Required relative gain"),
        "gate_confidence": Param(d["gate_confidence"], type="number", exclusiveMinimum=0.5, exclusiveMaximum=1,
                                 title="Gate confidence",
                                 description="How sure the gate must be that the gain is real (one-sided lower "
                                             "bound): 0.95 means a no-better candidate passes at most 5% of the "
                                             "time, spread over every decision made on the same eval set."),
        "on_missing_evidence": Param(d["on_missing_evidence"], type="string", enum=["hold", "reject", "promote"],
                                     title="When evidence is missing",
                                     description="An enabled check that cannot be evaluated (no training "
                                                 "metrics, no per-prompt results): hold for a person to "
                                                 "approve, reject, or promote on the evidence there is."),
        "protected_slices": Param(d["protected_slices"], type="array", items={"type": "string"},
                                  title="Protected slices",
                                  description="'field=value' slices of the eval set that must not drop at all, "
                                              "e.g. 'category=add'."),
        "guards": Param(d["guards"], type="object", title="Gate and guard settings",
                        description="Any other rftflow.gate.GateConfig field: margin, split_min_prompts, "
                                    "slice_min_n, slice_drop_tolerance, reward_gap_max, length_ratio_min/max, "
                                    "kl_max, entropy_collapse_ratio, entropy_min/max, format_rise_max, window, "
                                    "look_correction, resamples, seed."),
        "max_cycles": Param(d["max_cycles"], type="integer", minimum=1, maximum=20, title="Max cycles"),
        "cycle": Param(d["cycle"], type="integer", minimum=1, maximum=20, title="Cycle number",
                       description="Set by the iterate branch; leave at 1."),
        "parent_run_id": Param(d["parent_run_id"], type=["string", "null"], title="Parent run",
                               description="Set by the iterate branch (lineage)."),
        "artifact_root": Param(default_artifact_root(), type="string", minLength=1, title="Artifact root",
                               description="file:///path or s3://bucket/prefix"),
        "require_approval": Param(d["require_approval"], type="boolean",
                                  title="Ask a person to approve before promoting"),
        "notify": Param(d["notify"], type="array", items={"type": "string"}, title="Notify",
                        description="Targets for gate decisions and failures, e.g. 'sns:arn:...', "
                                    "'slack:conn_id', 'email:a@b.c'. Empty = off."),
    }
