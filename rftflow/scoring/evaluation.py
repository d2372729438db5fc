"""Backend-agnostic evaluation: score each prompt's completions with the reward function, then aggregate
pass@1, mean reward, response length, pass@k and a breakdown by any metadata field.

Every backend's eval stage produces completions its own way and hands them to `score_rows` + `summarize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING = "(missing)"


def score_rollouts(records: Sequence[Any], rollouts: Sequence[Sequence[str]], reward: Any, *,
                   workers: int = 0, timeout_s: float = 60.0) -> list[list[Any]]:
    """RewardResults for rollouts[i][j] (the j-th completion of records[i]), in the same shape."""
    from rftflow.rewards.contract import sample_for
    from rftflow.rewards.runner import score

    if len(records) != len(rollouts):
        raise ValueError(f"expected one list of rollouts per record; got {len(rollouts)} for {len(records)} records")
    samples, shape = [], []
    for record, texts in zip(records, rollouts, strict=True):
        shape.append(len(texts))
        samples.extend(sample_for(record, text, sample_id=f"{record.id}#{j}") for j, text in enumerate(texts))
    results = score(reward, samples, workers=workers, timeout_s=timeout_s) if samples else []
    by_id = {str(r.id): r for r in results}
    flat = [by_id.get(str(s["id"])) for s in samples]
    if any(r is None for r in flat):
        missing = [s["id"] for s, r in zip(samples, flat, strict=True) if r is None][:5]
        raise ValueError(f"reward function returned no result for sample ids {missing}")
    out, pos = [], 0
    for n in shape:
        out.append(flat[pos:pos + n])
        pos += n
    return out


def score_rows(records: Sequence[Any], greedy: Sequence[dict[str, Any]], reward: Any, *, pass_threshold: float,
               sampled: Sequence[Sequence[dict[str, Any]]] | None = None, workers: int = 0,
               timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """One row per prompt from its greedy completion (and optionally k sampled ones).

    A completion is `{"text": str, "tokens": int | None}`. Row: id, reference_answer, metadata, completion,
    reward, passed, response_tokens, metrics (the reward's metrics_list), and with samples sample_rewards /
    sample_passed.
    """
    rollouts = [[g["text"]] + ([s["text"] for s in sampled[i]] if sampled else []) for i, g in enumerate(greedy)]
    results = score_rollouts(records, rollouts, reward, workers=workers, timeout_s=timeout_s)
    rows = []
    for record, g, res in zip(records, greedy, results, strict=True):
        first = res[0]
        row: dict[str, Any] = {
            "id": record.id, "reference_answer": record.reference_answer, "metadata": dict(record.metadata),
            "completion": g["text"], "reward": float(first.aggregate_reward_score),
            "passed": float(first.aggregate_reward_score) >= pass_threshold,
            "response_tokens": g.get("tokens"),
            "metrics": {m.name: float(m.value) for m in first.metrics_list},
        }
        if sampled:
            row["sample_rewards"] = [float(r.aggregate_reward_score) for r in res[1:]]
            row["sample_passed"] = [v >= pass_threshold for v in row["sample_rewards"]]
        rows.append(row)
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _group_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "pass_at_1": _mean([float(r["passed"]) for r in rows]),
        "mean_reward": _mean([r["reward"] for r in rows]),
        "n": len(rows),
    }
    if rows and rows[0].get("sample_passed"):
        stats["sampled_pass_at_1"] = _mean([sum(r["sample_passed"]) / len(r["sample_passed"]) for r in rows])
        stats["pass_at_k"] = _mean([float(any(r["sample_passed"])) for r in rows])
    return stats


def breakdown(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{field: {value: {pass_at_1, mean_reward, n, [sampled_pass_at_1, pass_at_k]}}} for fields the rows carry."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for field in fields:
        if not any(field in r["metadata"] for r in rows):
            continue
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            value = r["metadata"].get(field)
            key = MISSING if value is None else str(value)
            groups.setdefault(key, []).append(r)
        out[field] = {key: _group_stats(groups[key]) for key in sorted(groups)}
    return out


def summarize(rows: Sequence[dict[str, Any]], breakdown_fields: Sequence[str] = ("category",)) -> dict[str, Any]:
    """The eval manifest's metrics: pass_at_1, mean_reward, mean_response_tokens, mean_response_words, n, pass_at_k, k,
    sampled_pass_at_1, reward_metrics (mean of each metrics_list entry) and breakdown."""
    if not rows:
        raise ValueError("no eval rows to summarize: the eval set is empty")
    overall = _group_stats(rows)
    tokens = [r["response_tokens"] for r in rows if r.get("response_tokens") is not None]
    # Words are known on every backend (AWS evals return text, not token counts): the length guard's fallback.
    words = [len(str(r.get("completion") or "").split()) for r in rows]
    k = len(rows[0]["sample_passed"]) if rows[0].get("sample_passed") else 0
    reward_metrics: dict[str, list[float]] = {}
    for r in rows:
        for name, value in r.get("metrics", {}).items():
            reward_metrics.setdefault(name, []).append(value)
    return {
        "pass_at_1": overall["pass_at_1"],
        "mean_reward": overall["mean_reward"],
        "mean_response_tokens": _mean(tokens),
        "mean_response_words": _mean(words),
        "n": len(rows),
        "pass_at_k": overall.get("pass_at_k"),
        "k": k,
        "sampled_pass_at_1": overall.get("sampled_pass_at_1"),
        "reward_metrics": {name: _mean(values) for name, values in sorted(reward_metrics.items())},
        "breakdown": breakdown(rows, breakdown_fields),
    }
