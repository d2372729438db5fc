"""What a local stage runs on: precision, full or LoRA, vLLM or HF generate, and how many processes.

The plan functions are pure (the recipe and what the machine has in, arguments out), so every branch is tested
on a CPU machine; the probes at the end look at the machine, and the stages apply the plan.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Literal

Precision = Literal["fp32", "bf16", "fp16"]


class PlanError(ValueError):
    """A recipe setting this machine cannot honour; the message names the field and what is missing."""


# ------------------------------------------------------------------------------------ training


def precision_for(setting: str, *, cuda: bool, bf16_ok: bool) -> Precision:
    """auto: bf16 on a CUDA GPU that supports it, else fp16 on CUDA, fp32 on CPU. An explicit choice is kept
    where it can run (bf16 also runs on CPU, as torch's CPU autocast); otherwise a PlanError."""
    if setting == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "fp32"
    if setting == "fp16" and not cuda:
        raise PlanError("precision: fp16 needs a CUDA GPU; none is available here (use auto, fp32 or bf16)")
    if setting == "bf16" and cuda and not bf16_ok:
        raise PlanError("precision: bf16 is not supported by this GPU (torch.cuda.is_bf16_supported() is False); "
                        "use auto or fp16")
    if setting not in ("fp32", "bf16", "fp16"):
        raise PlanError(f"precision: expected auto, fp32, bf16 or fp16; got {setting!r}")
    return setting  # type: ignore[return-value]


def training_method(setting: str, *, n_params: int | None, lora_above_params: float) -> Literal["full", "lora"]:
    """auto: LoRA above lora_above_params parameters, full fine-tuning at or below (and when the size is unknown)."""
    if setting in ("full", "lora"):
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise PlanError(f"method: expected auto, full or lora; got {setting!r}")
    return "lora" if n_params is not None and n_params > lora_above_params else "full"


def vllm_choice(setting: str, *, cuda: bool, vllm_available: bool) -> bool:
    """auto: vLLM when there is a CUDA GPU and vllm imports; on: the same, or a PlanError naming what is missing."""
    if setting == "off":
        return False
    if setting not in ("auto", "on"):
        raise PlanError(f"vllm: expected auto, on or off; got {setting!r}")
    if cuda and vllm_available:
        return True
    if setting == "on":
        missing = [m for m, ok in (("a CUDA GPU (torch.cuda.is_available() is False)", cuda),
                                   ("the vllm package (not importable in this environment)", vllm_available)) if not ok]
        raise PlanError(f"vllm: on needs {' and '.join(missing)}; set vllm: auto or off to generate with HF instead")
    return False


def per_device_batch(cfg: Any, world_size: int) -> int:
    """The per-process batch that keeps the recipe's global batch (and so its optimizer steps) at any world size:
    SFT batch_size / W; GRPO prompts_per_step x num_generations / W completions."""
    if hasattr(cfg, "prompts_per_step"):
        total, what = cfg.prompts_per_step * cfg.num_generations, (
            f"prompts_per_step x num_generations ({cfg.prompts_per_step} x {cfg.num_generations} = "
            f"{cfg.prompts_per_step * cfg.num_generations})")
    else:
        total, what = cfg.batch_size, f"batch_size ({cfg.batch_size})"
    if world_size < 1:
        raise PlanError(f"world size must be at least 1; got {world_size}")
    if total % world_size:
        raise PlanError(f"{what} is not divisible by the {world_size} training processes; choose a global batch "
                        f"that is a multiple of {world_size}, or set processes to a divisor of it")
    per_device = total // world_size
    if hasattr(cfg, "num_generations") and (per_device * world_size) % cfg.num_generations:
        # TRL's own rule (GRPOConfig): the generation batch holds whole groups of num_generations completions.
        raise PlanError(f"the generation batch ({per_device} x {world_size}) is not divisible by num_generations "
                        f"({cfg.num_generations})")
    return per_device


def gpu_plan(cfg: Any, *, cuda: bool, bf16_ok: bool, vllm_available: bool, n_params: int | None,
             world_size: int = 1) -> dict[str, Any]:
    """Everything a training stage decides from its recipe (SFTConfig or RFTConfig) and the machine.

    `trainer_args` go to TRL's SFTConfig/GRPOConfig (on CPU exactly use_cpu=True, bf16=False, fp16=False,
    activation_checkpointing as the recipe says); `grpo_args` adds TRL's colocated vLLM for GRPO (empty without
    it); `load_dtype` is the dtype to load the model in (None: as saved, which is what CPU does).
    """
    precision = precision_for(cfg.precision, cuda=cuda, bf16_ok=bf16_ok)
    method = training_method(cfg.method, n_params=n_params, lora_above_params=cfg.lora_above_params)
    is_grpo = hasattr(cfg, "num_generations")
    use_vllm = is_grpo and vllm_choice(cfg.vllm, cuda=cuda, vllm_available=vllm_available)
    if not cuda:
        load_dtype = None
    elif precision == "fp32" or method == "full":
        load_dtype = "float32"  # full fine-tuning keeps fp32 master weights; autocast computes in bf16/fp16
    else:
        load_dtype = {"bf16": "bfloat16", "fp16": "float16"}[precision]  # frozen base; adapters stay fp32
    return {
        "precision": precision, "method": method, "n_params": n_params, "vllm": use_vllm,
        "world_size": world_size, "per_device_batch": per_device_batch(cfg, world_size), "load_dtype": load_dtype,
        "trainer_args": {"use_cpu": not cuda, "bf16": precision == "bf16", "fp16": precision == "fp16",
                         "activation_checkpointing": cfg.gradient_checkpointing},
        "grpo_args": {"use_vllm": True, "vllm_mode": "colocate",
                      "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization} if use_vllm else {},
    }


# ------------------------------------------------------------------------------------ sampling (eval, diversity)


def vllm_engine_kwargs(model_path: str, *, bf16_ok: bool, gpu_memory_utilization: float, seed: int) -> dict[str, Any]:
    """`vllm.LLM(**kwargs)` for sampling from an HF model directory on one GPU."""
    return {"model": str(model_path), "tokenizer": str(model_path), "dtype": "bfloat16" if bf16_ok else "float16",
            "gpu_memory_utilization": gpu_memory_utilization, "seed": seed, "tensor_parallel_size": 1}


def vllm_sampling_kwargs(*, k: int, temperature: float, top_p: float, top_k: int, max_new_tokens: int,
                         seed: int) -> dict[str, Any]:
    """`vllm.SamplingParams(**kwargs)` for one pass of sampling.sample: temperature 0 is one greedy completion
    (copied k times by the caller, as the HF path does), else k sampled ones. top_k 0 means no top-k (-1 in vLLM)."""
    greedy = temperature <= 0.0
    return {"n": 1 if greedy else k, "temperature": 0.0 if greedy else temperature, "top_p": 1.0 if greedy else top_p,
            "top_k": -1 if greedy or top_k <= 0 else top_k, "seed": seed, "max_tokens": max_new_tokens}


# ------------------------------------------------------------------------------------ processes (runner)


def resolve_processes(setting: int | str, *, device_count: int) -> int:
    """auto: one process per CUDA device (1 without CUDA); N: N, which needs N CUDA devices when N > 1."""
    if setting == "auto":
        return max(device_count, 1)
    n = int(setting)
    if n > 1 and n > device_count:
        raise PlanError(f"processes: {n} needs {n} CUDA devices; this machine has {device_count} "
                        "(use auto, or at most the device count)")
    return max(n, 1)


def mixed_precision_flag(precision: str) -> str:
    """accelerate launch's --mixed_precision for a planned precision."""
    return {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")


def worker_command(job_path: str, *, processes: int, mixed_precision: str = "no", python: str = sys.executable,
                   port: int | None = None) -> list[str]:
    """The worker child's command line: `python -m rftflow.backends.local.worker JOB` for one process, accelerate launch
    (one process per GPU, one node) for more."""
    if processes <= 1:
        return [python, "-m", "rftflow.backends.local.worker", str(job_path)]
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(processes), "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
            *(["--main_process_port", str(port)] if port else []),
            "-m", "rftflow.backends.local.worker", str(job_path)]


def launch_plan(cfg: Mapping[str, Any], probe: Mapping[str, Any], env: Mapping[str, str] | None = None
                ) -> dict[str, Any]:
    """Processes, accelerate's mixed precision and extra child environment for a training job's recipe dump and
    a cuda_probe() result. One process on a node with several GPUs is kept to the first visible one: the Trainer
    would otherwise wrap the model in DataParallel and multiply the recipe's batch by the GPU count."""
    devices = int(probe.get("devices", 0))
    processes = resolve_processes(cfg.get("processes", "auto"), device_count=devices)
    precision = precision_for(cfg.get("precision", "auto"), cuda=devices > 0, bf16_ok=bool(probe.get("bf16")))
    extra_env: dict[str, str] = {}
    if processes == 1 and devices > 1:
        visible = [d for d in (env or {}).get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        extra_env["CUDA_VISIBLE_DEVICES"] = visible[0].strip() if visible else "0"
    return {"processes": processes, "mixed_precision": mixed_precision_flag(precision), "env": extra_env}


# ------------------------------------------------------------------------------------ probes


_PROBE = ("import json, torch; c = torch.cuda.is_available(); "
          "print(json.dumps({'devices': torch.cuda.device_count() if c else 0, "
          "'bf16': bool(c and torch.cuda.is_bf16_supported())}))")


def cuda_probe(env: Mapping[str, str] | None = None, timeout_s: float = 120.0) -> dict[str, Any]:
    """CUDA devices and bf16 support, without importing torch here (the runner's process stays light): no NVIDIA
    device node means no CUDA at once; otherwise a short child asks torch."""
    env = dict(os.environ if env is None else env)
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or not (
            glob.glob("/dev/nvidia[0-9]*") or os.path.isdir("/proc/driver/nvidia")):
        return {"devices": 0, "bf16": False}
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probing CUDA failed (status {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def local_machine() -> dict[str, Any]:
    """What this process can use: CUDA, bf16 on it, and the vllm package (imports torch)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"cuda": cuda, "bf16_ok": bool(cuda and torch.cuda.is_bf16_supported()), "vllm_available": vllm_available()}


def count_parameters(model_path: str) -> int:
    """Parameters of the model in an HF directory, from its config (built on the meta device: no memory, no I/O
    of weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
