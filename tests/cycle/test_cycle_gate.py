"""The gate stage inside a cycle: params checked up front, the recheck obeyed, looks counted, holds routed
to a person, and `rftflow gate` re-running a stored decision with other settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, load_complete, write_manifest
from rftflow.cli.main import main as cli_main
from rftflow.cycle.context import stage_context
from rftflow.cycle.params import parse_params
from rftflow.cycle.stages.branches import choose_outcome, plan_rft
from rftflow.cycle.stages.checkpoint_eval import DRIFT
from rftflow.cycle.stages.gate import gate, record_look
from rftflow.cycle.stages.stop import stop
from rftflow.publish.summary import build_summary
from rftflow.scoring.gate_simulation import simulate_pairs


@pytest.fixture
def params(tmp_path):
    return parse_params({"base_model": "tiny", "artifact_root": (tmp_path / "a").as_uri(),
                               "model_family": "gate-test"})


def test_a_guards_typo_fails_the_first_task_with_the_field_name(tmp_path):
    with pytest.raises(ValueError, match="kl_maxx"):
        parse_params({"base_model": "tiny", "guards": {"kl_maxx": 1.0}})
    with pytest.raises(ValueError, match="field=value"):
        parse_params({"base_model": "tiny", "protected_slices": ["add"]})
    with pytest.raises(ValueError, match="set them there"):
        parse_params({"base_model": "tiny", "guards": {"confidence": 0.9}})
    ok = parse_params({"base_model": "tiny", "guards": {"kl_max": 0.5, "split_min_prompts": 0},
                             "gate_confidence": 0.9, "protected_slices": ["category=add"]})
    cfg = ok.gate_config()
    assert (cfg.kl_max, cfg.confidence, cfg.protected_slices) == (0.5, 0.9, ["category=add"])


def test_the_recheck_decision_is_obeyed(params):
    assert plan_rft(params, {"decision": "sft_first"}) == "stop"
    assert plan_rft(params, {"decision": "rft"}) == "rft"
    assert plan_rft(params, {"decision": "stop_saturated"}) == "rft"  # rft records the SFT model


def _manifest(ctx, **fields) -> StageManifest:
    m = StageManifest(dag_id=ctx.dag_id, run_id=ctx.run_id, cycle=ctx.cycle, stage=ctx.stage, backend="local",
                      started_at="2026-12-01T00:00:00+00:00", finished_at="2026-12-01T00:00:01+00:00",
                      duration_s=1.0, **fields)
    write_manifest(ctx.uri, m)
    return m


def test_stop_after_an_insufficient_sft_says_why(params):
    ctx = stage_context(params, "rft_cycle", "manual__1", "stop")
    _manifest(ctx.for_stage("diversity_recheck"),
              decision={"decision": "sft_first", "reason": "all-fail 97% > 70%"})
    decision = stop(params, ctx)
    assert decision["decision"] == "stop_sft_insufficient"
    assert "GRPO has nothing to learn from" in decision["reason"] and "97%" in decision["reason"]
    summary = build_summary(params, ctx)
    assert summary["outcome"] == "stopped" and "after SFT" in summary["outcome_reason"]


def test_a_hold_goes_to_a_person_even_without_require_approval(params):
    assert choose_outcome(params, {"decision": "hold"}) == ["approve_promotion", "promote"]
    assert choose_outcome(params, {"decision": "iterate"}) == "iterate"


def test_looks_are_counted_per_eval_set_and_a_retry_is_not_a_new_look(params, tmp_path):
    first = stage_context(params, "rft_cycle", "manual__1", "gate")
    second = stage_context(params, "rft_cycle", "manual__2", "gate")
    assert record_look(params, first) == 1
    assert record_look(params, second) == 2
    assert record_look(params, first) == 1  # the retried gate of run 1
    other_eval = tmp_path / "eval.jsonl"
    other_eval.write_text(store.read_text(params.eval_uri).splitlines()[0] + "\n")
    fresh = params.model_copy(update={"eval_uri": other_eval.as_uri()})
    assert record_look(fresh, stage_context(fresh, "rft_cycle", "manual__3", "gate")) == 1


def _stored_cycle(params, gain: float, *, n: int = 500, seed: int = 0, run_id: str = "manual__g"):
    """Baseline and candidate evals written as real stage manifests + rows, and a healthy RFT log."""
    rng = np.random.default_rng(seed)
    base_rows, cand_rows = simulate_pairs(n, 0.6, gain, 0.15, rng)
    ctx = stage_context(params, "rft_cycle", run_id, "gate")
    for stage, rows in (("baseline_eval", base_rows), ("checkpoint_eval", cand_rows)):
        sctx = ctx.for_stage(stage)
        rows_uri = store.join(sctx.uri, "rows.jsonl")
        store.write_text(rows_uri, "".join(json.dumps(r) + "\n" for r in rows))
        rate = float(np.mean([r["passed"] for r in rows]))
        _manifest(sctx, outputs={"rows_uri": rows_uri}, checkpoint_uri=f"file:///models/{stage}",
                  metrics={"pass_at_1": rate, "mean_reward": rate, "mean_response_tokens": 12.0, "n": n})
    rctx = ctx.for_stage("rft")
    metrics_uri = store.join(rctx.uri, "metrics.jsonl")
    log = [{"step": s, "critic/rewards/mean": 0.6 + s / 1000, "response_length/mean": 12.0,
            "actor/entropy": 0.5 - s / 1000} for s in range(5, 65, 5)]
    log.append(dict(log[-1]))  # a resumed trainer logged the last step twice: counted once
    store.write_text(metrics_uri, "".join(json.dumps(r) + "\n" for r in log))
    _manifest(rctx, outputs={"metrics_uri": metrics_uri}, checkpoint_uri="file:///models/checkpoint_eval")
    _manifest(ctx.for_stage(DRIFT), metrics={"kl": 0.05, "completions": n, "tokens": 12 * n})
    return ctx


def test_gate_stage_decides_from_stored_rows_and_is_reused_on_retry(params):
    ctx = _stored_cycle(params, 0.10)
    decision = gate(params, ctx)
    assert decision["decision"] == "promote", decision["table"]
    assert decision["look"] == 1 and "newly passed" in decision["reason"]
    assert gate(params, ctx) == decision  # a retry reuses the manifest
    manifest = load_complete(ctx.uri)
    assert manifest.decision["decision"] == "promote"
    # its lineage: the manifests it read, by the role the stage graph gives them (the champion and SFT evals
    # did not run in this cycle, so they are not named)
    assert manifest.inputs["upstream"] == {
        "baseline": store.join(ctx.for_stage("baseline_eval").uri, "manifest.json"),
        "candidate": store.join(ctx.for_stage("checkpoint_eval").uri, "manifest.json"),
        "training": store.join(ctx.for_stage("rft").uri, "manifest.json"),
        "drift": store.join(ctx.for_stage(DRIFT).uri, "manifest.json")}


def test_a_stage_reads_only_the_inputs_the_graph_gives_it(params):
    from rftflow.cycle.graph import inputs_of

    inputs = inputs_of(stage_context(params, "rft_cycle", "manual__i", "promote"))
    assert sorted(inputs.folders) == ["baseline", "candidate", "registry"]
    with pytest.raises(KeyError, match="'training' is not an input of this stage.*its inputs: registry, baseline, "
                                       "candidate"):
        inputs.manifest("training")
    # what the candidate's training started from, through the graph: SFT's checkpoint first, else the baseline's
    checkpoint_eval = inputs_of(stage_context(params, "rft_cycle", "manual__i", "checkpoint_eval"))
    assert [u.rsplit("/", 1)[-1] for u in checkpoint_eval.of("training").starts_from] == ["sft", "baseline_eval"]


def test_an_inconclusive_gain_on_the_last_cycle_is_held_and_reported_so(params):
    ctx = _stored_cycle(params, 0.01, run_id="manual__h")
    decision = gate(params, ctx)
    assert decision["decision"] == "hold", decision["table"]
    summary = build_summary(params, ctx)
    assert summary["outcome"] == "held" and "not approved" in summary["outcome_reason"]


def test_cli_gate_reruns_a_stored_decision_with_another_margin(params, capsys):
    ctx = _stored_cycle(params, 0.06, run_id="manual__c", seed=3)
    stored = gate(params, ctx)
    assert stored["decision"] == "promote", stored["table"]
    base, cand = ctx.for_stage("baseline_eval").uri, ctx.for_stage("checkpoint_eval").uri
    assert cli_main(["gate", base, cand]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gate: PROMOTE")
    assert cli_main(["gate", base, cand, "--margin", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gate: HOLD") and "stored decision of this cycle was PROMOTE" in out
    assert cli_main(["gate", base, cand, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "promote"
    assert cli_main(["gate", base, str(store.local_path(ctx.uri)) + "/nowhere"]) == 2
    assert "expected an eval stage folder" in capsys.readouterr().out


def test_the_cycle_cost_counts_each_eval_once_and_nothing_reused_from_the_cache(params):
    """The summary bills every part of a stage (the champion's and the SFT checkpoint's evals too), but an eval
    reused from the cache paid for nothing in this run."""
    ctx = _stored_cycle(params, 0.10, run_id="manual__cost")
    job = {"service": "bedrock", "name": "eval-job", "estimated_cost_usd": 2.0}
    _manifest(ctx.for_stage("baseline_eval"), jobs=[job])
    _manifest(ctx.for_stage("checkpoint_eval.rft_start"), jobs=[{**job, "estimated_cost_usd": 0.5}])
    _manifest(ctx.for_stage("baseline_eval.champion"), jobs=[{**job, "estimated_cost_usd": 3.0}],
              inputs={"cached_from": "file:///earlier-run/cycle-1/baseline_eval"})
    assert build_summary(params, ctx)["cost_usd"] == 2.5
