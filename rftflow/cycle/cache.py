"""Content-addressed reuse across runs: data that passed validation once, and an eval of the same model on the
same eval set with the same reward and decoding, are not paid for twice.

A hit records the earlier stage's manifest again as this stage's own (with `cached_from`), so the stage's
downstream stages read it where the graph says it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, load_complete, write_manifest
from rftflow.backends.base import Backend, StageContext, run_remote
from rftflow.cycle.context import now
from rftflow.cycle.params import CycleParams

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]


def file_digest(uri: str) -> str:
    return hashlib.sha256(store.read_bytes(uri)).hexdigest()


def uses_sft_data(p: CycleParams) -> bool:
    return bool(p.sft_uri) and p.sft_policy != "never"


def configured_model(p: CycleParams) -> str:
    """The model the params name (the fallback stands for the champion, which continues from it)."""
    return p.fallback_model if p.base_model == "champion" else p.base_model


def validation_cache_key(p: CycleParams, target: tuple[str | None, str | None]) -> str:
    """Content hash of (train, eval and SFT data, backend, AWS target, the checks' own code): data that passed
    once is not re-validated while none of these changes."""
    rules = hashlib.sha256()
    for module in ("data/validation.py", "data/dataset.py", "backends/aws/availability.py"):
        rules.update((PACKAGE / module).read_bytes())
    parts = {
        "backend": p.backend, "train": file_digest(p.train_uri), "eval": file_digest(p.eval_uri),
        "sft": file_digest(p.sft_uri) if uses_sft_data(p) else None, "rules": rules.hexdigest(),
        "reward": p.reward, "target": target, "model": configured_model(p),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


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
    return reward + ":" + ":".join(file_digest(f.as_uri()) for f in files if f.exists())


def eval_cache_key(p: CycleParams, model_uri: str) -> str:
    """Content hash of (model, eval data, reward function, decoding settings)."""
    parts = {
        "backend": p.backend, "model": _model_digest(model_uri), "eval": file_digest(p.eval_uri),
        "reward": _reward_digest(p.reward), "decoding": p.overrides("eval"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _pointer(p: CycleParams, kind: str, key: str) -> str:
    return store.join(p.artifact_root, "cache", kind, f"{key}.json")


def lookup(p: CycleParams, ctx: StageContext, kind: str, key: str, outputs: dict[str, Any] | None = None,
           checkpoint_uri: str | None = None) -> StageManifest | None:
    """The complete manifest an earlier stage recorded under this content hash, recorded again as ctx's own
    (so later stages find it where they look), with `outputs` of this run's own over the earlier stage's and
    this run's name of the model (`checkpoint_uri`: the same content may sit at another path); None on a miss
    or when the cached stage is gone."""
    pointer = _pointer(p, kind, key)
    if not store.exists(pointer):
        return None
    source = store.read_json(pointer)["stage_uri"]
    cached = load_complete(source)
    if cached is None:
        return None
    log.info("%s: %s cache hit %s (inputs unchanged since %s)", ctx.stage, kind, key, source)
    if cached.run_id == ctx.run_id and cached.stage == ctx.stage and cached.cycle == ctx.cycle:
        return cached
    return record_copy(ctx, cached, source, outputs=outputs, checkpoint_uri=checkpoint_uri)


def record_copy(ctx: StageContext, cached: StageManifest, source: str, *, outputs: dict[str, Any] | None = None,
                checkpoint_uri: str | None = None) -> StageManifest:
    """`cached` (the manifest at `source`) recorded as ctx's own, marked `cached_from` (reused: not billed again)."""
    update: dict[str, Any] = {"run_id": ctx.run_id, "cycle": ctx.cycle, "stage": ctx.stage,
                              "inputs": {**cached.inputs, "cached_from": source},
                              "outputs": {**cached.outputs, **(outputs or {})}}
    if checkpoint_uri is not None:
        update["checkpoint_uri"] = checkpoint_uri
    copy = cached.model_copy(update=update)
    write_manifest(ctx.uri, copy)
    return copy


def remember(p: CycleParams, ctx: StageContext, kind: str, key: str, **extra: Any) -> None:
    store.write_json(_pointer(p, kind, key), {"stage_uri": ctx.uri, **extra, "written_at": now()})


def cached_eval(p: CycleParams, ctx: StageContext, backend: Backend, model_uri: str) -> StageManifest:
    """Evaluate `model_uri`, or reuse an earlier eval with the same content hash. The stage's own complete
    manifest comes first (a retry; an eval job this task deferred on and completed) and is remembered then."""
    own = load_complete(ctx.uri)
    if own is not None and "cached_from" in own.inputs:
        return own  # a cache hit this stage recorded before
    key = eval_cache_key(p, model_uri)
    if own is None:
        if (cached := lookup(p, ctx, "eval", key, checkpoint_uri=model_uri)) is not None:
            return cached
        own = run_remote(backend, ctx, lambda: backend.start_evaluate(ctx, model_uri, p.eval_uri, p.reward,
                                                                       p.overrides("eval")))
    remember(p, ctx, "eval", key, model_uri=model_uri)
    return own
