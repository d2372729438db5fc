"""The `validate` and `convert` subcommands: check a dataset before paying for a job, or build one from Q/A.

Each exposes ``add_*_arguments(parser)`` and ``run_*(args) -> int``; ``main`` runs them standalone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from rftflow.data.dataset import DatasetError, DatasetIssue

# What the reader says about a demonstration read as an RFT prompt: its last turn is the answer, or its content
# is a list of text parts (the Converse form SFT files use).
_SFT_SIGNS = ('an RFT prompt must end with a user turn; got "assistant"', "expected a string; got array")


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    from rftflow.data.validation import DEFAULT_MAX_PROMPT_CHARS, ROW_LIMITS

    parser.add_argument("train", help="training JSONL (path, file:// or s3:// URI)")
    parser.add_argument(
        "--eval",
        dest="eval_uri",
        metavar="URI",
        help="held-out eval JSONL, checked too and for overlap with train",
    )
    parser.add_argument(
        "--backend",
        choices=list(ROW_LIMITS),
        default="local",
        help="whose row-count limits apply (bedrock: 100-20,000 RFT prompts; default: %(default)s)",
    )
    parser.add_argument(
        "--kind",
        choices=("rft", "sft"),
        default="rft",
        help="rft: prompts ending with a user turn; sft: demonstrations ending with the answer (default: %(default)s)",
    )
    parser.add_argument(
        "--max-prompt-chars",
        type=int,
        metavar="N",
        default=DEFAULT_MAX_PROMPT_CHARS,
        help="longest prompt allowed, in characters (default: %(default)s)",
    )
    parser.add_argument(
        "--min-reference-share",
        type=float,
        metavar="SHARE",
        default=None,
        help="share of rows that must carry a reference_answer (default: 1.0 for rft, 0 for sft)",
    )
    parser.add_argument(
        "--report-dir",
        metavar="URI",
        help="where validation.json/.md go (default: next to the training file)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="print the summary only; write no report files"
    )
    parser.add_argument(
        "--region",
        metavar="REGION",
        help="AWS region the sagemaker/bedrock backend would train in; an unsupported one fails "
        "(default: the backend's region option, else AWS_REGION / AWS_DEFAULT_REGION)",
    )
    parser.add_argument(
        "--flavour",
        choices=("training_job", "serverless"),
        help="SageMaker flavour whose regions apply (default: the backend's flavour option)",
    )
    parser.add_argument(
        "--reward",
        metavar="NAME",
        help="the reward the data is for; numbers as reference answers are flagged only for text rewards",
    )


def run_validate(args: argparse.Namespace) -> int:
    """Print the validation summary; 0 when it passes (warnings allowed), 1 when it fails."""
    from rftflow.data.validation import DatasetValidationFailed, validate_dataset

    try:
        report = validate_dataset(
            args.train,
            args.eval_uri,
            backend=args.backend,
            kind=args.kind,
            max_prompt_chars=args.max_prompt_chars,
            min_reference_share=args.min_reference_share,
            report_dir_uri=args.report_dir,
            write_report=not args.no_report,
            reward=args.reward,
            region=args.region,
            flavour=args.flavour,
        )
    except DatasetValidationFailed as failed:
        if emit(failed.report.summary()) and args.kind == "rft" and looks_like_sft(failed.issues):
            emit("hint: these rows look like SFT demonstrations (they end with the assistant's answer or use "
                 "content blocks); validate them with --kind sft", sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
        from rftflow.redact import redact_text

        emit(f"error: {redact_text(str(exc))}", sys.stderr)
        return 1
    emit(report.summary())
    return 0


def looks_like_sft(issues: Sequence[DatasetIssue]) -> bool:
    """True when the schema problems are the ones SFT demonstrations raise when read as RFT prompts."""
    return any(sign in issue.message for issue in issues for sign in _SFT_SIGNS)


def emit(text: str, stream: TextIO | None = None) -> bool:
    """Print and flush; False when the reader went away (`rftflow validate ... | head`).

    A closed pipe is not an error of the validation: the rest of the output is dropped quietly, and the stream
    is pointed at /dev/null so the interpreter's final flush does not print a BrokenPipeError traceback.
    """
    stream = stream or sys.stdout
    try:
        print(text, file=stream)
        stream.flush()
        return True
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # a stream without a file descriptor (captured output)
            pass
        return False


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input", help="question/answer file: .csv, .tsv or .jsonl (path, file:// or s3:// URI)"
    )
    parser.add_argument("output", help="RFT JSONL to write")
    parser.add_argument(
        "--question-field",
        default="question",
        metavar="NAME",
        help="column holding the question (default: %(default)s)",
    )
    parser.add_argument(
        "--answer-field",
        default="answer",
        metavar="NAME",
        help="column holding the reference answer (default: %(default)s)",
    )
    parser.add_argument(
        "--id-field",
        default="id",
        metavar="NAME",
        help="column holding the row id, if any (default: %(default)s)",
    )
    parser.add_argument(
        "--system", dest="system_prompt", metavar="TEXT", help="system prompt added before every question"
    )
    parser.add_argument(
        "--prompt-template",
        default="{question}",
        metavar="TEMPLATE",
        help='user turn built from the question, e.g. "{question} Give the final answer after ####."',
    )
    parser.add_argument(
        "--format",
        dest="input_format",
        choices=("csv", "tsv", "jsonl"),
        help="input format (default: from the suffix)",
    )


def run_convert(args: argparse.Namespace) -> int:
    """Convert, then print what was written; 1 with every bad row listed when the input has problems."""
    from rftflow.data.convert import convert_qa

    try:
        result = convert_qa(
            args.input,
            args.output,
            question_field=args.question_field,
            answer_field=args.answer_field,
            id_field=args.id_field,
            system_prompt=args.system_prompt,
            prompt_template=args.prompt_template,
            input_format=args.input_format,
        )
    except DatasetError as exc:
        print(f"nothing written; {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {result.rows:,} RFT prompts to {result.output_uri}")
    return 0


COMMANDS = {
    "validate": ("check a dataset (schema + dataset-level checks)", add_validate_arguments, run_validate),
    "convert": ("convert question/answer CSV or JSONL to RFT JSONL", add_convert_arguments, run_convert),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``validate`` or ``convert`` on their own: ``python -m rftflow.cli.data validate train.jsonl``."""
    parser = argparse.ArgumentParser(prog="rftflow")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
