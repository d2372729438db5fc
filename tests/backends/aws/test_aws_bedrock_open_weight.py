"""Bedrock reinforcement fine-tuning of open-weight models (openai.gpt-oss-20b, qwen.qwen3-32b) through the
OpenAI-compatible API: the real OpenAI SDK against a local endpoint that accepts only the documented requests
(tests/mantle_fake.py), the real reward handlers, the real trigger."""

from __future__ import annotations

import asyncio
import json

import pytest
from mantle_fake import MantleFake

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete
from rftflow.backends.aws import bedrock_openai as ow
from rftflow.backends.base import PendingJob, StageContext, get_backend
from rftflow.data.dataset import read_records, write_records

LAMBDA_ARN = "arn:aws:lambda:us-west-2:123456789012:function:SageMaker-rftflow-numeric"
ROLE = "arn:aws:iam::123456789012:role/rftflow-bedrock-customization"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    out = {}
    for name, n in (("train", 120), ("eval", 20)):
        out[name] = str(folder / f"{name}.jsonl")
        write_records(out[name], read_records(f"include/data/tiny/{name}.jsonl")[:n])
    out["small"] = str(folder / "small.jsonl")
    write_records(out["small"], read_records("include/data/tiny/train.jsonl")[:40])
    return out


@pytest.fixture(scope="module")
def mantle(data):
    answers = {r.messages[-1]["content"]: str(r.reference_answer)
               for split in ("train", "eval") for r in read_records(data[split])}
    fake = MantleFake(answers)
    yield fake
    fake.close()


@pytest.fixture
def backend(mantle, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return get_backend("bedrock", aws_conn_id="none", region_name="us-west-2", role_arn=ROLE,
                       reward_lambda_arn=LAMBDA_ARN, openai_base_url=mantle.url, api_key="bedrock-api-key-test",
                       converse_concurrency=4)


def ctx_for(root, stage: str) -> StageContext:
    return StageContext(str(root), "rft_cycle", "manual__2026-12-02T00:00:00+00:00", 1, stage)


async def _first_event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_rft_uploads_the_prompts_creates_one_documented_job_and_a_retry_reattaches(backend, mantle, data, tmp_path):
    ctx = ctx_for(tmp_path, "rft")
    pending = backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {"epochs": 2})
    assert isinstance(pending, PendingJob) and pending.kind == "bedrock_open_weight_rft"
    job = mantle.jobs[pending.job_name]
    assert job["model"] == "openai.gpt-oss-20b" and job["status"] == "validating_files"
    assert job["method"]["reinforcement"]["grader"] == {"type": "lambda", "lambda": {"function": LAMBDA_ARN}}
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0}
    rows = [json.loads(x) for x in mantle.contents[job["training_file"]].decode().splitlines()]
    assert len(rows) == 120 and rows[0]["reference_answer"] == "64" and rows[0]["category"] == "carry"
    assert rows[0]["messages"] == [{"role": "user", "content": rows[0]["messages"][0]["content"]}]

    again = backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {"epochs": 2})
    assert again.job_name == pending.job_name and again.details["created"] is False
    assert again.details["training_file_uploaded"] is False
    assert len([j for j in mantle.jobs.values() if j["training_file"] == job["training_file"]]) == 1
    assert "Bearer bedrock-api-key-test" in mantle.auth


def test_the_trigger_fires_when_the_job_succeeds_and_completion_records_model_cost_and_curve(
        backend, mantle, data, tmp_path):
    ctx = ctx_for(tmp_path, "rft")
    pending = backend.rft(ctx, "qwen3-32b", data["train"], "numeric", {})
    trigger = backend.trigger_for(pending)
    classpath, kwargs = trigger.serialize()  # what the triggerer stores: no key in it
    assert classpath == "rftflow.orchestration.open_weight_trigger.OpenWeightJobTrigger"
    assert "api_key" not in json.dumps(kwargs) and kwargs["options"]["openai_base_url"] == mantle.url
    mantle.finish(pending.job_name)
    from rftflow.orchestration.open_weight_trigger import OpenWeightJobTrigger

    event = asyncio.run(_first_event(OpenWeightJobTrigger(**{**kwargs, "poll_s": 0.01})))
    assert event == {"status": "success", "job_name": pending.job_name}

    manifest = backend.complete(ctx, None, event)  # dag.test resumes with the event only: pending.json is read
    model = mantle.jobs[pending.job_name]["fine_tuned_model"]
    assert manifest.checkpoint_uri == f"bedrock-openai://us-west-2/{model}"
    assert manifest.metrics["trained_tokens"] == 2_000_000
    assert manifest.metrics["estimated_cost_usd"] == pytest.approx(2.0 * 8.00)  # qwen3-32b placeholder rate
    assert manifest.jobs[0]["price_unit"] == "USD per million tokens trained"
    curve = store.read_jsonl(manifest.outputs["metrics_uri"])
    assert [r.get("train_reward_mean") for r in curve if "train_reward_mean" in r] == [0.2, 0.5, 0.7]
    assert load_complete(ctx.uri).checkpoint_uri == manifest.checkpoint_uri


def test_a_failed_job_fails_the_stage_with_the_service_message(backend, mantle, data, tmp_path):
    ctx = ctx_for(tmp_path, "rft")
    pending = backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {"batch_size": 8})
    mantle.finish(pending.job_name, status="failed")
    event = ow.wait_event(backend.open_weight_client, pending.job_name, deadline=1e12)
    assert event["status"] == "failed" and "grader Lambda returned no score" in event["message"]
    with pytest.raises(RuntimeError, match="grader Lambda returned no score"):
        backend.complete(ctx, pending, event)


def test_stop_cancels_a_running_job(backend, mantle, data, tmp_path):
    ctx = ctx_for(tmp_path, "rft")
    pending = backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {"batch_size": 16})
    backend.stop(pending)
    assert mantle.jobs[pending.job_name]["status"] == "cancelled"
    event = ow.wait_event(backend.open_weight_client, pending.job_name, deadline=1e12)
    assert event["status"] == "failed" and "cancelled" in event["message"]


def test_evaluate_base_and_fine_tuned_models_through_chat_completions(backend, mantle, data, tmp_path):
    base = backend.evaluate(ctx_for(tmp_path / "a", "baseline_eval"), "openai.gpt-oss-20b", data["eval"], "numeric")
    assert base.metrics["pass_at_1"] == 0.0 and base.metrics["n"] == 20
    assert base.jobs[0]["kind"] == "chat_completions" and base.jobs[0]["samples"] == 20
    assert base.jobs[0]["estimated_cost_usd"] == pytest.approx((20 * 40 * 0.07 + 20 * 12 * 0.30) / 1e6, abs=1e-4)

    ctx = ctx_for(tmp_path / "b", "rft")
    pending = backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {"batch_size": 2})
    mantle.finish(pending.job_name)
    trained = backend.complete(ctx, pending, {"status": "success", "job_name": pending.job_name})
    tuned = backend.evaluate(ctx_for(tmp_path / "c", "checkpoint_eval"), trained.checkpoint_uri, data["eval"],
                             "numeric")
    assert 0.8 <= tuned.metrics["pass_at_1"] < 1.0
    rows = store.read_jsonl(tuned.outputs["rows_uri"])
    assert rows[0]["completion"].endswith(f"#### {rows[0]['reference_answer']}") or not rows[0]["passed"]


def test_diversity_on_the_base_model_samples_k_completions_and_decides(backend, mantle, data, tmp_path):
    m = backend.diversity(ctx_for(tmp_path, "diversity"), "qwen.qwen3-32b", data["train"], "numeric",
                          {"k": 4, "max_prompts": 24})
    assert m.metrics["n_prompts"] == 24 and m.metrics["k"] == 4 and m.jobs[0]["samples"] == 96
    assert m.decision["decision"] in ("rft", "sft_first", "stop")
    rows = store.read_jsonl(m.outputs["rows_uri"])
    assert all(len(r["completions"]) == 4 for r in rows)


def test_what_bedrock_does_not_offer_fails_before_any_upload(backend, mantle, data, tmp_path):
    files_before = len(mantle.files)
    with pytest.raises(ValueError, match="reinforcement fine-tuning only"):
        backend.sft(ctx_for(tmp_path, "sft"), "gpt-oss-20b", data["train"])
    with pytest.raises(ValueError, match="40 prompts; Bedrock open-weight RFT takes 100 to 20,000"):
        backend.rft(ctx_for(tmp_path, "rft"), "gpt-oss-20b", data["small"], "numeric")
    with pytest.raises(ValueError, match="continuing RFT from a fine-tuned open-weight model"):
        backend.rft(ctx_for(tmp_path, "rft"), "bedrock-openai://us-west-2/openai.gpt-oss-20b:ft:x", data["train"],
                    "numeric")
    east = get_backend("bedrock", aws_conn_id="none", region_name="us-east-1", reward_lambda_arn=LAMBDA_ARN,
                       openai_base_url=mantle.url, api_key="k")
    with pytest.raises(ValueError, match="available in us-west-2, not us-east-1"):
        east.rft(ctx_for(tmp_path, "rft"), "gpt-oss-20b", data["train"], "numeric")
    with pytest.raises(Exception, match="hyper_parameters.n_epochs"):
        backend.rft(ctx_for(tmp_path, "rft"), "gpt-oss-20b", data["train"], "numeric", {"epochs": 0})
    assert len(mantle.files) == files_before


def test_the_request_check_refuses_what_the_docs_do_not_describe():
    good = ow.job_request("openai.gpt-oss-20b", "file-1", LAMBDA_ARN, {"n_epochs": 1, "batch_size": 4})
    assert ow.job_request_problems(good) == []
    assert any("suffix is not supported" in p for p in ow.job_request_problems({**good, "suffix": "x"}))
    bad = json.loads(json.dumps(good))
    bad["method"]["reinforcement"]["hyperparameters"] = {"n_epochs": "1", "epochs": 2}
    bad["method"]["reinforcement"]["grader"] = {"type": "model", "model": {}}
    problems = " | ".join(ow.job_request_problems(bad))
    assert "n_epochs: a number" in problems and "epochs: unknown" in problems and "must be 'lambda'" in problems


def test_without_an_api_key_a_short_term_key_is_signed_from_the_aws_credentials(mantle, data, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("RFTFLOW_BEDROCK_API_KEY", raising=False)
    monkeypatch.delenv("RFTFLOW_AWS_API_KEY", raising=False)
    b = get_backend("bedrock", aws_conn_id="none", region_name="us-west-2", openai_base_url=mantle.url)
    b.open_weight_client().openai.files.list(purpose="fine-tune")
    tokens = [a for a in mantle.auth if a.startswith("Bearer bedrock-api-key-")]
    assert tokens and any(a != "Bearer bedrock-api-key-test" for a in tokens)


def test_validate_data_refuses_a_region_or_an_sft_stage_bedrock_does_not_offer(data, tmp_path):
    from rftflow.data.validation import validate_dataset

    report = validate_dataset(data["train"], data["eval"], backend="bedrock", region="us-east-1",
                              model="gpt-oss-20b", customizations=("RFT",), report_dir_uri=str(tmp_path / "a"),
                              raise_on_failure=False)
    region = next(c for c in report.checks if c.name == "region")
    assert region.status == "fail" and "us-west-2" in " ".join(region.details)
    report = validate_dataset(data["train"], data["eval"], backend="bedrock", region="us-west-2",
                              model="gpt-oss-20b", customizations=("SFT", "RFT"),
                              report_dir_uri=str(tmp_path / "b"), raise_on_failure=False)
    region = next(c for c in report.checks if c.name == "region")
    assert region.status == "fail" and "no SFT path" in " ".join(region.details)
    report = validate_dataset(data["train"], data["eval"], backend="bedrock", region="us-west-2",
                              model="gpt-oss-20b", customizations=("RFT",), report_dir_uri=str(tmp_path / "c"),
                              raise_on_failure=False)
    assert next(c for c in report.checks if c.name == "region").status == "pass"


def test_a_pending_stage_defers_inside_a_task_and_is_waited_for_elsewhere(backend, mantle, data, tmp_path):
    """run_remote: inside deferrable() (an Airflow task) a pending job raises StageDeferred, so the task defers
    on the trigger; outside (the CLI), the backend waits for the same trigger in-process and completes."""
    from rftflow.backends.base import StageDeferred, deferrable, run_remote

    ctx = ctx_for(tmp_path, "rft")
    with deferrable(), pytest.raises(StageDeferred) as waiting:
        run_remote(backend, ctx, lambda: backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {}))
    assert waiting.value.ctx == ctx and waiting.value.pending.kind == "bedrock_open_weight_rft"
    mantle.finish(waiting.value.pending.job_name)
    manifest = run_remote(backend, ctx, lambda: backend.rft(ctx, "gpt-oss-20b", data["train"], "numeric", {}))
    assert manifest.checkpoint_uri.startswith("bedrock-openai://us-west-2/openai.gpt-oss-20b:ft:")
    assert len([j for j in mantle.jobs.values() if j["training_file"] == waiting.value.pending.details[
        "training_file"]]) == 1  # the second call re-attached to the job the first one created
