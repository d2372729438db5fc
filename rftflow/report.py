"""The per-cycle report: Markdown and HTML with PNG plots, stored with the cycle's artifacts.

Shows what each stage decided and why, training curves, diversity, baseline vs candidate (overall and
per category) and the gate's reasons; `summary_text` gives the same story in a few terminal lines.

The report is built from a `CycleSummary` (below) and the training-metric rows of each train stage:

    summary = {
        "dag_id": "rft_cycle", "run_id": "manual__2025-01-01", "cycle": 1, "max_cycles": 3,
        "model_family": "tiny", "backend": "local",
        "start_model": "file:///.../base", "candidate_model": "file:///.../rft/model",   # or None
        "stages": [{"stage": "diversity_check", "status": "done", "decision": "sft_first",
                    "reason": "78% of prompts all-fail", "manifest_uri": "...", "duration_s": 12.5}, ...],
        "validation": ValidationReport.to_dict() or None,
        "baseline": eval_metrics, "candidate": eval_metrics or None, "champion": eval_metrics or None,
        "diversity": [{"stage": "diversity_check", "metrics": diversity_metrics,
                       "decision": {"decision": "sft_first", "reason": "..."}}, ...],
        "gate": GateResult.to_dict() or None,
        "outcome": "promoted" | "iterating" | "rejected" | "stopped" | ...,
        "outcome_reason": "...", "cost_usd": 1.23 or None,
    }

where eval_metrics = {"pass_at_1", "mean_reward", "mean_response_tokens", "n", "pass_at_k", "k",
"breakdown": {field: {value: {"pass_at_1", "mean_reward", "n"}}}} and diversity_metrics = {"k",
"n_prompts", "all_pass", "all_fail", "mixed", "mean_pass_rate", "expected_mixed", "pass_at_k"}
(all_pass / all_fail / mixed as fractions of n_prompts; counts are accepted too).
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from rftflow import store

__all__ = [
    "CycleSummary",
    "DiversitySummary",
    "ReportResult",
    "StageSummary",
    "summary_text",
    "write_cycle_report",
]


class StageSummary(TypedDict):
    stage: str
    status: str  # "done" | "skipped" | "reused" (| "failed")
    decision: NotRequired[str | None]
    reason: NotRequired[str | None]
    manifest_uri: NotRequired[str | None]
    duration_s: NotRequired[float | None]


class DiversitySummary(TypedDict):
    stage: str  # "diversity_check" (initial) or "diversity_recheck" (after SFT)
    metrics: dict[str, Any]
    decision: dict[str, Any] | None  # {"decision": "rft" | "sft_first" | "stop_saturated", "reason": str}


class CycleSummary(TypedDict):
    dag_id: str
    run_id: str
    cycle: int
    max_cycles: int
    model_family: str
    backend: str
    start_model: str
    candidate_model: str | None
    stages: list[StageSummary]
    validation: NotRequired[dict[str, Any] | None]
    baseline: dict[str, Any]
    candidate: dict[str, Any] | None
    champion: dict[str, Any] | None
    diversity: list[DiversitySummary]
    gate: dict[str, Any] | None
    outcome: str
    outcome_reason: str
    cost_usd: float | None
    report_uri: NotRequired[str | None]  # where the report was written; summary_text prints it


class ReportResult(TypedDict):
    report_md_uri: str
    report_html_uri: str
    plots: list[str]


# Training curves: (file-safe name, title, [(metric key, label)], y label). A panel is drawn when any
# of its keys has data; the first KL key present wins.
_PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("reward", "Training reward per step", [("critic/rewards/mean", "mean"), ("critic/rewards/max", "max"),
                                             ("critic/rewards/min", "min")], "reward"),
    ("kl", "KL to reference", [("actor/kl_loss", "actor/kl_loss"),
                               ("actor/reward_kl_penalty", "actor/reward_kl_penalty")], "KL"),
    ("entropy", "Policy entropy", [("actor/entropy", "entropy")], "nats"),
    ("length", "Response length", [("response_length/mean", "mean"), ("response_length/max", "max"),
                                   ("response_length/min", "min")], "tokens"),
    ("loss", "Training loss", [("train/loss", "loss")], "loss"),
]
_EVAL_ROWS = [("pass_at_1", "pass@1"), ("mean_reward", "mean reward"), ("pass_at_k", "pass@k"),
              ("mean_response_tokens", "mean response tokens"), ("n", "prompts")]
_MODELS = ("baseline", "sft_checkpoint", "candidate", "champion")
_COLORS = {"baseline": "#8c8c8c", "sft_checkpoint": "#9467bd", "candidate": "#1f77b4", "champion": "#ff7f0e",
           "all_fail": "#d62728", "mixed": "#2ca02c", "all_pass": "#1f77b4", "expected_mixed": "#98df8a"}


# --------------------------------------------------------------------------- small helpers


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _f(value: Any, digits: int = 3) -> str:
    v = _num(value)
    if v is None:
        return "-"
    if v == int(v) and abs(v) >= 1 and isinstance(value, int):
        return str(int(v))
    return f"{v:.{digits}f}"


def _delta(a: Any, b: Any) -> str:
    x, y = _num(a), _num(b)
    return "-" if x is None or y is None else f"{y - x:+.3f}"


def _pct(value: Any) -> str:
    v = _num(value)
    return "-" if v is None else f"{v:.0%}"


def _duration(seconds: Any) -> str:
    s = _num(seconds)
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decision_of(entry: dict[str, Any]) -> tuple[str, str]:
    """(decision, reason) of a diversity entry whose decision is a dict or a plain string."""
    d = entry.get("decision")
    if isinstance(d, dict):
        return str(d.get("decision") or "-"), str(d.get("reason") or "")
    return (str(d), "") if d else ("-", "")


def _fractions(metrics: dict[str, Any]) -> dict[str, float | None]:
    """all_fail / mixed / all_pass / expected_mixed as fractions, whether logged as fractions or counts."""
    out = {k: _num(metrics.get(k)) for k in ("all_fail", "mixed", "all_pass", "expected_mixed")}
    n = _num(metrics.get("n_prompts"))
    if n and sum(v for k, v in out.items() if v is not None and k != "expected_mixed") > 1.0 + 1e-6:
        # expected_mixed is a closed-form fraction; divide it only if it was logged as a count too
        out = {k: (v / n if v is not None and (k != "expected_mixed" or v > 1.0) else v)
               for k, v in out.items()}
    return out


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key`, in step order; rows without a finite value are left out."""
    points = []
    for i, row in enumerate(rows):
        v = _num(row.get(key)) if isinstance(row, dict) else None
        if v is not None:
            step = _num(row.get("step"))
            points.append((step if step is not None else float(i), v))
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def _breakdown_keys(*evals: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(field, value) pairs present in any of the eval results, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for ev in evals:
        for fld, values in ((ev or {}).get("breakdown") or {}).items():
            for value in values or {}:
                seen[(str(fld), str(value))] = None
    return list(seen)


def _cell(ev: dict[str, Any] | None, fld: str | None, value: str | None, metric: str) -> Any:
    """`metric` of one breakdown value (`fld`=`value`), or of the whole eval set when `fld` is None."""
    if fld is None:
        return (ev or {}).get(metric)
    return ((((ev or {}).get("breakdown") or {}).get(fld) or {}).get(value) or {}).get(metric)


# --------------------------------------------------------------------------- a tiny document model


@dataclass
class _Doc:
    """Headings, paragraphs, tables and images, rendered once as Markdown and once as HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str, lead: str | None = None) -> None:
        self.blocks.append(("p", (lead, text)))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, [[str(c) for c in r] for r in rows])))

    def img(self, src: str, alt: str) -> None:
        self.blocks.append(("img", (src, alt)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                out.append("#" * data[0] + " " + data[1])
            elif kind == "p":
                lead, text = data
                out.append((f"**{lead}** " if lead else "") + text)
            elif kind == "table":
                headers, rows = data
                esc = [[c.replace("|", "\\|").replace("\n", " ") for c in r] for r in [headers, *rows]]
                out.append("\n".join(
                    ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(headers)]
                    + ["| " + " | ".join(r) + " |" for r in esc[1:]]
                ))
            elif kind == "img":
                out.append(f"![{data[1]}]({data[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body: list[str] = []
        for kind, data in self.blocks:
            if kind == "h":
                body.append(f"<h{data[0]}>{e(data[1])}</h{data[0]}>")
            elif kind == "p":
                lead, text = data
                body.append("<p>" + (f"<strong>{e(lead)}</strong> " if lead else "") + e(text) + "</p>")
            elif kind == "table":
                headers, rows = data
                head = "".join(f"<th>{e(c)}</th>" for c in headers)
                trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                body.append(f'<figure><img src="{e(data[0])}" alt="{e(data[1])}"></figure>')
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em}"
            "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;"
            "font-size:.9em}"
            "th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
        )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


# --------------------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _plot_training(stage: str, rows: Sequence[dict[str, Any]]) -> bytes | None:
    """A grid with one panel per training-metric group that has data; None when nothing to draw."""
    panels = []
    for _, title, keys, ylabel in _PANELS:
        lines = [(label, *_series(rows, key)) for key, label in keys]
        lines = [ln for ln in lines if ln[1]]
        if title.startswith("KL"):
            lines = lines[:1]
        if lines:
            panels.append((title, lines, ylabel))
    if not panels:
        return None
    from matplotlib.figure import Figure

    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, lines, ylabel) in zip(axes, panels, strict=False):
        for label, xs, ys in lines:
            main = len(lines) == 1 or label == "mean"
            style = {"linewidth": 2.0} if main else {"linewidth": 1.0, "alpha": 0.6}
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{stage}: training metrics")
    return _png(fig)


def _plot_diversity(diversity: Sequence[dict[str, Any]]) -> bytes | None:
    checks = [(str(d.get("stage", f"check {i + 1}")), _fractions(d.get("metrics") or {}))
              for i, d in enumerate(diversity)]
    if not checks:
        return None
    from matplotlib.figure import Figure

    kinds = ["all_fail", "mixed", "all_pass", "expected_mixed"]
    fig = Figure(figsize=(max(5.0, 2.8 * len(checks) + 1.5), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        xs = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(checks))]
        ys = [(frac.get(kind) or 0.0) for _, frac in checks]
        bars = ax.bar(xs, ys, width, label=kind.replace("_", " "), color=_COLORS[kind],
                      hatch="//" if kind == "expected_mixed" else None)
        ax.bar_label(bars, labels=[_pct(frac.get(kind)) for _, frac in checks], fontsize=7)
    ax.set_xticks(range(len(checks)), [name for name, _ in checks])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of prompts")
    ax.set_title("Diversity check: prompts by rollout outcome")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _plot_eval(models: dict[str, dict[str, Any]]) -> bytes | None:
    groups = [("overall", None, None)] + [(f"{f}={v}", f, v) for f, v in _breakdown_keys(*models.values())]
    metrics = [(m, label) for m, label in (("pass_at_1", "pass@1"), ("mean_reward", "mean reward"))
               if any(_num(ev.get(m)) is not None for ev in models.values())]
    if not metrics:
        return None
    from matplotlib.figure import Figure

    width_in = max(6.0, 0.8 * len(groups) * len(models) + 2)
    fig = Figure(figsize=(width_in, 3.4 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False).ravel()
    width = 0.8 / len(models)
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for j, (name, ev) in enumerate(models.items()):
            ys = [_num(_cell(ev, fld, val, metric)) for _, fld, val in groups]
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(groups))]
            bars = ax.bar(xs, [y or 0.0 for y in ys], width, label=name, color=_COLORS.get(name))
            ax.bar_label(bars, labels=[_f(y, 2) for y in ys], fontsize=7)
        ax.set_xticks(range(len(groups)), [g[0] for g in groups])
        ax.set_ylabel(label)
        ax.set_title(f"{label}: {' vs '.join(models)}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.margins(y=0.15)
    return _png(fig)


# --------------------------------------------------------------------------- report sections


def _models(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: summary[name] for name in _MODELS if isinstance(summary.get(name), dict)}


def _stage_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [[s.get("stage", "-"), s.get("status", "-"), s.get("decision") or "", s.get("reason") or "",
             _duration(s.get("duration_s"))] for s in summary.get("stages") or []]


def _eval_rows(models: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for key, label in _EVAL_ROWS:
        if all(_num(ev.get(key)) is None for ev in models.values()):
            continue
        if key == "pass_at_k":
            ks = {ev.get("k") for ev in models.values() if _num(ev.get("pass_at_k")) is not None}
            label = f"pass@{ks.pop()}" if len(ks) == 1 else label
        digits = 1 if key == "mean_response_tokens" else 3
        row = [label] + [_f(ev.get(key), digits) for ev in models.values()]
        if "baseline" in models and "candidate" in models:
            change = _delta(models["baseline"].get(key), models["candidate"].get(key))
            row.append("" if key == "n" else change)
        rows.append(row)
    return rows


def _breakdown_rows(models: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for fld, value in _breakdown_keys(*models.values()):
        n = next((n for ev in models.values() if (n := _cell(ev, fld, value, "n")) is not None), None)
        row: list[Any] = [fld, value, _f(n)]
        for metric in ("pass_at_1", "mean_reward"):
            row += [_f(_cell(ev, fld, value, metric)) for ev in models.values()]
            if "baseline" in models and "candidate" in models:
                row.append(_delta(_cell(models["baseline"], fld, value, metric),
                                  _cell(models["candidate"], fld, value, metric)))
        rows.append(row)
    return rows


def _breakdown_headers(models: dict[str, dict[str, Any]]) -> list[str]:
    both = "baseline" in models and "candidate" in models
    headers = ["field", "value", "n"]
    for label in ("pass@1", "reward"):
        headers += [f"{name} {label}" for name in models] + ([f"change {label}"] if both else [])
    return headers


def _validation_section(doc: _Doc, validation: dict[str, Any]) -> None:
    doc.h(2, "Data validation")
    status = validation.get("status") or ("pass" if validation.get("ok") else None)
    files = validation.get("files") or {}
    if status is not None:
        where = ", ".join(f"{split}: {f.get('uri')} ({f.get('rows', '?')} rows)"
                          for split, f in files.items() if isinstance(f, dict))
        doc.p(where or "", lead=f"Status: {status}.")
    checks = validation.get("checks")
    if isinstance(checks, list) and checks and all(isinstance(c, dict) for c in checks):
        doc.table(["check", "split", "status", "observed", "expected"],
                  [[c.get("name", "-"), c.get("split", "-"), c.get("status", "-"),
                    _short(c.get("observed"), 60), _short(c.get("expected", ""), 80)] for c in checks])
    else:
        rest = {k: v for k, v in validation.items() if k not in ("status", "files")}
        if rest:
            doc.table(["field", "value"], [[k, _short(v)] for k, v in rest.items()])
    for key in ("markdown_uri", "json_uri", "report_uri"):
        if validation.get(key):
            doc.p(str(validation[key]), lead="Full validation report:")
            break


def _diversity_section(doc: _Doc, diversity: list[dict[str, Any]], plot: str | None) -> None:
    doc.h(2, "Diversity")
    doc.p("Each training prompt gets k rollouts; a prompt is all-fail, all-pass or mixed. Only mixed "
          "prompts carry a learning signal for GRPO.")
    rows = []
    for d in diversity:
        m = d.get("metrics") or {}
        frac = _fractions(m)
        decision, reason = _decision_of(d)
        rows.append([d.get("stage", "-"), _f(m.get("k")), _f(m.get("n_prompts")), _pct(frac["all_fail"]),
                     _pct(frac["mixed"]), _pct(frac["all_pass"]), _f(m.get("mean_pass_rate")),
                     _pct(frac["expected_mixed"]), _f(m.get("pass_at_k")), decision, reason])
    doc.table(["check", "k", "prompts", "all-fail", "mixed", "all-pass", "mean pass rate", "expected mixed",
               "pass@k", "decision", "why"], rows)
    if plot:
        doc.img(plot, "diversity fractions")


def _check_result(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return "missing" if r.get("missing") else "skipped"
    if not r.get("passed"):
        return "FAIL"
    return "warn" if r.get("warning") else "pass"


def _gate_section(doc: _Doc, gate: dict[str, Any], plot: str | None = None) -> None:
    doc.h(2, "Gate")
    doc.p(str(gate.get("reason", "")), lead=f"Decision: {str(gate.get('decision', '-')).upper()}.")
    if gate.get("split"):
        doc.p(str(gate["split"]), lead="Eval set:")
    for warning in gate.get("warnings") or []:
        doc.p(str(warning), lead="Warning:")
    rows = []
    for r in gate.get("reasons") or []:
        observed = r.get("observed")
        rows.append([r.get("check", "-"), r.get("kind", ""), _check_result(r),
                     "-" if _num(observed) is None else f"{float(observed):.4g}", r.get("required", ""),
                     r.get("detail", "")])
    if rows:
        doc.table(["check", "kind", "result", "observed", "required", "detail"], rows)
    comparisons = gate.get("comparisons") or []
    if comparisons:
        doc.h(3, "Paired differences")
        doc.table(["vs", "test", "n", "reference", "candidate", "difference", "bounds", "p (better)",
                   "p (worse)", "detectable"],
                  [[c.get("versus"), c.get("test"), c.get("n"), _f(c.get("reference_value")),
                    _f(c.get("candidate_value")), _delta(c.get("reference_value"), c.get("candidate_value")),
                    f"{_f(c.get('lower'))} .. {_f(c.get('upper'))}", _f(c.get("p_better"), 4),
                    _f(c.get("p_worse"), 4), _f(c.get("mde"))] for c in comparisons])
    if plot:
        doc.img(plot, "paired differences with one-sided confidence bounds")


def _plot_gate(gate: dict[str, Any] | None) -> bytes | None:
    """Forest plot: each comparison's difference with its one-sided bounds, overall first, then slices."""
    comparisons = [c for c in (gate or {}).get("comparisons") or [] if _num(c.get("diff")) is not None]
    if not comparisons:
        return None
    from matplotlib.figure import Figure

    scale = 100.0 if comparisons[0].get("metric") == "pass_at_1" else 1.0
    unit = "points of pass@1" if scale == 100.0 else "mean reward"
    fig = Figure(figsize=(7.5, 0.42 * len(comparisons) + 1.4), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(comparisons)))[::-1]
    for y, c in zip(ys, comparisons, strict=True):
        diff, low, high = (float(c[k]) * scale for k in ("diff", "lower", "upper"))
        color = "#2ca02c" if low > 0 else ("#d62728" if high < 0 else "#1f77b4")
        ax.plot([low, high], [y, y], color=color, linewidth=2)
        ax.plot([diff], [y], "o", color=color)
    ax.axvline(0.0, color="#555555", linewidth=1)
    ax.set_yticks(ys, [f"{c.get('versus')} (n={c.get('n')})" for c in comparisons], fontsize=8)
    conf = _num(comparisons[0].get("confidence")) or 0.95
    ax.set_xlabel(f"candidate - reference, {unit} (bars: one-sided {conf:.1%} bounds)")
    ax.set_title("Gate: paired differences (green: better beyond chance, red: worse beyond chance)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _training_table(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for _, _, keys, _ in _PANELS:
        for key, _label in keys:
            _, values = _series(rows, key)
            if values:
                out.append([key, len(values), _f(values[0], 4), _f(values[-1], 4), _f(min(values), 4),
                            _f(max(values), 4)])
    return out


def _build(summary: dict[str, Any], train_rows: dict[str, list[dict[str, Any]]],
           plots: dict[str, str]) -> tuple[_Doc, str]:
    cycle, max_cycles = summary.get("cycle", "?"), summary.get("max_cycles", "?")
    dag_id, run_id = summary.get("dag_id", "rft_cycle"), summary.get("run_id", "?")
    title = f"{dag_id} - {run_id} - cycle {cycle} of {max_cycles}"
    doc = _Doc()
    doc.h(1, f"Cycle report: {title}")
    outcome = str(summary.get("outcome", "?")).upper()
    doc.p(str(summary.get("outcome_reason") or ""), lead=f"Outcome: {outcome}.")
    facts = [["model family", summary.get("model_family", "-")], ["backend", summary.get("backend", "-")],
             ["start model", summary.get("start_model") or "-"],
             ["candidate model", summary.get("candidate_model") or "-"],
             ["run id", summary.get("run_id", "-")], ["cycle", f"{cycle} of {max_cycles}"]]
    if _num(summary.get("cost_usd")) is not None:
        facts.append(["cost", f"${float(summary['cost_usd']):,.2f}"])
    doc.table(["field", "value"], facts)

    if summary.get("stages"):
        doc.h(2, "Stages")
        doc.table(["stage", "status", "decision", "why", "duration"], _stage_rows(summary))
    if isinstance(summary.get("validation"), dict):
        _validation_section(doc, summary["validation"])
    if summary.get("diversity"):
        _diversity_section(doc, summary["diversity"], plots.get("diversity"))

    models = _models(summary)
    if models:
        doc.h(2, "Evaluation")
        if "candidate" not in models:
            doc.p("No candidate was evaluated in this cycle; the baseline is shown alone.")
        headers = ["metric", *models] + (["change"] if {"baseline", "candidate"} <= set(models) else [])
        doc.table(headers, _eval_rows(models))
        breakdown = _breakdown_rows(models)
        if breakdown:
            doc.h(3, "By category")
            doc.table(_breakdown_headers(models), breakdown)
        if plots.get("eval"):
            doc.img(plots["eval"], "baseline vs candidate")
    if isinstance(summary.get("gate"), dict):
        _gate_section(doc, summary["gate"], plots.get("gate"))

    stages = [(stage, rows) for stage, rows in (train_rows or {}).items() if rows]
    if stages:
        doc.h(2, "Training")
        for stage, rows in stages:
            doc.h(3, stage)
            table = _training_table(rows)
            if table:
                doc.table(["metric", "points", "first", "last", "min", "max"], table)
            if plots.get(f"train:{stage}"):
                doc.img(plots[f"train:{stage}"], f"{stage} training metrics")
    return doc, f"Cycle report: {title}"


# --------------------------------------------------------------------------- public API


def write_cycle_report(
    out_uri: str, summary: CycleSummary | dict[str, Any], train_rows: dict[str, list[dict[str, Any]]]
) -> ReportResult:
    """Write report.md, report.html and plots/*.png into the folder `out_uri`; returns their URIs.

    `train_rows` maps a train stage ("sft", "rft") to its metrics.jsonl rows. Absent metrics, stages
    and sections are left out of the report, never an error.
    """
    summary = dict(summary or {})
    train_rows = {str(stage): [r for r in (rows or []) if isinstance(r, dict)]
                  for stage, rows in (train_rows or {}).items()}
    images: dict[str, tuple[str, bytes | None]] = {}
    for stage, rows in train_rows.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stage)
        images[f"train:{stage}"] = (f"plots/training_{safe}.png", _plot_training(stage, rows))
    images["diversity"] = ("plots/diversity.png", _plot_diversity(summary.get("diversity") or []))
    models = _models(summary)
    images["eval"] = ("plots/eval_comparison.png", _plot_eval(models) if models else None)
    images["gate"] = ("plots/gate_forest.png", _plot_gate(summary.get("gate")))

    plots: dict[str, str] = {}
    plot_uris: list[str] = []
    for key, (rel, data) in images.items():
        if data is None:
            continue
        uri = store.join(out_uri, rel)
        store.write_bytes(uri, data)
        plots[key] = rel
        plot_uris.append(uri)

    doc, title = _build(summary, train_rows, plots)
    md_uri, html_uri = store.join(out_uri, "report.md"), store.join(out_uri, "report.html")
    store.write_text(md_uri, doc.markdown())
    store.write_text(html_uri, doc.html(title))
    return {"report_md_uri": md_uri, "report_html_uri": html_uri, "plots": plot_uris}


def summary_text(summary: CycleSummary | dict[str, Any], report_uri: str | None = None) -> str:
    """A few plain-text lines: outcome and why, each stage's decision, baseline vs candidate per category."""
    s = dict(summary or {})
    lines = [
        f"{s.get('dag_id', 'rft_cycle')} run {s.get('run_id', '?')}, cycle {s.get('cycle', '?')} of "
        f"{s.get('max_cycles', '?')} ({s.get('backend', '?')} backend, "
        f"model family {s.get('model_family', '?')})",
        f"outcome: {str(s.get('outcome', '?')).upper()} - {s.get('outcome_reason') or 'no reason given'}",
    ]
    stages = s.get("stages") or []
    if stages:
        lines.append("stages:")
        width = max(len(str(st.get("stage", ""))) for st in stages)
        for st in stages:
            what = " - ".join(str(x) for x in (st.get("decision"), st.get("reason")) if x)
            name, status = str(st.get("stage", "-")), str(st.get("status", "-"))
            lines.append(f"  {name:{width}}  {status:7}  {what}".rstrip())
    for d in s.get("diversity") or []:
        frac, (decision, reason) = _fractions(d.get("metrics") or {}), _decision_of(d)
        lines.append(f"{d.get('stage', 'diversity')}: all-fail {_pct(frac['all_fail'])}, mixed "
                     f"{_pct(frac['mixed'])}, all-pass {_pct(frac['all_pass'])} -> {decision}"
                     + (f" ({reason})" if reason else ""))

    models = _models(s)
    if models:
        lines.append("eval (pass@1 / mean reward):  " + "  ".join(f"{name:>15}" for name in models))
        groups: list[tuple[str, str | None, str | None]] = [("overall", None, None)]
        groups += [(f"{f}={v}", f, v) for f, v in _breakdown_keys(*models.values())]
        for label, fld, value in groups:
            n = next((n for ev in models.values() if (n := _cell(ev, fld, value, "n")) is not None), None)
            name = f"{label} (n={_f(n)})" if _num(n) is not None else label
            cells = [f"{_f(_cell(ev, fld, value, 'pass_at_1'))} / {_f(_cell(ev, fld, value, 'mean_reward'))}"
                     for ev in models.values()]
            change = ""
            if "baseline" in models and "candidate" in models:
                change = "  pass@1 " + _delta(_cell(models["baseline"], fld, value, "pass_at_1"),
                                              _cell(models["candidate"], fld, value, "pass_at_1"))
            lines.append(f"  {name:28}" + "  ".join(f"{c:>15}" for c in cells) + change)
    gate = s.get("gate")
    if isinstance(gate, dict):
        lines.append(f"gate: {gate.get('decision', '-')} - {gate.get('reason', '')}")
        lines += [f"  warning: {w}" for w in gate.get("warnings") or []]
        if gate.get("split"):
            lines.append(f"  eval set: {gate['split']}")
    if _num(s.get("cost_usd")) is not None:
        lines.append(f"cost: ${float(s['cost_usd']):,.2f}")
    where = report_uri or s.get("report_uri")
    if where:
        lines.append(f"report: {where}")
    return "\n".join(lines)
