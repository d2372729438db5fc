"""Tests for the question/answer -> RFT JSONL converter and its CLI: good rows converted, bad rows all named."""

import json

import pytest

from rftflow.cli.data import main as cli_main
from rftflow.data.convert import convert_qa, detect_format
from rftflow.data.dataset import DatasetError, read_records


def rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_csv_with_system_prompt_and_extra_columns(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text(
        "question,answer,category,source\n"
        "What is 2+2?,4,add,manual\n"
        '"Revenue was 33, then 57.\nWhat was the change?",24,carry,finqa\n'
        "Net income was 12.5M; margin?,12.5%,ratio,\n",
        encoding="utf-8",
    )
    out = tmp_path / "out" / "train.jsonl"
    result = convert_qa(str(src), str(out), system_prompt="Answer after ####.")
    assert result.rows == 3 and result.output_uri == str(out)
    assert rows_of(out)[1] == {
        "id": "qa-3",
        "messages": [
            {"role": "system", "content": "Answer after ####."},
            {"role": "user", "content": "Revenue was 33, then 57.\nWhat was the change?"},
        ],
        "reference_answer": "24",
        "category": "carry",
        "source": "finqa",
    }
    records = read_records(str(out))  # the output is valid RFT JSONL
    assert [r.id for r in records] == ["qa-2", "qa-3", "qa-5"]  # ids follow the source line
    assert records[2].metadata == {"category": "ratio", "source": ""}


def test_tsv_with_custom_columns_id_and_prompt_template(tmp_path):
    src = tmp_path / "items.tsv"
    src.write_bytes("\ufeffq\ta\tuid\n2+2?\t4\tx-1\n3+3?\t6\tx-2\n".encode())  # Excel-style BOM
    out = tmp_path / "train.jsonl"
    convert_qa(
        str(src),
        f"file://{out}",
        question_field="q",
        answer_field="a",
        id_field="uid",
        prompt_template="{question} Give the final answer after ####.",
    )
    first = rows_of(out)[0]
    assert first["id"] == "x-1"
    assert first["messages"] == [{"role": "user", "content": "2+2? Give the final answer after ####."}]
    assert set(first) == {"id", "messages", "reference_answer"}


def test_jsonl_keeps_structured_answers_and_stringifies_numbers(tmp_path):
    src = tmp_path / "qa.jsonl"
    lines = [
        {
            "question": "Water's molar mass?",
            "answer": {"answer": "18.015 g/mol", "explanation": "2*1.008+15.999"},
        },
        {"id": 17, "question": "3x+7=22, x=?", "answer": 5, "difficulty": {"level": "easy"}},
        {"question": "Growth?", "answer": 12.5},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    out = tmp_path / "train.jsonl"
    convert_qa(str(src), str(out))
    rows = rows_of(out)
    assert rows[0]["reference_answer"] == {"answer": "18.015 g/mol", "explanation": "2*1.008+15.999"}
    assert (rows[1]["id"], rows[1]["reference_answer"], rows[1]["difficulty"]) == (
        "17",
        "5",
        {"level": "easy"},
    )
    assert rows[2]["reference_answer"] == "12.5"
    assert len(read_records(str(out))) == 3


def test_every_bad_csv_row_is_listed_with_its_line_and_nothing_is_written(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_bytes(
        b"id,question,answer\n"
        b'a,"two\nline question",1\n'  # lines 2-3
        b"b,,2\n"  # line 4: empty question
        b"c,Q?,\n"  # line 5: empty answer
        b"d,Q?,4,extra\n"  # line 6: too many fields
        b"a,Q again?,5\n"  # line 7: duplicate id
        b"e,caf\xe9?,6\n"  # line 8: not UTF-8
        b"\n"
        b"f,Fine?,7\n"
    )
    out = tmp_path / "train.jsonl"
    with pytest.raises(DatasetError) as err:
        convert_qa(str(src), str(out))
    assert [str(i) for i in err.value.issues] == [
        "qa.csv:4: question: must not be empty",
        "qa.csv:5: answer: must not be empty",
        "qa.csv:6: expected 3 fields as in the header on line 1; got 4",
        'qa.csv:7: id: duplicate id "a" (first used on line 2)',
        "qa.csv:8: not valid UTF-8: byte 0xe9 at column 6; save the file as UTF-8",
    ]
    assert not out.exists()


def test_missing_column_is_reported_once_at_the_header(tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("prompt,answer\n" + "x?,1\n" * 500)
    with pytest.raises(DatasetError) as err:
        convert_qa(str(src), str(tmp_path / "o.jsonl"))
    assert [str(i) for i in err.value.issues] == [
        'qa.csv:1: header: missing column "question"; found: prompt, answer (choose another with --question-field)'
    ]


def test_bad_jsonl_rows_are_all_listed(tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text(
        "\n".join(
            [
                '{"question": "ok?", "answer": "1"}',
                "{broken",
                "[1, 2]",
                '{"question": "no answer"}',
                '{"question": "list?", "answer": ["a", "b"]}',
                '{"question": 7, "answer": true}',
                '{"question": "q?", "answer": "a", "messages": []}',
            ]
        )
        + "\n"
    )
    with pytest.raises(DatasetError) as err:
        convert_qa(str(src), str(tmp_path / "o.jsonl"))
    assert [(i.line, i.field) for i in err.value.issues] == [
        (2, ""),
        (3, ""),
        (4, "answer"),
        (5, "answer"),
        (6, "question"),
        (6, "answer"),
        (7, "messages"),
    ]
    assert (
        "qa.jsonl:4: answer: missing field; found: question (choose the column with --answer-field)"
        in str(err.value)
    )


def test_format_detection_and_argument_checks(tmp_path):
    assert detect_format("s3://bucket/x/QA.CSV") == "csv"
    assert detect_format("rows.ndjson") == "jsonl"
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format("qa.xlsx")
    src = tmp_path / "qa.txt"
    src.write_text("question,answer\nq?,1\n")
    out = tmp_path / "o.jsonl"
    assert convert_qa(str(src), str(out), input_format="csv").rows == 1
    with pytest.raises(ValueError, match="must contain"):
        convert_qa(str(src), str(out), input_format="csv", prompt_template="no placeholder")


def test_convert_cli(tmp_path, capsys):
    src = tmp_path / "qa.csv"
    src.write_text("question,answer\nWhat is 2+2?,4\n")
    out = tmp_path / "train.jsonl"
    assert cli_main(["convert", str(src), str(out), "--system", "Be brief."]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 1 RFT prompts to {out}"
    assert rows_of(out)[0]["messages"][0] == {"role": "system", "content": "Be brief."}

    src.write_text("question,answer\n,4\n")
    assert cli_main(["convert", str(src), str(tmp_path / "bad.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nothing written; ") and "qa.csv:2: question: must not be empty" in err
    assert not (tmp_path / "bad.jsonl").exists()


def test_oversized_and_non_utf8_lines_are_reported_not_loaded(tmp_path):
    src = tmp_path / "qa.jsonl"
    good = json.dumps({"question": "q?", "answer": "1"})
    src.write_bytes(
        f"{good}\n{json.dumps({'question': 'x' * 5000, 'answer': '2'})}\n".encode()
        + b'{"question": "\xff"}\n'
    )
    with pytest.raises(DatasetError) as err:
        convert_qa(str(src), str(tmp_path / "o.jsonl"), max_line_bytes=1000)
    assert [str(i) for i in err.value.issues] == [
        "qa.jsonl:2: line is 4.9 KiB, over the 1000 bytes limit per row; skipped",
        "qa.jsonl:3: not valid UTF-8: byte 0xff at column 15; save the file as UTF-8",
    ]
