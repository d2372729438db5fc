"""GPU throughput of the local stages on a ~100M-parameter Llama built from code with the tiny track's tokenizer:
SFT tokens/s, and GRPO rollouts/s with HF generate and with TRL's colocated vLLM (where vllm is installed).

    python benchmarks/bench_gpu.py [--sft-steps 40] [--grpo-steps 12] [--work DIR]

It runs the stages' own entry points (rftflow.backends.local.training.run_sft / run_grpo) with the recipe defaults for
precision (auto: bf16 where supported) and method (auto: full at this size), on the tiny track's data. "steady"
leaves out the first logging window (CUDA start-up, kernel selection, vLLM warm-up); "overall" keeps it.
Without CUDA it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TINY = ROOT / "include" / "data" / "tiny"

# About 99M parameters: 14 layers x (4 x 768^2 attention + 3 x 768 x 2048 MLP); the vocabulary is tiny (148).
SHAPE = {"hidden_size": 768, "num_hidden_layers": 14, "num_attention_heads": 12, "num_key_value_heads": 12,
         "intermediate_size": 2048, "max_position_embeddings": 256}


def build_model(out: Path) -> int:
    """A randomly initialised Llama of SHAPE with the tiny tokenizer, saved as an HF directory; its parameter count."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from rftflow.backends.local.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _rows(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _steady(rows: list[dict[str, Any]], key: str) -> float | None:
    """Units per second between the first and the last logged row (the first window's start-up left out)."""
    points = [(r["elapsed_s"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def bench_sft(model: Path, work: Path, steps: int) -> dict[str, Any]:
    from rftflow.backends.local.training import run_sft
    from rftflow.cycle.recipes import SFTConfig

    cfg = SFTConfig(max_steps=steps, batch_size=64, learning_rate=3e-4, warmup_steps=0, logging_steps=max(steps // 4, 1),
                    save_steps=10 * steps)
    result = run_sft({"model_path": str(model), "data_uri": str(TINY / "sft.jsonl"), "out_dir": str(work / "sft"),
                      "resume": False, "cfg": cfg.model_dump()})
    rows = _rows(work / "sft")
    tokens = rows[-1].get("train/num_tokens") or 0.0
    return {"steps": result["steps"], "batch": cfg.batch_size, "plan": result.get("plan", {}),
            "tokens_per_s_overall": tokens / result["train_seconds"],
            "tokens_per_s_steady": _steady(rows, "train/num_tokens")}


def bench_grpo(model: Path, work: Path, steps: int, vllm: str) -> dict[str, Any]:
    from rftflow.backends.local.training import run_grpo
    from rftflow.cycle.recipes import RFTConfig

    cfg = RFTConfig(max_steps=steps, prompts_per_step=32, num_generations=8, max_new_tokens=24, warmup_steps=0,
                    logging_steps=max(steps // 4, 1), save_steps=10 * steps, vllm=vllm)
    out = work / f"grpo-vllm-{vllm}"
    result = run_grpo({"model_path": str(model), "data_uri": str(TINY / "train.jsonl"), "out_dir": str(out),
                       "reward_spec": "numeric", "resume": False, "cfg": cfg.model_dump()})
    return {"steps": result["steps"], "rollouts": result["rollouts"], "plan": result.get("plan", {}),
            "rollouts_per_s_overall": result["rollouts_per_s"], "rollouts_per_s_steady": _steady(_rows(out), "rollouts")}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--grpo-steps", type=int, default=12)
    parser.add_argument("--work", help="keep the models and metrics here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one process, one GPU (not DataParallel over all of them)
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); it measures GPU throughput only",
              file=sys.stderr)
        return 2
    from transformers.utils import logging as hf_logging

    from rftflow.backends.local.gpu import vllm_available

    hf_logging.set_verbosity_error()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rftflow-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        n_params = build_model(work / "base")
        name = torch.cuda.get_device_name(0)
        print(f"model: {n_params / 1e6:.1f}M parameters ({SHAPE['num_hidden_layers']} layers, hidden "
              f"{SHAPE['hidden_size']}), tiny-track tokenizer; GPU: {name}, "
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}; one process", flush=True)
        sft = bench_sft(work / "base", work, args.sft_steps)
        print(f"sft: {sft['steps']} steps x {sft['batch']} samples, {sft['plan'].get('precision')}, "
              f"{sft['plan'].get('method')}: {_fmt(sft['tokens_per_s_steady'])} tokens/s steady "
              f"({_fmt(sft['tokens_per_s_overall'])} overall)", flush=True)
        engines = [("off", "HF generate")] + ([("on", "vLLM colocate")] if vllm_available() else [])
        for setting, label in engines:
            g = bench_grpo(work / "base", work, args.grpo_steps, setting)
            print(f"grpo ({label}): {g['steps']} steps x 256 rollouts, {g['plan'].get('precision')}: "
                  f"{_fmt(g['rollouts_per_s_steady'])} rollouts/s steady ({_fmt(g['rollouts_per_s_overall'])} "
                  "overall, including the update)", flush=True)
        if not vllm_available():
            print("grpo (vLLM colocate): not measured, the vllm package is not installed here", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
