"""One cycle's summary, built from its stage manifests, and where it is published.

The summary feeds the report, the cycle index the UI lists, MLflow and notifications; it is written
as `cycle.json` beside the report and indexed under `{artifact_root}/index/{model_family}/`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from rftflow.artifacts import store
from rftflow.artifacts.manifest import load_complete
from rftflow.cycle import graph

if TYPE_CHECKING:
    from rftflow.backends.base import StageContext
    from rftflow.cycle.params import CycleParams

log = logging.getLogger(__name__)

SUMMARY_STAGES = graph.SUMMARIZED


def _rows(uri: str | None) -> list[dict[str, Any]]:
    if not uri or not store.exists(uri):
        return []
    return store.read_jsonl(uri)


def _failing(gate: dict[str, Any]) -> str:
    bad = [r for r in gate.get("reasons", []) if r.get("passed") is False]
    chosen = bad or gate.get("reasons", [])[:1]
    return "; ".join(f"{r.get('check')}: {r.get('detail')}" for r in chosen) or "no reason recorded"


def _outcome(p: CycleParams, m: dict[str, Any]) -> tuple[str, str]:
    if m.get("stop"):
        stopped = m["stop"].decision or {}
        if stopped.get("decision") == "stop_sft_insufficient":
            return "stopped", stopped.get("reason", "")
        return "stopped", "nothing to learn: " + stopped.get("reason", "")
    gate = m.get("gate")
    if gate is None:
        return "incomplete", "the cycle ended before the gate (see the failed task's log)"
    decision = gate.decision or {}
    if decision.get("decision") == "promote":
        promoted = m.get("promote")
        if promoted is None:
            if p.require_approval:
                return "not_promoted", "the gate passed but the reviewer did not approve the promotion"
            return "incomplete", "the gate passed but promote did not finish"
        result = promoted.decision or {}
        return ("promoted" if result.get("promoted") else "not_promoted"), result.get("reason", "")
    if decision.get("decision") == "hold":
        promoted = m.get("promote")
        result = (promoted.decision or {}) if promoted else {}
        if result.get("promoted"):
            return "promoted", "approved by a reviewer after the gate held it: " + decision.get("reason", "")
        return "held", ("the gate held the candidate for a person and it was not approved: "
                        + decision.get("reason", ""))
    if decision.get("decision") == "iterate":
        return "iterating", decision.get("reason") or _failing(decision)
    return "rejected", decision.get("reason") or _failing(decision)


def build_summary(p: CycleParams, ctx: StageContext) -> dict[str, Any]:
    """The cycle so far, from the manifests the stage graph gives the report stage (by role), plus one entry per
    summarized stage in the graph's order (done, reused or skipped)."""
    inputs = graph.inputs_of(ctx.for_stage(graph.REPORT))
    m = {role: mf for role in inputs.folders if (mf := inputs.manifest(role)) is not None}
    role_of = {folder: role for role, folder in inputs.folders.items()}

    def manifest_at(stage: str) -> Any:  # each manifest read once: the report's inputs hold those already read
        uri = ctx.for_stage(stage).uri
        return inputs.manifest(role_of[uri]) if uri in role_of else load_complete(uri)

    stages = []
    for name in SUMMARY_STAGES:
        manifest = manifest_at(name)
        if manifest is None:
            if name != "stop":  # a cycle that did not stop is not "skipped" at stop
                stages.append({"stage": name, "status": "skipped"})
            continue
        decision = manifest.decision or {}
        entry = {
            "stage": name, "status": "reused" if "cached_from" in manifest.inputs else "done",
            "decision": decision.get("decision"), "reason": decision.get("reason"),
            "manifest_uri": store.join(ctx.for_stage(name).uri, "manifest.json"),
            "duration_s": manifest.duration_s,
        }
        if manifest.outputs.get("metrics_uri"):  # a training stage: what it trained from and on (the report's "why")
            entry.update(model_uri=manifest.inputs.get("model_uri"), checkpoint_uri=manifest.checkpoint_uri,
                         data_uri=manifest.inputs.get("sft_uri") or manifest.inputs.get("train_uri"))
        if manifest.metrics.get("converged") is False:  # a stalled SFT, said where it shows
            entry["reason"] = ("did not converge: " + str(manifest.metrics.get("not_converged_reason") or "")).strip()
        if manifest.outputs.get("rows_uri"):  # per-prompt rows: histogram, samples, answer lengths
            entry["rows_uri"] = manifest.outputs["rows_uri"]
        stages.append(entry)
    baseline, candidate, sft_eval = m.get("baseline"), m.get("candidate"), m.get("sft_eval")
    diversity = [{"stage": m[role].stage, "metrics": m[role].metrics, "decision": m[role].decision}
                 for role in ("diversity", "recheck") if role in m]
    outcome, reason = _outcome(p, m)
    # Eval work (and its AWS jobs) is recorded under the stages' parts (the baseline's and champion's evals, the
    # SFT checkpoint's eval): every part of a summarized stage is billed with it, once.
    billed = {mf.stage: mf for mf in m.values()}
    billed.update({mf.stage: mf for s in SUMMARY_STAGES for part in graph.stage(s).parts
                   if (mf := manifest_at(graph.part(part, s))) is not None})
    # A stage reused from the cache (`cached_from`) paid for nothing in this run: its jobs are the source run's.
    cost = sum(float(job.get("estimated_cost_usd", job.get("cost_usd")) or 0)
               for mf in billed.values() if "cached_from" not in mf.inputs for job in mf.jobs)
    return {
        "dag_id": ctx.dag_id, "run_id": ctx.run_id, "cycle": ctx.cycle, "max_cycles": p.max_cycles,
        "parent_run_id": p.parent_run_id, "model_family": p.model_family, "backend": p.backend,
        "sft_policy": p.sft_policy, "eval_uri": p.eval_uri,
        "start_model": baseline.checkpoint_uri if baseline else None,
        "candidate_model": candidate.checkpoint_uri if candidate else None,
        "stages": stages,
        "validation": m["validation"].metrics if "validation" in m else None,
        "baseline": baseline.metrics if baseline else None,
        "candidate": candidate.metrics if candidate else None,
        "champion": m["champion"].metrics if "champion" in m else _kept_champion(baseline),
        "sft_checkpoint": sft_eval.metrics if sft_eval else None,
        "diversity": diversity,
        "gate": m["gate"].decision if "gate" in m else None,
        "outcome": outcome, "outcome_reason": reason,
        "cost_usd": round(cost, 2) if cost else None,
        "train_metrics_uris": {m[role].stage: m[role].outputs.get("metrics_uri")
                               for role in ("sft", "training") if role in m},
    }


def _kept_champion(baseline: Any) -> dict[str, Any] | None:
    """The champion's metrics a baseline taken before the champion's eval was a part kept in its decision."""
    return (baseline.decision or {}).get("champion") if baseline is not None else None


# Per-prompt rows the report reads, by the name it knows them under: the stage's role -> report key.
_REPORT_ROWS = {"baseline": "baseline", "candidate": "candidate", "diversity": "diversity_check",
                "recheck": "diversity_recheck"}


def _report_rows(summary: dict[str, Any], ctx: StageContext) -> dict[str, list[dict[str, Any]]]:
    """The eval and diversity stages' rows.jsonl; a missing or unreadable file leaves its section out."""
    report = graph.stage(graph.REPORT)
    key_of = {report.reads[role]: key for role, key in _REPORT_ROWS.items()}
    out = {}
    for st in summary.get("stages") or []:
        key = key_of.get(str(st.get("stage")))
        if key and st.get("rows_uri"):
            try:
                out[key] = _rows(st["rows_uri"])
            except Exception as err:  # the report must still be written
                log.warning("report: rows of %s unreadable: %s", st["stage"], err)
    return out


def _sample_prompts(p: CycleParams, rows: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The question (last user turn) of each eval prompt the report shows as a sample; none when the eval
    set is unreadable."""
    from rftflow.publish.report import sample_ids

    ids = set(sample_ids(rows.get("baseline"), rows.get("candidate"))[0])
    if not ids or not p.eval_uri:
        return {}
    try:
        from rftflow.data.dataset import read_records_and_issues

        records, _ = read_records_and_issues(p.eval_uri, "rft")
    except Exception as err:
        log.warning("report: eval set %s unreadable for sample prompts: %s", p.eval_uri, err)
        return {}
    # the last user turn: the question itself, without a system prompt every record repeats
    return {r.id: str(next((m.get("content") for m in reversed(r.prompt_messages()) if m.get("role") == "user"),
                           "") or "") for r in records if r.id in ids}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# what an index entry holds: where the cycle's summary is, and what finds it
INDEX_KEYS = ("dag_id", "run_id", "cycle", "model_family", "finished_at", "cycle_json_uri")


def index_uri(artifact_root: str, model_family: str) -> str:
    return store.join(artifact_root, "index", model_family)


def publish_summary(p: CycleParams, ctx: StageContext, summary: dict[str, Any]) -> dict[str, Any]:
    """Write report + cycle.json, index the cycle, then track and notify (both optional)."""
    from datetime import UTC, datetime

    from rftflow.publish.notify import notify_gate
    from rftflow.publish.report import write_cycle_report
    from rftflow.publish.tracking import track_cycle
    from rftflow.redact import redact

    summary = redact(summary)  # no credential from a URI reaches the report, cycle.json or the UI's index
    train_rows = {s: _rows(uri) for s, uri in summary["train_metrics_uris"].items()}
    rows = _report_rows(summary, ctx)
    written = write_cycle_report(ctx.uri, summary, train_rows, rows, _sample_prompts(p, rows))
    summary = {**summary, **written, "cycle_json_uri": store.join(ctx.uri, "cycle.json"),
               "params": redact(p.model_dump(mode="json")),
               "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    # MLflow run (and champion/challenger aliases) before cycle.json, so the UI can link to it.
    summary["mlflow"] = redact(track_cycle(summary, train_rows, ctx.uri))
    store.write_json(summary["cycle_json_uri"], summary)
    entry = store.join(index_uri(p.artifact_root, p.model_family),
                       f"{_safe(ctx.dag_id)}__{_safe(ctx.run_id)}__cycle-{ctx.cycle}.json")
    # the index holds a pointer per cycle: cycle.json is the one copy of the summary
    store.write_json(entry, {key: summary.get(key) for key in INDEX_KEYS})
    notify_gate(p.notify, summary)
    return {"report_md_uri": written["report_md_uri"], "report_html_uri": written.get("report_html_uri"),
            "cycle_json_uri": summary["cycle_json_uri"], "mlflow_url": (summary["mlflow"] or {}).get("mlflow_url")}


def read_index(artifact_root: str, model_family: str | None = None) -> list[dict[str, Any]]:
    """Every indexed cycle (of one model family, or all), oldest first."""
    root = store.join(artifact_root, "index")
    if not store.exists(root):
        return []
    uris = [u for u in store.list_prefix(root) if u.endswith(".json")]
    from concurrent.futures import ThreadPoolExecutor

    from rftflow.redact import redact

    with ThreadPoolExecutor(max_workers=16) as pool:  # one GET per entry on S3: read them side by side
        entries = list(pool.map(store.read_json, uris))
        if model_family:
            entries = [e for e in entries if e.get("model_family") == model_family]
        cycles = list(pool.map(lambda e: _summary_of(artifact_root, e), entries))
    cycles = [redact(c) for c in cycles if c is not None]  # also entries indexed before URIs were redacted
    return sorted(cycles, key=lambda c: (c.get("run_id", ""), c.get("cycle", 0)))


def _summary_of(artifact_root: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The cycle's summary: its cycle.json, which the index entry points to, looked up under the root being read
    first (a copied or moved artifact root, a volume mounted at another path), then where it was written; an
    entry written before pointers holds the summary itself. None when the cycle.json is gone or unreadable."""
    if not entry.get("cycle_json_uri") or not set(entry) <= set(INDEX_KEYS):
        return entry
    from rftflow.artifacts.manifest import stage_uri

    try:
        here = store.join(stage_uri(artifact_root, str(entry["dag_id"]), str(entry["run_id"]),
                                    int(entry["cycle"]), "report"), "cycle.json")
    except (KeyError, TypeError, ValueError):  # an entry that does not name its cycle: the stored URI only
        here = entry["cycle_json_uri"]
    for uri in dict.fromkeys((here, entry["cycle_json_uri"])):
        try:
            return store.read_json(uri)
        except FileNotFoundError:
            continue
        except ValueError as err:
            log.warning("cycle index: %s is unreadable (%s); the cycle %s/%s is left out", uri, err,
                        entry.get("run_id"), entry.get("cycle"))
            return None
    log.warning("cycle index: %s is gone; the cycle %s/%s is left out", entry["cycle_json_uri"],
                entry.get("run_id"), entry.get("cycle"))
    return None
