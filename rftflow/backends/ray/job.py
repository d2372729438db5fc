"""What runs on the Ray cluster: `python -m rftflow.backends.ray.job SPEC_URI`, the entrypoint of every Ray job we submit.

The spec (JSON under the stage folder on the artifact root) names one job:

- `sft` / `grpo`: the local backend's TRL trainers (rftflow.backends.local.training.run_sft / run_grpo), run by Ray Train's
  `TorchTrainer` on `num_workers` workers (DDP: gloo on CPU, nccl on GPUs; the global batch stays the recipe's,
  each worker takes its share). Rank 0 writes metrics, uploads checkpoints as it saves them (a retried job
  resumes from them), and uploads the final model and its result to the stage folder.
- `generate`: the eval / diversity sampling passes, fanned out over `workers` Ray tasks in whole batches (so a
  greedy pass gives exactly what one process gives), gathered in prompt order into one JSONL file.

Inputs and outputs move through the artifact root (s3://, or a file:// path every node sees), never through a
disk shared with the Airflow worker. Nothing here is imported by Airflow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from rftflow.artifacts import store

MODEL_CACHE_ENV = "RFTFLOW_RAY_CACHE"


def result_uri(stage_uri: str, kind: str) -> str:
    return store.join(stage_uri, "ray", f"{kind}-result.json")


def spec_uri(stage_uri: str, kind: str) -> str:
    return store.join(stage_uri, "ray", f"{kind}-job.json")


def _cache_root() -> Path:
    root = Path(os.environ.get(MODEL_CACHE_ENV) or Path(tempfile.gettempdir()) / f"rftflow-ray-{os.getuid()}")
    root.mkdir(parents=True, exist_ok=True)
    return root


def local_copy(uri: str) -> str:
    """A directory or file on this node holding `uri` (rftflow.artifacts.store.local_copy, in this node's cache)."""
    return store.local_copy(uri, str(_cache_root()))


def _setup(threads: int | None) -> None:
    from rftflow.backends.local.worker import _setup as setup_torch

    setup_torch(int(threads or os.environ.get("OMP_NUM_THREADS") or 1))


# ------------------------------------------------------------------------------------ training


def _follow_progress(kind: str, job_dir: Path, stop: threading.Event) -> None:
    """Print the trainer's progress lines (step n/N, loss, time left) to the job log as they come."""
    from rftflow.backends.local.progress import ProgressReporter

    reporter = ProgressReporter(kind, job_dir)
    while not stop.wait(1.0):
        for line in reporter.poll():
            print(line, flush=True)
    for line in reporter.poll():
        print(line, flush=True)


def train_loop(spec: dict[str, Any]) -> None:
    """One Ray Train worker: fetch the inputs, train (rank 0 writes), upload the result (rank 0)."""
    import ray.train

    from rftflow.backends.local.progress import progress_path
    from rftflow.backends.local.training import CHECKPOINTS, FINAL_MODEL, METRICS, run_grpo, run_sft

    rank = ray.train.get_context().get_world_rank()
    _setup(spec.get("threads_per_worker"))
    kind, stage_uri = spec["kind"], spec["stage_uri"]
    out_dir = Path(tempfile.mkdtemp(prefix=f"rftflow-{kind}-rank{rank}-", dir=_cache_root()))
    remote_checkpoints = store.join(stage_uri, CHECKPOINTS)
    if spec.get("resume", True) and store.exists(remote_checkpoints):  # every rank resumes from the same step
        store.get_dir(remote_checkpoints, str(out_dir / CHECKPOINTS))
    params = {**spec["params"], "model_path": local_copy(spec["model_uri"]), "data_uri": spec["data_uri"],
              "out_dir": str(out_dir), "cfg": spec["cfg"], "resume": spec.get("resume", True),
              "job_digest": spec.get("job_digest"), "sync_uri": stage_uri if rank == 0 else None}
    if params.get("reward_uri"):  # the reward handler file, shipped through the artifact root
        params["reward_spec"] = local_copy(params.pop("reward_uri")) + (
            f":{params.pop('reward_handler')}" if params.get("reward_handler") else "")
    stop = threading.Event()
    follower = None
    if rank == 0:
        params["progress_path"] = str(progress_path(kind, out_dir))
        follower = threading.Thread(target=_follow_progress, args=(kind, out_dir, stop), daemon=True)
        follower.start()
    try:
        result = (run_sft if kind == "sft" else run_grpo)(params)
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)
    if rank != 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    store.put_dir(str(out_dir / FINAL_MODEL), store.join(stage_uri, FINAL_MODEL))
    if (out_dir / METRICS).exists():
        store.put_file(str(out_dir / METRICS), store.join(stage_uri, METRICS))
    context = ray.train.get_context()
    result.update(checkpoint_path=store.join(stage_uri, FINAL_MODEL), workers=context.get_world_size(),
                  job_digest=spec.get("job_digest"))
    store.write_json(result_uri(stage_uri, kind), {"ok": True, "result": result, "job_digest": spec.get("job_digest")})
    shutil.rmtree(out_dir, ignore_errors=True)


def run_training(spec: dict[str, Any]) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    scaling = spec["scaling"]
    use_gpu = bool(scaling.get("use_gpu"))
    resources = {"CPU": float(scaling.get("cpus_per_worker", 1))}
    if use_gpu:
        resources["GPU"] = float(scaling.get("gpus_per_worker", 1))
    print(f"{spec['kind']}: Ray Train on {scaling['num_workers']} worker(s), "
          f"{'nccl on GPUs' if use_gpu else 'gloo on CPUs'}", flush=True)
    trainer = TorchTrainer(
        train_loop, train_loop_config=spec,
        scaling_config=ScalingConfig(num_workers=int(scaling["num_workers"]), use_gpu=use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=spec.get("name") or f"rftflow-{spec['kind']}",
                             storage_path=str(_cache_root() / "ray-train")),
    )
    trainer.fit()
    if not store.exists(result_uri(spec["stage_uri"], spec["kind"])):
        raise RuntimeError(f"{spec['kind']}: Ray Train finished but rank 0 wrote no result under {spec['stage_uri']}")


# ------------------------------------------------------------------------------------ sampling


def _shard(model_uri: str, prompts: list[list[dict]], passes: list[dict[str, Any]], threads: int | None,
           engine: dict[str, Any]) -> dict[str, Any]:
    _setup(threads)
    from rftflow.backends.local.sampling import sample_passes

    return sample_passes(local_copy(model_uri), prompts, passes, vllm=engine.get("vllm", "auto"),
                         gpu_memory_utilization=float(engine.get("vllm_gpu_memory_utilization", 0.9)))


def shards(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of whole batches, one per worker (fewer when there are few batches)."""
    batches = math.ceil(n / batch_size) if n else 0
    per = math.ceil(batches / max(workers, 1)) if batches else 0
    return [(i * per * batch_size, min((i + 1) * per * batch_size, n)) for i in range(max(workers, 1))
            if i * per * batch_size < n]


def run_generate(spec: dict[str, Any]) -> dict[str, Any]:
    import ray

    prompts = [row["messages"] for row in store.read_jsonl(spec["prompts_uri"])]
    passes = spec["passes"]
    ranges = shards(len(prompts), min(int(p.get("batch_size", 64)) for p in passes), int(spec.get("workers", 1)))
    print(f"generate: {len(prompts)} prompts, {len(passes)} pass(es), {len(ranges)} Ray task(s)", flush=True)
    task = ray.remote(num_cpus=float(spec.get("cpus_per_worker", 1)),
                      num_gpus=float(spec.get("gpus_per_worker", 0)))(_shard)
    t0 = time.perf_counter()
    parts = ray.get([task.remote(spec["model_uri"], prompts[a:b], passes, spec.get("threads_per_worker"),
                                 spec.get("engine") or {})
                     for a, b in ranges])
    seconds = time.perf_counter() - t0
    lines = []
    for part in parts:
        completions = part["completions"]
        size = len(next(iter(completions.values()))) if completions else 0
        lines += [{name: rollouts[i] for name, rollouts in completions.items()} for i in range(size)]
    store.write_text(spec["out_uri"], "".join(json.dumps(line) + "\n" for line in lines))
    timings = {}
    for p in passes:
        n = sum(part["timings"][p["name"]]["rollouts"] for part in parts)
        timings[p["name"]] = {"seconds": round(seconds, 3), "rollouts": n, "tasks": len(ranges),
                              "rollouts_per_s": round(n / seconds, 1) if seconds > 0 else None}
    return {"prompts": len(prompts), "timings": timings}


# ------------------------------------------------------------------------------------ entrypoint


def exit_with_supervisor(poll_s: float = 2.0, parent: int | None = None) -> threading.Thread:
    """End this driver when the process that started it (Ray's job supervisor, through its shell) is gone.

    A job stopped while its entrypoint was still starting can lose its supervisor and leave this driver orphaned
    (reparented to init): it would go on training, and its Ray Train workers would hold the cluster's CPUs, under
    a job Ray reports as STOPPED. The driver's own actors die with it. `parent`: the pid of the shell that
    started this driver (the entrypoint passes `$$`), so that a supervisor gone before this function runs (a
    stop during the interpreter's start-up) is noticed too; without it, or when the shell exec'd this process,
    the parent found now is watched.
    """
    if parent is None or parent == os.getpid():
        parent = os.getppid()

    def gone() -> bool:
        return os.getppid() != parent or parent == 1

    def leave() -> None:
        print(f"rftflow: the job's supervisor (pid {parent}) is gone: the job was stopped; exiting", flush=True)
        os._exit(143)

    if gone():
        leave()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if gone():
                leave()

    thread = threading.Thread(target=watch, name="rftflow-supervisor-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 3) or (len(argv) == 3 and (argv[1] != "--parent" or not argv[2].isdigit())):
        print("usage: python -m rftflow.backends.ray.job SPEC_URI [--parent PID]", file=sys.stderr)
        return 2
    exit_with_supervisor(parent=int(argv[2]) if len(argv) == 3 else None)
    spec = store.read_json(argv[0])
    kind = spec.get("kind")
    started = time.time()
    try:
        if kind in ("sft", "grpo"):
            run_training(spec)
        elif kind == "generate":
            result = run_generate(spec)
            result["job_seconds"] = round(time.time() - started, 3)
            store.write_json(result_uri(spec["stage_uri"], kind),
                             {"ok": True, "result": result, "job_digest": spec.get("job_digest")})
        else:
            raise ValueError(f"unknown Ray job kind {kind!r}; expected sft, grpo or generate")
    except Exception as exc:
        traceback.print_exc()
        print(f"rftflow {kind} job failed: {type(exc).__name__}: {exc}", flush=True)
        try:
            store.write_json(result_uri(spec["stage_uri"], kind),
                             {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)},
                              "job_digest": spec.get("job_digest")})
        except Exception:  # the job's exit status still says it failed
            traceback.print_exc()
        return 1
    print(f"rftflow {kind} job done in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
