"""Dataset-level checks before a job is paid for: row counts, ids, train/eval leakage, prompt length, answers.

Runs Great Expectations Core over a flattened view of the records; writes validation.json and validation.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rftflow.data.dataset import (
    DatasetIssue,
    Kind,
    RftRecord,
    display_name,
    format_issues,
    read_records_and_issues,
)

Status = Literal["pass", "warn", "fail"]

DEFAULT_MAX_PROMPT_CHARS = 32_768
"""About 8,192 tokens at ~4 characters per token: the default Bedrock ``maxPromptLength``."""

EVAL_MIN_ROWS = 100
"""Fewer held-out prompts than this cannot show a few points of improvement reliably (warning only)."""

MAX_DETAILS = 20
"""Offending rows listed per check in the reports."""

TEXT_COMPARING_REWARDS = ("exact_match",)
"""Built-in rewards that compare the reference answer as text: a number is compared in its text form."""

REPORT_JSON = "validation.json"
REPORT_MARKDOWN = "validation.md"


@dataclass(frozen=True)
class RowLimit:
    """How many rows a backend takes for one kind of dataset, and whether breaking the minimum is fatal."""

    min_rows: int
    max_rows: int | None
    below_min: Status
    source: str


ROW_LIMITS: dict[str, dict[str, RowLimit]] = {
    "local": {
        "rft": RowLimit(
            100, None, "warn", "local runs take any size, but under 100 rows results are mostly noise"
        ),
        "sft": RowLimit(
            100, None, "warn", "local runs take any size, but under 100 rows results are mostly noise"
        ),
    },
    "ray": {
        "rft": RowLimit(100, None, "warn", "a Ray cluster takes any size, but under 100 rows results are mostly noise"),
        "sft": RowLimit(100, None, "warn", "a Ray cluster takes any size, but under 100 rows results are mostly noise"),
    },
    "sagemaker": {
        "rft": RowLimit(100, None, "warn", "SageMaker recommends at least 100 examples"),
        "sft": RowLimit(100, None, "warn", "SageMaker recommends at least 100 examples"),
    },
    "bedrock": {
        "rft": RowLimit(100, 20_000, "fail", "Bedrock RFT accepts 100-20,000 prompts"),
        "sft": RowLimit(200, 20_000, "fail", "Bedrock SFT for Nova 2 Lite accepts 200-20,000 records"),
    },
}


@dataclass
class Check:
    """One check's outcome on one split: what was observed, what was expected, and the rows at fault."""

    name: str
    split: str
    status: Status
    observed: Any
    expected: str
    description: str
    expectation: str | None = None
    details: list[str] = field(default_factory=list)
    observed_text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationReport:
    """All checks of one validation run, with the URIs of the JSON and Markdown reports written."""

    train_uri: str
    eval_uri: str | None
    backend: str
    kind: str
    rows: dict[str, int]
    checks: list[Check]
    settings: dict[str, Any]
    checked_at: str
    json_uri: str | None = None
    markdown_uri: str | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(c.status != "fail" for c in self.checks)

    @property
    def status(self) -> Status:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "ok": self.ok,
            "backend": self.backend,
            "kind": self.kind,
            "checked_at": self.checked_at,
            "files": {
                split: {"uri": uri, "rows": self.rows.get(split, 0)}
                for split, uri in (("train", self.train_uri), ("eval", self.eval_uri))
                if uri is not None
            },
            "train_rows": self.rows.get("train", 0),
            "eval_rows": self.rows.get("eval", 0) if self.eval_uri is not None else None,
            "json_uri": self.json_uri,
            "markdown_uri": self.markdown_uri,
            "settings": self.settings,
            "checks": [c.to_dict() for c in self.checks],
        }

    def summary(self) -> str:
        """A terminal-friendly summary: one line per check, then details of failures and warnings."""
        files = f"{self.train_uri} ({self.rows.get('train', 0):,} rows)"
        if self.eval_uri:
            files += f" + {self.eval_uri} ({self.rows.get('eval', 0):,} rows)"
        head = {"pass": "passed", "warn": "passed with warnings", "fail": "FAILED"}[self.status]
        lines = [f"dataset validation {head}: {files}; backend {self.backend}, kind {self.kind}"]
        width = max(len(c.name) for c in self.checks)
        for c in self.checks:
            lines.append(
                f"  {c.status.upper():4}  {c.split:5}  {c.name:{width}}  "
                f"observed {c.observed_text or _fmt(c.observed)}; expected {c.expected}"
                + (f" ({c.description})" if c.status != "pass" else "")
            )
        for c in self.checks:
            if c.status != "pass" and c.details:
                lines.append(f"{c.split} {c.name}:")
                lines.extend(f"    {d}" for d in c.details)
        if self.json_uri:
            lines.append(f"reports: {self.json_uri}, {self.markdown_uri}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        icon = {"pass": "PASS", "warn": "WARN", "fail": "**FAIL**"}
        lines = [
            f"# Dataset validation: {self.status.upper()}",
            "",
            f"- train: `{self.train_uri}` ({self.rows.get('train', 0):,} rows)",
        ]
        if self.eval_uri:
            lines.append(f"- eval: `{self.eval_uri}` ({self.rows.get('eval', 0):,} rows)")
        lines += [
            f"- backend: {self.backend}, kind: {self.kind}",
            f"- settings: {', '.join(f'{k}={v}' for k, v in self.settings.items())}",
            f"- checked at: {self.checked_at}",
            "",
            "| Status | Split | Check | Observed | Expected | What it means |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            cells = [
                icon[c.status],
                c.split,
                f"`{c.name}`",
                c.observed_text or _fmt(c.observed),
                c.expected,
                c.description,
            ]
            lines.append("| " + " | ".join(_md_cell(x) for x in cells) + " |")
        flagged = [c for c in self.checks if c.status != "pass" and c.details]
        if flagged:
            lines += ["", "## Details"]
        for c in flagged:
            lines += ["", f"### {c.split} `{c.name}` ({c.status})", ""]
            lines += [f"- `{d}`" for d in c.details]
        return "\n".join(lines) + "\n"


class DatasetValidationFailed(ValueError):
    """Validation found failing checks; ``report`` holds them all and the message summarises them."""

    def __init__(self, report: ValidationReport, issues: Sequence[DatasetIssue] = ()):
        self.report = report
        self.issues = list(issues)
        super().__init__(report.summary())


def prompt_hash(record: RftRecord) -> str:
    """sha256 of the record's user turns, case-folded with whitespace collapsed.

    System turns are left out so that a different system prompt cannot hide an eval question seen in training.
    """
    text = "\n".join(str(m.get("content") or "") for m in record.prompt_messages() if m.get("role") == "user")
    normal = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def validate_dataset(
    train_uri: str,
    eval_uri: str | None = None,
    *,
    backend: str = "local",
    kind: Kind = "rft",
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    min_reference_share: float | None = None,
    report_dir_uri: str | None = None,
    write_report: bool = True,
    raise_on_failure: bool = True,
    reward: str | None = None,
    region: str | None = None,
    flavour: str | None = None,
    model: str | None = None,
    customizations: tuple[str, ...] = ("SFT", "RFT"),
) -> ValidationReport:
    """Validate a training file (and optionally its held-out eval file) for ``backend``.

    First every row is checked by the reader (schema problems fail the run); the dataset-level checks then run on
    the rows that could be read, so one pass reports both kinds of problem.
    Then the Great Expectations checks run (see ``run_checks``). Reports go to ``report_dir_uri`` or next to
    the training file. Raises DatasetValidationFailed when a check fails (unless ``raise_on_failure=False``).
    ``min_reference_share`` defaults to 1.0 for RFT prompts and 0.0 for SFT demonstrations. ``reward`` (the
    stage's reward name, when known) limits the ``reference_text`` warning to rewards that compare text.
    For the AWS backends a ``region`` check fails when the backend cannot train Nova there
    (rftflow.backends.aws.availability); ``region``/``flavour`` default to the backend's options from the environment or
    Airflow Variables (RFTFLOW_<BACKEND>_REGION_NAME, rftflow_aws_region_name, ...), then AWS_REGION /
    AWS_DEFAULT_REGION; with no region known the check is left out. ``model`` picks the table's row (Nova 2
    Lite unless it names one of Bedrock's open-weight models); ``customizations`` are the ones the cycle may run.
    """
    _check_settings(backend, kind, max_prompt_chars, min_reference_share)
    splits: dict[str, tuple[str, Kind]] = {"train": (train_uri, kind)}
    if eval_uri is not None:
        splits["eval"] = (eval_uri, "rft")

    records: dict[str, list[RftRecord]] = {}
    issues: list[DatasetIssue] = []
    schema_checks: list[Check] = []
    for split, (uri, split_kind) in splits.items():
        rows, found = read_records_and_issues(uri, split_kind)
        if not rows and not found:
            found = [DatasetIssue(uri, None, "", "no records: the file is empty or has only blank lines")]
        records[split] = rows
        issues += found
        schema_checks.append(_schema_check(split, split_kind, uri, rows, found))

    checks = schema_checks
    if records["train"]:  # the dataset-level checks run on the rows that could be read, beside any schema
        # problems, so one pass reports both (a missing reference answer and a bad role together)
        checks += run_checks(
            records["train"],
            records.get("eval") or None,
            backend=backend,
            kind=kind,
            max_prompt_chars=max_prompt_chars,
            min_reference_share=min_reference_share,
            names={split: display_name(uri) for split, (uri, _) in splits.items()},
            reward=reward,
        )
    region_check = _region_check(backend, region, flavour, model, customizations)
    if region_check is not None:
        checks.append(region_check)
    report = ValidationReport(
        train_uri=train_uri,
        eval_uri=eval_uri,
        backend=backend,
        kind=kind,
        rows={split: len(rows) for split, rows in records.items()},
        checks=checks,
        settings={
            "max_prompt_chars": max_prompt_chars,
            "min_reference_share": _reference_share(kind, min_reference_share),
        },
        checked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if write_report:
        write_reports(report, report_dir_uri or _parent_uri(train_uri))
    if raise_on_failure and not report.ok:
        raise DatasetValidationFailed(report, issues)
    return report


def run_checks(
    train: Sequence[RftRecord],
    held_out: Sequence[RftRecord] | None = None,
    *,
    backend: str = "local",
    kind: Kind = "rft",
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    min_reference_share: float | None = None,
    names: dict[str, str] | None = None,
    reward: str | None = None,
) -> list[Check]:
    """Run the dataset-level checks with Great Expectations on records already read; returns every check.

    Per split: ``row_count`` (backend limits), ``unique_ids``, ``last_turn`` (user for RFT prompts, assistant
    for SFT demonstrations), ``prompt_chars`` (<= max_prompt_chars), ``reference_share`` (rows with a
    reference answer), ``duplicate_prompts`` (warning only). For eval: ``not_in_train`` (no eval prompt also
    in train, compared by ``prompt_hash``). ``reference_text`` (warning only) lists rows whose reference answer
    is a number or boolean when the reward is unknown or one of TEXT_COMPARING_REWARDS.
    """
    _check_settings(backend, kind, max_prompt_chars, min_reference_share)
    names = {"train": "train", "eval": "eval", **(names or {})}
    splits: dict[str, tuple[Sequence[RftRecord], Kind]] = {"train": (train, kind)}
    if held_out is not None:
        splits["eval"] = (held_out, "rft")
    frames = {split: _frame(rows) for split, (rows, _) in splits.items()}
    plans = {
        split: _split_plans(split, split_kind, backend, max_prompt_chars, min_reference_share)
        for split, (_, split_kind) in splits.items()
    }
    if reward is None or reward in TEXT_COMPARING_REWARDS:
        for split in plans:
            plans[split].append(_reference_text_plan(reward))
    if held_out is not None:
        # A derived boolean column keeps the expectation's value set tiny; GX copies value sets many times.
        frames["eval"]["prompt_in_train"] = frames["eval"]["prompt_hash"].isin(
            set(frames["train"]["prompt_hash"])
        )
        plans["eval"].append(
            _Plan(
                "not_in_train",
                "fail",
                "ExpectColumnValuesToNotBeInSet",
                {"column": "prompt_in_train", "value_set": [True]},
                "0 rows",
                f"eval rows whose prompt (user turns, case and spacing ignored) is also in {names['train']}",
            )
        )

    results = _run_great_expectations(frames, plans)
    checks: list[Check] = []
    for split, (rows, _) in splits.items():
        for plan in plans[split]:
            checks.append(
                _to_check(split, plan, results[split][plan.name], rows, names[split], train, names["train"])
            )
    return checks


# ---------------------------------------------------------------------------------------------------------
# Internals


@dataclass
class _Plan:
    name: str
    severity: Status
    expectation: str
    kwargs: dict[str, Any]
    expected: str
    description: str


def _split_plans(
    split: str, kind: Kind, backend: str, max_prompt_chars: int, min_reference_share: float | None
) -> list[_Plan]:
    if split == "train":
        limit = ROW_LIMITS[backend][kind]
        rows_kwargs = {"min_value": limit.min_rows, "max_value": limit.max_rows}
        rows_expected = (
            f"{limit.min_rows:,}-{limit.max_rows:,} rows" if limit.max_rows else f">= {limit.min_rows:,} rows"
        )
        rows_plan = _Plan(
            "row_count",
            limit.below_min,
            "ExpectTableRowCountToBeBetween",
            rows_kwargs,
            rows_expected,
            limit.source,
        )
    else:
        rows_plan = _Plan(
            "row_count",
            "warn",
            "ExpectTableRowCountToBeBetween",
            {"min_value": EVAL_MIN_ROWS, "max_value": None},
            f">= {EVAL_MIN_ROWS} rows",
            "a smaller held-out set cannot show a few points of improvement reliably",
        )
    share = _reference_share(kind, min_reference_share)
    last_role = "user" if kind == "rft" else "assistant"
    return [
        rows_plan,
        _Plan(
            "unique_ids",
            "fail",
            "ExpectColumnValuesToBeUnique",
            {"column": "id"},
            "0 rows",
            "rows repeating an earlier row's id",
        ),
        _Plan(
            "last_turn",
            "fail",
            "ExpectColumnValuesToBeInSet",
            {"column": "last_role", "value_set": [last_role]},
            "0 rows",
            f"rows whose last turn is not the {last_role}'s",
        ),
        _Plan(
            "prompt_chars",
            "fail",
            "ExpectColumnValuesToBeBetween",
            {"column": "prompt_chars", "min_value": 1, "max_value": max_prompt_chars},
            f"<= {max_prompt_chars:,} chars",
            "longest prompt in characters (system + user turns)",
        ),
        _Plan(
            "reference_share",
            "fail",
            "ExpectColumnValuesToNotBeNull",
            {"column": "reference", "mostly": share},
            f">= {share * 100:g}% of rows",
            "share of rows with a reference answer",
        ),
        _Plan(
            "duplicate_prompts",
            "warn",
            "ExpectColumnValuesToBeUnique",
            {"column": "prompt_hash"},
            "0 rows",
            "rows repeating an earlier row's prompt (user turns, case and spacing ignored)",
        ),
    ]


def _aws_setting(backend: str, name: str) -> str | None:
    from rftflow.options import setting

    value = setting(name, (backend, "aws"))
    if value is None and name == "region_name":
        value = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return value or None


def _region_check(backend: str, region: str | None, flavour: str | None, model: str | None = None,
                  customizations: tuple[str, ...] = ("SFT", "RFT")) -> Check | None:
    """Fail when the AWS backend cannot run the cycle (its customizations and eval) in the region, or has no
    path for them on the model; None off AWS."""
    if backend not in ("sagemaker", "bedrock"):
        return None
    from rftflow.backends.aws.availability import NOVA_2_LITE, region_problems, supported_regions
    from rftflow.backends.aws.bedrock_openai import open_weight_model

    region = region or _aws_setting(backend, "region_name")
    if not region:
        return None
    flavour = flavour or _aws_setting(backend, "flavour") or "training_job"
    from rftflow.backends.aws.availability import OPEN_WEIGHT_HUB
    from rftflow.backends.aws.sagemaker_jobs import is_open_weight_model

    if backend == "bedrock":
        target = open_weight_model(model or "") or NOVA_2_LITE
    else:
        target = OPEN_WEIGHT_HUB if model and is_open_weight_model(model) else NOVA_2_LITE
    problems = region_problems(backend, region, flavour=flavour, customizations=customizations, model=target)
    where = f"{backend} ({flavour})" if backend == "sagemaker" else backend
    supported = ", ".join(supported_regions(backend, flavour=flavour, customizations=customizations, model=target))
    return Check(
        "region",
        "setup",
        "fail" if problems else "pass",
        region,
        supported or "none",
        f"regions where {where} can customize {target} (rftflow/backends/aws/availability.py)",
        None,
        problems,
        region,
    )


def _reference_text_plan(reward: str | None) -> _Plan:
    who = f"the {reward} reward" if reward else "a built-in text reward (exact_match)"
    return _Plan(
        "reference_text",
        "warn",
        "ExpectColumnValuesToNotBeInSet",
        {"column": "reference_is_scalar", "value_set": [True]},
        "0 rows",
        f"rows whose reference_answer is a number or boolean: valid, but {who} compares its text form "
        '(1234567.5 is read as "1.23457e+06", true as "yes"); quote it if the exact text matters',
    )


def _is_scalar_reference(value: Any) -> bool:
    return isinstance(value, bool | int | float)


def _frame(records: Sequence[RftRecord]):
    import pandas as pd

    return pd.DataFrame(
        {
            "id": [r.id for r in records],
            "line": [r.line for r in records],
            "last_role": [r.messages[-1].get("role") if r.messages else None for r in records],
            "prompt_chars": [len(r.prompt_text()) for r in records],
            "reference": [_reference_key(r.reference_answer) for r in records],
            "prompt_hash": [prompt_hash(r) for r in records],
            "reference_is_scalar": [_is_scalar_reference(r.reference_answer) for r in records],
        },
        columns=["id", "line", "last_role", "prompt_chars", "reference", "prompt_hash", "reference_is_scalar"],
    )


def _reference_key(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _run_great_expectations(
    frames: dict[str, Any], plans: dict[str, list[_Plan]]
) -> dict[str, dict[str, Any]]:
    """Run each split's expectations through an ephemeral context; results keyed by split, then check name."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("rftflow")
    results: dict[str, dict[str, Any]] = {}
    for split, frame in frames.items():
        batch = source.add_dataframe_asset(split).add_batch_definition_whole_dataframe(split)
        expectations = [
            getattr(gxe, plan.expectation)(**plan.kwargs, meta={"check": plan.name}) for plan in plans[split]
        ]
        suite = context.suites.add(gx.ExpectationSuite(name=split, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=split, data=batch, suite=suite)
        )
        outcome = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
        results[split] = {r.expectation_config.meta["check"]: r for r in outcome.results}
    return results


def _to_check(
    split: str,
    plan: _Plan,
    result: Any,
    rows: Sequence[RftRecord],
    file_name: str,
    train: Sequence[RftRecord],
    train_name: str,
) -> Check:
    """Turn one GX result into a Check, naming the offending rows by file, line and id."""
    status: Status = "pass" if result.success else plan.severity
    data = result.result or {}
    bad_rows = [rows[i] for i in (data.get("unexpected_index_list") or [])]
    details: list[str] = []

    def at(r: RftRecord) -> str:
        return f"{file_name}:{r.line} (id {r.id})"

    if plan.name == "row_count":
        observed: Any = int(data.get("observed_value", len(rows)))
        text = f"{observed:,} rows"
        if observed == 0:
            status = "fail"  # whatever the backend, there is nothing to train on or measure
    elif plan.name == "prompt_chars":
        observed = max((len(r.prompt_text()) for r in rows), default=0)
        text = f"{observed:,} chars (longest)"
        details = [f"{at(r)}: {len(r.prompt_text()):,} chars" for r in bad_rows]
    elif plan.name == "reference_share":
        with_reference = len(rows) - int(data.get("unexpected_count", 0))
        observed = round(with_reference / len(rows), 4) if rows else 0.0
        text = f"{observed:.1%} ({with_reference:,} of {len(rows):,} rows)"
        details = [f"{at(r)}: no reference_answer" for r in bad_rows]
    elif plan.name == "not_in_train":
        first = _first_rows(train, prompt_hash)
        details = [
            f"{at(r)} = {train_name}:{first[prompt_hash(r)].line} (id {first[prompt_hash(r)].id})"
            for r in bad_rows
        ]
        observed, text = len(bad_rows), f"{len(bad_rows):,} rows"
    elif plan.name in ("unique_ids", "duplicate_prompts"):
        # GX flags every row of a duplicate group; count and list only those repeating an earlier row.
        key = (lambda r: r.id) if plan.name == "unique_ids" else prompt_hash
        first = _first_rows(rows, key)
        repeats = [(r, first[key(r)]) for r in bad_rows if first[key(r)] is not r]
        what = "id {quoted}" if plan.name == "unique_ids" else "prompt"
        details = [
            f"{at(r)}: same {what.format(quoted=json.dumps(r.id))} as line {f.line}" for r, f in repeats
        ]
        observed, text = len(repeats), f"{len(repeats):,} rows"
    elif plan.name == "reference_text":
        details = [f"{at(r)}: reference_answer is {json.dumps(r.reference_answer)}" for r in bad_rows]
        observed, text = len(bad_rows), f"{len(bad_rows):,} rows"
    else:  # last_turn
        details = [f"{at(r)}: last turn is {json.dumps(r.messages[-1].get('role'))}" for r in bad_rows]
        observed, text = len(bad_rows), f"{len(bad_rows):,} rows"

    error = _gx_error(result.exception_info)
    if error:
        status, details = "fail", [f"the check could not run: {error}"]
    if len(details) > MAX_DETAILS:
        details = details[:MAX_DETAILS] + [f"... and {len(details) - MAX_DETAILS} more"]
    return Check(
        plan.name, split, status, observed, plan.expected, plan.description, plan.expectation, details, text
    )


def _gx_error(info: Any) -> str | None:
    """The exception message in a GX result's exception_info (flat, or keyed by metric), if any was raised."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    nested = (_gx_error(v) for v in info.values() if isinstance(v, dict))
    return next((e for e in nested if e), None)


def _first_rows(records: Sequence[RftRecord], key) -> dict[Any, RftRecord]:
    first: dict[Any, RftRecord] = {}
    for r in records:
        first.setdefault(key(r), r)
    return first


def _schema_check(split: str, kind: Kind, uri: str, rows: list, issues: list[DatasetIssue]) -> Check:
    what = "RFT prompts" if kind == "rft" else "SFT demonstrations"
    if not issues:
        return Check(
            "schema",
            split,
            "pass",
            0,
            "0 problems",
            f"every row reads as {what}",
            None,
            [],
            f"{len(rows):,} rows ok",
        )
    lines = len({i.line for i in issues if i.line})
    details = [d.strip() for d in format_issues(issues, uri).splitlines()[1:]]
    text = f"{len(issues):,} problems on {lines:,} lines" if lines else f"{len(issues):,} problems"
    return Check(
        "schema",
        split,
        "fail",
        len(issues),
        "0 problems",
        f"rows that cannot be read as {what}",
        None,
        details,
        text,
    )


def _reference_share(kind: Kind, min_reference_share: float | None) -> float:
    if min_reference_share is not None:
        return min_reference_share
    return 1.0 if kind == "rft" else 0.0


def _check_settings(
    backend: str, kind: str, max_prompt_chars: int, min_reference_share: float | None
) -> None:
    if backend not in ROW_LIMITS:
        raise ValueError(f"backend: expected one of {', '.join(ROW_LIMITS)}; got {backend!r}")
    if kind not in ("rft", "sft"):
        raise ValueError(f"kind: expected one of rft, sft; got {kind!r}")
    if max_prompt_chars < 1:
        raise ValueError(f"max_prompt_chars: expected a positive number; got {max_prompt_chars}")
    if min_reference_share is not None and not 0.0 <= min_reference_share <= 1.0:
        raise ValueError(f"min_reference_share: expected a share between 0 and 1; got {min_reference_share}")


def write_reports(report: ValidationReport, report_dir_uri: str) -> ValidationReport:
    """Write validation.json and validation.md into ``report_dir_uri`` and record their URIs on the report."""
    from rftflow.artifacts import store

    report.json_uri = store.join(report_dir_uri, REPORT_JSON)
    report.markdown_uri = store.join(report_dir_uri, REPORT_MARKDOWN)
    store.write_text(
        report.json_uri, json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"
    )
    store.write_text(report.markdown_uri, report.to_markdown())
    return report


def _parent_uri(uri: str) -> str:
    from rftflow.artifacts import store

    path = store.local_path(uri)
    if path is not None:
        return os.path.dirname(os.path.abspath(path))
    return uri.rstrip("/").rsplit("/", 1)[0]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
