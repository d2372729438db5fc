"""Nova training and evaluation container images per region (SageMaker Training Jobs).

The table below is an excerpt, values unchanged, of aws/sagemaker-hyperpod-recipes
`launcher/recipe_templatization/nova/nova_regional_parameters.json` (commit 263199555b2e): the `sm_jobs` prod
container images of the Nova 2 Lite recipes our SageMaker recipes follow. It lists them for us-east-1,
us-west-2 and ap-northeast-1 only; eu-west-2 has init-container and hosting images there, not these, so it
is not a training region. A job's `job.image_uri` override wins over this table (and skips the region check).
"""

from __future__ import annotations

# recipe in the recipes repo -> region -> image URI (sm_jobs.container_image.prod)
NOVA_REGIONAL_IMAGES: dict[str, dict[str, str]] = {
    "nova_lite_2_0_p5_gpu_lora_sft": {
        "us-east-1": "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
        "us-west-2": "176779409107.dkr.ecr.us-west-2.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
        "ap-northeast-1": "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
    },
    "nova_lite_2_0_p5_gpu_sft": {
        "us-east-1": "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
        "us-west-2": "176779409107.dkr.ecr.us-west-2.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
        "ap-northeast-1": "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-SFT-V2-latest",
    },
    "nova_lite_v2_smtj_p5_p5en_gpu_lora_rft": {
        "us-east-1": "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
        "us-west-2": "176779409107.dkr.ecr.us-west-2.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
        "ap-northeast-1": "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
    },
    "nova_lite_v2_smtj_p5_p5en_gpu_rft": {
        "us-east-1": "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
        "us-west-2": "176779409107.dkr.ecr.us-west-2.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
        "ap-northeast-1": "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-fine-tune-repo:SM-TJ-RFT-V2-latest",
    },
    # The rft_eval recipe has no entry of its own in that file; it runs on the same evaluation image as the
    # bring-your-own-dataset (gen_qa) recipe (AWS's rft_eval notebook uses nova-evaluation-repo:SM-TJ-Eval-V2-latest).
    "nova_lite_2_0_p5_48xl_gpu_bring_your_own_dataset_eval": {
        "us-east-1": "708977205387.dkr.ecr.us-east-1.amazonaws.com/nova-evaluation-repo:SM-TJ-Eval-V2-latest",
        "us-west-2": "176779409107.dkr.ecr.us-west-2.amazonaws.com/nova-evaluation-repo:SM-TJ-Eval-V2-latest",
        "ap-northeast-1": "878185805882.dkr.ecr.ap-northeast-1.amazonaws.com/nova-evaluation-repo:SM-TJ-Eval-V2-latest",
    },
}

# stage kind -> the recipes of that kind in the table (every one must have the region)
_KIND_RECIPES: dict[str, tuple[str, ...]] = {
    "sft": ("nova_lite_2_0_p5_gpu_lora_sft", "nova_lite_2_0_p5_gpu_sft"),
    "rft": ("nova_lite_v2_smtj_p5_p5en_gpu_lora_rft", "nova_lite_v2_smtj_p5_p5en_gpu_rft"),
    "eval": ("nova_lite_2_0_p5_48xl_gpu_bring_your_own_dataset_eval",),
}


def regions_for(kind: str) -> tuple[str, ...]:
    """Regions where every Nova 2 Lite Training Job image of a stage kind (`sft`, `rft`, `eval`) is published."""
    if kind not in _KIND_RECIPES:
        raise ValueError(f"image kind: expected one of {', '.join(_KIND_RECIPES)}; got {kind!r}")
    sets = [set(NOVA_REGIONAL_IMAGES[r]) for r in _KIND_RECIPES[kind]]
    return tuple(sorted(set.intersection(*sets)))


# Regions where the whole SageMaker Training Job cycle (SFT, RFT and eval images) can run.
TRAINING_JOB_REGIONS: tuple[str, ...] = tuple(
    sorted(set.intersection(*(set(regions_for(k)) for k in _KIND_RECIPES))))


def nova_image_uri(kind: str, region: str) -> str:
    """The ECR image URI for a Nova stage (`sft`, `rft` or `eval`) in `region`; a clear error elsewhere."""
    supported = regions_for(kind)
    if region not in supported:
        raise ValueError(
            f"region {region!r}: the Nova 2 Lite {kind} image for SageMaker Training Jobs is published only in "
            f"{', '.join(supported)} (nova_regional_parameters.json); run there, or set the override job.image_uri"
        )
    return NOVA_REGIONAL_IMAGES[_KIND_RECIPES[kind][0]][region]
