"""Batched sampling from a Hugging Face causal LM: k rollouts per prompt, greedy or sampled, seeded; with vLLM
on a CUDA GPU where it is installed (rftflow.backends.local.gpu decides), returning the same completion dicts.

Runs in the worker child (and in benchmarks): it imports torch and transformers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def device() -> str:
    """cuda (this process's GPU under torchrun / accelerate launch, which set LOCAL_RANK) or cpu."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local_rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{local_rank}" if local_rank and local_rank.isdigit() else "cuda"


def load_model(path: str | Path, dtype: str | None = None) -> tuple[Any, Any]:
    """Model (eval mode, on the best device) and tokenizer (left padding) from an HF model directory.
    `dtype` ("float32", "bfloat16", ...) loads the weights in that dtype; None keeps the saved one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    extra: dict[str, Any] = {}
    if dtype is not None:
        import torch

        extra["dtype"] = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path), **extra).to(device())
    model.eval()
    return model, tokenizer


def render_prompts(tokenizer: Any, prompts: list[list[dict]]) -> list[str]:
    """Chat-template each prompt and end it with the generation prompt, as SFT and GRPO see it."""
    return [tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) for msgs in prompts]


def sample(model: Any, tokenizer: Any, prompts: list[list[dict]], *, k: int = 1, temperature: float = 0.0,
           top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 24, seed: int = 1234,
           batch_size: int = 64) -> list[list[dict[str, Any]]]:
    """k completions per prompt: `[[{"text", "tokens", "truncated"}, ...k], ...]` in prompt order.

    temperature 0 is greedy (one generate per prompt batch, copied k times). Sampling uses the global
    torch RNG, seeded here, so the same model, prompts, seed and batch size give the same completions.
    `batch_size` counts prompts per generate call; each call produces batch_size x k sequences.
    """
    import torch
    from transformers import GenerationConfig

    greedy = temperature <= 0.0
    gen_config = GenerationConfig(
        do_sample=not greedy, max_new_tokens=max_new_tokens, num_return_sequences=1 if greedy else k,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        **({} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": top_k}),
    )
    tokenizer.padding_side = "left"
    texts = render_prompts(tokenizer, prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out: list[list[dict[str, Any]]] = []
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            generated = model.generate(**enc, generation_config=gen_config)
            new_tokens = generated[:, enc["input_ids"].shape[1]:].tolist()
            per_prompt = 1 if greedy else k
            for i in range(len(batch)):
                rollouts = [_completion(tokenizer, ids, eos, pad) for ids in
                            new_tokens[i * per_prompt:(i + 1) * per_prompt]]
                out.append([dict(rollouts[0]) for _ in range(k)] if greedy else rollouts)
    if was_training:
        model.train()
    return out


def _completion(tokenizer: Any, ids: list[int], eos: int | None, pad: int | None) -> dict[str, Any]:
    """Text up to the first EOS; `tokens` counts generated tokens including that EOS."""
    if eos is not None and eos in ids:
        n, truncated = ids.index(eos) + 1, False
        body = ids[:n - 1]
    else:
        body = [t for t in ids if t != pad] if pad != eos else ids
        n, truncated = len(body), True
    return {"text": tokenizer.decode(body, skip_special_tokens=True), "tokens": n, "truncated": truncated}


def vllm_completion(tokenizer: Any, ids: list[int], finish_reason: str | None, eos: int | None,
                    pad: int | None) -> dict[str, Any]:
    """A vLLM CompletionOutput (token_ids, finish_reason) as the dict `_completion` makes from HF generate: vLLM
    keeps the EOS it stopped on in token_ids; should it not, a "stop" finish still counts that EOS."""
    ids = list(ids)
    if (eos is not None and eos in ids) or finish_reason != "stop":
        return _completion(tokenizer, ids, eos, pad)
    return {"text": tokenizer.decode(ids, skip_special_tokens=True), "tokens": len(ids) + 1, "truncated": False}


def vllm_sample(llm: Any, tokenizer: Any, prompts: list[list[dict]], *, k: int = 1, temperature: float = 0.0,
                top_p: float = 1.0, top_k: int = 0, max_new_tokens: int = 24, seed: int = 1234,
                batch_size: int = 64) -> list[list[dict[str, Any]]]:
    """`sample` through a vllm.LLM: the same prompts (chat template, no added special tokens), the same
    completion dicts. batch_size is ignored: vLLM schedules the whole list itself."""
    from vllm import SamplingParams

    from rftflow.backends.local.gpu import vllm_sampling_kwargs

    params = SamplingParams(**vllm_sampling_kwargs(k=k, temperature=temperature, top_p=top_p, top_k=top_k,
                                                   max_new_tokens=max_new_tokens, seed=seed))
    texts = render_prompts(tokenizer, prompts)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    outputs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out = []
    for request in outputs:
        rollouts = [vllm_completion(tokenizer, o.token_ids, o.finish_reason, eos, pad) for o in request.outputs]
        out.append([dict(rollouts[0]) for _ in range(k)] if temperature <= 0.0 else rollouts)
    return out


def sampler(model_path: str, vllm: str = "auto", gpu_memory_utilization: float = 0.9) -> tuple[Any, str]:
    """(sample function over prompts, engine name) for a model: vLLM where rftflow.backends.local.gpu.vllm_choice says so
    (vllm is imported only then), else HF generate on the loaded model."""
    from rftflow.backends.local.gpu import local_machine, vllm_choice, vllm_engine_kwargs

    machine = local_machine()
    if vllm_choice(vllm, cuda=machine["cuda"], vllm_available=machine["vllm_available"]):
        from transformers import AutoTokenizer
        from vllm import LLM

        tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        llm = LLM(**vllm_engine_kwargs(model_path, bf16_ok=machine["bf16_ok"],
                                       gpu_memory_utilization=gpu_memory_utilization, seed=0))
        return (lambda prompts, **spec: vllm_sample(llm, tokenizer, prompts, **spec)), "vllm"
    model, tokenizer = load_model(model_path)
    return (lambda prompts, **spec: sample(model, tokenizer, prompts, **spec)), "hf"


def sample_passes(model_path: str, prompts: list[list[dict]], passes: list[dict[str, Any]], *,
                  vllm: str = "auto", gpu_memory_utilization: float = 0.9) -> dict[str, Any]:
    """Run several sampling passes (e.g. greedy, then k sampled) over the same prompts with one model load.
    `vllm` (auto | on | off) picks the engine as rftflow.backends.local.gpu.vllm_choice does (HF generate on CPU)."""
    run, engine = sampler(model_path, vllm, gpu_memory_utilization)
    results: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for spec in passes:
        spec = dict(spec)
        name = spec.pop("name")
        t0 = time.perf_counter()
        results[name] = run(prompts, **spec)
        seconds = time.perf_counter() - t0
        n = sum(len(r) for r in results[name])
        timings[name] = {"seconds": round(seconds, 3), "rollouts": n,
                         "rollouts_per_s": round(n / seconds, 1) if seconds > 0 else None, "engine": engine}
    return {"completions": results, "timings": timings}


def _completion_logprobs(model: Any, tokenizer: Any, texts: list[str], prompt_lens: list[int]) -> list[list[float]]:
    """Log-probabilities of each completion token (the tokens after each prompt) under `model`."""
    import torch

    tokenizer.padding_side = "right"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        logits = model(**enc).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, enc["input_ids"][:, 1:, None]).squeeze(-1)
    out = []
    for i, start in enumerate(prompt_lens):
        end = int(enc["attention_mask"][i].sum())
        out.append(logp[i, start - 1:end - 1].tolist())
    return out


def logprob_drift(candidate_path: str, start_path: str, pairs: list[dict[str, Any]],
                  batch_size: int = 64) -> dict[str, Any]:
    """Mean over completion tokens of log p_candidate - log p_start, on completions the candidate wrote:
    a Monte-Carlo estimate of KL(candidate || start) per token (greedy completions bias it towards the
    candidate's most likely answers, which is where a drifted policy differs most)."""
    candidate, tokenizer = load_model(candidate_path)
    start, _ = load_model(start_path)
    prompts = render_prompts(tokenizer, [p["messages"] for p in pairs])
    eos = tokenizer.eos_token or ""
    total, tokens = 0.0, 0
    for b in range(0, len(pairs), batch_size):
        batch_prompts = prompts[b:b + batch_size]
        texts = [pr + p["completion"] + eos for pr, p in zip(batch_prompts, pairs[b:b + batch_size], strict=True)]
        lens = [len(tokenizer(pr, add_special_tokens=False)["input_ids"]) for pr in batch_prompts]
        cand_lp = _completion_logprobs(candidate, tokenizer, texts, lens)
        start_lp = _completion_logprobs(start, tokenizer, texts, lens)
        for c, s in zip(cand_lp, start_lp, strict=True):
            total += sum(c) - sum(s)
            tokens += len(c)
    return {"kl": total / tokens if tokens else None, "completions": len(pairs), "tokens": tokens}
