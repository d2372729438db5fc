"""`rftflow lambda deploy|verify`: put a reward handler on AWS Lambda and check it before paying for a job.

`add_arguments(parser)` fills an argparse (sub)parser; `run(args)` executes and returns the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

ROLE_ENV = "RFTFLOW_LAMBDA_ROLE_ARN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands `deploy` and `verify` under the caller's `lambda` parser."""
    sub = parser.add_subparsers(dest="lambda_command", required=True, metavar="{deploy,verify}")

    deploy = sub.add_parser("deploy", help="create or update the reward Lambda from a handler file; prints its ARN")
    deploy.add_argument("reward", help="built-in reward name (numeric, exact_match, code_tests, shaping, llm_judge) "
                                       "or a path to a handler .py with lambda_handler(event, context)")
    deploy.add_argument("--role-arn", default=os.environ.get(ROLE_ENV),
                        help=f"execution role of the function (default: ${ROLE_ENV})")
    deploy.add_argument("--name", help="function name (default SageMaker-rftflow-<reward>; must start with SageMaker-)")
    deploy.add_argument("--memory", type=int, default=512, help="memory in MB (default 512)")
    deploy.add_argument("--timeout", type=int, default=300, help="timeout in seconds, 300-900 (default 300)")
    deploy.add_argument("--architecture", choices=("x86_64", "arm64"), default="x86_64")
    deploy.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the handler (repeatable), e.g. SHAPING_INNER_REWARD=exact_match")
    deploy.add_argument("--include", action="append", default=[], metavar="MODULE",
                        help="extra sibling module to package (repeatable), e.g. the inner reward of shaping")
    deploy.add_argument("--response", choices=("list", "http"), default="list",
                        help="list: return the results list (Nova, Bedrock); http: wrap it as {statusCode, body}, "
                             "as SageMaker serverless customization of open-weight models expects (function name "
                             "gets -http)")
    deploy.add_argument("--dry-run", action="store_true", help="build and check the package and request only")
    _aws_options(deploy)

    verify = sub.add_parser("verify", help="invoke the reward with sample rollouts and check its output contract")
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("function", nargs="?", help="deployed function name or ARN")
    target.add_argument("--local", metavar="REWARD", help="run this handler in-process instead (no AWS)")
    verify.add_argument("--data", default="include/data/tiny/train.jsonl",
                        help="RFT JSONL whose first rows become sample rollouts")
    verify.add_argument("-n", type=int, default=8, help="records to use (two rollouts each; default 8)")
    _aws_options(verify)


def _aws_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: the connection's, else AWS_DEFAULT_REGION)")
    parser.add_argument("--aws-conn-id", default="aws_default",
                        help="Airflow AWS connection to use when it exists (default aws_default; 'none' skips it)")


def _clients(args: argparse.Namespace) -> Any:
    from rftflow.backends.aws.clients import AwsClients

    conn = None if str(args.aws_conn_id).lower() == "none" else args.aws_conn_id
    return AwsClients(aws_conn_id=conn, region_name=args.region)


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env: expected KEY=VALUE; got {pair!r}")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    try:
        if args.lambda_command == "deploy":
            return _deploy(args)
        return _verify(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _deploy(args: argparse.Namespace) -> int:
    from rftflow.backends.aws import lambda_deploy

    if not args.role_arn:
        raise ValueError(f"--role-arn is required (or set {ROLE_ENV}); see docs/aws.md for the Lambda role")
    settings = lambda_deploy.LambdaSettings(role_arn=args.role_arn, memory_mb=args.memory, timeout_s=args.timeout,
                                            architecture=args.architecture, environment=_env(args.env),
                                            response=args.response)
    if args.dry_run:
        pkg = lambda_deploy.package(args.reward, args.include, args.response)
        name = lambda_deploy.function_name(args.reward, args.name, args.response)
        settings = settings.model_copy(update={"environment": {**pkg.environment, **settings.environment}})
        lambda_deploy.create_request(name, pkg.zip_bytes, pkg.module, settings)
        print(f"{name}: {len(pkg.zip_bytes)} bytes ({', '.join(pkg.files)}); handler {pkg.module}.lambda_handler; "
              f"environment {settings.environment or '{}'}; CodeSha256 {pkg.code_sha256}")
        return 0
    client = _clients(args).client("lambda")
    result = lambda_deploy.deploy(client, args.reward, settings, name=args.name, extra=args.include)
    print(f"{result.action} {result.function_name} ({', '.join(result.files)})", file=sys.stderr)
    print(result.arn)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rftflow.backends.aws import lambda_deploy
    from rftflow.data.dataset import read_records

    records = read_records(args.data, kind="rft")
    configuration = None
    if args.local:
        invoker: Any = lambda_deploy.InProcessInvoker(args.local)
        label = f"{args.local} (in-process)"
    else:
        client = _clients(args).client("lambda")
        invoker = lambda_deploy.LambdaInvoker(client, args.function)
        configuration = client.get_function_configuration(FunctionName=args.function)
        label = args.function
    report = lambda_deploy.verify(invoker, records, args.n, configuration=configuration)
    print(f"{label}: output contract OK on {len(report.rows)} samples")
    print(report.table())
    return 1 if report.warnings else 0
