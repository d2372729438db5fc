"""Reads and writes RFT prompt datasets and SFT demonstrations stored as JSONL.

Rows are streamed line by line in bounded chunks; every schema problem is collected as a line-numbered issue.

RFT rows follow the AWS "OpenAI RFT" format::

    {"id"?, "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "reference_answer"?: str | object, "tools"?: [...], <any other field>...}

SFT demonstration rows are the same conversations ending with the assistant's answer.

Choices made where the AWS documents leave room:

- ``developer`` is accepted as an alias of ``system`` and rewritten to ``system`` (as nova-forge does).
- ``tool`` turns (tool results) are accepted only in SFT demonstrations; single-turn RFT prompts have none.
- In RFT prompts content must be a plain string; SFT demonstrations may also use a list of text parts
  (``[{"type": "text", "text": ...}]`` or ``[{"text": ...}]``), which is joined into one string.
- ``reference_answer`` may be any JSON value except null or an empty string, object or list: the Bedrock docs
  ("Prepare data for open-weight models") say it "is not limited to structured outputs—it can contain any
  format that helps your reward function evaluate quality". A row without one is read, and the dataset-level
  validation decides how many such rows are acceptable (and warns where a built-in reward compares a number
  as text).
- A top-level ``"system": [{"text": ...}, ...]`` (the ``bedrock-conversation-2024`` schema of Bedrock/Nova SFT
  files, e.g. amazon-nova-samples' SFT data) becomes a leading system turn, so every backend sees it and
  prompt-length checks count it. A row that also has a system turn in ``messages`` is an error (two system
  prompts). In RFT rows a ``system`` field of another shape is left alone as an ordinary extra field.
- Every other top-level field is kept in ``RftRecord.metadata`` and written back unchanged.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any, Literal

Kind = Literal["rft", "sft"]

MAX_LINE_BYTES = 1024 * 1024
"""Default cap on one JSONL line; longer lines are reported and skipped without being loaded."""

MAX_ISSUES_SHOWN = 50
"""How many issues a DatasetError message lists before summarising the rest as a count."""

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}
SFT_EXTRA_ROLES = ("tool",)
RESERVED_FIELDS = ("id", "messages", "reference_answer", "tools")

_CHUNK_BYTES = 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class RftRecord:
    """One validated row: a prompt (RFT) or a demonstration (SFT) with its reference answer."""

    id: str
    messages: list[dict]
    reference_answer: Any = None
    tools: list | None = None
    metadata: dict = field(default_factory=dict)
    line: int = 0

    def prompt_messages(self) -> list[dict]:
        """Messages up to and including the last user turn (drops a trailing assistant answer)."""
        last_user = max((i for i, m in enumerate(self.messages) if m.get("role") == "user"), default=-1)
        return self.messages[: last_user + 1]

    def prompt_text(self) -> str:
        """The prompt's turns' text joined by newlines (used for hashing and length checks)."""
        return "\n".join(str(m.get("content") or "") for m in self.prompt_messages())

    def answer_text(self) -> str | None:
        """Content of the trailing assistant turn (the demonstration), or None when there is none."""
        if self.messages and self.messages[-1].get("role") == "assistant":
            content = self.messages[-1].get("content")
            return content if isinstance(content, str) else None
        return None

    def to_json(self) -> dict:
        """The row as written to JSONL: id, messages, reference_answer, tools, then the metadata fields."""
        row: dict[str, Any] = {"id": self.id, "messages": self.messages}
        if self.reference_answer is not None:
            row["reference_answer"] = self.reference_answer
        if self.tools is not None:
            row["tools"] = self.tools
        for key, value in self.metadata.items():
            if key not in row:
                row[key] = value
        return row


@dataclass(frozen=True)
class DatasetIssue:
    """One problem in a dataset file, rendered as ``train.jsonl:17: messages[1].role: expected ...``."""

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = display_name(self.path) + (f":{self.line}" if self.line else "")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class DatasetError(ValueError):
    """A dataset file has problems; ``issues`` holds every one of them, the message the first 50."""

    def __init__(self, issues: list[DatasetIssue], uri: str | None = None):
        self.issues = list(issues)
        self.uri = uri if uri is not None else (issues[0].path if issues else "dataset")
        super().__init__(format_issues(self.issues, self.uri))


def format_issues(issues: list[DatasetIssue], uri: str, limit: int = MAX_ISSUES_SHOWN) -> str:
    """A readable summary: a header with the counts, then one issue per line (capped at ``limit``)."""
    lines = {i.line for i in issues if i.line}
    head = f"{uri}: {len(issues)} problem{'s' if len(issues) != 1 else ''}"
    if lines:
        head += f" on {len(lines)} line{'s' if len(lines) != 1 else ''}"
    shown = [f"  {issue}" for issue in issues[:limit]]
    if len(issues) > limit:
        shown.append(f"  ... and {len(issues) - limit} more")
    return "\n".join([head + ":", *shown])


# ---------------------------------------------------------------------------------------------------------
# Reading


def iter_records(
    uri: str, kind: Kind = "rft", *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[RftRecord | DatasetIssue]:
    """Stream a JSONL dataset, yielding a record for each valid row and an issue for each problem, in order.

    Blank lines are skipped. Ids default to ``f"{stem}-{line}"`` (e.g. ``train-17``). A missing file raises
    FileNotFoundError; everything wrong inside the file is yielded as a DatasetIssue.
    """
    if kind not in ("rft", "sft"):
        raise ValueError(f"kind: expected one of rft, sft; got {kind!r}")
    stem = uri_stem(uri)
    first_seen: dict[str, int] = {}
    with open_binary(uri) as stream:
        for line_no, text, problem in iter_lines(stream, uri, max_line_bytes=max_line_bytes):
            if problem is not None:
                yield problem
                continue
            if not text.strip():
                continue
            record, issues = parse_row(
                text, kind=kind, path=uri, line=line_no, default_id=f"{stem}-{line_no}", seen_ids=first_seen
            )
            if issues:
                yield from issues
            elif record is not None:
                yield record


def read_records(uri: str, kind: Kind = "rft", *, max_line_bytes: int = MAX_LINE_BYTES) -> list[RftRecord]:
    """Read a whole dataset; raises DatasetError listing ALL problems, or if the file holds no rows."""
    records, issues = read_records_and_issues(uri, kind, max_line_bytes=max_line_bytes)
    if not issues and not records:
        issues = [DatasetIssue(uri, None, "", "no records: the file is empty or has only blank lines")]
    if issues:
        raise DatasetError(issues, uri)
    return records


def read_records_and_issues(
    uri: str, kind: Kind = "rft", *, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[RftRecord], list[DatasetIssue]]:
    """Read a whole dataset without raising: the valid records and every issue found."""
    records: list[RftRecord] = []
    issues: list[DatasetIssue] = []
    for item in iter_records(uri, kind, max_line_bytes=max_line_bytes):
        (records if isinstance(item, RftRecord) else issues).append(item)
    return records, issues


def iter_lines(
    stream: IO[bytes], path: str, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str, DatasetIssue | None]]:
    """Yield ``(line_no, text, None)`` per line, or ``(line_no, "", issue)`` for an undecodable or too long line.

    Reads at most ``max_line_bytes + 1`` bytes of a line at once, so a huge line costs bounded memory; the rest
    of it is skipped in chunks. A UTF-8 byte order mark at the start of the file is ignored.
    """
    line_no = 0
    while True:
        chunk = stream.readline(max_line_bytes + 1)
        if not chunk:
            return
        line_no += 1
        if line_no == 1 and chunk.startswith(_UTF8_BOM):
            chunk = chunk[len(_UTF8_BOM) :]
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        if len(body) > max_line_bytes:
            size = len(chunk)
            while not chunk.endswith(b"\n"):
                chunk = stream.readline(_CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
            yield (
                line_no,
                "",
                DatasetIssue(
                    path,
                    line_no,
                    "",
                    f"line is {_human_bytes(size)}, over the {_human_bytes(max_line_bytes)} limit per row; skipped",
                ),
            )
            continue
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = body[exc.start : exc.start + 1].hex()
            yield (
                line_no,
                "",
                DatasetIssue(
                    path,
                    line_no,
                    "",
                    f"not valid UTF-8: byte 0x{bad} at column {exc.start + 1}; save the file as UTF-8",
                ),
            )
            continue
        yield line_no, text, None


def parse_row(
    text: str, *, kind: Kind, path: str, line: int, default_id: str, seen_ids: dict[str, int] | None = None
) -> tuple[RftRecord | None, list[DatasetIssue]]:
    """Check one JSONL line. Returns the record (None if unusable) and every issue found in it.

    ``seen_ids`` maps ids to the line that first used them; it is updated, and a repeated id is an issue.
    """
    issues: list[DatasetIssue] = []

    def bad(field_name: str, message: str) -> None:
        issues.append(DatasetIssue(path, line, field_name, message))

    row, error = parse_json_object(text)
    if error is not None:
        bad("", error)
        return None, issues

    record_id = _check_id(row, bad, default_id)
    if seen_ids is not None:
        if record_id in seen_ids:
            bad("id", f"duplicate id {_quote(record_id)} (first used on line {seen_ids[record_id]})")
        else:
            seen_ids[record_id] = line
    system = _check_system(row, kind, bad)
    messages = _check_messages(row, kind, bad)
    if system is not None and messages:
        if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            bad("system", "given both as a top-level field and as a system turn in messages; keep one")
        else:
            messages = [{"role": "system", "content": system}, *messages]
    reference = _check_reference(row, bad)
    tools = _check_tools(row, bad)
    if issues:
        return None, issues
    hoisted = ("system",) if system is not None else ()
    metadata = {k: v for k, v in row.items() if k not in RESERVED_FIELDS + hoisted}
    return RftRecord(record_id, messages, reference, tools, metadata, line), issues


def parse_json_object(text: str) -> tuple[dict, None] | tuple[None, str]:
    """Parse one JSONL line that must hold an object: ``(row, None)`` or ``(None, what is wrong)``."""
    try:
        row = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:  # NaN / Infinity
        return None, f"invalid JSON: {exc}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    if not isinstance(row, dict):
        return None, f"expected a JSON object per line; got {_type_name(row)}"
    return row, None


def _check_id(row: dict, bad, default_id: str) -> str:
    if "id" not in row:
        return default_id
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        bad("id", f"expected a non-empty string; got {_describe(value)}")
        return default_id
    if isinstance(value, int):
        return str(value)
    if not value.strip():
        bad("id", "must not be empty when present; remove the field to use the line number")
    return value


def _is_bedrock_system(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(b, dict) and "text" in b for b in value)


def _check_system(row: dict, kind: Kind, bad) -> str | None:
    """The text of a Bedrock-style top-level ``system`` (list of ``{"text": ...}`` blocks), or None.

    In SFT rows (the schema that uses it) any other shape is reported; in RFT rows only the Bedrock shape is
    taken as a system prompt, since other extra fields are passed to the reward function untouched.
    """
    if "system" not in row:
        return None
    value = row["system"]
    if not _is_bedrock_system(value):
        if kind == "sft":
            bad("system", f'expected a list of text blocks [{{"text": str}}, ...]; got {_describe(value)}')
        return None
    texts = []
    for j, block in enumerate(value):
        text = block.get("text")
        if not isinstance(text, str) or not text.strip():
            bad(f"system[{j}].text", f"expected a non-empty string; got {_describe(text)}")
            return None
        texts.append(text)
    return "\n".join(texts)


def _check_messages(row: dict, kind: Kind, bad) -> list[dict]:
    if "messages" not in row:
        bad("messages", "missing required field")
        return []
    messages = row["messages"]
    if not isinstance(messages, list):
        bad("messages", f"expected a list of turns; got {_describe(messages)}")
        return []
    if not messages:
        bad("messages", "must contain at least one turn")
        return []
    roles = ROLES + (SFT_EXTRA_ROLES if kind == "sft" else ())
    out: list[dict] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            bad(where, f"expected an object with role and content; got {_describe(message)}")
            out.append({})
            continue
        msg = dict(message)
        role = msg.get("role")
        if "role" not in msg:
            bad(f"{where}.role", "missing required field")
        elif not isinstance(role, str):
            bad(f"{where}.role", f"expected one of {', '.join(roles)}; got {_describe(role)}")
        elif ROLE_ALIASES.get(role, role) not in roles:
            hint = "; tool turns belong in SFT demonstrations, not RFT prompts" if role == "tool" else ""
            bad(f"{where}.role", f"expected one of {', '.join(roles)}; got {_quote(role)}{hint}")
        else:
            msg["role"] = role = ROLE_ALIASES.get(role, role)
        _check_content(msg, where, kind, bad)
        out.append(msg)
    _check_turn_order(out, kind, bad)
    return out


def _check_content(msg: dict, where: str, kind: Kind, bad) -> None:
    if "content" not in msg:
        if not (msg.get("role") == "assistant" and msg.get("tool_calls")):
            bad(f"{where}.content", "missing required field")
        return
    content = msg["content"]
    if content is None and msg.get("role") == "assistant" and msg.get("tool_calls"):
        return
    if kind == "sft" and isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str) or part.get("type", "text") != "text":
                bad(f"{where}.content[{j}]", f'expected a text part {{"text": str}}; got {_describe(part)}')
                return
            texts.append(text)
        content = msg["content"] = "".join(texts)
    if not isinstance(content, str):
        expected = "a string or a list of text parts" if kind == "sft" else "a string"
        bad(f"{where}.content", f"expected {expected}; got {_describe(content)}")
    elif not content.strip():
        bad(f"{where}.content", "must not be empty")


def _check_turn_order(messages: list[dict], kind: Kind, bad) -> None:
    roles = [m.get("role") for m in messages]
    if not all(isinstance(r, str) and r in ROLES + SFT_EXTRA_ROLES for r in roles):
        return  # an unknown role was already reported; ordering messages would only add noise
    seen_other = False
    for i, role in enumerate(roles):
        if role == "system" and seen_other:
            bad(f"messages[{i}].role", "a system turn must come before all other turns")
        seen_other = seen_other or role != "system"
    last = len(roles) - 1
    if kind == "rft":
        if roles[last] != "user":
            bad(
                f"messages[{last}].role",
                f"an RFT prompt must end with a user turn; got {_quote(roles[last])}",
            )
    else:
        if roles[last] != "assistant":
            bad(
                f"messages[{last}].role",
                f"an SFT demonstration must end with the assistant's answer; got {_quote(roles[last])}",
            )
        elif last == 0 or roles[last - 1] != "user":
            before = _quote(roles[last - 1]) if last > 0 else "nothing"
            bad(
                f"messages[{last}].role",
                f"the assistant's answer must follow a user turn; got {before} before it",
            )


def _check_reference(row: dict, bad) -> Any:
    """Any JSON value except null and empty text/object/list (numbers and lists are valid answers)."""
    value = row.get("reference_answer")
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        bad("reference_answer", "must not be empty; remove the field if the row has no reference answer")
    elif isinstance(value, dict) and not value:
        bad("reference_answer", "must not be an empty object")
    elif isinstance(value, list) and not value:
        bad("reference_answer", "must not be an empty list")
    return value


def _check_tools(row: dict, bad) -> list | None:
    if row.get("tools") is None:
        return None
    tools = row["tools"]
    if not isinstance(tools, list):
        bad("tools", f"expected a list of tool specifications; got {_describe(tools)}")
        return None
    if not tools:
        bad("tools", "must not be an empty list; remove the field if the row has no tools")
    names: dict[str, int] = {}
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            bad(where, f"expected an object {{type, function}}; got {_describe(tool)}")
            continue
        if tool.get("type") != "function":
            bad(f"{where}.type", f'expected "function"; got {_describe(tool.get("type"))}')
        function = tool.get("function")
        if not isinstance(function, dict):
            bad(
                f"{where}.function",
                f"expected an object {{name, description, parameters}}; got {_describe(function)}",
            )
            continue
        for key in ("name", "description"):
            value = function.get(key)
            if not isinstance(value, str) or not value.strip():
                bad(f"{where}.function.{key}", f"expected a non-empty string; got {_describe(value)}")
        parameters = function.get("parameters")
        if not isinstance(parameters, dict):
            bad(f"{where}.function.parameters", f"expected a JSON-schema object; got {_describe(parameters)}")
        else:
            if parameters.get("type") != "object":
                bad(
                    f"{where}.function.parameters.type",
                    f'expected "object"; got {_describe(parameters.get("type"))}',
                )
            if not isinstance(parameters.get("properties"), dict):
                bad(
                    f"{where}.function.parameters.properties",
                    f"expected an object; got {_describe(parameters.get('properties'))}",
                )
        name = function.get("name")
        if isinstance(name, str) and name.strip():
            if name in names:
                bad(
                    f"{where}.function.name",
                    f"duplicate tool name {_quote(name)} (also tools[{names[name]}])",
                )
            names.setdefault(name, i)
    return tools


# ---------------------------------------------------------------------------------------------------------
# Writing


def write_records(uri: str, records: Iterable[RftRecord | dict]) -> None:
    """Write records (or plain row dicts) as UTF-8 JSONL; local files are replaced atomically."""
    lines = []
    for record in records:
        row = record.to_json() if isinstance(record, RftRecord) else record
        lines.append(json.dumps(row, ensure_ascii=False))
    text = "\n".join(lines) + ("\n" if lines else "")
    path = _local_path(uri)
    if path is None:
        from rftflow.artifacts import store

        store.write_text(uri, text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _local_path(uri: str) -> str | None:
    """The filesystem path for a plain path or file:// URI; None for remote URIs (s3://...)."""
    if uri.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(uri).path)
    if _SCHEME.match(uri):
        return None
    return os.path.expanduser(uri)


def open_binary(uri: str) -> IO[bytes]:
    """Open a local path, file:// or s3:// URI for reading bytes.

    Remote objects are downloaded to a temporary file first, so reading them costs disk, not memory.
    """
    path = _local_path(uri)
    if path is None:
        from rftflow.artifacts import store

        path = store.local_path(uri)
        if path is None:
            fd, tmp = tempfile.mkstemp(prefix="rftflow-", suffix=".download")
            os.close(fd)
            try:
                store.get_file(uri, tmp)
                return open(tmp, "rb")
            finally:
                os.unlink(tmp)  # the open handle keeps the data readable; nothing is left behind
    _require_regular_file(path, uri)
    return open(path, "rb")


def _require_regular_file(path: str, uri: str) -> None:
    """Refuse devices, pipes and sockets: /dev/zero has no end and no newline, so reading it never finishes."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # open() raises the usual error, naming the path
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ValueError(f"{uri}: not a regular file (a device, pipe or socket); expected a JSONL file")


def uri_stem(uri: str) -> str:
    """The file name up to its first dot: ``s3://b/data/train.jsonl`` -> ``train`` (for default row ids)."""
    name = PurePosixPath(urllib.parse.urlparse(uri).path if _SCHEME.match(uri) else uri).name
    return name.split(".", 1)[0] or "row"


def display_name(path: str) -> str:
    """The file name shown in issues: ``include/data/tiny/train.jsonl`` -> ``train.jsonl``."""
    return PurePosixPath(path.replace("\\", "/")).name or path


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write numbers or strings")


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _quote(value: str, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(value: Any) -> str:
    """``null``, ``string ""``, ``number 24``, ``array``, ``object``: what a user needs to find the value."""
    kind = _type_name(value)
    if isinstance(value, str):
        return f"string {_quote(value)}"
    if kind in ("number", "boolean"):
        return f"{kind} {json.dumps(value)}"
    return kind
