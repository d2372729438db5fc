"""A Ray head on this machine, for tests, benchmarks and the demo: `ray start --head --block` on 127.0.0.1 with
free ports, its dashboard (the Jobs REST API) on loopback only, in its own session; stopped by that session id
(every Ray process it started, whatever process group Ray put it in). Needs `ray` installed beside rftflow;
jobs run this interpreter's Python (pass `python=sys.executable` to the backend or set RFTFLOW_RAY_PYTHON)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    address: str  # the dashboard URL: the Jobs API
    proc: subprocess.Popen
    temp_dir: str
    log: Path

    def processes(self) -> list[int]:
        """Every process of the head's session (Ray starts some actors in their own process group)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == self.proc.pid:  # field 6 of /proc/pid/stat: the session id
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def start_head(num_cpus: int = 2, timeout_s: float = 120.0) -> RayHead:
    ray = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets live under it
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--node-manager-port": free_port(),
             "--object-manager-port": free_port(), "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
    args = [ray, "start", "--head", "--block", "--num-cpus", str(num_cpus), "--num-gpus", "0",
            "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
            "--disable-usage-stats", "--temp-dir", temp_dir]
    for flag, port in ports.items():
        args += [flag, str(port)]
    log = Path(temp_dir) / "head.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard}", proc, temp_dir, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            head.stop()
            raise RuntimeError(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{head.address}/api/version", timeout=2):
                pass
            # the job agent registers a little after the dashboard answers
            with urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=5):
                return head
        except OSError:
            time.sleep(0.5)
    head.stop()
    raise RuntimeError(f"the Ray head did not answer on {head.address} within {timeout_s:.0f} s:\n"
                       f"{log.read_text()[-3000:]}")
