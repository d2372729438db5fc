"""LLM-as-judge reward (RLAIF): a Bedrock model grades each reply against a rubric through the Converse API.

AWS Lambda handler: standard library plus boto3, which the Lambda Python runtime provides; boto3 is imported
only when the first judge call is made, so this file imports anywhere.

For each sample the judge sees the prompt, the reference answer when there is one (top-level
``reference_answer``, else ``metadata.reference_answer``), the reply and the rubric, and ends with
``Score: N``. N on a 0-10 scale (``JUDGE_SCALE``) is divided by 10; a reply in another form ("7/10",
``{"score": 7}``, "Score: 0.7/1") is understood too; a bare fraction below 1 ("Score: 0.7") is read on a
0-1 scale. The reward is that fraction, clipped to [0, 1].

Throttling and transient errors (``ThrottlingException``, ``ServiceUnavailableException``,
``ModelNotReadyException``, ``InternalServerException``, connection errors) are retried with exponential
backoff and jitter. A sample whose judge call still fails, or whose verdict has no score, gets 0 and a metric
saying why (``judge_error`` / ``judge_unparsed``); if the judge fails on every sample of a batch (wrong model
id, missing permission), the handler raises instead, so a misconfiguration is not silently trained on.

Configuration (environment; the rubric may also come from a sample's ``metadata.rubric`` or
``metadata.evaluation_criteria``):

    JUDGE_MODEL_ID        us.amazon.nova-lite-v1:0   Bedrock model or inference-profile id
    JUDGE_REGION          $AWS_REGION or us-east-1
    JUDGE_RUBRIC          a general correctness/reasoning/clarity rubric
    JUDGE_SCALE           10        the top of the scale the judge is asked to use
    JUDGE_MAX_TOKENS      512       judge reply length
    JUDGE_MAX_RETRIES     5
    JUDGE_BACKOFF_S       1.0       first backoff; doubles per retry, capped at 20 s, with jitter
    JUDGE_CONCURRENCY     8         judge calls in flight per batch
    JUDGE_MAX_REPLY_CHARS 20000     longer replies are cut (the judge sees the head and the tail)
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

CLIENT: Any = None  # the bedrock-runtime client, created on first use (tests may set a stubbed one)

DEFAULT_RUBRIC = (
    "Judge the response on correctness first (does it reach the right final answer, consistent with the "
    "reference answer when one is given), then on sound reasoning, then on clarity and concision. "
    "A response with a wrong final answer scores at most 3; a correct, well-reasoned and clear one scores 10."
)
RETRYABLE = frozenset(
    ("ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException", "ModelNotReadyException",
     "InternalServerException", "ServiceQuotaExceededException", "RequestTimeout")
)
_SCORE = re.compile(
    r"score\W{0,3}\s*(?:is|of|=|:)?\s*\**\s*(-?\d+(?:\.\d+)?)\s*\**\s*(?:(?:/|out of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)")
_JSON_SCORE = re.compile(r"\{[^{}]*\"score\"[^{}]*\}", re.IGNORECASE)


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def client() -> Any:
    """The cached bedrock-runtime client; botocore's own retries are off because we retry ourselves."""
    global CLIENT
    if CLIENT is None:
        import boto3
        from botocore.config import Config

        region = _env("JUDGE_REGION", _env("AWS_REGION", _env("AWS_DEFAULT_REGION", "us-east-1")))
        CLIENT = boto3.client(
            "bedrock-runtime",
            region_name=region,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120, connect_timeout=10),
        )
    return CLIENT


def parse_score(text: str, scale: float) -> float | None:
    """The judge's verdict as a fraction in [0, 1], or None when the reply holds no usable score."""
    value = denominator = None
    for m in _JSON_SCORE.finditer(text):
        try:
            value = float(json.loads(m.group(0))["score"])
        except (ValueError, KeyError, TypeError):
            continue
    if value is None:
        last = None
        for last in _SCORE.finditer(text):  # noqa: B007 - the verdict is the last score mentioned
            pass
        if last is None:
            for last in _FRACTION.finditer(text):  # noqa: B007
                pass
        if last is not None:
            value = float(last.group(1))
            denominator = float(last.group(2)) if last.group(2) else None
    if value is None:
        return None
    if denominator is None and scale > 1 and 0 < value < 1:
        denominator = 1.0  # "0.7" from a judge asked for 0-10 is a 0-1 score, not 0.07
    top = denominator or scale
    if top <= 0 or value < 0 or value > top:
        return None
    return value / top


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n[... cut ...]\n" + text[-half:]


def build_request(sample: dict, model_id: str, rubric: str, scale: float, max_tokens: int, limit: int) -> dict:
    """The Converse request that asks the judge to grade one sample."""
    messages = sample["messages"]
    prompt = "\n\n".join(f"{m.get('role', 'user')}: {_text_of(m.get('content'))}" for m in messages[:-1])
    reply = _clip(_text_of(messages[-1].get("content")), limit)
    metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    ref = sample.get("reference_answer", metadata.get("reference_answer"))
    criteria = metadata.get("rubric") or metadata.get("evaluation_criteria") or rubric
    if isinstance(criteria, (list, dict)):
        criteria = json.dumps(criteria, ensure_ascii=False)
    parts = [f"<conversation>\n{prompt}\n</conversation>"]
    if ref is not None:
        ref_text = ref if isinstance(ref, str) else json.dumps(ref, ensure_ascii=False)
        parts.append(f"<reference_answer>\n{ref_text}\n</reference_answer>")
    parts.append(f"<response>\n{reply}\n</response>")
    parts.append(
        f"Grade the response from 0 to {scale:g} using the rubric. Explain briefly, then end with a last line "
        f"of the form 'Score: N' where N is a number from 0 to {scale:g}."
    )
    return {
        "modelId": model_id,
        "system": [{"text": f"You are a strict, fair grader of AI assistant responses.\nRubric: {criteria}"}],
        "messages": [{"role": "user", "content": [{"text": "\n\n".join(parts)}]}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0.0},
    }


def converse_with_retries(request: dict, max_retries: int, backoff_s: float) -> tuple[str, int]:
    """Call Converse, retrying throttling and transient errors; returns (judge text, attempts)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    transient = (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError)
    attempt = 0
    while True:
        attempt += 1
        try:
            response = client().converse(**request)
            content = response["output"]["message"]["content"]
            return "".join(part.get("text", "") for part in content), attempt
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in RETRYABLE or attempt > max_retries:
                raise
        except transient:
            if attempt > max_retries:
                raise
        delay = min(20.0, backoff_s * 2 ** (attempt - 1))
        time.sleep(delay * (0.5 + random.random() / 2))


def _metric(name: str, value: float, kind: str = "Metric") -> dict:
    return {"name": name, "value": float(value), "type": kind}


def _result(sample_id: Any, score: float, *extra: dict) -> dict:
    return {
        "id": sample_id,
        "aggregate_reward_score": score,
        "metrics_list": [_metric("judge_score", score, "Reward"), *extra],
    }


def lambda_handler(event: Any, context: Any = None) -> list[dict]:
    """Score a batch: ``event`` is the bare JSON list of samples (a single sample dict is also accepted)."""
    samples = [event] if isinstance(event, dict) else event
    if not isinstance(samples, list):
        raise TypeError(f"event must be a JSON list of samples; got {type(event).__name__}")
    model_id = _env("JUDGE_MODEL_ID", "us.amazon.nova-lite-v1:0")
    rubric = _env("JUDGE_RUBRIC", DEFAULT_RUBRIC)
    scale = float(_env("JUDGE_SCALE", "10"))
    max_tokens = int(_env("JUDGE_MAX_TOKENS", "512"))
    max_retries = int(_env("JUDGE_MAX_RETRIES", "5"))
    backoff_s = float(_env("JUDGE_BACKOFF_S", "1.0"))
    concurrency = max(1, int(_env("JUDGE_CONCURRENCY", "8")))
    limit = int(_env("JUDGE_MAX_REPLY_CHARS", "20000"))

    results: list[dict | None] = [None] * len(samples)
    requests = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            results[i] = _result(None, 0.0, _metric("error_sample_not_an_object", 1.0))
            continue
        messages = sample.get("messages")
        if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)
                and messages[-1].get("role") == "assistant"):
            results[i] = _result(sample.get("id"), 0.0, _metric("error_no_assistant_message", 1.0))
            continue
        try:
            requests.append((i, build_request(sample, model_id, rubric, scale, max_tokens, limit)))
        except Exception as exc:
            logger.warning("llm_judge: sample %r scored 0: %s", sample.get("id"), exc)
            results[i] = _result(sample.get("id"), 0.0, _metric("error_invalid_sample", 1.0))

    errors: list[Exception] = []

    def judge(item: tuple[int, dict]) -> None:
        i, request = item
        sample_id = samples[i].get("id")
        try:
            verdict, attempts = converse_with_retries(request, max_retries, backoff_s)
        except Exception as exc:
            errors.append(exc)
            logger.warning("llm_judge: judge call for %r failed: %s", sample_id, exc)
            results[i] = _result(sample_id, 0.0, _metric("judge_error", 1.0))
            return
        score = parse_score(verdict, scale)
        if score is None:
            logger.info("llm_judge: no score in the verdict for %r: %.200s", sample_id, verdict)
            results[i] = _result(sample_id, 0.0, _metric("judge_unparsed", 1.0), _metric("judge_attempts", attempts))
        else:
            results[i] = _result(sample_id, score, _metric("judge_attempts", attempts))

    if requests:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(requests))) as pool:
            list(pool.map(judge, requests))
        if len(errors) == len(requests):
            raise RuntimeError(
                f"llm_judge: every judge call in the batch failed ({len(errors)}); first error: {errors[0]}"
            ) from errors[0]
    return results  # type: ignore[return-value]
