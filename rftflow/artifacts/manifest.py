"""The stage manifest: what a stage consumed, produced, measured and cost, written last as `manifest.json`.

A stage's output counts as complete only when its manifest exists and parses (see `load_complete`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rftflow.artifacts import store

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "ManifestError",
    "NewerManifestError",
    "StageManifest",
    "load_complete",
    "manifest_uri",
    "package_versions",
    "read_manifest",
    "safe_segment",
    "stage_uri",
    "write_manifest",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

_SAFE = re.compile(r"[A-Za-z0-9._-]")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_SEGMENT = 120


class ManifestError(ValueError):
    """A manifest.json that cannot be used: newer schema, invalid JSON or wrong fields."""


class NewerManifestError(ManifestError):
    """The manifest was written by a newer rftflow (its schema_version is above SCHEMA_VERSION)."""


class StageManifest(BaseModel):
    """Everything a stage recorded about one run of itself; stored as `{stage_uri}/manifest.json`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    dag_id: str
    run_id: str
    cycle: int
    stage: str
    backend: str
    inputs: dict[str, Any] = {}  # URIs and settings the stage consumed
    outputs: dict[str, Any] = {}  # URIs it produced (metrics_uri, rows_uri, report_uri, ...)
    checkpoint_uri: str | None = None  # model produced (train stages) or evaluated (eval stages)
    metrics: dict[str, Any] = {}  # small numbers only
    decision: dict[str, Any] | None = None  # diversity / gate decisions
    jobs: list[dict[str, Any]] = []  # AWS job names/ARNs, billable seconds, cost
    started_at: str
    finished_at: str
    duration_s: float
    versions: dict[str, str] = {}  # rftflow, python, torch, trl, ...

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise ValueError(
                f"manifest schema_version {value} is newer than this rftflow understands "
                f"(up to {SCHEMA_VERSION}); upgrade rftflow to read it"
            )
        if value < 1:
            raise ValueError(f"expected a schema_version >= 1; got {value}")
        return value


# --------------------------------------------------------------------------- paths


def safe_segment(value: str) -> str:
    """A deterministic, path-safe folder name for any string (Airflow run ids contain ':' '+' ...).

    Safe strings ([A-Za-z0-9._-], not starting with '.' or '-', short) are kept as they are. Others
    have each unsafe character replaced by '_' and get an 8-hex-digit hash of the original appended, so
    two different run ids never share a folder: `manual__2026-01-02T03:04:05+00:00` ->
    `manual__2026-01-02T03_04_05_00_00-1a2b3c4d`.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string for a path segment; got {value!r}")
    if _SAFE_SEGMENT.match(value) and len(value) <= _MAX_SEGMENT:
        return value
    cleaned = "".join(ch if _SAFE.match(ch) else "_" for ch in value).lstrip("._-")[:_MAX_SEGMENT]
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else f"id-{digest}"


def _check_segment(name: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_SEGMENT.match(value) or len(value) > 250:
        raise ValueError(
            f"{name}: expected letters, digits, '.', '_' or '-' (starting with a letter or digit); got {value!r}"
        )
    return value


def stage_uri(artifact_root: str, dag_id: str, run_id: str, cycle: int, stage: str) -> str:
    """`{artifact_root}/{dag_id}/{safe(run_id)}/cycle-{cycle}/{stage}` — the same inputs give the same URI."""
    _check_segment("dag_id", dag_id)
    _check_segment("stage", stage)
    if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 0:
        raise ValueError(f"cycle: expected an integer >= 0; got {cycle!r}")
    return store.join(artifact_root, dag_id, safe_segment(run_id), f"cycle-{cycle}", stage)


def manifest_uri(stage_uri: str) -> str:
    return store.join(stage_uri, MANIFEST_NAME)


# --------------------------------------------------------------------------- read / write


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        text = f"{where}: {err['msg']}"
        if err["type"] not in ("missing",):
            text += f"; got {got!r}"[:200]
        parts.append(text)
    return "; ".join(parts)


def read_manifest(uri: str) -> StageManifest:
    """Read and validate a manifest file; raises FileNotFoundError or ManifestError (naming the field)."""
    try:
        data = store.read_json(uri)
    except ValueError as exc:  # invalid JSON / encoding, message already names the file and line
        raise ManifestError(str(exc)) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{uri}: expected a JSON object; got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise NewerManifestError(
            f"{uri}: schema_version {version} is newer than this rftflow understands (up to "
            f"{SCHEMA_VERSION}); upgrade rftflow to read it"
        )
    try:
        return StageManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{uri}: {_describe(exc)}") from None


def load_complete(stage_uri: str) -> StageManifest | None:
    """The stage's manifest if the stage finished, else None.

    None when manifest.json is missing (a partial stage folder) or unreadable (logged as a warning;
    the stage then runs again and overwrites it). A manifest with a newer schema_version raises
    ManifestError: rerunning would silently overwrite work a newer rftflow recorded.
    """
    uri = manifest_uri(stage_uri)
    try:
        return read_manifest(uri)
    except FileNotFoundError:
        return None
    except NewerManifestError:
        raise
    except ManifestError as exc:
        log.warning("ignoring unusable stage manifest, the stage will run again: %s", exc)
        return None


def write_manifest(stage_uri: str, manifest: StageManifest) -> str:
    """Write `{stage_uri}/manifest.json` (atomically) and return its URI.

    Call it LAST, after every output of the stage is in place: its presence is what marks the
    stage complete.
    """
    from rftflow.redact import redact

    uri = manifest_uri(stage_uri)
    store.write_json(uri, redact(manifest.model_dump(mode="json")))  # URIs recorded without credentials
    return uri


def finish_stage(ctx: Any, backend: str, started: float | str, **fields: Any) -> StageManifest:
    """Write the manifest of the stage at `ctx` (a StageContext) that started at `started` (epoch seconds or ISO
    text) and ends now, with its package versions; last, as its presence marks the stage complete."""
    from datetime import UTC, datetime

    if isinstance(started, str):
        started_at, started_ts = started, datetime.fromisoformat(started).timestamp()
    else:
        started_at, started_ts = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"), float(started)
    finished = datetime.now(UTC)
    manifest = StageManifest(
        dag_id=ctx.dag_id, run_id=ctx.run_id, cycle=ctx.cycle, stage=ctx.stage, backend=backend,
        started_at=started_at, finished_at=finished.isoformat(timespec="seconds"),
        duration_s=round(max(0.0, finished.timestamp() - started_ts), 3), versions=package_versions(), **fields,
    )
    write_manifest(ctx.uri, manifest)
    return manifest


_VERSIONED_PACKAGES = (
    "rftflow",
    "apache-airflow",
    "apache-airflow-providers-amazon",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "great-expectations",
    "boto3",
    "botocore",
    "sagemaker",
    "s3fs",
    "fsspec",
    "pydantic",
)


def package_versions() -> dict[str, str]:
    """Python and installed package versions worth recording in a manifest (no heavy imports)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "rftflow" not in versions:
        from rftflow import __version__

        versions["rftflow"] = __version__
    return versions
