"""The local backend's child process: `python -m rftflow.backends.local.worker job.json`.

Reads one job (build the tiny model, sample, SFT or GRPO), runs it with torch, and writes the result JSON
next to the job; a failure writes the error there and exits non-zero. Started by accelerate launch (several
GPUs), every process trains and rank 0 alone holds the lease and writes the result.
"""

from __future__ import annotations

import json
import os
import sys
import threading
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
    from rftflow.backends.local.tiny_model import build_tiny

    return build_tiny(params["out_dir"], params.get("seed", 0))


def _generate(params: dict[str, Any]) -> dict[str, Any]:
    """Prompts from a JSONL file of {"messages": [...]}; completions to a JSONL file, one line per prompt.
    `vllm` (auto | on | off, default auto) and `vllm_gpu_memory_utilization` choose the engine (eval/diversity)."""
    from rftflow.backends.local.sampling import sample_passes

    prompts = [json.loads(line)["messages"] for line in
               Path(params["prompts_path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    result = sample_passes(params["model_path"], prompts, params["passes"], vllm=params.get("vllm", "auto"),
                           gpu_memory_utilization=float(params.get("vllm_gpu_memory_utilization", 0.9)))
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
    from rftflow.backends.local.sampling import logprob_drift

    pairs = [json.loads(line) for line in
             Path(params["pairs_path"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    return logprob_drift(params["candidate_path"], params["start_path"], pairs,
                         batch_size=int(params.get("batch_size", 64)))


def _sft(params: dict[str, Any]) -> dict[str, Any]:
    from rftflow.backends.local.training import run_sft

    return run_sft(params)


def _grpo(params: dict[str, Any]) -> dict[str, Any]:
    from rftflow.backends.local.training import run_grpo

    return run_grpo(params)


JOBS = {"build_tiny": _build_tiny, "generate": _generate, "drift": _drift, "sft": _sft, "grpo": _grpo}


def _write_result(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


LEASE_LOST = 75  # exit status of a trainer whose lease was taken over (EX_TEMPFAIL)


def _hold_lease(spec: dict[str, Any]) -> None:
    """Renew the trainer lease every heartbeat_s in a daemon thread; exit at once when it was taken over,
    so a trainer presumed dead (hung, or cut off on another machine) never trains beside its successor."""
    from rftflow.backends.local import lease

    job_dir, owner, every = spec["dir"], spec["owner"], float(spec.get("heartbeat_s", lease.HEARTBEAT_S))
    if not lease.renew(job_dir, owner):
        print(f"trainer lease in {job_dir} is held by another trainer; exiting", flush=True)
        os._exit(LEASE_LOST)

    def beat() -> None:
        while True:
            time.sleep(every)
            try:
                held = lease.renew(job_dir, owner)
            except Exception as exc:  # an unreadable lease is not a takeover: keep training, say so
                print(f"trainer lease not renewed: {exc}", flush=True)
                continue
            if not held:
                print("trainer lease was taken over by another trainer; stopping without writing more", flush=True)
                os._exit(LEASE_LOST)

    threading.Thread(target=beat, name="trainer-lease", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m rftflow.backends.local.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = Path(job["result_path"])
    if _rank() != 0:  # another process of a multi-GPU trainer: it trains; rank 0 holds the lease and reports
        return _follower(job)
    if job.get("kind") in ("sft", "grpo"):  # step n/N, rates and time left, for whoever waits (progress.py)
        from rftflow.backends.local.progress import progress_path

        job["params"].setdefault("progress_path", str(progress_path(job["kind"], result_path.parent)))
    held = job["params"].get("lease")
    # The result names the lease owner and the job, so whoever waits (a retry, the triggerer) knows it is
    # this trainer's, and a finished stage whose manifest was lost is recognised instead of trained again.
    stamp = {"owner": held["owner"], "job_digest": job["params"].get("job_digest")} if held else {}
    if held:
        _hold_lease(held)
    started = time.time()
    try:
        if job["kind"] not in JOBS:
            raise ValueError(f"unknown job kind {job['kind']!r}; expected one of {', '.join(JOBS)}")
        _setup(int(job.get("threads", 2)))
        result = JOBS[job["kind"]](job["params"])
    except Exception as exc:
        traceback.print_exc()
        _write_result(result_path, {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)},
                                    **stamp})
        _release(held)
        return 1
    result["worker_seconds"] = round(time.time() - started, 3)
    if held and not _still_held(held):
        print("trainer lease was taken over by another trainer; not writing a result", flush=True)
        return LEASE_LOST
    _write_result(result_path, {"ok": True, "result": result, **stamp})
    _release(held)
    return 0


def _rank() -> int:
    """This process's rank under accelerate launch / torchrun (RANK), 0 when started alone."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _follower(job: dict[str, Any]) -> int:
    """Run the job on a rank other than 0: no lease, no result file; a failure exits non-zero, which makes
    accelerate launch stop the other ranks and the runner report the log."""
    try:
        if job["kind"] not in ("sft", "grpo"):
            raise ValueError(f"job kind {job['kind']!r} runs in one process; only sft and grpo run on several")
        _setup(int(job.get("threads", 2)))
        JOBS[job["kind"]](job["params"])
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def _still_held(held: dict[str, Any]) -> bool:
    from rftflow.backends.local import lease

    return lease.holds(held["dir"], held["owner"])


def _release(held: dict[str, Any] | None) -> None:
    if held:
        from rftflow.backends.local import lease

        lease.finish(held["dir"], held["owner"])


if __name__ == "__main__":
    raise SystemExit(main())
