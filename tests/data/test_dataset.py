"""Tests for the RFT / SFT JSONL reader: AWS-shaped rows, every error collected with its line, no hangs."""

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from rftflow.data.dataset import (
    DatasetError,
    DatasetIssue,
    RftRecord,
    iter_records,
    read_records,
    read_records_and_issues,
    write_records,
)

DATA = Path(__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[2]
AWS_SAMPLE = DATA / "aws_rft_sample.jsonl"
TINY_TRAIN = ROOT / "include" / "data" / "tiny" / "train.jsonl"
TINY_SFT = ROOT / "include" / "data" / "tiny" / "sft.jsonl"

USER = {"role": "user", "content": "What is 2+2?"}


def write_lines(path: Path, lines: list) -> str:
    """Write rows (dicts are JSON-encoded, strings written verbatim) one per line; returns the path."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return str(path)


def issues_of(path: str, kind: str = "rft") -> list[str]:
    return [str(i) for i in iter_records(path, kind) if isinstance(i, DatasetIssue)]


# --- real AWS-shaped files ------------------------------------------------------------------------------


def test_reads_aws_shaped_rft_rows_with_structured_answers_tools_and_metadata():
    records = read_records(str(AWS_SAMPLE))
    by_id = {r.id: r for r in records}
    assert len(records) == 6

    chem = by_id["chem-001"]
    assert chem.reference_answer == {
        "answer": "18.015 g/mol",
        "explanation": "2 x 1.008 (H) + 15.999 (O) = 18.015 g/mol",
    }
    assert chem.metadata == {"task_id": "chem_001", "domain": "chemistry", "difficulty_level": "easy"}
    assert chem.line == 1

    tool = by_id["tool-weather-3"]
    assert tool.tools[0]["function"]["name"] == "get_weather"
    assert tool.reference_answer["tool_parameters"] == {"city": "Seattle", "unit": "celsius"}

    # a row without id gets "{stem}-{line}"; "developer" is read as "system"
    geo = by_id["aws_rft_sample-3"]
    assert [m["role"] for m in geo.messages] == ["system", "user"]
    assert geo.prompt_text() == "Answer with a single word.\nWhat is the capital of France?"

    # nested extra fields are kept as they are; multi-turn prompts ending with the user are valid
    fin = by_id["fin-042"]
    assert fin.metadata["source"] == {"dataset": "finqa-like", "split": "train"}
    assert fin.prompt_messages() == fin.messages
    assert fin.answer_text() is None
    assert by_id["sum-9"].prompt_text().startswith("Résumé")


def test_write_then_read_round_trips_records_and_file_uris(tmp_path):
    records = read_records(str(AWS_SAMPLE))
    out = tmp_path / "nested" / "copy.jsonl"
    write_records(f"file://{out}", records)
    again = read_records(f"file://{out}")
    assert [r.to_json() for r in again] == [r.to_json() for r in records]
    assert "Résumé" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert list(first)[:3] == ["id", "messages", "reference_answer"]
    assert first["domain"] == "chemistry"  # metadata goes back to the top level


def test_sample_datasets_read_cleanly():
    if not TINY_TRAIN.exists():
        pytest.skip("sample data not generated yet")
    records = read_records(str(TINY_TRAIN))
    assert len(records) >= 100
    assert all(r.prompt_messages()[-1]["role"] == "user" for r in records)
    demos = read_records(str(TINY_SFT), "sft")
    assert demos[0].answer_text() and demos[0].prompt_messages()[-1]["role"] == "user"


# --- error format and collection ------------------------------------------------------------------------


def test_issue_format_names_file_line_field_expected_and_got(tmp_path):
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            {"messages": [USER], "reference_answer": "4"},
            "",
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "bot", "content": "hi"}]},
        ],
    )
    with pytest.raises(DatasetError) as err:
        read_records(path)
    assert [str(i) for i in err.value.issues] == [
        'train.jsonl:3: messages[1].role: expected one of system, user, assistant; got "bot"'
    ]
    issue = err.value.issues[0]
    assert (issue.path, issue.line, issue.field) == (path, 3, "messages[1].role")
    assert isinstance(err.value, ValueError)


BAD_ROWS = [
    ("{not json", ": invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ('{"messages": [], }', ": invalid JSON:"),
    ('{"messages": [{"role": "user", "content": "x"}], "reference_answer": NaN}', "NaN is not valid JSON"),
    ("[1, 2]", ": expected a JSON object per line; got array"),
    ({"reference_answer": "4"}, ": messages: missing required field"),
    ({"messages": "hi"}, ': messages: expected a list of turns; got string "hi"'),
    ({"messages": []}, ": messages: must contain at least one turn"),
    ({"messages": ["hi"]}, ': messages[0]: expected an object with role and content; got string "hi"'),
    ({"messages": [{"content": "x"}]}, ": messages[0].role: missing required field"),
    (
        {"messages": [{"role": 1, "content": "x"}]},
        ": messages[0].role: expected one of system, user, assistant; got number 1",
    ),
    ({"messages": [{"role": "user"}]}, ": messages[0].content: missing required field"),
    ({"messages": [{"role": "user", "content": None}]}, ": messages[0].content: expected a string; got null"),
    (
        {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
        ": messages[0].content: expected a string; got array",
    ),
    ({"messages": [{"role": "user", "content": "  \n"}]}, ": messages[0].content: must not be empty"),
    (
        {"messages": [USER, {"role": "assistant", "content": "4"}]},
        ': messages[1].role: an RFT prompt must end with a user turn; got "assistant"',
    ),
    (
        {"messages": [{"role": "system", "content": "s"}]},
        'an RFT prompt must end with a user turn; got "system"',
    ),
    (
        {"messages": [USER, {"role": "system", "content": "s"}, USER]},
        ": messages[1].role: a system turn must come before all other turns",
    ),
    (
        {"messages": [{"role": "tool", "content": "42"}, USER]},
        'expected one of system, user, assistant; got "tool"; tool turns belong in SFT demonstrations',
    ),
    ({"id": "", "messages": [USER]}, ": id: must not be empty when present"),
    ({"id": ["a"], "messages": [USER]}, ": id: expected a non-empty string; got array"),
    ({"id": True, "messages": [USER]}, ": id: expected a non-empty string; got boolean true"),
    ({"messages": [USER], "reference_answer": []}, ": reference_answer: must not be an empty list"),
    ({"messages": [USER], "reference_answer": " "}, ": reference_answer: must not be empty"),
    ({"messages": [USER], "reference_answer": {}}, ": reference_answer: must not be an empty object"),
    (
        {"messages": [USER], "tools": {"name": "f"}},
        ": tools: expected a list of tool specifications; got object",
    ),
    ({"messages": [USER], "tools": []}, ": tools: must not be an empty list"),
    (
        {
            "messages": [USER],
            "tools": [
                {
                    "type": "function",
                    "function": {"description": "d", "parameters": {"type": "object", "properties": {}}},
                }
            ],
        },
        ": tools[0].function.name: expected a non-empty string; got null",
    ),
    (
        {
            "messages": [USER],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "description": "d",
                        "parameters": {"type": "array", "properties": {}},
                    },
                }
            ],
        },
        ': tools[0].function.parameters.type: expected "object"; got string "array"',
    ),
    (
        {"messages": [USER], "tools": [{"type": "retrieval"}]},
        ': tools[0].type: expected "function"; got string "retrieval"',
    ),
]


@pytest.mark.parametrize(("row", "expected"), BAD_ROWS, ids=[str(i) for i in range(len(BAD_ROWS))])
def test_each_kind_of_bad_row_is_reported_on_its_line(tmp_path, row, expected):
    path = write_lines(tmp_path / "train.jsonl", [{"messages": [USER], "reference_answer": "4"}, row])
    issues = issues_of(path)
    assert issues, f"no issue reported for {row!r}"
    assert all(i.startswith("train.jsonl:2: ") for i in issues), issues
    assert any(expected in i for i in issues), issues


def test_all_problems_of_one_row_are_reported_together(tmp_path):
    row = {
        "id": "",
        "messages": [{"role": "bot", "content": ""}, {"role": "user", "content": 5}],
        "reference_answer": "",
        "tools": [],
    }
    path = write_lines(tmp_path / "train.jsonl", [row])
    fields = [i.split(": ")[1] for i in issues_of(path)]
    assert fields == [
        "id",
        "messages[0].role",
        "messages[0].content",
        "messages[1].content",
        "reference_answer",
        "tools",
    ]


def test_duplicate_ids_name_both_lines(tmp_path):
    row = {"id": "q1", "messages": [USER], "reference_answer": "4"}
    path = write_lines(tmp_path / "train.jsonl", [row, {**row, "id": "q2"}, row, row])
    assert issues_of(path) == [
        'train.jsonl:3: id: duplicate id "q1" (first used on line 1)',
        'train.jsonl:4: id: duplicate id "q1" (first used on line 1)',
    ]


def test_integer_ids_are_read_as_strings_and_missing_ids_use_the_line(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [{"id": 7, "messages": [USER]}, "", {"messages": [USER]}])
    assert [r.id for r in read_records(path)] == ["7", "qa-3"]


def test_corrupted_copy_of_a_dataset_lists_every_bad_line(tmp_path):
    if not TINY_TRAIN.exists():
        pytest.skip("sample data not generated yet")
    lines = TINY_TRAIN.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(x) for x in lines]
    n = len(rows)
    bad = {  # line number -> corrupted text
        2: lines[1][:-5],  # truncated JSON
        4: json.dumps({**rows[3], "messages": [{"role": "bot", "content": "hi"}]}),
        9: json.dumps({k: v for k, v in rows[8].items() if k != "messages"}),
        10: json.dumps({**rows[9], "id": rows[0]["id"]}),  # duplicate id
        n // 2: json.dumps({**rows[n // 2 - 1], "reference_answer": {}}),
        n - 1: json.dumps(
            {**rows[n - 2], "messages": rows[n - 2]["messages"] + [{"role": "assistant", "content": "x"}]}
        ),
        n: "garbage",
    }
    for line_no, text in bad.items():
        lines[line_no - 1] = text
    copy = tmp_path / "train.jsonl"
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(DatasetError) as err:
        read_records(str(copy))
    assert sorted({i.line for i in err.value.issues}) == sorted(bad)
    for line_no in bad:
        assert f"train.jsonl:{line_no}: " in str(err.value)
    assert str(err.value).startswith(f"{copy}: {len(bad)} problems on {len(bad)} lines:")

    records, issues = read_records_and_issues(str(copy))
    assert len(records) == n - len(bad)  # the good rows are still read


def test_error_message_shows_the_first_50_and_counts_the_rest(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ["{bad"] * 75)
    with pytest.raises(DatasetError) as err:
        read_records(path)
    assert len(err.value.issues) == 75
    message = str(err.value)
    assert "train.jsonl:50: invalid JSON" in message
    assert "train.jsonl:51:" not in message
    assert message.endswith("... and 25 more")


# --- encodings, huge lines, blank lines ----------------------------------------------------------------


def test_non_utf8_bytes_are_an_issue_on_their_line_not_a_crash(tmp_path):
    good = json.dumps({"messages": [USER], "reference_answer": "4"}).encode()
    latin1 = json.dumps({"messages": [{"role": "user", "content": "café"}]}).encode("latin-1")
    latin1 = latin1.replace(b"\\u00e9", b"\xe9")
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([good, latin1, good.replace(b"4", b"5"), b"\xff\xfe\x00garbage"]) + b"\n")
    records, issues = read_records_and_issues(str(path))
    assert len(records) == 2
    assert [str(i) for i in issues] == [
        f"train.jsonl:2: not valid UTF-8: byte 0xe9 at column {latin1.index(0xE9) + 1}; save the file as UTF-8",
        "train.jsonl:4: not valid UTF-8: byte 0xff at column 1; save the file as UTF-8",
    ]


def test_utf16_file_gives_errors_not_a_crash(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": [USER]}) + "\n", encoding="utf-16")
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        read_records(str(path))


def test_byte_order_mark_crlf_and_blank_lines_are_accepted(tmp_path):
    row = json.dumps({"messages": [USER], "reference_answer": "4"})
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + f"{row}\r\n\r\n   \r\n\t\n{row}".encode())
    assert [r.line for r in read_records(str(path))] == [1, 5]


def test_huge_single_line_is_reported_in_bounded_memory_and_time(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"messages": [USER], "reference_answer": "4"}).encode()
    block = b"x" * (1024 * 1024)
    with path.open("wb") as f:
        f.write(good + b"\n" + b'{"messages": "')
        for _ in range(100):  # one 100 MiB line
            f.write(block)
        f.write(b'"}\n' + good + b"\n")
    started = time.monotonic()
    tracemalloc.start()
    try:
        records, issues = read_records_and_issues(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 20
    assert peak < 16 * 1024 * 1024
    assert [r.line for r in records] == [1, 3]
    assert [str(i) for i in issues] == [
        "train.jsonl:2: line is 100.0 MiB, over the 1.0 MiB limit per row; skipped"
    ]


def test_line_cap_is_configurable_and_a_final_line_without_newline_counts(tmp_path):
    row = json.dumps({"messages": [USER], "reference_answer": "4"})
    path = tmp_path / "train.jsonl"
    path.write_text(row + "\n" + row.replace("4", "4" * 200))
    records, issues = read_records_and_issues(str(path), max_line_bytes=len(row))
    assert [r.line for r in records] == [1]
    assert [i.line for i in issues] == [2]


def test_empty_file_is_an_error_for_read_records(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", ["", "  "])
    assert list(iter_records(path)) == []
    with pytest.raises(DatasetError, match="train.jsonl: no records"):
        read_records(path)


def test_missing_file_and_unknown_kind_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="kind"):
        read_records(str(AWS_SAMPLE), kind="dpo")


def test_records_and_issues_stream_in_file_order(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [{"messages": [USER]}, "{", {"messages": [USER]}])
    items = list(iter_records(path))
    assert [type(x).__name__ for x in items] == ["RftRecord", "DatasetIssue", "RftRecord"]


# --- SFT demonstrations ---------------------------------------------------------------------------------


def test_sft_demonstrations_end_with_an_assistant_answer_after_a_user_turn(tmp_path):
    answer = {"role": "assistant", "content": "2+2=4 #### 4"}
    path = write_lines(
        tmp_path / "sft.jsonl",
        [
            {"messages": [{"role": "system", "content": "Be brief."}, USER, answer], "reference_answer": "4"},
            {"messages": [USER]},
            {"messages": [{"role": "system", "content": "Be brief."}, answer]},
            {"messages": [answer]},
        ],
    )
    records, issues = read_records_and_issues(path, "sft")
    assert records[0].answer_text() == "2+2=4 #### 4"
    assert records[0].prompt_messages() == records[0].messages[:2]
    assert records[0].prompt_text() == "Be brief.\nWhat is 2+2?"
    assert [str(i) for i in issues] == [
        'sft.jsonl:2: messages[0].role: an SFT demonstration must end with the assistant\'s answer; got "user"',
        'sft.jsonl:3: messages[1].role: the assistant\'s answer must follow a user turn; got "system" before it',
        "sft.jsonl:4: messages[0].role: the assistant's answer must follow a user turn; got nothing before it",
    ]


def test_sft_accepts_tool_turns_and_text_part_content(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is "}, {"text": "2+2?"}]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "user", "content": "And the answer?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    path = write_lines(
        tmp_path / "sft.jsonl",
        [
            row,
            {
                "messages": [
                    {"role": "user", "content": [{"image": "x"}]},
                    {"role": "assistant", "content": "?"},
                ]
            },
        ],
    )
    records, issues = read_records_and_issues(path, "sft")
    assert records[0].messages[0]["content"] == "What is 2+2?"
    assert records[0].messages[1]["tool_calls"] == [call]
    assert [str(i) for i in issues] == [
        'sft.jsonl:2: messages[0].content[0]: expected a text part {"text": str}; got object'
    ]


def test_rft_reader_rejects_demonstrations_with_a_clear_reason(tmp_path):
    if not TINY_SFT.exists():
        pytest.skip("sample data not generated yet")
    copy = tmp_path / "sft.jsonl"
    with TINY_SFT.open(encoding="utf-8") as src:
        copy.write_text("".join(next(src) for _ in range(3)), encoding="utf-8")
    with pytest.raises(DatasetError, match="an RFT prompt must end with a user turn"):
        read_records(str(copy), "rft")
    assert len(read_records(str(copy), "sft")) == 3


def test_write_records_accepts_plain_dicts(tmp_path):
    out = tmp_path / "rows.jsonl"
    write_records(str(out), [{"id": "a", "messages": [USER], "reference_answer": "4"}])
    assert read_records(str(out)) == [
        RftRecord(id="a", messages=[USER], reference_answer="4", tools=None, metadata={}, line=1)
    ]


def test_reads_and_writes_s3_uris(s3_root):
    from rftflow.artifacts import store

    uri = f"{s3_root}/data/train.jsonl"
    store.write_bytes(uri, AWS_SAMPLE.read_bytes())
    records = read_records(uri)
    assert [r.id for r in records][:3] == [
        "chem-001",
        "math-017",
        "train-3",
    ]  # default id from the object name
    write_records(f"{s3_root}/copy/rows.jsonl", records)
    assert [r.to_json() for r in read_records(f"{s3_root}/copy/rows.jsonl")] == [r.to_json() for r in records]
    with pytest.raises(FileNotFoundError):
        read_records(f"{s3_root}/data/missing.jsonl")


# --- reference answers of any JSON type (issue 14, item 7) ---------------------------------------------

# Source: Bedrock user guide, "Prepare data for open-weight models" (rft-prepare-data-open-weight): the
# reference_answer "is not limited to structured outputs—it can contain any format that helps your reward
# function evaluate quality". GSM8K-style rows carry the answer as a number.
@pytest.mark.parametrize("reference", [72, 0.125, -3, True, ["18", "eighteen"], {"x": 4}, "72"])
def test_any_json_reference_answer_is_accepted_and_kept_as_written(tmp_path, reference):
    row = {"messages": [{"role": "user", "content": "Natalia sold 48 clips in April..."}], "reference_answer": reference}
    path = write_lines(tmp_path / "train.jsonl", [row])
    (record,) = read_records(path)
    assert record.reference_answer == reference and type(record.reference_answer) is type(reference)
    out = tmp_path / "out.jsonl"
    write_records(str(out), [record])
    assert json.loads(out.read_text())["reference_answer"] == reference  # round-trips with its type


# --- Bedrock-format SFT rows with a top-level system prompt (issue 14, item 8) -------------------------

# First row of aws-samples/amazon-nova-samples customization/Nova_2.0/SFT_RFT/data/final/sft/
# combined_training_data_with_system.jsonl (system text shortened): Converse content blocks, `system` top level,
# after `messages`. The schemaVersion form is the Bedrock "bedrock-conversation-2024" schema.
BEDROCK_SFT_ROW = {
    "messages": [
        {"role": "user", "content": [{"text": "Does this private placement exemption under Reg D require SEC "
                                              "registration verification?"}]},
        {"role": "assistant", "content": [{"text": '{"Query analysis": {"Type": "regulatory_compliance_analysis"}}'}]},
    ],
    "system": [{"text": "You are a securities law tool selection specialist."}],
}


def test_bedrock_system_prompt_becomes_the_leading_system_turn(tmp_path):
    rows = [BEDROCK_SFT_ROW, {"schemaVersion": "bedrock-conversation-2024", **BEDROCK_SFT_ROW,
                              "system": [{"text": "Part one."}, {"text": "Part two."}]}]
    first, second = read_records(write_lines(tmp_path / "sft.jsonl", rows), kind="sft")
    assert first.messages[0] == {"role": "system", "content": "You are a securities law tool selection specialist."}
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant"]
    assert "system" not in first.metadata
    assert first.prompt_messages()[0]["role"] == "system"  # what the local SFT prompt is built from
    assert "securities law" in first.prompt_text()  # what the prompt-length check measures
    assert second.messages[0]["content"] == "Part one.\nPart two."
    assert second.metadata == {"schemaVersion": "bedrock-conversation-2024"}


def test_bedrock_system_prompt_problems_are_reported(tmp_path):
    both = {**BEDROCK_SFT_ROW, "messages": [{"role": "system", "content": "x"}, *BEDROCK_SFT_ROW["messages"]]}
    bad_shape = {**BEDROCK_SFT_ROW, "system": "You are terse."}
    empty_text = {**BEDROCK_SFT_ROW, "system": [{"text": " "}]}
    issues = issues_of(write_lines(tmp_path / "sft.jsonl", [both, bad_shape, empty_text]), kind="sft")
    assert any(i.startswith("sft.jsonl:1: system: given both as a top-level field and as a system turn") for i in issues)
    assert any(i.startswith('sft.jsonl:2: system: expected a list of text blocks [{"text": str}, ...]; got string')
               for i in issues)
    assert any(i.startswith("sft.jsonl:3: system[0].text: expected a non-empty string") for i in issues)


def test_an_rft_row_keeps_a_system_field_of_another_shape_as_metadata(tmp_path):
    row = {"messages": [USER], "reference_answer": "4", "system": "v2-prompt-set"}
    (record,) = read_records(write_lines(tmp_path / "train.jsonl", [row]))
    assert record.metadata == {"system": "v2-prompt-set"} and record.messages == [USER]
