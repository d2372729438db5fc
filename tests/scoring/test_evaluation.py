"""Eval aggregation for any backend: completions scored by the reward handler, pass@1/pass@k and breakdowns."""

from __future__ import annotations

import pytest

from rftflow.data.dataset import RftRecord
from rftflow.rewards.runner import load_reward
from rftflow.scoring import evaluation


def _record(i: int, answer: str, category: str, op: str = "inc") -> RftRecord:
    return RftRecord(id=f"r{i}", messages=[{"role": "user", "content": f"question {i}"}], reference_answer=answer,
                     tools=None, metadata={"category": category, "op": op}, line=i + 1)


RECORDS = [_record(0, "24", "carry"), _record(1, "10", "carry"), _record(2, "7", "no_carry", "add")]


def test_rows_and_metrics_with_breakdown_and_pass_at_k():
    greedy = [{"text": "57-33=24 #### 24", "tokens": 12}, {"text": "#### 20", "tokens": 4},
              {"text": "3+4=7 #### 7", "tokens": 8}]
    sampled = [[{"text": "#### 24"}, {"text": "#### 14"}], [{"text": "#### 20"}, {"text": "#### 10"}],
               [{"text": "#### 7"}, {"text": "#### 7"}]]
    rows = evaluation.score_rows(RECORDS, greedy, load_reward("numeric"), pass_threshold=1.0, sampled=sampled)
    assert [r["passed"] for r in rows] == [True, False, True]
    assert rows[0]["metadata"] == {"category": "carry", "op": "inc"} and rows[1]["sample_passed"] == [False, True]
    assert rows[0]["metrics"]["correctness"] == 1.0

    metrics = evaluation.summarize(rows, ["category", "op", "difficulty"])
    assert metrics["pass_at_1"] == pytest.approx(2 / 3) and metrics["mean_reward"] == pytest.approx(2 / 3)
    assert metrics["n"] == 3 and metrics["k"] == 2
    assert metrics["mean_response_tokens"] == pytest.approx(8.0)
    assert metrics["pass_at_k"] == 1.0
    assert metrics["sampled_pass_at_1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    carry = metrics["breakdown"]["category"]["carry"]
    assert (carry["pass_at_1"], carry["mean_reward"], carry["n"], carry["sampled_pass_at_1"]) == (0.5, 0.5, 2, 0.5)
    assert metrics["breakdown"]["category"]["no_carry"]["pass_at_1"] == 1.0
    assert set(metrics["breakdown"]["op"]) == {"inc", "add"}
    assert "difficulty" not in metrics["breakdown"]  # fields the data does not carry are skipped


def test_greedy_only_has_no_pass_at_k():
    greedy = [{"text": "#### 24", "tokens": 3}, {"text": "#### 10", "tokens": 3}, {"text": "#### 8", "tokens": None}]
    metrics = evaluation.summarize(evaluation.score_rows(RECORDS, greedy, load_reward("numeric"), pass_threshold=1.0))
    assert metrics["pass_at_k"] is None and metrics["k"] == 0 and metrics["sampled_pass_at_1"] is None
    assert metrics["mean_response_tokens"] == 3.0
    assert metrics["breakdown"]["category"]["no_carry"] == {"pass_at_1": 0.0, "mean_reward": 0.0, "n": 1}


def test_missing_metadata_values_get_their_own_group_and_empty_sets_are_errors():
    rows = [{"id": "a", "metadata": {"domain": "tax"}, "passed": True, "reward": 1.0},
            {"id": "b", "metadata": {}, "passed": False, "reward": 0.0}]
    assert set(evaluation.breakdown(rows, ["domain"])["domain"]) == {"tax", "(missing)"}
    with pytest.raises(ValueError, match="eval set is empty"):
        evaluation.summarize([])
