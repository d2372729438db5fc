"""The storage API behaves the same on local folders and on S3 (moto): round trips, listing, copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rftflow.artifacts import store
from rftflow.artifacts.store import UnsupportedURIError

# --------------------------------------------------------------------------- URIs (no I/O)


def test_join_puts_exactly_one_slash_between_parts():
    assert store.join("s3://bucket/prefix", "a/", "/b", "c.json") == "s3://bucket/prefix/a/b/c.json"
    assert store.join("s3://bucket/prefix/", "x") == "s3://bucket/prefix/x"
    assert store.join("file:///tmp/root", "cycle-0", "rft") == "file:///tmp/root/cycle-0/rft"
    assert store.join("/tmp/root/", "a", "") == "/tmp/root/a"


def test_local_path_maps_file_uris_and_plain_paths():
    assert store.local_path("file:///tmp/a/b.json") == "/tmp/a/b.json"
    assert store.local_path("file://localhost/tmp/a") == "/tmp/a"
    assert store.local_path("/tmp/a") == "/tmp/a"
    assert store.local_path("relative/dir") == "relative/dir"
    assert store.local_path("s3://bucket/key") is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://bucket/key", "unsupported URI scheme 'gs'"),
        ("https://example.com/x.json", "unsupported URI scheme 'https'"),
        ("s3a://bucket/key", "use s3://"),
        ("s3://ab/key", "at least 3 characters"),
        ("file://host/tmp/x", "must be absolute"),
    ],
)
def test_unsupported_uris_fail_with_a_clear_message(uri, expected):
    with pytest.raises(UnsupportedURIError, match=expected):
        store.read_text(uri)
    with pytest.raises(UnsupportedURIError, match=expected):
        store.write_text(uri, "x")


def test_split_s3():
    assert store.split_s3("s3://bucket/a/b/") == ("bucket", "a/b")
    assert store.split_s3("s3://bucket") == ("bucket", "")


def test_s3_endpoint_comes_from_env(monkeypatch):
    for name in ("RFTFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert store.s3_endpoint_url() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    assert store.s3_endpoint_url() == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    assert store.s3_endpoint_url() == "http://s3-specific:2"
    monkeypatch.setenv("RFTFLOW_S3_ENDPOINT_URL", "http://ours:3")
    assert store.s3_endpoint_url() == "http://ours:3"


def test_s3_client_uses_the_same_endpoint_as_the_store(moto_server, s3_root):
    client = store.s3_client()
    assert client.meta.endpoint_url == moto_server
    bucket, key = store.split_s3(s3_root)
    client.put_object(Bucket=bucket, Key=f"{key}/via-boto3.txt", Body=b"hello")
    assert store.read_text(store.join(s3_root, "via-boto3.txt")) == "hello"


def test_importing_the_store_modules_stays_light():
    code = (
        "import sys, rftflow.artifacts.store, rftflow.artifacts.manifest, rftflow.artifacts.registry\n"
        "rftflow.artifacts.manifest.package_versions()\n"
        "heavy = {'boto3', 'botocore', 's3fs', 'fsspec', 'aiobotocore', 'torch', 'transformers', 'trl'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- both stores


def test_json_text_and_bytes_round_trip(artifact_root):
    obj = {"name": "résumé ✓", "nested": {"list": [1, 2.5, None, True]}, "n": 3}
    uri = store.join(artifact_root, "deep", "er", "obj.json")
    store.write_json(uri, obj)
    assert store.read_json(uri) == obj

    store.write_text(store.join(artifact_root, "t.txt"), "line 1\nläne 2\n")
    assert store.read_text(store.join(artifact_root, "t.txt")) == "line 1\nläne 2\n"

    data = bytes(range(256)) * 10
    store.write_bytes(store.join(artifact_root, "b.bin"), data)
    assert store.read_bytes(store.join(artifact_root, "b.bin")) == data

    store.write_json(uri, {"replaced": True})  # overwrite
    assert store.read_json(uri) == {"replaced": True}


def test_reading_a_missing_file_names_it(artifact_root):
    uri = store.join(artifact_root, "nope.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        store.read_json(uri)


def test_invalid_json_error_names_file_and_line(artifact_root):
    uri = store.join(artifact_root, "bad.json")
    store.write_text(uri, '{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(ValueError, match=r"bad\.json:4:1: invalid JSON"):
        store.read_json(uri)


def test_write_json_rejects_nan_and_keeps_the_old_file(artifact_root):
    uri = store.join(artifact_root, "m.json")
    store.write_json(uri, {"ok": 1})
    with pytest.raises(ValueError):
        store.write_json(uri, {"loss": float("nan")})
    with pytest.raises(TypeError):
        store.write_json(uri, {"obj": object()})
    assert store.read_json(uri) == {"ok": 1}
    assert store.list_prefix(artifact_root) == [uri]  # no temp files left behind


def test_exists_for_files_and_folders(artifact_root):
    store.write_text(store.join(artifact_root, "run1", "cycle-0", "x.txt"), "x")
    assert store.exists(store.join(artifact_root, "run1", "cycle-0", "x.txt"))
    assert store.exists(store.join(artifact_root, "run1"))
    assert store.exists(store.join(artifact_root, "run1") + "/")
    assert not store.exists(store.join(artifact_root, "run1", "cycle-0", "y.txt"))
    assert not store.exists(store.join(artifact_root, "run"))  # a string prefix is not a folder
    assert not store.exists(store.join(artifact_root, "run10"))


def test_exists_and_listing_see_writes_made_after_a_listing(artifact_root):
    folder = store.join(artifact_root, "stage")
    store.write_text(store.join(folder, "a.txt"), "a")
    assert store.list_prefix(folder) == [store.join(folder, "a.txt")]  # warms any listing cache
    assert not store.exists(store.join(folder, "manifest.json"))
    store.write_text(store.join(folder, "manifest.json"), "{}")
    assert store.exists(store.join(folder, "manifest.json"))
    assert store.list_prefix(folder) == [store.join(folder, "a.txt"), store.join(folder, "manifest.json")]


def test_s3_store_sees_objects_written_by_another_client(s3_root):
    folder = store.join(s3_root, "stage")
    store.write_text(store.join(folder, "a.txt"), "a")
    assert not store.exists(store.join(folder, "b.txt"))
    assert len(store.list_prefix(folder)) == 1
    bucket, key = store.split_s3(folder)
    store.s3_client().put_object(Bucket=bucket, Key=f"{key}/b.txt", Body=b"b")
    assert store.exists(store.join(folder, "b.txt"))
    assert store.list_prefix(folder) == [store.join(folder, "a.txt"), store.join(folder, "b.txt")]


def test_list_prefix_is_recursive_sorted_and_folder_bounded(artifact_root):
    for rel in ["run1/b.txt", "run1/a/z.txt", "run1/a/y.txt", "run10/other.txt", "run1.txt"]:
        store.write_text(store.join(artifact_root, rel), rel)
    run1 = store.join(artifact_root, "run1")
    assert store.list_prefix(run1) == [
        store.join(run1, "a/y.txt"),
        store.join(run1, "a/z.txt"),
        store.join(run1, "b.txt"),
    ]
    assert store.list_prefix(run1 + "/") == store.list_prefix(run1)
    assert store.list_prefix(store.join(artifact_root, "missing")) == []


def test_put_and_get_file(artifact_root, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00checkpoint\xff" * 1000)
    uri = store.join(artifact_root, "ckpt", "model.bin")
    store.put_file(str(src), uri)
    assert store.read_bytes(uri) == src.read_bytes()
    dst = tmp_path / "down" / "deeper" / "model.bin"
    store.get_file(uri, str(dst))
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        store.get_file(store.join(artifact_root, "missing.bin"), str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="no such local file"):
        store.put_file(str(tmp_path / "absent"), uri)


def _make_tree(root) -> dict[str, bytes]:
    files = {
        "config.json": b'{"hidden": 32}',
        "tokenizer/vocab.txt": b"a\nb\n",
        "weights/shard-00001.bin": os.urandom(4096),
        "weights/sub/deep.txt": b"deep",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _read_tree(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


def test_put_and_get_dir_round_trip(artifact_root, tmp_path):
    files = _make_tree(tmp_path / "model")
    uri = store.join(artifact_root, "checkpoints", "cycle-0")
    store.put_dir(str(tmp_path / "model"), uri)
    assert store.list_prefix(uri) == [store.join(uri, rel) for rel in sorted(files)]
    store.get_dir(uri, str(tmp_path / "restored"))
    assert _read_tree(tmp_path / "restored") == files
    with pytest.raises(FileNotFoundError, match="no such local folder"):
        store.put_dir(str(tmp_path / "absent"), uri)


def test_copy_prefix_within_a_store(artifact_root, tmp_path):
    files = _make_tree(tmp_path / "model")
    src = store.join(artifact_root, "runA", "rft")
    dst = store.join(artifact_root, "registry", "models", "v1")
    store.put_dir(str(tmp_path / "model"), src)
    store.write_text(store.join(artifact_root, "runA", "rft-other", "not-copied.txt"), "x")
    store.copy_prefix(src, dst)
    assert store.list_prefix(dst) == [store.join(dst, rel) for rel in sorted(files)]
    for rel, data in files.items():
        assert store.read_bytes(store.join(dst, rel)) == data
    assert store.list_prefix(src) == [store.join(src, rel) for rel in sorted(files)]  # source untouched


def test_copy_prefix_onto_itself_changes_nothing(artifact_root):
    src = store.join(artifact_root, "ckpt")
    store.write_text(store.join(src, "a.txt"), "a")
    store.copy_prefix(src, src + "/")
    assert store.list_prefix(src) == [store.join(src, "a.txt")]
    assert store.read_text(store.join(src, "a.txt")) == "a"


def test_copy_prefix_of_nothing_raises(artifact_root):
    with pytest.raises(FileNotFoundError, match="nothing to copy"):
        store.copy_prefix(store.join(artifact_root, "empty"), store.join(artifact_root, "dst"))


@pytest.mark.parametrize("direction", ["file_to_s3", "s3_to_file"])
def test_copy_prefix_across_stores(direction, file_root, s3_root, tmp_path):
    files = _make_tree(tmp_path / "model")
    src_root, dst_root = (file_root, s3_root) if direction == "file_to_s3" else (s3_root, file_root)
    src, dst = store.join(src_root, "ckpt"), store.join(dst_root, "copied")
    store.put_dir(str(tmp_path / "model"), src)
    store.copy_prefix(src, dst)
    assert {uri[len(dst) + 1 :]: store.read_bytes(uri) for uri in store.list_prefix(dst)} == files


def test_local_writes_are_atomic_for_concurrent_readers(file_root):
    uri = store.join(file_root, "big.json")
    payloads = [{"v": i, "pad": "x" * 200_000} for i in range(2)]
    store.write_json(uri, payloads[0])
    stop = threading.Event()
    errors: list[Exception] = []

    def reader() -> None:
        path = store.local_path(uri)
        while not stop.is_set():
            try:
                with open(path, encoding="utf-8") as fh:
                    json.load(fh)
            except Exception as exc:  # a torn write would show up as a JSON error
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            store.write_json(uri, payloads[i % 2])
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert sorted(os.listdir(os.path.dirname(store.local_path(uri)))) == ["big.json"]


def test_a_remote_folder_is_copied_here_once_and_a_bad_one_is_not_kept(s3_root, tmp_path):
    model = store.join(s3_root, "models", "m")
    store.write_text(store.join(model, "weights.bin"), "w")
    cache = str(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        store.local_copy(model, cache, require="config.json")
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # nothing half-kept
    store.write_text(store.join(model, "config.json"), "{}")  # the folder fixed upstream is found next time
    local = store.local_copy(model, cache, require="config.json")
    assert sorted(p.name for p in Path(local).iterdir()) == ["config.json", "weights.bin"]
    store.write_text(store.join(model, "config.json"), '{"changed": true}')
    assert store.local_copy(model, cache) == local  # downloaded once: a copy is reused as it is
    assert store.local_copy(str(tmp_path), cache) == str(tmp_path)  # a local folder is used where it is
