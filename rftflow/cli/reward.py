"""``rftflow test``: score a JSONL file of rollouts with a reward function, print a score table and a summary.

Lets a user debug a reward handler (built-in or their own file) on real replies before paying for a job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rftflow.rewards.contract import RewardError, RewardLoadError, RewardResult, score_range
from rftflow.rewards.runner import load_reward, score

ROLLOUT_FIELDS = ("completion", "rollouts", "completions")
_RESERVED = ("id", "messages", "reference_answer", "tools", "metadata", *ROLLOUT_FIELDS)
_MAX_ISSUES_SHOWN = 20


class RolloutFileError(ValueError):
    """A rollouts file that cannot be scored; ``issues`` lists every bad line."""

    def __init__(self, path: str, issues: list[str]):
        self.issues = issues
        super().__init__(f"{path}: {len(issues)} problem{'s' if len(issues) != 1 else ''}:\n  "
                         + "\n  ".join(_grouped(issues)))


def _grouped(issues: list[str]) -> list[str]:
    """Issues as display lines; one message repeated on many lines is shown once with its line numbers."""
    by_message: dict[str, list[str]] = {}
    for issue in issues:
        where, _, message = issue.partition(": ")
        by_message.setdefault(message, []).append(where)
    lines = []
    for message, wheres in by_message.items():
        if len(wheres) <= 3:
            lines += [f"{w}: {message}" for w in wheres]
        else:
            file = wheres[0].rsplit(":", 1)[0]
            numbers = ", ".join(w.rsplit(":", 1)[-1] for w in wheres[:5])
            lines.append(f"{file}: lines {numbers} and {len(wheres) - 5} more: {message}" if len(wheres) > 5
                         else f"{file}: lines {numbers}: {message}")
    if len(lines) > _MAX_ISSUES_SHOWN:
        lines = lines[:_MAX_ISSUES_SHOWN] + [f"... and {len(lines) - _MAX_ISSUES_SHOWN} more"]
    return lines


@dataclass
class RewardTestReport:
    """What ``cmd_test`` scored: the samples, their results, and the summary numbers it printed."""

    reward: str
    samples: list[dict]
    results: list[RewardResult]
    elapsed_s: float
    mean: float | None
    metric_means: dict[str, float] = field(default_factory=dict)
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _HardExit(SystemExit):
    """os._exit() called by a handler scored in this process, turned into an error instead of ending rftflow."""

    def __init__(self, code: int):
        super().__init__(code)
        self.call = f"os._exit({code!r})"


@contextlib.contextmanager
def _exits_are_errors() -> Iterator[None]:
    """While an in-process handler runs, os._exit raises instead of ending this process with its status (0 would
    look like success). Only for this command: nothing else runs in the process meanwhile."""
    real = os._exit

    def refuse(code: int) -> None:
        raise _HardExit(code)

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real


def _message_issue(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"expected a non-empty list of {{role, content}}; got {type(messages).__name__}"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return f"[{i}]: expected an object with a role; got {json.dumps(m)[:60]}"
        if not isinstance(m.get("content"), str):
            return f"[{i}].content: expected a string; got {type(m.get('content')).__name__}"
    return None


def rollout_samples(row: dict, row_id: str) -> tuple[list[dict], str | None]:
    """Lambda-event samples for one rollouts row, or ([], reason) when the row has no usable rollout."""
    messages = row.get("messages")
    if (issue := _message_issue(messages)) is not None:
        return [], f"messages{issue if issue.startswith('[') else ': ' + issue}"
    texts: list[str]
    ids: list[str]
    if "rollouts" in row or "completions" in row:
        key = "rollouts" if "rollouts" in row else "completions"
        texts = row[key]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return [], f"{key}: expected a non-empty list of strings"
        ids = [f"{row_id}#{k}" for k in range(len(texts))]
    elif "completion" in row:
        if not isinstance(row["completion"], str):
            return [], f"completion: expected a string; got {type(row['completion']).__name__}"
        texts, ids = [row["completion"]], [row_id]
    elif messages[-1]["role"] == "assistant":
        texts, ids = [messages[-1]["content"]], [row_id]
    else:
        return [], ("no rollout: end messages with the assistant's reply, or add a \"completion\" string or a "
                    "\"rollouts\" list")
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
    prompt = messages[: last_user + 1] if messages[-1]["role"] == "assistant" else messages
    ref = row.get("reference_answer")
    extra = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    extra.update({k: v for k, v in row.items() if k not in _RESERVED})
    extra.pop("reference_answer", None)
    if ref is None and isinstance(row.get("metadata"), dict):
        ref = row["metadata"].get("reference_answer")
    samples = [
        {
            "id": sid,
            "messages": [dict(m) for m in prompt] + [{"role": "assistant", "content": text}],
            "reference_answer": ref,
            "metadata": {"reference_answer": ref, **extra},
        }
        for sid, text in zip(ids, texts, strict=True)
    ]
    return samples, None


def read_rollouts(path: str) -> list[dict]:
    """All samples in a rollouts JSONL file; raises RolloutFileError listing every bad line."""
    file = Path(path)
    if not file.is_file():
        raise RolloutFileError(path, [f"{path}: no such file"])
    samples: list[dict] = []
    issues: list[str] = []
    seen: dict[str, int] = {}
    with file.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{file.name}:{line_no}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                issues.append(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                issues.append(f"{where}: invalid JSON: {exc}")
                continue
            if not isinstance(row, dict):
                issues.append(f"{where}: expected a JSON object; got {type(row).__name__}")
                continue
            row_id = row.get("id", f"{file.stem}-{line_no}")
            if not isinstance(row_id, (str, int)) or isinstance(row_id, bool) or row_id == "":
                issues.append(f"{where}: id: expected a non-empty string; got {json.dumps(row_id)}")
                continue
            row_samples, issue = rollout_samples(row, str(row_id))
            if issue:
                issues.append(f"{where}: {issue}")
                continue
            for s in row_samples:
                if s["id"] in seen:
                    issues.append(f"{where}: id: {s['id']!r} already used on line {seen[s['id']]}")
                else:
                    seen[s["id"]] = line_no
                    samples.append(s)
    if issues:
        raise RolloutFileError(path, issues)
    if not samples:
        raise RolloutFileError(path, [f"{path}: no rollouts (the file is empty)"])
    return samples


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split("\n")).strip() if text is not None else ""


def print_table(samples: list[dict], results: list[RewardResult], out: TextIO, max_rows: int = 50) -> None:
    """One line per sample: id, score, the reference answer, the completion scored (its tail, where answers
    usually are) and the reward's metrics (name=value)."""
    id_width = min(32, max([len("id")] + [len(r.id) for r in results]))
    by_id = {s["id"]: s for s in samples}
    out.write(f"{'id':<{id_width}}  {'score':>7}  {'reference':<16}  {'completion (end)':<40}  metrics\n")
    out.write(f"{'-' * id_width}  {'-' * 7}  {'-' * 16}  {'-' * 40}  {'-' * 30}\n")
    shown = results if max_rows <= 0 else results[:max_rows]
    for r in shown:
        sample = by_id.get(r.id, {})
        reference = _clip(_one_line(sample.get("reference_answer")), 16)
        completion = _one_line((sample.get("messages") or [{}])[-1].get("content", ""))
        tail = completion if len(completion) <= 40 else "…" + completion[-39:]
        metrics = "  ".join(f"{m.name}={_fmt(m.value)}" for m in r.metrics_list)
        out.write(f"{_clip(r.id, id_width):<{id_width}}  {r.aggregate_reward_score:>7.3f}  {reference:<16}  "
                  f"{tail:<40}  {_clip(metrics, 100)}\n")
    if len(shown) < len(results):
        out.write(f"... {len(results) - len(shown)} more rows (--rows 0 shows all)\n")


def _summarise(samples: list[dict], results: list[RewardResult], by: str | None) -> tuple[
        float | None, dict[str, float], dict[str, dict[str, float]], str | None]:
    scores = [r.aggregate_reward_score for r in results]
    mean = sum(scores) / len(scores) if scores else None
    sums: dict[str, list[float]] = {}
    for r in results:
        for m in r.metrics_list:
            sums.setdefault(m.name, []).append(m.value)
    metric_means = {k: sum(v) / len(v) for k, v in sums.items()}
    if by is None and any("category" in s.get("metadata", {}) for s in samples):
        by = "category"
    groups: dict[str, list[float]] = {}
    if by:
        for s, r in zip(samples, results, strict=True):
            key = s.get("metadata", {}).get(by)
            groups.setdefault("(missing)" if key is None else str(key), []).append(r.aggregate_reward_score)
    by_group = {k: {"mean": sum(v) / len(v), "n": float(len(v))} for k, v in sorted(groups.items())}
    return mean, metric_means, by_group, by


def cmd_test(reward_spec: str, rollouts_path: str, *, workers: int = 0, timeout_s: float = 60.0,
             batch_size: int = 128, max_rows: int = 50, by: str | None = None, out_path: str | None = None,
             stream: TextIO | None = None, strict: bool = False, bounds: tuple[float, float] | None = None,
             err: TextIO | None = None) -> RewardTestReport:
    """Score every rollout in ``rollouts_path`` with ``reward_spec``; print the table and a summary.

    Extra fields in the handler's output are printed as warnings (to ``err``) and kept in ``--out``; ``strict``
    refuses them. Scores outside ``bounds`` (default [-10, 10]) are errors."""
    out = stream or sys.stdout
    reward = load_reward(reward_spec)
    samples = read_rollouts(rollouts_path)
    warnings: list[str] = []
    started = time.perf_counter()
    try:
        with _exits_are_errors() if workers <= 0 else contextlib.nullcontext():
            results = score(reward, samples, workers=workers, timeout_s=timeout_s, batch_size=batch_size,
                            strict=strict, bounds=bounds, warnings=warnings)
    finally:
        reward.close()
    elapsed = time.perf_counter() - started
    for warning in dict.fromkeys(warnings):
        print(f"rftflow test: warning: reward {reward.name}: {warning}", file=err or sys.stderr)
    mean, metric_means, by_group, by = _summarise(samples, results, by)

    print_table(samples, results, out, max_rows)
    rate = len(results) / elapsed if elapsed > 0 else float("inf")
    positive = sum(1 for r in results if r.aggregate_reward_score > 0)
    scores = [r.aggregate_reward_score for r in results]
    out.write(f"\nreward {reward.name} ({reward.path}): {len(results)} samples in {elapsed:.2f} s "
              f"({rate:,.0f} samples/s)\n")
    out.write(f"score: mean {mean:.3f}  min {min(scores):.3f}  max {max(scores):.3f}  "
              f"> 0: {positive}/{len(results)} ({positive / len(results):.1%})\n")
    if metric_means:
        out.write("metrics (mean): " + "  ".join(f"{k} {_fmt(v)}" for k, v in metric_means.items()) + "\n")
    if by_group:
        out.write(f"by {by}: " + "  ".join(f"{k} {g['mean']:.3f} (n={g['n']:.0f})" for k, g in by_group.items())
                  + "\n")
    if out_path:
        with open(out_path, "w", encoding="utf-8") as fh:
            for s, r in zip(samples, results, strict=True):
                row = {"id": r.id, "completion": s["messages"][-1]["content"], **r.model_dump(exclude={"id"})}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.write(f"scored rows written to {out_path}\n")
    return RewardTestReport(reward.name, samples, results, elapsed, mean, metric_means, by_group,
                            list(dict.fromkeys(warnings)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rftflow test``."""
    parser.add_argument("reward", help="built-in reward (numeric, exact_match, code_tests, llm_judge, shaping, "
                                       "shaped_<name>) or a handler file path[:function]")
    parser.add_argument("rollouts", help="JSONL of RFT rows, each ending with the assistant's reply or carrying a "
                                         "\"completion\" string or a \"rollouts\" list")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1: a handler that hangs, crashes, exits or kills its "
                             "process is stopped and reported; 0: score in this process, faster to start)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per batch before giving up")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per handler call (services: 128)")
    parser.add_argument("--rows", type=int, default=50, help="table rows to print (0: all)")
    parser.add_argument("--by", default=None, help="metadata field for the breakdown (default: category)")
    parser.add_argument("--out", default=None, help="also write the scored rows to this JSONL file")
    parser.add_argument("--fail-under", type=float, default=None,
                        help="exit with status 1 when the mean score is below this")
    parser.add_argument("--strict", action="store_true",
                        help="refuse fields beyond the reward contract in the handler's output (default: warn "
                             "and keep them in --out)")
    parser.add_argument("--score-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="allowed range of aggregate_reward_score (default -10 10, or "
                             "RFTFLOW_REWARD_SCORE_RANGE)")


def run(args: argparse.Namespace) -> int:
    """Run ``rftflow test``; returns the exit status (0 ok, 1 reward failure or --fail-under, 2 bad input)."""
    bounds = tuple(args.score_range) if args.score_range else None
    if bounds is not None and not (all(math.isfinite(v) for v in bounds) and bounds[0] < bounds[1]):
        print(f"rftflow test: --score-range needs two finite numbers, LOW < HIGH; got {bounds}", file=sys.stderr)
        return 2
    try:
        if bounds is None:
            score_range()  # a bad RFTFLOW_REWARD_SCORE_RANGE is a usage error, said before any scoring
        report = cmd_test(args.reward, args.rollouts, workers=args.workers, timeout_s=args.timeout,
                          batch_size=args.batch_size, max_rows=args.rows, by=args.by, out_path=args.out,
                          strict=args.strict, bounds=bounds)  # type: ignore[arg-type]
    except (RewardLoadError, RolloutFileError) as exc:  # the command line names something unusable
        print(f"rftflow test: {exc}", file=sys.stderr)
        return 2
    except RewardError as exc:  # the handler hung, crashed or broke the contract
        print(f"rftflow test: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"rftflow test: {exc}", file=sys.stderr)
        return 2
    if args.fail_under is not None and (report.mean or 0.0) < args.fail_under:
        print(f"rftflow test: mean score {report.mean:.3f} is below --fail-under {args.fail_under}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rftflow test", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
