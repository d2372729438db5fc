"""A deferred AWS stage's task log shows its job's progress: status transitions and latest metrics on each
wake-up, while the amazon provider's trigger does the waiting (against the moto server)."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from aws_fakes import ROLE, aws_env, boto  # noqa: F401  (aws_env is a fixture)
from botocore.stub import Stubber

from rftflow.orchestration.aws_watch_trigger import AwsJobWatchTrigger, JobWatcher

pytestmark = pytest.mark.usefixtures("aws_env")
T0 = datetime.datetime(2026, 12, 2, 10, 0)


def _described(status: str, secondary: str, transitions: list[dict], metrics: list[dict] | None = None) -> dict:
    return {"TrainingJobName": "job-1", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1",
            "TrainingJobStatus": status, "SecondaryStatus": secondary, "ModelArtifacts": {"S3ModelArtifacts": ""},
            "AlgorithmSpecification": {"TrainingInputMode": "File"}, "ResourceConfig": {"VolumeSizeInGB": 1},
            "StoppingCondition": {}, "CreationTime": T0, "SecondaryStatusTransitions": transitions,
            "FinalMetricDataList": metrics or []}


def test_each_transition_and_each_change_of_metrics_is_logged_once():
    client = boto("sagemaker")
    starting = {"Status": "Starting", "StartTime": T0, "StatusMessage": "Preparing the instances for training"}
    training = {"Status": "Training", "StartTime": T0 + datetime.timedelta(minutes=5),
                "StatusMessage": "Training image download completed. Training in progress."}
    with Stubber(client) as stub:
        stub.add_response("describe_training_job", _described("InProgress", "Starting", [starting]))
        stub.add_response("describe_training_job", _described("InProgress", "Starting", [starting]))
        stub.add_response("describe_training_job", _described(
            "InProgress", "Training", [starting, training], [{"MetricName": "critic/rewards/mean", "Value": 0.4123,
                                                              "Timestamp": T0}]))
        watcher = JobWatcher("sagemaker", "job-1", "us-east-1", None, client=client)
        first, second, third = watcher.poll(), watcher.poll(), watcher.poll()
    assert first == ["job-1: Starting: Preparing the instances for training", "job-1: InProgress/Starting"]
    assert second == []  # nothing new: nothing logged
    assert third == ["job-1: Training: Training image download completed. Training in progress.",
                     "job-1: InProgress/Training; latest metrics critic/rewards/mean=0.4123"]


def test_bedrock_status_details_and_a_failing_describe_are_said_once():
    watcher = JobWatcher("bedrock", "rft-1", "us-east-1", None)
    job = {"status": "InProgress", "statusDetails": {"validationDetails": {"status": "Completed"},
                                                      "trainingDetails": {"status": "InProgress"}}}
    assert watcher._bedrock(job) == ["rft-1: InProgress (training InProgress, validation Completed)"]
    assert watcher._bedrock(job) == []

    class Broken:
        def get_model_customization_job(self, **_):
            raise ConnectionError("endpoint unreachable")

    flaky = JobWatcher("bedrock", "rft-2", "us-east-1", None, client=Broken())
    assert flaky.poll() == ["rft-2: could not describe the job (endpoint unreachable); still waiting for it"]
    assert flaky.poll() == []


def test_the_watch_wraps_the_providers_trigger_and_fires_its_event(capfd):
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

    sm = boto("sagemaker")
    sm.create_training_job(
        TrainingJobName="watched-1", RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
                                "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://b/o"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1})
    inner = SageMakerTrigger(job_name="watched-1", job_type="training", waiter_delay=1, waiter_max_attempts=5,
                             aws_conn_id=None, region_name="us-east-1")
    trigger = AwsJobWatchTrigger.wrapping(inner, "sagemaker", "watched-1", "us-east-1", None, poll_s=0.2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "rftflow.orchestration.aws_watch_trigger.AwsJobWatchTrigger"
    rebuilt = AwsJobWatchTrigger(**kwargs)  # as the triggerer rebuilds it

    async def first():
        async for event in rebuilt.run():
            return event.payload

    payload = asyncio.run(first())
    assert payload["status"] == "success"
    out = "".join(capfd.readouterr())  # the trigger logs through Airflow's logging, as in the task log
    assert "watched-1: Starting: Preparing the instances for training" in out
    assert "watched-1: " + boto("sagemaker").describe_training_job(TrainingJobName="watched-1")[
        "TrainingJobStatus"] in out
