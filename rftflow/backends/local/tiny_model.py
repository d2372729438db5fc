"""The tiny base model for the demo and the tests: a word-level tokenizer and a 0.87M-parameter Llama.

Built from code in seconds, deterministic for a seed, saved as an ordinary Hugging Face model directory.
Runs in the worker child (it imports torch and transformers).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

# Words are single tokens (with their leading space); every digit is its own token, so arithmetic is
# learnable digit by digit. Anything else is one character per token.
PRE_TOKENIZER_PATTERN = r" ?####| ?[A-Za-z]+| ?\d|\n| |[^\sA-Za-z\d]"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]

# The generation prompt ends on a token boundary ("A:"), so prompt tokens are a prefix of
# prompt + completion tokens, which is what SFT trains on and what sampling continues.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'Q: ' + message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'A:' + message['content'] + eos_token }}"
    "{%- else -%}{{ message['content'] + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'A:' }}{%- endif -%}"
)

MODEL_SHAPE = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 384,
    "max_position_embeddings": 256,
}
BUILD_INFO = "tiny_build.json"  # written last: its presence marks a complete build


def vocabulary() -> list[str]:
    """Special tokens, digits, punctuation, letters and the tiny track's words, each also with a leading space."""
    from rftflow.data import sample_data

    texts = list(sample_data._METRICS) + [t for ts in sample_data._TEMPLATES.values() for t in ts]
    words = set(re.findall(r"[A-Za-z]+", " ".join(texts))) | {"Q", "A"} | set(string.ascii_letters)
    pieces = ["\n", " ", "####", " ####"]
    pieces += [d for c in string.digits for d in (c, " " + c)]
    pieces += [c for c in string.punctuation]
    pieces += [w for word in sorted(words) for w in (word, " " + word)]
    vocab: list[str] = list(SPECIAL_TOKENS)
    for piece in pieces:
        if piece not in vocab:
            vocab.append(piece)
    return vocab


def build_tokenizer() -> Any:
    """A PreTrainedTokenizerFast over a WordLevel vocabulary; unknown words map to <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()  # without it decode() joins tokens with spaces and breaks "#### 24"
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
        padding_side="left", model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny(out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write tokenizer + randomly initialised model to out_dir; the same seed gives the same bytes."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), **MODEL_SHAPE}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
