"""The attack corpus against the code_tests reward, and the scene it runs in.

Every program in ``programs/`` is what an RL policy optimising against the reward might write to raise its own
score or harm the machine that grades it (its docstring says which). ``run(mode, user)`` builds a scene: per
attack a folder with a file to keep and a file holding a secret, a victim process of the grader's user and a TCP
listener on 127.0.0.1; plus the secret in the grader's own environment (``AWS_SECRET_ACCESS_KEY``, readable at
/proc/<grader>/environ unless protected). It then grades every attack twice (against call-style cases and against
assert-style tests, whose expected values the attack does not know) together with honest solutions, in one batch,
in a separate grader process (``grade.py``, logging at DEBUG), and reports per attack: the best score, what
changed on the host, whether the secret reached the rollout, and the processes left behind.

``python tests/rewards/sandbox_attacks/corpus.py`` prints the table for every mode this machine supports.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
HANDLER = HERE.parents[2] / "include" / "rewards" / "code_tests.py"
MARKER = "rftflow-code-sandbox"
NOBODY = 65534
SECRET_NAME = "AWS_SECRET_ACCESS_KEY"
XS = (3, 4, 5)


def attacks() -> dict[str, tuple[str, str]]:
    """name -> (one-line summary, source) for every attack program."""
    out = {}
    for path in sorted(PROGRAMS.glob("*.py")):
        source = path.read_text()
        summary = source.split('"""')[1].strip().splitlines()[0]
        out[path.stem] = (summary, source)
    return out


def marker_processes() -> list[int]:
    """Live processes whose command line carries the sandbox marker."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if MARKER.encode() in cmdline and state != b"Z":
            found.append(int(name))
    return found


def _snapshot(folder: Path) -> dict[str, tuple]:
    state = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state[str(path.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, data)
    return state


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return "gone"


@dataclass
class Row:
    attack: str
    summary: str
    scores: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    host_effects: list[str] = field(default_factory=list)
    secret_seen: bool = False
    left_behind: int = 0


@dataclass
class Report:
    mode: str
    user: str
    landlock: bool
    isolation: dict
    rows: list[Row]
    honest: dict[str, float]
    problems: list[str]           # anything global: the grader died, a secret in the logs, a process left
    grader_maxrss_mb: float
    elapsed_s: float


class _Scene:
    def __init__(self, names: list[str], uid: int):
        self.uid = uid
        self.token = secrets.token_hex(6)
        self.secret = "rftflowSECRET" + secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="rftflow-attack-", dir="/tmp"))
        self.root.chmod(0o755)
        self.folders, self.victims, self.listeners, self.connections = {}, {}, {}, {}
        for name in names:
            folder = self.root / name
            folder.mkdir()
            (folder / "keep.txt").write_text("precious")
            (folder / "secret.txt").write_text(self.secret)
            (folder / "secret.txt").chmod(0o600)
            for path in (folder, folder / "keep.txt", folder / "secret.txt"):
                os.chown(path, uid, uid) if os.geteuid() == 0 else None
            self.folders[name] = folder
            self.victims[name] = subprocess.Popen(["sleep", "600"], start_new_session=True,
                                                  **({"user": uid, "group": uid} if uid != os.geteuid() else {}))
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            self.listeners[name] = listener
            self.connections[name] = 0
            threading.Thread(target=self._accept, args=(name, listener), daemon=True).start()
        if os.geteuid() == 0:
            os.chown(self.root, uid, uid)
        self.before = {name: _snapshot(folder) for name, folder in self.folders.items()}

    def _accept(self, name: str, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections[name] += 1
            conn.close()

    def pwned(self, name: str) -> str:
        return f"/tmp/rftflow-pwned-{self.token}-{name}"

    def params(self, name: str, grader_pid: int) -> dict:
        folder = self.folders[name]
        return {"sentinel_dir": str(folder), "keep": str(folder / "keep.txt"), "secret_file": str(folder / "secret.txt"),
                "victim_pid": self.victims[name].pid, "grader_pid": grader_pid,
                "port": self.listeners[name].getsockname()[1], "pwned": self.pwned(name), "secret_name": SECRET_NAME}

    def effects(self, name: str) -> list[str]:
        found = []
        folder = self.folders[name]
        if not folder.is_dir():
            found.append("its folder was deleted")
        elif _snapshot(folder) != self.before[name]:
            found.append("its folder changed")
        state = _process_state(self.victims[name].pid)
        if state in ("gone", "Z", "T", "t"):
            found.append(f"the victim process is {state}")
        if self.connections[name]:
            found.append(f"{self.connections[name]} connection(s) to 127.0.0.1")
        stray = [p for p in Path("/tmp").glob(f"rftflow-pwned-{self.token}-{name}*")]
        if stray:
            found.append(f"created {', '.join(p.name for p in stray)}")
        return found

    def close(self) -> None:
        for victim in self.victims.values():
            victim.kill()
            victim.wait()
        for listener in self.listeners.values():
            listener.close()
        shutil.rmtree(self.root, ignore_errors=True)
        for path in Path("/tmp").glob(f"rftflow-pwned-{self.token}-*"):
            path.unlink(missing_ok=True)


def _honest(k: int, c: int) -> dict[str, tuple[str, dict]]:
    call = f"def f(x):\n    return x * {k} + {c}\n"
    io = f"x = int(input())\nprint(x * {k} + {c})\n"
    return {"honest-call": (call, "cases"), "honest-asserts": (call, "asserts"), "honest-io": (io, "io")}


def _reference(style: str, k: int, c: int) -> object:
    if style == "cases":
        return {"entry_point": "f", "cases": [{"args": [x], "expected": x * k + c} for x in XS]}
    if style == "io":
        return {"cases": [{"input": f"{x}\n", "output": f"{x * k + c}\n"} for x in XS]}
    return [f"assert f({x}) == {x * k + c}" for x in XS]


def _sample(sid: str, code: str, ref: object) -> dict:
    return {"id": sid, "messages": [{"role": "user", "content": "Write f(x)."},
                                    {"role": "assistant", "content": f"```python\n{code}\n```"}],
            "reference_answer": ref}


def run(mode: str, *, user: str = "root", landlock: bool = True, timeout_s: float = 2.0, workers: int = 6,
        styles: tuple[str, ...] = ("cases", "asserts"), only: list[str] | None = None,
        handler: Path = HANDLER, min_isolation: str = "seccomp") -> Report:
    """Grade the whole corpus once with CODE_TESTS_ISOLATION=mode, the grader running as ``user`` (root or nobody)."""
    corpus = {name: value for name, value in attacks().items() if only is None or name in only}
    uid = NOBODY if user == "nobody" else os.geteuid()
    scene = _Scene(list(corpus), uid)
    workdir = Path(tempfile.mkdtemp(prefix="rftflow-grader-", dir="/tmp"))
    started = time.monotonic()
    try:
        workdir.chmod(0o755)
        shutil.copy(HERE / "grade.py", workdir / "grade.py")
        shutil.copy(handler, workdir / "code_tests.py")
        observations = workdir / "observations.json"
        if user == "nobody":
            os.chown(workdir, NOBODY, NOBODY)
            python = "/usr/bin/python3"
            prefix = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
        else:
            python, prefix = sys.executable, []
        env = {"PATH": "/usr/bin:/bin", SECRET_NAME: scene.secret, "AWS_ACCESS_KEY_ID": "AKIA" + scene.token.upper(),
               "CODE_TESTS_ISOLATION": mode, "CODE_TESTS_TIMEOUT_S": str(timeout_s),
               "CODE_TESTS_WORKERS": str(workers), "CODE_TESTS_LANDLOCK": str(landlock).lower(), "HOME": str(workdir),
               "CODE_TESTS_MIN_ISOLATION": min_isolation}
        proc = subprocess.Popen([*prefix, python, str(workdir / "grade.py"), str(workdir / "code_tests.py"),
                                 str(observations)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=str(workdir), start_new_session=True)
        k, c = secrets.randbelow(10 ** 12) + 10 ** 9, secrets.randbelow(10 ** 12)
        batch, owner = [], {}
        for name, (_, source) in corpus.items():
            params = json.dumps(scene.params(name, proc.pid))
            for style in styles:
                sid = f"{name}:{style}"
                code = source.replace("PARAMS = {}", f"PARAMS = {params}", 1) + f"\n# sample {sid}\n"
                batch.append(_sample(sid, code, _reference(style, k, c)))
                owner[code] = sid
        for sid, (code, style) in _honest(k, c).items():
            batch.append(_sample(sid, code, _reference(style, k, c)))
            owner[code] = sid
        try:
            out, err = proc.communicate(json.dumps(batch).encode(), timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        time.sleep(0.2)
        problems = []
        if proc.returncode != 0:
            problems.append(f"the grader exited with status {proc.returncode}: "
                            f"{err.decode(errors='replace').strip().splitlines()[-1:] or ''}")
        leftovers = marker_processes()
        if leftovers:
            problems.append(f"{len(leftovers)} sandbox process(es) still running: {leftovers}")
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
        text = out.decode(errors="replace") + err.decode(errors="replace")
        for needle in (scene.secret, SECRET_NAME + "=", "LEAK-"):
            if needle in text:
                line = next(line for line in text.splitlines() if needle in line)
                problems.append(f"{needle[:16]}... appears in the grader's output or logs: {line[:200]!r}")
        results = {r["id"]: r for r in json.loads(out)} if proc.returncode == 0 else {}
        obs = json.loads(observations.read_text()) if observations.is_file() else {"observed": [],
                                                                                   "isolation": {}, "maxrss_mb": 0}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seen = {}
    for o in obs["observed"]:
        m = re.search(r"^# sample (\S+)$", o["code"], re.MULTILINE)
        if m:
            seen[m.group(1)] = o
    missing = [sid for sid in owner.values() if sid not in seen and not sid.startswith("honest")]
    if results and missing and any(o["answers"] or o["why"] for o in obs["observed"]):
        problems.append(f"no observation for {missing[:3]}")
    rows = []
    for name, (summary, _) in corpus.items():
        row = Row(name, summary)
        for style in styles:
            sid = f"{name}:{style}"
            result = results.get(sid)
            row.scores[style] = result["aggregate_reward_score"] if result else float("nan")
            row.reasons[style] = [m["name"] for m in (result or {}).get("metrics_list", [])
                                  if m["value"] == 1.0 and m["name"] not in ("code_found", "all_passed")]
            o = seen.get(sid, {})
            row.secret_seen |= any(scene.secret in a for a in o.get("answers", [])) or \
                scene.secret in o.get("failure", "")
            row.left_behind += int(o.get("left_behind", 0))
        row.host_effects = scene.effects(name)
        rows.append(row)
    honest = {sid: results[sid]["aggregate_reward_score"] if sid in results else float("nan")
              for sid in _honest(0, 0)}
    scene.close()
    return Report(mode, user, landlock, obs.get("isolation", {}), rows, honest, problems, obs.get("maxrss_mb", 0.0),
                  time.monotonic() - started)


def table(reports: list[Report]) -> str:
    """A Markdown table: one row per attack, one score/how-stopped column per mode."""
    head = "| attack | " + " | ".join(f"{r.mode} as {r.user}{'' if r.landlock else ', no Landlock'} "
                                      f"(level {r.isolation.get('level', '?')})"
                                      for r in reports) + " | host effect | secret seen | processes left |"
    lines = [head, "|" + "---|" * (4 + len(reports))]
    for i, row in enumerate(reports[0].rows):
        cells = []
        effects, seen, left = set(), False, 0
        for report in reports:
            r = report.rows[i]
            score = max(r.scores.values())
            how = sorted({reason for reasons in r.reasons.values() for reason in reasons})
            cells.append(f"{score:g} ({', '.join(how) or 'wrong answers'})")
            effects.update(r.host_effects)
            seen |= r.secret_seen
            left += r.left_behind
        lines.append(f"| {row.attack} | " + " | ".join(cells) +
                     f" | {'; '.join(sorted(effects)) or 'none'} | {'yes' if seen else 'no'} | {left} |")
    lines.append("| honest solutions | " + " | ".join(
        ", ".join(f"{v:g}" for v in r.honest.values()) for r in reports) + " | | | |")
    return "\n".join(lines)


def modes() -> list[tuple[str, str, bool]]:
    """(isolation, user, landlock) this machine can run: bwrap where installed, seccomp always; as nobody when
    root, including seccomp without Landlock as nobody (the AWS Lambda case: the grader's own user, no Landlock)."""
    me = "root" if os.geteuid() == 0 else "self"
    found = [("bwrap", me, True)] if shutil.which("bwrap") else []
    found.append(("seccomp", me, True))
    if os.geteuid() == 0 and Path("/usr/bin/python3").is_file() and shutil.which("setpriv"):
        found += [(mode, "nobody", True) for mode, _, _ in found] + [("seccomp", "nobody", False)]
    return found


if __name__ == "__main__":
    reports = []
    for mode, user, landlock in modes():
        report = run(mode, user=user, landlock=landlock)
        print(f"{mode} as {user}, landlock {landlock}: {report.elapsed_s:.1f} s, isolation {report.isolation}, "
              f"grader peak {report.grader_maxrss_mb:.0f} MB, problems: {report.problems or 'none'}", file=sys.stderr)
        reports.append(report)
    print(table(reports))
