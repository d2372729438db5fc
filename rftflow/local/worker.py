"""The local backend's child process: `python -m rftflow.local.worker job.json`.

Reads one job (build the tiny model, sample, SFT or GRPO), runs it with torch, and writes the result JSON
next to the job; a failure writes the error there and exits non-zero.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _setup(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed by an earlier parallel op; harmless
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()


def _build_tiny(params: dict[str, Any]) -> dict[str, Any]:
    from rftflow.local.tiny_model import build_tiny

    return build_tiny(params["out_dir"], params.get("seed", 0))


def _generate(params: dict[str, Any]) -> dict[str, Any]:
    """Prompts from a JSONL file of {"messages": [...]}; completions to a JSONL file, one line per prompt."""
    from rftflow.local.sampling import sample_passes

    prompts = [json.loads(line)["messages"] for line in
               Path(params["prompts_path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    result = sample_passes(params["model_path"], prompts, params["passes"])
    completions = result.pop("completions")
    out = Path(params["out_path"])
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(len(prompts)):
            f.write(json.dumps({name: rollouts[i] for name, rollouts in completions.items()}) + "\n")
    tmp.replace(out)
    return {"prompts": len(prompts), **result}


def _drift(params: dict[str, Any]) -> dict[str, Any]:
    """KL(candidate || start) per token on completions: a JSONL file of {"messages", "completion"}."""
    from rftflow.local.sampling import logprob_drift

    pairs = [json.loads(line) for line in
             Path(params["pairs_path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    return logprob_drift(params["candidate_path"], params["start_path"], pairs,
                         batch_size=int(params.get("batch_size", 64)))


def _sft(params: dict[str, Any]) -> dict[str, Any]:
    from rftflow.local.training import run_sft

    return run_sft(params)


def _grpo(params: dict[str, Any]) -> dict[str, Any]:
    from rftflow.local.training import run_grpo

    return run_grpo(params)


JOBS = {"build_tiny": _build_tiny, "generate": _generate, "drift": _drift, "sft": _sft, "grpo": _grpo}


def _write_result(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rftflow.local.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = Path(job["result_path"])
    started = time.time()
    try:
        if job["kind"] not in JOBS:
            raise ValueError(f"unknown job kind {job['kind']!r}; expected one of {', '.join(JOBS)}")
        _setup(int(job.get("threads", 2)))
        result = JOBS[job["kind"]](job["params"])
    except Exception as exc:
        traceback.print_exc()
        _write_result(result_path, {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}})
        return 1
    result["worker_seconds"] = round(time.time() - started, 3)
    _write_result(result_path, {"ok": True, "result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
