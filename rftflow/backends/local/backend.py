"""The `local` backend: SFT and GRPO with TRL, and batched sampling for eval and the diversity check, on any
Hugging Face causal LM directory (or the tiny model built from code), in a child process on this machine.

This module stays light: torch, transformers, trl and peft are imported only in the worker child.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from rftflow.artifacts import store
from rftflow.artifacts.manifest import StageManifest, load_complete
from rftflow.backends.base import (
    EVALUATE,
    PENDING,
    Backend,
    Generation,
    PendingJob,
    SamplingPlan,
    StageContext,
)
from rftflow.backends.local import lease
from rftflow.backends.local.runner import run_worker
from rftflow.cycle.recipes import DiversityConfig, EvalConfig, RFTConfig, SFTConfig, load_recipe

TINY_PATTERN = re.compile(r"tiny(?::seed=(\d+))?")
TINY_BUILD_INFO = "tiny_build.json"  # same name as rftflow.backends.local.tiny_model.BUILD_INFO (not imported: torch)
FINAL_MODEL = "model"  # same name as rftflow.backends.local.training.FINAL_MODEL (not imported: torch)
LOCAL_TRAINER = "local_trainer"  # PendingJob.kind of a detached local trainer
WORK_DIR_ENV = "RFTFLOW_LOCAL_WORK_DIR"

log = logging.getLogger(__name__)


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
    artifact root is remote, reward_workers / reward_timeout_s for the reward runner, reuse_complete
    (a stage whose manifest is complete is returned as it is instead of run again), detach_training (sft/rft
    start or adopt the trainer and return a PendingJob for the triggerer instead of waiting: what the DAG's
    training tasks do), lease_heartbeat_s / lease_stale_s (the trainer lease's heartbeat, and how long
    without one until a trainer is presumed dead and replaced) and trigger_poll_s.
    """

    name: ClassVar[str] = "local"

    def __init__(self, torch_threads: int = 2, work_dir: str | None = None, reward_workers: int = 0,
                 reward_timeout_s: float = 60.0, reuse_complete: bool = True, detach_training: bool = False,
                 lease_heartbeat_s: float = lease.HEARTBEAT_S, lease_stale_s: float = lease.STALE_AFTER_S,
                 trigger_poll_s: float = 2.0):
        self.torch_threads = torch_threads
        # RFTFLOW_LOCAL_WORK_DIR names a folder every Airflow component sees (a shared volume): with it, the
        # triggerer can watch a trainer whose stage lives on a remote (s3://) artifact root.
        self.shared_work_dir = work_dir is None and bool(os.environ.get(WORK_DIR_ENV))
        self.work_dir = Path(work_dir or os.environ.get(WORK_DIR_ENV)
                             or Path(tempfile.gettempdir()) / f"rftflow-local-{os.getuid()}")
        self.reward_workers = reward_workers
        self.reward_timeout_s = reward_timeout_s
        self.reuse_complete = reuse_complete
        self.detach_training = detach_training
        self.lease_heartbeat_s = lease_heartbeat_s
        self.lease_stale_s = lease_stale_s
        self.trigger_poll_s = trigger_poll_s

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
        """A local directory holding the model (a remote model is downloaded once into work_dir)."""
        try:
            local = store.local_copy(model_uri, str(self._scratch("models")), require="config.json")
        except FileNotFoundError:
            local = None
        if local is None or not (Path(local) / "config.json").is_file():
            raise ValueError(f"model {model_uri!r}: expected a Hugging Face model directory with config.json")
        return local

    # ------------------------------------------------------------------------------ stage plumbing

    def _stage_dir(self, ctx: StageContext) -> tuple[Path, str | None]:
        """(local folder the stage writes into, remote URI to upload it to or None when it is local)."""
        local = store.local_path(ctx.uri)
        if local is not None:
            path = Path(local)
            path.mkdir(parents=True, exist_ok=True)
            return path, None
        return self._scratch("stages", _digest(ctx.uri)), ctx.uri

    def reused(self, ctx: StageContext) -> StageManifest | None:
        return load_complete(ctx.uri) if self.reuse_complete else None

    def scoring_options(self, reward_fn: Any) -> dict[str, Any]:
        return {"workers": self.reward_workers, "timeout_s": self.reward_timeout_s}

    def _finish(self, ctx: StageContext, local_dir: Path, remote: str | None, started: float,
                **fields: Any) -> StageManifest:
        if remote is not None:
            store.put_dir(str(local_dir), remote)
        return self.finish(ctx, started, **fields)

    def _generate(self, local_dir: Path, model_uri: str, records: list[Any], passes: list[dict[str, Any]],
                  timeout_s: float, engine: dict[str, Any] | None = None
                  ) -> tuple[dict[str, list[list[dict[str, Any]]]], dict[str, Any]]:
        """Completions per pass name, per prompt (k each), sampled in the worker child; plus its timings."""
        work = local_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        prompts_path, out_path = work / "prompts.jsonl", work / "completions.jsonl"
        _write_jsonl(prompts_path, [{"id": r.id, "messages": r.prompt_messages()} for r in records])
        result = run_worker("generate", {"model_path": self._model_dir(model_uri), "prompts_path": str(prompts_path),
                                         "out_path": str(out_path), "passes": passes, **(engine or {})},
                            job_dir=local_dir / "logs", timeout_s=timeout_s, threads=self.torch_threads)
        lines = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {p["name"]: [line[p["name"]] for line in lines] for p in passes}, result

    # ------------------------------------------------------------------------------ sampling

    def _recipe(self, stage: str, overrides: dict[str, Any] | None) -> Any:
        """The stage's typed recipe: include/recipes/{backend}/{stage}.yaml with the run's overrides."""
        return load_recipe(self.name, stage, overrides)

    def sampling_config(self, kind: str, overrides: dict[str, Any] | None) -> tuple[Any, list[str]]:
        return self._recipe("eval" if kind == EVALUATE else "diversity", overrides), []

    def generate(self, ctx: StageContext, model_uri: str, plan: SamplingPlan, reward: str) -> Generation:
        """The plan's passes, batched in the worker child (vLLM or HF generate); its logs kept with the stage."""
        local_dir, remote = self._stage_dir(ctx)
        completions, result = self._generate(local_dir, model_uri, plan.records, plan.passes, plan.config.timeout_s,
                                             sampling_engine(plan.config))
        if remote is not None:
            store.put_dir(str(local_dir), remote)
        return Generation(completions, timings=result.get("timings", {}))

    def drift(self, ctx: StageContext, candidate_uri: str, start_uri: str, eval_uri: str, rows_uri: str | None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Mean per-token log p_candidate - log p_start over the candidate's greedy eval completions."""
        if not rows_uri or not store.exists(rows_uri):
            return {"kl": None, "reason": "the candidate's eval wrote no per-prompt completions"}
        cfg: EvalConfig = self._recipe("eval", overrides)
        from rftflow.data.dataset import read_records

        prompts = {r.id: r.prompt_messages() for r in read_records(eval_uri, kind="rft")}
        rows = store.read_jsonl(rows_uri)
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

    def _train(self, kind: str, ctx: StageContext, model_uri: str, data_uri: str, params: dict[str, Any],
               cfg: SFTConfig | RFTConfig, inputs: dict[str, Any]) -> StageManifest | PendingJob:
        """Run, adopt or resume the stage's one trainer (rftflow.backends.local.lease), then finish the stage.

        A finished trainer's result is reused when the stage's manifest was lost: the model it saved (maybe
        already evaluated or promoted) is never trained further or overwritten. With detach_training the
        trainer is left running and a PendingJob is returned for the triggerer to wait on.
        """
        from rftflow.backends.local.runner import TrainerLost, read_result, start_or_adopt, wait_trainer

        started = time.time()
        local_dir, remote = self._stage_dir(ctx)
        job_dir = local_dir / "logs"
        digest = _digest(json.dumps({"kind": kind, "model_uri": model_uri, "data_uri": data_uri,
                                     "cfg": cfg.model_dump(), "params": params}, sort_keys=True, default=str))
        done = read_result(kind, job_dir)
        if done and done.get("ok") and done.get("job_digest") == digest and (local_dir / FINAL_MODEL / "config.json").is_file():
            log.info("%s: the %s trainer already finished here (manifest missing); recording its result instead "
                     "of training again", ctx.stage, kind)
            return self._finish_training(kind, ctx, local_dir, remote, started, done["result"], cfg, inputs)
        if remote is not None and store.exists(store.join(remote, "checkpoints")):
            store.get_dir(store.join(remote, "checkpoints"), str(local_dir / "checkpoints"))  # resume from them
        job = {"model_path": self._model_dir(model_uri), "out_dir": str(local_dir), "cfg": cfg.model_dump(),
               "resume": True, "sync_uri": remote, "data_uri": data_uri, "job_digest": digest, **params}
        trainer = start_or_adopt(kind, job, job_dir=job_dir, threads=self.torch_threads,
                                 heartbeat_s=self.lease_heartbeat_s, stale_after_s=self.lease_stale_s)
        if self.detaches(remote):
            pending = PendingJob(LOCAL_TRAINER, trainer.owner, details={
                "stage_kind": kind, "job_dir": str(job_dir), "local_dir": str(local_dir), "remote": remote,
                "started": started, "trainer_started_at": trainer.started_at, "cfg": cfg.model_dump(),
                "inputs": inputs, "timeout_s": cfg.timeout_s, "poll_s": self.trigger_poll_s,
                # the deferral's own limit: a backstop past the trainer's timeout, which the trigger enforces
                "wait_timeout_s": cfg.timeout_s + 600,
            })
            _write_json(local_dir / PENDING, dataclasses.asdict(pending))
            return pending
        while True:
            try:
                result = wait_trainer(trainer, timeout_s=cfg.timeout_s)
                break
            except TrainerLost as lost:
                if not trainer.adopted:
                    raise
                # The trainer this task adopted died or hung: replace it (its lease is stale now) and resume.
                log.warning("%s: %s; resuming from the last checkpoint", ctx.stage, lost)
                trainer = start_or_adopt(kind, job, job_dir=job_dir, threads=self.torch_threads,
                                         heartbeat_s=self.lease_heartbeat_s, stale_after_s=self.lease_stale_s)
        return self._finish_training(kind, ctx, local_dir, remote, started, result, cfg, inputs)

    def detaches(self, remote: str | None) -> bool:
        """Detach only where the triggerer can watch the trainer's files: a stage folder on the (local) artifact
        root, or a shared work_dir. Otherwise the task waits as the trainer's parent; a retry still adopts it."""
        return self.detach_training and (remote is None or self.shared_work_dir)

    def _finish_training(self, kind: str, ctx: StageContext, local_dir: Path, remote: str | None, started: float,
                         result: dict[str, Any], cfg: SFTConfig | RFTConfig, inputs: dict[str, Any]) -> StageManifest:
        log_name = "sft.log" if kind == "sft" else "grpo.log"
        outputs = {"metrics_uri": store.join(ctx.uri, "metrics.jsonl"), "log_uri": store.join(ctx.uri, "logs", log_name)}
        if kind == "sft":
            last = result.get("last", {})
            metrics = {key: result.get(key) for key in ("steps", "train_seconds", "train_cpu_seconds", "examples",
                                                        "samples_per_s", "resumed_from_step", "stopped_by_time")}
            metrics["final_loss"] = last.get("train/loss")
            conv = result.get("convergence") or {}  # did SFT reach its demonstrations' level (training.py)
            metrics.update({"converged": conv.get("converged"), "demo_accuracy": conv.get("demo_accuracy"),
                            "accuracy_on_demo_prompts": conv.get("model_accuracy"),
                            "demo_agreement": conv.get("demo_agreement"),
                            "loss_fall_last_tenth": conv.get("loss_fall_last_tenth"),
                            "not_converged_reason": "; ".join(conv.get("not_converged_reasons") or []) or None})
        else:
            metrics = {key: result.get(key) for key in ("steps", "train_seconds", "train_cpu_seconds", "rollouts",
                                                        "rollouts_per_s", "resumed_from_step", "stopped_by_time",
                                                        "prompts")}
            rewards = [row["critic/rewards/mean"] for row in _read_jsonl(local_dir / "metrics.jsonl")
                       if row.get("critic/rewards/mean") is not None]
            metrics["reward_first"] = rewards[0] if rewards else None
            metrics["reward_last"] = rewards[-1] if rewards else None
        if result.get("workers") is not None:  # trained by several processes (Ray Train, accelerate)
            metrics["workers"] = result["workers"]
        return self._finish(ctx, local_dir, remote, started, checkpoint_uri=store.join(ctx.uri, FINAL_MODEL),
                            metrics=metrics, inputs={**inputs, "config": cfg.model_dump()}, outputs=outputs)

    def train(self, ctx: StageContext, kind: str, model_uri: str, data_uri: str, reward: str | None,
              overrides: dict[str, Any] | None = None) -> StageManifest | PendingJob:
        """SFT (full or LoRA, merged) on demonstrations, or GRPO on the training prompts scored by the reward
        handler, from model_uri, with TRL in a child process.

        Manifest: checkpoint_uri {ctx.uri}/model, outputs {metrics_uri, log_uri}, metrics {steps, train_seconds,
        train_cpu_seconds, resumed_from_step, stopped_by_time, ...}; SFT adds examples, samples_per_s,
        final_loss and its convergence check; GRPO adds rollouts, rollouts_per_s, prompts, reward_first and
        reward_last (critic/rewards/mean of the first and last logging windows).
        """
        if (m := self.reused(ctx)) is not None:
            return m
        from rftflow.data.dataset import read_records

        if kind == "sft":
            cfg: SFTConfig | RFTConfig = self._recipe("sft", overrides)
            read_records(data_uri, kind="sft")  # bad data fails here, with file and line, before a child starts
            return self._train("sft", ctx, model_uri, data_uri, {}, cfg,
                               inputs={"model_uri": model_uri, "sft_uri": data_uri})
        if reward is None:
            raise ValueError("rft: a reward is required")
        cfg = self._recipe("rft", overrides)
        read_records(data_uri, kind="rft")
        self.reward_function(reward)  # a bad reward spec fails here, before a child starts
        params = {"reward_spec": reward, "reward_workers": self.reward_workers,
                  "reward_timeout_s": self.reward_timeout_s}
        return self._train("grpo", ctx, model_uri, data_uri, params, cfg,
                           inputs={"model_uri": model_uri, "train_uri": data_uri, "reward": reward})

    # ------------------------------------------------------------------------------ deferred training

    def load_pending(self, ctx: StageContext) -> PendingJob | None:
        """The detached trainer this stage last started or adopted (None when it never detached one)."""
        local_dir, _ = self._stage_dir(ctx)
        path = local_dir / PENDING
        if not path.is_file():
            return None
        return PendingJob(**json.loads(path.read_text(encoding="utf-8")))

    def trigger_for(self, pending: PendingJob) -> Any:
        """Waits in the triggerer (no worker slot, no parent process) for the trainer's result or its end."""
        from rftflow.orchestration.local_trigger import LocalTrainerTrigger

        d = pending.details
        return LocalTrainerTrigger(job_dir=d["job_dir"], kind=d["stage_kind"], owner=pending.job_name,
                                   deadline=float(d["trainer_started_at"]) + float(d["timeout_s"]),
                                   poll_s=float(d.get("poll_s", 2.0)))

    def stop(self, pending: PendingJob) -> None:
        """Stop the detached trainer when it is still this job's (a finished or replaced one is left alone)."""
        from rftflow.backends.local.runner import stop_trainer

        if pending.kind == LOCAL_TRAINER:
            stop_trainer(pending.details["stage_kind"], pending.details["job_dir"], pending.job_name)

    def complete_training(self, ctx: StageContext, pending: PendingJob, event: dict[str, Any]) -> StageManifest:
        """After the trigger fired: the trainer's result becomes the stage's manifest; any other ending raises
        the runner's error (a retry then adopts a live trainer or resumes from the last checkpoint)."""
        from rftflow.backends.local.runner import finished_trainer

        d = pending.details
        result = finished_trainer(d["stage_kind"], d["job_dir"], {"job_name": pending.job_name, **event})
        cfg = (SFTConfig if d["stage_kind"] == "sft" else RFTConfig).model_validate(d["cfg"])
        return self._finish_training(d["stage_kind"], ctx, Path(d["local_dir"]), d["remote"], float(d["started"]),
                                     result, cfg, d["inputs"])


def sampling_engine(cfg: EvalConfig | DiversityConfig) -> dict[str, Any]:
    """The eval/diversity recipe's engine settings as the sampling job takes them (vLLM or HF generate)."""
    return {"vllm": cfg.vllm, "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
