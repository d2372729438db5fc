"""Exact / normalised-match reward: 1.0 when the model's final answer equals the reference answer.

Self-contained AWS Lambda handler (standard library only): deploy this one file unchanged.

The final answer is the last ``<answer>...</answer>``, ``#### ...`` line, ``\\boxed{...}`` or "final answer: ..."
phrase, else the whole reply (text before a closing ``</think>`` is ignored). Normalisation (SQuAD-style):
Unicode NFKC, lower case, punctuation removed (a minus sign before a number is kept), the articles a/an/the removed, whitespace collapsed.

The reference answer is read from the sample's top-level ``reference_answer``, else ``metadata.reference_answer``.
It may be a string or number, a list of acceptable answers, or an object with ``answer`` and optional
``aliases`` / ``answers``; any acceptable answer matches.

Configuration, per sample (``metadata`` field), else environment variable, else default:

    match_mode   EXACT_MATCH_MODE   normalized   "normalized" or "exact" (only surrounding whitespace stripped)

Output per sample: ``aggregate_reward_score`` = the match in the configured mode (0 or 1); metrics
``match`` (Reward), ``exact_match``, ``normalized_match``, ``token_f1`` and ``answer_marker`` (Metric).
"""

from __future__ import annotations

import logging
import os
import re
import string
import unicodedata
from typing import Any

logger = logging.getLogger(__name__)

_ASCII_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation})
_NEGATIVE_NUMBER = re.compile(r"(?<![\w.])[-\u2212](?=\.?\d)")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_FINAL_PHRASE = re.compile(r"final answer\s*(?:is|:|=)?\s*", re.IGNORECASE)
_MODES = ("normalized", "exact")


def normalize(text: str) -> str:
    text = _NEGATIVE_NUMBER.sub(" minus ", unicodedata.normalize("NFKC", text).lower())
    if text.isascii():
        text = text.translate(_ASCII_PUNCTUATION)
    else:
        text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _boxed_content(text: str, start: int) -> str:
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def extract_answer(text: str) -> tuple[str, bool]:
    """Return (answer span, whether an explicit answer marker was found)."""
    i = text.rfind("</think>")
    if i >= 0:
        text = text[i + len("</think>") :]
    i = text.rfind("<answer>")
    if i >= 0:
        j = text.find("</answer>", i)
        return (text[i + 8 : j] if j >= 0 else text[i + 8 :]).strip(), True
    i = text.rfind("####")
    if i >= 0:
        return text[i + 4 :].split("\n", 1)[0].strip(), True
    i = text.rfind("\\boxed{")
    if i >= 0:
        return _boxed_content(text, i + 7).strip(), True
    last = None
    for last in _FINAL_PHRASE.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is not None:
        return text[last.end() :].split("\n", 1)[0].strip(), True
    return text.strip(), False


def _acceptable(ref: Any) -> list[str]:
    if isinstance(ref, bool):
        return ["yes" if ref else "no"]
    if isinstance(ref, (int, float)):
        return [format(ref, "g") if isinstance(ref, float) else str(ref)]
    if isinstance(ref, str):
        return [ref]
    if isinstance(ref, list):
        return [a for item in ref for a in _acceptable(item)]
    if isinstance(ref, dict):
        answers: list[str] = []
        for key in ("answer", "answers", "aliases", "reference_answer"):
            if key in ref:
                answers.extend(_acceptable(ref[key]))
        if answers:
            return answers
        raise ValueError("reference_answer object has none of the keys answer, answers, aliases")
    raise ValueError(f"reference_answer must be a string, number, list or object; got {type(ref).__name__}")


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return float(pred == ref)
    counts: dict[str, int] = {}
    for tok in ref:
        counts[tok] = counts.get(tok, 0) + 1
    common = 0
    for tok in pred:
        if counts.get(tok, 0) > 0:
            counts[tok] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _completion(sample: dict) -> str | None:
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return None


def _metric(name: str, value: float, kind: str = "Metric") -> dict:
    return {"name": name, "value": float(value), "type": kind}


def _failure(sample_id: Any, reason: str) -> dict:
    return {
        "id": sample_id,
        "aggregate_reward_score": 0.0,
        "metrics_list": [_metric("match", 0.0, "Reward"), _metric(reason, 1.0)],
    }


def score_sample(sample: dict, mode: str) -> dict:
    sample_id = sample.get("id")
    text = _completion(sample)
    if text is None:
        return _failure(sample_id, "error_no_assistant_message")
    metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    ref = sample.get("reference_answer")
    if ref is None:
        ref = metadata.get("reference_answer")
    if ref is None:
        return _failure(sample_id, "error_no_reference_answer")
    mode = str(metadata.get("match_mode", mode)).lower()
    if mode not in _MODES:
        raise ValueError(f"match_mode must be one of {', '.join(_MODES)}; got {mode!r}")
    answers = _acceptable(ref)
    span, marked = extract_answer(text)
    norm_span = normalize(span)
    exact = any(span == a.strip() for a in answers)
    norm_answers = [normalize(a) for a in answers]
    normalized = any(norm_span == a for a in norm_answers)
    f1 = max((token_f1(norm_span, a) for a in norm_answers), default=0.0)
    value = 1.0 if (exact if mode == "exact" else normalized) else 0.0
    return {
        "id": sample_id,
        "aggregate_reward_score": value,
        "metrics_list": [
            _metric("match", value, "Reward"),
            _metric("exact_match", exact),
            _metric("normalized_match", normalized),
            _metric("token_f1", f1),
            _metric("answer_marker", marked),
        ],
    }


def lambda_handler(event: Any, context: Any = None) -> list[dict]:
    """Score a batch: ``event`` is the bare JSON list of samples (a single sample dict is also accepted)."""
    samples = [event] if isinstance(event, dict) else event
    if not isinstance(samples, list):
        raise TypeError(f"event must be a JSON list of samples; got {type(event).__name__}")
    mode = os.environ.get("EXACT_MATCH_MODE", "normalized")
    results = []
    for sample in samples:
        if not isinstance(sample, dict):
            results.append(_failure(None, "error_sample_not_an_object"))
            continue
        try:
            results.append(score_sample(sample, mode))
        except Exception as exc:  # one bad sample must never fail the batch
            logger.warning("exact_match reward: sample %r scored 0: %s", sample.get("id"), exc)
            results.append(_failure(sample.get("id"), "error_invalid_sample"))
    return results
