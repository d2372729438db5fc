"""Rollouts on AWS: converse with bounded concurrency and backoff on throttling; gen_qa datasets that repeat
each prompt k times, and mapping the eval job's per-prompt outputs back to the records."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from rftflow.backends.aws import rollouts
from rftflow.data.dataset import RftRecord

SETTINGS = rollouts.ConverseSettings(model_id="us.amazon.nova-2-lite-v1:0", max_retries=3, base_delay_s=1.0)


def record(i: int, system: bool = False) -> RftRecord:
    messages = ([{"role": "system", "content": "Answer with #### n."}] if system else []) + \
        [{"role": "user", "content": f"What is {i}+{i}?"}]
    return RftRecord(id=f"r{i}", messages=messages, reference_answer=str(2 * i), metadata={"category": "add"})


def reply(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}, "metrics": {"latencyMs": 1}}


def runtime():
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_throttling_is_retried_with_growing_capped_delays():
    client, sleeps = runtime(), []
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("converse", "ThrottlingException", "slow down", http_status_code=429)
        stub.add_response("converse", reply("#### 2"))
        usage = rollouts.Usage()
        out = rollouts.converse_once(client, rollouts.converse_request(record(1), SETTINGS), SETTINGS,
                                     sleep=sleeps.append, usage=usage)
    assert out == {"text": "#### 2", "tokens": 3, "stop_reason": "end_turn"}
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    assert usage.to_dict() == {"input_tokens": 10, "output_tokens": 3, "calls": 1, "retries": 2}


def test_retries_run_out_with_advice_and_other_errors_fail_at_once():
    client = runtime()
    with Stubber(client) as stub:
        for _ in range(4):
            stub.add_client_error("converse", "ThrottlingException", http_status_code=429)
        with pytest.raises(rollouts.RolloutError, match="still ThrottlingException after 3 retries; lower the"):
            rollouts.converse_once(client, rollouts.converse_request(record(1), SETTINGS), SETTINGS,
                                   sleep=lambda s: None)
        stub.add_client_error("converse", "AccessDeniedException", "no model access", http_status_code=403)
        with pytest.raises(rollouts.RolloutError, match="AccessDeniedException: no model access"):
            rollouts.converse_once(client, rollouts.converse_request(record(1), SETTINGS), SETTINGS,
                                   sleep=lambda s: None)


class CountingRuntime:
    """A stand-in Bedrock runtime that records how many calls are in flight at once."""

    def __init__(self) -> None:
        self.lock, self.active, self.peak, self.calls = threading.Lock(), 0, 0, 0

    def converse(self, **request):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
            throttle = self.calls % 5 == 0
        time.sleep(0.01)
        with self.lock:
            self.active -= 1
        if throttle:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "Converse")
        return reply("#### " + request["messages"][-1]["content"][0]["text"].split()[2].rstrip("?"))


def test_k_samples_per_prompt_in_order_with_bounded_concurrency():
    fake = CountingRuntime()
    settings = rollouts.ConverseSettings(model_id="m", concurrency=3, base_delay_s=0.001)
    records = [record(i) for i in range(5)]
    out = rollouts.sample(fake, records, 4, settings, sleep=lambda s: None)
    assert [len(x) for x in out] == [4] * 5
    assert out[2][0]["text"] == "#### 2+2"
    assert fake.peak <= 3 and fake.calls > 20  # throttled calls were retried


def test_gen_qa_rows_repeat_each_prompt_and_carry_ids():
    rows = rollouts.gen_qa_rows([record(1, system=True), record(2)], k=3)
    assert len(rows) == 6 and rows[0]["query"] == rows[2]["query"] == "What is 1+1?"
    assert rows[0]["system"] == "Answer with #### n." and "system" not in rows[3]
    assert [json.loads(r["metadata"]) for r in rows[:2]] == [{"id": "r1", "sample": 0}, {"id": "r1", "sample": 1}]
    assert rows[0]["response"] == "2"
    assert rollouts.gen_qa_rows([RftRecord(id="o", messages=[{"role": "user", "content": "q"}],
                                           reference_answer={"answer": 3})])[0]["response"] == '{"answer": 3}'


def test_inference_outputs_map_back_to_records_in_any_order():
    records = [record(1), record(2)]
    rows = [{"inference": '["b1"]', "metadata": json.dumps({"id": "r2", "sample": 1})},
            {"inference": ["a0"], "metadata": json.dumps({"id": "r1", "sample": 0})},
            {"inference": "a1", "metadata": json.dumps({"id": "r1", "sample": 1})},
            {"inference": "b0", "metadata": json.dumps({"id": "r2", "sample": 0})}]
    out = rollouts.completions_from_inference(rows, records, 2)
    assert [[c["text"] for c in cs] for cs in out] == [["a0", "a1"], ["b0", "b1"]]
    with pytest.raises(ValueError, match="no completion for 1 of 4 samples \\(e.g. r2#1\\)"):
        rollouts.completions_from_inference(rows[1:], records, 2)


# The first row of AWS's sample eval output, verbatim: `inference` is a Python-repr list string (single quotes),
# `prompt` the repr of the messages, no metadata.
# Source: aws-samples/amazon-nova-samples customization/Nova_2.0/04_eval/examples/inference_output.jsonl
AWS_SAMPLE_ROW = (
    '{"prompt": "[{\'role\': \'user\', \'content\': \'## user: hi, i need to know the current stock price of aapl.\'}]", '
    '"inference": "[\'<|begin_of_solution|>The current stock price for AAPL is $150.75.<|end_of_solution|>\']", '
    '"gold": "the current stock price of aapl is $150.75. "}'
)


@pytest.mark.parametrize("inference, text", [
    # the sample's Python-repr form, with Nova's solution markers
    (json.loads(AWS_SAMPLE_ROW)["inference"], "The current stock price for AAPL is $150.75."),
    # a repr list whose answer has a newline: repr escapes it as backslash-n, which must come back as a newline
    (repr(["#### 42\nI hope this helps."]), "#### 42\nI hope this helps."),
    # a repr list using double quotes because the answer holds a single quote
    (repr(["it's 42"]), "it's 42"),
    # a JSON list string and a real list (both seen in service outputs read through other tools)
    (json.dumps(["#### 42\nI hope this helps."]), "#### 42\nI hope this helps."),
    (["#### 42"], "#### 42"),
    ("[]", ""),
    # a plain answer that merely looks like a list is not unwrapped
    ("[1, 2]", "[1, 2]"),
    ("#### 42", "#### 42"),
])
def test_inference_text_reads_every_form_aws_writes(inference, text):
    assert rollouts._inference_text(inference) == text


def test_exact_match_scores_the_aws_form_like_the_clean_text():
    """The defect: with the repr form parsed as plain text, exact_match scored 0.0 instead of 1.0."""
    from rftflow.rewards.runner import load_reward, score

    rec = RftRecord(id="g1", messages=[{"role": "user", "content": "6*7?"}], reference_answer="42")
    rows = [{"inference": repr(["<|begin_of_solution|>#### 42\nI hope this helps.<|end_of_solution|>"]),
             "metadata": json.dumps({"id": "g1", "sample": 0})}]
    text = rollouts.completions_from_inference(rows, [rec], 1)[0][0]["text"]
    assert text == "#### 42\nI hope this helps."
    reward = load_reward("exact_match")

    def scored(answer: str) -> float:
        sample = {"id": "g1", "messages": [*rec.messages, {"role": "assistant", "content": answer}],
                  "reference_answer": rec.reference_answer}
        return score(reward, [sample])[0].aggregate_reward_score

    assert scored(text) == 1.0
    assert scored(rows[0]["inference"]) == 0.0  # the raw string, as it was scored before


def test_rows_without_metadata_match_by_position_as_in_the_aws_sample():
    rows = [json.loads(AWS_SAMPLE_ROW)]
    rec = RftRecord(id="s1", messages=[{"role": "user", "content": "price?"}], reference_answer="150.75")
    assert rollouts.completions_from_inference(rows, [rec], 1)[0][0]["text"] == \
        "The current stock price for AAPL is $150.75."


def test_metadata_read_back_as_a_python_repr_still_maps_rows():
    rows = [{"inference": repr(["a0"]), "metadata": repr({"id": "r1", "sample": 0})}]
    assert rollouts.completions_from_inference(rows, [record(1)], 1)[0][0]["text"] == "a0"
