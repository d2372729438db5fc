"""SFT and GRPO under two processes, as Ray Train's TorchTrainer runs them (a gloo process group initialised
before run_sft/run_grpo, RANK/WORLD_SIZE/MASTER_* set): each rank trains half the recipe's global batch for the
recipe's steps, and rank 0 alone writes metrics, progress and the model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "include" / "data" / "tiny"

# Any reward that varies between rollouts gives GRPO a gradient from a random-init model: the share of digits.
DIGITS_REWARD = '''
def lambda_handler(event, context=None):
    out = []
    for sample in event:
        text = sample["messages"][-1]["content"]
        score = sum(c.isdigit() for c in text) / max(len(text), 1)
        out.append({"id": sample["id"], "aggregate_reward_score": score,
                    "metrics_list": [{"name": "digits", "value": score, "type": "Reward"}]})
    return out
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, work: str) -> None:
    """One training process: the process group first (as Ray Train does), then SFT and GRPO in its own out_dir."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    from rftflow.backends.local.training import run_grpo, run_sft, world

    assert world() == (rank, world_size)
    w = Path(work)
    mine = w / f"rank{rank}"
    sft = run_sft({"model_path": str(w / "base"), "data_uri": str(w / "sft.jsonl"), "out_dir": str(mine / "sft"),
                   "progress_path": str(mine / "sft-progress.json"),
                   "cfg": {"max_steps": 6, "batch_size": 4, "logging_steps": 2, "save_steps": 100,
                           "warmup_steps": 0}})
    grpo = run_grpo({"model_path": str(w / "base"), "data_uri": str(w / "rft.jsonl"), "out_dir": str(mine / "grpo"),
                     "reward_spec": str(w / "digits.py"), "progress_path": str(mine / "grpo-progress.json"),
                     "cfg": {"max_steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 8,
                             "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 100, "warmup_steps": 0}})
    (mine / "results.json").write_text(json.dumps({"sft": sft, "grpo": grpo}, default=str))
    dist.destroy_process_group()


def _tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_two_processes_split_the_global_batch_and_only_rank_0_writes(tmp_path):
    import torch.multiprocessing as mp

    from rftflow.backends.local.tiny_model import build_tiny

    build_tiny(tmp_path / "base", seed=0)
    lines = (TINY / "sft.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "sft.jsonl").write_text("".join(lines[:64]))
    (tmp_path / "rft.jsonl").write_text("".join((TINY / "train.jsonl").read_text().splitlines(keepends=True)[:32]))
    (tmp_path / "digits.py").write_text(DIGITS_REWARD)

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    r0, r1 = (json.loads((tmp_path / f"rank{r}" / "results.json").read_text()) for r in (0, 1))
    base = _tensors(tmp_path / "base")
    for stage, steps, per_device in (("sft", 6, 2), ("grpo", 2, 2)):
        # the recipe's steps on every rank, each with half the global batch (SFT 4 samples, GRPO 2 x 2 rollouts)
        assert r0[stage]["steps"] == r1[stage]["steps"] == steps
        assert r0[stage]["per_device_batch_size"] == r1[stage]["per_device_batch_size"] == per_device
        assert r0[stage]["world_size"] == r1[stage]["world_size"] == 2 and r1[stage]["rank"] == 1
        assert set(r1[stage]) == {"rank", "world_size", "steps", "per_device_batch_size"}  # rank 1 reports nothing else
        assert r0[stage]["plan"]["per_device_batch"] == per_device and r0[stage]["plan"]["method"] == "full"
        # rank 0 alone wrote metrics, progress and the final model
        ours, theirs = tmp_path / "rank0" / stage, tmp_path / "rank1" / stage
        assert (ours / "metrics.jsonl").is_file() and (ours / "model" / "config.json").is_file()
        assert (tmp_path / "rank0" / f"{stage}-progress.json").is_file()
        assert not (theirs / "metrics.jsonl").exists() and not (theirs / "model").exists()
        assert not (tmp_path / "rank1" / f"{stage}-progress.json").exists()
        rows = [json.loads(line) for line in (ours / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == steps
        trained = _tensors(ours / "model")
        assert any(not trained[name].equal(base[name]) for name in base), f"{stage} left the parameters unchanged"
    assert [r["step"] for r in rows] == [1, 2]
    # rank 0 counts every rank's rollouts (2 steps x 4), not only its own half
    assert r0["grpo"]["rollouts"] == 8 and rows[-1]["rollouts"] == 8
    assert "convergence" in r0["sft"]  # the demonstrations' fit is measured once, on rank 0


def test_under_torchrun_the_worker_trains_on_both_ranks_and_rank_0_alone_holds_the_lease_and_reports(tmp_path):
    """What accelerate launch does on a node with several GPUs, on CPU: RANK/WORLD_SIZE set and no process group
    yet (building TRL's config creates it), one shared stage folder, and the stage's trainer lease."""
    import subprocess
    import sys

    from rftflow.backends.local import lease
    from rftflow.backends.local.runner import child_env
    from rftflow.backends.local.tiny_model import build_tiny

    build_tiny(tmp_path / "base", seed=0)
    (tmp_path / "sft.jsonl").write_text("".join((TINY / "sft.jsonl").read_text().splitlines(keepends=True)[:64]))
    job_dir = tmp_path / "logs"
    held = lease.new_lease("sft", heartbeat_s=1.0, stale_after_s=120.0)
    lease.write_lease(job_dir, held)
    job = job_dir / "sft.json"
    job.write_text(json.dumps({"kind": "sft", "threads": 1, "result_path": str(job_dir / "sft-result.json"), "params": {
        "model_path": str(tmp_path / "base"), "data_uri": str(tmp_path / "sft.jsonl"), "out_dir": str(tmp_path / "stage"),
        "lease": {"dir": str(job_dir), "owner": held.owner, "heartbeat_s": 1.0},
        "cfg": {"max_steps": 6, "batch_size": 4, "logging_steps": 2, "save_steps": 100, "warmup_steps": 0}}}))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), "-m", "rftflow.backends.local.worker", str(job)],
                          capture_output=True, text=True, timeout=300, env=child_env(1), cwd=str(ROOT))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((job_dir / "sft-result.json").read_text())
    assert payload["ok"] and payload["owner"] == held.owner
    result = payload["result"]
    assert (result["steps"], result["world_size"], result["per_device_batch_size"]) == (6, 2, 2)
    steps = [json.loads(line)["step"] for line in (tmp_path / "stage" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # one writer: each row once
    assert lease.read_lease(job_dir).finished
