"""Backend options: given in code, else the environment (the backend's own prefix before the shared one), else
Airflow Variables; one resolver for the AWS and Ray backends."""

from __future__ import annotations

import pytest

from rftflow.backends.aws.backend import resolve_options
from rftflow.backends.ray.backend import resolve_ray_options


def test_code_wins_then_the_backends_own_prefix_then_the_shared_one(monkeypatch):
    monkeypatch.setenv("RFTFLOW_AWS_REGION_NAME", "eu-west-1")
    monkeypatch.setenv("RFTFLOW_AWS_WAITER_DELAY_S", "30")
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_WAITER_DELAY_S", "90")
    monkeypatch.setenv("RFTFLOW_AWS_AWS_CONN_ID", "None")
    sagemaker = resolve_options("sagemaker", {"region_name": "us-east-1"})
    assert (sagemaker.region_name, sagemaker.waiter_delay_s, sagemaker.aws_conn_id) == ("us-east-1", 90, None)
    assert resolve_options("bedrock", {}).waiter_delay_s == 30  # no bedrock-specific value: the shared one


def test_structured_options_come_from_json_in_the_environment(monkeypatch):
    monkeypatch.setenv("RFTFLOW_RAY_RUNTIME_ENV", '{"pip": ["trl==1.16.0"]}')
    monkeypatch.setenv("RFTFLOW_RAY_JOB_ENV", '["HF_TOKEN"]')
    monkeypatch.setenv("RFTFLOW_RAY_ADDRESS", "http://head:8265")
    options = resolve_ray_options({"conn_id": "none"})
    assert options.runtime_env == {"pip": ["trl==1.16.0"]} and options.job_env == ["HF_TOKEN"]
    assert options.address == "http://head:8265"


@pytest.mark.parametrize(("resolve", "what"), [(lambda given: resolve_options("bedrock", given), "bedrock backend"),
                                               (resolve_ray_options, "ray backend")])
def test_an_unknown_option_names_the_options_there_are(resolve, what):
    with pytest.raises(ValueError, match=rf"{what}: unknown option\(s\) \['adress'\]; expected .*address"
                       if what == "ray backend" else rf"{what}: unknown option\(s\) \['adress'\]; expected .*role_arn"):
        resolve({"adress": "x"})
