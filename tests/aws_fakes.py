"""Helpers for the AWS tests: point every client at the moto server, and play the part of the Nova containers
(write the outputs a finished job leaves in S3 and CloudWatch), since moto runs no containers.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import pytest

ROLE = "arn:aws:iam::123456789012:role/rftflow-sagemaker-execution"
BEDROCK_ROLE = "arn:aws:iam::123456789012:role/rftflow-bedrock-customization"
LAMBDA_ARN = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rftflow-numeric"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def aws_env(moto_server: str):
    """All AWS clients (provider hooks included, no Airflow connection) talk to the moto server, for the
    test module that asks (the environment is restored after it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_server)
        for name in ("RFTFLOW_SAGEMAKER_ROLE_ARN", "RFTFLOW_BEDROCK_ROLE_ARN", "RFTFLOW_AWS_REWARD_LAMBDA_ARN",
                     "RFTFLOW_AWS_STAGING_URI", "RFTFLOW_PRICE_TABLE"):
            mp.delenv(name, raising=False)
        yield moto_server


def boto(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name="us-east-1")


def tar_gz(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def plant_training_output(output_path: str, job: str, checkpoint: str, *, serverless: bool = False) -> None:
    """What a Nova training container leaves: manifest.json (in output.tar.gz, or plain for serverless)."""
    from rftflow import store

    manifest = json.dumps({"checkpoint_s3_bucket": checkpoint})
    if serverless:
        store.write_text(store.join(output_path, job, "output", "output", "manifest.json"), manifest)
    else:
        store.write_bytes(store.join(output_path, job, "output", "output.tar.gz"),
                          tar_gz({"manifest.json": manifest, "logs/train.log": "done\n"}))


def plant_eval_output(output_path: str, job: str, inference_rows: list[dict[str, Any]] | None = None,
                      results: dict[str, Any] | None = None) -> None:
    """What a Nova eval container leaves: results_<ts>.json and, for gen_qa, inference_output.jsonl."""
    from rftflow import store

    files: dict[str, bytes | str] = {
        "eval-result/results_2026-11-25T10-00-00.json": json.dumps(results or {"results": {
            "custom|gen_qa_gen_qa|0": {"em": 0.5, "em_stderr": 0.1, "f1": 0.6}}}),
    }
    if inference_rows is not None:
        files["eval-result/inference_output.jsonl"] = "".join(json.dumps(r) + "\n" for r in inference_rows)
    store.write_bytes(store.join(output_path, job, "output", "output.tar.gz"), tar_gz(files))


def put_metric_logs(job: str, lines: list[str]) -> None:
    """Training log lines in the job's CloudWatch stream, as SageMaker writes them."""
    logs = boto("logs")
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)])


def gen_qa_answers(staged_gen_qa: str, answer: Any) -> list[dict[str, Any]]:
    """inference_output.jsonl rows for a staged gen_qa.jsonl; `answer(row)` gives the model's text."""
    from rftflow import store

    rows = [json.loads(line) for line in store.read_text(staged_gen_qa).splitlines() if line.strip()]
    return [{"prompt": r["query"], "inference": json.dumps([answer(r)]), "gold": r["response"],
             "metadata": r["metadata"]} for r in rows]
