"""The champion registry: which model is the best so far for a model family, and every promotion before it.

Lives at `{artifact_root}/registry/{model_family}/` as `champion.json` plus `history/{seq:06d}.json`;
updates are compare-and-swap, so two runs racing to promote never lose an update or a history entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rftflow.artifacts import store

__all__ = [
    "REGISTRY_SCHEMA_VERSION",
    "Champion",
    "ChampionRegistry",
    "PromotionConflict",
    "RegistryError",
]

REGISTRY_SCHEMA_VERSION = 1
_FAMILY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HISTORY_NAME = re.compile(r"^(\d{6,})\.json$")


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Champion(BaseModel):
    """The model currently promoted for a family, and the evidence it was promoted on."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_uri: str
    metrics: dict[str, Any] = {}
    run_id: str
    cycle: int
    promoted_at: str = Field(default_factory=_utc_now)
    manifest_uri: str | None = None


class PromotionConflict(Exception):
    """The champion changed since the caller read it (its version token is stale); nothing was written."""


class RegistryError(ValueError):
    """A registry file that cannot be used (unreadable, wrong fields, written by a newer rftflow)."""


def _token(data: bytes) -> str:
    # The version token is the content hash of champion.json; every version holds a fresh
    # promotion_id, so two versions never share a token even when they name the same model.
    return hashlib.sha256(data).hexdigest()


def _is_conflict(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (412, 409)


class ChampionRegistry:
    """Champion pointer and append-only history for one model family under an artifact root.

    `current()` returns the champion and a version token; `promote(new, expected_token=token)`
    succeeds only if nobody promoted in between (else PromotionConflict). Pass expected_token=None to
    create the first champion. On S3 the swap is a conditional PUT (If-Match / If-None-Match); on local
    folders it is an atomic rename under an exclusive lock on `registry/{family}/.lock`.
    """

    def __init__(self, artifact_root: str, model_family: str) -> None:
        if not isinstance(model_family, str) or not _FAMILY.match(model_family):
            raise ValueError(
                "model_family: expected 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
                f"digit; got {model_family!r}"
            )
        self.artifact_root = artifact_root
        self.model_family = model_family
        self.uri = store.join(artifact_root, "registry", model_family)
        self.champion_uri = store.join(self.uri, "champion.json")
        self.history_uri = store.join(self.uri, "history")
        self._dir = store.local_path(self.uri)
        if self._dir is None:
            self._bucket, self._key = store.split_s3(self.uri)

    def __repr__(self) -> str:
        return f"ChampionRegistry({self.uri!r})"

    # ----------------------------------------------------------------------- public

    def current(self) -> tuple[Champion | None, str | None]:
        """(champion, version token), or (None, None) when nothing was promoted yet."""
        data, _ = self._read_pointer()
        if data is None:
            return None, None
        return Champion.model_validate(self._parse(data, self.champion_uri)["champion"]), _token(data)

    def promote(self, champion: Champion, expected_token: str | None) -> str:
        """Make `champion` the champion if the current version token is `expected_token`; return the new token.

        Raises PromotionConflict (and writes nothing) when another promotion happened since the
        caller's `current()`. The new version is also recorded as `history/{seq:06d}.json`.
        """
        champion = champion if isinstance(champion, Champion) else Champion.model_validate(champion)
        if self._dir is not None:
            return self._promote_local(champion, expected_token)
        return self._promote_s3(champion, expected_token)

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, oldest first: the champion.json of each version plus its `token`."""
        # Keyed by token, not seq: a registry repaired by hand (champion.json deleted or restored) may
        # hold two versions with one seq, and the listing must show both rather than drop one.
        entries: dict[str, dict[str, Any]] = {}
        # Pointer first: every version before it was recorded before it could be committed, so the
        # listing that follows has no gaps. The pointer's own entry may not be written yet (its
        # promoter is about to, or died first; the next promotion writes it): the pointer stands in.
        data, _ = self._read_pointer()
        if data is not None:
            doc = self._parse(data, self.champion_uri)
            entries[_token(data)] = {**doc, "token": _token(data)}
        for uri, data in self._history_files():
            entries[_token(data)] = {**self._parse(data, uri), "token": _token(data)}
        return sorted(entries.values(), key=lambda e: (int(e["seq"]), str(e["champion"].get("promoted_at", ""))))

    def find_promotion(self, *, run_id: str, cycle: int, model_uri: str,
                       previous_token: str | None) -> dict[str, Any] | None:
        """The history entry (with its `token`) in which run `run_id`, cycle `cycle`, promoted `model_uri`
        over the version `previous_token`; None when it never did.

        A promote task retried after a crash between the swap and its own bookkeeping finds its promotion
        here and finishes it, instead of reporting the conflict its own swap caused.
        """
        for entry in reversed(self.history()):
            champion = entry["champion"]
            if (champion.get("run_id") == run_id and champion.get("cycle") == cycle
                    and champion.get("model_uri") == model_uri and entry.get("previous_token") == previous_token):
                return entry
        return None

    def _history_files(self) -> list[tuple[str, bytes]]:
        out = []
        for uri in store.list_prefix(self.history_uri):
            if not _HISTORY_NAME.match(uri.rsplit("/", 1)[-1]):
                continue
            try:
                out.append((uri, store.read_bytes(uri)))
            except FileNotFoundError:  # pragma: no cover - removed by hand between list and read
                continue
        return out

    def _last_recorded_seq(self) -> int:
        """The highest seq in history/ (0 when empty): a new first version after a hand repair starts above it."""
        seqs = [int(m.group(1)) for uri in store.list_prefix(self.history_uri)
                if (m := _HISTORY_NAME.match(uri.rsplit("/", 1)[-1]))]
        return max(seqs, default=0)

    # ----------------------------------------------------------------------- documents

    def _new_version(self, champion: Champion, previous: bytes | None) -> tuple[int, bytes]:
        if previous is None:
            # No pointer: a new registry, or champion.json deleted by hand. Never reuse a recorded seq:
            # the new version's history entry would be skipped as "already recorded" and lost.
            seq = self._last_recorded_seq() + 1
        else:
            seq = int(self._parse(previous, self.champion_uri)["seq"]) + 1
        doc = {
            "schema_version": REGISTRY_SCHEMA_VERSION,
            "model_family": self.model_family,
            "seq": seq,
            "promotion_id": uuid.uuid4().hex,
            "previous_token": None if previous is None else _token(previous),
            "champion": champion.model_dump(mode="json"),
        }
        return seq, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def _parse(self, data: bytes, uri: str) -> dict[str, Any]:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{uri}: expected a JSON object; cannot parse it ({exc})") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"{uri}: expected a JSON object; got {type(doc).__name__}")
        version = doc.get("schema_version")
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"{uri}: schema_version: expected an integer >= 1; got {version!r}")
        if version > REGISTRY_SCHEMA_VERSION:
            raise RegistryError(
                f"{uri}: schema_version {version} is newer than this rftflow understands "
                f"(up to {REGISTRY_SCHEMA_VERSION}); upgrade rftflow"
            )
        seq = doc.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise RegistryError(f"{uri}: seq: expected an integer >= 1; got {seq!r}")
        try:
            Champion.model_validate(doc.get("champion"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RegistryError(f"{uri}: champion.{where}: {first['msg']}") from None
        return doc

    def _history_entry_uri(self, seq: int) -> str:
        return store.join(self.history_uri, f"{seq:06d}.json")

    @staticmethod
    def _conflict(expected: str | None, actual: str | None, where: str) -> PromotionConflict:
        return PromotionConflict(
            f"{where}: champion changed since it was read (expected version {expected or 'none'}, "
            f"found {actual or 'none'}); read current() again and re-decide"
        )

    def _read_pointer(self) -> tuple[bytes | None, str | None]:
        """champion.json bytes (None if absent) and, on S3, the ETag of exactly those bytes."""
        if self._dir is not None:
            try:
                with open(os.path.join(self._dir, "champion.json"), "rb") as fh:
                    return fh.read(), None
            except FileNotFoundError:
                return None, None
        client = store.s3_client()
        try:
            response = client.get_object(Bucket=self._bucket, Key=f"{self._key}/champion.json")
        except client.exceptions.NoSuchKey:
            return None, None
        return response["Body"].read(), response["ETag"]

    # ----------------------------------------------------------------------- local store

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self._dir is not None
        os.makedirs(self._dir, exist_ok=True)
        # flock locks belong to the open file description, so this also serialises threads.
        fd = os.open(os.path.join(self._dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _promote_local(self, champion: Champion, expected_token: str | None) -> str:
        assert self._dir is not None
        with self._locked():
            previous, _ = self._read_pointer()
            actual = None if previous is None else _token(previous)
            if actual != expected_token:
                raise self._conflict(expected_token, actual, self.champion_uri)
            if previous is not None:
                self._ensure_history_local(previous)
            _, data = self._new_version(champion, previous)
            store.write_bytes(self.champion_uri, data)  # atomic rename: the swap
            self._ensure_history_local(data)
            return _token(data)

    def _ensure_history_local(self, data: bytes) -> None:
        seq = int(self._parse(data, self.champion_uri)["seq"])
        uri = self._history_entry_uri(seq)
        if not store.exists(uri):
            store.write_bytes(uri, data)
        elif store.read_bytes(uri) != data:
            # Another version holds this seq (champion.json edited or restored by hand): keep both.
            self._record_displaced(data)

    def _record_displaced(self, data: bytes) -> None:
        if any(existing == data for _, existing in self._history_files()):
            return
        store.write_bytes(self._history_entry_uri(self._last_recorded_seq() + 1), data)

    # ----------------------------------------------------------------------- S3 store

    def _promote_s3(self, champion: Champion, expected_token: str | None) -> str:
        client = store.s3_client()
        previous, etag = self._read_pointer()
        actual = None if previous is None else _token(previous)
        if actual != expected_token:
            raise self._conflict(expected_token, actual, self.champion_uri)
        if previous is not None:
            # Make sure the version we replace is in the history even if its promoter died before
            # writing it down: nobody can commit seq n+1 without seq n being recorded first.
            self._ensure_history_s3(previous)
        seq, data = self._new_version(champion, previous)
        condition = {"IfMatch": etag} if previous is not None else {"IfNoneMatch": "*"}
        try:
            client.put_object(
                Bucket=self._bucket,
                Key=f"{self._key}/champion.json",
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            # The SDK retries a PUT whose response was lost; the retry then fails its own condition
            # although the first attempt landed. Our write is recognisable by its exact bytes.
            now, _ = self._read_pointer()
            if now != data and not self._recorded_s3(seq, data):
                raise self._conflict(
                    expected_token, None if now is None else _token(now), self.champion_uri
                ) from None
        self._ensure_history_s3(data)
        return _token(data)

    def _recorded_s3(self, seq: int, data: bytes) -> bool:
        """True if history entry `seq` holds exactly `data` (our version was committed, then replaced)."""
        client = store.s3_client()
        _, key = store.split_s3(self._history_entry_uri(seq))
        try:
            return client.get_object(Bucket=self._bucket, Key=key)["Body"].read() == data
        except client.exceptions.NoSuchKey:
            return False

    def _ensure_history_s3(self, data: bytes) -> None:
        seq = int(self._parse(data, self.champion_uri)["seq"])
        _, key = store.split_s3(self._history_entry_uri(seq))
        try:
            store.s3_client().put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType="application/json", IfNoneMatch="*"
            )
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            # Already recorded, by its promoter or a repairing one; unless the entry is another version
            # (champion.json edited or restored by hand), which is kept too.
            if store.read_bytes(store.join(self.history_uri, key.rsplit("/", 1)[-1])) != data:
                self._record_displaced(data)
