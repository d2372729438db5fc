"""Deterministic AWS job names for a stage, so a retried or resumed task finds its job instead of paying twice.

`{dag}-{stage}-c{cycle}-{hash}-{attempt}`: the hash covers the stage location (artifact root, dag, run,
cycle, stage); the attempt counts only jobs that ended in failure, never Airflow's try number.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_NAME = 63  # SageMaker training jobs, Bedrock customization jobs and custom model names
_NAME = re.compile(r"[a-zA-Z0-9](-?[a-zA-Z0-9])*")


class JobNameError(ValueError):
    """A job name AWS would reject."""


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]", "-", text)).strip("-").lower()


def stage_job_base(stage_uri: str, dag_id: str, stage: str, cycle: int, prefix: str = "") -> str:
    """The attempt-less part of a stage's job name; the same stage location always gives the same base."""
    digest = hashlib.sha256(stage_uri.encode("utf-8")).hexdigest()[:10]
    tail = f"-c{cycle}-{digest}"
    room = MAX_NAME - len(tail) - 4  # keep room for "-NNN"
    readable = _slug("-".join(p for p in (prefix, dag_id, stage) if p))[:room].strip("-") or "rftflow"
    return f"{readable}{tail}"


def job_name(base: str, attempt: int) -> str:
    name = f"{base}-{attempt}"
    validate_job_name(name)
    return name


def validate_job_name(name: str, what: str = "job name") -> str:
    """Raise JobNameError unless `name` fits every service we send it to (≤ 63, letters/digits/single '-')."""
    if not isinstance(name, str) or not name:
        raise JobNameError(f"{what}: expected a non-empty string; got {name!r}")
    if len(name) > MAX_NAME:
        raise JobNameError(f"{what}: at most {MAX_NAME} characters allowed; got {len(name)} ({name!r})")
    if not _NAME.fullmatch(name):
        raise JobNameError(f"{what}: expected letters, digits and single hyphens, starting and ending with a "
                           f"letter or digit; got {name!r}")
    return name


def request_digest(request: dict[str, Any], job_name_: str) -> str:
    """A short hash of what a request asks for, independent of the attempt's name (used as a job tag)."""
    text = json.dumps(request, sort_keys=True, default=str).replace(job_name_, "<job>")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Submitted:
    """A job found or created for a stage."""

    name: str
    arn: str | None
    status: str
    created: bool
    digest: str
