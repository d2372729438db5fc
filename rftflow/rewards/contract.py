"""The reward-function contract, as the service calls a reward Lambda: a list of samples in, a list of scores out.

Typed samples and results, the errors a reward can raise, samples built from dataset records, and the validator
that says, in words, what is wrong with a handler's output. rftflow.rewards.runner loads and runs handlers.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

MAX_BATCH = 128  # lambda_batch_size in the service recipes
SCORE_RANGE = (-10.0, 10.0)  # default bounds of aggregate_reward_score; RFTFLOW_REWARD_SCORE_RANGE="lo,hi" overrides
_MAX_PROBLEMS_SHOWN = 20


# ------------------------------------------------------------------------------------------------ models


class RewardMetric(BaseModel):
    """One named number in a result's ``metrics_list``: a reward component or a plain metric.

    Fields beyond the contract (validate_output warns about them unless strict) are kept as extra fields."""

    model_config = ConfigDict(extra="allow")
    name: str
    value: float
    type: Literal["Reward", "Metric"]


class RewardResult(BaseModel):
    """A handler's verdict on one sample; ``id`` echoes the sample's id.

    Fields beyond the contract (e.g. the ``reward_components`` of AWS's sample graders) are kept as extra fields:
    ``model_dump()`` includes them, so they reach the per-sample output of ``rftflow test --out``."""

    model_config = ConfigDict(extra="allow")
    id: str
    aggregate_reward_score: float
    metrics_list: list[RewardMetric] = []


class RewardSample(BaseModel):
    """One element of a reward Lambda's event; extra dataset fields may also appear at the top level."""

    model_config = ConfigDict(extra="allow")
    id: str
    messages: list[dict[str, Any]]
    reference_answer: Any | None = None
    metadata: dict[str, Any] = {}

    def completion(self) -> str:
        """The rollout being scored: the content of the last (assistant) message."""
        content = self.messages[-1].get("content") if self.messages else None
        return content if isinstance(content, str) else ""

    def reference(self) -> Any:
        """The reference answer, read where handlers should read it: top level first, then metadata."""
        return self.reference_answer if self.reference_answer is not None else self.metadata.get("reference_answer")


# ------------------------------------------------------------------------------------------------ errors


class RewardError(Exception):
    """A reward function could not be loaded or run."""


class RewardLoadError(RewardError, ValueError):
    """A reward spec names no usable handler."""


class RewardContractError(RewardError, ValueError):
    """Samples or handler output that break the reward contract; ``problems`` lists every one found."""

    def __init__(self, summary: str, problems: list[str]):
        self.summary = summary
        self.problems = problems
        shown = problems[:_MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"{summary} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
        lines += [f"  {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))


class RewardTimeoutError(RewardError, TimeoutError):
    """A handler did not return within the per-call timeout."""


# ------------------------------------------------------------------------------------------------ samples


def sample_for(record: Any, completion: str, *, sample_id: str | None = None) -> dict:
    """The Lambda-event sample for one rollout of a dataset record.

    ``record`` is anything with ``id``, ``reference_answer``, ``metadata`` and ``prompt_messages()`` (a
    ``rftflow.data.dataset.RftRecord``). The reference answer is put both at the top level and under ``metadata``,
    next to the record's other metadata fields, because the services use either place.
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion for record {record.id!r}: expected str; got {type(completion).__name__}")
    metadata = {k: v for k, v in (record.metadata or {}).items() if k != "reference_answer"}
    return {
        "id": str(record.id if sample_id is None else sample_id),
        "messages": [dict(m) for m in record.prompt_messages()] + [{"role": "assistant", "content": completion}],
        "reference_answer": record.reference_answer,
        "metadata": {"reference_answer": record.reference_answer, **metadata},
    }


def validate_samples(samples: Sequence[Any]) -> None:
    """Raise RewardContractError unless every sample has a unique string id and ends with an assistant turn."""
    problems = []
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        where = f"sample[{i}]"
        if not isinstance(s, dict):
            problems.append(f"{where}: expected an object {{id, messages, ...}}; got {type(s).__name__}")
            continue
        sid = s.get("id")
        if not isinstance(sid, str) or not sid:
            problems.append(f"{where}.id: expected a non-empty string; got {_show(sid)}")
        elif sid in seen:
            problems.append(f"{where}.id: {sid!r} is also the id of sample[{seen[sid]}]; ids must be unique")
        else:
            seen[sid] = i
        messages = s.get("messages")
        if not isinstance(messages, list) or not messages:
            problems.append(f"{where}.messages: expected a non-empty list of messages; got {_show(messages)}")
        elif not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            role = messages[-1].get("role") if isinstance(messages[-1], dict) else None
            problems.append(f"{where}.messages[-1].role: expected \"assistant\" (the rollout); got {_show(role)}")
        if "metadata" in s and not isinstance(s["metadata"], dict):
            problems.append(f"{where}.metadata: expected an object; got {_show(s['metadata'])}")
    if problems:
        raise RewardContractError("samples do not follow the reward contract", problems)


# ------------------------------------------------------------------------------------------------ output


_RESULT_FIELDS = ("id", "aggregate_reward_score", "metrics_list")
_METRIC_FIELDS = ("name", "value", "type")


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number; got {_show(value)}"
    if not math.isfinite(value):
        return f"expected a finite number; got {value}"
    return None


def _unknown_fields(item: dict, allowed: tuple[str, ...], where: str, strict: bool,
                    extras: dict[str, list[str]]) -> list[str]:
    """Problems for fields outside the contract. A near miss of a contract field (``metric_list``) is a typo and
    always a problem; any other extra field is a problem only when ``strict``, else recorded in ``extras``
    (field -> where) for a warning."""
    problems = []
    for key in item:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            if close:
                problems.append(f"{where}: unknown field {key!r} (did you mean {close[0]!r}?)")
            elif strict:
                problems.append(f"{where}: unknown field {key!r}; allowed: {', '.join(allowed)} (extra fields are "
                                "refused because of --strict)")
            else:
                extras.setdefault(str(key), []).append(where)
    return problems


def score_range() -> tuple[float, float]:
    """The allowed range of aggregate_reward_score: RFTFLOW_REWARD_SCORE_RANGE ("lo,hi") or [-10, 10]."""
    text = os.environ.get("RFTFLOW_REWARD_SCORE_RANGE", "").strip()
    if not text:
        return SCORE_RANGE
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"RFTFLOW_REWARD_SCORE_RANGE must be 'low,high'; got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"RFTFLOW_REWARD_SCORE_RANGE must be two finite numbers, low < high; got {text!r}")
    return low, high


def _extra_warnings(extras: dict[str, list[str]], n: int) -> list[str]:
    lines = []
    for key, wheres in extras.items():
        shown = ", ".join(wheres[:3]) + (f" and {len(wheres) - 3} more" if len(wheres) > 3 else "")
        lines.append(f"extra field {key!r} in {len(wheres)} of {n} results ({shown}): not part of the reward "
                     "contract, kept in the per-sample output; --strict refuses it")
    return lines


def _wrapper_problem(raw: Any, n: int) -> str:
    if isinstance(raw, dict) and ("statusCode" in raw or "body" in raw):
        body = raw.get("body")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                pass
        inside = f" (its body holds {len(body)} results)" if isinstance(body, list) else ""
        return (
            f"the handler returned an API Gateway style {{statusCode, body}} object{inside}; a reward Lambda must "
            "return the bare JSON list of results itself, one per sample: `return results`, not "
            "`return {'statusCode': 200, 'body': json.dumps(results)}`"
        )
    if isinstance(raw, dict):
        keys = ", ".join(map(str, list(raw)[:5]))
        return f"expected the bare list of {n} results; got an object with keys {keys} (return the list itself)"
    if isinstance(raw, (str, bytes)):
        return (
            f"expected the bare list of {n} results; got a {type(raw).__name__} (return the list object: Lambda "
            "serialises it; a json.dumps() string would reach the service as one quoted string)"
        )
    if raw is None:
        return f"expected the bare list of {n} results; got None (does lambda_handler `return` its results?)"
    return f"expected the bare list of {n} results; got {_show(raw)}"


def validate_output(samples: Sequence[dict], raw_output: Any, *, strict: bool = False,
                    bounds: tuple[float, float] | None = None, warnings: list[str] | None = None) -> list[RewardResult]:
    """Check a handler's raw output against the contract; return typed results in the samples' order.

    Raises RewardContractError listing every problem: not a bare list (e.g. a {statusCode, body} wrapper),
    wrong length, ids not echoed / missing / duplicated, a missing or non-finite score or one outside ``bounds``
    (default: score_range(), [-10, 10]), wrong types, misspelt fields, bad metrics. Other extra fields (AWS's
    sample graders add ``reward_components``) are kept and reported in ``warnings``, or refused when ``strict``.
    """
    low, high = bounds if bounds is not None else score_range()
    extras: dict[str, list[str]] = {}
    n = len(samples)
    if not isinstance(raw_output, list):
        raise RewardContractError("reward output does not follow the contract", [_wrapper_problem(raw_output, n)])
    problems: list[str] = []
    if len(raw_output) != n:
        problems.append(f"expected {n} results (one per sample, in any order); got {len(raw_output)}")
    wanted = {s.get("id"): i for i, s in enumerate(samples) if isinstance(s, dict)}
    found: dict[Any, int] = {}
    clean: dict[Any, dict] = {}
    for i, item in enumerate(raw_output):
        where = f"result[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object {{id, aggregate_reward_score, metrics_list}}; "
                            f"got {_show(item)}")
            continue
        problems += _unknown_fields(item, _RESULT_FIELDS, where, strict, extras)
        ok = True
        if "id" not in item:
            problems.append(f"{where}.id: missing (echo the sample's id)")
            ok = False
        else:
            rid = item["id"]
            if not isinstance(rid, str):
                hint = f" (the sample id is {str(rid)!r}: echo it unchanged)" if str(rid) in wanted else ""
                problems.append(f"{where}.id: expected a string; got {_show(rid)}{hint}")
                ok = False
            elif rid not in wanted:
                problems.append(f"{where}.id: {rid!r} is not the id of any sample in the batch")
                ok = False
            elif rid in found:
                problems.append(f"{where}.id: {rid!r} appears more than once (also result[{found[rid]}])")
                ok = False
            else:
                found[rid] = i
        if "aggregate_reward_score" not in item:
            problems.append(f"{where}.aggregate_reward_score: missing")
            ok = False
        elif (p := _number_problem(item["aggregate_reward_score"])) is not None:
            problems.append(f"{where}.aggregate_reward_score: {p}")
            ok = False
        elif not low <= item["aggregate_reward_score"] <= high:
            problems.append(f"{where}.aggregate_reward_score: {item['aggregate_reward_score']!r} is outside the "
                            f"allowed range [{low:g}, {high:g}] (a score that far out would swamp every other "
                            "sample's; widen the range with --score-range or RFTFLOW_REWARD_SCORE_RANGE if it is "
                            "meant)")
            ok = False
        metrics = item.get("metrics_list")
        if metrics is None:
            metrics = []
        if not isinstance(metrics, list):
            problems.append(f"{where}.metrics_list: expected a list of {{name, value, type}}; got {_show(metrics)}")
            ok = False
            metrics = []
        for j, m in enumerate(metrics):
            mwhere = f"{where}.metrics_list[{j}]"
            if not isinstance(m, dict):
                problems.append(f"{mwhere}: expected an object {{name, value, type}}; got {_show(m)}")
                ok = False
                continue
            problems += _unknown_fields(m, _METRIC_FIELDS, mwhere, strict, extras)
            if not isinstance(m.get("name"), str) or not m.get("name"):
                problems.append(f"{mwhere}.name: expected a non-empty string; got {_show(m.get('name'))}")
                ok = False
            if (p := _number_problem(m.get("value"))) is not None:
                problems.append(f"{mwhere}.value: {p}")
                ok = False
            if m.get("type") not in ("Reward", "Metric"):
                problems.append(f"{mwhere}.type: expected \"Reward\" or \"Metric\" (case-sensitive); "
                                f"got {_show(m.get('type'))}")
                ok = False
        if ok:
            clean[item["id"]] = {**item, "metrics_list": metrics}
    missing = [sid for sid in wanted if sid not in found]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.append(f"no result for sample id{'s' if len(missing) > 1 else ''} {shown}")
    if problems:
        raise RewardContractError("reward output does not follow the contract", problems)
    if warnings is not None:
        warnings += _extra_warnings(extras, n)
    return [RewardResult.model_validate(clean[s["id"]]) for s in samples]
