"""Where each AWS path runs: the region table follows AWS's own lists, and an unsupported region fails
validate_data (and a Bedrock submission) with the regions that work, before anything is uploaded."""

from __future__ import annotations

import pytest

from rftflow.backends.aws import availability, images
from rftflow.data.validation import validate_dataset

TRAIN = "include/data/tiny/train.jsonl"


def test_training_job_regions_are_those_of_nova_regional_parameters():
    # aws/sagemaker-hyperpod-recipes launcher/recipe_templatization/nova/nova_regional_parameters.json lists the
    # Nova 2 SMTJ SFT, RFT and eval images in exactly these regions (eu-west-2 only has init/hosting images).
    assert images.TRAINING_JOB_REGIONS == ("ap-northeast-1", "us-east-1", "us-west-2")
    for kind in ("sft", "rft", "eval"):
        assert "eu-west-2" not in images.regions_for(kind)
    assert images.nova_image_uri("rft", "ap-northeast-1") == \
        "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest"
    with pytest.raises(ValueError, match="published only in ap-northeast-1, us-east-1, us-west-2"):
        images.nova_image_uri("sft", "eu-west-2")


def test_region_problems_per_backend_and_flavour():
    assert availability.region_problems("sagemaker", "us-west-2") == []
    assert availability.region_problems("sagemaker", "ap-northeast-1") == []
    # serverless Nova customization: SDK v3's NOVA_REGIONS are us-east-1 and us-west-2 only
    assert any("ap-northeast-1" in p and "serverless" in p
               for p in availability.region_problems("sagemaker", "ap-northeast-1", flavour="serverless"))
    assert availability.supported_regions("sagemaker", flavour="serverless") == ["us-east-1", "us-west-2"]
    # Bedrock customizes Nova 2 Lite (SFT and RFT) in us-east-1 only
    assert availability.supported_regions("bedrock") == ["us-east-1"]
    problems = availability.region_problems("bedrock", "us-west-2", customizations=("RFT",))
    assert problems and "available in us-east-1, not us-west-2" in problems[0]
    assert availability.region_problems("local", "anywhere") == []


@pytest.mark.parametrize("backend, region, ok", [
    ("sagemaker", "eu-west-2", False), ("sagemaker", "us-east-1", True),
    ("bedrock", "us-west-2", False), ("bedrock", "us-east-1", True),
])
def test_validate_data_fails_an_unsupported_region_listing_the_supported_ones(backend, region, ok):
    report = validate_dataset(TRAIN, backend=backend, region=region, write_report=False, raise_on_failure=False)
    check = next(c for c in report.checks if c.name == "region")
    assert (check.status == "pass") is ok and report.ok is ok
    if not ok:
        expected = "ap-northeast-1, us-east-1, us-west-2" if backend == "sagemaker" else "us-east-1"
        assert check.expected == expected
        assert expected in report.summary() and f"not {region}" in report.summary()


def test_the_region_comes_from_the_backend_options_when_not_given(monkeypatch):
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_REGION_NAME", "eu-west-2")
    report = validate_dataset(TRAIN, backend="sagemaker", write_report=False, raise_on_failure=False)
    assert not report.ok and next(c for c in report.checks if c.name == "region").observed == "eu-west-2"
    monkeypatch.setenv("RFTFLOW_AWS_FLAVOUR", "serverless")
    monkeypatch.setenv("RFTFLOW_SAGEMAKER_REGION_NAME", "ap-northeast-1")
    assert not validate_dataset(TRAIN, backend="sagemaker", write_report=False, raise_on_failure=False).ok
    for name in ("RFTFLOW_SAGEMAKER_REGION_NAME", "RFTFLOW_AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    report = validate_dataset(TRAIN, backend="sagemaker", write_report=False, raise_on_failure=False)
    assert not any(c.name == "region" for c in report.checks)  # no region known: nothing to check against
    local = validate_dataset(TRAIN, backend="local", region="eu-west-2", write_report=False)
    assert not any(c.name == "region" for c in local.checks)


def test_bedrock_submission_outside_us_east_1_fails_before_upload(monkeypatch, tmp_path):
    from rftflow.backends.base import StageContext, get_backend

    backend = get_backend("bedrock", role_arn="arn:aws:iam::123456789012:role/r", region_name="us-west-2",
                          reward_lambda_arn="arn:aws:lambda:us-west-2:123456789012:function:SageMaker-x",
                          staging_uri="s3://never-touched/staging", aws_conn_id="none")
    ctx = StageContext(str(tmp_path), "rft_cycle", "manual__1", 1, "rft")
    with pytest.raises(ValueError, match="RFT of amazon.nova-2-lite-v1:0:256k on bedrock is available in us-east-1, "
                                         "not us-west-2"):
        backend.rft(ctx, "nova-2-lite", TRAIN, "numeric")


def test_every_table_row_names_its_source():
    for row in availability.TABLE:
        assert row.source and row.regions and row.customizations and row.methods


def test_docs_show_the_same_table():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[3] / "docs" / "aws.md").read_text()
    assert availability.markdown_table() in docs
