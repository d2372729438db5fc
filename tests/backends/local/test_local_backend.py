"""The local backend's stages on the tiny model: eval with breakdown, diversity with filtering, a few steps of
SFT and of GRPO (parameters change, metrics.jsonl carries the Nova/verl names), manifests written last."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftflow.artifacts.manifest import load_complete
from rftflow.backends.base import StageContext, get_backend
from rftflow.cycle.recipes import load_recipe
from rftflow.data.dataset import read_records
from rftflow.scoring import diversity

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "include" / "data" / "tiny"

# A user's reward handler file: it rewards answers that start with a digit, which a random model does
# sometimes, so GRPO groups have mixed rewards and a gradient. It also reports a format-penalty rate.
DIGIT_HANDLER = '''
def lambda_handler(event, context):
    out = []
    for sample in event:
        text = sample["messages"][-1]["content"]
        ok = text[:1].isdigit()
        out.append({"id": sample["id"], "aggregate_reward_score": 1.0 if ok else 0.0,
                    "metrics_list": [{"name": "format_penalty_rate", "value": 0.0 if ok else 1.0, "type": "Metric"}]})
    return out
'''


def _tensors(model_dir: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _changed(before: dict, after: dict) -> list[str]:
    import numpy as np

    assert before.keys() == after.keys()
    return [k for k in before if not np.array_equal(before[k], after[k])]


def _rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    shared = tmp_path_factory.getbasetemp() / "shared-tiny"  # one tiny build per test session
    backend = get_backend("local", work_dir=str(shared / "work"))
    base = backend.resolve_model("tiny", StageContext(str(shared / "artifacts"), "t", "r", 0, "base"))
    root = tmp_path_factory.mktemp("local-backend")
    sft_path = root / "sft.jsonl"
    sft_path.write_text("".join((TINY / "sft.jsonl").read_text().splitlines(keepends=True)[:128]))
    ctx = StageContext(str(root / "artifacts"), "tests", "run-1", 0, "stage")
    return backend, base, ctx, root, str(sft_path)


def test_evaluate_writes_rows_and_a_manifest_with_breakdown(env):
    backend, base, ctx, _, _ = env
    ctx = ctx.for_stage("baseline_eval")
    m = backend.evaluate(ctx, base, str(TINY / "eval.jsonl"), "numeric", {"max_prompts": 24, "pass_at_k": 4})
    assert load_complete(ctx.uri) == m and m.backend == "local" and m.checkpoint_uri == base
    metrics = m.metrics
    for key in ("pass_at_1", "mean_reward", "mean_response_tokens", "n", "pass_at_k", "k", "breakdown"):
        assert key in metrics, key
    assert metrics["n"] == 24 and metrics["k"] == 4
    assert metrics["pass_at_1"] <= 0.1  # a random-init model fails nearly everything
    by_category = metrics["breakdown"]["category"]
    assert set(by_category) == {"carry", "no_carry"}
    assert sum(v["n"] for v in by_category.values()) == 24
    assert set(metrics["breakdown"]["op"]) <= {"inc", "dec", "add"}
    rows = _rows(m.outputs["rows_uri"])
    assert len(rows) == 24 and all(len(r["sample_rewards"]) == 4 for r in rows)
    assert {"id", "completion", "reward", "passed", "response_tokens", "metadata"} <= rows[0].keys()
    # A retried stage with a complete manifest is reused, not run again.
    assert backend.evaluate(ctx, base, str(TINY / "eval.jsonl"), "numeric", {"max_prompts": 24}) == m


def test_diversity_stage_decides_and_writes_the_informative_subset(env, tmp_path):
    backend, base, ctx, _, _ = env
    ctx = ctx.for_stage("diversity_check")
    handler = tmp_path / "digit_reward.py"
    handler.write_text(DIGIT_HANDLER)
    cfg = {"max_prompts": 16, "k": 4, "max_new_tokens": 8, "write_filtered": True}
    m = backend.diversity(ctx, base, str(TINY / "train.jsonl"), str(handler), cfg)
    assert {"k", "n_prompts", "all_pass", "all_fail", "mixed", "mean_pass_rate", "expected_mixed",
            "pass_at_k"} <= m.metrics.keys()
    assert m.metrics["n_prompts"] == 16 and m.metrics["k"] == 4
    assert m.decision == diversity.decide(m.metrics, load_recipe("local", "diversity", cfg))
    assert m.decision["decision"] in ("rft", "sft_first", "stop_saturated") and m.decision["reason"]
    rows = _rows(m.outputs["rows_uri"])
    train_ids = {r.id for r in read_records(str(TINY / "train.jsonl"))}
    assert len(rows) == 16 and {r["id"] for r in rows} <= train_ids
    assert all(len(r["completions"]) == 4 and len(r["rewards"]) == 4 for r in rows)
    mixed_ids = [r["id"] for r in rows if r["pattern"] == "mixed"]
    assert mixed_ids, "the digit reward should give some mixed prompts on a random model"
    assert [r.id for r in read_records(m.outputs["filtered_train_uri"])] == mixed_ids
    assert m.metrics["filtered_prompts"] == len(mixed_ids)


def test_sft_changes_parameters_logs_metrics_and_checkpoints(env):
    backend, base, ctx, _, sft_path = env
    ctx = ctx.for_stage("sft")
    m = backend.sft(ctx, base, sft_path, {"max_steps": 6, "batch_size": 8, "logging_steps": 2, "save_steps": 3,
                                         "warmup_steps": 1})
    assert m.checkpoint_uri.endswith("/sft/model") and Path(m.checkpoint_uri, "tokenizer.json").is_file()
    assert _changed(_tensors(base), _tensors(m.checkpoint_uri))
    assert m.metrics["steps"] == 6 and m.metrics["train_seconds"] > 0 and m.metrics["resumed_from_step"] == 0
    rows = _rows(m.outputs["metrics_uri"])
    assert [r["step"] for r in rows] == [2, 4, 6]
    for key in ("train/loss", "actor/lr", "actor/grad_norm", "actor/entropy", "elapsed_s", "cpu_s"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert Path(ctx.uri, "checkpoints", "checkpoint-6", "trainer_state.json").is_file()
    # The trainer checks its own fit: six steps from random init are nowhere near the demonstrations.
    result = json.loads(Path(ctx.uri, "logs", "sft-result.json").read_text())["result"]
    conv = result["convergence"]
    assert conv["fit_prompts"] == 128 and conv["demo_accuracy"] > 0.5
    assert conv["model_accuracy"] < 0.5 * conv["demo_accuracy"] and conv["converged"] is False
    assert conv["loss_last"] == rows[-1]["train/loss"]
    # and the stage's manifest says so, where the summary and the report read it
    assert m.metrics["converged"] is False and "demonstrations" in m.metrics["not_converged_reason"]
    assert m.metrics["demo_accuracy"] == conv["demo_accuracy"]


def test_grpo_with_a_handler_file_changes_parameters_and_logs_nova_names(env, tmp_path):
    backend, base, ctx, _, _ = env
    ctx = ctx.for_stage("rft")
    handler = tmp_path / "digit_reward.py"
    handler.write_text(DIGIT_HANDLER)
    m = backend.rft(ctx, base, str(TINY / "train.jsonl"), str(handler), {
        "max_steps": 4, "prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 8, "logging_steps": 2,
        "save_steps": 2, "warmup_steps": 0, "learning_rate": 1e-3, "beta": 0.02, "method": "lora", "lora.r": 4})
    changed = _changed(_tensors(base), _tensors(m.checkpoint_uri))  # LoRA adapters merged into the weights
    assert changed and all("proj" in name for name in changed)
    assert m.metrics["steps"] == 4 and m.metrics["rollouts"] == 64 and m.metrics["rollouts_per_s"] > 0
    rows = _rows(m.outputs["metrics_uri"])
    assert [r["step"] for r in rows] == [2, 4]
    expected = ["critic/rewards/mean", "critic/rewards/max", "critic/rewards/min", "actor/entropy", "actor/kl_loss",
                "actor/grad_norm", "actor/lr", "actor/pg_loss", "response_length/mean", "frac_reward_zero_std",
                "reward/format_penalty_rate"]
    for key in expected:
        assert all(isinstance(r.get(key), float) for r in rows), key
    assert rows[-1]["rollouts"] == 64
    assert 0.0 <= rows[0]["critic/rewards/min"] <= rows[0]["critic/rewards/mean"] <= rows[0]["critic/rewards/max"]


def test_stages_run_against_an_s3_artifact_root(env, s3_root):
    from rftflow.artifacts import store

    backend, base, _, _, sft_path = env
    ctx = StageContext(s3_root, "tests", "run-s3", 0, "sft")
    m = backend.sft(ctx, base, sft_path, {"max_steps": 4, "batch_size": 4, "logging_steps": 2, "save_steps": 2})
    assert m.checkpoint_uri == store.join(ctx.uri, "model") and m.checkpoint_uri.startswith("s3://")
    assert load_complete(ctx.uri) == m
    for name in ("model/config.json", "model/model.safetensors", "metrics.jsonl",
                 "checkpoints/checkpoint-4/trainer_state.json"):
        assert store.exists(store.join(ctx.uri, name)), name
    ev = backend.evaluate(ctx.for_stage("checkpoint_eval"), m.checkpoint_uri, str(TINY / "eval.jsonl"), "numeric",
                          {"max_prompts": 4})
    assert ev.metrics["n"] == 4 and store.exists(ev.outputs["rows_uri"])


def test_the_caller_process_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, rftflow.backends.local.backend, rftflow.scoring.evaluation, rftflow.scoring.diversity, rftflow.backends.local.runner; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
