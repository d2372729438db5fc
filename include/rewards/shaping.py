"""Format and length shaping around any other reward: the inner reward minus penalties for sloppy replies.

AWS Lambda handler (standard library only). It imports its inner reward as a sibling file of this directory,
by built-in module name (``numeric``, ``exact_match``, ``code_tests``, ``llm_judge``), loaded from the path
next to this file: deploy ``shaping.py`` together with the inner handler's file in the same Lambda package
(both at the package root), and set the handler to ``shaping.lambda_handler``.

Penalties, each subtracted from the inner reward and reported as a ``Metric``:
  - format:   no final-answer marker (``<answer>...</answer>``, ``#### ...``, ``\\boxed{...}`` or "final answer"),
              an ``<answer>`` or ``<think>`` tag left open, or an empty reply;
  - language: the share of letters outside the prompt's main script (e.g. Han characters in an English
              reasoning chain) is above a threshold;
  - length:   the reply is shorter or longer than a band of characters.
The score is ``inner - sum(penalties)``, floored at ``SHAPING_MIN_SCORE``. A sample that cannot be scored (no reply, no reference: an ``error_*`` metric) scores 0; an inner
reward that cannot be loaded or fails on every sample raises, so a misconfiguration is not silently trained on. The inner reward is reported as
``inner_reward`` (type ``Reward``); the inner handler's own metrics are passed on as type ``Metric``.

Configuration, per sample (``metadata`` field), else environment variable, else default:

    inner_reward        SHAPING_INNER_REWARD        numeric   sibling handler module to wrap (a module-level
                                                              INNER_REWARD, when set, comes before the env)
    format_penalty      SHAPING_FORMAT_PENALTY      0.5
    language_penalty    SHAPING_LANGUAGE_PENALTY    0.5
    language_threshold  SHAPING_LANGUAGE_THRESHOLD  0.1       tolerated share of letters in another script
    expected_script     SHAPING_EXPECTED_SCRIPT     (prompt)  latin, cyrillic, greek, arabic, hebrew, han, ...
    length_penalty      SHAPING_LENGTH_PENALTY      0.25
    min_chars           SHAPING_MIN_CHARS           1
    max_chars           SHAPING_MAX_CHARS           4000      0 disables the upper bound
    (env only)          SHAPING_MIN_SCORE           -1.0
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

INNER_REWARD: str | None = None  # set by a loader that fixes the inner reward (rftflow's shaped_<name>)
DEFAULT_INNER_REWARD = "numeric"
_HERE = os.path.dirname(os.path.abspath(__file__))
_MODULE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_INNER_CACHE: dict[str, Any] = {}
_FINAL_PHRASE = re.compile(r"final answer", re.IGNORECASE)

# (first code point, last code point, script) for the scripts language switching is usually about.
_SCRIPT_RANGES = (
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0530, 0x058F, "armenian"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x10A0, 0x10FF, "georgian"),
    (0x1100, 0x11FF, "hangul"),
    (0x1E00, 0x1EFF, "latin"),
    (0x1F00, 0x1FFF, "greek"),
    (0x3040, 0x30FF, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
    (0xF900, 0xFAFF, "han"),
    (0xFF21, 0xFF5A, "latin"),
)


def _script(ch: str) -> str:
    code = ord(ch)
    for low, high, name in _SCRIPT_RANGES:
        if low <= code <= high:
            return name
    return "other"


def script_counts(text: str) -> dict[str, int]:
    """Letters per script; ASCII text takes a fast path."""
    if text.isascii():
        letters = sum(1 for ch in text if ch.isalpha())
        return {"latin": letters} if letters else {}
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = "latin" if ch < "\x80" else _script(ch)
            counts[name] = counts.get(name, 0) + 1
    return counts


def foreign_share(text: str, expected: str) -> float:
    counts = script_counts(text)
    total = sum(counts.values())
    return (total - counts.get(expected, 0)) / total if total else 0.0


def dominant_script(text: str) -> str:
    counts = script_counts(text)
    return max(counts, key=counts.__getitem__) if counts else "latin"


def format_ok(text: str) -> bool:
    if not text.strip():
        return False
    if "<think>" in text and "</think>" not in text:
        return False
    i = text.rfind("</think>")
    final = text[i + len("</think>") :] if i >= 0 else text
    a = final.rfind("<answer>")
    if a >= 0:
        return final.find("</answer>", a) >= 0
    return "####" in final or "\\boxed{" in final or _FINAL_PHRASE.search(final) is not None


def load_inner(name: str) -> Any:
    """Load a sibling handler module by name from this file's directory (cached)."""
    if not _MODULE_NAME.match(name) or name == "shaping":
        raise ValueError(f"inner reward must be a sibling handler module name such as 'numeric'; got {name!r}")
    module = _INNER_CACHE.get(name)
    if module is None:
        path = os.path.join(_HERE, name + ".py")
        if not os.path.isfile(path):
            raise ValueError(f"inner reward {name!r}: {path} does not exist; package it next to shaping.py")
        spec = importlib.util.spec_from_file_location(f"_shaping_inner_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "lambda_handler", None)):
            raise ValueError(f"inner reward {name!r}: {path} has no lambda_handler(event, context)")
        _INNER_CACHE[name] = module
    return module


def _setting(metadata: dict, key: str, env: str, default: Any) -> Any:
    if key in metadata:
        return metadata[key]
    return os.environ.get(env, default)


def _completion(sample: dict) -> tuple[str | None, str]:
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, ""
    prompt = " ".join(m.get("content", "") for m in messages[:-1] if isinstance(m, dict) and isinstance(
        m.get("content"), str))
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None, prompt
    content = last.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return (content if isinstance(content, str) else None), prompt


def _inner_results(inner: Any, samples: list[dict], context: Any) -> list[dict | None]:
    """Inner results aligned with ``samples``; a batch the inner handler rejects is retried sample by sample."""
    try:
        raw = inner.lambda_handler(samples, context)
        if isinstance(raw, list) and len(raw) == len(samples):
            by_id = {r.get("id"): r for r in raw if isinstance(r, dict)}
            if len(by_id) == len(samples):
                return [by_id.get(s.get("id")) for s in samples]
            return [r if isinstance(r, dict) else None for r in raw]
        logger.warning("shaping: inner reward returned %s for %d samples", type(raw).__name__, len(samples))
    except Exception as exc:
        logger.warning("shaping: inner reward failed on the batch (%s); scoring samples one by one", exc)
    results: list[dict | None] = []
    last_error: Exception | None = None
    for sample in samples:
        try:
            raw = inner.lambda_handler([sample], context)
            results.append(raw[0] if isinstance(raw, list) and raw and isinstance(raw[0], dict) else None)
        except Exception as exc:
            logger.warning("shaping: inner reward failed on sample %r: %s", sample.get("id"), exc)
            results.append(None)
            last_error = exc
    if last_error is not None and all(r is None for r in results):
        raise RuntimeError(f"inner reward failed on every sample: {last_error}") from last_error
    return results


def _metric(name: str, value: float, kind: str = "Metric") -> dict:
    return {"name": name, "value": float(value), "type": kind}


def shape(sample: dict, inner_result: dict | None) -> dict:
    """Combine one inner result with the format, language and length penalties of its sample."""
    sample_id = sample.get("id")
    metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    text, prompt = _completion(sample)
    inner_score = 0.0
    inner_metrics: list[dict] = []
    metrics = []
    if inner_result is None:
        metrics.append(_metric("error_inner_reward", 1.0))
    else:
        score = inner_result.get("aggregate_reward_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool) and score == score:
            inner_score = float(score)
        else:
            metrics.append(_metric("error_inner_reward", 1.0))
        for m in inner_result.get("metrics_list") or []:
            if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("value"), (int, float)):
                inner_metrics.append(_metric(m["name"], m["value"]))
    if text is None:
        text = ""
        metrics.append(_metric("error_no_assistant_message", 1.0))

    format_penalty = 0.0 if format_ok(text) else float(
        _setting(metadata, "format_penalty", "SHAPING_FORMAT_PENALTY", 0.5))
    expected = str(_setting(metadata, "expected_script", "SHAPING_EXPECTED_SCRIPT", "") or dominant_script(prompt))
    share = foreign_share(text, expected)
    threshold = float(_setting(metadata, "language_threshold", "SHAPING_LANGUAGE_THRESHOLD", 0.1))
    language_penalty = float(_setting(metadata, "language_penalty", "SHAPING_LANGUAGE_PENALTY", 0.5)) if (
        share > threshold) else 0.0
    length = len(text)
    min_chars = int(_setting(metadata, "min_chars", "SHAPING_MIN_CHARS", 1))
    max_chars = int(_setting(metadata, "max_chars", "SHAPING_MAX_CHARS", 4000))
    outside = length < min_chars or (max_chars > 0 and length > max_chars)
    length_penalty = float(_setting(metadata, "length_penalty", "SHAPING_LENGTH_PENALTY", 0.25)) if outside else 0.0

    floor = float(os.environ.get("SHAPING_MIN_SCORE", -1.0))
    total = max(floor, inner_score - format_penalty - language_penalty - length_penalty)
    if metrics or any(m["name"].startswith("error_") and m["value"] for m in inner_metrics):
        total = 0.0  # the sample could not be scored: that is not the model's fault, so no penalties
    ours = {"inner_reward", "format_penalty", "language_penalty", "length_penalty", "foreign_script_share",
            "reply_chars"}
    return {
        "id": sample_id,
        "aggregate_reward_score": total,
        "metrics_list": [
            _metric("inner_reward", inner_score, "Reward"),
            _metric("format_penalty", format_penalty),
            _metric("language_penalty", language_penalty),
            _metric("length_penalty", length_penalty),
            _metric("foreign_script_share", share),
            _metric("reply_chars", length),
        ]
        + [m for m in inner_metrics if m["name"] not in ours]
        + metrics,
    }


def lambda_handler(event: Any, context: Any = None) -> list[dict]:
    """Score a batch: ``event`` is the bare JSON list of samples (a single sample dict is also accepted)."""
    samples = [event] if isinstance(event, dict) else event
    if not isinstance(samples, list):
        raise TypeError(f"event must be a JSON list of samples; got {type(event).__name__}")
    default_inner = INNER_REWARD or os.environ.get("SHAPING_INNER_REWARD") or DEFAULT_INNER_REWARD
    groups: dict[str, list[int]] = {}
    results: list[dict | None] = [None] * len(samples)
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            results[i] = {"id": None, "aggregate_reward_score": 0.0,
                          "metrics_list": [_metric("error_sample_not_an_object", 1.0)]}
            continue
        metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
        groups.setdefault(str(metadata.get("inner_reward", default_inner)), []).append(i)
    for name, indices in groups.items():
        batch = [samples[i] for i in indices]
        if name == default_inner:  # a misconfigured handler fails loudly instead of training on zeros
            inner_results = _inner_results(load_inner(name), batch, context)
        else:
            try:
                inner_results = _inner_results(load_inner(name), batch, context)
            except Exception as exc:  # a sample naming a bad inner reward scores 0, the rest go on
                logger.warning("shaping: cannot use inner reward %r: %s", name, exc)
                inner_results = [None] * len(batch)
        for i, inner in zip(indices, inner_results, strict=True):
            try:
                results[i] = shape(samples[i], inner)
            except Exception as exc:
                logger.warning("shaping: sample %r scored 0: %s", samples[i].get("id"), exc)
                results[i] = {"id": samples[i].get("id"), "aggregate_reward_score": 0.0,
                              "metrics_list": [_metric("error_invalid_sample", 1.0)]}
    return results  # type: ignore[return-value]
