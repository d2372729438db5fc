"""Turns plain question/answer tables (CSV, TSV or JSONL) into RFT JSONL prompts with reference answers.

Every bad row is reported with its line number, and nothing is written unless the whole input is clean.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rftflow.data.dataset import (
    MAX_LINE_BYTES,
    RESERVED_FIELDS,
    DatasetError,
    DatasetIssue,
    iter_lines,
    open_binary,
    parse_json_object,
    uri_stem,
    write_records,
)

InputFormat = Literal["csv", "tsv", "jsonl"]
FORMATS_BY_SUFFIX: dict[str, InputFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote."""

    output_uri: str
    rows: int


def convert_qa(
    src_uri: str,
    dst_uri: str,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str = "id",
    system_prompt: str | None = None,
    prompt_template: str = "{question}",
    input_format: InputFormat | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ConvertResult:
    """Convert a question/answer file into RFT JSONL at ``dst_uri``.

    Each row becomes ``{"id", "messages": [system?, user], "reference_answer", <other columns>...}``: the user
    turn is ``prompt_template`` with ``{question}`` replaced; other columns are kept as metadata fields. Rows
    without an ``id_field`` value get ``f"{stem}-{line}"``. Raises DatasetError listing every bad row.
    """
    fmt = input_format or detect_format(src_uri)
    if "{question}" not in prompt_template:
        raise ValueError(f"prompt_template: must contain {{question}}; got {prompt_template!r}")
    if system_prompt is not None and not system_prompt.strip():
        raise ValueError("system_prompt: must not be empty when given")
    if src_uri == dst_uri:
        raise ValueError(f"output must differ from input; got {dst_uri!r} for both")

    stem = uri_stem(src_uri)
    rows: list[dict] = []
    issues: list[DatasetIssue] = []
    seen_ids: dict[str, int] = {}
    rows_in = iter_qa_rows(
        src_uri, fmt, max_line_bytes=max_line_bytes, required=(question_field, answer_field)
    )
    for line, item in rows_in:
        if isinstance(item, DatasetIssue):
            issues.append(item)
            continue
        row, row_issues = _to_rft_row(
            item, src_uri, line, stem, question_field, answer_field, id_field, system_prompt, prompt_template
        )
        if row is not None:
            if row["id"] in seen_ids:
                row_issues.append(
                    DatasetIssue(
                        src_uri,
                        line,
                        id_field,
                        f"duplicate id {json.dumps(row['id'])} (first used on line {seen_ids[row['id']]})",
                    )
                )
            else:
                seen_ids[row["id"]] = line
        issues += row_issues
        if row is not None and not row_issues:
            rows.append(row)
    if not issues and not rows:
        issues.append(DatasetIssue(src_uri, None, "", "no rows to convert"))
    if issues:
        raise DatasetError(issues, src_uri)
    write_records(dst_uri, rows)
    return ConvertResult(dst_uri, len(rows))


def detect_format(uri: str) -> InputFormat:
    """csv, tsv or jsonl, from the file name's suffix."""
    name = uri.rsplit("/", 1)[-1].lower()
    for suffix, fmt in FORMATS_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"{uri}: cannot tell the format from the name; expected one of {', '.join(FORMATS_BY_SUFFIX)}"
    )


def iter_qa_rows(
    src_uri: str,
    fmt: InputFormat,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    required: tuple[str, ...] = ("question", "answer"),
) -> Iterator[tuple[int, dict[str, Any] | DatasetIssue]]:
    """Yield ``(line, row)`` for each input row (a dict of column -> value) or ``(line, issue)`` for a bad one.

    For CSV/TSV the first non-blank row is the header; a header lacking a ``required`` column ends the read.
    """
    if fmt not in ("csv", "tsv", "jsonl"):
        raise ValueError(f"input format: expected one of csv, tsv, jsonl; got {fmt!r}")
    with open_binary(src_uri) as stream:
        if fmt == "jsonl":
            yield from _iter_jsonl(stream, src_uri, max_line_bytes)
        else:
            yield from _iter_csv(stream, src_uri, "\t" if fmt == "tsv" else ",", max_line_bytes, required)


def _iter_jsonl(stream, src_uri: str, max_line_bytes: int) -> Iterator[tuple[int, dict | DatasetIssue]]:
    for line, text, problem in iter_lines(stream, src_uri, max_line_bytes=max_line_bytes):
        if problem is not None:
            yield line, problem
            continue
        if not text.strip():
            continue
        row, error = parse_json_object(text)
        if error is not None:
            yield line, DatasetIssue(src_uri, line, "", error)
            continue
        yield line, row


def _iter_csv(
    stream, src_uri: str, delimiter: str, max_line_bytes: int, required: tuple[str, ...]
) -> Iterator[tuple[int, dict | DatasetIssue]]:
    pending: list[DatasetIssue] = []

    def lines() -> Iterator[str]:
        for _, text, problem in iter_lines(stream, src_uri, max_line_bytes=max_line_bytes):
            if problem is not None:
                pending.append(problem)
                yield "\n"  # a blank stand-in keeps csv's line count aligned with the file
            else:
                yield text + "\n"

    reader = csv.reader(lines(), delimiter=delimiter)
    header: list[str] | None = None
    header_line = end = 0
    while True:
        start = end + 1
        error: csv.Error | None = None
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            cells = None
        except csv.Error as exc:
            cells, error = [], exc
        for issue in pending:
            yield issue.line or start, issue
        pending.clear()
        if cells is None:
            return
        end = reader.line_num
        if error is not None:
            yield start, DatasetIssue(src_uri, start, "", f"unreadable CSV row: {error}")
            continue
        if all(not c.strip() for c in cells):
            continue
        if header is None:
            header, header_line = [c.strip() for c in cells], start
            dupes = sorted({c for c in header if header.count(c) > 1})
            missing = [c for c in required if c not in header]
            if dupes:
                yield (
                    start,
                    DatasetIssue(src_uri, start, "header", f"duplicate column names: {', '.join(dupes)}"),
                )
            for column in missing:
                option = "--question-field" if column == required[0] else "--answer-field"
                yield (
                    start,
                    DatasetIssue(
                        src_uri,
                        start,
                        "header",
                        f"missing column {json.dumps(column)}; found: {', '.join(header)} (choose another with {option})",
                    ),
                )
            if dupes or missing:
                return
            continue
        if len(cells) != len(header):
            yield (
                start,
                DatasetIssue(
                    src_uri,
                    start,
                    "",
                    f"expected {len(header)} fields as in the header on line {header_line}; got {len(cells)}",
                ),
            )
            continue
        yield start, dict(zip(header, cells, strict=True))


def _to_rft_row(
    item: dict[str, Any],
    src_uri: str,
    line: int,
    stem: str,
    question_field: str,
    answer_field: str,
    id_field: str,
    system_prompt: str | None,
    prompt_template: str,
) -> tuple[dict | None, list[DatasetIssue]]:
    issues: list[DatasetIssue] = []

    def bad(field_name: str, message: str) -> None:
        issues.append(DatasetIssue(src_uri, line, field_name, message))

    question = item.get(question_field)
    if question_field not in item:
        found = ", ".join(item) or "none"
        bad(question_field, f"missing field; found: {found} (choose the column with --question-field)")
    elif not isinstance(question, str):
        bad(question_field, f"expected a string; got {json.dumps(question, ensure_ascii=False)}")
    elif not question.strip():
        bad(question_field, "must not be empty")

    answer = item.get(answer_field)
    if answer_field not in item:
        found = ", ".join(item) or "none"
        bad(answer_field, f"missing field; found: {found} (choose the column with --answer-field)")
    elif isinstance(answer, bool) or answer is None or isinstance(answer, list):
        bad(answer_field, f"expected a string, number or JSON object; got {json.dumps(answer)}")
    elif isinstance(answer, int | float):
        answer = str(answer)  # AWS takes a string or an object; keep the number's text
    elif isinstance(answer, str) and not answer.strip():
        bad(answer_field, "must not be empty")
    elif isinstance(answer, dict) and not answer:
        bad(answer_field, "must not be an empty object")

    row_id = item.get(id_field)
    if row_id is None or (isinstance(row_id, str) and not row_id.strip()):
        row_id = f"{stem}-{line}"
    elif isinstance(row_id, bool) or not isinstance(row_id, str | int):
        bad(id_field, f"expected a string; got {json.dumps(row_id)}")
    else:
        row_id = str(row_id)

    extra = {k: v for k, v in item.items() if k not in (question_field, answer_field, id_field)}
    for key in extra:
        if key in RESERVED_FIELDS:
            bad(key, f"column name clashes with the RFT field {json.dumps(key)}; rename or drop it")
    if issues:
        return None, issues
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt_template.replace("{question}", question.strip())})
    return {"id": row_id, "messages": messages, "reference_answer": answer, **extra}, issues
