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
    from rftflow.artifacts import store

    manifest = json.dumps({"checkpoint_s3_bucket": checkpoint})
    if serverless:
        store.write_text(store.join(output_path, job, "output", "output", "manifest.json"), manifest)
    else:
        store.write_bytes(store.join(output_path, job, "output", "output.tar.gz"),
                          tar_gz({"manifest.json": manifest, "logs/train.log": "done\n"}))


def plant_eval_output(output_path: str, job: str, inference_rows: list[dict[str, Any]] | None = None,
                      results: dict[str, Any] | None = None) -> None:
    """What a Nova eval container leaves: results_<ts>.json and, for gen_qa, inference_output.jsonl."""
    from rftflow.artifacts import store

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


def aws_inference(text: str) -> str:
    """`inference` as the Nova eval container writes it: the Python repr of a one-answer list, single quotes
    and escaped newlines (aws-samples/amazon-nova-samples customization/Nova_2.0/04_eval/examples/
    inference_output.jsonl: "['<|begin_of_solution|>The current stock price ...<|end_of_solution|>']")."""
    return repr([f"<|begin_of_solution|>{text}<|end_of_solution|>"])


def gen_qa_answers(staged_gen_qa: str, answer: Any) -> list[dict[str, Any]]:
    """inference_output.jsonl rows for a staged gen_qa.jsonl; `answer(row)` gives the model's text."""
    from rftflow.artifacts import store

    rows = [json.loads(line) for line in store.read_text(staged_gen_qa).splitlines() if line.strip()]
    return [{"prompt": r["query"], "inference": aws_inference(answer(r)), "gold": r["response"],
             "metadata": r["metadata"]} for r in rows]


# --------------------------------------------------------------------------- a fake Nova world for DAG runs

ACCOUNT = "123456789012"


def _answer_for(model: str, reference: str, prompt_id: str, sample: int, temperature: float) -> str:
    """How each fake model answers: the base never, an SFT checkpoint once per prompt when sampling (so its
    rollouts are mixed) and six prompts in ten when greedy, an RFT checkpoint nine prompts in ten."""
    right, wrong = f"The change is {reference}. #### {reference}", "#### -1"
    if "-rft-c" in model:
        return wrong if sum(map(ord, prompt_id)) % 10 == 0 else right
    if "-sft-c" in model:
        if temperature == 0:
            return right if sum(map(ord, prompt_id)) % 10 < 6 else wrong
        return right if sample == 0 else wrong
    return wrong


class FakeNova:
    """Plays the Nova containers inside moto's SageMaker (outputs in S3 and CloudWatch when a job is created),
    and answers Bedrock at the provider hooks: converse, custom-model deployments and job status."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers  # prompt text -> reference answer
        self.models: dict[str, str] = {}  # custom-model / deployment ARN -> the job that made it
        self.deployments: dict[str, dict[str, Any]] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.lock = __import__("threading").Lock()

    # -- SageMaker: what the training and eval containers leave behind
    def container(self, name: str, hyper: dict[str, str], channels: list[dict[str, Any]],
                  output: dict[str, str]) -> None:
        import yaml
        from moto.logs.models import logs_backends
        from moto.s3.models import s3_backends

        s3 = s3_backends[ACCOUNT]["global"]

        def split(uri: str) -> tuple[str, str]:
            bucket, _, key = uri[len("s3://"):].partition("/")
            return bucket, key

        def read(uri: str) -> bytes:
            bucket, key = split(uri)
            return s3.get_object(bucket, key).value

        prefixes = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in channels}
        recipe = yaml.safe_load(read(prefixes["recipe"] + "recipe.yaml")) if "recipe" in prefixes else {}
        model = hyper.get("base_model_location") or hyper.get("base_model", "")
        out_bucket, out_key = split(f"{output['S3OutputPath'].rstrip('/')}/{name}/output/output.tar.gz")
        if recipe.get("evaluation", {}).get("task") == "rft_eval":
            # rft_eval: RFT rows in, one score per sample out (the docs' form: the Lambda's response per line)
            rows = [json.loads(x) for x in read(prefixes["train"] + "rft_eval.jsonl").decode().splitlines() if x]
            scores = []
            for row in rows:
                text = _answer_for(model, str(row["reference_answer"]), row["id"], 0, 0.0)
                right = float(text.endswith(f"#### {row['reference_answer']}"))
                scores.append({"id": row["id"], "aggregate_reward_score": right,
                               "metrics_list": [{"name": "correctness", "value": right, "type": "Metric"}]})
            files = {"eval-result/results_2026-11-25T10-00-00.json": json.dumps({"results": {
                         "custom|rft_eval_rft_eval|0": {"lambda_reward_score": sum(
                             x["aggregate_reward_score"] for x in scores) / max(1, len(scores))}}}),
                     "eval-result/rft_eval_results.jsonl": "".join(json.dumps(x) + "\n" for x in scores)}
        elif "evaluation" in recipe:
            temperature = float(recipe["inference"]["temperature"])
            rows = [json.loads(x) for x in read(prefixes["train"] + "gen_qa.jsonl").decode().splitlines() if x]
            inference = []
            for row in rows:
                meta = json.loads(row["metadata"])
                text = _answer_for(model, row["response"], meta["id"], meta["sample"], temperature)
                inference.append({"prompt": row["query"], "inference": aws_inference(text), "gold": row["response"],
                                  "metadata": row["metadata"]})
            files = {"eval-result/results_2026-11-25T10-00-00.json": json.dumps(
                         {"results": {"custom|gen_qa_gen_qa|0": {"em": 0.0}}}),
                     "eval-result/inference_output.jsonl": "".join(json.dumps(r) + "\n" for r in inference)}
        else:
            files = {"manifest.json": json.dumps({"checkpoint_s3_bucket": f"s3://customer-escrow-{ACCOUNT}/{name}/step_10"})}
            logs = logs_backends[ACCOUNT]["us-east-1"]
            if LOG_GROUP not in logs.groups:
                logs.create_log_group(LOG_GROUP, tags={})
            stream = f"{name}/algo-1-1700000000"
            logs.create_log_stream(LOG_GROUP, stream)
            now = int(time.time() * 1000)
            logs.put_log_events(LOG_GROUP, stream, [
                {"timestamp": now + i, "message": f"step:{i} - critic/rewards/mean:{0.2 * i:.2f} - actor/entropy:1.2 "
                                                  f"- actor/kl_loss:0.001 - response_length/mean:40.0"}
                for i in range(1, 4)])
        s3.put_object(out_bucket, out_key, tar_gz(files))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeNova:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
        from airflow.providers.amazon.aws.hooks.bedrock import BedrockHook, BedrockRuntimeHook
        from moto.sagemaker.models import SageMakerModelBackend

        fake = self
        create = SageMakerModelBackend.create_training_job

        def create_and_run(backend, training_job_name, hyper_parameters, algorithm_specification, role_arn,
                           input_data_config, output_data_config, *args, **kwargs):
            job = create(backend, training_job_name, hyper_parameters, algorithm_specification, role_arn,
                         input_data_config, output_data_config, *args, **kwargs)
            fake.container(training_job_name, hyper_parameters or {}, input_data_config, output_data_config)
            return job

        monkeypatch.setattr(SageMakerModelBackend, "create_training_job", create_and_run)
        real_conn = AwsGenericHook.conn.func
        real_waiter = BedrockHook.get_waiter
        monkeypatch.setattr(BedrockRuntimeHook, "conn", property(lambda hook: FakeRuntime(fake)))
        monkeypatch.setattr(BedrockHook, "conn", property(lambda hook: BedrockControl(fake, real_conn(hook))))

        def get_waiter(hook, waiter_name, *args, **kwargs):
            if waiter_name == "model_customization_job_complete":
                return CompletedWaiter()
            return real_waiter(hook, waiter_name, *args, **kwargs)

        monkeypatch.setattr(BedrockHook, "get_waiter", get_waiter)
        return self


class CompletedWaiter:
    """The Bedrock job-complete waiter, answering that the job completed (moto keeps RFT jobs InProgress)."""

    async def wait(self, **kwargs: Any) -> None:
        return None


def _not_found(operation: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "not found"}}, operation)


class BedrockControl:
    """The Bedrock client behind BedrockHook: moto for jobs, with their status reported Completed and a
    realistic custom-model ARN; custom-model deployments (not in moto) kept here."""

    def __init__(self, fake: FakeNova, real: Any):
        self._fake, self._real = fake, real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_model_customization_job(self, jobIdentifier: str) -> dict[str, Any]:
        import hashlib

        job = self._real.get_model_customization_job(jobIdentifier=jobIdentifier)
        suffix = hashlib.sha256(job["jobName"].encode()).hexdigest()[:12]
        arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-2-lite-v1:0:256k/{suffix}"
        self._fake.models[arn] = job["jobName"]
        return {**job, "status": "Completed", "outputModelArn": arn}

    def create_custom_model_deployment(self, **request: Any) -> dict[str, Any]:
        arn = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model-deployment/{request['modelArn'][-12:]}"
        self._fake.deployments[request["modelDeploymentName"]] = {
            "customModelDeploymentArn": arn, "modelDeploymentName": request["modelDeploymentName"],
            "modelArn": request["modelArn"], "status": "Active"}
        self._fake.models[arn] = self._fake.models.get(request["modelArn"], request["modelArn"])
        return {"customModelDeploymentArn": arn}

    def get_custom_model_deployment(self, customModelDeploymentIdentifier: str) -> dict[str, Any]:
        if customModelDeploymentIdentifier not in self._fake.deployments:
            raise _not_found("GetCustomModelDeployment")
        return self._fake.deployments[customModelDeploymentIdentifier]


class FakeRuntime:
    """Bedrock runtime behind BedrockRuntimeHook: converse answers as the model addressed would."""

    def __init__(self, fake: FakeNova):
        self._fake = fake

    def converse(self, modelId: str, messages: list[dict[str, Any]], inferenceConfig: dict[str, Any],
                 **kwargs: Any) -> dict[str, Any]:
        prompt = messages[-1]["content"][0]["text"]
        model = self._fake.models.get(modelId, modelId)
        with self._fake.lock:
            sample = self._fake.calls.get((model, prompt), 0)
            self._fake.calls[(model, prompt)] = sample + 1
        text = _answer_for(model, self._fake.answers.get(prompt, "?"), prompt, sample, inferenceConfig["temperature"])
        return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
                "usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42}}
