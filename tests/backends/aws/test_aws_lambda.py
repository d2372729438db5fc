"""Reward Lambda deployment: the zip holds the handler and its siblings, create/update requests fit the Lambda
model (botocore Stubber), and `verify` checks the reward contract through the same path the services use."""

from __future__ import annotations

import argparse
import io
import json
import zipfile

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from rftflow.backends.aws import lambda_deploy
from rftflow.cli import aws as cli
from rftflow.data.dataset import read_records
from rftflow.rewards.contract import RewardContractError

ROLE = "arn:aws:iam::123456789012:role/rftflow-reward-lambda"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:SageMaker-rftflow-numeric"
SETTINGS = lambda_deploy.LambdaSettings(role_arn=ROLE)


def lambda_client():
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def configuration(sha: str, **extra) -> dict:
    return {"FunctionName": "SageMaker-rftflow-numeric", "FunctionArn": ARN, "Runtime": "python3.12", "Role": ROLE,
            "Handler": "numeric.lambda_handler", "Timeout": 300, "MemorySize": 512, "CodeSha256": sha,
            "State": "Active", "LastUpdateStatus": "Successful", **extra}


def names_in(package: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(package)).namelist()


def test_zip_holds_the_handler_and_the_siblings_it_uses():
    numeric = lambda_deploy.build_zip(lambda_deploy.handler_path("numeric"))
    assert names_in(numeric) == ["numeric.py"]
    path, extra, env = lambda_deploy.handler_spec("shaped_exact_match")
    shaped = lambda_deploy.build_zip(path, extra)
    assert set(names_in(shaped)) >= {"shaping.py", "exact_match.py"}
    assert env == {"SHAPING_INNER_REWARD": "exact_match"}
    assert lambda_deploy.build_zip(lambda_deploy.handler_path("numeric")) == numeric  # byte-for-byte repeatable
    info = zipfile.ZipFile(io.BytesIO(numeric)).getinfo("numeric.py")
    assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_zip_follows_imports_of_a_custom_handler(tmp_path):
    (tmp_path / "helpers.py").write_text("def parse(x):\n    return x\n")
    (tmp_path / "unused.py").write_text("X = 1\n")
    handler = tmp_path / "my_reward.py"
    handler.write_text("import json\nfrom helpers import parse\n\ndef lambda_handler(event, context):\n"
                       "    return [{'id': s['id'], 'aggregate_reward_score': 1.0} for s in event]\n")
    assert names_in(lambda_deploy.build_zip(handler)) == ["helpers.py", "my_reward.py"]


def test_deploy_creates_the_function_when_missing():
    client = lambda_client()
    package = lambda_deploy.build_zip(lambda_deploy.handler_path("numeric"))
    with Stubber(client) as stub:
        stub.add_client_error("get_function", "ResourceNotFoundException", http_status_code=404)
        stub.add_response("create_function", {"FunctionArn": ARN}, {
            "FunctionName": "SageMaker-rftflow-numeric", "Runtime": "python3.12", "Role": ROLE,
            "Handler": "numeric.lambda_handler", "Code": {"ZipFile": package}, "Description": ANY,
            "Timeout": 300, "MemorySize": 512, "Architectures": ["x86_64"], "Tags": {"rftflow:reward": "numeric"}})
        stub.add_response("get_function", {"Configuration": configuration("x")})  # the waiter: Active
        result = lambda_deploy.deploy(client, "numeric", SETTINGS)
        stub.assert_no_pending_responses()
    assert (result.action, result.arn, result.files) == ("created", ARN, ["numeric.py"])


def test_deploy_updates_changed_code_and_leaves_an_unchanged_function_alone():
    client = lambda_client()
    package = lambda_deploy.build_zip(lambda_deploy.handler_path("numeric"))
    sha = lambda_deploy.code_sha256(package)
    with Stubber(client) as stub:
        stub.add_response("get_function", {"Configuration": configuration(sha)})
        assert lambda_deploy.deploy(client, "numeric", SETTINGS).action == "unchanged"
        stub.add_response("get_function", {"Configuration": configuration("old-sha", Timeout=3)})
        stub.add_response("update_function_code", {"FunctionArn": ARN},
                          {"FunctionName": "SageMaker-rftflow-numeric", "ZipFile": package,
                           "Architectures": ["x86_64"]})
        stub.add_response("get_function", {"Configuration": configuration(sha)})  # waiter: updated
        stub.add_response("update_function_configuration", {"FunctionArn": ARN}, {
            "FunctionName": "SageMaker-rftflow-numeric", "Role": ROLE, "Handler": "numeric.lambda_handler",
            "Runtime": "python3.12", "Timeout": 300, "MemorySize": 512, "Environment": {"Variables": {}}})
        stub.add_response("get_function", {"Configuration": configuration(sha)})
        assert lambda_deploy.deploy(client, "numeric", SETTINGS).action == "updated"
        stub.assert_no_pending_responses()


def test_verify_runs_the_contract_check_in_process():
    records = read_records("include/data/tiny/train.jsonl")[:4]
    report = lambda_deploy.verify(lambda_deploy.InProcessInvoker("numeric"), records, n=4)
    assert report.mean_reference == 1.0 and report.mean_nonanswer == 0.0 and not report.warnings
    assert len(report.rows) == 8 and "correctness" in report.rows[0]["metrics"]
    assert "mean score: reference 1.000" in report.table()


def test_verify_rejects_the_wrapped_output_some_samples_return(tmp_path):
    handler = tmp_path / "wrapped.py"
    handler.write_text("import json\n\ndef lambda_handler(event, context):\n"
                       "    return {'statusCode': 200, 'body': json.dumps([{'id': s['id'], "
                       "'aggregate_reward_score': 1.0} for s in event])}\n")
    records = read_records("include/data/tiny/train.jsonl")[:2]
    with pytest.raises(RewardContractError):
        lambda_deploy.verify(lambda_deploy.InProcessInvoker(str(handler)), records)


def test_lambda_invoker_sends_a_json_list_and_surfaces_function_errors():
    client = lambda_client()
    samples = [{"id": "a", "messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}],
                "reference_answer": "2", "metadata": {"reference_answer": "2"}}]
    payload = json.dumps(samples).encode()
    good = json.dumps([{"id": "a", "aggregate_reward_score": 1.0}]).encode()
    with Stubber(client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(good), len(good))},
                          {"FunctionName": ARN, "InvocationType": "RequestResponse", "Payload": payload})
        results = lambda_deploy.invoke_reward(lambda_deploy.LambdaInvoker(client, ARN), samples)
        assert results[0].aggregate_reward_score == 1.0
        bad = b'{"errorMessage": "boom"}'
        stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                     "Payload": StreamingBody(io.BytesIO(bad), len(bad))})
        with pytest.raises(RuntimeError, match="raised \\(Unhandled\\): .*boom"):
            lambda_deploy.invoke_reward(lambda_deploy.LambdaInvoker(client, ARN), samples)


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rftflow lambda")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_dry_run_verify_and_missing_role(capsys, monkeypatch):
    monkeypatch.delenv(cli.ROLE_ENV, raising=False)
    assert cli.run(cli_args("deploy", "shaped_numeric", "--role-arn", ROLE, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.startswith("SageMaker-rftflow-shaped-numeric:") and "numeric.py, shaping.py" in out
    assert cli.run(cli_args("verify", "--local", "numeric", "-n", "3")) == 0
    assert "output contract OK on 6 samples" in capsys.readouterr().out
    assert cli.run(cli_args("deploy", "numeric")) == 2
    assert "--role-arn is required" in capsys.readouterr().err

