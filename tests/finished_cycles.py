"""Finished cycles written by the real pipeline code (stage manifests -> gate -> build_summary -> publish_summary),
shared by the plugin, tracking, notification and browser tests."""

from __future__ import annotations

import json
from typing import Any

DAG_ID = "rft_cycle"


# The eval set: 200 prompts in blocks of (first id, carry prompts, no_carry prompts), so that an eval where the
# first 70 / 80 / 110 prompts pass scores pass@1 0.35 / 0.40 / 0.55 with carry 0.15 / 0.20 / 0.45 and
# no_carry 0.55 / 0.60 / 0.65 (the rejected candidate, the baseline and the promoted candidate).
_EVAL_BLOCKS = ((0, 15, 55), (70, 5, 5), (80, 25, 5), (110, 55, 35))
EVAL_PROMPTS = 200


def _category(i: int) -> str:
    start, carry, _ = next(b for b in reversed(_EVAL_BLOCKS) if b[0] <= i)
    return "carry" if i - start < carry else "no_carry"


def _answer(i: int) -> str:
    return str(17 * i + 3)


def write_eval_set(root: str) -> str:
    """The eval set the fixture's evals scored: one question per prompt id (the report quotes them)."""
    from rftflow.artifacts import store

    uri = store.join(root, "data", "eval.jsonl")
    store.write_text(uri, "".join(json.dumps({
        "id": f"p{i}", "messages": [{"role": "user", "content": f"What is 17 * {i} + 3?"}],
        "reference_answer": _answer(i), "metadata": {"category": _category(i)}}) + "\n"
        for i in range(EVAL_PROMPTS)))
    return uri


def eval_rows(passing: int, model: str) -> list[dict[str, Any]]:
    """Per-prompt eval rows as an eval stage writes them: the first `passing` prompts answered right,
    the rest wrong; a pass/fail reward (reward 1.0 or 0.0); answers of varied length."""
    rows = []
    for i in range(EVAL_PROMPTS):
        right = i < passing
        words = 3 + (i * 7) % 11 + (4 if model == "candidate" else 0)
        completion = " ".join(["step"] * words) + f" so the answer is {_answer(i) if right else _answer(i) + '1'}"
        rows.append({"id": f"p{i}", "reference_answer": _answer(i), "metadata": {"category": _category(i)},
                     "completion": f"[{model}] {completion}", "reward": float(right), "passed": right,
                     "response_tokens": words + 6, "metrics": {"exact_match": float(right)}})
    return rows


def diversity_rows() -> list[dict[str, Any]]:
    """20 prompts x 4 rollouts as the diversity check scores them: 4 all-fail, 11 mixed, 5 all-pass."""
    from rftflow.scoring.diversity import outcome_rows

    passes = [0] * 4 + [1, 2, 3, 1, 2, 3, 2, 2, 1, 3, 2] + [4] * 5
    rows = outcome_rows([f"t{i}" for i in range(len(passes))],
                        [[1.0] * n + [0.0] * (4 - n) for n in passes], threshold=1.0)
    for row in rows:
        row["completions"] = [f"rollout {j}" for j in range(4)]
    return rows


def _train_rows(steps: int = 8) -> list[dict[str, Any]]:
    return [{"step": s, "critic/rewards/mean": 0.3 + 0.04 * s, "critic/rewards/max": 1.0,
             "critic/rewards/min": 0.0, "actor/entropy": 1.2 - 0.02 * s, "actor/kl_loss": 0.01 * s,
             "response_length/mean": 14.0 + 0.1 * s, "train/loss": 0.9 - 0.05 * s}
            for s in range(1, steps + 1)]


def write_finished_cycle(root: str, run_id: str, *, family: str = "tiny-finqa", improved: bool = True,
                         mlflow: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished local cycle under `root`, written stage by stage as the DAG writes it (manifests and the
    eval and diversity stages' per-prompt rows.jsonl); returns cycle.json.

    improved=True: the candidate beats the baseline, the gate promotes and the champion moves.
    improved=False: the candidate is worse and the gate rejects it.
    mlflow: the `mlflow` entry (run id, URL) to record in cycle.json (the index points to it).
    """
    from rftflow.artifacts import store
    from rftflow.artifacts.manifest import StageManifest, write_manifest
    from rftflow.artifacts.registry import Champion, ChampionRegistry
    from rftflow.cycle.context import stage_context
    from rftflow.cycle.params import parse_params
    from rftflow.cycle.recipes import DiversityConfig
    from rftflow.publish.summary import build_summary, publish_summary
    from rftflow.scoring.diversity import decide as diversity_decision
    from rftflow.scoring.diversity import summarize as diversity_summary
    from rftflow.scoring.evaluation import summarize
    from rftflow.scoring.gate import EvalEvidence, GateConfig, decide

    p = parse_params({"artifact_root": root, "model_family": family, "eval_uri": write_eval_set(root)})
    ctx = stage_context(p, DAG_ID, run_id, "report")
    now = "2026-11-25T10:00:00+00:00"
    base_model = f"{root}/models/base"

    def manifest(stage: str, **fields: Any) -> StageManifest:
        m = StageManifest(dag_id=DAG_ID, run_id=run_id, cycle=1, stage=stage, backend="local",
                          started_at=now, finished_at=now, duration_s=1.5, **fields)
        write_manifest(ctx.for_stage(stage).uri, m)
        return m

    def rows_file(stage: str, rows: list[dict[str, Any]]) -> str:
        uri = store.join(ctx.for_stage(stage).uri, "rows.jsonl")
        store.write_text(uri, "".join(json.dumps(r) + "\n" for r in rows))
        return uri

    base_rows = eval_rows(80, "baseline")
    cand_rows = eval_rows(110 if improved else 70, "candidate")
    baseline, candidate = summarize(base_rows), summarize(cand_rows)
    manifest("validate_data", metrics={"ok": True, "train_rows": 64, "eval_rows": EVAL_PROMPTS})
    manifest("baseline_eval", checkpoint_uri=base_model, metrics=baseline,
             outputs={"rows_uri": rows_file("baseline_eval", base_rows)})
    div_rows = diversity_rows()
    div_metrics = diversity_summary(div_rows)
    manifest("diversity_check", checkpoint_uri=base_model, metrics=div_metrics,
             decision=diversity_decision(div_metrics, DiversityConfig()),
             outputs={"rows_uri": rows_file("diversity_check", div_rows)})
    rows = _train_rows()
    rft_uri = ctx.for_stage("rft").uri
    metrics_uri = store.join(rft_uri, "metrics.jsonl")
    store.write_text(metrics_uri, "".join(json.dumps(r) + "\n" for r in rows))
    candidate_model = store.join(rft_uri, "model")
    manifest("rft", checkpoint_uri=candidate_model, outputs={"metrics_uri": metrics_uri},
             metrics={"steps": len(rows)}, inputs={"model_uri": base_model, "train_uri": p.train_uri})
    manifest("checkpoint_eval", checkpoint_uri=candidate_model, metrics=candidate,
             outputs={"rows_uri": rows_file("checkpoint_eval", cand_rows)})
    result = decide(EvalEvidence(baseline, base_rows, "baseline"), EvalEvidence(candidate, cand_rows, "candidate"),
                    None, rows, GateConfig(), cycle=1, max_cycles=1)
    manifest("gate", checkpoint_uri=candidate_model,
             decision={**result.to_dict(), "candidate_uri": candidate_model, "table": result.table()})
    if result.decision == "promote":
        registry = ChampionRegistry(root, family)
        _, token = registry.current()
        registry.promote(Champion(model_uri=candidate_model, metrics=candidate, run_id=run_id, cycle=1),
                         expected_token=token)
        manifest("promote", checkpoint_uri=candidate_model,
                 decision={"promoted": True, "model_uri": candidate_model,
                           "reason": f"champion of {family} is now {candidate_model}"})
    published = publish_summary(p, ctx, build_summary(p, ctx))
    if mlflow:  # as if the cycle had been tracked on an MLflow server (the index points to cycle.json)
        uri = published["cycle_json_uri"]
        store.write_json(uri, {**store.read_json(uri), "mlflow": mlflow})
    return store.read_json(published["cycle_json_uri"])
