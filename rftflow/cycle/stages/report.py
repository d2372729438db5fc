"""report: the cycle's summary, built from the manifests of the stages the graph marks as summarized, published
as cycle.json, report.md/html and the cycle index (rftflow.publish.summary)."""

from __future__ import annotations

import logging
from typing import Any

from rftflow.backends.base import StageContext
from rftflow.cycle.graph import Inputs
from rftflow.cycle.params import CycleParams

log = logging.getLogger(__name__)


def report(p: CycleParams, ctx: StageContext, inputs: Inputs | None = None) -> dict[str, Any]:
    from rftflow.publish.summary import build_summary, publish_summary

    summary = build_summary(p, ctx)
    published = publish_summary(p, ctx, summary)
    log.info("cycle report: %s", published["report_md_uri"])
    return {"outcome": summary["outcome"], "outcome_reason": summary["outcome_reason"], **published}
