"""FinQA-style numeric-answer reward: 1.0 when the model's final number matches the reference within tolerance.

Self-contained AWS Lambda handler (standard library only): deploy this one file unchanged.

The final answer is taken from, in order: the last ``<answer>...</answer>``, the last ``#### ...`` line, the last
``\\boxed{...}``, the last "answer is / answer: ..." phrase, and otherwise the last number in the text (text
before a closing ``</think>`` is ignored). Numbers may carry ``$``/``€``/``£``, thousands separators
(``1,234.50``), a sign (``-``, ``−``), accounting parentheses (``(1,234)`` is negative), exponents and a ``%``;
a percentage also matches its fraction (``12.5%`` == ``0.125``), and LaTeX ``\\frac{a}{b}`` is understood.

The reference answer is read from the sample's top-level ``reference_answer``, else ``metadata.reference_answer``;
it may be a number, a string ("$1,234", "12.5%", "#### 24") or an object such as ``{"answer": 24}``
(``{"answer": 12.5, "unit": "percent"}`` also matches 0.125). A reference
that is not numeric (e.g. "yes") is compared as normalised text.

Configuration, per sample (a ``metadata`` field or a key of an object reference answer), else environment
variable, else default:

    rel_tol          NUMERIC_REL_TOL          0.005   |pred - ref| <= rel_tol * max(|pred|, |ref|) ...
    abs_tol          NUMERIC_ABS_TOL          1e-6    ... or |pred - ref| <= abs_tol
    require_marker   NUMERIC_REQUIRE_MARKER   false   if true, a bare number without a marker scores 0

Output per sample: ``aggregate_reward_score`` = correctness (0 or 1) and metrics ``correctness`` (Reward),
``answer_parsed`` and ``answer_marker`` (Metric). A sample that cannot be scored gets 0 and a metric naming why.
"""

from __future__ import annotations

import logging
import math
import os
import re
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

_NUMBER = re.compile(
    r"(?P<open>\(\s*)?"
    r"(?P<sign>(?<![\w)])[-+\u2212\u2013]\s*)?"
    r"(?P<cur>(?:[$\u20ac\u00a3\u00a5]|\\\$|USD|EUR|GBP)\s*)?"
    r"(?P<sign2>(?<![\w)])[-\u2212\u2013]\s*)?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?P<close>\s*\))?"
    r"(?P<pct>\s*(?:%|\\%|percent\b|per cent\b))?"
)
_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}")
_ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:|=)\s*", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_NEGATIVE_SIGNS = frozenset("-\u2212\u2013")
_REFERENCE_KEYS = ("answer", "final_answer", "value", "number", "reference_answer", "label", "target")
_PERCENT_UNITS = frozenset(("percent", "%", "pct", "percentage"))
_TAIL_CHARS = 400

_BOXED = "\\boxed{"
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_THINK_CLOSE = "</think>"


def _metric(name: str, value: float, kind: str = "Metric") -> dict:
    return {"name": name, "value": float(value), "type": kind}


def _boxed_content(text: str, start: int) -> str:
    depth = 1
    i = start
    end = len(text)
    while i < end:
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return text[start:]


def extract_answer(text: str) -> tuple[str, bool]:
    """Return (answer span, whether an explicit answer marker was found)."""
    i = text.rfind(_THINK_CLOSE)
    if i >= 0:
        text = text[i + len(_THINK_CLOSE) :]
    i = text.rfind(_ANSWER_OPEN)
    if i >= 0:
        start = i + len(_ANSWER_OPEN)
        j = text.find(_ANSWER_CLOSE, start)
        return (text[start:j] if j >= 0 else text[start:]), True
    i = text.rfind("####")
    if i >= 0:
        span = text[i + 4 : i + 204]
        nl = span.find("\n")
        return (span[:nl] if nl >= 0 else span), True
    i = text.rfind(_BOXED)
    if i >= 0:
        return _boxed_content(text, i + len(_BOXED)), True
    if "nswer" in text or "NSWER" in text:
        last = None
        for last in _ANSWER_PHRASE.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is not None:
            span = text[last.end() : last.end() + 200]
            nl = span.find("\n")
            return (span[:nl] if nl >= 0 else span), True
    return text, False


def _value(m: re.Match) -> tuple[float, bool]:
    num, exp, sign, sign2, open_, close, pct = m.group("num", "exp", "sign", "sign2", "open", "close", "pct")
    value = float(num.replace(",", "") + exp) if exp else float(num.replace(",", ""))
    if (sign and sign[0] in _NEGATIVE_SIGNS) or sign2:
        value = -value
    elif open_ and close and ("," in num or "." in num or m.group("cur")):
        value = -value  # accounting negative: (1,234)
    return value, bool(pct)


def parse_number(span: str, *, last: bool = False) -> tuple[float, bool] | None:
    """Parse the first (or last) number in ``span`` as (value, is_percentage); None when there is none."""
    if "frac" in span:
        f = _FRAC.search(span)
        if f is not None and float(f.group(2)) != 0:
            return float(f.group(1)) / float(f.group(2)), False
    if not last:
        m = _NUMBER.search(span)
        return _value(m) if m is not None else None
    start = 0
    if len(span) > _TAIL_CHARS:
        start = len(span) - _TAIL_CHARS
        ws = span.rfind(" ", 0, start)
        start = ws + 1 if ws >= 0 else 0
    m = None
    for m in _NUMBER.finditer(span, start):  # noqa: B007 - we want the last match
        pass
    return _value(m) if m is not None else None


def _candidates(value: float, is_percent: bool) -> tuple[float, ...]:
    return (value, value / 100.0) if is_percent else (value,)


def _normalise_text(text: str) -> str:
    return _NOT_WORD.sub(" ", text.lower()).strip()


@lru_cache(maxsize=8192)
def _parse_reference_text(text: str) -> tuple[tuple[float, ...] | None, str]:
    span, _ = extract_answer(text)
    if "=" in span:
        span = span.rsplit("=", 1)[1]
    parsed = parse_number(span)
    if parsed is None:
        return None, _normalise_text(span)
    return _candidates(*parsed), _normalise_text(span)


def _reference(ref: Any) -> tuple[tuple[float, ...] | None, str]:
    if isinstance(ref, bool):
        return None, "yes" if ref else "no"
    if isinstance(ref, (int, float)):
        return (float(ref),), ""
    if isinstance(ref, dict):
        for key in _REFERENCE_KEYS:
            if key in ref:
                values, text = _reference(ref[key])
                if values is not None and str(ref.get("unit", "")).lower() in _PERCENT_UNITS:
                    values = tuple({v for x in values for v in (x, x / 100.0)})
                return values, text
        raise ValueError(f"reference_answer object has none of the keys {', '.join(_REFERENCE_KEYS)}")
    if isinstance(ref, str):
        return _parse_reference_text(ref)
    if isinstance(ref, list) and ref:
        return _reference(ref[0])
    raise ValueError(f"reference_answer must be a number, string or object; got {type(ref).__name__}")


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
    if isinstance(content, list):  # Converse-style [{"text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _config() -> tuple[float, float, bool]:
    env = os.environ
    return (
        float(env.get("NUMERIC_REL_TOL", "0.005")),
        float(env.get("NUMERIC_ABS_TOL", "1e-6")),
        _truthy(env.get("NUMERIC_REQUIRE_MARKER", "false")),
    )


def _failure(sample_id: Any, reason: str) -> dict:
    return {
        "id": sample_id,
        "aggregate_reward_score": 0.0,
        "metrics_list": [_metric("correctness", 0.0, "Reward"), _metric(reason, 1.0)],
    }


def score_sample(sample: dict, rel_tol: float, abs_tol: float, require_marker: bool) -> dict:
    sample_id = sample.get("id")
    text = _completion(sample)
    if text is None:
        return _failure(sample_id, "error_no_assistant_message")
    ref = sample.get("reference_answer")
    metadata = sample.get("metadata")
    if ref is None and isinstance(metadata, dict):
        ref = metadata.get("reference_answer")
    if ref is None:
        return _failure(sample_id, "error_no_reference_answer")
    if metadata:
        rel_tol = float(metadata.get("rel_tol", rel_tol))
        abs_tol = float(metadata.get("abs_tol", abs_tol))
        require_marker = _truthy(metadata.get("require_marker", require_marker))
    if isinstance(ref, dict):
        rel_tol = float(ref.get("rel_tol", rel_tol))
        abs_tol = float(ref.get("abs_tol", abs_tol))
    ref_values, ref_text = _reference(ref)

    span, marked = extract_answer(text)
    correct = False
    parsed = None
    if marked or not require_marker:
        if marked:
            if "=" in span:
                span = span.rsplit("=", 1)[1]
            parsed = parse_number(span)
        else:
            parsed = parse_number(span, last=True)
        if ref_values is None:
            correct = bool(ref_text) and _normalise_text(span) == ref_text
        elif parsed is not None:
            for p in _candidates(*parsed):
                for r in ref_values:
                    if math.isclose(p, r, rel_tol=rel_tol, abs_tol=abs_tol):
                        correct = True
                        break
    value = 1.0 if correct else 0.0
    return {
        "id": sample_id,
        "aggregate_reward_score": value,
        "metrics_list": [
            {"name": "correctness", "value": value, "type": "Reward"},
            {"name": "answer_parsed", "value": 1.0 if (parsed is not None or correct) else 0.0, "type": "Metric"},
            {"name": "answer_marker", "value": 1.0 if marked else 0.0, "type": "Metric"},
        ],
    }


def lambda_handler(event: Any, context: Any = None) -> list[dict]:
    """Score a batch: ``event`` is the bare JSON list of samples (a single sample dict is also accepted)."""
    samples = [event] if isinstance(event, dict) else event
    if not isinstance(samples, list):
        raise TypeError(f"event must be a JSON list of samples; got {type(event).__name__}")
    rel_tol, abs_tol, require_marker = _config()
    results = []
    for sample in samples:
        if not isinstance(sample, dict):
            results.append(_failure(None, "error_sample_not_an_object"))
            continue
        try:
            results.append(score_sample(sample, rel_tol, abs_tol, require_marker))
        except Exception as exc:  # one bad sample must never fail the batch
            logger.warning("numeric reward: sample %r scored 0: %s", sample.get("id"), exc)
            results.append(_failure(sample.get("id"), "error_invalid_sample"))
    return results
