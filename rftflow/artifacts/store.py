"""One storage API over local folders (`file://` URIs and plain paths) and `s3://` (via s3fs).

Stages pass URIs as strings; this module reads, writes, lists and copies what they point to.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "StoreCredentialsError",
    "UnsupportedURIError",
    "copy_prefix",
    "exists",
    "get_dir",
    "get_file",
    "join",
    "list_prefix",
    "local_path",
    "put_dir",
    "put_file",
    "read_bytes",
    "read_json",
    "read_jsonl",
    "read_text",
    "s3_client",
    "s3_endpoint_url",
    "split_s3",
    "write_bytes",
    "write_json",
    "write_text",
]

_T = TypeVar("_T")
_SUPPORTED = "file:// URIs, plain local paths and s3://bucket/key URIs"


class UnsupportedURIError(ValueError):
    """The URI's scheme is not one this store serves."""


# --------------------------------------------------------------------------- URIs


def _scheme(uri: str) -> str:
    """'file' for file:// URIs and plain paths, 's3' for s3:// URIs; anything else raises."""
    if not isinstance(uri, str) or not uri:
        raise UnsupportedURIError(f"expected a URI string ({_SUPPORTED}); got {uri!r}")
    head, sep, _ = uri.partition("://")
    if not sep:
        return "file"
    scheme = head.lower()
    if scheme in ("file", "s3"):
        return scheme
    if scheme == "s3a" or scheme == "s3n":
        raise UnsupportedURIError(f"unsupported URI scheme {head!r} in {uri!r}: use s3:// instead")
    raise UnsupportedURIError(f"unsupported URI scheme {head!r} in {uri!r}: expected {_SUPPORTED}")


def local_path(uri: str) -> str | None:
    """The filesystem path for a `file://` URI or a plain path; None for remote (s3://) URIs."""
    if _scheme(uri) != "file":
        return None
    if "://" not in uri:
        return os.path.expanduser(uri)
    rest = uri[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    if not rest.startswith("/"):
        raise UnsupportedURIError(
            f"file URI {uri!r} must be absolute (file:///abs/path); got host or relative part {rest!r}"
        )
    return rest


_local_path_of = local_path  # for functions whose parameter is named `local_path`


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ('bucket', 'a/b'). The key has no leading or trailing slash."""
    if _scheme(uri) != "s3":
        raise UnsupportedURIError(f"expected an s3://bucket/key URI; got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if len(bucket) < 3:
        raise UnsupportedURIError(
            f"S3 URI {uri!r}: bucket name must have at least 3 characters; got {bucket!r}"
        )
    return bucket, key.strip("/")


def join(uri: str, *parts: str) -> str:
    """Append path segments to a URI with exactly one '/' between them (`join("s3://b/p", "x/y")`)."""
    _scheme(uri)
    out = uri
    for part in parts:
        part = str(part).strip("/")
        if not part:
            continue
        out = out if out.endswith("/") else out + "/"
        out += part
    return out


def _missing(uri: str) -> FileNotFoundError:
    return FileNotFoundError(f"no such file: {uri}")


# --------------------------------------------------------------------------- S3 settings


def s3_endpoint_url() -> str | None:
    """The S3 endpoint: RFTFLOW_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else None."""
    for name in ("RFTFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _s3_settings() -> dict[str, str | None]:
    return {
        "endpoint_url": s3_endpoint_url(),
        "region_name": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID") or None,
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        "aws_session_token": os.environ.get("AWS_SESSION_TOKEN") or None,
        "profile_name": os.environ.get("AWS_PROFILE") or None,
    }


_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


def s3_client() -> Any:
    """A boto3 S3 client with the same endpoint, region and credentials as the s3:// store.

    Clients are cached per process and settings (boto3 clients are thread-safe).
    """
    settings = _s3_settings()
    cache_key = (os.getpid(), *sorted(settings.items()))
    with _client_lock:
        client = _clients.get(cache_key)
        if client is None:
            import boto3  # lazy: keeps DAG parsing light

            session = boto3.session.Session(
                aws_access_key_id=settings["aws_access_key_id"],
                aws_secret_access_key=settings["aws_secret_access_key"],
                aws_session_token=settings["aws_session_token"],
                region_name=settings["region_name"],
                profile_name=settings["profile_name"] if not settings["aws_access_key_id"] else None,
            )
            client = session.client("s3", endpoint_url=settings["endpoint_url"])
            _clients[cache_key] = client
        return client


def _s3fs() -> Any:
    """The s3fs filesystem for the current settings (fsspec caches one instance per settings and pid)."""
    import fsspec  # lazy: s3fs pulls in aiobotocore

    settings = _s3_settings()
    # No listings cache: other tasks and processes write under the same prefixes, and a stale
    # listing would make a finished stage look unfinished (or a written file look missing).
    kwargs: dict[str, Any] = {"use_listings_cache": False}
    if settings["aws_access_key_id"]:
        kwargs["key"] = settings["aws_access_key_id"]
        kwargs["secret"] = settings["aws_secret_access_key"]
        if settings["aws_session_token"]:
            kwargs["token"] = settings["aws_session_token"]
    elif settings["profile_name"]:
        kwargs["profile"] = settings["profile_name"]
    client_kwargs = {}
    if settings["endpoint_url"]:
        kwargs["endpoint_url"] = settings["endpoint_url"]
    if settings["region_name"]:
        client_kwargs["region_name"] = settings["region_name"]
    if client_kwargs:
        kwargs["client_kwargs"] = client_kwargs
    try:
        return fsspec.filesystem("s3", **kwargs)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("s3:// URIs need the 's3fs' package (pip install 's3fs>=2025.1')") from exc


def _s3_path(uri: str) -> str:
    bucket, key = split_s3(uri)
    return f"{bucket}/{key}" if key else bucket


def _s3fs_and_path(uri: str) -> tuple[Any, str]:
    return _s3fs(), _s3_path(uri)


# --------------------------------------------------------------------------- local helpers


def _atomic_write_local(path: str, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace, so readers never see a partial file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _atomic_copy_local(src: str, dst: str) -> None:
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_temp_name(name: str) -> bool:
    # Our own in-flight temp files (see _atomic_write_local); never listed or copied.
    return name.startswith(".") and name.endswith(".tmp")


def _local_files(root: str) -> list[str]:
    """Relative POSIX paths of all files under a local folder, sorted."""
    out: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if _is_temp_name(name):
                continue
            out.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(out)


# --------------------------------------------------------------------------- S3 errors in words

_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "NoAuthTokenError", "UnauthorizedSSOTokenError", "SSOTokenLoadError")


class StoreCredentialsError(ValueError):
    """An s3:// URI was used with no usable AWS credentials; the message says what to configure."""


def _credential_error(exc: BaseException) -> BaseException | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _CREDENTIAL_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _s3_errors(func: Callable[..., _T]) -> Callable[..., _T]:
    """Missing AWS credentials become one line naming the URI and what to set, not a botocore traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            found = _credential_error(exc)
            if found is None:
                raise
            uri = next((a for a in (*args, *kwargs.values()) if isinstance(a, str) and a.startswith("s3://")),
                       "s3://")
            raise StoreCredentialsError(
                f"{uri}: no AWS credentials found for S3 ({type(found).__name__}). Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance/task role); for an S3-compatible "
                "store also set RFTFLOW_S3_ENDPOINT_URL") from None

    return wrapper


# --------------------------------------------------------------------------- public API


@_s3_errors
def exists(uri: str) -> bool:
    """True if the URI names an existing file or a folder/prefix holding at least one object."""
    path = local_path(uri)
    if path is not None:
        return os.path.exists(path)
    fs, spath = _s3fs_and_path(uri)
    return bool(fs.exists(spath))


@_s3_errors
def read_bytes(uri: str) -> bytes:
    path = local_path(uri)
    if path is not None:
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
            # A device or pipe (/dev/zero) never ends: reading it whole would exhaust memory.
            raise ValueError(f"{uri}: not a regular file (a device, pipe or socket); expected a file")
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise _missing(uri) from None
        except IsADirectoryError:
            raise IsADirectoryError(f"expected a file, got a folder: {uri}") from None
    fs, spath = _s3fs_and_path(uri)
    try:
        return fs.cat_file(spath)
    except FileNotFoundError:
        raise _missing(uri) from None


@_s3_errors
def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file; local writes are atomic (temp + rename), S3 puts are atomic by nature."""
    path = local_path(uri)
    if path is not None:
        _atomic_write_local(path, bytes(data))
        return
    bucket, key = split_s3(uri)
    if not key:
        raise UnsupportedURIError(f"cannot write to a bucket root; add a key: {uri}")
    fs = _s3fs()
    fs.pipe_file(_s3_path(uri), bytes(data))


def read_text(uri: str) -> str:
    data = read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{uri}: byte {exc.start}: expected UTF-8 text; got {data[exc.start : exc.start + 4]!r}"
        ) from None


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def read_jsonl(uri: str) -> list[Any]:
    """One JSON value per non-empty line (rows.jsonl, metrics.jsonl)."""
    return [json.loads(line) for line in read_text(uri).splitlines() if line.strip()]


def write_jsonl(uri: str, rows: Iterable[Any]) -> None:
    """One JSON value per line (atomically for local files); values JSON cannot hold are written as text."""
    write_text(uri, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def write_json(uri: str, obj: Any) -> None:
    """Write `obj` as indented UTF-8 JSON (atomically for local files)."""
    write_text(uri, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


@_s3_errors
def put_file(local_path: str, uri: str) -> None:
    """Upload (or copy) one local file to `uri`."""
    if not os.path.isfile(local_path):
        raise FileNotFoundError(f"no such local file: {local_path}")
    path = _local_path_of(uri)
    if path is not None:
        _atomic_copy_local(local_path, path)
        return
    fs = _s3fs()
    fs.put_file(local_path, _s3_path(uri))


@_s3_errors
def get_file(uri: str, local_path: str) -> None:
    """Download (or copy) one file from `uri` to a local path; the local file appears atomically."""
    path = _local_path_of(uri)
    if path is not None:
        if not os.path.isfile(path):
            raise _missing(uri)
        _atomic_copy_local(path, local_path)
        return
    fs, spath = _s3fs_and_path(uri)
    folder = os.path.dirname(os.path.abspath(local_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(local_path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        try:
            fs.get_file(spath, tmp)
        except FileNotFoundError:
            raise _missing(uri) from None
        os.replace(tmp, local_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@_s3_errors
def list_prefix(uri: str) -> list[str]:
    """Full URIs of every file under the folder/prefix `uri` (recursive, sorted); [] if there are none.

    The prefix is a folder: `list_prefix("s3://b/run1")` lists `s3://b/run1/...`, never `s3://b/run10/...`.
    """
    base = uri.rstrip("/")
    return [join(base, rel) for rel in _relative_files(uri)]


def _relative_files(uri: str) -> list[str]:
    path = local_path(uri)
    if path is not None:
        return _local_files(path) if os.path.isdir(path) else []
    fs, spath = _s3fs_and_path(uri)
    spath = spath.rstrip("/")
    prefix = spath + "/"
    found = fs.find(prefix)
    rels = []
    for item in found:
        if not item.startswith(prefix):
            continue
        rel = item[len(prefix) :]
        if rel and not rel.endswith("/"):
            rels.append(rel)
    return sorted(rels)


def put_dir(local_dir: str, uri: str) -> None:
    """Copy every file under a local folder to the prefix `uri`, keeping relative paths."""
    if not os.path.isdir(local_dir):
        raise FileNotFoundError(f"no such local folder: {local_dir}")
    copy_prefix(local_dir, uri)


def get_dir(uri: str, local_dir: str) -> None:
    """Copy every file under the prefix `uri` into a local folder, keeping relative paths."""
    copy_prefix(uri, local_dir)


def local_copy(uri: str, cache_dir: str, require: str | None = None) -> str:
    """A file or folder on this machine holding `uri`: a local path where it is; a remote one downloaded once
    into `cache_dir` (a folder, or a file when the URI is one), by atomic rename, so that concurrent readers
    (tasks, Ray workers on one node) share one copy and never see half of it. `require`: a file the folder must
    hold (e.g. config.json); a download without it raises FileNotFoundError and is not kept."""
    local = local_path(uri)
    if local is not None:
        return local
    name = uri.rstrip("/").rsplit("/", 1)[-1] or "copy"
    import hashlib

    target = os.path.join(cache_dir, hashlib.sha256(uri.encode()).hexdigest()[:16], name)
    if os.path.exists(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache_dir)
    try:
        staged = os.path.join(tmp, name)
        if _relative_files(uri) or not exists(uri):  # files under it: a folder (a model), not one object
            get_dir(uri, staged)
        else:
            get_file(uri, staged)
        if require is not None and not os.path.exists(os.path.join(staged, require)):
            raise FileNotFoundError(f"{uri}: no {require} in it")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(staged, target)
        except OSError:
            if not os.path.exists(target):  # not a concurrent reader's finished copy: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@_s3_errors
def copy_prefix(src_uri: str, dst_uri: str) -> None:
    """Copy every file under `src_uri` to the same relative path under `dst_uri` (any store to any store).

    Raises FileNotFoundError when `src_uri` holds no files. Existing files at the destination are
    overwritten; other files there are left alone.
    """
    rels = _relative_files(src_uri)
    if not rels:
        raise FileNotFoundError(f"nothing to copy: no files under {src_uri}")
    src_base, dst_base = src_uri.rstrip("/"), dst_uri.rstrip("/")
    src_local, dst_local = local_path(src_base), local_path(dst_base)
    same_local = (
        src_local is not None
        and dst_local is not None
        and os.path.exists(dst_local)
        and os.path.samefile(src_local, dst_local)
    )
    if src_base == dst_base or same_local:
        return
    if src_local is not None and dst_local is not None:
        for rel in rels:
            _atomic_copy_local(os.path.join(src_local, rel), os.path.join(dst_local, rel))
        return
    fs = _s3fs()
    if src_local is None and dst_local is None:  # S3 -> S3: server-side copies
        for rel in rels:
            fs.copy(_s3_path(join(src_base, rel)), _s3_path(join(dst_base, rel)))
    elif src_local is not None:  # local -> S3
        for rel in rels:
            fs.put_file(os.path.join(src_local, rel), _s3_path(join(dst_base, rel)))
    else:  # S3 -> local
        assert dst_local is not None
        for rel in rels:
            get_file(join(src_base, rel), os.path.join(dst_local, rel))
