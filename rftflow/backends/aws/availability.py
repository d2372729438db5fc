"""Where each AWS path can run: one table of model -> backend -> flavour -> regions -> customizations, each
row with its source, and the check `validate_data` runs so an unsupported region fails before any upload.

Sources (read 2026-12-01; docs/aws.md shows the same table):

- SageMaker Training Jobs (Nova 2 Lite SFT, RFT, eval): the images in rftflow.backends.aws.images, an excerpt of
  aws/sagemaker-hyperpod-recipes `nova_regional_parameters.json` (us-east-1, us-west-2, ap-northeast-1).
- SageMaker serverless customization: SageMaker Python SDK v3 `sagemaker.train.common_utils.finetune_utils`
  (`NOVA_REGIONS = ['us-east-1', 'us-west-2']`, `OPEN_WEIGHTS_REGIONS = ['us-east-1', 'us-west-2',
  'ap-northeast-1', 'eu-west-1']`, enforced by `_validate_model_region_availability`). The recipes repo's
  `serverless_sku` entries also name ap-southeast-2, eu-central-1 and eu-west-1 for Nova SFT; the SDK refuses
  those regions, so we follow the SDK (the narrower list).
- Bedrock FINE_TUNING: user guide "Supported models and Regions for fine-tuning" (custom-model-supported):
  amazon.nova-2-lite-v1:0:256k in us-east-1.
- Bedrock REINFORCEMENT_FINE_TUNING: user guide's RFT model table: amazon.nova-2-lite-v1:0:256k in us-east-1;
  openai.gpt-oss-20b and qwen.qwen3-32b in us-west-2 (open-weight RFT, through the OpenAI-compatible API).
"""

from __future__ import annotations

from dataclasses import dataclass

from rftflow.backends.aws import images

SDK_V3_NOVA_REGIONS = ("us-east-1", "us-west-2")
SDK_V3_OPEN_WEIGHT_REGIONS = ("us-east-1", "us-west-2", "ap-northeast-1", "eu-west-1")


@dataclass(frozen=True)
class Availability:
    """One row of the table: where `model` can be customized on `backend`/`flavour`, and how."""

    model: str
    backend: str
    flavour: str
    regions: tuple[str, ...]
    customizations: tuple[str, ...]  # SFT, RFT, eval (and DPO, RLAIF where listed)
    methods: tuple[str, ...]         # lora, full; "service-managed" where the API has no such choice (Bedrock)
    source: str
    supported_here: bool = True      # False: listed for reference, rftflow does not drive it yet


NOVA_2_LITE = "amazon.nova-2-lite-v1:0:256k"
OPEN_WEIGHT_HUB = "open-weight hub models (Qwen3, Llama, gpt-oss, ...)"

TABLE: tuple[Availability, ...] = (
    Availability(NOVA_2_LITE, "sagemaker", "training_job", images.TRAINING_JOB_REGIONS, ("SFT", "RFT", "eval"),
                 ("lora", "full"), "aws/sagemaker-hyperpod-recipes nova_regional_parameters.json (sm_jobs images)"),
    Availability(NOVA_2_LITE, "sagemaker", "serverless", SDK_V3_NOVA_REGIONS, ("SFT", "RFT"), ("lora", "full"),
                 "SageMaker Python SDK v3 finetune_utils.NOVA_REGIONS"),
    Availability(NOVA_2_LITE, "bedrock", "-", ("us-east-1",), ("SFT",), ("service-managed",),
                 "Bedrock user guide: Supported models and Regions for fine-tuning"),
    Availability(NOVA_2_LITE, "bedrock", "-", ("us-east-1",), ("RFT",), ("service-managed",),
                 "Bedrock user guide: reinforcement fine-tuning supported models"),
    Availability("openai.gpt-oss-20b", "bedrock", "-", ("us-west-2",), ("RFT",), ("service-managed",),
                 "Bedrock user guide: reinforcement fine-tuning supported models (open-weight); OpenAI-compatible "
                 "fine-tuning API (fine-tuning-openai-job-create)"),
    Availability("qwen.qwen3-32b", "bedrock", "-", ("us-west-2",), ("RFT",), ("service-managed",),
                 "Bedrock user guide: reinforcement fine-tuning supported models (open-weight); OpenAI-compatible "
                 "fine-tuning API (fine-tuning-openai-job-create)"),
    Availability(OPEN_WEIGHT_HUB, "sagemaker", "serverless", SDK_V3_OPEN_WEIGHT_REGIONS,
                 ("SFT", "RFT", "eval"), ("lora", "full"),
                 "SageMaker docs model-customize-open-weight (RFT = RLVR; also DPO, RLAIF); SDK v3 "
                 "finetune_utils.OPEN_WEIGHTS_REGIONS; eval: SDK v3 CustomScorerEvaluator (serverless)"),
)


def rows_for(backend: str, model: str = NOVA_2_LITE, flavour: str | None = None) -> list[Availability]:
    flavour = flavour if backend == "sagemaker" else "-"
    return [a for a in TABLE if a.backend == backend and a.model == model and (flavour is None or a.flavour == flavour)]


def region_problems(backend: str, region: str, *, flavour: str = "training_job",
                    customizations: tuple[str, ...] = ("SFT", "RFT"), model: str = NOVA_2_LITE) -> list[str]:
    """Why `region` cannot run this cycle on `backend` (empty when it can); each reason names the regions that can.

    A SageMaker cycle also runs eval jobs on Training Jobs, so the serverless flavour needs a region that has both.
    """
    if backend not in ("sagemaker", "bedrock"):
        return []
    problems: list[str] = []
    if backend == "sagemaker":
        needed = [(flavour, customizations)]
        if flavour == "serverless" and model == OPEN_WEIGHT_HUB:
            needed[0] = (flavour, (*customizations, "eval"))  # open-weight eval jobs are serverless too
        elif flavour == "serverless":
            needed.append(("training_job", ("eval",)))  # eval and the checkpoint diversity check are eval jobs
        else:
            needed[0] = (flavour, (*customizations, "eval"))
    else:
        needed = [("-", customizations)]
    for want_flavour, wanted in needed:
        for customization in wanted:
            rows = [a for a in rows_for(backend, model, want_flavour) if customization in a.customizations]
            if not rows:
                problems.append(f"{backend} ({want_flavour}): {model} has no {customization} path in rftflow's table")
                continue
            regions = sorted({r for a in rows for r in a.regions})
            if region not in regions:
                where = f"{backend} {want_flavour}" if backend == "sagemaker" else backend
                problems.append(f"{customization} of {model} on {where} is available in {', '.join(regions)}, "
                                f"not {region} ({rows[0].source})")
    return problems


def supported_regions(backend: str, *, flavour: str = "training_job",
                      customizations: tuple[str, ...] = ("SFT", "RFT"), model: str = NOVA_2_LITE) -> list[str]:
    """The regions where `region_problems` finds nothing."""
    candidates = sorted({r for a in TABLE for r in a.regions})
    return [r for r in candidates
            if not region_problems(backend, r, flavour=flavour, customizations=customizations, model=model)]


_METHOD_LABELS = {"lora": "LoRA", "full": "full"}


def markdown_table() -> str:
    """The table as docs/aws.md shows it (a test keeps the two identical)."""
    lines = ["| Model | Backend | Flavour | Regions | Customizations | Methods | In rftflow | Source |",
             "|---|---|---|---|---|---|---|---|"]
    for a in TABLE:
        lines.append(f"| `{a.model}` | `{a.backend}` | {a.flavour} | {', '.join(a.regions)} | "
                     f"{', '.join(a.customizations)} | {', '.join(_METHOD_LABELS.get(m, m) for m in a.methods)} | "
                     f"{'yes' if a.supported_here else 'not yet'} | {a.source} |")
    return "\n".join(lines)
