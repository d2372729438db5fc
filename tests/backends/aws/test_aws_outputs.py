"""Job outputs in S3 (moto): the checkpoint pointer inside output.tar.gz, eval results, training metrics from
CloudWatch through the provider's logs hook, and the cost estimate that goes into every AWS manifest."""

from __future__ import annotations

import json

import pytest
from aws_fakes import aws_env, put_metric_logs, tar_gz  # noqa: F401  (aws_env is a fixture)

from rftflow.artifacts import store
from rftflow.backends.aws import pricing, sagemaker_jobs
from rftflow.backends.aws.sagemaker_jobs import JobOutputError

JOB = "rft-cycle-rft-c1-0123456789-1"


def put(root: str, relative: str, data: bytes | str) -> None:
    store.write_bytes(store.join(root, JOB, relative), data.encode() if isinstance(data, str) else data)


def test_checkpoint_pointer_is_followed_through_the_archive(s3_root):
    put(s3_root, "output/output.tar.gz", tar_gz({"./output/manifest.json": json.dumps(
        {"checkpoint_s3_bucket": "s3://customer-escrow-1/job/step_4", "other": 1})}))
    checkpoint, where = sagemaker_jobs.follow_checkpoint(s3_root, JOB)
    assert checkpoint == "s3://customer-escrow-1/job/step_4" and where.endswith("output.tar.gz!output/manifest.json")


def test_serverless_jobs_leave_the_pointer_uncompressed(s3_root):
    put(s3_root, "output/output/manifest.json", json.dumps({"checkpoint_s3_bucket": "s3://escrow/serverless/final"}))
    assert sagemaker_jobs.follow_checkpoint(s3_root, JOB)[0] == "s3://escrow/serverless/final"


@pytest.mark.parametrize(("files", "message"), [
    ({}, "no checkpoint manifest found; looked at"),
    ({"manifest.json": "{not json"}, "not valid JSON"),
    ({"manifest.json": json.dumps({"checkpoint_s3_bucket": "/local/path"})}, "expected 'checkpoint_s3_bucket' to be"),
])
def test_bad_or_missing_pointers_say_what_is_wrong(s3_root, files, message):
    if files:
        put(s3_root, "output/output.tar.gz", tar_gz(files))
    with pytest.raises(JobOutputError, match=message):
        sagemaker_jobs.follow_checkpoint(s3_root, JOB)


def test_eval_results_and_inference_rows_are_read_from_the_archive(s3_root):
    put(s3_root, "output/output.tar.gz", tar_gz({
        "eval-result/results_2026-11-24T09-00-00.json": json.dumps({"results": {"all": {"em": 0.1}}}),
        "eval-result/results_2026-11-25T09-00-00.json": json.dumps({"results": {"custom|gen_qa_gen_qa|0": {
            "em": 0.4, "em_stderr": 0.02, "f1": 0.5, "label": "x"}}}),
        "eval-result/inference_output.jsonl": '{"prompt": "q", "inference": "a", "gold": "a", "metadata": "{}"}\n',
        "eval-result/details/model/x.parquet": b"PAR1",
    }))
    out = sagemaker_jobs.read_eval_output(s3_root, JOB)
    assert out.results == {"custom|gen_qa_gen_qa|0": {"em": 0.4, "em_stderr": 0.02, "f1": 0.5}}  # the newest file
    assert out.inference_rows == [{"prompt": "q", "inference": "a", "gold": "a", "metadata": "{}"}]
    assert sagemaker_jobs.summarize_results(out.results) == {"aws_results": {"em": 0.4, "f1": 0.5}}


def test_eval_output_without_results_is_an_error(s3_root):
    put(s3_root, "output/output.tar.gz", tar_gz({"logs.txt": "nothing"}))
    with pytest.raises(JobOutputError, match="no results_\\*.json, inference_output.jsonl or per-sample scores"):
        sagemaker_jobs.read_eval_output(s3_root, JOB)
    with pytest.raises(JobOutputError, match="expected an object with a 'results' mapping"):
        sagemaker_jobs.parse_results([1, 2], "results_x.json")


@pytest.mark.parametrize(("line", "step", "metrics"), [
    ("step:7 - critic/rewards/mean:0.625 - actor/pg_loss:-0.01 - perf/throughput:1.2e3",
     7, {"critic/rewards/mean": 0.625, "actor/pg_loss": -0.01, "perf/throughput": 1200.0}),
    ("INFO {'training/global_step': 3, 'val-score/rewards/mean@1': 0.5}",
     3, {"training/global_step": 3.0, "val-score/rewards/mean@1": 0.5}),
    ('{"step": 12, "response_length/mean": 211.5, "actor/entropy": np.float32(0.9)}',
     12, {"response_length/mean": 211.5, "actor/entropy": 0.9}),
    ("[rank0] step=4 critic/score/mean=1 actor/kl_loss=nan", 4, {"critic/score/mean": 1.0}),
    ("Downloading checkpoint shard 3/8", None, {}),
])
def test_verl_metric_lines_are_parsed(line, step, metrics):
    got_step, got = sagemaker_jobs.parse_metric_line(line)
    assert got_step == step
    assert {k: v for k, v in got.items() if v == v} == metrics  # drop NaN


@pytest.mark.usefixtures("aws_env")
def test_training_metrics_come_from_the_jobs_log_streams(s3_root):
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    put_metric_logs(JOB, ["step:1 - critic/rewards/mean:0.1", "no metric here", "step:1 - actor/entropy:2.0",
                          "critic/rewards/mean:0.3"])
    rows = sagemaker_jobs.read_training_metrics(SageMakerHook(aws_conn_id=None), JOB)
    assert rows == [{"step": 1, "critic/rewards/mean": 0.1, "actor/entropy": 2.0},
                    {"step": 2, "critic/rewards/mean": 0.3}]
    assert sagemaker_jobs.read_training_metrics(SageMakerHook(aws_conn_id=None), "no-such-job") == []


def test_costs_from_billable_seconds_and_an_overridable_price_table(tmp_path):
    cost = pricing.training_job_cost("ml.p5.48xlarge", 4, 3600)
    assert cost["estimated_cost_usd"] == pytest.approx(4 * 55.04) and cost["instance_seconds"] == 4 * 3600
    assert pricing.training_job_cost("ml.unknown", 1, 60)["estimated_cost_usd"] is None
    table_file = tmp_path / "prices.yaml"
    table_file.write_text("sagemaker_training_instance_hour:\n  ml.p5.48xlarge: 40.0\n")
    table = pricing.load_price_table(str(table_file))
    assert pricing.training_job_cost("ml.p5.48xlarge", 2, 1800, table)["estimated_cost_usd"] == pytest.approx(40.0)
    assert table["sagemaker_training_instance_hour"]["ml.p4d.24xlarge"] == 37.69  # the rest stays
    assert "overridden by" in table["source"]
    assert pricing.inference_cost("us.amazon.nova-2-lite-v1:0", 1_000_000, 100_000)["estimated_cost_usd"] == \
        pytest.approx(0.30 + 0.25)
    assert pricing.total_cost([{"estimated_cost_usd": 1.5}, {"estimated_cost_usd": None}, {}]) == 1.5
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="price table must be a mapping"):
        pricing.load_price_table(str(bad))


def test_other_jsonl_files_in_the_eval_output_are_not_mistaken_for_scores():
    out = sagemaker_jobs.parse_eval_members({
        "eval-result/results_2026-11-25T10-00-00.json": b'{"results": {"all": {"lambda_reward_score": 0.5}}}',
        "logs/trace.jsonl": b"not json at all\n",
        "eval-result/other.jsonl": b'{"step": 1, "loss": 0.3}\n',
        "eval-result/scores.jsonl": b'{"id": "a", "aggregate_reward_score": 1, "metrics_list": '
                                    b'[{"name": "acc", "value": 1, "type": "Metric"}]}\n'}, "s3://b/o")
    assert out.sample_scores == [{"id": "a", "aggregate_reward_score": 1.0, "metrics": {"acc": 1.0}}]
    with pytest.raises(JobOutputError, match="aggregate_reward_score: expected a number"):
        sagemaker_jobs.parse_eval_members({"s.jsonl": b'{"id": "a", "aggregate_reward_score": "high"}\n'}, "s3://b/o")
