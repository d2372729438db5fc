"""The tiny base model: built from code in a child process, deterministic, an ordinary HF model directory;
its tokenizer covers the tiny track; batched, seeded sampling returns k rollouts per prompt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rftflow.backends.base import StageContext
from rftflow.backends.local.backend import LocalBackend
from rftflow.backends.local.runner import run_worker

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "include" / "data" / "tiny"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "shared-tiny"  # one build per seed per test session
    backend = LocalBackend(work_dir=str(root / "work"))
    ctx = StageContext(str(root / "artifacts"), "tests", "run", 0, "base")
    return backend, ctx, Path(backend.resolve_model("tiny:seed=3", ctx))


def test_tiny_model_is_an_hf_directory_of_the_documented_size(built):
    _, ctx, path = built
    assert path == Path(ctx.artifact_root) / "models" / "tiny-seed3"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "tiny_build.json"):
        assert (path / name).is_file(), name
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["tie_word_embeddings"]) == (128, 4, 4, 384, True)
    info = json.loads((path / "tiny_build.json").read_text())
    assert 850_000 < info["parameters"] < 900_000 and info["seed"] == 3


def test_resolving_again_reuses_the_build(built):
    backend, ctx, path = built
    before = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.monotonic()
    assert backend.resolve_model("tiny:seed=3", ctx) == str(path)
    assert time.monotonic() - t0 < 1.0
    assert (path / "model.safetensors").stat().st_mtime_ns == before


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(built, tmp_path):
    backend, shared_ctx, path = built
    other = LocalBackend(work_dir=str(tmp_path / "work"))
    same = Path(other.resolve_model("tiny:seed=3", StageContext(str(tmp_path / "artifacts"), "tests", "run", 0, "b")))
    diff = Path(backend.resolve_model("tiny", shared_ctx))  # seed 0
    assert (same / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    assert (diff / "model.safetensors").read_bytes() != (path / "model.safetensors").read_bytes()


def test_tokenizer_covers_the_tiny_track_and_maps_unknown_words_to_unk(built):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(built[2] / "tokenizer.json"))
    unk = tok.token_to_id("<unk>")
    for split in ("train", "eval"):
        for line in (TINY / f"{split}.jsonl").read_text().splitlines()[:300]:
            text = json.loads(line)["messages"][0]["content"]
            assert unk not in tok.encode(f"Q: {text}\nA:57-33=24 #### 24").ids, text
    assert tok.encode("Zebra").ids == [unk]
    ids = tok.encode("57-33=24 #### 24").ids
    assert len(ids) == 11  # every digit its own token
    assert tok.decode(ids) == "57-33=24 #### 24"


def test_chat_template_renders_prompt_and_demonstration(built):
    import jinja2

    path = built[2]
    template_file = path / "chat_template.jinja"
    source = template_file.read_text() if template_file.exists() else \
        json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    template = jinja2.Environment().from_string(source)
    user = [{"role": "user", "content": "Revenue was 33 in 2019 and 57 in 2020. What was the change?"}]
    prompt = template.render(messages=user, add_generation_prompt=True, eos_token="<eos>")
    assert prompt == "Q: Revenue was 33 in 2019 and 57 in 2020. What was the change?\nA:"
    full = template.render(messages=user + [{"role": "assistant", "content": "57-33=24 #### 24"}], eos_token="<eos>")
    assert full == prompt + "57-33=24 #### 24<eos>"


def test_batched_sampling_returns_k_rollouts_seeded(built, tmp_path):
    prompts = [json.loads(line) for line in (TINY / "eval.jsonl").read_text().splitlines()[:5]]
    prompts_path = tmp_path / "prompts.jsonl"
    prompts_path.write_text("".join(json.dumps({"messages": p["messages"]}) + "\n" for p in prompts))
    sampled = {"k": 4, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 2}
    passes = [{"name": "greedy", "k": 3, "temperature": 0.0, "max_new_tokens": 8, "batch_size": 2},
              {"name": "a", "seed": 5, **sampled}, {"name": "again", "seed": 5, **sampled},
              {"name": "other", "seed": 6, **sampled}]
    result = run_worker("generate", {"model_path": str(built[2]), "prompts_path": str(prompts_path),
                                     "out_path": str(tmp_path / "out.jsonl"), "passes": passes},
                        job_dir=tmp_path / "logs", timeout_s=300)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert result["prompts"] == len(lines) == 5
    assert result["timings"]["a"]["rollouts"] == 20
    for line in lines:
        assert len(line["greedy"]) == 3 and len({g["text"] for g in line["greedy"]}) == 1
        assert len(line["a"]) == 4
        assert all(1 <= c["tokens"] <= 8 and isinstance(c["text"], str) for c in line["a"])
    assert [x["a"] for x in lines] == [x["again"] for x in lines]
    assert [x["a"] for x in lines] != [x["other"] for x in lines]


def test_sft_rows_are_tokenized_exactly_as_trl_prepares_them(built):
    """The SFT stage tokenizes in batches and tells TRL to skip its own preparation: the training examples
    must stay the ones TRL would build (loss on the completion only, keep_start truncation)."""
    import subprocess
    import sys

    code = f"""
import json
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from rftflow.data.dataset import read_records
from rftflow.backends.local.sampling import load_model
from rftflow.backends.local.training import tokenize_sft
records = read_records({str(TINY / 'sft.jsonl')!r}, kind="sft")[:64]
rows = [{{"prompt": r.prompt_messages(), "completion": [{{"role": "assistant", "content": r.answer_text()}}]}}
        for r in records]
model, tokenizer = load_model({str(built[2])!r})
out = {{}}
for max_length in (160, 30):
    args = SFTConfig(output_dir={str(built[1].artifact_root)!r} + "/trl", max_length=max_length, report_to=[],
                     use_cpu=True, disable_tqdm=True)
    trl_ds = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                        processing_class=tokenizer).train_dataset
    ours = tokenize_sft(tokenizer, rows, max_length)
    out[max_length] = [trl_ds["input_ids"] == ours["input_ids"], trl_ds["labels"] == ours["labels"],
                       sum(t != -100 for t in ours["labels"][0])]
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["160"][:2] == [True, True] and out["160"][2] > 3  # the completion tokens carry the loss
    assert out["30"][:2] == [True, True]  # truncation cuts into the completion the same way
