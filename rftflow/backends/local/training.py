"""SFT (TRL SFTTrainer) and GRPO (TRL GRPOTrainer) for the local backend, with resumable checkpoints.

Runs in the worker child. Every logging step is appended to `metrics.jsonl` under the names Nova and
verl use, so the gate and the report read the same keys whatever the backend trained the model.
Under several processes (accelerate launch, Ray Train) every rank trains a share of the recipe's global batch
and rank 0 alone writes: metrics, progress, checkpoint uploads and the final model.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rftflow.cycle.recipes import RFTConfig, SFTConfig

CHECKPOINTS = "checkpoints"
LEASE_LOST = 75  # exit status of a trainer whose lease was taken over (as rftflow.backends.local.worker uses it)
FINAL_MODEL = "model"
METRICS = "metrics.jsonl"

# TRL log key -> Nova/verl name. Keys not listed are kept under "trl/<key>".
_SFT_NAMES = {
    "loss": "train/loss",
    "learning_rate": "actor/lr",
    "grad_norm": "actor/grad_norm",
    "entropy": "actor/entropy",
    "mean_token_accuracy": "train/mean_token_accuracy",
    "num_tokens": "train/num_tokens",
    "epoch": "training/epoch",
}
_GRPO_NAMES = {
    "loss": "actor/loss",
    "policy_loss": "actor/pg_loss",
    "kl": "actor/kl_loss",
    "entropy": "actor/entropy",
    "grad_norm": "actor/grad_norm",
    "learning_rate": "actor/lr",
    "clip_ratio/region_mean": "actor/pg_clipfrac",
    "completions/mean_length": "response_length/mean",
    "completions/max_length": "response_length/max",
    "completions/min_length": "response_length/min",
    "completions/clipped_ratio": "response_length/clip_ratio",
    "reward_std": "critic/rewards/std",
    "num_tokens": "perf/total_num_tokens",
    "epoch": "training/epoch",
    # TRL computes this from the std it scaled by: with scale_rewards="batch" it reads ~0 whatever the
    # groups look like, so the per-group figure from the reward adapter is the one logged as
    # frac_reward_zero_std; TRL's own is kept for reference.
    "frac_reward_zero_std": "trl/frac_reward_zero_std",
}


# ------------------------------------------------------------------------------------ processes


def world() -> tuple[int, int]:
    """(rank, world size) of this training process: torch.distributed's once a process group is initialised
    (Ray Train's TorchTrainer does that before it calls run_sft/run_grpo), else RANK and WORLD_SIZE from the
    environment (torchrun and accelerate launch set them; the Trainer initialises the group later), else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def _from_rank0(value: Any) -> Any:
    """Rank 0's value on every rank (the process group is up: building TRL's config initialised it)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any) -> list[Any]:
    """Every rank's value, in rank order (a collective: every rank must call it at the same point)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _any_rank(flag: bool, device: Any) -> bool:
    """True on every rank when it is True on one (so all ranks stop at the same step)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ------------------------------------------------------------------------------------ checkpoints


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint-N folder whose trainer_state.json (written last by the Trainer) exists.

    A process killed while saving leaves a checkpoint folder without it; that one is skipped.
    """
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for child in checkpoints_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if m and (child / "trainer_state.json").is_file():
            found.append((int(m.group(1)), child))
    return max(found)[1] if found else None


def checkpoint_step(path: Path | None) -> int:
    return int(path.name.rsplit("-", 1)[1]) if path else 0


def rewind_metrics(metrics_path: Path, step: int) -> tuple[float, float]:
    """Drop rows logged after `step` (they will be logged again on resume); return (elapsed_s, cpu_s) reached."""
    if not metrics_path.exists():
        return 0.0, 0.0
    kept, elapsed, cpu = [], 0.0, 0.0
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
            elapsed = max(elapsed, float(row.get("elapsed_s", 0.0)))
            cpu = max(cpu, float(row.get("cpu_s", 0.0)))
    metrics_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    return (elapsed, cpu) if step else (0.0, 0.0)


# ------------------------------------------------------------------------------------ callbacks


def _floats(logs: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        value = float(value)
        out[names.get(key, f"trl/{key}")] = value if math.isfinite(value) else None
    return out


class TrainClock:
    """Training time on two clocks, restarted when training begins and continuing a resumed run's totals.

    `elapsed` is wall time; `cpu` is this process's CPU time (all threads), which on a machine shared with
    other jobs measures the compute spent more fairly than wall time does.
    """

    def __init__(self, offsets: tuple[float, float] = (0.0, 0.0)):
        self.offset, self.cpu_offset = offsets
        self.restart()

    def restart(self) -> None:
        self.start, self.cpu_start = time.monotonic(), time.process_time()

    def elapsed(self) -> float:
        return self.offset + time.monotonic() - self.start

    def cpu(self) -> float:
        return self.cpu_offset + time.process_time() - self.cpu_start

    def read(self, kind: str) -> float:
        return self.cpu() if kind == "cpu" else self.elapsed()


def make_progress(params: dict[str, Any], kind: str, cfg: SFTConfig | RFTConfig) -> Any:
    """The progress file writer (rftflow.backends.local.progress) when the job names a progress_path, else None."""
    if not params.get("progress_path"):
        return None
    from rftflow.backends.local.progress import ProgressWriter

    if kind == "sft":
        unit, per_step = "samples", float(cfg.batch_size)
    else:
        unit, per_step = "rollouts", cfg.prompts_per_step * cfg.num_generations / cfg.num_iterations
    return ProgressWriter(params["progress_path"], kind, cfg.max_steps, unit=unit, per_step=per_step,
                          owner=(params.get("lease") or {}).get("owner"), max_train_seconds=cfg.max_train_seconds)


def make_callbacks(metrics_path: Path, names: dict[str, str], clock: TrainClock, *,
                   max_train_seconds: float | None = None, train_clock: str = "wall", window: Any = None,
                   sync_uri: str | None = None, finish_row: Any = None,
                   fence: Callable[[], bool] | None = None, progress: Any = None, live: Any = None,
                   rank: int = 0, world_size: int = 1) -> list[Any]:
    """Metrics logger, optional time limit and optional checkpoint upload, as TrainerCallbacks.

    `fence()` is False once this trainer's lease was taken over: it then writes no row and no checkpoint
    and stops (its process exits at the next heartbeat anyway). `progress` (a ProgressWriter) hears of each
    step, logging step and checkpoint; `live` (tracking.LiveMetrics) sends each row to the cycle's MLflow run.
    Under several processes only rank 0 logs and uploads; the time limit stops every rank at the same step."""
    from transformers import TrainerCallback

    last_logged = [_last_step(metrics_path)]

    def fenced(control: Any) -> bool:
        if fence is None or fence():
            return False
        # Stopping gracefully would still save the final model over the new owner's: leave at once.
        print("trainer lease was taken over by another trainer; stopping without writing more", flush=True)
        os._exit(LEASE_LOST)

    class MetricsLogger(TrainerCallback):
        """Append each logging step, as floats from the trainer's logs (not its string-formatted stdout)."""

        def on_train_begin(self, args, state, control, **kwargs):
            clock.restart()
            if progress is not None:
                progress.begin(state.global_step, clock.elapsed())

        def on_step_end(self, args, state, control, **kwargs):
            fenced(control)
            if progress is not None:
                # rollouts/s from the adapter's count (this attempt's), not from the config
                progress.step(state.global_step, clock.elapsed(), window.rollouts if window is not None else None)

        def on_train_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress.end(state.global_step, clock.elapsed())

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "train_runtime" in logs:  # the end-of-training summary, not a step
                return
            if fenced(control) or state.global_step <= last_logged[0]:
                return  # one row per step, whatever resumed or replaced this trainer
            row: dict[str, Any] = {"step": state.global_step, "elapsed_s": round(clock.elapsed(), 3),
                                   "cpu_s": round(clock.cpu(), 3), "training/global_step": state.global_step}
            row.update(_floats(logs, names))
            if window is not None:
                row.update(window.pop())
            if finish_row is not None:
                finish_row(row)
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            last_logged[0] = state.global_step
            if progress is not None:
                progress.logged(state.global_step, row)
            if live is not None:
                live.log(row)

    class TimeLimit(TrainerCallback):
        """Stop once training has run max_train_seconds on its clock (the equal-compute control's budget)."""

        def on_step_end(self, args, state, control, **kwargs):
            stop = clock.read(train_clock) >= max_train_seconds
            if world_size > 1:
                stop = _any_rank(stop, args.device)
            if stop:
                control.should_training_stop = True

    class UploadCheckpoint(TrainerCallback):
        """Copy each saved checkpoint to the artifact store, so a retry elsewhere can resume from it."""

        def on_save(self, args, state, control, **kwargs):
            from rftflow.artifacts import store

            if fence is not None and not fence():
                return

            name = f"checkpoint-{state.global_step}"
            local = Path(args.output_dir) / name
            if local.is_dir():
                store.put_dir(str(local), store.join(sync_uri, CHECKPOINTS, name))

    class CheckpointProgress(TrainerCallback):
        """Tell the progress file about each checkpoint (after its upload, when there is one)."""

        def on_save(self, args, state, control, **kwargs):
            if fence is None or fence():
                progress.saved(state.global_step)

    writer = rank == 0
    callbacks: list[Any] = [MetricsLogger()] if writer else []
    if max_train_seconds:
        callbacks.append(TimeLimit())
    if sync_uri and writer:
        callbacks.append(UploadCheckpoint())
    if progress is not None and writer:
        callbacks.append(CheckpointProgress())
    return callbacks


# ------------------------------------------------------------------------------------ shared setup


def _common_args(cfg: SFTConfig | RFTConfig, out_dir: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """TrainingArguments shared by SFT and GRPO; device, precision and checkpointing from the plan (on CPU:
    use_cpu=True, bf16=False, fp16=False, activation_checkpointing as the recipe says, False by default)."""
    return dict(
        output_dir=str(out_dir / CHECKPOINTS), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, **plan["trainer_args"],
    )


def training_plan(cfg: SFTConfig | RFTConfig, model_path: str, world_size: int,
                  extra_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """rftflow.backends.local.gpu's plan for this machine (CUDA, bf16, vllm) and this model's parameter count; extra_args
    (the Ray recipe's FSDP / DeepSpeed settings) go to TRL's training arguments with the plan's own."""
    from rftflow.backends.local.gpu import count_parameters, gpu_plan, local_machine

    plan = gpu_plan(cfg, **local_machine(), n_params=count_parameters(model_path), world_size=world_size)
    plan["trainer_args"] = {**plan["trainer_args"], **(extra_args or {})}
    return plan


def _plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: plan[k] for k in ("precision", "method", "n_params", "vllm", "world_size", "per_device_batch")}


def _peft_config(cfg: SFTConfig | RFTConfig, method: str) -> Any:
    if method != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


def _save_final(trainer: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save an ordinary HF model directory (LoRA adapters merged in), so every stage can load it alike."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    final = out_dir / FINAL_MODEL
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    return final


def _last_step(metrics_path: Path) -> int:
    """The highest step in metrics.jsonl (0 when empty): rows at or below it are never written twice."""
    if not metrics_path.exists():
        return 0
    steps = [0]
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(int(json.loads(line).get("step", 0)))
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
            continue
    return max(steps)


def lease_fence(params: dict[str, Any]) -> Callable[[], bool] | None:
    """True while this trainer holds its stage's lease (None when it runs without one)."""
    held = params.get("lease")
    if not held:
        return None
    from rftflow.backends.local import lease

    return lambda: lease.holds(held["dir"], held["owner"])


def _prepare(params: dict[str, Any], rank: int = 0, world_size: int = 1
             ) -> tuple[Path, Path, Path | None, tuple[float, float]]:
    """The stage folder, its metrics file, the checkpoint to resume from and the clocks it had reached.

    Under several processes rank 0 picks the checkpoint and every rank resumes from that step, in its own
    out_dir (a shared folder, or a copy per rank as Ray's workers make); rank 0 alone rewinds the metrics."""
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / METRICS
    step = 0
    if params.get("resume", True) and rank == 0:
        step = checkpoint_step(last_complete_checkpoint(out_dir / CHECKPOINTS))
    if world_size > 1:
        step = _from_rank0(step)
    resume = out_dir / CHECKPOINTS / f"checkpoint-{step}" if step else None
    if resume is not None and not (resume / "trainer_state.json").is_file():
        raise FileNotFoundError(f"rank {rank}: rank 0 resumes from checkpoint-{step}, which {out_dir / CHECKPOINTS} "
                                "does not hold; every rank needs that checkpoint (a shared folder or a copy per rank)")
    offset = rewind_metrics(metrics_path, step) if rank == 0 else (0.0, 0.0)
    return out_dir, metrics_path, resume, offset


def train(trainer: Any, resume: Path | None, max_steps: int) -> None:
    """Train, resuming from `resume`. A checkpoint already at max_steps (the stage finished, then lost its
    manifest and result) is loaded, not trained on: resuming there would train one step past max_steps and
    replace a model that may already have been evaluated or promoted."""
    if resume is not None and checkpoint_step(resume) >= max_steps:
        trainer._load_from_checkpoint(str(resume))
        trainer.state.global_step = checkpoint_step(resume)
        return
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)


def _quiet_datasets() -> None:
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()


# ------------------------------------------------------------------------------------ SFT


def tokenize_sft(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> dict[str, list[list[int]]]:
    """input_ids and completion-only labels for conversational prompt/completion rows, exactly as TRL's
    SFTTrainer prepares them (chat template, loss on the completion only, keep_start truncation, fully masked
    rows dropped), but rendered and tokenized in batches: about 3x faster than its per-row map on 20k rows."""
    from trl.data_utils import common_prefix_length

    prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    fulls = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    for prompt, full in zip(prompt_ids, full_ids, strict=True):
        start = common_prefix_length(prompt, full)  # where the completion starts, as TRL decides it
        label = ([-100] * start + full[start:])[:max_length]
        if any(t != -100 for t in label):
            input_ids.append(full[:max_length])
            labels.append(label)
    return {"input_ids": input_ids, "labels": labels}


def _begin(params: dict[str, Any], kind: str, config: type[SFTConfig] | type[RFTConfig]
           ) -> tuple[Any, int, int, Any, dict[str, Any], Path]:
    """(recipe, rank, world size, progress writer on rank 0, the machine's plan, out_dir) of a trainer."""
    _quiet_datasets()
    cfg = config.model_validate(params["cfg"])
    rank, size = world()
    progress = make_progress(params, kind, cfg) if rank == 0 else None  # "loading" until training begins
    plan = training_plan(cfg, params["model_path"], size, params.get("trainer_args"))
    return cfg, rank, size, progress, plan, Path(params["out_dir"])


def run_sft(params: dict[str, Any]) -> dict[str, Any]:
    """params: model_path, data_uri, out_dir, cfg (SFTConfig dump), resume, sync_uri."""
    from datasets import Dataset
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    from rftflow.backends.local.sampling import load_model
    from rftflow.data.dataset import read_records

    cfg, rank, size, progress, plan, out_dir = _begin(params, "sft", SFTConfig)
    # Building TRL's config initialises the process group under several processes: before _prepare broadcasts.
    args = TrlSFTConfig(per_device_train_batch_size=plan["per_device_batch"], weight_decay=cfg.weight_decay,
                        max_length=cfg.max_length, packing=False, dataset_kwargs={"skip_prepare_dataset": True},
                        **_common_args(cfg, out_dir, plan))
    out_dir, metrics_path, resume, offset = _prepare(params, rank, size)
    records = read_records(params["data_uri"], kind="sft")
    rows = [{"prompt": r.prompt_messages(), "completion": [{"role": "assistant", "content": r.answer_text()}]}
            for r in records]
    model, tokenizer = load_model(params["model_path"], dtype=plan["load_dtype"])
    model.train()
    tokenizer.padding_side = "right"
    columns = tokenize_sft(tokenizer, rows, cfg.max_length)
    clock = TrainClock(offset)
    callbacks = make_callbacks(metrics_path, _SFT_NAMES, clock, max_train_seconds=cfg.max_train_seconds,
                               train_clock=cfg.train_clock, sync_uri=params.get("sync_uri"),
                               fence=lease_fence(params), progress=progress,
                               live=live_metrics("sft") if rank == 0 else None, rank=rank, world_size=size)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), processing_class=tokenizer,
                         peft_config=_peft_config(cfg, plan["method"]), callbacks=callbacks)
    train(trainer, resume, cfg.max_steps)
    train_seconds, cpu_seconds = clock.elapsed(), clock.cpu()
    if rank != 0:
        return _other_rank(rank, trainer)
    final = _save_final(trainer, tokenizer, out_dir)
    steps = trainer.state.global_step
    convergence = sft_convergence(_read_rows(metrics_path), demo_fit(final, records, seed=cfg.seed))
    return {
        "checkpoint_path": str(final), "steps": steps, "train_seconds": round(train_seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "resumed_from_step": checkpoint_step(resume), "examples": len(rows),
        "stopped_by_time": bool(cfg.max_train_seconds and steps < cfg.max_steps),
        "samples_per_s": round((steps - checkpoint_step(resume)) * cfg.batch_size
                               / max(train_seconds - offset[0], 1e-9), 1),
        "last": _last_row(metrics_path),
        "convergence": convergence,
        "world_size": size, "per_device_batch_size": args.per_device_train_batch_size,
        "plan": _plan_summary(plan),
    }


def _other_rank(rank: int, trainer: Any) -> dict[str, Any]:
    """What a rank other than 0 returns: it wrote nothing, rank 0 reports the run."""
    return {"rank": rank, "world_size": trainer.args.world_size, "steps": trainer.state.global_step,
            "per_device_batch_size": trainer.args.per_device_train_batch_size}


# Did SFT converge? A stalled run (loss stuck on a plateau while the schedule ran out) otherwise surfaces
# only later, as an RFT stage that "changed nothing". Two signs, either one is enough:
# - the model answers its own demonstrations' prompts far less accurately than the demonstrations do
#   (where they carry reference answers), or agrees with the demonstrations' final answers far too rarely;
# - the loss was still falling steeply at the end: the mean of the last tenth of the steps well below the
#   tenth before it (a run cut off in the middle of its jump; a jump that finished earlier is not counted).
FIT_SAMPLE = 256            # demonstrations decoded greedily after training (about a second on the tiny model)
FIT_MIN_RATIO = 0.5         # model accuracy on demo prompts below this x the demos' own accuracy: not converged
FIT_MIN_AGREEMENT = 0.5     # without reference answers: final-answer agreement with the demos below this
LOSS_STILL_FALLING = 0.25   # mean loss of the last tenth of the steps this much (relative) below the tenth before


def final_answer(text: str | None) -> str:
    """The text after the last '####' (its first line), else the whole text; whitespace-normalised."""
    text = text or ""
    i = text.rfind("####")
    if i >= 0:
        text = text[i + 4:].split("\n", 1)[0]
    return " ".join(text.split())


def demo_fit(model_path: str | Path, records: list[Any], *, seed: int = 0, n: int = FIT_SAMPLE) -> dict[str, Any]:
    """Greedy answers of the trained model on a seeded sample of its demonstrations' prompts, against the
    demonstrations' final answers and, where the rows carry them, the reference answers."""
    import random

    from rftflow.backends.local.sampling import load_model, sample

    picked = [r for r in records if r.answer_text() is not None]
    picked = random.Random(seed).sample(picked, min(n, len(picked)))
    if not picked:
        return {"fit_prompts": 0}
    model, tokenizer = load_model(model_path)
    longest = max(len(tokenizer(r.answer_text(), add_special_tokens=False)["input_ids"]) for r in picked)
    outs = sample(model, tokenizer, [r.prompt_messages() for r in picked], k=1, temperature=0.0,
                  max_new_tokens=min(longest + 4, 256), batch_size=64)
    got = [final_answer(o[0]["text"]) for o in outs]
    demo = [final_answer(r.answer_text()) for r in picked]
    out: dict[str, Any] = {"fit_prompts": len(picked),
                           "demo_agreement": sum(g == d for g, d in zip(got, demo, strict=True)) / len(picked)}
    refs = [(i, " ".join(str(r.reference_answer).split())) for i, r in enumerate(picked)
            if isinstance(r.reference_answer, str | int | float) and not isinstance(r.reference_answer, bool)]
    if refs:
        out["demo_accuracy"] = sum(demo[i] == ref for i, ref in refs) / len(refs)
        out["model_accuracy"] = sum(got[i] == ref for i, ref in refs) / len(refs)
    return out


def loss_trend(rows: list[dict[str, Any]], key: str = "train/loss") -> dict[str, Any]:
    """First/last logged loss and how much the mean loss fell from the second-to-last tenth of steps to the last."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and "step" in r]
    if not points:
        return {}
    last_step = points[-1][0]
    before = [v for s, v in points if last_step * 0.8 < s <= last_step * 0.9]
    last = [v for s, v in points if s > last_step * 0.9]
    out: dict[str, Any] = {"loss_first": points[0][1], "loss_last": points[-1][1],
                           "loss_min": min(v for _, v in points)}
    if before and last:
        a, b = sum(before) / len(before), sum(last) / len(last)
        out["loss_fall_last_tenth"] = (a - b) / a if a > 0 else 0.0
    return out


def sft_convergence(rows: list[dict[str, Any]], fit: dict[str, Any]) -> dict[str, Any]:
    """The loss trend and the demo fit, with `converged` (None when neither could be measured) and why not."""
    out = {**loss_trend(rows), **fit}
    reasons = []
    if "model_accuracy" in fit and fit.get("demo_accuracy"):
        if fit["model_accuracy"] < FIT_MIN_RATIO * fit["demo_accuracy"]:
            reasons.append(f"accuracy on its demonstrations' prompts {fit['model_accuracy']:.3f} is below "
                           f"{FIT_MIN_RATIO:g} x the demonstrations' own {fit['demo_accuracy']:.3f}")
    elif "demo_agreement" in fit and fit["demo_agreement"] < FIT_MIN_AGREEMENT:
        reasons.append(f"its final answers agree with the demonstrations' on {fit['demo_agreement']:.3f} of "
                       f"their prompts (below {FIT_MIN_AGREEMENT:g})")
    fall = out.get("loss_fall_last_tenth")
    if fall is not None and fall > LOSS_STILL_FALLING:
        reasons.append(f"loss still falling: the mean over the last tenth of the steps is {fall:.0%} below the "
                       "tenth before")
    measured = "demo_agreement" in fit or fall is not None
    out["converged"] = (not reasons) if measured else None
    out["not_converged_reasons"] = reasons
    return out


# ------------------------------------------------------------------------------------ GRPO


class RewardWindow:
    """The reward adapter: TRL's reward function backed by our reward contract, plus per-window stats.

    The same handler file (include/rewards/*.py or a user's) scores local GRPO rollouts and, deployed as a
    Lambda, AWS ones. Stats are kept between logging steps and popped into metrics.jsonl.
    """

    def __init__(self, reward_spec: str, records: list[Any], num_generations: int, *, workers: int = 0,
                 timeout_s: float = 60.0, world_size: int = 1):
        from rftflow.rewards.runner import load_reward

        self.reward = load_reward(reward_spec)
        self.__name__ = re.sub(r"\W", "_", getattr(self.reward, "name", "reward") or "reward")
        self.records = records
        self.num_generations = num_generations
        self.workers, self.timeout_s = workers, timeout_s
        self.world_size = world_size
        self.rollouts = 0
        self._reset()

    def _reset(self) -> None:
        self.scores: list[float] = []
        self.metrics: dict[str, list[float]] = {}
        self.groups = 0
        self.zero_std_groups = 0
        self.rollouts_at_reset = self.rollouts

    def __call__(self, prompts: list[Any], completions: list[Any], record_index: list[int],
                 **kwargs: Any) -> list[float]:
        from rftflow.rewards.contract import sample_for
        from rftflow.rewards.runner import score

        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        samples = [sample_for(self.records[i], text, sample_id=f"{self.records[i].id}#{n}")
                   for n, (i, text) in enumerate(zip(record_index, texts, strict=True))]
        results = score(self.reward, samples, workers=self.workers, timeout_s=self.timeout_s)
        values = [float(r.aggregate_reward_score) for r in results]
        metrics = [(m.name, float(m.value)) for r in results for m in r.metrics_list]
        everyone, all_metrics = values, metrics
        if self.world_size > 1:
            # Each rank scores its slice of the generation batch (TRL splits it in rank order): the window
            # counts the whole batch, so groups split across ranks are whole again and rates are global.
            shards = _gather((values, metrics))
            everyone = [v for shard, _ in shards for v in shard]
            all_metrics = [m for _, shard in shards for m in shard]
        self.scores.extend(everyone)
        for name, value in all_metrics:
            self.metrics.setdefault(name, []).append(value)
        # RepeatSampler puts each prompt's num_generations rollouts next to each other.
        g = self.num_generations
        for start in range(0, len(everyone) - g + 1, g):
            group = everyone[start:start + g]
            self.groups += 1
            self.zero_std_groups += max(group) == min(group)
        self.rollouts += len(everyone)
        return values

    def pop(self) -> dict[str, Any]:
        if not self.scores:
            return {"rollouts": self.rollouts}
        row: dict[str, Any] = {
            "critic/rewards/mean": sum(self.scores) / len(self.scores),
            "critic/rewards/max": max(self.scores),
            "critic/rewards/min": min(self.scores),
            "critic/score/mean": sum(self.scores) / len(self.scores),
            "critic/score/max": max(self.scores),
            "critic/score/min": min(self.scores),
            "frac_reward_zero_std": self.zero_std_groups / self.groups if self.groups else None,
            "rollouts": self.rollouts,
        }
        for name, values in self.metrics.items():
            row[f"reward/{name}"] = sum(values) / len(values)
        self._reset()
        return row


def run_grpo(params: dict[str, Any]) -> dict[str, Any]:
    """params: model_path, data_uri, reward_spec, out_dir, cfg (RFTConfig dump), resume, sync_uri,
    reward_workers, reward_timeout_s."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rftflow.backends.local.sampling import load_model
    from rftflow.data.dataset import read_records

    cfg, rank, size, progress, plan, out_dir = _begin(params, "grpo", RFTConfig)
    # Building TRL's config initialises the process group under several processes: before _prepare broadcasts.
    args = GRPOConfig(
        per_device_train_batch_size=plan["per_device_batch"], num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
        beta=cfg.beta, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards, num_iterations=cfg.num_iterations,
        max_grad_norm=cfg.max_grad_norm, log_completions=False, **_common_args(cfg, out_dir, plan),
        **plan["grpo_args"],
    )
    out_dir, metrics_path, resume, offset = _prepare(params, rank, size)
    records = read_records(params["data_uri"], kind="rft")
    dataset = Dataset.from_list([{"prompt": r.prompt_messages(), "record_index": i} for i, r in enumerate(records)])
    window = RewardWindow(params["reward_spec"], records, cfg.num_generations,
                          workers=params.get("reward_workers", 0), timeout_s=params.get("reward_timeout_s", 60.0),
                          world_size=size)
    model, tokenizer = load_model(params["model_path"], dtype=plan["load_dtype"])
    model.train()
    tokenizer.padding_side = "left"
    def finish_row(row: dict[str, Any]) -> None:
        # TRL logs the policy loss on its own only with an entropy bonus; otherwise loss = pg + beta * kl.
        if "actor/pg_loss" not in row and row.get("actor/loss") is not None:
            row["actor/pg_loss"] = row["actor/loss"] - cfg.beta * (row.get("actor/kl_loss") or 0.0)
        if cfg.beta > 0:
            row["actor/kl_coef"] = cfg.beta

    clock = TrainClock(offset)
    callbacks = make_callbacks(metrics_path, _GRPO_NAMES, clock, max_train_seconds=cfg.max_train_seconds,
                               train_clock=cfg.train_clock, window=window, sync_uri=params.get("sync_uri"),
                               finish_row=finish_row, fence=lease_fence(params), progress=progress,
                               live=live_metrics("rft") if rank == 0 else None, rank=rank, world_size=size)
    trainer = GRPOTrainer(model=model, reward_funcs=[window], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=_peft_config(cfg, plan["method"]), callbacks=callbacks)
    train(trainer, resume, cfg.max_steps)
    train_seconds, cpu_seconds = clock.elapsed(), clock.cpu()
    if rank != 0:
        return _other_rank(rank, trainer)
    final = _save_final(trainer, tokenizer, out_dir)
    steps = trainer.state.global_step
    resumed = checkpoint_step(resume)
    # Rollouts are counted by the adapter in this attempt; steps before a resume are estimated from the config.
    per_step = cfg.prompts_per_step * cfg.num_generations / cfg.num_iterations
    rollouts = window.rollouts + round(resumed * per_step)
    this_attempt_s = max(train_seconds - offset[0], 1e-9)
    return {
        "checkpoint_path": str(final), "steps": steps, "train_seconds": round(train_seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3), "resumed_from_step": resumed, "rollouts": rollouts,
        "rollouts_per_s": round(window.rollouts / this_attempt_s, 1),
        "stopped_by_time": bool(cfg.max_train_seconds and steps < cfg.max_steps),
        "prompts": len(records), "last": _last_row(metrics_path),
        "world_size": size, "per_device_batch_size": args.per_device_train_batch_size,
        "plan": _plan_summary(plan),
    }


def live_metrics(stage: str) -> Any:
    """The cycle's MLflow run for this trainer's rows, when the task that started it named one."""
    from rftflow.publish.tracking import LiveMetrics

    return LiveMetrics.from_env(stage)


def _last_row(metrics_path: Path) -> dict[str, Any]:
    if not metrics_path.exists():
        return {}
    lines = metrics_path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]) if lines else {}


def _read_rows(metrics_path: Path) -> list[dict[str, Any]]:
    """Every row of metrics.jsonl (a line cut short by a kill is skipped)."""
    if not metrics_path.exists():
        return []
    rows = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
