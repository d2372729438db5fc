"""Code reward: the Python program in the model's reply must pass the reference tests, run in a sandbox.

Self-contained AWS Lambda handler (standard library only): deploy this one file unchanged.

The program is the last ```python fenced block of the reply (else the last plain ``` block, else the whole
reply when it parses as Python). The tests come from the reference answer (top-level ``reference_answer``, else
``metadata.reference_answer``), one of:

    ["assert f(1) == 2", ...]                                   a list of tests
    "assert f(1) == 2\\nassert f(2) == 3"                        test code; each top-level assert is a test
    {"tests" | "test_list" | "test": ..., "setup": "...",       an object (MBPP / HumanEval style; a ``check``
     "entry_point": "f", "timeout_s": 5}                         function is called on ``entry_point``)

Each rollout runs in its own ``python -I -S -B`` process, in a fresh temporary directory that is deleted
afterwards, with an empty environment (no credentials, no proxies), stdout/stderr discarded, and:
  - a wall-clock timeout that kills the whole process group, plus RLIMIT_CPU;
  - RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC and no core dumps;
  - an audit hook (``sys.addaudithook``) that refuses fork/exec/subprocess, sockets other than local
    socket pairs, DNS look-ups, ctypes, signals to other processes, raising resource limits, and writing,
    renaming or deleting anything outside the sandbox directory;
  - when started as root on Linux (not the case on Lambda), also a private network namespace (no network
    at all), a read-only view of every mount and a size-capped tmpfs as the sandbox directory.
Any refused operation scores the rollout 0 (metric ``sandbox_violation``), as do timeouts and crashes.
The audit hook keeps honest mistakes and simple reward hacks in check; it is not a security boundary against
code written to escape it, which is what the process limits, the namespaces and Lambda's own isolation are for.
Tests run in a namespace whose built-ins were copied before the program ran, so patching ``builtins`` does
not change what the tests see; tricks such as objects whose ``__eq__`` is always true are not detected.

Configuration (environment; ``timeout_s`` may also come from the reference object or ``metadata``):

    CODE_TESTS_TIMEOUT_S       5       wall-clock seconds per rollout (capped by CODE_TESTS_MAX_TIMEOUT_S=60)
    CODE_TESTS_MEMORY_MB       512     address-space limit per rollout
    CODE_TESTS_WORKERS         2 x CPUs  rollouts run at the same time (a thread per running subprocess)
    CODE_TESTS_PARTIAL_CREDIT  true    score = share of tests passed; false: 1 only when all pass
    CODE_TESTS_ISOLATE         true    use namespaces when running as root

Output per sample: ``aggregate_reward_score`` and metrics ``pass_rate`` (Reward), ``all_passed``,
``tests_total``, ``code_found`` and, when one applies, a reason: ``timeout``, ``sandbox_violation``,
``solution_error``, ``syntax_error``, ``crashed``.
"""

from __future__ import annotations

import ast
import logging
import marshal
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset(("python", "py", "python3", "py3"))
_TEST_KEYS = ("tests", "test_list", "test", "test_code", "asserts", "test_cases")
_SETUP_KEYS = ("setup", "test_setup_code", "test_imports", "prompt_setup")

# Runs inside the sandboxed interpreter (the job arrives on stdin, marshalled: json would cost an import of
# re). Everything it needs is bound to locals before the program runs,
# so the program cannot change how results are reported by patching modules.
_BOOTSTRAP = r'''
import os, sys

def _isolate(home, tmpfs_mb):
    try:
        return _namespaces(home, tmpfs_mb)
    finally:
        for name in [m for m in sys.modules if m == "_ctypes" or m == "ctypes" or m.startswith("ctypes.")]:
            del sys.modules[name]

def _namespaces(home, tmpfs_mb):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    done = []
    if libc.unshare(0x40000000) == 0:
        done.append("network-namespace")
    if libc.unshare(0x00020000) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return done
    h = home.encode()
    opts = ("size=%dm,mode=0700" % tmpfs_mb).encode()
    if libc.mount(b"tmpfs", h, b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0:
        done.append("tmpfs")
    elif libc.mount(h, h, None, MS_BIND, None) != 0:
        return done  # without its own mount the sandbox directory would turn read-only too
    unescape = lambda s: s.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
    with open("/proc/self/mountinfo") as f:
        mounts = [(unescape(p[4]), p[5].split(",")) for p in (line.split() for line in f)]
    readonly = True
    for point, options in mounts:
        if point == home:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= (MS_NOSUID if "nosuid" in options else 0) | (MS_NODEV if "nodev" in options else 0)
        flags |= MS_NOEXEC if "noexec" in options else 0
        if libc.mount(None, point.encode(), None, flags, None) != 0:
            readonly = False
    if readonly:
        done.append("read-only-filesystem")
    return done

def _main():
    import marshal, resource, builtins
    job = marshal.loads(sys.stdin.buffer.read())
    nonce, home = job["nonce"], job["dir"]
    write, dup2, hexlify = os.write, os.dup2, bytes.hex
    out = os.dup(1)
    isolation = []
    if job["isolate"] and os.geteuid() == 0 and sys.platform.startswith("linux"):
        try:
            isolation = _isolate(home, job["tmpfs_mb"])
        except Exception as exc:
            isolation = ["isolation-failed:%s" % type(exc).__name__]
    os.chdir(home)
    for which, value in ((resource.RLIMIT_AS, job["memory_bytes"]), (resource.RLIMIT_CPU, job["cpu_s"]),
                         (resource.RLIMIT_FSIZE, job["fsize_bytes"]), (resource.RLIMIT_NOFILE, 64),
                         (resource.RLIMIT_NPROC, job["nproc"]), (resource.RLIMIT_CORE, 0)):
        try:
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    realpath, fspath, fsdecode, sep = os.path.realpath, os.fspath, os.fsdecode, os.sep
    root = realpath(home)
    prefix = root + sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    denied = frozenset((
        "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "subprocess.Popen",
        "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "os.chroot"))
    path_events = frozenset((
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
        "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
        "shutil.rmtree", "shutil.copyfile", "shutil.move"))
    blocked_modules = frozenset(("_posixsubprocess", "ctypes", "_ctypes", "_multiprocessing"))
    violations = []
    writes = [0]

    def inside(path):
        if isinstance(path, int):
            return True
        p = realpath(fsdecode(fspath(path)))
        return p == root or p.startswith(prefix) or p == "/dev/null"

    def deny(what):
        violations.append(what)
        raise PermissionError("sandbox: %s is not allowed" % what)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(flags, int) and flags & write_flags) or (
                    isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)):
                if not inside(path):
                    deny("writing %s" % (path,))
                writes[0] += 1
                if writes[0] > 64:
                    deny("opening more than 64 files for writing")
        elif event == "import":
            if args[0] in blocked_modules:
                deny("importing %s" % args[0])
        elif event in denied or event.startswith("ctypes."):
            deny(event)
        elif event == "socket.__new__":
            if len(args) > 1 and args[1] != 1:  # only AF_UNIX socket pairs
                deny("opening a network socket")
        elif event in path_events:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    deny("%s on %s" % (event, arg))

    pristine = dict(builtins.__dict__)
    _exec, _compile, _dict, _str, _type, _len = exec, compile, dict, str, type, len
    devnull = os.open(os.devnull, os.O_RDWR)
    sys.addaudithook(hook)
    dup2(devnull, 0)
    dup2(devnull, 1)
    dup2(devnull, 2)

    passed = total = 0
    failure = ""
    solution_error = 0
    ns = {"__name__": "solution", "__builtins__": _dict(pristine)}
    try:
        _exec(_compile(job["code"], "<solution>", "exec"), ns)
    except BaseException as exc:
        solution_error = 1
        failure = "solution: %s: %s" % (_type(exc).__name__, exc)
    tests = _dict(ns)
    tests["__builtins__"] = _dict(pristine)
    setup_failed = solution_error
    for code, is_test in job["units"]:
        total += 1 if is_test else 0
        if setup_failed:
            continue
        try:
            _exec(_compile(code, "<test>", "exec"), tests)
            passed += 1 if is_test else 0
        except BaseException as exc:
            setup_failed = not is_test
            if not failure:
                failure = "%s -> %s: %s" % (code[:200], _type(exc).__name__, exc)
    detail = "\x1f".join([failure[:500]] + violations[:5] + ["isolation=" + ",".join(isolation)])
    line = "%s %d %d %d %d %s\n" % (nonce, passed, total, solution_error, _len(violations),
                                    hexlify(detail.encode("utf-8", "replace")))
    write(out, line.encode())
    os._exit(0)

_main()
'''


def _metric(name: str, value: float, kind: str = "Metric") -> dict:
    return {"name": name, "value": float(value), "type": kind}


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def extract_code(text: str) -> str | None:
    """The program in a reply: last ```python block, else last plain ``` block, else the reply if it parses."""
    i = text.rfind("</think>")
    if i >= 0:
        text = text[i + len("</think>") :]
    tagged = untagged = None
    for m in _FENCE.finditer(text):
        tag = m.group(1).lower()
        if tag in _PYTHON_TAGS:
            tagged = m.group(2)
        elif not tag:
            untagged = m.group(2)
    code = tagged if tagged is not None else untagged
    if code is not None:
        return code
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return text if text.strip() else None


def _split_script(source: str) -> list[tuple[str, bool]]:
    """Split test code into units: each top-level assert (or check(...) call) is a test, the rest is setup."""
    tree = ast.parse(source)
    units = []
    for node in tree.body:
        is_test = isinstance(node, ast.Assert) or (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "check"
        )
        units.append((ast.unparse(node), is_test))
    if not any(is_test for _, is_test in units):
        return [(source, True)]  # a script that signals failure by raising: one test
    return units


def test_units(reference: Any) -> list[tuple[str, bool]]:
    """Turn a reference answer into ordered (code, is_test) units; raises ValueError when there are no tests."""
    setup: list[tuple[str, bool]] = []
    entry_point = None
    tests = reference
    if isinstance(reference, dict):
        for key in _SETUP_KEYS:
            value = reference.get(key)
            if isinstance(value, list):
                setup += [(str(v), False) for v in value if str(v).strip()]
            elif isinstance(value, str) and value.strip():
                setup.append((value, False))
        entry_point = reference.get("entry_point")
        tests = next((reference[k] for k in _TEST_KEYS if k in reference), None)
    if isinstance(tests, str):
        units = _split_script(tests)
        if entry_point and "def check(" in tests and not any(code.startswith("check(") for code, _ in units):
            units.append((f"check({entry_point})", True))
    elif isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        units = [(t, True) for t in tests if t.strip()]
    else:
        raise ValueError(
            "reference_answer must be test code, a list of tests or an object with one of "
            f"{', '.join(_TEST_KEYS)}; got {type(tests).__name__}"
        )
    if not units:
        raise ValueError("reference_answer holds no tests")
    return setup + units


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_in_sandbox(
    code: str,
    units: list[tuple[str, bool]],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    isolate: bool | None = None,
) -> dict:
    """Run ``code`` then the test ``units`` in a sandboxed interpreter; returns counts, flags and details.

    ``isolate`` (namespaces when root) defaults to CODE_TESTS_ISOLATE, itself true by default.
    """
    if isolate is None:
        isolate = _env_bool("CODE_TESTS_ISOLATE", True)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="rftflow-sandbox-"))
    nonce = secrets.token_hex(16)
    job = {
        "nonce": nonce,
        "dir": workdir,
        "code": code,
        "units": units,
        "isolate": isolate,
        "tmpfs_mb": 64,
        "memory_bytes": int(memory_mb) << 20,
        "cpu_s": int(timeout_s) + 1,
        "fsize_bytes": 8 << 20,
        "nproc": 64,
    }
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    started = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            [sys.executable or "python3", "-I", "-S", "-B", "-c", _BOOTSTRAP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(marshal.dumps(job), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, err = b"", b""
        finally:
            _kill_group(proc.pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "timed_out": timed_out,
        "returncode": proc.returncode,
        "duration_s": time.monotonic() - started,
        "reported": False,
        "passed": 0,
        "total": sum(1 for _, is_test in units if is_test),
        "solution_error": False,
        "violations": [],
        "failure": "",
        "isolation": [],
        "stderr": err[-2000:].decode("utf-8", "replace"),
    }
    for line in out.decode("ascii", "replace").splitlines():
        parts = line.split(" ")
        if len(parts) == 6 and parts[0] == nonce:
            detail = bytes.fromhex(parts[5]).decode("utf-8", "replace").split("\x1f")
            result.update(
                reported=True,
                passed=int(parts[1]),
                total=int(parts[2]),
                solution_error=parts[3] == "1",
                failure=detail[0],
                violations=detail[1:-1] if int(parts[4]) else [],
                isolation=[x for x in detail[-1].removeprefix("isolation=").split(",") if x],
            )
    return result


def _failure(sample_id: Any, reason: str, code_found: bool = False) -> dict:
    return {
        "id": sample_id,
        "aggregate_reward_score": 0.0,
        "metrics_list": [
            _metric("pass_rate", 0.0, "Reward"),
            _metric("all_passed", 0.0),
            _metric("code_found", code_found),
            _metric(reason, 1.0),
        ],
    }


def _prepare(sample: dict, default_timeout: float, max_timeout: float) -> tuple[str, list, float] | dict:
    """Return (code, units, timeout) to run, or a finished result for a sample that cannot run."""
    sample_id = sample.get("id")
    messages = sample.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return _failure(sample_id, "error_no_assistant_message")
    content = last.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        return _failure(sample_id, "error_no_assistant_message")
    metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
    ref = sample.get("reference_answer")
    if ref is None:
        ref = metadata.get("reference_answer")
    if ref is None:
        return _failure(sample_id, "error_no_reference_answer")
    try:
        units = test_units(ref)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as exc:
        logger.warning("code_tests reward: sample %r has unusable tests: %s", sample_id, exc)
        return _failure(sample_id, "error_invalid_tests")
    code = extract_code(content)
    if code is None:
        return _failure(sample_id, "no_code")
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _failure(sample_id, "syntax_error", code_found=True)
    timeout = metadata.get("timeout_s", ref.get("timeout_s") if isinstance(ref, dict) else None)
    timeout = min(float(timeout) if timeout is not None else default_timeout, max_timeout)
    return code, units, timeout


def _score(sample_id: Any, outcome: dict, partial_credit: bool) -> dict:
    if outcome["violations"]:
        logger.info("code_tests reward: %r refused: %s", sample_id, "; ".join(outcome["violations"]))
        return _failure(sample_id, "sandbox_violation", code_found=True)
    if outcome["timed_out"]:
        return _failure(sample_id, "timeout", code_found=True)
    if not outcome["reported"]:
        logger.info("code_tests reward: %r exited %s without a result", sample_id, outcome["returncode"])
        return _failure(sample_id, "crashed", code_found=True)
    if outcome["solution_error"]:
        return _failure(sample_id, "solution_error", code_found=True)
    total = outcome["total"]
    rate = outcome["passed"] / total if total else 0.0
    all_passed = 1.0 if total and outcome["passed"] == total else 0.0
    value = rate if partial_credit else all_passed
    return {
        "id": sample_id,
        "aggregate_reward_score": value,
        "metrics_list": [
            _metric("pass_rate", value, "Reward"),
            _metric("all_passed", all_passed),
            _metric("code_found", 1.0),
            _metric("tests_total", total),
        ],
    }


def lambda_handler(event: Any, context: Any = None) -> list[dict]:
    """Score a batch: ``event`` is the bare JSON list of samples (a single sample dict is also accepted)."""
    samples = [event] if isinstance(event, dict) else event
    if not isinstance(samples, list):
        raise TypeError(f"event must be a JSON list of samples; got {type(event).__name__}")
    default_timeout = _env_float("CODE_TESTS_TIMEOUT_S", 5.0)
    max_timeout = _env_float("CODE_TESTS_MAX_TIMEOUT_S", 60.0)
    memory_mb = int(_env_float("CODE_TESTS_MEMORY_MB", 512))
    workers = int(_env_float("CODE_TESTS_WORKERS", 2 * (os.cpu_count() or 1)))
    partial_credit = _env_bool("CODE_TESTS_PARTIAL_CREDIT", True)
    isolate = _env_bool("CODE_TESTS_ISOLATE", True)

    results: list[dict | None] = [None] * len(samples)
    runnable = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            results[i] = _failure(None, "error_sample_not_an_object")
            continue
        try:
            prepared = _prepare(sample, default_timeout, max_timeout)
        except Exception as exc:  # one bad sample must never fail the batch
            logger.warning("code_tests reward: sample %r scored 0: %s", sample.get("id"), exc)
            prepared = _failure(sample.get("id"), "error_invalid_sample")
        if isinstance(prepared, dict):
            results[i] = prepared
        else:
            runnable.append((i, prepared))

    def run(item: tuple[int, tuple[str, list, float]]) -> None:
        i, (code, units, timeout) = item
        sample_id = samples[i].get("id")
        try:
            outcome = run_in_sandbox(code, units, timeout_s=timeout, memory_mb=memory_mb, isolate=isolate)
            results[i] = _score(sample_id, outcome, partial_credit)
        except Exception as exc:
            logger.warning("code_tests reward: sample %r could not run: %s", sample_id, exc)
            results[i] = _failure(sample_id, "error_sandbox", code_found=True)

    if runnable:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(runnable)))) as pool:
            list(pool.map(run, runnable))
    return results  # type: ignore[return-value]
