"""Cycle stages outside Airflow: params validation, retries that reuse manifests, the eval cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete
from rftflow.cycle.context import stage_context
from rftflow.cycle.params import parse_params
from rftflow.cycle.stages import promote as promote_stage
from rftflow.cycle.stages.baseline_eval import baseline_eval
from rftflow.cycle.stages.branches import choose_outcome, plan_training
from rftflow.cycle.stages.promote import promote
from rftflow.cycle.stages.training import start_training
from rftflow.cycle.stages.validate_data import validate_data

TINY_OVERRIDES = {
    "sft": {"max_steps": 6, "warmup_steps": 1, "save_steps": 3, "logging_steps": 2},
    "eval": {"max_prompts": 16},
}


@pytest.fixture
def params(tmp_path):
    return parse_params({"base_model": "tiny", "artifact_root": (tmp_path / "a").as_uri(),
                               "recipe_overrides": TINY_OVERRIDES})


def test_params_errors_name_every_bad_field():
    with pytest.raises(ValueError) as err:
        parse_params({"backend": "azure", "rollouts_per_prompt": 40, "surprise": 1})
    text = str(err.value)
    assert "backend" in text and "rollouts_per_prompt" in text and "surprise: unknown key" in text


def test_relative_data_paths_resolve_to_shipped_files(params):
    assert params.train_uri.startswith("file://") and params.train_uri.endswith("include/data/tiny/train.jsonl")
    assert store.exists(params.train_uri)


def test_plan_training_follows_policy_and_decision(params):
    assert plan_training(params, {"decision": "sft_first"}) == "sft"
    assert plan_training(params, {"decision": "rft"}) == "rft"
    assert plan_training(params, {"decision": "stop_saturated"}) == "stop"
    never = params.model_copy(update={"sft_policy": "never"})
    assert plan_training(never, {"decision": "sft_first"}) == "rft"
    always = params.model_copy(update={"sft_policy": "always"})
    assert plan_training(always, {"decision": "rft"}) == "sft"


@pytest.mark.slow
def test_retried_sft_reuses_its_manifest_and_trains_once(params):
    ctx = stage_context(params, "rft_cycle", "manual__retry", "baseline_eval")
    baseline = baseline_eval(params, ctx)
    assert baseline["model_uri"]
    sft_ctx = ctx.for_stage("sft")
    first = start_training(params, sft_ctx)
    manifest_uri = store.join(sft_ctx.uri, "manifest.json")
    written = store.read_text(manifest_uri)
    metrics = store.read_text(first.outputs["metrics_uri"])
    again = start_training(params, sft_ctx)  # what a retried or cleared task does
    assert again == first
    assert store.read_text(manifest_uri) == written, "the manifest was rewritten: the stage ran again"
    assert store.read_text(first.outputs["metrics_uri"]) == metrics, "training ran a second time"


@pytest.mark.slow
def test_unchanged_baseline_is_not_re_evaluated(params):
    first_ctx = stage_context(params, "rft_cycle", "scheduled__1", "baseline_eval")
    first = baseline_eval(params, first_ctx)
    second_ctx = stage_context(params, "rft_cycle", "scheduled__2", "baseline_eval")
    second = baseline_eval(params, second_ctx)
    assert second["pass_at_1"] == first["pass_at_1"]
    cached = load_complete(second_ctx.uri)  # the stage's manifest is the start model's eval
    assert cached.inputs["cached_from"] == first_ctx.uri
    # a different eval set is a different key: evaluated afresh
    other = params.model_copy(update={"recipe_overrides": {**TINY_OVERRIDES, "eval": {"max_prompts": 8}}})
    third_ctx = stage_context(other, "rft_cycle", "scheduled__3", "baseline_eval")
    baseline_eval(other, third_ctx)
    assert "cached_from" not in load_complete(third_ctx.uri).inputs


def test_choose_outcome_routes_promotion_through_approval_when_asked(params):
    assert choose_outcome(params, {"decision": "promote"}) == "promote"
    assert choose_outcome(params, {"decision": "iterate"}) == "iterate"
    assert choose_outcome(params, {"decision": "reject"}) == "reject"
    gated = params.model_copy(update={"require_approval": True})
    assert choose_outcome(gated, {"decision": "promote"}) == ["approve_promotion", "promote"]


def test_unapproved_promotion_is_reported_as_not_promoted(params):
    from rftflow.artifacts.manifest import StageManifest
    from rftflow.publish.summary import _outcome

    gate = StageManifest(dag_id="d", run_id="r", cycle=1, stage="gate", backend="local",
                         started_at="t", finished_at="t", duration_s=0.0,
                         decision={"decision": "promote", "reasons": []})
    gated = params.model_copy(update={"require_approval": True})
    outcome, reason = _outcome(gated, {"gate": gate})
    assert outcome == "not_promoted" and "reviewer" in reason


def test_unchanged_data_is_validated_once(params, tmp_path):
    first_ctx = stage_context(params, "rft_cycle", "scheduled__1", "validate_data")
    first = validate_data(params, first_ctx)
    second_ctx = stage_context(params, "rft_cycle", "scheduled__2", "validate_data")
    second = validate_data(params, second_ctx)
    assert second == {**first, "manifest_uri": store.join(second_ctx.uri, "manifest.json")}
    assert load_complete(second_ctx.uri).inputs["cached_from"] == first_ctx.uri

    # One changed eval row is new data: validated afresh, and a failing file is never remembered as good.
    lines = store.read_text(params.eval_uri).splitlines()
    changed = tmp_path / "eval.jsonl"
    changed.write_text("\n".join(lines[:-1] + ['{"id": "x", "messages": []}']) + "\n")
    other = params.model_copy(update={"eval_uri": changed.as_uri()})
    for run in ("scheduled__3", "scheduled__4"):
        with pytest.raises(ValueError, match="eval.jsonl"):
            validate_data(other, stage_context(other, "rft_cycle", run, "validate_data"))
    changed.write_text("\n".join(lines[:-1]) + "\n")
    fourth_ctx = stage_context(other, "rft_cycle", "scheduled__5", "validate_data")
    assert validate_data(other, fourth_ctx)["eval_rows"] == len(lines) - 1
    assert "cached_from" not in load_complete(fourth_ctx.uri).inputs


def _promote_setup(params):
    from rftflow.artifacts.manifest import StageManifest, write_manifest
    from rftflow.artifacts.registry import Champion, ChampionRegistry

    ctx = stage_context(params, "rft_cycle", "manual__promote", "promote")
    registry = ChampionRegistry(params.artifact_root, params.model_family)
    old = registry.promote(Champion(model_uri="file:///models/old", run_id="before", cycle=1), expected_token=None)
    eval_ctx = ctx.for_stage("checkpoint_eval")
    write_manifest(eval_ctx.uri, StageManifest(dag_id="rft_cycle", run_id=ctx.run_id, cycle=1,
                                               stage="checkpoint_eval", backend="local", started_at="t",
                                               finished_at="t", duration_s=0.0, metrics={"pass_at_1": 0.7}))
    # the champion the cycle's baseline compared against (its registry part): promote swaps only from it
    write_manifest(ctx.for_stage("baseline_eval.registry").uri, StageManifest(
        dag_id="rft_cycle", run_id=ctx.run_id, cycle=1, stage="baseline_eval.registry", backend="local",
        started_at="t", finished_at="t", duration_s=0.0, outputs={"champion_token": old}))
    return ctx, registry, old


def test_a_promote_retried_after_a_crash_past_the_swap_finishes_its_promotion(params, monkeypatch):
    ctx, registry, old = _promote_setup(params)

    def crash(*args, **kwargs):
        raise RuntimeError("worker lost after the swap")

    with monkeypatch.context() as m:
        m.setattr(promote_stage, "record", crash)
        with pytest.raises(RuntimeError, match="worker lost"):
            promote(params, ctx, "file:///models/new")
    assert registry.current()[0].model_uri == "file:///models/new"  # the swap landed
    result = promote(params, ctx, "file:///models/new")  # the retry
    assert result["promoted"] is True, result["reason"]
    assert result["token"] == registry.current()[1]
    assert result["asset_uri"].endswith(params.model_family) and result["asset_extra"]["metrics"] == {"pass_at_1": 0.7}
    assert "earlier attempt" in result["reason"]
    assert len(registry.history()) == 2  # finished, not promoted twice


def test_a_promote_that_lost_a_real_race_is_still_not_promoted(params):
    from rftflow.artifacts.registry import Champion

    ctx, registry, old = _promote_setup(params)
    registry.promote(Champion(model_uri="file:///models/other", run_id="other-run", cycle=1), expected_token=old)
    result = promote(params, ctx, "file:///models/new")
    assert result["promoted"] is False and "champion changed" in result["reason"]


def test_a_promote_in_a_run_whose_baseline_kept_the_pointer_itself_still_swaps_from_it(params):
    """A run started before the baseline's registry part existed kept the champion token in its own outputs."""
    from rftflow.artifacts.manifest import StageManifest, write_manifest

    ctx, registry, old = _promote_setup(params)
    Path(store.local_path(ctx.for_stage("baseline_eval.registry").uri), "manifest.json").unlink()
    write_manifest(ctx.for_stage("baseline_eval").uri, StageManifest(
        dag_id="rft_cycle", run_id=ctx.run_id, cycle=1, stage="baseline_eval", backend="local", started_at="t",
        finished_at="t", duration_s=0.0, outputs={"xcom": {"champion_token": old}}))
    assert promote(params, ctx, "file:///models/new")["promoted"] is True


@pytest.mark.slow
def test_the_baseline_evaluates_the_champion_beside_the_start_model_and_records_the_pointer_first(params, capsys):
    """The stage's manifest is the start model's eval; the champion's eval and the champion pointer the cycle
    compares against are its parts; a champion that is the start model is not evaluated (nor billed) twice."""
    from rftflow.artifacts.registry import Champion, ChampionRegistry
    from rftflow.backends.local.backend import LocalBackend
    from rftflow.cycle.stages.gate import gate

    champion_uri = LocalBackend().build_tiny(params.artifact_root, seed=1)
    registry = ChampionRegistry(params.artifact_root, params.model_family)
    token = registry.promote(Champion(model_uri=champion_uri, run_id="earlier", cycle=1), expected_token=None)
    ctx = stage_context(params, "rft_cycle", "manual__champ", "baseline_eval")
    out = baseline_eval(params, ctx)

    start_eval = load_complete(ctx.uri)
    champion_eval = load_complete(ctx.for_stage("baseline_eval.champion").uri)
    pointer = load_complete(ctx.for_stage("baseline_eval.registry").uri)
    assert start_eval.checkpoint_uri == out["model_uri"] != champion_uri == champion_eval.checkpoint_uri
    assert start_eval.metrics["n"] == champion_eval.metrics["n"] == 16 and start_eval.outputs["rows_uri"]
    assert pointer.outputs == {"champion_token": token, "champion_model_uri": champion_uri}
    assert out["champion_token"] == token and out["champion_pass_at_1"] == champion_eval.metrics["pass_at_1"]

    # a retry after the champion moved compares against the champion this cycle found, not the new one
    registry.promote(Champion(model_uri=out["model_uri"], run_id="meanwhile", cycle=1), expected_token=token)
    assert baseline_eval(params, ctx) == out

    # the gate compares the candidate with both, from those manifests
    store.copy_prefix(ctx.uri, ctx.for_stage("checkpoint_eval").uri)
    decision = gate(params, ctx.for_stage("gate"))
    assert {c["versus"] for c in decision["comparisons"]} >= {"baseline", "champion"}
    # and so does `rftflow gate` on the stored folders: the champion's eval is found beside the baseline's
    from rftflow.cli.main import main as cli_main

    assert cli_main(["gate", store.local_path(ctx.uri), store.local_path(ctx.for_stage("checkpoint_eval").uri),
                     "--json"]) == 0
    again_decided = json.loads(capsys.readouterr().out)
    assert {c["versus"] for c in again_decided["comparisons"]} == {c["versus"] for c in decision["comparisons"]}

    # the champion is the start model: its eval is the start model's, reused from the cache and not billed
    start_from_champion = params.model_copy(update={"base_model": "champion"})
    again = stage_context(start_from_champion, "rft_cycle", "manual__champ2", "baseline_eval")
    baseline_eval(start_from_champion, again)
    reused = load_complete(again.for_stage("baseline_eval.champion").uri)
    assert reused.inputs["cached_from"] in {again.uri, ctx.uri}


def test_later_tasks_read_the_params_validate_data_resolved(params, tmp_path):
    """validate_data resolves the run's params once (artifact root from its worker's environment, data paths as
    URIs) and returns them; a later task on a worker with another RFTFLOW_ARTIFACT_ROOT still writes where the
    run's first task said, because it reads that copy."""
    from types import SimpleNamespace

    from rftflow.cycle.context import for_task

    ctx = stage_context(params, "rft_cycle", "manual__resolved", "validate_data")
    result = validate_data(params, ctx)
    assert result["ok"] and result["params"] == params.model_dump(mode="json")
    pulled: list[str] = []
    ti = SimpleNamespace(xcom_pull=lambda task_ids: pulled.append(task_ids) or result)
    context = {"params": {"artifact_root": (tmp_path / "another-workers-default").as_uri()}, "ti": ti,
               "dag": SimpleNamespace(dag_id="rft_cycle"), "run_id": "manual__resolved",
               "task": SimpleNamespace(task_id="gate")}
    p, gate_ctx = for_task(context, "gate")
    assert pulled == ["validate_data"] and p == params
    assert gate_ctx.uri == ctx.for_stage("gate").uri
    context["task"] = SimpleNamespace(task_id="validate_data")  # the first task parses the run's own params
    assert for_task(context, "validate_data")[0].artifact_root == context["params"]["artifact_root"]


def test_a_validation_cache_hit_records_the_runs_own_params(params):
    """Unchanged data is not re-validated, but the manifest names the params of the run that reused the verdict."""
    from rftflow.artifacts.manifest import load_complete

    first = stage_context(params, "rft_cycle", "manual__v1", "validate_data")
    validate_data(params, first)
    other = params.model_copy(update={"model_family": "another-family", "max_cycles": 3})
    second = stage_context(other, "rft_cycle", "manual__v2", "validate_data")
    result = validate_data(other, second)
    manifest = load_complete(second.uri)
    assert manifest.inputs["cached_from"] == first.uri  # the verdict was reused
    assert manifest.outputs["params"] == other.model_dump(mode="json") == result["params"]


def test_an_eval_completed_after_a_deferral_is_remembered_and_a_hit_names_this_runs_model(params, tmp_path):
    """The eval job a task deferred on is completed by the resumed task; the task's next pass finds the stage's
    manifest and remembers it in the eval cache, so the same model's next eval (here: the same content at
    another path) is a cache hit, recorded under this run's name of the model and not billed."""
    from oracle_backend import Oracle

    from rftflow.backends.base import StageDeferred, deferrable
    from rftflow.cycle import cache

    backend = Oracle(remote=True)
    first, second = tmp_path / "m1", tmp_path / "m2"
    for folder in (first, second):
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "oracle"}')
    p = params.model_copy(update={"recipe_overrides": {"eval": {"max_prompts": 8}}})
    ctx = stage_context(p, "rft_cycle", "manual__defer", "baseline_eval")
    with deferrable(), pytest.raises(StageDeferred):
        cache.cached_eval(p, ctx, backend, first.as_uri())
    backend.complete(ctx, None, {"status": "success"})  # what the resumed task does
    evals = cache.cached_eval(p, ctx, backend, first.as_uri())  # the task runs again
    assert evals.metrics["n"] == 8 and "cached_from" not in evals.inputs

    later = stage_context(p, "rft_cycle", "manual__later", "baseline_eval")
    hit = cache.cached_eval(p, later, backend, second.as_uri())
    assert hit.inputs["cached_from"] == ctx.uri and hit.checkpoint_uri == second.as_uri()
    assert len(backend.plans) == 1  # sampled once
