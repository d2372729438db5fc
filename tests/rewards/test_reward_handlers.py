"""Built-in reward handlers: the Lambda contract with the reference answer in either place, answer parsing,
shaping penalties, and the LLM judge against a real bedrock-runtime client wired to botocore's Stubber."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rftflow.rewards.contract import validate_output
from rftflow.rewards.runner import builtin_dir, load_reward

PROMPT = "Revenue was 33 in 2019 and 57 in 2020. What was the change?"


def sample(sid: str, completion: str, ref, *, where: str = "both", **metadata) -> dict:
    """A Lambda-event sample with the reference answer top-level, under metadata, or both."""
    s: dict = {"id": sid, "messages": [{"role": "user", "content": PROMPT},
                                       {"role": "assistant", "content": completion}], "metadata": dict(metadata)}
    if where in ("top", "both"):
        s["reference_answer"] = ref
    if where in ("metadata", "both"):
        s["metadata"]["reference_answer"] = ref
    return s


def scores(results: list[dict]) -> dict[str, float]:
    return {r["id"]: r["aggregate_reward_score"] for r in results}


def metrics(result: dict) -> dict[str, tuple[float, str]]:
    return {m["name"]: (m["value"], m["type"]) for m in result["metrics_list"]}


# A right and a wrong reply per built-in (the LLM judge has its own tests below).
CASES = {
    "numeric": ("57-33=24 #### 24", "57-33=23 #### 23", "24"),
    "exact_match": ("<answer>The Eiffel Tower.</answer>", "<answer>Big Ben</answer>", "eiffel tower"),
    "code_tests": ("```python\ndef f(x):\n    return x + 1\n```", "```python\ndef f(x):\n    return x\n```",
                   {"tests": ["assert f(1) == 2", "assert f(5) == 6"]}),
    "shaping": ("57-33=24 #### 24", "57-33=23 #### 23", "24"),
    "shaped_exact_match": ("<answer>The Eiffel Tower.</answer>", "<answer>Big Ben</answer>", "eiffel tower"),
}


@pytest.mark.parametrize("where", ["top", "metadata", "both"])
@pytest.mark.parametrize("name", list(CASES))
def test_builtin_follows_the_contract_with_the_reference_in_either_place(name, where):
    right, wrong, ref = CASES[name]
    reward = load_reward(name)
    batch = [sample("right", right, ref, where=where), sample("wrong", wrong, ref, where=where)]
    raw = reward.module.lambda_handler(json.loads(json.dumps(batch)), None)
    assert isinstance(raw, list)
    json.dumps(raw, allow_nan=False)  # what Lambda would send back
    results = validate_output(batch, raw)
    assert [r.id for r in results] == ["right", "wrong"]
    assert results[0].aggregate_reward_score == 1.0
    assert results[1].aggregate_reward_score == 0.0
    assert any(m.type == "Reward" for m in results[0].metrics_list)


@pytest.mark.parametrize("name", list(CASES))
def test_builtin_scores_bad_samples_zero_without_failing_the_batch(name):
    right, _, ref = CASES[name]
    handler = load_reward(name).module.lambda_handler
    batch = [
        sample("ok", right, ref),
        {"id": "no-reply", "messages": [{"role": "user", "content": PROMPT}], "reference_answer": ref},
        {"id": "no-ref", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": right}]},
        {"id": "odd-ref", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": right}],
         "reference_answer": {"unexpected": 1}},
        "not a sample",
    ]
    results = handler(batch, None)
    assert len(results) == 5
    assert results[0]["aggregate_reward_score"] == 1.0
    for r in results[1:]:
        assert r["aggregate_reward_score"] == 0.0
        assert any(m["name"].startswith("error_") and m["value"] == 1.0 for m in r["metrics_list"]), r


@pytest.mark.parametrize("name", ["numeric", "exact_match", "code_tests", "shaping", "llm_judge"])
def test_builtin_accepts_a_single_sample_object_and_rejects_a_non_list_event(name):
    handler = load_reward(name).module.lambda_handler
    if name != "llm_judge":
        right, _, ref = CASES[name]
        [result] = handler(sample("one", right, ref), None)
        assert result["id"] == "one" and result["aggregate_reward_score"] == 1.0
    with pytest.raises(TypeError, match="JSON list of samples"):
        handler("[]", None)


def test_builtins_import_with_the_standard_library_only():
    """Each file deploys unchanged as a Lambda: it must import with no site-packages at all."""
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "for name in ('numeric', 'exact_match', 'code_tests', 'shaping', 'llm_judge'):\n"
            "    __import__(name)\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(builtin_dir())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------------ numeric


@pytest.mark.parametrize(("completion", "ref", "correct"), [
    ("57-33=24 #### 24", "24", True),
    ("#### 24.0", 24, True),
    ("The answer is 24.", "24", True),
    ("<answer>$1,234.50</answer>", "1234.5", True),
    ("<answer>1234.50</answer>", "$1,234.50", True),
    ("So the total is \\boxed{1,234}", 1234, True),
    ("\\boxed{\\frac{1}{4}}", "0.25", True),
    ("Growth was 12.5%. #### 12.5%", "0.125", True),
    ("#### 12.5", "12.5%", True),
    ("#### 0.125", {"answer": 12.5, "unit": "percent"}, True),
    ("#### -3.5", "-3.5", True),
    ("#### \u22123.5", "-3.5", True),
    ("The change was a decrease. #### (1,234)", "-1234", True),
    ("#### 3.5", "-3.5", False),
    ("#### 1.2e3", "1200", True),
    ("<think>maybe #### 7</think> final #### 8", "8", True),
    ("<think>#### 8</think> so #### 7", "8", False),
    ("#### 24.1", "24", True),                   # 0.4% off: inside the default relative tolerance of 0.5%
    ("#### 24.5", "24", False),
    ("#### 33.14", {"answer": 33.1}, True),
    ("no number here", "24", False),
    ("57 minus 33 is 24", "24", True),          # no marker: last number
    ("#### yes", "Yes", True),                  # a non-numeric reference is compared as text
    ("#### no", "yes", False),
    ("in 2019-2020 revenue rose", "2020", True),  # a hyphen between numbers is not a minus sign
])
def test_numeric_answer_parsing(completion, ref, correct):
    [result] = load_reward("numeric").module.lambda_handler([sample("s", completion, ref)], None)
    assert result["aggregate_reward_score"] == (1.0 if correct else 0.0), (completion, ref)


def test_numeric_tolerance_from_metadata_reference_object_and_environment(monkeypatch):
    handler = load_reward("numeric").module.lambda_handler
    batch = [
        sample("default", "#### 101", "100"),
        sample("meta", "#### 101", "100", rel_tol=0.02),
        sample("abs", "#### 100.4", "100", rel_tol=0, abs_tol=0.5),
        sample("refobj", "#### 101", {"answer": 100, "rel_tol": 0.05}),
    ]
    assert scores(handler(batch, None)) == {"default": 0.0, "meta": 1.0, "abs": 1.0, "refobj": 1.0}
    monkeypatch.setenv("NUMERIC_REL_TOL", "0.02")
    assert scores(handler(batch[:1], None)) == {"default": 1.0}


def test_numeric_require_marker_and_metrics(monkeypatch):
    handler = load_reward("numeric").module.lambda_handler
    [bare] = handler([sample("bare", "it is 24", "24")], None)
    assert bare["aggregate_reward_score"] == 1.0
    assert metrics(bare)["answer_marker"] == (0.0, "Metric")
    assert metrics(bare)["correctness"] == (1.0, "Reward")
    monkeypatch.setenv("NUMERIC_REQUIRE_MARKER", "true")
    [strict] = handler([sample("bare", "it is 24", "24")], None)
    assert strict["aggregate_reward_score"] == 0.0
    [unparsed] = handler([sample("none", "no idea", "24")], None)
    assert metrics(unparsed)["answer_parsed"] == (0.0, "Metric")


# ------------------------------------------------------------------------------------------------ exact match


@pytest.mark.parametrize(("completion", "ref", "expected"), [
    ("<answer>  the  Eiffel-Tower! </answer>", "Eiffel Tower", 1.0),
    ("Final answer: PARIS", "paris", 1.0),
    ("#### An apple", "apple", 1.0),
    ("<answer>Rome</answer>", ["Paris", "Rome"], 1.0),
    ("<answer>City of Light</answer>", {"answer": "Paris", "aliases": ["City of Light"]}, 1.0),
    ("<answer>-5</answer>", "5", 0.0),                    # a minus sign is not punctuation to drop
    ("<answer>Paris, France</answer>", "Paris", 0.0),
    ("Paris", "Paris", 1.0),                              # no marker: the whole reply
    ("\\boxed{42}", 42, 1.0),
])
def test_exact_match_normalisation(completion, ref, expected):
    [result] = load_reward("exact_match").module.lambda_handler([sample("s", completion, ref)], None)
    assert result["aggregate_reward_score"] == expected


def test_exact_match_strict_mode_and_token_f1(monkeypatch):
    handler = load_reward("exact_match").module.lambda_handler
    [loose] = handler([sample("s", "<answer>the eiffel tower</answer>", "Eiffel Tower")], None)
    assert loose["aggregate_reward_score"] == 1.0 and metrics(loose)["exact_match"][0] == 0.0
    [strict] = handler([sample("s", "<answer>the eiffel tower</answer>", "Eiffel Tower", match_mode="exact")],
                       None)
    assert strict["aggregate_reward_score"] == 0.0
    monkeypatch.setenv("EXACT_MATCH_MODE", "exact")
    [env] = handler([sample("s", "<answer>Eiffel Tower</answer>", "Eiffel Tower")], None)
    assert env["aggregate_reward_score"] == 1.0
    [partial] = handler([sample("s", "<answer>eiffel</answer>", "Eiffel Tower")], None)
    assert metrics(partial)["token_f1"][0] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ shaping


def test_shaping_penalises_format_language_and_length():
    handler = load_reward("shaped_numeric").module.lambda_handler
    results = {r["id"]: r for r in handler([
        sample("clean", "57-33=24 #### 24", "24"),
        sample("no-marker", "57-33=24, so 24", "24"),
        sample("open-answer", "<answer>24", "24"),
        sample("switch", "变化是五十七减三十三 #### 24", "24"),
        sample("long", "x" * 5000 + " #### 24", "24"),
        sample("wrong-and-sloppy", "it went up by 23", "24"),
    ], None)}
    m = {k: metrics(v) for k, v in results.items()}
    assert results["clean"]["aggregate_reward_score"] == 1.0
    assert m["clean"]["inner_reward"] == (1.0, "Reward")
    for name in ("format_penalty", "language_penalty", "length_penalty"):
        assert m["clean"][name] == (0.0, "Metric")
    assert m["clean"]["correctness"] == (1.0, "Metric")  # the inner reward's metrics, passed on
    assert results["no-marker"]["aggregate_reward_score"] == 0.5 and m["no-marker"]["format_penalty"][0] == 0.5
    assert m["open-answer"]["format_penalty"][0] == 0.5
    assert m["switch"]["language_penalty"][0] == 0.5 and m["switch"]["foreign_script_share"][0] > 0.9
    assert results["long"]["aggregate_reward_score"] == 0.75
    assert results["wrong-and-sloppy"]["aggregate_reward_score"] == -0.5


def test_shaping_language_follows_the_prompt_and_settings_come_from_metadata_or_env(monkeypatch):
    handler = load_reward("shaping").module.lambda_handler
    chinese = {"id": "zh", "messages": [{"role": "user", "content": "收入从33增加到57，变化是多少？"},
                                        {"role": "assistant", "content": "变化是 #### 24"}], "reference_answer": "24"}
    [zh] = handler([chinese], None)
    assert metrics(zh)["language_penalty"][0] == 0.0  # the prompt is Chinese: a Chinese reply is no switch
    [band] = handler([sample("band", "#### 24", "24", min_chars=20, length_penalty=0.3)], None)
    assert band["aggregate_reward_score"] == pytest.approx(0.7)
    monkeypatch.setenv("SHAPING_FORMAT_PENALTY", "0.2")
    monkeypatch.setenv("SHAPING_INNER_REWARD", "exact_match")
    [r] = handler([sample("em", "Eiffel Tower", "eiffel tower")], None)
    assert r["aggregate_reward_score"] == pytest.approx(0.8)
    assert "normalized_match" in metrics(r)


def test_shaping_fails_loudly_on_a_misconfigured_inner_reward(monkeypatch):
    handler = load_reward("shaping").module.lambda_handler
    monkeypatch.setenv("SHAPING_INNER_REWARD", "no_such_reward")
    with pytest.raises(ValueError, match="no_such_reward"):
        handler([sample("s", "#### 24", "24")], None)
    monkeypatch.setenv("SHAPING_INNER_REWARD", "numeric")
    [bad, good] = handler([sample("s", "#### 24", "24", inner_reward="../etc"), sample("t", "#### 24", "24")], None)
    assert bad["aggregate_reward_score"] == 0.0 and metrics(bad)["error_inner_reward"][0] == 1.0
    assert good["aggregate_reward_score"] == 1.0


# ------------------------------------------------------------------------------------------------ LLM judge


@pytest.fixture
def judge(monkeypatch):
    """The llm_judge module with a real bedrock-runtime client (fake credentials) under botocore's Stubber."""
    import boto3
    from botocore.stub import Stubber

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "JUDGE_MODEL_ID": "judge-model", "JUDGE_CONCURRENCY": "1", "JUDGE_BACKOFF_S": "0.01"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    module = load_reward("llm_judge").module
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    module.CLIENT = client
    sent: list[dict] = []
    client.meta.events.register("provide-client-params.bedrock-runtime.Converse",
                                lambda params, **_: sent.append(params))
    with Stubber(client) as stubber:
        yield module, stubber, sent
        stubber.assert_no_pending_responses()


def verdict(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15}, "metrics": {"latencyMs": 12}}


@pytest.mark.parametrize("where", ["top", "metadata"])
def test_llm_judge_follows_the_contract_and_shows_the_judge_the_reference(judge, where):
    module, stubber, sent = judge
    stubber.add_response("converse", verdict("Correct and clear.\nScore: 8"))
    stubber.add_response("converse", verdict("Wrong final answer.\nScore: 2/10"))
    batch = [sample("a", "57-33=24 #### 24", "24", where=where, rubric="Check the arithmetic."),
             sample("b", "#### 23", "24", where=where)]
    results = validate_output(batch, module.lambda_handler(batch, None))
    assert [(r.id, r.aggregate_reward_score) for r in results] == [("a", 0.8), ("b", 0.2)]
    assert results[0].metrics_list[0].name == "judge_score" and results[0].metrics_list[0].type == "Reward"
    assert sent[0]["modelId"] == "judge-model"
    prompt = sent[0]["messages"][0]["content"][0]["text"]
    assert "<reference_answer>\n24\n</reference_answer>" in prompt and "#### 24" in prompt and PROMPT in prompt
    assert "Check the arithmetic." in sent[0]["system"][0]["text"]
    assert "Check the arithmetic." not in sent[1]["system"][0]["text"]


def test_llm_judge_retries_throttling_then_succeeds(judge):
    module, stubber, sent = judge
    stubber.add_client_error("converse", service_error_code="ThrottlingException",
                             service_message="Too many requests", http_status_code=429)
    stubber.add_client_error("converse", service_error_code="ServiceUnavailableException", http_status_code=503)
    stubber.add_response("converse", verdict('{"score": 9}'))
    [result] = module.lambda_handler([sample("a", "#### 24", "24")], None)
    assert result["aggregate_reward_score"] == pytest.approx(0.9)
    assert metrics(result)["judge_attempts"] == (3.0, "Metric")
    assert len(sent) == 3


def test_llm_judge_scores_one_failed_call_zero_and_raises_when_every_call_fails(judge, monkeypatch):
    module, stubber, _ = judge
    monkeypatch.setenv("JUDGE_MAX_RETRIES", "1")
    stubber.add_client_error("converse", service_error_code="ValidationException", http_status_code=400)
    stubber.add_response("converse", verdict("no verdict at all"))
    stubber.add_response("converse", verdict("Score: 10"))
    results = module.lambda_handler([sample("bad", "#### 24", "24"), sample("unparsed", "#### 24", "24"),
                                     sample("good", "#### 24", "24")], None)
    m = {r["id"]: metrics(r) for r in results}
    assert scores(results) == {"bad": 0.0, "unparsed": 0.0, "good": 1.0}
    assert m["bad"]["judge_error"][0] == 1.0 and m["unparsed"]["judge_unparsed"][0] == 1.0
    stubber.add_client_error("converse", service_error_code="AccessDeniedException", http_status_code=403)
    stubber.add_client_error("converse", service_error_code="ThrottlingException", http_status_code=429)
    stubber.add_client_error("converse", service_error_code="ThrottlingException", http_status_code=429)
    with pytest.raises(RuntimeError, match="every judge call in the batch failed"):
        module.lambda_handler([sample("x", "#### 24", "24"), sample("y", "#### 24", "24")], None)


@pytest.mark.parametrize(("text", "expected"), [
    ("Score: 7", 0.7), ("**Score:** 8/10", 0.8), ("The score is 0.7/1", 0.7), ('{"score": 9}', 0.9),
    ("Score: 0.6", 0.6), ("I give it 6 out of 10", 0.6), ("Score: 11", None), ("no number", None),
    ("scores 3 of 5 criteria... Score: 2", 0.2),
])
def test_llm_judge_score_parsing(text, expected):
    parse = load_reward("llm_judge").module.parse_score
    assert parse(text, 10) == (pytest.approx(expected) if expected is not None else None)


def test_llm_judge_builds_its_client_from_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("JUDGE_REGION", "eu-west-1")
    module = load_reward("llm_judge").module
    client = module.client()
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.service_model.service_name == "bedrock-runtime"
    assert module.client() is client


def test_shaped_builtin_names_fix_the_inner_reward_over_the_environment(monkeypatch):
    monkeypatch.setenv("SHAPING_INNER_REWARD", "numeric")
    [r] = load_reward("shaped_exact_match").module.lambda_handler([sample("s", "Final answer: Paris", "paris")],
                                                                 None)
    assert r["aggregate_reward_score"] == 1.0 and "normalized_match" in metrics(r)
