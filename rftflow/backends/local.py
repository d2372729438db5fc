"""The `local` backend: SFT and GRPO with TRL, and batched sampling for eval and the diversity check, on any
Hugging Face causal LM directory (or the tiny model built from code), in a child process on this machine.

This module stays light: torch, transformers, trl and peft are imported only in the worker child.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rftflow import diversity as diversity_mod
from rftflow import evaluation, store
from rftflow.backends.base import Backend, StageContext
from rftflow.config import DiversityConfig, EvalConfig, RFTConfig, SFTConfig, load_recipe
from rftflow.local.runner import run_worker
from rftflow.manifest import StageManifest, load_complete, package_versions, write_manifest

TINY_PATTERN = re.compile(r"tiny(?::seed=(\d+))?")
TINY_BUILD_INFO = "tiny_build.json"  # same name as rftflow.local.tiny_model.BUILD_INFO (not imported: torch)
ROWS = "rows.jsonl"
FILTERED_TRAIN = "filtered_train.jsonl"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


class LocalBackend(Backend):
    """Stages run on this machine; artifacts go to any artifact root the store serves (file:// or s3://).

    Options: torch_threads for the child (2 on the shared 2-core box), work_dir for scratch space when the
    artifact root is remote, reward_workers / reward_timeout_s for the reward runner, and reuse_complete
    (a stage whose manifest is complete is returned as it is instead of run again).
    """

    name: ClassVar[str] = "local"

    def __init__(self, torch_threads: int = 2, work_dir: str | None = None, reward_workers: int = 0,
                 reward_timeout_s: float = 60.0, reuse_complete: bool = True):
        self.torch_threads = torch_threads
        self.work_dir = Path(work_dir or Path(tempfile.gettempdir()) / f"rftflow-local-{os.getuid()}")
        self.reward_workers = reward_workers
        self.reward_timeout_s = reward_timeout_s
        self.reuse_complete = reuse_complete

    # ------------------------------------------------------------------------------ models

    def resolve_model(self, model: str, ctx: StageContext) -> str:
        """"tiny" / "tiny:seed=N" -> the tiny model under {artifact_root}/models/tiny-seedN (built once);
        anything else is a model directory path or URI, returned as it is after a presence check."""
        m = TINY_PATTERN.fullmatch(model.strip())
        if m:
            return self.build_tiny(ctx.artifact_root, int(m.group(1) or 0))
        if not store.exists(store.join(model, "config.json")):
            raise ValueError(f"model {model!r}: expected 'tiny', 'tiny:seed=N' or a Hugging Face model "
                             f"directory (path or URI) containing config.json; none found there")
        return model

    def build_tiny(self, artifact_root: str, seed: int = 0) -> str:
        """Build the tiny base model once per seed (deterministic), reuse it afterwards; returns its URI."""
        uri = store.join(artifact_root, "models", f"tiny-seed{seed}")
        if store.exists(store.join(uri, TINY_BUILD_INFO)):
            return uri
        scratch = Path(tempfile.mkdtemp(prefix=f"tiny-seed{seed}-", dir=self._scratch("builds")))
        try:
            out = scratch / "model"
            run_worker("build_tiny", {"out_dir": str(out), "seed": seed}, job_dir=scratch / "logs",
                       timeout_s=600, threads=self.torch_threads)
            local = store.local_path(uri)
            if local is not None:
                target = Path(local)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() and not (target / TINY_BUILD_INFO).exists():
                    shutil.rmtree(target)  # an earlier build was cut short
                try:
                    out.rename(target)
                except OSError:
                    if not (target / TINY_BUILD_INFO).exists():  # not a concurrent finished build: a real error
                        raise
            else:
                info = out / TINY_BUILD_INFO
                info_bytes = info.read_bytes()
                info.unlink()
                store.put_dir(str(out), uri)
                store.write_bytes(store.join(uri, TINY_BUILD_INFO), info_bytes)  # last: marks it complete
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return uri

    def _scratch(self, *parts: str) -> Path:
        path = self.work_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _model_dir(self, model_uri: str) -> str:
        """A local directory holding the model (remote models are downloaded once into work_dir)."""
        local = store.local_path(model_uri)
        if local is not None:
            if not (Path(local) / "config.json").is_file():
                raise ValueError(f"model {model_uri!r}: expected a Hugging Face model directory with config.json")
            return local
        cache = self._scratch("models") / _digest(model_uri)
        if not (cache / "config.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=cache.parent))
            store.get_dir(model_uri, str(tmp))
            if not (tmp / "config.json").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                raise ValueError(f"model {model_uri!r}: expected a Hugging Face model directory with config.json")
            shutil.rmtree(cache, ignore_errors=True)
            tmp.rename(cache)
        return str(cache)

    # ------------------------------------------------------------------------------ stage plumbing

    def _stage_dir(self, ctx: StageContext) -> tuple[Path, str | None]:
        """(local folder the stage writes into, remote URI to upload it to or None when it is local)."""
        local = store.local_path(ctx.uri)
        if local is not None:
            path = Path(local)
            path.mkdir(parents=True, exist_ok=True)
            return path, None
        return self._scratch("stages", _digest(ctx.uri)), ctx.uri

    def _reused(self, ctx: StageContext) -> StageManifest | None:
        return load_complete(ctx.uri) if self.reuse_complete else None

    def _finish(self, ctx: StageContext, local_dir: Path, remote: str | None, started: float,
                **fields: Any) -> StageManifest:
        if remote is not None:
            store.put_dir(str(local_dir), remote)
        finished = time.time()
        manifest = StageManifest(
            dag_id=ctx.dag_id, run_id=ctx.run_id, cycle=ctx.cycle, stage=ctx.stage, backend=self.name,
            started_at=_iso(started), finished_at=_iso(finished), duration_s=round(finished - started, 3),
            versions=package_versions(), **fields,
        )
        write_manifest(ctx.uri, manifest)  # last: its presence marks the stage complete
        return manifest

    def _generate(self, local_dir: Path, model_uri: str, records: list[Any], passes: list[dict[str, Any]],
                  timeout_s: float) -> tuple[dict[str, list[list[dict[str, Any]]]], dict[str, Any]]:
        """Completions per pass name, per prompt (k each), sampled in the worker child; plus its timings."""
        work = local_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        prompts_path, out_path = work / "prompts.jsonl", work / "completions.jsonl"
        _write_jsonl(prompts_path, [{"id": r.id, "messages": r.prompt_messages()} for r in records])
        result = run_worker("generate", {"model_path": self._model_dir(model_uri), "prompts_path": str(prompts_path),
                                         "out_path": str(out_path), "passes": passes},
                            job_dir=local_dir / "logs", timeout_s=timeout_s, threads=self.torch_threads)
        lines = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {p["name"]: [line[p["name"]] for line in lines] for p in passes}, result

    def _load_reward(self, reward: str) -> Any:
        from rftflow.rewards import load_reward

        return load_reward(reward)

    # ------------------------------------------------------------------------------ stages

    def evaluate(self, ctx: StageContext, model_uri: str, eval_uri: str, reward: str,
                 overrides: dict[str, Any] | None = None) -> StageManifest:
        """Greedy pass@1, mean reward, response length, breakdown by metadata; pass@k when cfg.pass_at_k > 0.

        Manifest: metrics {pass_at_1, mean_reward, mean_response_tokens, n, pass_at_k, k, sampled_pass_at_1,
        reward_metrics, breakdown, sampling}, outputs {rows_uri}, checkpoint_uri = the model evaluated.
        """
        if (m := self._reused(ctx)) is not None:
            return m
        started = time.time()
        cfg: EvalConfig = load_recipe(self.name, "eval", overrides)  # type: ignore[assignment]
        from rftflow.dataset import read_records

        records = read_records(eval_uri, kind="rft")
        if cfg.max_prompts:
            records = records[:cfg.max_prompts]
        reward_fn = self._load_reward(reward)
        local_dir, remote = self._stage_dir(ctx)
        passes: list[dict[str, Any]] = [{"name": "greedy", "k": 1, "temperature": 0.0,
                                         "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size}]
        if cfg.pass_at_k:
            passes.append({"name": "sampled", "k": cfg.pass_at_k, "temperature": cfg.sample_temperature,
                           "top_p": cfg.sample_top_p, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                           "batch_size": cfg.batch_size})
        completions, gen = self._generate(local_dir, model_uri, records, passes, cfg.timeout_s)
        rows = evaluation.score_rows(records, [c[0] for c in completions["greedy"]], reward_fn,
                                     pass_threshold=cfg.pass_threshold, sampled=completions.get("sampled"),
                                     workers=self.reward_workers, timeout_s=self.reward_timeout_s)
        _write_jsonl(local_dir / ROWS, rows)
        metrics = evaluation.summarize(rows, cfg.breakdown_fields)
        metrics["sampling"] = gen.get("timings", {})
        return self._finish(
            ctx, local_dir, remote, started, checkpoint_uri=model_uri, metrics=metrics,
            inputs={"model_uri": model_uri, "eval_uri": eval_uri, "reward": reward, "config": cfg.model_dump()},
            outputs={"rows_uri": store.join(ctx.uri, ROWS)},
        )

    def drift(self, ctx: StageContext, candidate_uri: str, start_uri: str, eval_uri: str, rows_uri: str | None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Mean per-token log p_candidate - log p_start over the candidate's greedy eval completions."""
        if not rows_uri or not store.exists(rows_uri):
            return {"kl": None, "reason": "the candidate's eval wrote no per-prompt completions"}
        cfg: EvalConfig = load_recipe(self.name, "eval", overrides)  # type: ignore[assignment]
        from rftflow.dataset import read_records

        prompts = {r.id: r.prompt_messages() for r in read_records(eval_uri, kind="rft")}
        rows = [json.loads(line) for line in store.read_text(rows_uri).splitlines() if line.strip()]
        pairs = [{"messages": prompts[str(r["id"])], "completion": r["completion"]} for r in rows
                 if str(r["id"]) in prompts and r.get("completion")]
        if not pairs:
            return {"kl": None, "reason": "the candidate's eval completions are all empty"}
        local_dir, _ = self._stage_dir(ctx)
        job = local_dir / "work" / "completions.jsonl"
        _write_jsonl(job, pairs)
        result = run_worker("drift", {"candidate_path": self._model_dir(candidate_uri),
                                      "start_path": self._model_dir(start_uri), "pairs_path": str(job),
                                      "batch_size": cfg.batch_size},
                            job_dir=local_dir / "logs", timeout_s=cfg.timeout_s, threads=self.torch_threads)
        return {k: result[k] for k in ("kl", "completions", "tokens")}

    def diversity(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
                  overrides: dict[str, Any] | None = None) -> StageManifest:
        """k rollouts on a seeded sample of training prompts; pass patterns, fractions, decision.

        Manifest: metrics {k, n_prompts, all_pass, all_fail, mixed, mean_pass_rate, expected_mixed,
        expected_mixed_per_prompt, pass_at_k, mean_response_tokens, sampling}, decision {decision, reason},
        outputs {rows_uri, filtered_train_uri (when write_filtered)}.
        """
        if (m := self._reused(ctx)) is not None:
            return m
        started = time.time()
        cfg: DiversityConfig = load_recipe(self.name, "diversity", overrides)  # type: ignore[assignment]
        from rftflow.dataset import read_records, write_records

        records = read_records(train_uri, kind="rft")
        if len(records) > cfg.max_prompts:
            keep = sorted(random.Random(cfg.seed).sample(range(len(records)), cfg.max_prompts))
            records = [records[i] for i in keep]
        reward_fn = self._load_reward(reward)
        local_dir, remote = self._stage_dir(ctx)
        passes = [{"name": "sampled", "k": cfg.k, "temperature": cfg.temperature, "top_p": cfg.top_p,
                   "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "batch_size": cfg.batch_size}]
        completions, gen = self._generate(local_dir, model_uri, records, passes, cfg.timeout_s)
        sampled = completions["sampled"]
        results = evaluation.score_rollouts(records, [[c["text"] for c in cs] for cs in sampled], reward_fn,
                                            workers=self.reward_workers, timeout_s=self.reward_timeout_s)
        rows, metrics, decision = diversity_mod.analyze(
            [r.id for r in records], [[float(x.aggregate_reward_score) for x in res] for res in results], cfg)
        for row, cs in zip(rows, sampled, strict=True):
            row["completions"] = [c["text"] for c in cs]
        tokens = [c["tokens"] for cs in sampled for c in cs]
        metrics["mean_response_tokens"] = sum(tokens) / len(tokens) if tokens else None
        metrics["sampling"] = gen.get("timings", {})
        _write_jsonl(local_dir / ROWS, rows)
        outputs: dict[str, Any] = {"rows_uri": store.join(ctx.uri, ROWS)}
        if cfg.write_filtered:
            keep_records = diversity_mod.informative(records, rows)
            write_records(str(local_dir / FILTERED_TRAIN), keep_records)
            outputs["filtered_train_uri"] = store.join(ctx.uri, FILTERED_TRAIN)
            metrics["filtered_prompts"] = len(keep_records)
        return self._finish(
            ctx, local_dir, remote, started, checkpoint_uri=model_uri, metrics=metrics, decision=decision,
            inputs={"model_uri": model_uri, "train_uri": train_uri, "reward": reward, "config": cfg.model_dump()},
            outputs=outputs,
        )

    def _train(self, kind: str, ctx: StageContext, model_uri: str, params: dict[str, Any],
               cfg: SFTConfig | RFTConfig) -> tuple[dict[str, Any], Path, str | None, float]:
        started = time.time()
        local_dir, remote = self._stage_dir(ctx)
        if remote is not None and store.exists(store.join(remote, "checkpoints")):
            store.get_dir(store.join(remote, "checkpoints"), str(local_dir / "checkpoints"))  # resume from them
        params = {"model_path": self._model_dir(model_uri), "out_dir": str(local_dir), "cfg": cfg.model_dump(),
                  "resume": True, "sync_uri": remote, **params}
        result = run_worker(kind, params, job_dir=local_dir / "logs", timeout_s=cfg.timeout_s,
                            threads=self.torch_threads)
        return result, local_dir, remote, started

    def sft(self, ctx: StageContext, model_uri: str, sft_uri: str,
            overrides: dict[str, Any] | None = None) -> StageManifest:
        """Supervised fine-tuning (full or LoRA, merged) from model_uri on demonstrations.

        Manifest: checkpoint_uri {ctx.uri}/model, outputs {metrics_uri, log_uri}, metrics {steps, train_seconds,
        train_cpu_seconds, examples, samples_per_s, resumed_from_step, stopped_by_time, final_loss}.
        """
        if (m := self._reused(ctx)) is not None:
            return m
        cfg: SFTConfig = load_recipe(self.name, "sft", overrides)  # type: ignore[assignment]
        from rftflow.dataset import read_records

        read_records(sft_uri, kind="sft")  # bad data fails here, with file and line, before a child starts
        result, local_dir, remote, started = self._train("sft", ctx, model_uri, {"data_uri": sft_uri}, cfg)
        last = result.get("last", {})
        metrics = {key: result.get(key) for key in ("steps", "train_seconds", "train_cpu_seconds", "examples",
                                                    "samples_per_s", "resumed_from_step", "stopped_by_time")}
        metrics["final_loss"] = last.get("train/loss")
        return self._finish(
            ctx, local_dir, remote, started, checkpoint_uri=store.join(ctx.uri, "model"), metrics=metrics,
            inputs={"model_uri": model_uri, "sft_uri": sft_uri, "config": cfg.model_dump()},
            outputs={"metrics_uri": store.join(ctx.uri, "metrics.jsonl"),
                     "log_uri": store.join(ctx.uri, "logs", "sft.log")},
        )

    def rft(self, ctx: StageContext, model_uri: str, train_uri: str, reward: str,
            overrides: dict[str, Any] | None = None) -> StageManifest:
        """GRPO from model_uri on the training prompts, scored by the reward handler.

        Manifest: checkpoint_uri {ctx.uri}/model, outputs {metrics_uri, log_uri}, metrics {steps, train_seconds,
        train_cpu_seconds, rollouts, rollouts_per_s, resumed_from_step, stopped_by_time, prompts, reward_first,
        reward_last} (reward_* = critic/rewards/mean of the first and last logging windows).
        """
        if (m := self._reused(ctx)) is not None:
            return m
        cfg: RFTConfig = load_recipe(self.name, "rft", overrides)  # type: ignore[assignment]
        from rftflow.dataset import read_records

        read_records(train_uri, kind="rft")
        self._load_reward(reward)  # a bad reward spec fails here, before a child starts
        params = {"data_uri": train_uri, "reward_spec": reward, "reward_workers": self.reward_workers,
                  "reward_timeout_s": self.reward_timeout_s}
        result, local_dir, remote, started = self._train("grpo", ctx, model_uri, params, cfg)
        metrics = {key: result.get(key) for key in ("steps", "train_seconds", "train_cpu_seconds", "rollouts",
                                                    "rollouts_per_s", "resumed_from_step", "stopped_by_time",
                                                    "prompts")}
        rewards = [row["critic/rewards/mean"] for row in _read_jsonl(local_dir / "metrics.jsonl")
                   if row.get("critic/rewards/mean") is not None]
        metrics["reward_first"] = rewards[0] if rewards else None
        metrics["reward_last"] = rewards[-1] if rewards else None
        return self._finish(
            ctx, local_dir, remote, started, checkpoint_uri=store.join(ctx.uri, "model"), metrics=metrics,
            inputs={"model_uri": model_uri, "train_uri": train_uri, "reward": reward, "config": cfg.model_dump()},
            outputs={"metrics_uri": store.join(ctx.uri, "metrics.jsonl"),
                     "log_uri": store.join(ctx.uri, "logs", "grpo.log")},
        )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
