"""What a new backend gets by writing its primitives only: `sampling_config`, `generate` (and `generated` for a
remote sampler) and `train`. The eval, the diversity check, scoring with the reward, the manifests and the
completion of a pending job are `Backend`'s own, the same code every shipped backend runs."""

from __future__ import annotations

import pytest
from oracle_backend import Oracle

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete
from rftflow.backends.base import (
    DIVERSITY,
    EVALUATE,
    Generation,
    PendingJob,
    SamplingPlan,
    StageContext,
    StageDeferred,
    deferrable,
    run_remote,
)
from rftflow.backends.local.backend import LocalBackend
from rftflow.cycle.recipes import load_recipe
from rftflow.data.dataset import read_records, write_records
from rftflow.scoring.diversity import sample_prompts

EVAL = "include/data/tiny/eval.jsonl"
TRAIN = "include/data/tiny/train.jsonl"


def _ctx(tmp_path, stage: str) -> StageContext:
    return StageContext(str(tmp_path / "artifacts"), "rft_cycle", "run-1", 1, stage)


def test_an_eval_on_a_backend_of_primitives_is_scored_summarised_and_recorded(tmp_path):
    records = read_records(EVAL)
    expected = sum(int(r.id[-1]) % 2 == 0 for r in records) / len(records)
    backend = Oracle()
    ctx = _ctx(tmp_path, "baseline_eval")
    manifest = backend.evaluate(ctx, "oracle-1", EVAL, "numeric", {"pass_at_k": 4})

    assert manifest.backend == "oracle" and manifest.checkpoint_uri == "oracle-1"
    assert manifest.metrics["pass_at_1"] == pytest.approx(expected) and manifest.metrics["n"] == len(records)
    assert manifest.metrics["k"] == 4 and manifest.metrics["pass_at_k"] == 1.0  # half of each 4 samples pass
    assert set(manifest.metrics["breakdown"]["category"]) == {r.metadata["category"] for r in records}
    assert manifest.metrics["sampling"] == {"seconds": 0.1} and "estimated_cost_usd" not in manifest.metrics
    rows = store.read_jsonl(manifest.outputs["rows_uri"])
    assert [r["id"] for r in rows] == [r.id for r in records] and rows[0]["sample_passed"] == [True, False] * 2
    assert manifest.inputs["eval_uri"] == EVAL and manifest.inputs["config"]["pass_at_k"] == 4
    assert load_complete(ctx.uri) == manifest  # the manifest is written last, and complete
    # the plan it was asked to sample: greedy once, then 4 samples at the recipe's temperature
    assert [(p["name"], p["k"]) for p in backend.plans[0].passes] == [("greedy", 1), ("sampled", 4)]


def test_the_diversity_check_samples_the_same_seeded_prompts_on_every_backend_and_decides(tmp_path):
    backend = Oracle()
    manifest = backend.diversity(_ctx(tmp_path, "diversity_check"), "oracle-1", TRAIN, "numeric",
                                 {"write_filtered": True})
    cfg = load_recipe("local", "diversity", None)
    sample = sample_prompts(read_records(TRAIN), cfg)
    assert backend.plans[0].record_ids() == [r.id for r in sample]  # the sample the other backends draw
    local_plan: list[SamplingPlan] = []

    class Watching(LocalBackend):
        def generate(self, ctx, model_uri, plan, reward):  # noqa: ANN001, ANN201
            local_plan.append(plan)
            return Generation(Oracle.answers(backend, plan))

    Watching(reuse_complete=False).diversity(_ctx(tmp_path, "local_check"), "oracle-1", TRAIN, "numeric",
                                             {"write_filtered": True})
    assert local_plan[0].record_ids() == backend.plans[0].record_ids()
    assert local_plan[0].passes == backend.plans[0].passes
    assert manifest.metrics["mixed"] == 1.0 and manifest.decision["decision"] == "rft"  # every prompt half passes
    assert manifest.metrics["filtered_prompts"] == len(sample)  # every prompt is informative (mixed)
    assert len(read_records(manifest.outputs["filtered_train_uri"])) == len(sample)


def test_a_remote_sampler_defers_and_the_stage_completes_from_its_saved_job_alone(tmp_path):
    """Inside an Airflow task the pending job raises StageDeferred; the resumed task hands the backend only the
    trigger's event: the job, the prompts and the recipe come back from the stage's pending.json."""
    backend = Oracle(remote=True)
    ctx = _ctx(tmp_path, "checkpoint_eval")
    with deferrable(), pytest.raises(StageDeferred) as waiting:
        run_remote(backend, ctx, lambda: backend.start_evaluate(ctx, "oracle-2", EVAL, "numeric", {"max_prompts": 10}))
    assert waiting.value.pending.job_name == "job-checkpoint_eval"
    saved = backend.load_pending(ctx)
    assert saved.details["stage_kind"] == EVALUATE and saved.details["submitted_for"] == "oracle-2"
    assert len(saved.details["record_ids"]) == 10 and load_complete(ctx.uri) is None

    with pytest.raises(RuntimeError, match="the trigger reported job job-other"):
        backend.complete(ctx, None, {"status": "success", "job_name": "job-other"})
    manifest = backend.complete(ctx, None, {"status": "success", "job_name": "job-checkpoint_eval"})
    assert manifest.metrics["n"] == 10 and manifest.metrics["estimated_cost_usd"] == 1.25
    assert manifest.jobs == [{"name": "job-checkpoint_eval", "estimated_cost_usd": 1.25}]
    assert manifest.inputs["job"] == "job-checkpoint_eval" and manifest.checkpoint_uri == "oracle-2"


def test_a_dataset_changed_while_the_job_ran_is_said_not_scored_against_other_prompts(tmp_path):
    data = str(tmp_path / "eval.jsonl")
    write_records(data, read_records(EVAL)[:6])
    backend = Oracle(remote=True)
    ctx = _ctx(tmp_path, "baseline_eval")
    pending = backend.start_diversity(ctx, "oracle-1", data, "numeric", {"max_prompts": 6})
    assert isinstance(pending, PendingJob) and pending.details["stage_kind"] == DIVERSITY
    write_records(data, read_records(EVAL)[6:12])
    with pytest.raises(ValueError, match="changed while the job ran"):
        backend.complete(ctx, None, {"status": "success"})


def test_a_bad_reward_fails_before_anything_is_sampled(tmp_path):
    backend = Oracle()
    with pytest.raises(Exception, match="no_such_reward"):
        backend.evaluate(_ctx(tmp_path, "baseline_eval"), "oracle-1", EVAL, "no_such_reward")
    assert backend.plans == []


def test_a_sampling_job_saved_before_plans_were_kept_with_it_still_completes(tmp_path):
    """A job deferred by an earlier release: its pending.json names the stage "eval", has started_at and no plan;
    the plan is rebuilt from the recipe and the data, and the stage completes on the first resume."""
    backend = Oracle(remote=True)
    ctx = _ctx(tmp_path, "checkpoint_eval")
    backend.save_pending(ctx, PendingJob("oracle_job", "job-old", details={
        "stage_kind": "eval", "model_uri": "oracle-0", "data_uri": EVAL, "reward": "numeric",
        "overrides": {"max_prompts": 12}, "started_at": "2026-12-01T09:00:00+00:00"}))
    manifest = backend.complete(ctx, None, {"status": "success", "job_name": "job-old"})
    assert manifest.metrics["n"] == 12 and manifest.checkpoint_uri == "oracle-0"
    assert manifest.started_at == "2026-12-01T09:00:00+00:00"


def test_a_job_without_a_known_price_costs_unknown_not_zero(tmp_path):
    class Unpriced(Oracle):
        def generated(self, ctx, pending, plan, event):  # noqa: ANN001, ANN201
            gen = super().generated(ctx, pending, plan, event)
            gen.jobs = [{"name": pending.job_name, "estimated_cost_usd": None}]
            return gen

    backend = Unpriced(remote=True)
    ctx = _ctx(tmp_path, "baseline_eval")
    backend.start_evaluate(ctx, "oracle-1", EVAL, "numeric", {"max_prompts": 4})
    manifest = backend.complete(ctx, None, {"status": "success"})
    assert manifest.metrics["estimated_cost_usd"] is None and manifest.jobs[0]["name"] == "job-baseline_eval"
