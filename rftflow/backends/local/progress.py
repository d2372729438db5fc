"""Training progress a person can follow: the trainer writes it, whoever waits for the trainer logs it.

The worker child rewrites `{job_dir}/{kind}-progress.json` (at most about once a second, and at every logging
step, checkpoint and phase change). The side that waits for it (the task as the trainer's parent, a retry that
adopted it, or the triggerer of a deferred task) reads that file on each poll and logs one line per `every_s`
(RFTFLOW_PROGRESS_EVERY_S, default 10 s) while the step moves, plus a line for each checkpoint and phase:

    sft: step 120/1500 (8%) | loss 1.2345 | 14.2 samples/s, 3100 tokens/s | elapsed 1m02s | left ~11m30s

Pure Python (no torch, no Airflow): the child, the task, the triggerer and the terminal display import it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

EVERY_ENV = "RFTFLOW_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 10.0
WRITE_EVERY_S = 1.0  # the child rewrites the file at most this often between logging steps
# Matches the step lines `describe` writes, wherever they land (task log, `airflow dags test` output).
STEP_LINE = re.compile(r"\b(?P<kind>sft|grpo): step (?P<step>\d+)/(?P<total>\d+)(?P<rest>[^\n]*)")
LEFT = re.compile(r"left ~(?P<left>\S+)")


def progress_path(kind: str, job_dir: str | Path) -> Path:
    return Path(job_dir) / f"{kind}-progress.json"


def every_s() -> float:
    """Seconds between two step lines in a log (RFTFLOW_PROGRESS_EVERY_S; a bad value is a clear error)."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{EVERY_ENV}={raw!r}: expected seconds between progress lines, e.g. 10") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{EVERY_ENV}={raw!r}: expected a number of seconds >= 0, e.g. 10")
    return value


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The progress dict, or None when there is none yet (or it is being replaced right now)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------------ the trainer's side


class ProgressWriter:
    """Kept by the training child; `step()` is cheap (a clock read) unless a second has passed.

    kind: sft | grpo. unit: what the trainer consumes per step (`samples` for SFT, `rollouts` for GRPO) and
    per_step how many of them one optimizer step takes, for the rate shown before the first logging step.
    """

    def __init__(self, path: str | Path, kind: str, max_steps: int, *, unit: str, per_step: float,
                 owner: str | None = None, max_train_seconds: float | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.unit, self.per_step = unit, per_step
        self.max_train_seconds = max_train_seconds
        self.data: dict[str, Any] = {"kind": kind, "owner": owner, "phase": "loading", "step": 0,
                                     "max_steps": int(max_steps), "start_step": 0, "started_at": time.time()}
        self._attempt_start = time.monotonic()
        self._written = 0.0
        self._tokens: tuple[float, float] | None = None  # (num_tokens, monotonic) at the previous logging step
        self._flush()

    def _flush(self) -> None:
        self.data["updated_at"] = time.time()
        try:
            _write(self.path, self.data)
        except OSError:  # progress is a courtesy: a full disk must not stop training here
            return
        self._written = time.monotonic()

    def begin(self, step: int, elapsed_s: float) -> None:
        self._attempt_start = time.monotonic()
        self.data.update(phase="training", step=int(step), start_step=int(step), elapsed_s=round(elapsed_s, 1))
        self._flush()

    def step(self, step: int, elapsed_s: float, extra_units: float | None = None) -> None:
        """After each optimizer step; `extra_units` replaces the per_step estimate when counted (rollouts)."""
        self.data["step"] = int(step)
        self.data["elapsed_s"] = round(elapsed_s, 1)
        done = step - self.data["start_step"]
        attempt_s = time.monotonic() - self._attempt_start
        if done > 0 and attempt_s > 0:
            units = extra_units if extra_units is not None else done * self.per_step
            self.data[f"{self.unit}_per_s"] = round(units / attempt_s, 2)
            left = (self.data["max_steps"] - step) * attempt_s / done
            if self.max_train_seconds:
                left = min(left, max(self.max_train_seconds - elapsed_s, 0.0))
            self.data["eta_s"] = round(max(left, 0.0), 1)
        if time.monotonic() - self._written >= WRITE_EVERY_S:
            self._flush()

    def logged(self, step: int, row: dict[str, Any]) -> None:
        """At each logging step: the loss (SFT) or mean reward (GRPO) and, when TRL counts them, tokens/s."""
        for key, name in (("train/loss", "loss"), ("critic/rewards/mean", "reward"), ("actor/kl_loss", "kl")):
            if row.get(key) is not None:
                self.data[name] = row[key]
        tokens = row.get("train/num_tokens", row.get("perf/total_num_tokens"))
        now = time.monotonic()
        if isinstance(tokens, int | float):
            if self._tokens is not None and now > self._tokens[1] and tokens > self._tokens[0]:
                self.data["tokens_per_s"] = round((tokens - self._tokens[0]) / (now - self._tokens[1]), 1)
            self._tokens = (float(tokens), now)
        self.data["logged_step"] = int(step)
        self._flush()

    def saved(self, step: int) -> None:
        """Every checkpoint of this attempt is kept in the file, so a reader polling once a second misses none."""
        self.data["checkpoint_step"] = int(step)
        self.data.setdefault("checkpoints", []).append(int(step))
        self._flush()

    def end(self, step: int, elapsed_s: float) -> None:
        self.data.update(phase="saving", step=int(step), elapsed_s=round(elapsed_s, 1), eta_s=0.0)
        self._flush()


# ------------------------------------------------------------------------------------ the waiting side


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def describe(p: dict[str, Any]) -> str:
    """One step line: step n/N, loss or reward, throughput, elapsed and time left."""
    kind, step, total = p.get("kind", "train"), int(p.get("step", 0)), int(p.get("max_steps") or 0)
    parts = [f"{kind}: step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "")]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4f}")
    if p.get("reward") is not None:
        parts.append(f"reward {p['reward']:.3f}" + (f", kl {p['kl']:.4f}" if p.get("kl") is not None else ""))
    rates = [f"{p[key]:.{0 if key == 'tokens_per_s' else 1}f} {key.removesuffix('_per_s')}/s"
             for key in ("samples_per_s", "rollouts_per_s", "tokens_per_s") if p.get(key) is not None]
    if rates:
        parts.append(", ".join(rates))
    parts.append(f"elapsed {duration(p.get('elapsed_s'))}")
    if p.get("eta_s") is not None:
        parts.append(f"left ~{duration(p['eta_s'])}")
    return " | ".join(parts)


class ProgressReporter:
    """Turns a trainer's progress file into log lines at a sensible rate; `poll()` on every wait tick."""

    def __init__(self, kind: str, job_dir: str | Path, *, owner: str | None = None, every: float | None = None):
        self.path = progress_path(kind, job_dir)
        self.owner = owner
        self.every = every_s() if every is None else every
        self._phase: str | None = None
        self._step: int | None = None
        self._checkpoints: set[int] = set()
        self._last_line = -math.inf
        self.latest: dict[str, Any] | None = None

    def poll(self) -> list[str]:
        p = read_progress(self.path)
        if p is None or (self.owner and p.get("owner") not in (None, self.owner)):
            return []  # nothing yet, or the file of another (earlier) trainer
        self.latest = p
        lines: list[str] = []
        kind, phase, step = p.get("kind", "train"), p.get("phase"), int(p.get("step", 0))
        total = p.get("max_steps")
        saved = p.get("checkpoints") or ([p["checkpoint_step"]] if p.get("checkpoint_step") is not None else [])
        for checkpoint in saved:  # every one saved by this trainer (this attempt), each said once, in order
            if checkpoint not in self._checkpoints:
                lines.append(f"{kind}: checkpoint saved at step {checkpoint}/{total} (checkpoint-{checkpoint})")
                self._checkpoints.add(checkpoint)
        if phase != self._phase:
            if phase == "loading":
                lines.append(f"{kind}: loading the model and data")
            elif phase == "training":
                start = int(p.get("start_step", 0))
                lines.append(f"{kind}: training {total} steps" + (f", resumed at step {start} from its checkpoint"
                                                                    if start else ""))
            elif phase == "saving":
                lines.append(describe(p))
                lines.append(f"{kind}: training done at step {step}/{total} in {duration(p.get('elapsed_s'))}; "
                             "saving the final model")
                self._step, self._last_line = step, time.monotonic()
            self._phase = phase
        now = time.monotonic()
        moved = step != self._step and step > int(p.get("start_step", 0))
        if phase == "training" and moved and now - self._last_line >= self.every:
            lines.append(describe(p))
            self._step, self._last_line = step, now
        return lines
