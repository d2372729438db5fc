"""`rftflow validate` on inputs that are not ordinary files: devices, pipes, and s3:// without credentials.

Each ends with one line saying what is wrong (and, for S3, what to configure), never a hang or a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rftflow.cli.main import main

PROJECT = Path(__file__).resolve().parents[2]


def test_validate_refuses_a_device_instead_of_reading_it_forever(capsys):
    # /dev/zero never ends and has no newline; before the check, validate read it until killed.
    assert main(["validate", "/dev/zero", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: /dev/zero: not a regular file (a device, pipe or socket); expected a JSONL file"


def test_validate_refuses_a_named_pipe_as_eval_file(capsys, tmp_path):
    fifo = tmp_path / "eval.jsonl"
    os.mkfifo(fifo)
    train = PROJECT / "include" / "data" / "tiny" / "train.jsonl"
    assert main(["validate", str(train), "--eval", str(fifo), "--no-report"]) == 1
    assert "not a regular file" in capsys.readouterr().err


def test_s3_without_credentials_is_one_line_saying_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RFTFLOW_S3_ENDPOINT_URL"}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_DEFAULT_REGION="us-east-1",
               HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "rftflow.cli.main", "validate", "s3://rftflow-no-such-bucket/train.jsonl",
                           "--no-report"], capture_output=True, text=True, env=env, cwd=PROJECT, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: s3://rftflow-no-such-bucket/train.jsonl: no AWS "
                                                   "credentials found"), proc.stderr
    assert "AWS_ACCESS_KEY_ID" in lines[0] and "RFTFLOW_S3_ENDPOINT_URL" in lines[0]


@pytest.mark.parametrize("name", ["exists", "read_bytes", "list_prefix"])
def test_store_calls_without_credentials_raise_the_same_error(name, tmp_path, monkeypatch):
    from rftflow.artifacts import store

    for key in list(os.environ):
        if key.startswith("AWS_") or key == "RFTFLOW_S3_ENDPOINT_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(store.StoreCredentialsError, match=r"^s3://rftflow-none/k: no AWS credentials found"):
        getattr(store, name)("s3://rftflow-none/k")
