"""Ray's own cost per stage, and what two Ray Train workers buy, on the tiny model (2-core machine, no GPU).

    .venv/bin/python benchmarks/bench_ray.py                 # SFT 200 steps + the 500-prompt eval
    .venv/bin/python benchmarks/bench_ray.py --steps 400

The same SFT (same recipe, steps and global batch, from the same tiny model) runs three ways, each through its
backend exactly as the DAG runs it (submit, wait, manifest):
  local       the local backend's child process, 2 torch threads
  ray x1      Ray Train, 1 worker with 2 CPUs (2 threads)
  ray x2      Ray Train, 2 DDP workers with 1 CPU each (the global batch split in two)
on a Ray head started here (2 CPUs, loopback). Then the eval's 500 greedy prompts: local child against 2 Ray
tasks. Printed per run: wall time (call to manifest), the trainer's own training time, overhead = wall - training
(process and cluster start-up, model load, uploads), and the ratio of wall times against the local run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rftflow.backends.base import StageContext, run_remote  # noqa: E402
from rftflow.backends.local.backend import LocalBackend  # noqa: E402
from rftflow.backends.ray.backend import RayBackend  # noqa: E402
from rftflow.backends.ray.local_head import start_head  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "include" / "data" / "tiny"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="SFT steps of every run (default 200)")
    ap.add_argument("--batch", type=int, default=64, help="global batch (default 64, the recipe's)")
    ap.add_argument("--eval-prompts", type=int, default=500)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    root = (work / "artifacts").as_uri()
    local = LocalBackend(work_dir=str(work / "local"), torch_threads=2)
    base = local.resolve_model("tiny", StageContext(root, "bench", "base", 0, "base"))
    sft = {"max_steps": args.steps, "batch_size": args.batch, "warmup_steps": max(args.steps // 20, 1),
           "save_steps": 10 * args.steps, "logging_steps": max(args.steps // 10, 1)}
    print(f"Ray head: starting (2 CPUs, loopback) in {work}", flush=True)
    t0 = time.time()
    head = start_head(num_cpus=2)
    print(f"Ray head: up in {time.time() - t0:.1f} s at {head.address}", flush=True)
    rows = []
    try:
        ray = RayBackend(address=head.address, python=sys.executable, conn_id="none", poll_s=0.5,
                         work_dir=str(work / "ray"))
        runs = [("local", local, {}),
                ("ray x1", ray, {"ray": {"num_workers": 1, "cpus_per_worker": 2, "threads_per_worker": 2}}),
                ("ray x2", ray, {"ray": {"num_workers": 2, "cpus_per_worker": 1, "threads_per_worker": 1}})]
        for name, backend, scaling in runs:
            ctx = StageContext(root, "bench", name.replace(" ", ""), 1, "sft")
            t0 = time.time()
            m = run_remote(backend, ctx, lambda b=backend, c=ctx, s=scaling: b.sft(
                c, base, str(DATA / "sft.jsonl"), {**sft, **s}))
            wall = time.time() - t0
            train = float(m.metrics["train_seconds"])
            rows.append((f"SFT {name}", wall, train, m.metrics.get("final_loss")))
            print(f"  SFT {name}: {wall:.1f} s wall, {train:.1f} s training, loss {m.metrics.get('final_loss')}",
                  flush=True)
        evals = [("local", local, {}), ("ray x2", ray, {"ray": {"num_workers": 2, "threads_per_worker": 1}})]
        for name, backend, scaling in evals:
            ctx = StageContext(root, "bench", name.replace(" ", ""), 1, "baseline_eval")
            t0 = time.time()
            m = backend.evaluate(ctx, base, str(DATA / "eval.jsonl"), "numeric",
                                 {"max_prompts": args.eval_prompts, **scaling})
            wall = time.time() - t0
            sampling = float(m.metrics["sampling"]["greedy"]["seconds"])
            rows.append((f"eval {name}", wall, sampling, m.metrics["pass_at_1"]))
            print(f"  eval {name}: {wall:.1f} s wall, {sampling:.1f} s sampling", flush=True)
    finally:
        head.stop()
    print(f"\nSFT {args.steps} steps, global batch {args.batch}; eval {args.eval_prompts} prompts greedy")
    print(f"{'run':<14}{'wall s':>9}{'work s':>9}{'overhead s':>12}{'wall / local':>14}")
    local_wall = {kind: wall for label, wall, _, _ in rows for kind in ("SFT", "eval") if label == f"{kind} local"}
    for label, wall, work_s, _ in rows:
        kind = label.split()[0]
        print(f"{label:<14}{wall:>9.1f}{work_s:>9.1f}{wall - work_s:>12.1f}{wall / local_wall[kind]:>14.2f}")
    x1 = next(r for r in rows if r[0] == "SFT ray x1")
    x2 = next(r for r in rows if r[0] == "SFT ray x2")
    print(f"\n2 workers against 1 on the same 2 cores: training time x{x1[2] / x2[2]:.2f}, wall x{x1[1] / x2[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
