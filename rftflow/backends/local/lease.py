"""The trainer lease: a local training stage's folder is owned by exactly one live trainer.

`{stage}/logs/trainer.lease` names the owner (a random token), where it runs (host, boot, pid and the pid's
start time, so a recycled pid is not mistaken for it) and when it last sent a heartbeat. The trainer
renews it every `heartbeat_s`; a lease is live while heartbeats are recent and, on this machine, its
process still exists. Whoever starts, adopts or replaces a trainer does so under an exclusive lock on
`trainer.lock`, so two tasks (a task thought dead and its retry) never both start one. A trainer whose
lease was taken over stops at its next heartbeat and writes no metrics row or checkpoint meanwhile
(fencing), which also covers a trainer on another machine that this one cannot kill.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

LEASE_NAME = "trainer.lease"
LOCK_NAME = "trainer.lock"
HEARTBEAT_S = 5.0  # how often a trainer renews its lease
STALE_AFTER_S = 60.0  # no heartbeat for this long: the trainer is presumed dead (or hung) and is replaced

State = Literal["live", "stale", "finished"]


def boot_id() -> str:
    """This machine's boot id: a pid seen before a reboot is another process after it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/pid/stat); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left to collect
        return None
    return int(fields[19])


@dataclass
class Lease:
    """Who trains in a stage folder, and how recently it said so."""

    owner: str
    kind: str
    host: str
    boot_id: str
    pid: int | None
    pid_start: int | None
    started_at: float
    heartbeat_at: float
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    finished: bool = False

    @property
    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == boot_id()

    def process_alive(self) -> bool | None:
        """True/False for a trainer on this machine; None (unknown) for one elsewhere."""
        if not self.on_this_machine:
            return None
        if self.pid is None:  # being started: the starter writes the pid right after the fork
            return time.time() - self.started_at < self.stale_after_s
        return process_start(self.pid) == self.pid_start

    def state(self, now: float | None = None) -> State:
        if self.finished:
            return "finished"
        if self.process_alive() is False:
            return "stale"
        age = (now if now is not None else time.time()) - self.heartbeat_at
        return "stale" if age > self.stale_after_s else "live"

    def describe(self) -> str:
        age = time.time() - self.heartbeat_at
        return (f"{self.kind} trainer {self.owner[:8]} (pid {self.pid} on {self.host}, last heartbeat "
                f"{age:.0f} s ago)")


def new_lease(kind: str, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S) -> Lease:
    now = time.time()
    return Lease(owner=uuid.uuid4().hex, kind=kind, host=socket.gethostname(), boot_id=boot_id(), pid=None,
                 pid_start=None, started_at=now, heartbeat_at=now, heartbeat_s=heartbeat_s,
                 stale_after_s=stale_after_s)


def read_lease(job_dir: str | Path) -> Lease | None:
    path = Path(job_dir) / LEASE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:  # written atomically, so this is a damaged file
        raise RuntimeError(f"{path}: unreadable trainer lease ({err}); delete it once no trainer runs there") from None
    return Lease(**data)


def write_lease(job_dir: str | Path, lease: Lease) -> None:
    path = Path(job_dir) / LEASE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{LEASE_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(lease)), encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def locked(job_dir: str | Path) -> Iterator[None]:
    """Exclusive lock for deciding who trains here (flock: released by the kernel if the holder dies)."""
    path = Path(job_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def renew(job_dir: str | Path, owner: str) -> bool:
    """The trainer's heartbeat: renew the lease if `owner` still holds it; False when it was taken over."""
    with locked(job_dir):
        lease = read_lease(job_dir)
        if lease is None or lease.owner != owner:
            return False
        lease.heartbeat_at = time.time()
        write_lease(job_dir, lease)
        return True


def holds(job_dir: str | Path, owner: str) -> bool:
    """True while `owner` holds the lease (checked before every metrics row and checkpoint)."""
    try:
        lease = read_lease(job_dir)
    except RuntimeError:
        return False
    return lease is not None and lease.owner == owner and not lease.finished


def finish(job_dir: str | Path, owner: str) -> None:
    """The trainer is done (its result is written): the lease stays as a record, marked finished."""
    with locked(job_dir):
        lease = read_lease(job_dir)
        if lease is not None and lease.owner == owner:
            lease.finished = True
            lease.heartbeat_at = time.time()
            write_lease(job_dir, lease)


def ensure_dead(lease: Lease, grace_s: float = 10.0) -> str:
    """Make sure a stale lease's trainer cannot train on: stop its process group when it runs here (a hung
    trainer still holds memory and could wake up); elsewhere, fencing stops it at its next heartbeat.
    Returns what was done, for the log."""
    if not lease.on_this_machine:
        return (f"{lease.describe()} ran on {lease.host}: it cannot be killed from here; the new lease fences it "
                "(it stops at its next heartbeat and writes nothing meanwhile)")
    if lease.pid is None or lease.process_alive() is not True:
        return f"{lease.describe()} is no longer running"
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(lease.pid, sig)  # the trainer leads its own session and process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(lease.pid, sig)
        if sig == signal.SIGTERM:  # a stopped (SIGSTOP) trainer handles SIGTERM only once continued
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(lease.pid, signal.SIGCONT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if lease.process_alive() is not True:
                return f"{lease.describe()} was stopped ({sig.name})"
            time.sleep(0.05)
    raise RuntimeError(f"{lease.describe()} did not die after SIGKILL; not starting a second trainer beside it")
