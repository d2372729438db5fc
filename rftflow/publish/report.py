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
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from rftflow.artifacts import store

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

    def pre(self, text: str, lead: str | None = None) -> None:
        """Verbatim text (a model's answer): a fenced block in Markdown, an escaped <pre> in HTML."""
        self.blocks.append(("pre", (lead, text)))

    def link(self, lead: str, text: str, href: str) -> None:
        self.blocks.append(("link", (lead, text, href)))

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
            elif kind == "pre":
                lead, text = data
                fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
                out.append((f"*{lead}*\n" if lead else "") + f"{fence}text\n{text}\n{fence}")
            elif kind == "link":
                lead, text, href = data
                out.append(f"**{lead}** [{text}]({href.replace(')', '%29').replace(' ', '%20')})")
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
            elif kind == "pre":
                lead, text = data
                body.append((f'<div class="lead">{e(lead)}</div>' if lead else "") + f"<pre>{e(text)}</pre>")
            elif kind == "link":
                lead, text, href = data
                body.append(f'<p><strong>{e(lead)}</strong> <a href="{e(href)}">{e(text)}</a></p>')
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0 1.5em}"
            "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top;"
            "font-size:.9em}"
            "th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
            "pre{background:#f6f6f6;border:1px solid #ddd;padding:.5em .7em;white-space:pre-wrap;"
            "overflow-wrap:anywhere;font-size:.85em;margin:.2em 0 .8em}"
            ".lead{font-size:.85em;color:#555;margin-top:.6em}"
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


def _plot_eval(models: dict[str, dict[str, Any]], pass_fail: bool = False) -> bytes | None:
    """One bar panel per eval metric; a pass/fail reward (mean reward = pass@1) gets one panel, not two alike."""
    groups = [("overall", None, None)] + [(f"{f}={v}", f, v) for f, v in _breakdown_keys(*models.values())]
    metrics = [(m, label) for m, label in _eval_metrics(pass_fail)
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


def _plot_pass_rates(histograms: list[tuple[str, int, list[int], list[float]]]) -> bytes | None:
    """Per diversity check: prompts per number of passing rollouts, and the binomial curve at the mean rate."""
    if not histograms:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(histograms), 3.4), layout="constrained")
    axes = fig.subplots(1, len(histograms), squeeze=False).ravel()
    for ax, (stage, k, counts, expected) in zip(axes, histograms, strict=True):
        xs = list(range(k + 1))
        colors = [_COLORS["all_fail"] if j == 0 else _COLORS["all_pass"] if j == k else _COLORS["mixed"]
                  for j in xs]
        bars = ax.bar(xs, counts, 0.7, color=colors, label="observed")
        ax.bar_label(bars, fontsize=7)
        ax.plot(xs, expected, "o--", color="#333333", markersize=4, linewidth=1.2,
                label="expected at the mean rate")
        ax.set_xticks(xs, [f"{j}/{k}" for j in xs], fontsize=8 if k <= 10 else 6)
        ax.set_xlabel("rollouts that pass")
        ax.set_ylabel("prompts")
        ax.set_title(f"{stage}: per-prompt pass rate")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.margins(y=0.15)
    return _png(fig)


# --------------------------------------------------------------------------- per-prompt rows

SAMPLE_LIMIT = 5  # prompts shown where the baseline and the candidate disagree
_CLIP = 600  # characters of an answer, reference or prompt shown in a sample


def _eval_metrics(pass_fail: bool) -> list[tuple[str, str]]:
    if pass_fail:
        return [("pass_at_1", "pass@1 (= mean reward: the reward is pass/fail)")]
    return [("pass_at_1", "pass@1"), ("mean_reward", "mean reward")]


def _is_pass_fail(models: dict[str, dict[str, Any]], rows: dict[str, list[dict[str, Any]]]) -> bool:
    """True when the reward is pass/fail: every eval row's reward equals its pass (1.0 or 0.0); without
    rows, when mean reward equals pass@1 for every model, overall and in every category."""
    evaluated = [r for name in _MODELS for r in rows.get(name) or []]
    if evaluated:
        return all(_num(r.get("reward")) is not None and "passed" in r
                   and abs(float(r["reward"]) - float(bool(r["passed"]))) < 1e-9 for r in evaluated)
    groups = [(None, None)] + _breakdown_keys(*models.values())
    pairs = [(_num(_cell(ev, f, v, "pass_at_1")), _num(_cell(ev, f, v, "mean_reward")))
             for ev in models.values() for f, v in groups]
    pairs = [(a, b) for a, b in pairs if a is not None or b is not None]
    return bool(pairs) and all(a is not None and b is not None and abs(a - b) < 1e-9 for a, b in pairs)


def _pass_histogram(rows: Sequence[dict[str, Any]]) -> tuple[int, list[int], float] | None:
    """(k, prompts per number of passing rollouts 0..k, mean pass rate) of a diversity check's rows."""
    usable = [r for r in rows if _num(r.get("k")) and _num(r.get("pass_rate")) is not None]
    if not usable:
        return None
    k = int(max(float(r["k"]) for r in usable))
    counts = [0] * (k + 1)
    for r in usable:
        counts[min(k, max(0, round(float(r["pass_rate"]) * k)))] += 1
    return k, counts, sum(float(r["pass_rate"]) for r in usable) / len(usable)


def _binomial(n: int, k: int, p: float) -> list[float]:
    """Expected prompts per number of passes if each of n prompts passed each of k rollouts with chance p."""
    return [n * math.comb(k, j) * p ** j * (1.0 - p) ** (k - j) for j in range(k + 1)]


def _mixed_gap(observed: float, expected: float, p: float, n: int) -> str:
    """One sentence on the observed mixed share against the share expected at one common pass rate."""
    seen = f"{observed:.0%} of prompts are mixed where {expected:.0%} would be if every prompt passed with " \
           f"the mean rate {p:.2f}"
    if expected - observed > 0.05:
        return (f"{seen}: pass rates differ from prompt to prompt (some are nearly always solved, others nearly "
                f"never), so fewer groups give GRPO a learning signal than the mean rate suggests.")
    if observed - expected > 0.05:
        return (f"{seen}: more than one common rate gives, which on {n} prompts is sampling noise (a spread of "
                f"rates can only lower the expected mixed share).")
    return f"{seen}: close, so the prompts' pass rates are alike and the mean rate describes them well."


def _by_id(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r.get("id")): r for r in rows if isinstance(r, dict) and "passed" in r}


def sample_ids(baseline_rows: Sequence[dict[str, Any]] | None, candidate_rows: Sequence[dict[str, Any]] | None,
               limit: int = SAMPLE_LIMIT) -> tuple[list[str], int, int]:
    """Ids of up to `limit` prompts the two evals disagree on, spread through the eval set: candidate wins
    first, then up to two losses (more when there are few wins); with how many wins and losses there are."""
    base = _by_id(baseline_rows or [])
    wins, losses = [], []
    for c in candidate_rows or []:
        if not isinstance(c, dict) or "passed" not in c or (b := base.get(str(c.get("id")))) is None:
            continue
        if bool(c["passed"]) != bool(b["passed"]):
            (wins if c["passed"] else losses).append(str(c.get("id")))
    n_losses = min(len(losses), 2)
    n_wins = min(len(wins), limit - n_losses)
    n_losses = min(len(losses), limit - n_wins)
    return _spread(wins, n_wins) + _spread(losses, n_losses), len(wins), len(losses)


def _spread(ids: list[str], n: int) -> list[str]:
    """n of the ids evenly spaced through the list (not just its first n), in their order."""
    return [ids[i * len(ids) // n] for i in range(n)] if n else []


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _clip(value: Any, limit: int = _CLIP) -> str:
    text = _text(value).strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f" ... [{len(text) - limit} more characters]"


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _length_rows(rows: dict[str, list[dict[str, Any]]]) -> tuple[str, list[list[Any]]]:
    """(unit, per-model rows of n / min / median / p90 / max / mean) of the eval answers' lengths: tokens
    when every row has a token count, else words of the answer; no rows without eval rows."""
    evaluated = {name: rows[name] for name in _MODELS if rows.get(name)}
    tokens = all(_num(r.get("response_tokens")) is not None for rs in evaluated.values() for r in rs)
    out = []
    for name, rs in evaluated.items():
        values = [float(r["response_tokens"]) if tokens else float(len(_text(r.get("completion")).split()))
                  for r in rs]
        out.append([name, len(values), _f(min(values), 0), _f(statistics.median(values), 1),
                    _f(_percentile(values, 0.9), 0), _f(max(values), 0), _f(sum(values) / len(values), 1)])
    return ("tokens" if tokens else "words"), out


def _tail(uri: Any, parts: int = 2) -> str:
    """The last `parts` path segments of a URI (`.../sft/model`; a file name alone for 1), for a sentence."""
    if not uri:
        return ""
    segments = [s for s in str(uri).rstrip("/").split("/") if s]
    return ("..." + "/" if 1 < parts < len(segments) else "") + "/".join(segments[-parts:])


def configured_base_url() -> str:
    """The Airflow API server's `api.base_url`, or '' when it is not set (or Airflow is not installed)."""
    try:
        from airflow.configuration import conf

        return str(conf.get("api", "base_url", fallback="") or "").strip()
    except Exception:  # a report must not fail over a link
        return ""


def airflow_run_url(base_url: str, dag_id: Any, run_id: Any) -> str | None:
    """The run's page in the Airflow 3 UI, or None without a base URL or a run."""
    if not base_url or not dag_id or not run_id:
        return None
    from urllib.parse import quote

    return f"{base_url.rstrip('/')}/dags/{quote(str(dag_id), safe='')}/runs/{quote(str(run_id), safe='')}"


# --------------------------------------------------------------------------- report sections


def _models(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: summary[name] for name in _MODELS if isinstance(summary.get(name), dict)}


def _diversity_said(summary: dict[str, Any], stage: str) -> tuple[str | None, str]:
    """(decision, 'N% all-fail, M% mixed, P% all-pass') of a diversity check in the summary."""
    for d in summary.get("diversity") or []:
        if d.get("stage") == stage:
            frac = _fractions(d.get("metrics") or {})
            shares = ", ".join(f"{_pct(frac[k])} {k.replace('_', '-')}" for k in ("all_fail", "mixed", "all_pass")
                               if frac[k] is not None)
            decision = _decision_of(d)[0]
            return (decision if decision != "-" else None), shares
    return None, ""


def _on(stage: dict[str, Any]) -> str:
    """' from <model> on <data>' of a training stage entry, from what its manifest recorded."""
    model, data = _tail(stage.get("model_uri")), _tail(stage.get("data_uri"), 1)
    return (f" from {model}" if model else "") + (f" on {data}" if data else "")


def _training_why(summary: dict[str, Any], stage: dict[str, Any]) -> str:
    """Why SFT ran or was skipped, and what RFT ran on, from the diversity checks and stage entries."""
    name, status = stage.get("stage"), stage.get("status")
    ran = status in ("done", "reused")
    first, first_shares = _diversity_said(summary, "diversity_check")
    policy = summary.get("sft_policy")
    if name == "sft":
        if ran:
            why = ("sft_policy is always: SFT runs every cycle" if policy == "always" else
                   f"diversity_check chose SFT first ({first_shares})" if first == "sft_first" else
                   f"SFT ran after diversity_check decided {first}" if first else "SFT ran")
            return why + _on(stage)
        if first is None:
            return "the cycle ended before the diversity check"
        if first == "rft":
            return f"not needed: diversity_check chose RFT directly ({first_shares})"
        if first == "stop_saturated":
            return f"the cycle stopped: the rollouts already pass ({first_shares})"
        if first == "sft_first" and policy == "never":
            return f"diversity_check asked for SFT first ({first_shares}) but sft_policy is never"
        return f"not run (diversity_check decided {first})"
    if ran:
        sft = next((st for st in summary.get("stages") or [] if st.get("stage") == "sft"), {})
        start = stage.get("model_uri")
        from_sft = sft.get("status") in ("done", "reused") and (
            not start or not sft.get("checkpoint_uri") or start == sft.get("checkpoint_uri"))
        recheck, recheck_shares = _diversity_said(summary, "diversity_recheck")
        after = (f"diversity_recheck decided {recheck} ({recheck_shares})" if recheck else
                 f"diversity_check decided {first} ({first_shares})" if first else "")
        data = _tail(stage.get("data_uri"), 1)
        return ("GRPO from the SFT checkpoint" if from_sft else "GRPO from the start model") + \
            (f" ({_tail(start)})" if start else "") + (f" on {data}" if data else "") + \
            (f", after {after}" if after else "")
    if summary.get("outcome") == "stopped":
        return "the cycle stopped before RFT: " + _short(summary.get("outcome_reason") or "", 120)
    return ""


def _stage_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for s in summary.get("stages") or []:
        why = s.get("reason") or ""
        if not why and s.get("stage") in ("sft", "rft"):
            why = _training_why(summary, s)
        rows.append([s.get("stage", "-"), s.get("status", "-"), s.get("decision") or "", why,
                     _duration(s.get("duration_s"))])
    return rows


def _eval_rows(models: dict[str, dict[str, Any]], skip: Sequence[str] = ()) -> list[list[Any]]:
    rows = []
    for key, label in _EVAL_ROWS:
        if key in skip or all(_num(ev.get(key)) is None for ev in models.values()):
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


def _breakdown_rows(models: dict[str, dict[str, Any]], pass_fail: bool = False) -> list[list[Any]]:
    rows = []
    for fld, value in _breakdown_keys(*models.values()):
        n = next((n for ev in models.values() if (n := _cell(ev, fld, value, "n")) is not None), None)
        row: list[Any] = [fld, value, _f(n)]
        for metric, _ in _eval_metrics(pass_fail):
            row += [_f(_cell(ev, fld, value, metric)) for ev in models.values()]
            if "baseline" in models and "candidate" in models:
                row.append(_delta(_cell(models["baseline"], fld, value, metric),
                                  _cell(models["candidate"], fld, value, metric)))
        rows.append(row)
    return rows


def _breakdown_headers(models: dict[str, dict[str, Any]], pass_fail: bool = False) -> list[str]:
    both = "baseline" in models and "candidate" in models
    headers = ["field", "value", "n"]
    for label in (("pass@1",) if pass_fail else ("pass@1", "reward")):
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


def _pass_rate_section(doc: _Doc, histograms: list[tuple[str, int, list[int], list[float]]],
                       plot: str | None) -> None:
    doc.h(3, "Per-prompt pass rates")
    doc.p("How many prompts passed 0, 1, ... k of their k rollouts, beside the counts expected if every prompt "
          "passed with the check's mean pass rate (binomial). Bars at 0 and k are the all-fail and all-pass "
          "prompts; only the bars between them carry a learning signal.")
    for stage, k, counts, expected in histograms:
        n = sum(counts)
        observed_mixed = sum(counts[1:k]) / n
        expected_mixed = sum(expected[1:k]) / n
        p = sum(j * c for j, c in enumerate(counts)) / (n * k)
        doc.table([f"{stage}: passing rollouts", "prompts", "share", "expected at the mean rate"],
                  [[f"{j} of {k}", c, _pct(c / n), f"{e:.1f}"] for j, (c, e) in enumerate(zip(counts, expected,
                                                                                               strict=True))])
        doc.p(_mixed_gap(observed_mixed, expected_mixed, p, n), lead=f"{stage}:")
    if plot:
        doc.img(plot, "per-prompt pass-rate histogram with the binomial expectation")


def _samples_section(doc: _Doc, rows: dict[str, list[dict[str, Any]]], prompts: dict[str, str]) -> None:
    ids, wins, losses = sample_ids(rows.get("baseline"), rows.get("candidate"))
    if not rows.get("baseline") or not rows.get("candidate"):
        return
    doc.h(3, "Sample outputs where the baseline and the candidate differ")
    if not ids:
        doc.p("The baseline and the candidate pass and fail the same prompts.")
        return
    doc.p(f"On {wins} prompt(s) the candidate passes where the baseline fails, on {losses} the reverse; "
          f"{len(ids)} shown (answers cut at {_CLIP} characters).")
    base, cand = _by_id(rows["baseline"]), _by_id(rows["candidate"])

    def verdict(r: dict[str, Any]) -> str:
        reward = _num(r.get("reward"))
        return ("pass" if r.get("passed") else "fail") + (f", reward {reward:.3g}" if reward is not None else "")

    for pid in ids:
        b, c = base[pid], cand[pid]
        meta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        what = "candidate passes, baseline fails" if c.get("passed") else "baseline passes, candidate fails"
        doc.h(4, f"Prompt {pid}: {what}" + (f" ({', '.join(f'{k}={v}' for k, v in meta.items())})"
                                              if meta else ""))
        if prompts.get(pid):
            doc.pre(_clip(prompts[pid]), lead="prompt")
        doc.pre(_clip(c.get("reference_answer", b.get("reference_answer"))), lead="reference answer")
        doc.pre(_clip(b.get("completion")), lead=f"baseline ({verdict(b)})")
        doc.pre(_clip(c.get("completion")), lead=f"candidate ({verdict(c)})")


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


def _histograms(summary: dict[str, Any],
                rows: dict[str, list[dict[str, Any]]]) -> list[tuple[str, int, list[int], list[float]]]:
    """(check, k, observed counts, binomial expectation) per diversity check whose rows were kept."""
    out = []
    for d in summary.get("diversity") or []:
        stage = str(d.get("stage") or "diversity_check")
        found = _pass_histogram(rows.get(stage) or [])
        if found is not None:
            k, counts, p = found
            out.append((stage, k, counts, _binomial(sum(counts), k, p)))
    return out


def _build(summary: dict[str, Any], train_rows: dict[str, list[dict[str, Any]]], plots: dict[str, str],
           rows: dict[str, list[dict[str, Any]]], prompts: dict[str, str],
           airflow_url: str | None) -> tuple[_Doc, str]:
    cycle, max_cycles = summary.get("cycle", "?"), summary.get("max_cycles", "?")
    dag_id, run_id = summary.get("dag_id", "rft_cycle"), summary.get("run_id", "?")
    title = f"{dag_id} - {run_id} - cycle {cycle} of {max_cycles}"
    doc = _Doc()
    doc.h(1, f"Cycle report: {title}")
    outcome = str(summary.get("outcome", "?")).upper()
    doc.p(str(summary.get("outcome_reason") or ""), lead=f"Outcome: {outcome}.")
    if airflow_url:
        doc.link("Airflow:", "open this run in Airflow", airflow_url)
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
        histograms = _histograms(summary, rows)
        if histograms:
            _pass_rate_section(doc, histograms, plots.get("pass_rates"))

    models = _models(summary)
    if models:
        doc.h(2, "Evaluation")
        if "candidate" not in models:
            doc.p("No candidate was evaluated in this cycle; the baseline is shown alone.")
        pass_fail = _is_pass_fail(models, rows)
        if pass_fail:
            doc.p("The reward is pass/fail (every answer scores 1 or 0), so mean reward equals pass@1 and is "
                  "shown once.")
        unit, lengths = _length_rows(rows)
        headers = ["metric", *models] + (["change"] if {"baseline", "candidate"} <= set(models) else [])
        skip = (["mean_reward"] if pass_fail else []) + (["mean_response_tokens"] if lengths else [])
        doc.table(headers, _eval_rows(models, skip))
        if lengths:
            doc.h(3, f"Response length ({unit})")
            doc.table(["model", "answers", "min", "median", "p90", "max", "mean"], lengths)
        breakdown = _breakdown_rows(models, pass_fail)
        if breakdown:
            doc.h(3, "By category")
            doc.table(_breakdown_headers(models, pass_fail), breakdown)
        if plots.get("eval"):
            doc.img(plots["eval"], "baseline vs candidate")
        _samples_section(doc, rows, prompts)
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
    out_uri: str, summary: CycleSummary | dict[str, Any], train_rows: dict[str, list[dict[str, Any]]],
    rows: dict[str, list[dict[str, Any]]] | None = None, prompts: dict[str, str] | None = None,
    airflow_base_url: str | None = None,
) -> ReportResult:
    """Write report.md, report.html and plots/*.png into the folder `out_uri`; returns their URIs.

    `train_rows` maps a train stage ("sft", "rft") to its metrics.jsonl rows. `rows` maps "baseline" /
    "candidate" to their eval's per-prompt rows and "diversity_check" / "diversity_recheck" to the checks'
    per-prompt rollout rows (pass-rate histogram, sample outputs, answer lengths); `prompts` maps eval ids
    to prompt text for the samples. `airflow_base_url` (default: Airflow's `api.base_url`) links the run.
    Absent metrics, rows, stages and sections are left out of the report, never an error.
    """
    summary = dict(summary or {})
    train_rows = {str(stage): [r for r in (rs or []) if isinstance(r, dict)]
                  for stage, rs in (train_rows or {}).items()}
    rows = {str(name): [r for r in (rs or []) if isinstance(r, dict)] for name, rs in (rows or {}).items()}
    base_url = configured_base_url() if airflow_base_url is None else airflow_base_url
    images: dict[str, tuple[str, bytes | None]] = {}
    for stage, metric_rows in train_rows.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stage)
        images[f"train:{stage}"] = (f"plots/training_{safe}.png", _plot_training(stage, metric_rows))
    images["diversity"] = ("plots/diversity.png", _plot_diversity(summary.get("diversity") or []))
    images["pass_rates"] = ("plots/pass_rates.png", _plot_pass_rates(_histograms(summary, rows)))
    models = _models(summary)
    images["eval"] = ("plots/eval_comparison.png",
                      _plot_eval(models, _is_pass_fail(models, rows)) if models else None)
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

    doc, title = _build(summary, train_rows, plots, rows, prompts or {},
                        airflow_run_url(base_url, summary.get("dag_id"), summary.get("run_id")))
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
