"""Estimated cost of AWS stages from billable seconds or tokens and a price table (ours, or yours).

The shipped prices are public on-demand list prices in us-east-1 as we read them: estimates, not a bill.
Override any entry with a YAML/JSON file (backend option `price_table_uri` or env RFTFLOW_PRICE_TABLE).
"""

from __future__ import annotations

import json
import os
from typing import Any

PRICE_TABLE_ENV = "RFTFLOW_PRICE_TABLE"

DEFAULT_PRICES: dict[str, Any] = {
    "currency": "USD",
    "source": "rftflow default table: on-demand list prices, us-east-1, estimates",
    # USD per instance-hour, SageMaker Training Jobs
    "sagemaker_training_instance_hour": {
        "ml.p5.48xlarge": 55.04,
        "ml.p5e.48xlarge": 60.00,
        "ml.p5en.48xlarge": 63.30,
        "ml.p4d.24xlarge": 37.69,
        "ml.p4de.24xlarge": 47.11,
        "ml.g5.48xlarge": 20.36,
    },
    # USD per million billable tokens, SageMaker serverless model customization (placeholder estimate)
    "sagemaker_serverless_million_tokens": {"default": 8.00},
    # USD per hour of job time, Bedrock model customization (RFT is billed on training time; estimate)
    "bedrock_customization_hour": {"REINFORCEMENT_FINE_TUNING": 100.00},
    # USD per million tokens trained, Bedrock fine-tuning (tokens in the data x epochs), and open-weight RFT
    # (the job's trained_tokens). The open-weight rates are placeholders: no list price was published in the
    # sources we read; put yours in the override file.
    "bedrock_customization_million_tokens": {"FINE_TUNING": 2.00, "openai.gpt-oss-20b": 5.00,
                                             "qwen.qwen3-32b": 8.00},
    # USD per million tokens, Bedrock on-demand inference (base and custom models)
    "bedrock_inference_million_tokens": {
        "amazon.nova-2-lite": {"input": 0.30, "output": 2.50},
        "openai.gpt-oss-20b": {"input": 0.07, "output": 0.30},
        "qwen.qwen3-32b": {"input": 0.15, "output": 0.60},
    },
}


def load_price_table(uri: str | None = None) -> dict[str, Any]:
    """The default table with the override file at `uri` (or $RFTFLOW_PRICE_TABLE) merged on top."""
    uri = uri or os.environ.get(PRICE_TABLE_ENV) or None
    if not uri:
        return DEFAULT_PRICES
    from rftflow.artifacts import store

    text = store.read_text(uri)
    try:
        if uri.endswith((".yaml", ".yml")):
            import yaml

            override = yaml.safe_load(text) or {}
        else:
            override = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{uri}: price table is not valid YAML/JSON: {exc}") from None
    if not isinstance(override, dict):
        raise ValueError(f"{uri}: price table must be a mapping; got {type(override).__name__}")
    merged = _merge(DEFAULT_PRICES, override)
    merged["source"] = f"{DEFAULT_PRICES['source']}, overridden by {uri}"
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested merge; keys are taken literally (instance types contain dots)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _lookup(table: dict[str, Any], section: str, key: str) -> Any:
    entries = table.get(section, {})
    if key in entries:
        return entries[key]
    for prefix, value in entries.items():  # "amazon.nova-2-lite" covers "us.amazon.nova-2-lite-v1:0"
        if prefix in key:
            return value
    return entries.get("default")


def training_job_cost(instance_type: str, instance_count: int, billable_seconds: float,
                      table: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cost record for a SageMaker training job: billable_seconds is per instance, as DescribeTrainingJob reports."""
    table = table or DEFAULT_PRICES
    rate = _lookup(table, "sagemaker_training_instance_hour", instance_type)
    instance_seconds = float(billable_seconds) * int(instance_count)
    return _record(billable_seconds, rate, instance_seconds / 3600.0 * rate if rate is not None else None,
                   table, unit="instance-hour", instance_seconds=instance_seconds)


def serverless_job_cost(billable_tokens: int, billable_seconds: float,
                        table: dict[str, Any] | None = None) -> dict[str, Any]:
    table = table or DEFAULT_PRICES
    rate = _lookup(table, "sagemaker_serverless_million_tokens", "default")
    cost = billable_tokens / 1e6 * rate if rate is not None and billable_tokens else None
    return _record(billable_seconds, rate, cost, table, unit="million tokens", billable_tokens=billable_tokens)


def bedrock_job_cost(customization_type: str, job_seconds: float, trained_tokens: int = 0,
                     table: dict[str, Any] | None = None) -> dict[str, Any]:
    table = table or DEFAULT_PRICES
    hourly = _lookup(table, "bedrock_customization_hour", customization_type)
    if hourly is not None:
        return _record(job_seconds, hourly, job_seconds / 3600.0 * hourly, table, unit="job-hour")
    per_token = _lookup(table, "bedrock_customization_million_tokens", customization_type)
    cost = trained_tokens / 1e6 * per_token if per_token is not None and trained_tokens else None
    return _record(job_seconds, per_token, cost, table, unit="million tokens trained",
                   trained_tokens=trained_tokens)


def inference_cost(model_id: str, input_tokens: int, output_tokens: int,
                   table: dict[str, Any] | None = None) -> dict[str, Any]:
    table = table or DEFAULT_PRICES
    rates = _lookup(table, "bedrock_inference_million_tokens", model_id) or {}
    cost = None
    if rates:
        cost = input_tokens / 1e6 * rates.get("input", 0.0) + output_tokens / 1e6 * rates.get("output", 0.0)
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "price": rates or None,
            "price_unit": "USD per million tokens", "estimated_cost_usd": _round(cost),
            "price_source": table.get("source")}


def _record(billable_seconds: float, rate: Any, cost: float | None, table: dict[str, Any], *, unit: str,
            **extra: Any) -> dict[str, Any]:
    return {"billable_seconds": round(float(billable_seconds), 3), **extra, "price": rate,
            "price_unit": f"USD per {unit}", "estimated_cost_usd": _round(cost),
            "price_source": table.get("source")}


def _round(cost: float | None) -> float | None:
    return None if cost is None else round(cost, 4)


def total_cost(jobs: list[dict[str, Any]]) -> float:
    """Sum of `estimated_cost_usd` over manifest job records (unknown prices count as 0)."""
    return round(sum(float(j.get("estimated_cost_usd") or 0.0) for j in jobs), 4)
