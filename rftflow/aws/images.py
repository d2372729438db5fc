"""Nova training and evaluation container images per region (SageMaker Training Jobs).

Accounts from aws/sagemaker-hyperpod-recipes `nova_regional_parameters.json`; Nova 2 recipes are documented
for us-east-1 and us-west-2. A job's `job.image_uri` override wins over this table.
"""

from __future__ import annotations

# region -> the AWS account that publishes the Nova images there
NOVA_IMAGE_ACCOUNTS: dict[str, str] = {
    "us-east-1": "708977205387",
    "us-west-2": "176779409107",
    "eu-west-2": "470633809225",
    "ap-northeast-1": "878185805882",
}

# Regions the Nova 2 SageMaker Training Job recipes are documented for.
DOCUMENTED_REGIONS = ("us-east-1", "us-west-2")

# stage kind -> repository:tag (Nova 2 on SageMaker Training Jobs)
NOVA_IMAGES: dict[str, str] = {
    "sft": "nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
    "rft": "nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
    "eval": "nova-evaluation-repo:SM-TJ-Eval-V2-latest",
}


def nova_image_uri(kind: str, region: str) -> str:
    """The ECR image URI for a Nova stage (`sft`, `rft` or `eval`) in `region`."""
    if kind not in NOVA_IMAGES:
        raise ValueError(f"image kind: expected one of {', '.join(NOVA_IMAGES)}; got {kind!r}")
    account = NOVA_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise ValueError(
            f"region {region!r}: no Nova image known there; expected one of "
            f"{', '.join(NOVA_IMAGE_ACCOUNTS)} (recipes are documented for {', '.join(DOCUMENTED_REGIONS)}), "
            "or set the override job.image_uri"
        )
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{NOVA_IMAGES[kind]}"
