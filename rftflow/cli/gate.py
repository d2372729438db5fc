"""`rftflow gate`: re-run the gate's decision from stored eval results, with other settings if asked.

"What would the gate say with margin X?" without rerunning a cycle: give the baseline's and the
candidate's eval (a stage folder, its manifest.json, or a rows.jsonl), optionally the champion's and the
RFT training metrics; the RFT stage, the SFT checkpoint's eval and the measured drift are found beside the
candidate's stage folder when it sits in a cycle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rftflow.artifacts import store


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("baseline", help="baseline eval: stage folder, manifest.json or rows.jsonl (path or URI)")
    ap.add_argument("candidate", help="candidate eval: stage folder, manifest.json or rows.jsonl")
    ap.add_argument("--champion", help="champion eval (same forms); default: the one the baseline stage recorded")
    ap.add_argument("--metrics", help="RFT training metrics.jsonl; default: the rft stage beside the candidate")
    ap.add_argument("--metric", choices=["pass_at_1", "mean_reward"], default=None,
                    help="metric to judge (default: the stored decision's, else pass_at_1)")
    ap.add_argument("--margin", type=float, help="the lower confidence bound of the gain must exceed this")
    ap.add_argument("--confidence", type=float, help="one-sided confidence (default 0.95)")
    ap.add_argument("--min-abs-gain", type=float, help="extra bar on the point estimate (default 0.02)")
    ap.add_argument("--protect", action="append", metavar="FIELD=VALUE", help="a slice that must not drop")
    ap.add_argument("--guards", help="any other gate settings as JSON, e.g. '{\"kl_max\": 0.5}'")
    ap.add_argument("--look", type=int, help="which decision on this eval set this is (default: the stored one, "
                                            "else 1)")
    ap.add_argument("--cycle", type=int, default=None, help="cycle number (default: the stored one, else 1)")
    ap.add_argument("--max-cycles", type=int, default=None, help="max cycles (default: the stored one, else 1)")
    ap.add_argument("--json", action="store_true", help="print the decision as JSON instead of the table")


def _uri(text: str) -> str:
    if "://" in text:
        return text
    return Path(text).resolve().as_uri()


def load_eval(text: str, label: str) -> tuple[Any, str | None, Any]:
    """(EvalEvidence, the stage folder URI or None, the stage manifest or None) from any of the three forms."""
    from rftflow.artifacts.manifest import read_manifest
    from rftflow.cycle.stages.gate import stage_evidence
    from rftflow.scoring.evaluation import summarize
    from rftflow.scoring.gate import EvalEvidence

    uri = _uri(text)
    if uri.endswith(".jsonl"):
        rows = store.read_jsonl(uri)
        fields = sorted({k for r in rows for k, v in (r.get("metadata") or {}).items()
                         if not isinstance(v, dict | list)})
        return EvalEvidence(summarize(rows, fields), rows, label), None, None
    manifest_uri = uri if uri.endswith("manifest.json") else store.join(uri, "manifest.json")
    if not store.exists(manifest_uri):
        raise ValueError(f"{text}: expected an eval stage folder, its manifest.json or a rows.jsonl; "
                         f"found no {manifest_uri}")
    manifest = read_manifest(manifest_uri)
    return stage_evidence(manifest, label), manifest_uri.rsplit("/", 1)[0], manifest


def _sibling(stage_uri: str | None, stage: str) -> Any:
    from rftflow.artifacts.manifest import load_complete

    if stage_uri is None:
        return None
    return load_complete(store.join(stage_uri.rsplit("/", 1)[0], stage))


def run(args: argparse.Namespace) -> int:
    from rftflow.cycle.stages.baseline_eval import CHAMPION
    from rftflow.cycle.stages.baseline_eval import STAGE as BASELINE
    from rftflow.cycle.stages.checkpoint_eval import DRIFT, RFT_START_EVAL
    from rftflow.cycle.stages.gate import champion_evidence, eval_rows, stage_evidence
    from rftflow.scoring.gate import GateConfig, decide

    try:
        baseline, base_stage, base_manifest = load_eval(args.baseline, "baseline")
        candidate, cand_stage, _ = load_eval(args.candidate, "candidate")
        champion = None
        if args.champion:
            champion = load_eval(args.champion, "champion")[0]
        elif base_manifest is not None:  # the champion's eval beside a baseline_eval folder, as the gate read it
            beside = _sibling(base_stage, CHAMPION) if base_manifest.stage == BASELINE else None
            champion = champion_evidence(beside, base_manifest)
        stored = _sibling(cand_stage, "gate")
        stored_decision = (stored.decision or {}) if stored else {}
        if args.metrics:
            train_rows = store.read_jsonl(_uri(args.metrics))
        else:
            rft = _sibling(cand_stage, "rft")
            train_rows = eval_rows(rft.outputs.get("metrics_uri") if rft else None) or []
        rft_start = stage_evidence(_sibling(cand_stage, RFT_START_EVAL), "SFT checkpoint")
        drift = _sibling(cand_stage, DRIFT)
        settings: dict[str, Any] = json.loads(args.guards) if args.guards else {}
        for key, value in (("metric", args.metric or stored_decision.get("metric")), ("margin", args.margin),
                           ("confidence", args.confidence), ("min_abs_gain", args.min_abs_gain),
                           ("protected_slices", args.protect)):
            if value is not None:
                settings[key] = value
        cfg = GateConfig(**settings)
    except (ValueError, OSError) as err:
        print(f"rftflow gate: {err}")
        return 2
    result = decide(baseline, candidate, champion, train_rows, cfg,
                    cycle=args.cycle or stored_decision.get("cycle") or 1,
                    max_cycles=args.max_cycles or stored_decision.get("max_cycles") or 1,
                    rft_start=rft_start, look=args.look or stored_decision.get("look") or 1,
                    drift=drift.metrics if drift else None)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.table())
        if stored_decision.get("decision") and stored_decision.get("decision") != result.decision:
            print(f"(the stored decision of this cycle was {stored_decision['decision'].upper()})")
    return 0
