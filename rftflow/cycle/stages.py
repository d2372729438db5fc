"""The stages of one rft_cycle run, as plain functions the DAG's tasks call.

Each function takes the validated `CycleParams` and a `StageContext`, reuses a complete manifest when
it finds one (retries and cleared tasks pay nothing twice), and returns a small dict for XCom.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, load_complete, package_versions, write_manifest
from rftflow.artifacts.registry import Champion, ChampionRegistry, PromotionConflict
from rftflow.backends.base import Backend, PendingJob, StageContext, get_backend, run_remote
from rftflow.cycle.params import CycleParams, parse_params  # noqa: F401  (callers' path until the split)
from rftflow.cycle.recipes import RecipeError

log = logging.getLogger(__name__)

def stage_context(p: CycleParams, dag_id: str, run_id: str, stage: str) -> StageContext:
    return StageContext(p.artifact_root, dag_id, run_id, p.cycle, stage)


def for_task(context: Any, stage: str) -> tuple[CycleParams, StageContext]:
    """(params, StageContext) for a running Airflow task: the one place tasks learn where they write."""
    p = parse_params(dict(context["params"]))
    return p, stage_context(p, context["dag"].dag_id, context["run_id"], stage)


def backend_for(p: CycleParams, *, detach_training: bool = False) -> Backend:
    """The run's backend. detach_training: local sft/rft leave the trainer running and return a PendingJob
    (the training task then defers); remote backends always submit and return one."""
    if detach_training and p.backend == "local":
        return get_backend("local", detach_training=True)
    return get_backend(p.backend)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record(ctx: StageContext, p: CycleParams, started: float, **fields: Any) -> StageManifest:
    """Write a bookkeeping manifest for a stage that ran no backend work (validation, gate, ...)."""
    manifest = StageManifest(
        dag_id=ctx.dag_id, run_id=ctx.run_id, cycle=ctx.cycle, stage=ctx.stage, backend=p.backend,
        started_at=datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"), finished_at=_now(),
        duration_s=round(time.time() - started, 3), versions=package_versions(), **fields,
    )
    write_manifest(ctx.uri, manifest)
    return manifest


def _reused(ctx: StageContext) -> StageManifest | None:
    manifest = load_complete(ctx.uri)
    if manifest is not None:
        log.info("%s: reusing the complete manifest at %s", ctx.stage, ctx.uri)
    return manifest


# ------------------------------------------------------------------------------------ validate_data
def validate_data(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """Schema and dataset-level checks on train/eval (and SFT demos), plus recipe overrides."""
    from rftflow.cycle.recipes import load_recipe
    from rftflow.data.dataset import read_records
    from rftflow.data.validation import validate_dataset

    if (m := _reused(ctx)) is not None:
        return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **m.metrics}
    started = time.time()
    if p.backend == "local":
        for stage in ("eval", "diversity", "sft", "rft"):
            try:
                load_recipe("local", stage, p.overrides(stage))
            except RecipeError as err:
                raise ValueError(f"recipe_overrides.{stage} does not fit the local {stage} recipe:\n{err}") from None
    else:  # ray or AWS: the cluster (its role, reward Lambda) and every stage's recipe, before any paid call
        stages = ("sft", "rft", "eval") if _uses_sft_data(p) else ("rft", "eval")
        problems = backend_for(p).preflight(model=_configured_model(p), reward=p.reward,
                                            overrides={s: p.overrides(s) for s in stages}, stages=stages)
        if problems:
            raise ValueError(f"the {p.backend} backend cannot run this cycle as configured (nothing was "
                             "submitted):\n- " + "\n- ".join(problems))
    from rftflow.publish.notify import validate_targets

    validate_targets(p.notify)
    key = validation_cache_key(p)
    if (cached := _from_cache(p, ctx, "validation", key)) is not None:
        return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **cached.metrics}
    region, flavour = _aws_target(p)
    report = validate_dataset(p.train_uri, p.eval_uri, backend=p.backend, report_dir_uri=ctx.uri, reward=p.reward,
                              region=region, flavour=flavour, model=_configured_model(p),
                              customizations=("SFT", "RFT") if _uses_sft_data(p) else ("RFT",))
    metrics: dict[str, Any] = {"ok": report.ok}
    if _uses_sft_data(p):
        metrics["sft_rows"] = len(read_records(p.sft_uri, kind="sft"))
    summary = report.to_dict()
    manifest = _record(ctx, p, started, inputs={"train_uri": p.train_uri, "eval_uri": p.eval_uri,
                                                "sft_uri": p.sft_uri},
                       outputs={k: v for k, v in summary.items() if k.endswith("_uri")},
                       metrics={**metrics, **{k: v for k, v in summary.items() if k in ("train_rows", "eval_rows")}})
    _remember(p, ctx, "validation", key)
    return {"manifest_uri": store.join(ctx.uri, "manifest.json"), **manifest.metrics}


def _uses_sft_data(p: CycleParams) -> bool:
    return bool(p.sft_uri) and p.sft_policy != "never"


def _configured_model(p: CycleParams) -> str:
    """The model the params name (the fallback stands for the champion, which continues from it)."""
    return p.fallback_model if p.base_model == "champion" else p.base_model


def _aws_target(p: CycleParams) -> tuple[str | None, str | None]:
    """(region, flavour) an AWS backend would submit to, so validate_data can refuse a region the chosen
    models and images are not published in; (None, None) off AWS or when no region is set."""
    if p.backend not in ("sagemaker", "bedrock"):
        return None, None
    try:
        backend = backend_for(p)
        options = getattr(backend, "options", None)
        return backend.region, getattr(options, "flavour", None)
    except Exception as err:  # no connection or region configured: the submit path says so later
        log.info("validate_data: no AWS region to check (%s)", err)
        return None, None


def validation_cache_key(p: CycleParams) -> str:
    """Content hash of (train, eval and SFT data, backend, the checks' own code): data that passed once
    is not re-validated while none of these changes."""
    rules = hashlib.sha256()
    for module in ("data/validation.py", "data/dataset.py", "backends/aws/availability.py"):
        rules.update((Path(__file__).parents[1] / module).read_bytes())
    parts = {
        "backend": p.backend, "train": _file_digest(p.train_uri), "eval": _file_digest(p.eval_uri),
        "sft": _file_digest(p.sft_uri) if _uses_sft_data(p) else None, "rules": rules.hexdigest(),
        "reward": p.reward, "target": _aws_target(p), "model": _configured_model(p),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------------ baseline_eval
def _file_digest(uri: str) -> str:
    return hashlib.sha256(store.read_bytes(uri)).hexdigest()


def _model_digest(model_uri: str) -> str:
    """Content hash of a local model directory; remote checkpoints (s3://, Bedrock model ids and ARNs) are
    immutable, so their URI is enough."""
    try:
        path = store.local_path(model_uri)
    except store.UnsupportedURIError:
        return "uri:" + model_uri
    if path is None or not Path(path).is_dir():
        return "uri:" + model_uri
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json", ".bin", ".model", ".txt"):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _reward_digest(reward: str) -> str:
    try:
        from rftflow.rewards.runner import load_reward

        path = Path(load_reward(reward).path)
    except Exception:  # a Lambda ARN: its name is its identity
        return reward
    files = [path]
    if reward.startswith("shaped_"):  # the shaping wrapper scores through its inner handler's file
        files.append(path.with_name(reward.removeprefix("shaped_") + ".py"))
    return reward + ":" + ":".join(_file_digest(f.as_uri()) for f in files if f.exists())


def eval_cache_key(p: CycleParams, model_uri: str) -> str:
    """Content hash of (model, eval data, reward function, decoding settings)."""
    parts = {
        "backend": p.backend, "model": _model_digest(model_uri), "eval": _file_digest(p.eval_uri),
        "reward": _reward_digest(p.reward), "decoding": p.overrides("eval"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _cache_pointer(p: CycleParams, kind: str, key: str) -> str:
    return store.join(p.artifact_root, "cache", kind, f"{key}.json")


def _from_cache(p: CycleParams, ctx: StageContext, kind: str, key: str) -> StageManifest | None:
    """The complete manifest an earlier stage recorded under this content hash, recorded again as ctx's own
    (so later stages find it where they look); None on a miss or when the cached stage is gone."""
    pointer = _cache_pointer(p, kind, key)
    if not store.exists(pointer):
        return None
    source = store.read_json(pointer)["stage_uri"]
    cached = load_complete(source)
    if cached is None:
        return None
    log.info("%s: %s cache hit %s (inputs unchanged since %s)", ctx.stage, kind, key, source)
    if cached.run_id == ctx.run_id and cached.stage == ctx.stage and cached.cycle == ctx.cycle:
        return cached
    copy = cached.model_copy(update={"run_id": ctx.run_id, "cycle": ctx.cycle, "stage": ctx.stage,
                                     "inputs": {**cached.inputs, "cached_from": source}})
    write_manifest(ctx.uri, copy)
    return copy


def _remember(p: CycleParams, ctx: StageContext, kind: str, key: str, **extra: Any) -> None:
    store.write_json(_cache_pointer(p, kind, key), {"stage_uri": ctx.uri, **extra, "written_at": _now()})


def cached_eval(p: CycleParams, ctx: StageContext, backend: Backend, model_uri: str) -> StageManifest:
    """Evaluate `model_uri`, or reuse an earlier eval with the same content hash."""
    key = eval_cache_key(p, model_uri)
    if (cached := _from_cache(p, ctx, "eval", key)) is not None:
        return cached
    manifest = load_complete(ctx.uri) or run_remote(  # complete: the eval job this task waited for
        backend, ctx, lambda: backend.start_evaluate(ctx, model_uri, p.eval_uri, p.reward, p.overrides("eval")))
    _remember(p, ctx, "eval", key, model_uri=model_uri)
    return manifest


def baseline_eval(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """Evaluate the start model (and the champion, when it is another model)."""
    if (m := _reused(ctx)) is not None:
        return m.outputs["xcom"]
    started = time.time()
    backend = backend_for(p)
    champion, token = ChampionRegistry(p.artifact_root, p.model_family).current()
    if p.base_model == "champion":
        start = champion.model_uri if champion else p.fallback_model
    else:
        start = p.base_model
    model_uri = backend.resolve_model(start, ctx)
    evals = cached_eval(p, ctx.for_stage("baseline_eval.model"), backend, model_uri)
    champion_eval = None
    if champion is not None:
        champion_eval = evals if champion.model_uri == model_uri else \
            cached_eval(p, ctx.for_stage("baseline_eval.champion"), backend, champion.model_uri)
    champion_metrics = champion_eval.metrics if champion_eval is not None else None
    champion_rows_uri = champion_eval.outputs.get("rows_uri") if champion_eval is not None else None
    xcom = {"model_uri": model_uri, "start": start, "champion_token": token,
            "champion_model_uri": champion.model_uri if champion else None,
            "pass_at_1": evals.metrics.get("pass_at_1"), "mean_reward": evals.metrics.get("mean_reward")}
    _record(ctx, p, started, inputs={"start": start, "model_uri": model_uri, "eval_uri": p.eval_uri},
            outputs={"eval_manifest_uri": store.join(ctx.for_stage("baseline_eval.model").uri, "manifest.json"),
                     "xcom": xcom, "rows_uri": evals.outputs.get("rows_uri"), "champion_rows_uri": champion_rows_uri},
            checkpoint_uri=model_uri, metrics=evals.metrics,
            decision={"champion": champion_metrics} if champion_metrics is not None else None)
    return xcom


# ---------------------------------------------------------------------------- diversity / training
def diversity_check(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """k rollouts per training prompt on the stage's start model; the decision and its reason."""
    model_uri = start_model(ctx, "diversity_recheck") if ctx.stage == "diversity_recheck" else \
        _checkpoint(ctx, "baseline_eval")
    if model_uri is None:
        raise RuntimeError("diversity_check: baseline_eval has no complete manifest in this run")
    backend = backend_for(p)
    manifest = _reused(ctx) or run_remote(backend, ctx, lambda: backend.start_diversity(
        ctx, model_uri, p.train_uri, p.reward, p.overrides("diversity")))
    decision = manifest.decision or {}
    log.info("%s: %s — %s", ctx.stage, decision.get("decision"), decision.get("reason"))
    return {"decision": decision.get("decision"), "reason": decision.get("reason"), "model_uri": model_uri,
            "mixed": manifest.metrics.get("mixed"), "all_fail": manifest.metrics.get("all_fail"),
            "all_pass": manifest.metrics.get("all_pass")}


def plan_training(p: CycleParams, diversity: dict[str, Any]) -> Literal["sft", "rft", "stop"]:
    """The branch after the first diversity check: SFT first, straight to RFT, or nothing to learn."""
    if p.sft_policy == "always":
        return "sft"
    decision = diversity["decision"]
    if decision == "stop_saturated":
        return "stop"
    if decision == "sft_first" and p.sft_policy == "auto":
        return "sft"
    return "rft"


def plan_rft(p: CycleParams, recheck: dict[str, Any]) -> Literal["rft", "stop"]:
    """The branch after the recheck on the SFT checkpoint: RFT only when its rollouts can teach GRPO.

    `sft_first` again means SFT did not make the rollouts mixed (they still nearly all fail): GRPO would
    get no signal, so the cycle stops and says so. `stop_saturated` goes on to rft, which records the SFT
    checkpoint itself as the candidate (nothing left for GRPO to learn; the gate judges the SFT model).
    """
    return "stop" if recheck.get("decision") == "sft_first" else "rft"


def _checkpoint(ctx: StageContext, stage: str) -> str | None:
    manifest = load_complete(ctx.for_stage(stage).uri)
    return manifest.checkpoint_uri if manifest else None


def start_model(ctx: StageContext, stage: str) -> str:
    """The model a stage starts from: the SFT checkpoint when SFT ran in this cycle, else the baseline."""
    from rftflow.cycle import graph

    chain = graph.stage(stage).starts_from
    if not chain:
        raise ValueError(f"{stage}: not a stage that starts from a model (rftflow.cycle.graph)")
    for upstream in chain:
        if (uri := _checkpoint(ctx, upstream)) is not None:
            return uri
    raise RuntimeError(f"{stage}: none of {chain} has a complete manifest with a checkpoint in this run")


def start_training(p: CycleParams, ctx: StageContext, *, detach: bool = False) -> StageManifest | PendingJob:
    """Run (local) or submit (AWS) the sft or rft stage; a complete manifest is reused. detach: a local
    trainer is started (or adopted) and left running, and its PendingJob returned for the task to defer on."""
    if (m := _reused(ctx)) is not None:
        return m
    model_uri = start_model(ctx, ctx.stage)
    if ctx.stage == "rft":
        recheck = load_complete(ctx.for_stage("diversity_recheck").uri)
        if recheck is not None and (recheck.decision or {}).get("decision") == "stop_saturated":
            return skip_rft(p, ctx, model_uri, "after SFT the rollouts all pass: "
                            + recheck.decision.get("reason", ""))
    backend = backend_for(p, detach_training=detach)
    if ctx.stage == "sft":
        if not p.sft_uri:
            raise ValueError("the SFT branch was taken but sft_uri is empty: give demonstrations or set "
                             "sft_policy=never")
        return backend.sft(ctx, model_uri, p.sft_uri, p.overrides("sft"))
    return backend.rft(ctx, model_uri, p.train_uri, p.reward, p.overrides("rft"))


def training_result(manifest: StageManifest) -> dict[str, Any]:
    """The small dict a training task leaves in XCom."""
    return {"model_uri": manifest.checkpoint_uri, "stage": manifest.stage,
            "metrics": {k: v for k, v in manifest.metrics.items() if isinstance(v, int | float)}}


def skip_rft(p: CycleParams, ctx: StageContext, model_uri: str, reason: str) -> StageManifest:
    """Record an rft stage that had nothing to learn: the SFT checkpoint is the candidate."""
    return _record(ctx, p, time.time(), checkpoint_uri=model_uri, inputs={"model_uri": model_uri},
                   decision={"decision": "skipped", "reason": reason})


# ------------------------------------------------------------------------- checkpoint_eval / gate
def checkpoint_eval(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """The baseline's eval on the candidate; when SFT ran, also on the SFT checkpoint (what RFT started
    from, so the report shows what each added and the guards compare RFT with its own start); and, where the
    backend can, the candidate's drift from that start measured on the eval set."""
    candidate_uri = start_model(ctx, "checkpoint_eval")
    backend = backend_for(p)
    manifest = _reused(ctx) or cached_eval(p, ctx, backend, candidate_uri)
    out = {"model_uri": candidate_uri, "pass_at_1": manifest.metrics.get("pass_at_1"),
           "mean_reward": manifest.metrics.get("mean_reward")}
    rft = load_complete(ctx.for_stage("rft").uri)
    rft_start = start_model(ctx, "rft")
    trained = rft is not None and (rft.decision or {}).get("decision") != "skipped" and rft_start != candidate_uri
    if trained and _checkpoint(ctx, "sft") == rft_start:
        start_eval = cached_eval(p, ctx.for_stage(RFT_START_EVAL), backend, rft_start)
        out["sft_pass_at_1"] = start_eval.metrics.get("pass_at_1")
    if trained:
        drift_ctx = ctx.for_stage(DRIFT)
        drift = _reused(drift_ctx)
        if drift is None:
            started = time.time()
            measured = backend.drift(drift_ctx, candidate_uri, rft_start, p.eval_uri,
                                     manifest.outputs.get("rows_uri"), p.overrides("eval"))
            drift = _record(drift_ctx, p, started, inputs={"candidate_uri": candidate_uri, "start_uri": rft_start},
                            metrics=measured)
        out["drift_kl"] = drift.metrics.get("kl")
    return out


RFT_START_EVAL = "checkpoint_eval.rft_start"  # the eval of the model RFT started from, when SFT ran
DRIFT = "checkpoint_eval.drift"  # the candidate's KL from the RFT start, measured on the eval set


def _train_rows(ctx: StageContext, stage: str) -> list[dict[str, Any]]:
    manifest = load_complete(ctx.for_stage(stage).uri)
    uri = manifest.outputs.get("metrics_uri") if manifest else None
    if not uri or not store.exists(uri):
        return []
    rows = store.read_jsonl(uri)
    # One row per step: a resumed trainer may have logged a step twice; the later row is the one that counts.
    by_step: dict[Any, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        by_step[row.get("step", f"row{i}")] = row
    return list(by_step.values())


def eval_rows(uri: str | None) -> list[dict[str, Any]] | None:
    """An eval's per-prompt rows, or None when it wrote none (the gate then holds instead of guessing)."""
    return store.read_jsonl(uri) if uri and store.exists(uri) else None


def stage_evidence(manifest: StageManifest | None, label: str) -> Any:
    """The gate's EvalEvidence for an eval stage's manifest (None for a stage that did not run)."""
    from rftflow.scoring.gate import EvalEvidence

    if manifest is None:
        return None
    return EvalEvidence(manifest.metrics, eval_rows(manifest.outputs.get("rows_uri")), label)


def record_look(p: CycleParams, ctx: StageContext) -> int:
    """This decision's number among the gate decisions made for the model family on this eval set's content.

    Each decision leaves one file under the registry (a retried gate finds its own and is not counted
    twice), so the gate can spend its error rate over every look at the same prompts.
    """
    folder = store.join(p.artifact_root, "registry", p.model_family, "looks", _file_digest(p.eval_uri)[:32])
    mine = f"{ctx.dag_id}--{ctx.run_id}--cycle-{ctx.cycle}.json".replace("/", "_").replace(":", "_")
    uri = store.join(folder, mine)
    if not store.exists(uri):
        store.write_json(uri, {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "cycle": ctx.cycle, "at": _now()})
    looks = sorted(store.read_json(u).get("at", "") + "|" + u.rsplit("/", 1)[-1]
                   for u in store.list_prefix(folder) if u.endswith(".json"))
    return 1 + next(i for i, key in enumerate(looks) if key.endswith("|" + mine))


def gate(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """Paired tests of candidate vs baseline and champion, slices, guards; writes the decision artifact."""
    from rftflow.scoring.gate import decide

    if (m := _reused(ctx)) is not None:
        return m.decision
    started = time.time()
    baseline = load_complete(ctx.for_stage("baseline_eval").uri)
    candidate = load_complete(ctx.for_stage("checkpoint_eval").uri)
    if baseline is None or candidate is None:
        raise RuntimeError("gate: baseline_eval or checkpoint_eval has no complete manifest in this run")
    champion_metrics = (baseline.decision or {}).get("champion")
    champion = None
    if champion_metrics is not None:
        from rftflow.scoring.gate import EvalEvidence

        champion = EvalEvidence(champion_metrics, eval_rows(baseline.outputs.get("champion_rows_uri")), "champion")
    drift = load_complete(ctx.for_stage(DRIFT).uri)
    look = record_look(p, ctx)
    result = decide(stage_evidence(baseline, "baseline"), stage_evidence(candidate, "candidate"), champion,
                    _train_rows(ctx, "rft"), p.gate_config(), cycle=p.cycle, max_cycles=p.max_cycles,
                    rft_start=stage_evidence(load_complete(ctx.for_stage(RFT_START_EVAL).uri), "SFT checkpoint"),
                    look=look, drift=drift.metrics if drift else None)
    log.info("gate decision: %s\n%s", result.decision, result.table())
    decision = {**result.to_dict(), "candidate_uri": candidate.checkpoint_uri, "table": result.table()}
    _record(ctx, p, started, decision=decision, checkpoint_uri=candidate.checkpoint_uri)
    return decision


def baseline_champion_token(ctx: StageContext) -> str | None:
    """The champion pointer's token when this cycle's baseline was taken (promote swaps only from it)."""
    baseline = load_complete(ctx.for_stage("baseline_eval").uri)
    if baseline is None:
        raise RuntimeError("promote: baseline_eval has no complete manifest in this run")
    return (baseline.outputs.get("xcom") or {}).get("champion_token")


def promote(p: CycleParams, ctx: StageContext, candidate_uri: str, champion_token: str | None) -> dict[str, Any]:
    """Compare-and-swap the champion pointer to the candidate; a race is reported, never lost."""
    if (m := _reused(ctx)) is not None:
        return m.decision
    started = time.time()
    candidate = load_complete(ctx.for_stage("checkpoint_eval").uri)
    registry = ChampionRegistry(p.artifact_root, p.model_family)
    champion = Champion(model_uri=candidate_uri, metrics=candidate.metrics if candidate else {},
                        run_id=ctx.run_id, cycle=ctx.cycle, promoted_at=_now(),
                        manifest_uri=store.join(ctx.for_stage("checkpoint_eval").uri, "manifest.json"))
    reason = f"champion of {p.model_family} is now {candidate_uri}"
    try:
        token = registry.promote(champion, expected_token=champion_token)
    except PromotionConflict as err:
        # A retry after a crash between the swap and the manifest below meets its own swap as a conflict:
        # the registry then holds this run's promotion over the baseline's version, which it finishes.
        own = registry.find_promotion(run_id=ctx.run_id, cycle=ctx.cycle, model_uri=candidate_uri,
                                      previous_token=champion_token)
        if own is None:
            result = {"promoted": False, "model_uri": candidate_uri,
                      "reason": f"the champion changed after this cycle's baseline was taken ({err}); "
                                "the candidate was not compared with the new champion, so it is not promoted"}
            _record(ctx, p, started, decision=result, checkpoint_uri=candidate_uri)
            return result
        log.info("promote: the registry already holds this run's promotion (seq %s, an earlier attempt's); "
                 "finishing it", own["seq"])
        token = own["token"]
        champion = Champion.model_validate(own["champion"])
        reason += " (promoted by an earlier attempt of this task, finished by this one)"
    result = {"promoted": True, "model_uri": candidate_uri, "token": token,
              "asset_uri": f"rftflow://champion/{p.model_family}",
              "asset_extra": {"model_uri": candidate_uri, "run_id": ctx.run_id, "cycle": ctx.cycle,
                              "metrics": {k: v for k, v in champion.metrics.items() if isinstance(v, int | float)}},
              "reason": reason}
    _record(ctx, p, started, decision=result, checkpoint_uri=candidate_uri)
    return result


def next_cycle_conf(p: CycleParams, run_id: str, candidate_uri: str) -> dict[str, Any]:
    """Params of the next cycle: start from this checkpoint, keep lineage."""
    conf = p.model_dump()
    conf.update(base_model=candidate_uri, cycle=p.cycle + 1, parent_run_id=run_id)
    return conf


def choose_outcome(p: CycleParams, decision: dict[str, Any]) -> str | list[str]:
    """The branch after the gate; promote waits for a person with approval on, and always after a hold."""
    outcome = decision["decision"]
    if outcome == "promote":
        return ["approve_promotion", "promote"] if p.require_approval else "promote"
    if outcome == "hold":  # the gate could not decide on its own: a person does, with the gate table
        return ["approve_promotion", "promote"]
    return outcome  # "iterate" or "reject"


def stop(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """The cycle ends before RFT: the rollouts already pass (nothing to learn), or after SFT they still
    nearly all fail (nothing for GRPO to learn from)."""
    if (m := _reused(ctx)) is not None:
        return m.decision
    recheck = load_complete(ctx.for_stage("diversity_recheck").uri)
    if recheck is not None and (recheck.decision or {}).get("decision") == "sft_first":
        decision = {"decision": "stop_sft_insufficient",
                    "reason": "after SFT the rollouts still nearly all fail, so GRPO has nothing to learn from: "
                              + (recheck.decision or {}).get("reason", "")
                              + " More or better demonstrations, or more SFT steps, come first."}
    else:
        diversity = load_complete(ctx.for_stage("diversity_check").uri)
        decision = {"decision": "stop_saturated",
                    "reason": (diversity.decision or {}).get("reason", "") if diversity else ""}
    return _record(ctx, p, time.time(), decision=decision).decision


def report(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """Build the cycle summary from the stage manifests, write the report, log where it is."""
    from rftflow.publish.summary import build_summary, publish_summary

    summary = build_summary(p, ctx)
    published = publish_summary(p, ctx, summary)
    log.info("cycle report: %s", published["report_md_uri"])
    return {"outcome": summary["outcome"], "outcome_reason": summary["outcome_reason"], **published}
