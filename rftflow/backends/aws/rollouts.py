"""Rollouts on AWS: k samples per prompt through Bedrock runtime `converse` (bounded concurrency, backoff on
throttling), and the gen_qa dataset that makes an eval job sample each prompt k times.

Completions come back as `{"text", "tokens"}` per prompt and sample, the shape rftflow.scoring.evaluation scores.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rftflow.backends.aws.clients import error_code, error_message

log = logging.getLogger(__name__)

RETRYABLE = frozenset({"ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException",
                       "ModelNotReadyException", "InternalServerException", "ModelTimeoutException"})


class RolloutError(RuntimeError):
    """A converse call that failed for good (not throttling), or kept being throttled past the retry budget."""


@dataclass
class ConverseSettings:
    model_id: str
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024
    concurrency: int = 8
    max_retries: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, inp: int, out: int, retries: int) -> None:
        with self._lock:
            self.input_tokens += inp
            self.output_tokens += out
            self.calls += 1
            self.retries += retries

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "calls": self.calls,
                "retries": self.retries}


def converse_request(record: Any, settings: ConverseSettings) -> dict[str, Any]:
    """The Converse request for a record's prompt: system turns apart, text content blocks."""
    system = [{"text": m["content"]} for m in record.prompt_messages() if m["role"] == "system"]
    messages = [{"role": m["role"], "content": [{"text": m["content"]}]}
                for m in record.prompt_messages() if m["role"] in ("user", "assistant")]
    request: dict[str, Any] = {
        "modelId": settings.model_id,
        "messages": messages,
        "inferenceConfig": {"maxTokens": settings.max_tokens, "temperature": settings.temperature,
                            "topP": settings.top_p},
    }
    if system:
        request["system"] = system
    return request


def _text_of(response: dict[str, Any]) -> str:
    blocks = response.get("output", {}).get("message", {}).get("content", [])
    return "".join(b.get("text", "") for b in blocks if isinstance(b, dict))


def converse_once(client: Any, request: dict[str, Any], settings: ConverseSettings, *,
                  sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                  usage: Usage | None = None) -> dict[str, Any]:
    """One completion, retrying throttling and transient errors with capped exponential backoff and jitter."""
    rng = rng or random.Random()
    for attempt in range(settings.max_retries + 1):
        try:
            response = client.converse(**request)
        except Exception as exc:
            code = error_code(exc)
            if code not in RETRYABLE:
                raise RolloutError(f"converse on {settings.model_id} failed: {code or type(exc).__name__}: "
                                   f"{error_message(exc)}") from exc
            if attempt == settings.max_retries:
                raise RolloutError(f"converse on {settings.model_id}: still {code} after {attempt} retries; lower "
                                   "the concurrency or raise the account's Bedrock quota") from exc
            delay = min(settings.max_delay_s, settings.base_delay_s * 2 ** attempt) * rng.uniform(0.5, 1.0)
            log.info("converse %s (%s); retry %d in %.1f s", code, settings.model_id, attempt + 1, delay)
            sleep(delay)
            continue
        tokens = response.get("usage", {})
        if usage is not None:
            usage.add(int(tokens.get("inputTokens", 0)), int(tokens.get("outputTokens", 0)), attempt)
        return {"text": _text_of(response), "tokens": tokens.get("outputTokens"),
                "stop_reason": response.get("stopReason")}
    raise AssertionError("unreachable")


def sample(client: Any, records: Sequence[Any], k: int, settings: ConverseSettings, *,
           sleep: Callable[[float], None] = time.sleep, seed: int = 0,
           usage: Usage | None = None) -> list[list[dict[str, Any]]]:
    """k completions per record (in record order), at most `settings.concurrency` calls in flight."""
    if k < 1:
        raise ValueError(f"k: expected at least 1 sample per prompt; got {k}")
    requests = [converse_request(r, settings) for r in records]
    out: list[list[dict[str, Any] | None]] = [[None] * k for _ in records]

    def one(index: int) -> None:
        i, j = divmod(index, k)
        out[i][j] = converse_once(client, requests[i], settings, sleep=sleep,
                                  rng=random.Random(seed * 1_000_003 + index), usage=usage)

    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        list(pool.map(one, range(len(records) * k)))  # re-raises the first failure
    return [[c for c in row if c is not None] for row in out]


# --------------------------------------------------------------------------- eval-job datasets


def _answer_text(reference: Any) -> str:
    if reference is None:
        return ""
    return reference if isinstance(reference, str) else json.dumps(reference, ensure_ascii=False)


def gen_qa_rows(records: Sequence[Any], k: int = 1) -> list[dict[str, Any]]:
    """gen_qa.jsonl rows ({query, response, system?, metadata}), each prompt repeated k times in a row.

    `metadata` (a string, as gen_qa requires) carries the record id and sample index, so the job's
    per-prompt outputs map back to the records however the service orders them.
    """
    rows = []
    for record in records:
        prompt = record.prompt_messages()
        system = "\n\n".join(m["content"] for m in prompt if m["role"] == "system")
        query = "\n\n".join(m["content"] for m in prompt if m["role"] != "system")
        for j in range(k):
            row = {"query": query, "response": _answer_text(record.reference_answer),
                   "metadata": json.dumps({"id": record.id, "sample": j})}
            if system:
                row["system"] = system
            rows.append(row)
    return rows


# Nova marks the answer span in some outputs (AWS's sample inference_output.jsonl and the rft_eval notebook in
# aws-samples/amazon-nova-samples customization/Nova_2.0/04_eval show '<|begin_of_solution|>...<|end_of_solution|>');
# the local backend's text has no such markers, so they are taken off to score both the same way.
_SOLUTION_MARKERS = ("<|begin_of_solution|>", "<|end_of_solution|>")


def rft_eval_rows(records: Sequence[Any]) -> list[dict[str, Any]]:
    """The rft_eval job's input: RFT rows (id, the prompt's messages, reference_answer, tools, extra fields).

    SageMaker "RFT evaluation" (nova-rft-evaluation) requires `messages` + `reference_answer`; the id comes back
    with each sample's score (`id` in the docs' per-sample output, `specifics.sample_id` in the notebook's).
    """
    rows = []
    for record in records:
        row = record.to_json()
        row["messages"] = record.prompt_messages()
        rows.append(row)
    return rows


def _literal(text: str) -> Any:
    """A JSON value, else a Python literal (the repr form the eval container writes), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _strip_markers(text: str) -> str:
    start, end = _SOLUTION_MARKERS
    stripped = text.strip()
    if stripped.startswith(start) and stripped.endswith(end):
        return stripped[len(start):len(stripped) - len(end)]
    return text


def _inference_text(value: Any) -> str:
    """The model's answer from an `inference` field in any form the service and AWS's samples show.

    A list (`["…"]`), a JSON list string (`'["…"]'`), a Python-repr list string (`"['…']"`, single quotes,
    escaped newlines: amazon-nova-samples customization/Nova_2.0/04_eval/examples/inference_output.jsonl),
    or the plain text. The first element of a list is the answer (one generation per row).
    """
    if isinstance(value, str) and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        parsed = _literal(value.strip())
        # only a one-answer list is the wrapper; a plain answer such as "[1, 2]" stays as written
        if isinstance(parsed, list) and (not parsed or (len(parsed) == 1 and isinstance(parsed[0], str))):
            value = parsed
    if isinstance(value, list):
        value = value[0] if value else ""
    return _strip_markers("" if value is None else str(value))


def _metadata_of(meta: Any) -> Any:
    """gen_qa `metadata` as written (a JSON string), or as read back (a dict or a Python-repr string)."""
    return _literal(meta) if isinstance(meta, str) else meta


def completions_from_inference(rows: Sequence[dict[str, Any]], records: Sequence[Any],
                               k: int) -> list[list[dict[str, Any]]]:
    """Per record, its k completions from gen_qa's inference_output.jsonl rows (matched by metadata id)."""
    by_key: dict[tuple[str, int], str] = {}
    unmatched: list[str] = []
    for row in rows:
        try:
            info = _metadata_of(row.get("metadata"))
            key = (str(info["id"]), int(info.get("sample", 0)))
        except (ValueError, TypeError, KeyError):
            unmatched.append(_inference_text(row.get("inference")))
            continue
        by_key[key] = _inference_text(row.get("inference"))
    if unmatched and not by_key and len(unmatched) == len(records) * k:
        by_key = {(r.id, j): unmatched[i * k + j] for i, r in enumerate(records) for j in range(k)}
    out, missing = [], []
    for record in records:
        texts = []
        for j in range(k):
            text = by_key.get((record.id, j))
            if text is None:
                missing.append(f"{record.id}#{j}")
                text = ""
            texts.append({"text": text, "tokens": None})
        out.append(texts)
    if missing:
        raise ValueError(f"eval job output has no completion for {len(missing)} of {len(records) * k} samples "
                         f"(e.g. {', '.join(missing[:5])})")
    return out
