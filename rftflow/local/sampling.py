"""Batched sampling from a Hugging Face causal LM: k rollouts per prompt, greedy or sampled, seeded.

Runs in the worker child (and in benchmarks): it imports torch and transformers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str | Path) -> tuple[Any, Any]:
    """Model (eval mode, on the best device) and tokenizer (left padding) from an HF model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(device())
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


def sample_passes(model_path: str, prompts: list[list[dict]], passes: list[dict[str, Any]]) -> dict[str, Any]:
    """Run several sampling passes (e.g. greedy, then k sampled) over the same prompts with one model load."""
    model, tokenizer = load_model(model_path)
    results: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for spec in passes:
        spec = dict(spec)
        name = spec.pop("name")
        t0 = time.perf_counter()
        results[name] = sample(model, tokenizer, prompts, **spec)
        seconds = time.perf_counter() - t0
        n = sum(len(r) for r in results[name])
        timings[name] = {"seconds": round(seconds, 3), "rollouts": n,
                         "rollouts_per_s": round(n / seconds, 1) if seconds > 0 else None}
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
