"""Stage manifests: deterministic stage folders, a stage is complete only once its manifest is written."""

from __future__ import annotations

import logging
import re

import pytest
from pydantic import ValidationError

from rftflow.artifacts import store
from rftflow.artifacts.manifest import (
    SCHEMA_VERSION,
    ManifestError,
    NewerManifestError,
    StageManifest,
    load_complete,
    manifest_uri,
    package_versions,
    read_manifest,
    safe_segment,
    stage_uri,
    write_manifest,
)

RUN_ID = "manual__2026-11-25T16:24:00.123456+00:00"


def _manifest(**overrides) -> StageManifest:
    fields = dict(
        dag_id="rft_cycle",
        run_id=RUN_ID,
        cycle=0,
        stage="checkpoint_eval",
        backend="local",
        inputs={"eval_uri": "file:///data/eval.jsonl", "temperature": 0.0},
        outputs={"metrics_uri": "file:///x/metrics.json"},
        checkpoint_uri="file:///x/ckpt",
        metrics={"pass_rate": 0.75, "mean_reward": 0.71},
        decision=None,
        jobs=[{"name": "job-1", "billable_seconds": 12}],
        started_at="2026-11-25T16:24:01+00:00",
        finished_at="2026-11-25T16:24:31+00:00",
        duration_s=30.0,
        versions=package_versions(),
    )
    fields.update(overrides)
    return StageManifest(**fields)


# --------------------------------------------------------------------------- stage_uri


def test_stage_uri_layout_and_determinism(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", "scheduled__2026-01-01", 2, "rft")
    assert uri == store.join(artifact_root, "rft_cycle", "scheduled__2026-01-01", "cycle-2", "rft")
    assert stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "sft") == stage_uri(
        artifact_root, "rft_cycle", RUN_ID, 0, "sft"
    )


def test_run_ids_become_distinct_path_safe_folder_names():
    run_ids = [RUN_ID, "a:b", "a+b", "a_b", "a b", "a/b", "..", ".", "-x", "ü", "x" * 300, "x" * 301]
    names = [safe_segment(r) for r in run_ids]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name
        assert len(name) <= 130
    assert safe_segment("a_b") == "a_b"  # already safe: unchanged
    assert safe_segment(RUN_ID).startswith("manual__2026-11-25T16_24_00.123456_00_00-")
    assert safe_segment(RUN_ID) == safe_segment(RUN_ID)
    uri = stage_uri("s3://bucket/root", "rft_cycle", RUN_ID, 1, "rft")
    assert ":" not in uri.removeprefix("s3://") and "+" not in uri


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dag_id": "a/b"}, "dag_id"),
        ({"dag_id": ""}, "dag_id"),
        ({"stage": "../rft"}, "stage"),
        ({"cycle": -1}, "cycle"),
        ({"cycle": "1"}, "cycle"),
        ({"run_id": ""}, "path segment"),
    ],
)
def test_stage_uri_rejects_bad_parts(kwargs, field):
    args = {"artifact_root": "/tmp/root", "dag_id": "d", "run_id": "r", "cycle": 0, "stage": "s"} | kwargs
    with pytest.raises(ValueError, match=field):
        stage_uri(**args)


# --------------------------------------------------------------------------- completion


def test_write_then_load_complete_round_trip(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "checkpoint_eval")
    manifest = _manifest()
    written = write_manifest(uri, manifest)
    assert written == manifest_uri(uri) == store.join(uri, "manifest.json")
    assert store.exists(written)
    assert load_complete(uri) == manifest
    assert store.read_json(written)["schema_version"] == SCHEMA_VERSION


def test_missing_stage_folder_is_not_complete(artifact_root):
    assert load_complete(stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")) is None


def test_partial_stage_folder_without_manifest_is_not_complete(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")
    store.write_json(store.join(uri, "metrics.json"), {"step": 3})
    store.write_text(store.join(uri, "checkpoint", "weights.bin"), "partial")
    assert store.exists(uri)
    assert load_complete(uri) is None


def test_a_retried_stage_reuses_its_complete_manifest(artifact_root):
    """The contract a stage follows: outputs first, manifest last; a retry after that reuses the work."""
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "baseline_eval")
    work_done = []

    def run_stage(crash_before_manifest: bool) -> StageManifest:
        done = load_complete(uri)
        if done is not None:
            return done
        work_done.append(1)
        metrics_uri = store.join(uri, "metrics.json")
        store.write_json(metrics_uri, {"pass_rate": 0.5})
        if crash_before_manifest:
            raise RuntimeError("worker lost")
        manifest = _manifest(stage="baseline_eval", outputs={"metrics_uri": metrics_uri})
        write_manifest(uri, manifest)
        return manifest

    with pytest.raises(RuntimeError):
        run_stage(crash_before_manifest=True)
    first = run_stage(crash_before_manifest=False)  # outputs present but no manifest: runs again
    again = run_stage(crash_before_manifest=False)  # complete: reused, no new work
    assert len(work_done) == 2
    assert again == first
    assert store.read_json(again.outputs["metrics_uri"]) == {"pass_rate": 0.5}


def test_unparseable_manifest_counts_as_incomplete_and_is_logged(artifact_root, caplog):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")
    store.write_text(manifest_uri(uri), '{"dag_id": "rft_cycle", ')  # truncated by hand
    with caplog.at_level(logging.WARNING, logger="rftflow.artifacts.manifest"):
        assert load_complete(uri) is None
    assert "manifest.json" in caplog.text
    with pytest.raises(ManifestError, match=r"manifest\.json:1:\d+: invalid JSON"):
        read_manifest(manifest_uri(uri))


def test_unknown_field_is_rejected_with_its_name(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")
    data = _manifest().model_dump(mode="json") | {"surprise": 1}
    store.write_json(manifest_uri(uri), data)
    with pytest.raises(ManifestError, match="surprise: Extra inputs are not permitted"):
        read_manifest(manifest_uri(uri))
    assert load_complete(uri) is None


def test_wrong_field_type_names_the_field(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")
    store.write_json(manifest_uri(uri), _manifest().model_dump(mode="json") | {"cycle": "three"})
    with pytest.raises(ManifestError, match=r"cycle: .*integer.*got 'three'"):
        read_manifest(manifest_uri(uri))


def test_newer_schema_version_raises_a_clear_error(artifact_root):
    uri = stage_uri(artifact_root, "rft_cycle", RUN_ID, 0, "rft")
    data = _manifest().model_dump(mode="json") | {"schema_version": SCHEMA_VERSION + 1, "new_field": "x"}
    store.write_json(manifest_uri(uri), data)
    with pytest.raises(NewerManifestError, match=r"schema_version 2 is newer .* upgrade rftflow"):
        load_complete(uri)
    with pytest.raises(ValidationError, match="newer than this rftflow"):
        _manifest(schema_version=SCHEMA_VERSION + 1)


def test_manifest_model_requires_its_core_fields():
    with pytest.raises(ValidationError) as info:
        StageManifest(dag_id="d", run_id="r", cycle=0, stage="s", backend="local")
    missing = {err["loc"][0] for err in info.value.errors()}
    assert missing == {"started_at", "finished_at", "duration_s"}


def test_package_versions_records_python_and_our_stack():
    versions = package_versions()
    assert re.fullmatch(r"3\.\d+\.\d+.*", versions["python"])
    assert {"rftflow", "pydantic"} <= set(versions)
    assert all(isinstance(v, str) and v for v in versions.values())
