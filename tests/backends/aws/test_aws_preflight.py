"""validate_data refuses an AWS cycle that would fail later: a recipe-override typo, a missing role ARN, a reward
Lambda that is not deployed. It says which field and why, and nothing is uploaded or submitted."""

from __future__ import annotations

import pytest
from aws_fakes import BEDROCK_ROLE, LAMBDA_ARN, ROLE, aws_env, boto  # noqa: F401  (aws_env is a fixture)

from rftflow.artifacts import store
from rftflow.cycle.context import stage_context
from rftflow.cycle.params import parse_params
from rftflow.cycle.stages.validate_data import validate_data
from rftflow.data.dataset import read_records, write_records

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
def data(tmp_path) -> dict[str, str]:
    out = {}
    for name, n in (("train", 120), ("eval", 20)):
        out[name] = str(tmp_path / f"{name}.jsonl")
        write_records(out[name], read_records(f"include/data/tiny/{name}.jsonl")[:n])
    return out


def _validate(backend: str, data: dict[str, str], root: str, **conf):
    p = parse_params({"backend": backend, "base_model": "nova-2-lite", "fallback_model": "nova-2-lite",
                            "model_family": "preflight", "artifact_root": root, "train_uri": data["train"],
                            "eval_uri": data["eval"], "sft_uri": None, **conf})
    ctx = stage_context(p, "rft_cycle", "manual__2026-12-02T00:00:00+00:00", "validate_data")
    return ctx, lambda: validate_data(p, ctx)


def _nothing_submitted(ctx) -> None:
    assert not store.exists(store.join(ctx.uri, "manifest.json"))
    jobs = boto("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert not [j for j in jobs if "preflight" in j["TrainingJobName"]]


def test_a_sagemaker_recipe_override_typo_fails_validate_data_with_the_field(s3_root, data, monkeypatch):
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RFTFLOW_AWS_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    ctx, run = _validate("sagemaker", data, s3_root,
                         recipe_overrides={"rft": {"training_config": {"trainer": {"max_stepz": 10}}}})
    with pytest.raises(ValueError, match=r"(?s)nothing was submitted.*recipe_overrides\.rft: .*max_stepz"):
        run()
    _nothing_submitted(ctx)


def test_a_missing_role_arn_fails_validate_data_and_says_where_to_set_it(s3_root, data, monkeypatch):
    monkeypatch.setenv("RFTFLOW_AWS_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    ctx, run = _validate("sagemaker", data, s3_root)
    with pytest.raises(ValueError, match="rftflow_sagemaker_role_arn"):
        run()
    _nothing_submitted(ctx)


def test_a_reward_lambda_that_is_not_deployed_fails_validate_data(s3_root, data, monkeypatch):
    monkeypatch.setenv("RFTFLOW_BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    ctx, run = _validate("bedrock", data, s3_root)
    with pytest.raises(ValueError, match=r"no Lambda SageMaker-rftflow-numeric in us-east-1; deploy it with "
                                         r"`rftflow lambda deploy numeric`"):
        run()
    assert not store.exists(store.join(ctx.uri, "manifest.json"))


def test_a_bedrock_hyperparameter_out_of_range_fails_validate_data(s3_root, data, monkeypatch):
    monkeypatch.setenv("RFTFLOW_BEDROCK_ROLE_ARN", BEDROCK_ROLE)
    monkeypatch.setenv("RFTFLOW_AWS_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    _, run = _validate("bedrock", data, s3_root, recipe_overrides={"rft": {"learning_rate": 0.5}})
    with pytest.raises(ValueError, match=r"recipe_overrides\.rft: .*learningRate"):
        run()


def test_a_well_configured_aws_cycle_passes_validate_data(s3_root, data, monkeypatch):
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_ROLE_ARN", ROLE)
    monkeypatch.setenv("RFTFLOW_AWS_REWARD_LAMBDA_ARN", LAMBDA_ARN)
    ctx, run = _validate("sagemaker", data, s3_root, recipe_overrides={"rft": {"learning_rate": 2e-6}})
    assert run()["ok"] is True
    assert store.exists(store.join(ctx.uri, "manifest.json"))
