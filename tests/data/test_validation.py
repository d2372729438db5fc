"""Tests for the dataset-level checks: each check fails on its own case, reports are written, schema first."""

import json
from pathlib import Path

import pytest

from rftflow.cli.data import main as cli_main
from rftflow.data.dataset import RftRecord, read_records, write_records
from rftflow.data.validation import (
    DatasetValidationFailed,
    prompt_hash,
    run_checks,
    validate_dataset,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "include" / "data"
AWS_SAMPLE = Path(__file__).resolve().parent / "aws_rft_sample.jsonl"


def prompts(n: int, prefix: str = "t", offset: int = 0) -> list[RftRecord]:
    return [
        RftRecord(
            id=f"{prefix}{i}",
            messages=[
                {
                    "role": "user",
                    "content": f"Revenue was {i} in 2020 and {i + 7} in 2021. What was the change?",
                }
            ],
            reference_answer="7",
            metadata={"category": "no_carry"},
            line=i - offset + 1,
        )
        for i in range(offset, offset + n)
    ]


def statuses(checks) -> dict[tuple[str, str], str]:
    return {(c.split, c.name): c.status for c in checks}


def not_passing(checks) -> dict[tuple[str, str], str]:
    return {k: v for k, v in statuses(checks).items() if v != "pass"}


def by_name(checks, split: str, name: str):
    return next(c for c in checks if c.split == split and c.name == name)


# --- sample data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("track", ["tiny", "finqa"])
def test_sample_data_validates_for_bedrock_with_reports(tmp_path, track):
    train, eval_ = DATA / track / "train.jsonl", DATA / track / "eval.jsonl"
    if not train.exists():
        pytest.skip("sample data not generated yet")
    report = validate_dataset(str(train), str(eval_), backend="bedrock", report_dir_uri=str(tmp_path))
    assert report.ok and report.status == "pass", report.summary()
    assert report.rows == {"train": 2000, "eval": 500} or report.rows["eval"] >= 500
    names = {(c.split, c.name) for c in report.checks}
    assert {
        ("train", "schema"),
        ("train", "row_count"),
        ("eval", "not_in_train"),
        ("eval", "reference_share"),
    } <= names

    assert report.json_uri == f"{tmp_path}/validation.json"
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["status"] == "pass" and saved["backend"] == "bedrock"
    assert saved["files"]["train"] == {"uri": str(train), "rows": report.rows["train"]}
    assert (saved["train_rows"], saved["eval_rows"]) == (report.rows["train"], report.rows["eval"])
    assert saved["markdown_uri"] == f"{tmp_path}/validation.md"
    markdown = (tmp_path / "validation.md").read_text()
    assert markdown.startswith("# Dataset validation: PASS")
    assert "| PASS | eval | `not_in_train` | 0 rows | 0 rows |" in markdown


@pytest.mark.parametrize("track", ["tiny", "finqa"])
def test_sft_demonstrations_validate_as_sft(tmp_path, track):
    sft = DATA / track / "sft.jsonl"
    if not sft.exists():
        pytest.skip("sample data not generated yet")
    report = validate_dataset(str(sft), kind="sft", backend="bedrock", report_dir_uri=str(tmp_path))
    assert report.ok, report.summary()
    assert by_name(report.checks, "train", "row_count").expected == "200-20,000 rows"


# --- each check fails on its own constructed case -----------------------------------------------------


def test_clean_records_pass_every_check():
    checks = run_checks(prompts(120), prompts(100, "e", offset=1000), backend="bedrock")
    assert not_passing(checks) == {}
    assert len(checks) == 15  # 6 per split, reference_text on both, not_in_train


def test_row_count_limits_per_backend():
    few = prompts(50)
    assert not_passing(run_checks(few, backend="bedrock")) == {("train", "row_count"): "fail"}
    assert not_passing(run_checks(few, backend="sagemaker")) == {("train", "row_count"): "warn"}
    checks = run_checks(few, backend="local")
    assert not_passing(checks) == {("train", "row_count"): "warn"}
    assert by_name(checks, "train", "row_count").observed == 50
    assert not_passing(run_checks(prompts(20_001), backend="bedrock")) == {("train", "row_count"): "fail"}
    assert not_passing(run_checks(prompts(120), [], backend="local")) == {("eval", "row_count"): "fail"}


def test_unique_ids_check_names_the_repeating_rows():
    train = prompts(120)
    train[30].id = train[7].id
    checks = run_checks(train)
    assert not_passing(checks) == {("train", "unique_ids"): "fail"}
    check = by_name(checks, "train", "unique_ids")
    assert check.observed == 1
    assert check.details == ['train:31 (id t7): same id "t7" as line 8']
    assert check.expectation == "ExpectColumnValuesToBeUnique"


def test_last_turn_check():
    train = prompts(120)
    train[5].messages.append({"role": "assistant", "content": "7"})
    assert not_passing(run_checks(train)) == {("train", "last_turn"): "fail"}
    demos = prompts(120)
    for r in demos[1:]:
        r.messages.append({"role": "assistant", "content": "7"})
    assert not_passing(run_checks(demos, kind="sft")) == {("train", "last_turn"): "fail"}


def test_prompt_length_check_counts_system_and_user_text():
    train = prompts(120)
    train[3].messages.insert(0, {"role": "system", "content": "x" * 500})
    checks = run_checks(train, max_prompt_chars=400)
    assert not_passing(checks) == {("train", "prompt_chars"): "fail"}
    check = by_name(checks, "train", "prompt_chars")
    assert check.observed == len(train[3].prompt_text()) > 500
    assert check.details == [f"train:4 (id t3): {check.observed:,} chars"]


def test_reference_share_check_honours_the_configured_minimum():
    train = prompts(100)
    for r in train[:5]:
        r.reference_answer = None
    checks = run_checks(train)
    assert not_passing(checks) == {("train", "reference_share"): "fail"}
    assert by_name(checks, "train", "reference_share").observed == 0.95
    assert not_passing(run_checks(train, min_reference_share=0.9)) == {}
    assert not_passing(run_checks(train, kind="rft", min_reference_share=0.96)) == {
        ("train", "reference_share"): "fail"
    }


def test_duplicate_prompts_are_a_warning_ignoring_case_and_spacing():
    train = prompts(120)
    train[9].messages = [
        {"role": "user", "content": "  " + train[2].messages[0]["content"].upper().replace(" ", "\n ")}
    ]
    checks = run_checks(train)
    assert not_passing(checks) == {("train", "duplicate_prompts"): "warn"}
    assert by_name(checks, "train", "duplicate_prompts").details == [
        "train:10 (id t9): same prompt as line 3"
    ]


def test_eval_prompt_also_in_train_fails_even_with_another_system_prompt():
    train, eval_ = prompts(120), prompts(100, "e", offset=1000)
    leaked = train[41]
    eval_[6].messages = [
        {"role": "system", "content": "You are a careful analyst."},
        {"role": "user", "content": leaked.messages[0]["content"].lower() + "  "},
    ]
    checks = run_checks(train, eval_, names={"train": "train.jsonl", "eval": "eval.jsonl"})
    assert not_passing(checks) == {("eval", "not_in_train"): "fail"}
    check = by_name(checks, "eval", "not_in_train")
    assert check.observed == 1
    assert check.details == ["eval.jsonl:7 (id e1006) = train.jsonl:42 (id t41)"]


def test_small_eval_set_is_a_warning():
    assert not_passing(run_checks(prompts(120), prompts(20, "e", offset=1000))) == {
        ("eval", "row_count"): "warn"
    }


def test_prompt_hash_normalises_case_spacing_and_ignores_system_turns():
    a = RftRecord("a", [{"role": "user", "content": "What is  2+2?\n"}])
    b = RftRecord(
        "b", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what IS 2+2?"}]
    )
    c = RftRecord("c", [{"role": "user", "content": "What is 2+3?"}])
    assert prompt_hash(a) == prompt_hash(b) != prompt_hash(c)
    assert len(prompt_hash(a)) == 64


def test_bad_settings_are_rejected_early():
    with pytest.raises(ValueError, match="backend: expected one of local, ray, sagemaker, bedrock; got 'vertex'"):
        run_checks(prompts(3), backend="vertex")
    with pytest.raises(ValueError, match="min_reference_share"):
        run_checks(prompts(3), min_reference_share=1.5)


# --- validate_dataset: schema first, failures raise, reports land next to the data ----------------------


def test_schema_errors_fail_the_run_and_are_reported_for_both_files_with_the_dataset_checks(tmp_path):
    train = tmp_path / "train.jsonl"
    write_records(str(train), prompts(150))
    lines = train.read_text().splitlines()
    lines[4] = lines[4].replace('"user"', '"bot"')
    lines[99] = "{oops"
    lines[7] = lines[7].replace('"reference_answer"', '"reference_answr"')  # and a row without its answer
    train.write_text("\n".join(lines) + "\n")
    eval_ = tmp_path / "eval.jsonl"
    eval_.write_text('{"messages": [{"role": "user", "content": ""}], "reference_answer": "1"}\n')

    with pytest.raises(DatasetValidationFailed) as err:
        validate_dataset(str(train), str(eval_))
    report = err.value.report
    assert [(c.split, c.name, c.status) for c in report.checks][:2] == [
        ("train", "schema", "fail"),
        ("eval", "schema", "fail"),
    ]
    # the same pass ran the dataset-level checks on the 148 readable rows: the missing answer is reported too
    share = next(c for c in report.checks if c.name == "reference_share")
    assert share.status == "fail" and share.details == ["train.jsonl:8 (id t7): no reference_answer"]
    message = str(err.value)
    assert 'train.jsonl:5: messages[0].role: expected one of system, user, assistant; got "bot"' in message
    assert "train.jsonl:100: invalid JSON" in message
    assert "eval.jsonl:1: messages[0].content: must not be empty" in message
    assert [i.line for i in err.value.issues] == [5, 100, 1]
    assert isinstance(err.value, ValueError)
    # reports are written next to the training file by default, with the issues in them
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["status"] == "fail"
    assert saved["checks"][0]["observed"] == 2
    assert "train.jsonl:100: invalid JSON" in (tmp_path / "validation.md").read_text()


def test_failing_check_raises_with_summary_and_can_return_instead(tmp_path):
    train = tmp_path / "data" / "train.jsonl"
    write_records(f"file://{train}", prompts(60))
    with pytest.raises(DatasetValidationFailed) as err:
        validate_dataset(str(train), backend="bedrock")
    summary = str(err.value)
    assert summary.startswith(f"dataset validation FAILED: {train} (60 rows)")
    assert "FAIL  train  row_count" in summary and "observed 60 rows; expected 100-20,000 rows" in summary
    assert (tmp_path / "data" / "validation.md").read_text().count("**FAIL**") == 1

    report = validate_dataset(
        str(train), backend="local", raise_on_failure=False, report_dir_uri=(tmp_path / "out").as_uri()
    )
    assert report.ok and report.status == "warn" and [c.name for c in report.warnings] == ["row_count"]
    assert report.markdown_uri == (tmp_path / "out").as_uri() + "/validation.md"
    assert (tmp_path / "out" / "validation.json").exists()


def test_empty_file_fails_the_schema_check(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n\n")
    with pytest.raises(DatasetValidationFailed, match="no records"):
        validate_dataset(str(train), write_report=False)


def test_aws_shaped_rows_pass_the_schema_and_dataset_checks(tmp_path):
    report = validate_dataset(str(AWS_SAMPLE), backend="local", report_dir_uri=str(tmp_path))
    assert report.ok and not_passing(report.checks) == {("train", "row_count"): "warn"}


def test_validates_data_on_s3_and_writes_reports_next_to_it(s3_root):
    from rftflow.artifacts import store

    store.write_bytes(f"{s3_root}/data/train.jsonl", AWS_SAMPLE.read_bytes())
    rows = AWS_SAMPLE.read_text().splitlines()
    store.write_text(f"{s3_root}/data/eval.jsonl", rows[0] + "\n")
    with pytest.raises(DatasetValidationFailed) as err:
        validate_dataset(f"{s3_root}/data/train.jsonl", f"{s3_root}/data/eval.jsonl")
    assert by_name(err.value.report.checks, "eval", "not_in_train").details == [
        "eval.jsonl:1 (id chem-001) = train.jsonl:1 (id chem-001)"
    ]
    saved = store.read_json(f"{s3_root}/data/validation.json")
    assert saved["status"] == "fail" and saved["files"]["eval"]["rows"] == 1
    assert store.exists(f"{s3_root}/data/validation.md")


# --- CLI -----------------------------------------------------------------------------------------------


def test_validate_cli_exit_codes(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    write_records(str(train), prompts(120))
    assert (
        cli_main(["validate", str(train), "--backend", "bedrock", "--report-dir", str(tmp_path / "r")]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("dataset validation passed:") and "reports: " in out

    train.write_text(train.read_text() + '{"messages": [{"role": "bot", "content": "x"}]}\n')
    assert cli_main(["validate", str(train), "--no-report"]) == 1
    assert 'train.jsonl:121: messages[0].role: expected one of system, user, assistant; got "bot"' in (
        capsys.readouterr().out
    )
    assert cli_main(["validate", str(tmp_path / "missing.jsonl"), "--no-report"]) == 1
    assert "error: " in capsys.readouterr().err


# --- numeric reference answers (issue 14, item 7) -------------------------------------------------------


def test_numeric_reference_answers_pass_with_a_warning_for_text_rewards():
    # GSM8K-style numbers as reference answers: valid per the Bedrock docs (rft-prepare-data-open-weight).
    train = prompts(120)
    train[5].reference_answer = 1234567.5
    train[9].reference_answer = True
    checks = run_checks(train)
    assert not_passing(checks) == {("train", "reference_text"): "warn"}
    check = by_name(checks, "train", "reference_text")
    assert check.observed == 2
    assert check.details == ["train:6 (id t5): reference_answer is 1234567.5", "train:10 (id t9): reference_answer is true"]
    assert "1.23457e+06" in check.description  # what exact_match would compare
    assert not_passing(run_checks(train, reward="exact_match")) == {("train", "reference_text"): "warn"}
    # the numeric reward reads numbers as numbers: no warning, and no check at all
    assert not any(c.name == "reference_text" for c in run_checks(train, reward="numeric"))
    assert by_name(checks, "train", "reference_share").status == "pass"  # a number is a reference answer


def test_validate_counts_a_bedrock_system_prompt_in_prompt_length(tmp_path):
    # amazon-nova-samples SFT rows carry the system prompt top level (`"system": [{"text": ...}]`).
    rows = [{"messages": [{"role": "user", "content": [{"text": f"Q{i}?"}]},
                          {"role": "assistant", "content": [{"text": f"A{i}."}]}],
             "system": [{"text": "x" * 300}]} for i in range(120)]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_dataset(str(path), kind="sft", max_prompt_chars=200, write_report=False,
                              raise_on_failure=False)
    check = by_name(report.checks, "train", "prompt_chars")
    assert check.status == "fail" and check.observed > 300


# --- CLI: the --kind sft hint and a closed pipe (issue 14, item 9's CLI part) ------------------------------


def test_validate_cli_suggests_kind_sft_for_demonstrations(tmp_path, capsys):
    sft = tmp_path / "sft.jsonl"
    write_records(str(sft), read_records(str(DATA / "tiny" / "sft.jsonl"), kind="sft")[:5])
    assert cli_main(["validate", str(sft), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "hint: these rows look like SFT demonstrations" in err and "--kind sft" in err
    assert cli_main(["validate", str(sft), "--no-report", "--kind", "sft"]) == 0  # passes (row count: a warning)
    assert "hint:" not in capsys.readouterr().err
    # an RFT file with an unrelated schema problem gets no hint
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    assert cli_main(["validate", str(bad), "--no-report"]) == 1
    assert "hint:" not in capsys.readouterr().err


def _first_line_then_close(code: str) -> tuple[bytes, str, int]:
    """Run `code`, read one line of its stdout and close the pipe, as `| head -1` does."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    return first, err, proc.returncode


def test_validate_output_into_a_closed_pipe_ends_quietly():
    """`rftflow validate ... | head`: output larger than the pipe's buffer, reader gone after one line."""
    big = "'dataset validation FAILED\\n' + 'detail line\\n' * 50000"
    first, err, rc = _first_line_then_close(
        f"import sys; from rftflow.cli.data import emit; ok = emit({big}); emit('after'); sys.exit(0 if not ok else 3)")
    assert first == b"dataset validation FAILED\n"
    assert "BrokenPipeError" not in err and "Traceback" not in err, err
    assert rc == 0  # emit reported the closed pipe, and the later write was dropped quietly
    # the same output through a bare print is what users saw before: a BrokenPipeError traceback
    _, err, _ = _first_line_then_close(f"print({big})")
    assert "BrokenPipeError" in err


def test_validate_cli_checks_the_aws_region(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    write_records(str(train), prompts(120))
    assert cli_main(["validate", str(train), "--backend", "bedrock", "--region", "us-west-2", "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  setup  region" in out and "expected us-east-1" in out
    assert cli_main(["validate", str(train), "--backend", "sagemaker", "--region", "us-west-2", "--no-report"]) == 0
    assert cli_main(["validate", str(train), "--backend", "sagemaker", "--flavour", "serverless",
                     "--region", "ap-northeast-1", "--no-report"]) == 1
