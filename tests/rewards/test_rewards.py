"""The reward contract and the local runner: samples built from records, the output validator's messages,
loading handlers, batching, worker pools with timeouts, and the `rftflow test` command."""

from __future__ import annotations

import argparse
import json
import math
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rftflow.cli import reward as cli_reward
from rftflow.rewards.contract import (
    RewardContractError,
    RewardError,
    RewardLoadError,
    RewardResult,
    RewardSample,
    RewardTimeoutError,
    sample_for,
    validate_output,
)
from rftflow.rewards.runner import builtin_names, load_reward, score


def samples(n: int, completion: str = "#### 24") -> list[dict]:
    return [{"id": f"s{i}", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": completion}],
             "reference_answer": "24", "metadata": {"reference_answer": "24"}} for i in range(n)]


def ok(sid: str, value: float = 1.0) -> dict:
    return {"id": sid, "aggregate_reward_score": value, "metrics_list": [{"name": "m", "value": value,
                                                                          "type": "Reward"}]}


def handler_file(tmp_path: Path, body: str, name: str = "my_reward.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# ------------------------------------------------------------------------------------------------ samples


@dataclass
class DuckRecord:
    """Anything with the RftRecord attributes the sample builder uses."""

    id: str
    messages: list[dict]
    reference_answer: object
    metadata: dict = field(default_factory=dict)

    def prompt_messages(self) -> list[dict]:
        return [m for m in self.messages if m["role"] != "assistant"]


def test_sample_for_puts_the_reference_in_both_places_with_the_metadata():
    record = DuckRecord("r1", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                               {"role": "assistant", "content": "demo answer"}],
                        {"answer": 4, "unit": "count"}, {"category": "carry", "difficulty": "easy"})
    s = sample_for(record, "#### 4", sample_id="r1#3")
    assert s == {
        "id": "r1#3",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                     {"role": "assistant", "content": "#### 4"}],
        "reference_answer": {"answer": 4, "unit": "count"},
        "metadata": {"reference_answer": {"answer": 4, "unit": "count"}, "category": "carry", "difficulty": "easy"},
    }
    assert sample_for(record, "x")["id"] == "r1"
    s["messages"][0]["content"] = "changed"
    assert record.messages[0]["content"] == "Be brief."
    typed = RewardSample.model_validate(s)
    assert typed.reference() == {"answer": 4, "unit": "count"} and typed.completion() == "#### 4"
    with pytest.raises(TypeError, match="expected str"):
        sample_for(record, None)  # type: ignore[arg-type]


def test_sample_for_accepts_a_dataset_record():
    from rftflow.data.dataset import RftRecord

    record = RftRecord(id="t-1", messages=[{"role": "user", "content": "Revenue was 33 then 57. Change?"}],
                       reference_answer="24", metadata={"category": "carry"})
    [result] = score("numeric", [sample_for(record, "57-33=24 #### 24")])
    assert (result.id, result.aggregate_reward_score) == ("t-1", 1.0)


# ------------------------------------------------------------------------------------------------ validator


def test_validate_output_returns_typed_results_in_sample_order():
    batch = samples(3)
    results = validate_output(batch, [ok("s2", 0.5), ok("s0"), {"id": "s1", "aggregate_reward_score": 0,
                                                                  "metrics_list": None}])
    assert [r.id for r in results] == ["s0", "s1", "s2"]
    assert all(isinstance(r, RewardResult) for r in results)
    assert results[1].metrics_list == [] and results[2].aggregate_reward_score == 0.5


@pytest.mark.parametrize(("raw", "expected"), [
    ({"statusCode": 200, "body": json.dumps([ok("s0")])}, "API Gateway style {statusCode, body}"),
    ({"results": [ok("s0")]}, "got an object with keys results"),
    (json.dumps([ok("s0")]), "got a str"),
    (None, "does lambda_handler `return` its results?"),
    ([ok("s0"), ok("s0")], "'s0' appears more than once"),
    ([ok("s0")] * 1 + [ok("zz")], "'zz' is not the id of any sample"),
    ([ok("s0")], "expected 2 results (one per sample, in any order); got 1"),
    ([ok("s0")], "no result for sample id 's1'"),
    ([{"aggregate_reward_score": 1}, ok("s1")], "result[0].id: missing"),
    ([{"id": 0, "aggregate_reward_score": 1}, ok("s1")], "expected a string; got int 0"),
    ([{"id": "s0"}, ok("s1")], "result[0].aggregate_reward_score: missing"),
    ([{"id": "s0", "aggregate_reward_score": math.nan}, ok("s1")], "expected a finite number; got nan"),
    ([{"id": "s0", "aggregate_reward_score": math.inf}, ok("s1")], "expected a finite number; got inf"),
    ([{"id": "s0", "aggregate_reward_score": "1.0"}, ok("s1")], "expected a number; got str '1.0'"),
    ([{"id": "s0", "aggregate_reward_score": True}, ok("s1")], "expected a number; got bool True"),
    ([{"id": "s0", "aggregate_reward_score": 1, "metric_list": []}, ok("s1")],
     "unknown field 'metric_list' (did you mean 'metrics_list'?)"),
    ([{"id": "s0", "aggregate_reward_score": 1, "metrics_list": {"m": 1}}, ok("s1")],
     "result[0].metrics_list: expected a list"),
    ([{"id": "s0", "aggregate_reward_score": 1, "metrics_list": [{"name": "m", "value": 1, "type": "reward"}]},
      ok("s1")], "expected \"Reward\" or \"Metric\" (case-sensitive); got str 'reward'"),
    ([{"id": "s0", "aggregate_reward_score": 1, "metrics_list": [{"name": "", "value": math.nan,
                                                                   "type": "Metric"}]}, ok("s1")],
     "metrics_list[0].value: expected a finite number"),
    ([0.5, 1.0], "result[0]: expected an object"),
])
def test_validate_output_rejects_malformed_output_with_a_clear_message(raw, expected):
    with pytest.raises(RewardContractError) as info:
        validate_output(samples(2), raw)
    assert expected in str(info.value)


def test_validate_output_lists_every_problem():
    with pytest.raises(RewardContractError) as info:
        validate_output(samples(30), [{"id": f"s{i}", "aggregate_reward_score": math.nan} for i in range(30)])
    assert len(info.value.problems) == 30
    assert "(30 problems)" in str(info.value) and "... and 10 more" in str(info.value)


def test_score_rejects_malformed_samples_before_calling_the_handler():
    bad = samples(3)
    bad[1]["id"] = "s0"
    bad[2]["messages"] = bad[2]["messages"][:1]
    with pytest.raises(RewardContractError) as info:
        score("numeric", bad)
    assert "sample[1].id: 's0' is also the id of sample[0]" in str(info.value)
    assert "sample[2].messages[-1].role: expected \"assistant\"" in str(info.value)
    unserialisable = samples(1)
    unserialisable[0]["metadata"]["tags"] = {"a", "b"}
    with pytest.raises(RewardContractError, match="not JSON-serialisable"):
        score("numeric", unserialisable)


# ------------------------------------------------------------------------------------------------ loading


def test_every_builtin_loads_and_names_its_file():
    for name in builtin_names():
        reward = load_reward(name)
        assert Path(reward.path).is_file() and reward.name == name
    assert load_reward("shaped_exact_match").module.INNER_REWARD == "exact_match"


def test_load_reward_from_a_path_as_an_isolated_module(tmp_path):
    path = handler_file(tmp_path, """
        CALLS = []

        def lambda_handler(event, context):
            CALLS.append(len(event))
            return [{"id": s["id"], "aggregate_reward_score": 0.25} for s in event]

        def strict(event, context):
            return [{"id": s["id"], "aggregate_reward_score": 1} for s in event]
    """)
    first, second = load_reward(str(path)), load_reward(f"file://{path}")
    assert first.name == "my_reward" and first.module is not second.module
    assert [r.aggregate_reward_score for r in first(samples(2))] == [0.25, 0.25]
    assert first.module.CALLS == [2] and second.module.CALLS == []
    assert load_reward(f"{path}:strict")(samples(1))[0].aggregate_reward_score == 1.0


@pytest.mark.parametrize(("spec", "body", "expected"), [
    ("nmeric", None, "unknown reward 'nmeric' (did you mean 'numeric'?)"),
    ("missing.py", None, "missing.py does not exist"),
    ("HANDLER", "def handle(event, context):\n    return []\n", "no function lambda_handler(event, context); it "
                                                                "defines handle"),
    ("HANDLER", "import json\n\nx = 1 / 0\n", "my_reward.py:3: importing the reward handler failed: "
                                             "ZeroDivisionError"),
    ("HANDLER", "def lambda_handler(event, context)\n    return []\n", "my_reward.py:1: importing the reward "
                                                                      "handler failed: SyntaxError"),
])
def test_load_reward_errors_say_what_is_wrong(tmp_path, spec, body, expected):
    if body is not None:
        spec = str(handler_file(tmp_path, body))
    with pytest.raises(RewardLoadError) as info:
        load_reward(spec)
    assert expected in str(info.value)


# ------------------------------------------------------------------------------------------------ running


BATCH_SIZES = """
    import os, time

    def lambda_handler(event, context):
        assert context.get_remaining_time_in_millis() > 0
        event[0]["messages"][-1]["content"] = "mutated"  # the caller's samples are a JSON copy away
        return [{"id": s["id"], "aggregate_reward_score": 1,
                 "metrics_list": [{"name": "batch_size", "value": len(event), "type": "Metric"},
                                  {"name": "pid", "value": os.getpid(), "type": "Metric"}]} for s in event]
"""


def test_score_in_process_sends_batches_of_at_most_128_and_keeps_order(tmp_path):
    batch = samples(300)
    reward = load_reward(str(handler_file(tmp_path, BATCH_SIZES)))
    results = score(reward, batch)
    assert [r.id for r in results] == [s["id"] for s in batch]
    sizes = [int(r.metrics_list[0].value) for r in results]
    assert sizes == [128] * 128 + [128] * 128 + [44] * 44
    assert batch[0]["messages"][-1]["content"] == "#### 24"
    assert {int(r.metrics_list[0].value) for r in score(reward, batch, batch_size=50)} == {50}


def test_score_in_a_worker_pool_matches_in_process_and_reuses_its_workers(tmp_path):
    batch = samples(260, completion="57-33=23 #### 23")[:130] + samples(130)[:130]
    for i, s in enumerate(batch):
        s["id"] = f"x{i}"
    numeric = load_reward("numeric")
    try:
        in_process = score(numeric, batch)
        pooled = score(numeric, batch, workers=2)
        assert [r.model_dump() for r in pooled] == [r.model_dump() for r in in_process]
        pool = numeric.pool(2)
        score(numeric, batch, workers=2)
        assert numeric.pool(2) is pool
    finally:
        numeric.close()
    sized = load_reward(str(handler_file(tmp_path, BATCH_SIZES)))
    try:
        results = score(sized, samples(300), workers=2)
        assert max(r.metrics_list[0].value for r in results) == 128
        assert len({r.metrics_list[1].value for r in results}) == 2  # both workers took batches
    finally:
        sized.close()


HANGS = """
    import time

    def lambda_handler(event, context):
        if any(s["id"] == "hang" for s in event):
            time.sleep(120)
        return [{"id": s["id"], "aggregate_reward_score": 1} for s in event]
"""


def test_a_hung_handler_raises_a_timeout_error_and_the_pool_recovers(tmp_path):
    reward = load_reward(str(handler_file(tmp_path, HANGS)))
    hung = samples(3)
    hung[2]["id"] = "hang"
    try:
        started = time.monotonic()
        with pytest.raises(RewardTimeoutError) as info:
            score(reward, hung, workers=1, timeout_s=1.5, batch_size=2)
        assert time.monotonic() - started < 10
        assert "did not return within 1.5s for batch 2/2 (samples 2-2, ids 'hang'..'hang')" in str(info.value)
        assert [r.aggregate_reward_score for r in score(reward, samples(3), workers=1, timeout_s=10)] == [1.0] * 3
    finally:
        reward.close()
    started = time.monotonic()
    with pytest.raises(RewardTimeoutError, match="did not return within 0.5s"):
        score(reward, hung, timeout_s=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("body", "workers", "error", "expected"), [
    ("def lambda_handler(event, context):\n    raise KeyError('reference_answer')\n", 0, RewardError,
     "raised KeyError: 'reference_answer'"),
    ("def lambda_handler(event, context):\n    raise KeyError('reference_answer')\n", 1, RewardError,
     "KeyError: 'reference_answer'"),
    ("import os\ndef lambda_handler(event, context):\n    os._exit(3)\n", 1, RewardError,
     "its worker died while scoring batch 1/1 (samples 0-1, ids 's0'..'s1') (exit code 3"),
    ("def lambda_handler(event, context):\n    return [{'id': s['id'], 'aggregate_reward_score': {1}} for s in "
     "event]\n", 0, RewardError, "not JSON-serialisable"),
    ("def lambda_handler(event, context):\n    return [{'id': s['id'], 'aggregate_reward_score': {1}} for s in "
     "event]\n", 1, RewardError, "not JSON-serialisable"),
    ("def lambda_handler(event, context):\n    return {'statusCode': 200, 'body': []}\n", 1, RewardContractError,
     "my_reward.py), batch 1/1 (samples 0-1, ids 's0'..'s1'): reward output does not follow the contract"),
])
def test_handler_failures_become_errors_that_name_the_reward_and_batch(tmp_path, body, workers, error, expected):
    reward = load_reward(str(handler_file(tmp_path, body)))
    try:
        with pytest.raises(error) as info:
            score(reward, samples(2), workers=workers, timeout_s=30)
    finally:
        reward.close()
    assert expected in str(info.value)


# ------------------------------------------------------------------------------------------------ CLI


def write_rollouts(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


ROWS = [
    {"id": "a", "messages": [{"role": "user", "content": "33 then 57. Change?"},
                             {"role": "assistant", "content": "#### 24"}], "reference_answer": "24",
     "category": "carry"},
    {"id": "b", "messages": [{"role": "user", "content": "10 then 15. Change?"}], "completion": "#### 4",
     "reference_answer": "5", "category": "no_carry"},
    {"messages": [{"role": "user", "content": "1 then 3. Change?"}], "rollouts": ["#### 2", "#### 3"],
     "metadata": {"reference_answer": "2", "category": "no_carry"}},
]


def test_cmd_test_prints_a_score_table_and_summary(tmp_path, capsys):
    rollouts = write_rollouts(tmp_path / "rollouts.jsonl", ROWS)
    out = tmp_path / "scored.jsonl"
    report = cli_reward.cmd_test("numeric", str(rollouts), out_path=str(out))
    printed = capsys.readouterr().out
    assert [(r.id, r.aggregate_reward_score) for r in report.results] == [
        ("a", 1.0), ("b", 0.0), ("rollouts-3#0", 1.0), ("rollouts-3#1", 0.0)]
    assert report.mean == 0.5
    assert report.by_group == {"carry": {"mean": 1.0, "n": 1.0}, "no_carry": {"mean": 1 / 3, "n": 3.0}}
    assert "rollouts-3#1" in printed and "correctness=1" in printed
    row_b = next(line for line in printed.splitlines() if line.startswith("b "))
    assert row_b.split()[:4] == ["b", "0.000", "5", "####"]  # the reference and what was scored, side by side
    assert "score: mean 0.500" in printed and "by category: carry 1.000 (n=1)  no_carry 0.333 (n=3)" in printed
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert scored[1]["completion"] == "#### 4" and scored[1]["aggregate_reward_score"] == 0.0


def test_rftflow_test_exit_codes_and_line_numbered_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli_reward.add_arguments(parser)
    good = write_rollouts(tmp_path / "good.jsonl", ROWS)
    assert cli_reward.run(parser.parse_args(["numeric", str(good), "--rows", "1"])) == 0
    assert "... 3 more rows" in capsys.readouterr().out
    assert cli_reward.run(parser.parse_args(["numeric", str(good), "--fail-under", "0.9"])) == 1
    assert "below --fail-under 0.9" in capsys.readouterr().err

    bad = write_rollouts(tmp_path / "bad.jsonl", [
        ROWS[0], "{not json", {"id": "p", "messages": [{"role": "user", "content": "no reply"}]},
        {"id": "a", "messages": ROWS[0]["messages"]}, {"messages": "hi", "completion": "x"}, [1, 2],
    ])
    assert cli_reward.run(parser.parse_args(["numeric", str(bad)])) == 2
    err = capsys.readouterr().err
    for expected in ("5 problems", "bad.jsonl:2: invalid JSON", "bad.jsonl:3: no rollout",
                     "bad.jsonl:4: id: 'a' already used on line 1", "bad.jsonl:5: messages: expected a non-empty "
                     "list", "bad.jsonl:6: expected a JSON object; got list"):
        assert expected in err
    assert cli_reward.run(parser.parse_args(["nmeric", str(good)])) == 2
    assert "did you mean 'numeric'" in capsys.readouterr().err
    broken = handler_file(tmp_path, "def lambda_handler(event, context):\n    return {'statusCode': 200}\n")
    assert cli_reward.run(parser.parse_args([str(broken), str(good)])) == 1
    assert "{statusCode, body}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ bounds, extras, exits


def test_scores_outside_the_allowed_range_are_refused(monkeypatch):
    # a forged 1000.0 (what a rollout once got past the code_tests grader) must not pass the contract check
    with pytest.raises(RewardContractError) as info:
        validate_output(samples(2), [ok("s0", 1000.0), ok("s1", -10.5)])
    text = str(info.value)
    assert "result[0].aggregate_reward_score: 1000.0 is outside the allowed range [-10, 10]" in text
    assert "result[1].aggregate_reward_score: -10.5 is outside" in text
    assert [r.aggregate_reward_score for r in validate_output(samples(2), [ok("s0", -10), ok("s1", 10)])] == [-10, 10]
    assert validate_output(samples(1), [ok("s0", 50)], bounds=(0, 100))[0].aggregate_reward_score == 50
    monkeypatch.setenv("RFTFLOW_REWARD_SCORE_RANGE", "0,1")
    with pytest.raises(RewardContractError, match=r"2\.0 is outside the allowed range \[0, 1\]"):
        validate_output(samples(1), [ok("s0", 2.0)])
    monkeypatch.setenv("RFTFLOW_REWARD_SCORE_RANGE", "1")
    with pytest.raises(ValueError, match="must be 'low,high'"):
        validate_output(samples(1), [ok("s0", 0.5)])


# Shaped like the reward functions AWS publishes for Bedrock RFT, which return an extra ``reward_components``
# object and no metrics_list: aws-samples/amazon-bedrock-samples,
# custom-models/bedrock-reinforcement-fine-tuning/reward-functions/gsm8k_rew_func.py (lambda_handler).
GSM8K_STYLE = """
    import re

    def lambda_handler(event, context):
        results = []
        for item in event:
            truth = item.get("metadata", {}).get("reference_answer", {}).get("final_answer")
            found = re.findall(r"#### (\\-?[0-9\\.\\,]+)", item["messages"][-1]["content"])
            score = 1.0 if found and found[-1].replace(",", "") == truth else 0.0
            results.append({"id": item.get("id", "unknown"), "aggregate_reward_score": score,
                            "reward_components": {"correctness": score}})
        return results
"""


def gsm8k_rows(path: Path) -> Path:
    rows = [{"id": "r", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}],
             "metadata": {"reference_answer": {"final_answer": "4"}}},
            {"id": "w", "messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "#### 6"}],
             "metadata": {"reference_answer": {"final_answer": "5"}}}]
    return write_rollouts(path, rows)


def test_extra_fields_are_a_warning_kept_in_the_output_unless_strict(tmp_path, capsys):
    handler = handler_file(tmp_path, GSM8K_STYLE, name="gsm8k_rew_func.py")
    rollouts = gsm8k_rows(tmp_path / "gsm8k.jsonl")
    scored = tmp_path / "scored.jsonl"
    report = cli_reward.cmd_test(str(handler), str(rollouts), out_path=str(scored))
    assert [(r.id, r.aggregate_reward_score) for r in report.results] == [("r", 1.0), ("w", 0.0)]
    assert report.results[0].model_dump()["reward_components"] == {"correctness": 1.0}
    assert report.warnings == ["extra field 'reward_components' in 2 of 2 results (result[0], result[1]): not part "
                               "of the reward contract, kept in the per-sample output; --strict refuses it"]
    assert "warning: reward gsm8k_rew_func: extra field 'reward_components'" in capsys.readouterr().err
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert rows[0]["reward_components"] == {"correctness": 1.0} and rows[1]["reward_components"] == {"correctness": 0.0}

    parser = argparse.ArgumentParser()
    cli_reward.add_arguments(parser)
    assert cli_reward.run(parser.parse_args([str(handler), str(rollouts), "--workers", "0"])) == 0
    assert cli_reward.run(parser.parse_args([str(handler), str(rollouts), "--strict", "--workers", "0"])) == 1
    err = capsys.readouterr().err
    assert "result[0]: unknown field 'reward_components'" in err and "because of --strict" in err
    # a near miss of a contract field is a typo, not an extra: an error either way
    with pytest.raises(RewardContractError, match="unknown field 'metric_list' \\(did you mean 'metrics_list'\\?\\)"):
        validate_output(samples(1), [{"id": "s0", "aggregate_reward_score": 1, "metric_list": []}])
    warnings: list[str] = []
    [result] = validate_output(samples(1), [{"id": "s0", "aggregate_reward_score": 1, "metrics_list": [
        {"name": "m", "value": 1, "type": "Metric", "unit": "%"}]}], warnings=warnings)
    assert result.metrics_list[0].model_dump()["unit"] == "%"
    assert warnings == ["extra field 'unit' in 1 of 1 results (result[0].metrics_list[0]): not part of the reward "
                        "contract, kept in the per-sample output; --strict refuses it"]


CRASHES_AT_LINE_5 = """
    def helper(sample):
        return sample["nope"]

    def lambda_handler(event, context):
        return [helper(s) for s in event]
"""


def test_an_in_process_crash_names_the_handler_file_and_line(tmp_path):
    path = handler_file(tmp_path, CRASHES_AT_LINE_5)
    with pytest.raises(RewardError) as info:
        score(load_reward(str(path)), samples(1), workers=0)
    text = str(info.value)
    assert "raised KeyError: 'nope'" in text
    assert f"(at {path}:3, in helper: return sample[\"nope\"])" in text  # the innermost line of the handler's file
    with pytest.raises(RewardError, match=f"at {path}:3, in helper"):
        score(load_reward(str(path)), samples(1), workers=0, timeout_s=0)  # without the timeout thread too


@pytest.mark.parametrize(("body", "workers", "expected"), [
    ("import sys\ndef lambda_handler(event, context):\n    sys.exit(0)\n", 0,
     "exited with sys.exit(0) instead of returning its results"),
    ("def lambda_handler(event, context):\n    exit()\n", 0, "exited with sys.exit(None)"),
    ("import sys\ndef lambda_handler(event, context):\n    sys.exit(0)\n", 1,
     "the handler exited with sys.exit(0) instead of returning its results"),
    ("import os\ndef lambda_handler(event, context):\n    os._exit(0)\n", 1,
     "its worker died while scoring batch 1/1 (samples 0-1, ids 's0'..'s1') (exit code 0"),
    ("import os, signal\ndef lambda_handler(event, context):\n    os.kill(os.getpid(), signal.SIGKILL)\n", 1,
     "(exit code -9"),
])
def test_a_handler_that_exits_or_kills_its_worker_is_an_error(tmp_path, body, workers, expected):
    reward = load_reward(str(handler_file(tmp_path, body)))
    try:
        with pytest.raises(RewardError) as info:
            score(reward, samples(2), workers=workers, timeout_s=30)
    finally:
        reward.close()
    assert expected in str(info.value)


@pytest.mark.parametrize("body", [
    "import sys\ndef lambda_handler(event, context):\n    sys.exit(0)\n",
    "import os\ndef lambda_handler(event, context):\n    os._exit(0)\n",
    "import os, signal\ndef lambda_handler(event, context):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
])
@pytest.mark.parametrize("workers", ["0", "1"])
def test_rftflow_test_never_exits_0_for_a_handler_that_exits(tmp_path, body, workers):
    """Run as its own process, as a user would: the status is 1 with a message, never a silent 0."""
    if "SIGKILL" in body and workers == "0":
        pytest.skip("in-process, a handler that kills the process kills rftflow too (status 137, not 0)")
    import subprocess
    import sys
    handler = handler_file(tmp_path, body)
    rollouts = write_rollouts(tmp_path / "r.jsonl", ROWS)
    proc = subprocess.run([sys.executable, "-m", "rftflow.cli.main", "test", str(handler), str(rollouts), "--workers",
                           workers], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "rftflow test:" in proc.stderr and ("exit" in proc.stderr or "died" in proc.stderr)
