"""Code reward: the Python program in the model's reply must pass the reference tests; the verdict is not the program's.

Self-contained AWS Lambda handler (standard library only): deploy this one file unchanged.

The program is the last ```python fenced block of the reply (else the last plain ``` block, else the whole reply
when it parses as Python). The tests come from the reference answer (top-level ``reference_answer``, else
``metadata.reference_answer``).

Test formats
------------
**Cases (recommended).** Inputs and expected results; the expected results never leave the grader process, and
the grader itself compares what the program returned or printed::

    {"entry_point": "f", "cases": [{"args": [1, 2], "kwargs": {}, "expected": 3}, ...],
     "rel_tol": 1e-9, "abs_tol": 0.0}                        call f(*args, **kwargs); compare the return value
    {"cases": [{"input": "1 2\\n", "output": "3\\n"}, ...]}    run the program as __main__ on stdin; compare stdout
    {"inputs": [...], "outputs": [...], "fn_name": "f"}      APPS / CodeContests style (stdin/stdout without fn_name)

Return values are compared as JSON values (a tuple equals a list, int and float compare numerically within
``rel_tol`` (default 1e-9) and ``abs_tol`` (default 0), bool is not a number); stdout is compared line by line
ignoring trailing whitespace (token by token, numerically within the tolerances, when either is given). A
program's ``exit()`` ends its run normally; an exception or a non-zero exit fails the case. Only plain data
leaves the program: anything else (an object whose ``__eq__`` is always true, say) never equals anything.

**Assert-style tests** (MBPP / HumanEval, kept for existing datasets)::

    ["assert f(1) == 2", ...]                                   a list of tests
    "assert f(1) == 2\\nassert f(2) == 3"                        test code; each top-level assert is a test
    {"tests" | "test_list" | "test": ..., "setup": "...",       an object (a ``check`` function is called on
     "entry_point": "f", "timeout_s": 5}                         ``entry_point``)

What the verdict rests on
-------------------------
Every rollout runs as two processes: the *judge*, which holds the test code, and the *solution*, a child the
judge forks before it has read any test, which holds the program. They talk over two pipes in a small protocol
that carries plain data only (None, bool, int, float, str, bytes, list, tuple, dict, set, a few stdlib numbers)
and opaque references to the program's other objects. Test code runs in the judge against proxies of the
program's functions and objects: ``f(1)`` asks the solution process to call ``f`` and gets back plain data;
comparisons, ``len``, ``sorted``, ``AssertionError`` and the count of passed tests all happen in the judge.

Test code and setup come from the dataset and are trusted; they see the program's results only as plain data.
No nonce or HMAC could authenticate a verdict computed inside the program's own interpreter: the key would sit
in memory the program can read (``gc``, frames, ``/proc/self/mem``). That is why no test runs there.

Guaranteed, in every isolation mode:

- The program cannot write the verdict. Its process holds no descriptor of the channel to the grader (every
  descriptor but its two pipes is closed before its first line runs), cannot open the judge's or the grader's
  descriptors through ``/proc`` (both mark themselves non-dumpable) and cannot reach the judge's memory (no
  shared memory, no ``ptrace``/``process_vm_*`` under seccomp, and non-dumpable processes refuse both anyway).
  At most it can end its own process or, without seccomp, the judge: a rollout without a report scores 0.
  Whatever it prints goes to /dev/null; whatever it sends over its pipe is parsed as plain data, capped at
  4 MiB per answer and 16 MiB per rollout, and anything else ends the rollout as a ``sandbox_violation``.
- For cases, the expected values are never in the sandbox at all: the judge relays the program's answers to
  the grader, which compares them.
- For assert-style tests, the expected values are only in the judge's memory (see above), and the program
  cannot patch what the tests use (builtins, ``AssertionError``, ``==``): the judge never runs its code.
- A rollout scores at most 1 (share of tests passed).

Not guaranteed:

- A test that asks the program a yes/no question about its own object (``assert obj.is_valid()``,
  ``assert 3 in obj`` for a custom container, ``bool(obj)``) gets the program's answer; and an expected value
  that can be guessed (``assert is_prime(7)``: True) can be guessed. Cases with non-trivial expected values
  are the form to use for RL.
- Tests that need the program's objects to be real objects in the test's own interpreter (``isinstance`` on a
  class the program defines, identity, mutation of a custom object passed in from the test) fail honestly
  written programs too; plain-data arguments mutated in place (lists, dicts, sets) are copied back.
- Timing: a program learns nothing from the judge, but the verdict still depends on whether it answers before
  the deadline.
- Reads in mode 2 without Landlock (AWS Lambda): files and ``/proc`` entries that the grader's user can read
  are readable by the program (the grader's own ``/proc`` entries are not). It has no way to pass them on: no
  network, no file-system writes, no other process, and none of its output is logged or returned.

Isolation (metric ``isolation``: 3, 2 or 1)
-------------------------------------------
3 ``bwrap``: where bubblewrap works (Debian package ``bubblewrap``; as root, or unprivileged where the kernel
  allows user namespaces), each rollout gets new user, pid, network, mount, ipc and uts namespaces, no view of
  the host's processes, a read-only system, an empty environment, a 16 MiB tmpfs as working directory, and dies
  with the grader; plus the seccomp filter and Landlock of 2, except that writes to that tmpfs are allowed.
2 ``seccomp``: otherwise (AWS Lambda, a container that forbids user namespaces): the solution process gets a
  seccomp filter that kills it on fork/exec, signals to any process, ptrace, sockets, mount/namespace calls and
  other kernel interfaces a program has no use for, and refuses every write to the file system; a Landlock
  ruleset (where the kernel has it) confines its reads to the Python installation and system libraries; as
  root it runs as ``nobody`` (or without capabilities when the interpreter is not readable by ``nobody``).
1 ``rlimits``: resource limits only (a CPU without a syscall table here, or ``CODE_TESTS_ISOLATION=rlimits``);
  refused unless ``CODE_TESTS_MIN_ISOLATION=rlimits``.

In every mode the grader marks itself non-dumpable (its ``/proc/<pid>/environ``, memory and descriptors are
unreadable to the rollout), the rollout starts with an empty environment, time (wall clock and RLIMIT_CPU),
memory (RLIMIT_AS), file size, descriptors and processes are limited, output is read up to a cap, every
process of the rollout is killed at the end (its pid namespace or process group, then a sweep of the process
table for its session), and nothing the program wrote or returned is logged: log lines carry sample ids and
fixed reason words only.

Configuration (environment; ``timeout_s`` may also come from the reference object or ``metadata``):

    CODE_TESTS_TIMEOUT_S       5       wall-clock seconds per rollout (capped by CODE_TESTS_MAX_TIMEOUT_S=60)
    CODE_TESTS_MEMORY_MB       512     address-space limit per process
    CODE_TESTS_WORKERS         2 x CPUs  rollouts run at the same time (a thread per running rollout)
    CODE_TESTS_PARTIAL_CREDIT  true    score = share of tests passed; false: 1 only when all pass
    CODE_TESTS_ISOLATION       auto    auto (bwrap where it works, else seccomp), bwrap, seccomp or rlimits
                                       (CODE_TESTS_ISOLATE=false, the older switch, means seccomp)
    CODE_TESTS_MIN_ISOLATION   seccomp rollouts are refused (error_isolation_unavailable) below this level
    CODE_TESTS_BWRAP           bwrap   the bubblewrap executable
    CODE_TESTS_LANDLOCK        true    false: no Landlock ruleset (as on a kernel without it, e.g. Lambda's)

Output per sample: ``aggregate_reward_score`` and metrics ``pass_rate`` (Reward), ``all_passed``,
``tests_total``, ``code_found``, ``isolation`` and, when one applies, a reason: ``timeout``,
``sandbox_violation``, ``solution_error``, ``syntax_error``, ``crashed``, ``error_*``.
"""

from __future__ import annotations

import _json
import ast
import json
import logging
import marshal
import math
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = frozenset(("python", "py", "python3", "py3"))
_TEST_KEYS = ("tests", "test_list", "test", "test_code", "asserts", "test_cases")
_SETUP_KEYS = ("setup", "test_setup_code", "test_imports", "prompt_setup")
_MAX_CODE_BYTES = 1 << 20
_MAX_CASES = 10_000
_READ_CAP = 24 << 20       # bytes read from the judge (answers are capped at 16 MiB by the judge itself)
_ERR_CAP = 64 << 10        # bytes of the judge's stderr kept (for a crash of the judge itself)
_NOBODY = 65534
_LEVELS = {"rlimits": 1, "seccomp": 2, "bwrap": 3}
_MARKER = "rftflow-code-sandbox"

# ------------------------------------------------------------------------------------------------ wire format
# Shared by the grader (exec'd below) and the judge/solution processes (part of _HARNESS). Plain data travels
# as JSON with tags for what JSON lacks: {"t": [...]} tuple, {"d": [[k, v], ...]} dict, {"s"|"f": [...]} set /
# frozenset, {"b"|"y": hex} bytes / bytearray, {"c": [re, im]}, {"q": [...]} deque, {"D": str} Decimal,
# {"Q": [n, d]} Fraction, and {"r": id, "n": type} / {"g": name} for a reference to an object of the program.
_CODEC = r'''
_INF = float("inf")
_estr = _json.encode_basestring_ascii


def _enc(v, hook, depth=0):
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return int.__repr__(v)
    if t is str:
        return _estr(v)
    if t is float:
        if v != v:
            return "NaN"
        if v == _INF or v == -_INF:
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    if depth > 400:
        raise ValueError("a value nested more than 400 levels deep")
    d = depth + 1
    if t is list:
        return "[" + ",".join([_enc(x, hook, d) for x in v]) + "]"
    if t is tuple:
        return '{"t":[' + ",".join([_enc(x, hook, d) for x in v]) + "]}"
    if t is dict:
        return '{"d":[' + ",".join(["[" + _enc(k, hook, d) + "," + _enc(x, hook, d) + "]"
                                    for k, x in v.items()]) + "]}"
    if t is set or t is frozenset:
        return ('{"s":[' if t is set else '{"f":[') + ",".join([_enc(x, hook, d) for x in v]) + "]}"
    if t is bytes or t is bytearray:
        return ('{"b":"' if t is bytes else '{"y":"') + v.hex() + '"}'
    if t is complex:
        return '{"c":[' + _enc(v.real, hook, d) + "," + _enc(v.imag, hook, d) + "]}"
    return hook(v, depth)


class _Opts:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


_scan = _json.make_scanner(_Opts())


def _loads(text):
    try:
        value, end = _scan(text, 0)
    except Exception:  # StopIteration, JSONDecodeError, and SystemError from the C scanner on some inputs
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("data after the JSON value")
    return value


def _untag(x, ref, depth=0):
    t = type(x)
    if t is list:
        if depth > 400:
            raise ValueError("nested too deeply")
        return [_untag(e, ref, depth + 1) for e in x]
    if t is not dict:
        return x
    if depth > 400:
        raise ValueError("nested too deeply")
    if "r" in x or "g" in x:
        return ref(x)
    if len(x) != 1:
        raise ValueError("not a tagged value")
    (tag, val), = x.items()
    d = depth + 1
    if tag == "t":
        return tuple(_untag(val, ref, d))
    if tag == "d":
        return {_untag(k, ref, d): _untag(v, ref, d) for k, v in val}
    if tag == "s":
        return set(_untag(val, ref, d))
    if tag == "f":
        return frozenset(_untag(val, ref, d))
    if tag == "b":
        return bytes.fromhex(val)
    if tag == "y":
        return bytearray.fromhex(val)
    if tag == "c":
        return complex(float(val[0]), float(val[1]))
    if tag == "q":
        import collections
        return collections.deque(_untag(val, ref, d))
    if tag == "D" and type(val) is str and len(val) < 1000:
        import decimal
        return decimal.Decimal(val)
    if tag == "Q" and type(val[0]) is int and type(val[1]) is int:
        import fractions
        return fractions.Fraction(val[0], val[1])
    raise ValueError("unknown tag")
'''

# ------------------------------------------------------------------------------------------------ the sandbox
# The judge (this source, run as ``python -I -S -B -c``) reads its job on stdin in two frames: the first one
# (the program and the limits) before it forks the solution process, the second one (the tests) after, so the
# tests are never in the solution's memory. It writes frames to stdout: b"C" + case index + the solution's raw
# answer (cases: the grader compares), and b"R" + its report.
_HARNESS = "# " + _MARKER + r''': the judge of include/rewards/code_tests.py; the solution runs in its child
import os, sys, marshal, resource, select, time, builtins, _json, ctypes
''' + _CODEC + r'''

_MAX_FRAME = 4 << 20
_MAX_TOTAL = 16 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _c(args):
    return [ctypes.c_long(a) if type(a) is int else a for a in args]


def _prctl(*args):
    return _libc.prctl(*_c(args))


def _syscall(*args):
    return _libc.syscall(*_c(args))


def _read_exact(fd, n):
    parts = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send(fd, payload):
    _write_all(fd, len(payload).to_bytes(4, "big") + payload)


def _job(fd):
    return marshal.loads(_read_exact(fd, int.from_bytes(_read_exact(fd, 4), "big")))


# ---- the solution's side: confinement, then a loop answering the judge's requests

def _landlock(reads, writes):
    abi = _syscall(444, None, 0, 1)
    if abi < 1:
        return 0
    fs = (1 << 13) - 1
    for bit, since in ((13, 2), (14, 3), (15, 5)):
        if abi >= since:
            fs |= 1 << bit
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = (fs.to_bytes(8, "little") + (3 if abi >= 4 else 0).to_bytes(8, "little")
            + (3 if abi >= 6 else 0).to_bytes(8, "little"))[:size]
    ruleset = _syscall(444, ctypes.create_string_buffer(attr, size), size, 0)
    if ruleset < 0:
        return 0
    file_rights = fs & (1 | 2 | 4 | (1 << 14) | (1 << 15))
    try:
        for paths, rights in ((reads, 1 | 4 | 8), (writes, fs)):
            for path in paths:
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    isdir = (os.fstat(pfd).st_mode & 0o170000) == 0o040000
                    allowed = rights if isdir else rights & file_rights
                    rule = allowed.to_bytes(8, "little") + pfd.to_bytes(4, "little")
                    _syscall(445, ruleset, 1, ctypes.create_string_buffer(rule, 12), 0)
                finally:
                    os.close(pfd)
        return abi if _syscall(446, ruleset, 0) == 0 else 0
    finally:
        os.close(ruleset)


def _confine(job):
    features = list(job["features"])
    os.chdir(job["workdir"])
    limits = ((resource.RLIMIT_AS, job["mem"]), (resource.RLIMIT_CPU, job["cpu"]),
              (resource.RLIMIT_FSIZE, job["fsize"]), (resource.RLIMIT_NOFILE, 32),
              (resource.RLIMIT_NPROC, job["nproc"]), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_MEMLOCK, 0))
    for which, value in limits:
        try:
            hard = resource.getrlimit(which)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    features.append("rlimits")
    _prctl(1, 9)  # PR_SET_PDEATHSIG: SIGKILL when the judge goes
    if job["drop_caps"]:
        header = ctypes.create_string_buffer((0x20080522).to_bytes(4, "little") + bytes(4), 8)
        if _syscall(job["capset"], header, ctypes.create_string_buffer(bytes(24), 24)) == 0:
            features.append("no-capabilities")
        _prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    if job["bpf"] and _prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS, then Landlock and seccomp
        if job["landlock"]:
            libdirs = [p for p in sys.path if p] + [sys.base_prefix + "/lib", "/usr/lib", "/usr/lib64", "/lib",
                                                    "/lib64", "/usr/local/lib", "/etc/ld.so.cache",
                                                    "/usr/share/zoneinfo", "/dev/null", "/dev/zero",
                                                    "/dev/urandom"]
            abi = _landlock(libdirs, ["/dev/null"] + ([job["workdir"]] if job["writable"] else []))
            if abi:
                features.append("landlock")
        program = job["bpf"]

        class _Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        buf = ctypes.create_string_buffer(program, len(program))
        prog = _Prog(len(program) // 8, ctypes.addressof(buf))
        if _libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(prog), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)) == 0:
            features.append("seccomp")
    return features


def _exit_builtin(code=None):
    raise SystemExit(code)


def _solution(job, rfd, wfd):
    # Only the two pipes to the judge stay open (as 3 and 4); 0, 1 and 2 are /dev/null.
    if wfd == 3:
        wfd = os.dup(wfd)
    if rfd != 3:
        os.dup2(rfd, 3)
    if wfd != 4:
        os.dup2(wfd, 4)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(5, 1 << 16)
    features = _confine(job)
    level = 1 + ("seccomp" in features) + ("namespaces" in features)
    _send(4, ('{"features":%s,"level":%d}' % (_enc(features, None), level)).encode())
    if level < job["min_level"]:
        os._exit(3)
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.") or m == "_ctypes"]:
        del sys.modules[name]
    # The harness runs with a copy of the builtins (see _BOOT), so a program patching the builtins module (say
    # len) does not garble its answers; the program gets a copy of its own.
    os.environ.clear()  # what bwrap or the interpreter itself set (PWD, LC_CTYPE from locale coercion)
    sb = dict(builtins.__dict__)
    sb["exit"] = sb["quit"] = _exit_builtin
    ns = {"__name__": "solution", "__builtins__": sb}
    refs = []

    def resolve(tag):
        if "g" in tag:
            if tag["g"] not in ns:
                raise NameError("name %r is not defined" % (tag["g"],))
            return ns[tag["g"]]
        return refs[tag["r"]]

    def hook(v, depth):
        t = type(v)
        for base in (int, float, str, bytes, bytearray, complex, tuple, list, dict, set, frozenset):
            if isinstance(v, base):
                return _enc(dict(v) if base is dict else base(v), hook, depth)
        mod, name = getattr(t, "__module__", ""), t.__name__
        if mod == "numpy" and hasattr(v, "tolist"):
            return _enc(v.tolist(), hook, depth)
        if name == "Decimal" and mod in ("decimal", "_decimal", "_pydecimal"):
            return '{"D":' + _estr(str(v)) + "}"
        if name == "Fraction" and mod == "fractions":
            return '{"Q":[' + int.__repr__(int(v.numerator)) + "," + int.__repr__(int(v.denominator)) + "]}"
        if name == "deque" and mod == "collections":
            return '{"q":[' + ",".join([_enc(x, hook, depth + 1) for x in v]) + "]}"
        refs.append(v)
        return '{"r":%d,"n":%s}' % (len(refs) - 1, _estr(str(name)[:60]))

    try:
        code = compile(job["code"], "<solution>", "exec")
        if not job["io"]:
            exec(code, ns)
        names = [k for k in ns if type(k) is str and k[:2] != "__"]
        _send(4, ('{"ok":' + _enc(names[:2000], None) + "}").encode())
    except BaseException as exc:
        _send(4, ('{"error":' + _estr(type(exc).__name__[:60]) + "}").encode())
        os._exit(0)

    def run_main(text):
        data = text.encode("utf-8", "surrogatepass")
        fin, fout = os.memfd_create("stdin"), os.memfd_create("stdout")
        try:
            _write_all(fin, data)
            os.lseek(fin, 0, 0)
            os.dup2(fin, 0)
            os.dup2(fout, 1)
            sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
            err = None
            try:
                exec(code, {"__name__": "__main__", "__builtins__": sb})
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    err = "SystemExit"
            except BaseException as exc:
                err = type(exc).__name__[:60]
            try:
                sys.stdout.flush()
            except BaseException:
                err = err or "OutputError"
            size = min(os.lseek(fout, 0, 2), _MAX_FRAME - 1024)
            out = os.pread(fout, size, 0).decode("utf-8", "replace")
            return '{"v":' + _estr(out) + ',"x":' + ("null" if err is None else _estr(err)) + "}"
        finally:
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(fin)
            os.close(fout)

    while True:
        try:
            req = _loads(_read_exact(3, int.from_bytes(_read_exact(3, 4), "big")).decode())
        except EOFError:
            os._exit(0)
        try:
            op = req["op"]
            if op == "io":
                resp = run_main(req["in"])
            else:
                obj = _untag(req["o"], resolve)
                if op == "call":
                    args = _untag(req["a"], resolve)
                    value = obj(*args, **_untag(req["k"], resolve))
                    back = []
                    if req.get("back"):
                        for a in args:
                            t = type(a)
                            back.append(_enc(a, hook) if t is list or t is dict or t is set or t is bytearray
                                        else "null")
                    resp = '{"v":' + _enc(value, hook) + ',"a":[' + ",".join(back) + "]}"
                elif op == "getattr":
                    resp = '{"v":' + _enc(getattr(obj, req["n"]), hook) + "}"
                elif op == "getitem":
                    resp = '{"v":' + _enc(obj[_untag(req["i"], resolve)], hook) + "}"
                elif op == "len":
                    resp = '{"v":' + _enc(len(obj), hook) + "}"
                elif op == "bool":
                    resp = '{"v":' + _enc(bool(obj), hook) + "}"
                elif op == "contains":
                    resp = '{"v":' + _enc(_untag(req["x"], resolve) in obj, hook) + "}"
                elif op == "list":
                    items = []
                    for item in obj:
                        items.append(item)
                        if len(items) > 1000000:
                            raise OverflowError("more than a million items")
                    resp = '{"v":' + _enc(items, hook) + "}"
                else:
                    raise ValueError(op)
        except BaseException as exc:
            try:
                message = str(exc)[:200]
            except BaseException:
                message = ""
            resp = '{"e":' + _estr(type(exc).__name__[:60]) + ',"m":' + _estr(message) + "}"
        _send(4, resp.encode("ascii"))


# ---- the judge's side

class _Gone(BaseException):
    """The solution process has ended (finished, crashed, killed at the deadline or for breaking the rules)."""


class _SolutionError(Exception):
    pass


class _Peer:
    def __init__(self, pid, rfd, wfd, deadline):
        self.pid, self.rfd, self.wfd, self.deadline = pid, rfd, wfd, deadline
        self.status = None
        self.why = ""
        self.received = 0
        os.set_blocking(wfd, False)

    def stop(self, why):
        if not self.why:
            self.why = why
        if self.status is None:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
            try:
                self.status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:
                self.status = 0
        raise _Gone(self.why)

    def ended(self):
        # Its end of the pipe closed: it exited, crashed or was killed (by the kernel: seccomp, RLIMIT_CPU).
        st = 0
        for _ in range(50):
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = st
                break
            time.sleep(0.002)
        if os.WIFSIGNALED(st) and os.WTERMSIG(st) == 31:  # SIGSYS: the seccomp filter killed it
            self.stop("violation")
        if os.WIFSIGNALED(st) and os.WTERMSIG(st) in (24, 9) and time.monotonic() >= self.deadline - 1:
            self.stop("timeout")
        self.stop("exited")

    def exchange(self, payload):
        """Send one request (None: none) and return the solution's next frame."""
        if self.why:
            raise _Gone(self.why)
        out = b"" if payload is None else len(payload).to_bytes(4, "big") + payload
        head, body, size, got = b"", [], -1, 0
        while True:
            if size >= 0 and got == size:
                if out:
                    self.stop("protocol")  # it answered before reading the request
                return b"".join(body)
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.stop("timeout")
            readable, writable, _ = select.select([self.rfd], [self.wfd] if out else [], [], left)
            if writable:
                try:
                    out = out[os.write(self.wfd, out[:65536]):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    self.ended()
            if not readable:
                continue
            want = 4 - len(head) if size < 0 else size - got
            chunk = os.read(self.rfd, min(want, 1 << 20))
            if not chunk:
                self.ended()
            self.received += len(chunk)
            if self.received > _MAX_TOTAL:
                self.stop("output_limit")
            if size < 0:
                head += chunk
                if len(head) == 4:
                    size = int.from_bytes(head, "big")
                    if size > _MAX_FRAME:
                        self.stop("output_limit")
            else:
                body.append(chunk)
                got += len(chunk)

    def message(self, payload):
        raw = self.exchange(payload)
        try:
            msg = _loads(raw.decode("ascii"))
            if type(msg) is not dict:
                raise ValueError
            return msg
        except (ValueError, UnicodeDecodeError, RecursionError, MemoryError):
            self.stop("protocol")


def _remote_error(msg):
    name, message = msg.get("e"), msg.get("m")
    name = name if type(name) is str and name.isidentifier() else "Exception"
    message = message if type(message) is str else ""
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return _SolutionError("%s: %s" % (name, message))


class _Ref:
    """A function or object of the program, living in the solution process."""

    __slots__ = ("_peer", "_tag", "_kind")

    def __init__(self, peer, tag, kind):
        self._peer, self._tag, self._kind = peer, tag, kind

    def _op(self, op, args=(), **fields):
        peer = self._peer
        parts = ['"op":"%s"' % op, '"o":' + _ref_json(self)]
        parts += ['"%s":%s' % (key, _enc(value, _ref_json)) for key, value in fields.items()]
        if args:
            parts.append('"back":true')
        msg = peer.message(("{" + ",".join(parts) + "}").encode("ascii"))
        if "e" in msg:
            raise _remote_error(msg)
        try:
            value = _untag(msg.get("v"), peer.ref)
            if args and type(msg.get("a")) is list:
                for old, new in zip(args, _untag(msg["a"], peer.ref)):
                    t = type(old)
                    if t is not type(new):
                        continue
                    if t is list or t is bytearray:
                        old[:] = new
                    elif t is dict or t is set:
                        old.clear()
                        old.update(new)
        except Exception:
            peer.stop("protocol")
        return value

    def __call__(self, *args, **kwargs):
        return self._op("call", args, a=list(args), k=dict(kwargs))

    def __getattr__(self, name):
        if name[:2] == "__":
            raise AttributeError(name)
        return self._op("getattr", n=name)

    def __getitem__(self, key):
        return self._op("getitem", i=key)

    def __len__(self):
        n = self._op("len")
        if type(n) is not int or n < 0:
            raise TypeError("len() of a solution object")
        return n

    def __iter__(self):
        items = self._op("list")
        if type(items) is not list:
            raise TypeError("iterating a solution object")
        return iter(items)

    def __contains__(self, item):
        return self._op("contains", x=item) is True

    def __bool__(self):
        return self._op("bool") is True

    def __repr__(self):
        return "<solution %s>" % self._kind


def _ref_json(v, depth=0):
    if type(v) is _Ref:
        tag = v._tag
        return '{"g":%s}' % _estr(tag["g"]) if "g" in tag else '{"r":%d}' % tag["r"]
    raise TypeError("only plain data can be passed to the solution; got %s" % type(v).__name__)


def _peer_ref(peer):
    def ref(tag):
        if type(tag.get("r")) is int and type(tag.get("n", "")) is str and len(tag) <= 2:
            return _Ref(peer, {"r": tag["r"]}, tag.get("n", "object")[:60])
        raise ValueError("bad reference")
    return ref


def _main():
    _prctl(4, 0)  # PR_SET_DUMPABLE 0: /proc/<this pid>/{mem,environ,fd} closed to everyone else
    _prctl(1, 9)  # PR_SET_PDEATHSIG: SIGKILL when the grader goes
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    job = _job(0)
    s_in, j_out = os.pipe()   # judge -> solution
    j_in, s_out = os.pipe()   # solution -> judge
    pid = os.fork()
    if pid == 0:
        try:
            os.close(j_out)
            os.close(j_in)
            _solution(job, s_in, s_out)
        finally:
            os._exit(70)
    os.close(s_in)
    os.close(s_out)
    spec = _job(0)  # the tests: read only now that the solution process exists without them
    started = time.monotonic()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (job["mem"] * 2, job["mem"] * 2))
        resource.setrlimit(resource.RLIMIT_CPU, (job["cpu"] + 2, job["cpu"] + 2))
    except (ValueError, OSError):
        pass
    peer = _Peer(pid, j_in, j_out, started + job["timeout"])
    peer.ref = _peer_ref(peer)
    report = {"passed": 0, "total": 0, "answered": 0, "why": "", "load": "", "loaded": False, "features": [],
              "level": 0, "failure": "", "status": None}
    try:
        iso = peer.message(None)
        report["features"] = [f for f in iso.get("features", []) if type(f) is str][:20]
        report["level"] = iso.get("level") if type(iso.get("level")) is int else 0
        loaded = peer.message(None)
        if "error" in loaded:
            report["load"] = str(loaded["error"])[:60] if type(loaded["error"]) is str else "Exception"
            peer.stop("load_error")
        report["loaded"] = True
        names = loaded.get("ok")
        names = names if type(names) is list else []
        if spec["kind"] == "cases":
            _run_cases(peer, spec, report)
        else:
            _run_asserts(peer, spec, names, report)
    except _Gone:
        pass
    if spec["kind"] != "cases" and report["total"] == 0:
        report["total"] = sum(1 for _, is_test in spec["units"] if is_test)
    try:
        peer.stop(peer.why or "done")
    except _Gone:
        pass
    report["why"] = peer.why
    report["status"] = peer.status
    _write_all(1, b"R" + _frame_len(_enc(report, None).encode()))
    os._exit(0)


def _frame_len(payload):
    return len(payload).to_bytes(4, "big") + payload


def _run_cases(peer, spec, report):
    target = '{"g":%s}' % _estr(spec["entry"] or "")
    for index, kind, a, k in spec["cases"]:
        if kind == "io":
            payload = '{"op":"io","in":' + _estr(a) + "}"
        else:
            payload = '{"op":"call","o":' + target + ',"a":' + _enc(a, None) + ',"k":' + _enc(k, None) + "}"
        raw = peer.exchange(payload.encode("ascii"))
        report["answered"] += 1
        _write_all(1, b"C" + _frame_len(index.to_bytes(4, "big") + raw))


def _run_asserts(peer, spec, names, report):
    g = {"__name__": "__test__", "__builtins__": builtins}
    reserved = set(dir(builtins))
    entry = spec["entry"]
    for name in names:
        if type(name) is str and name.isidentifier() and (name not in reserved or name == entry):
            g[name] = _Ref(peer, {"g": name}, "global")
    setup_failed = False
    for code, is_test in spec["units"]:
        report["total"] += 1 if is_test else 0
        if setup_failed:
            continue
        try:
            exec(compile(code, "<test>", "exec"), g)
            report["passed"] += 1 if is_test else 0
        except _Gone:
            if not report["failure"]:
                report["failure"] = "%s -> solution process %s" % (code[:120], peer.why)
            setup_failed = not is_test
        except BaseException as exc:
            setup_failed = not is_test
            if not report["failure"]:
                report["failure"] = "%s -> %s" % (code[:120], type(exc).__name__)
    report["answered"] = report["total"]


_main()
'''

_codec: dict[str, Any] = {"_json": _json}
exec(_CODEC, _codec)
_enc, _loads, _untag = _codec["_enc"], _codec["_loads"], _codec["_untag"]

# The interpreter's -c program: read the compiled judge (frame 0) from stdin and run it. It carries the marker
# by which the tests find any process of a rollout that outlived it.
_BOOT = ("# " + _MARKER + "\nimport os, marshal\n"
         "def _r(n):\n    b = b''\n    while len(b) < n:\n        c = os.read(0, n - len(b))\n"
         "        if not c:\n            raise SystemExit(70)\n        b += c\n    return b\n"
         "import builtins\n"
         "exec(marshal.loads(_r(int.from_bytes(_r(4), 'big'))), {'__name__': '__main__', "
         "'__builtins__': dict(vars(builtins))})\n")
_compiled: bytes | None = None


def _harness_code() -> bytes:
    global _compiled
    if _compiled is None:
        _compiled = marshal.dumps(compile(_HARNESS, "<" + _MARKER + ">", "exec"))
    return _compiled


# ------------------------------------------------------------------------------------------------ seccomp
# Syscall numbers per machine (checked against the kernel headers by tests/test_code_sandbox.py).
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": dict(
        fork=57, vfork=58, execve=59, execveat=322, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129,
        rt_tgsigqueueinfo=297, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, ptrace=101,
        process_vm_readv=310, process_vm_writev=311, kcmp=312, process_madvise=440, process_mrelease=448,
        socket=41, io_uring_setup=425, io_uring_enter=426, io_uring_register=427, mount=165, umount2=166,
        pivot_root=155, chroot=161, unshare=272, setns=308, open_tree=428, move_mount=429, fsopen=430,
        fsconfig=431, fsmount=432, fspick=433, mount_setattr=442, setsid=112, setpgid=109, bpf=321,
        perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249, personality=135,
        acct=163, swapon=167, swapoff=168, reboot=169, sethostname=170, setdomainname=171, init_module=175,
        finit_module=313, delete_module=176, kexec_load=246, kexec_file_load=320, quotactl=179, quotactl_fd=443,
        open_by_handle_at=304, name_to_handle_at=303, syslog=103, vhangup=153, iopl=172, ioperm=173,
        modify_ldt=154, uselib=134, lookup_dcookie=212, migrate_pages=256, move_pages=279, setpriority=141,
        ioprio_set=251, sched_setscheduler=144, sched_setparam=142, sched_setattr=314, sched_setaffinity=203,
        settimeofday=164, clock_settime=227, clock_adjtime=305, adjtimex=159, fanotify_init=300, setuid=105,
        setgid=106, setreuid=113, setregid=114, setresuid=117, setresgid=119, setgroups=116, setfsuid=122,
        setfsgid=123, capset=126, clone3=435, openat2=437, clone=56, prlimit64=302, open=2, openat=257, creat=85,
        unlink=87, unlinkat=263, rename=82, renameat=264, renameat2=316, mkdir=83, mkdirat=258, rmdir=84, link=86,
        linkat=265, symlink=88, symlinkat=266, chmod=90, fchmod=91, fchmodat=268, fchmodat2=452, chown=92,
        fchown=93, lchown=94, fchownat=260, truncate=76, utime=132, utimes=235, utimensat=280, futimesat=261,
        mknod=133, mknodat=259, setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197, lremovexattr=198,
        fremovexattr=199),
    "aarch64": dict(
        execve=221, execveat=281, kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240,
        pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, ptrace=117, process_vm_readv=270,
        process_vm_writev=271, kcmp=272, process_madvise=440, process_mrelease=448, socket=198, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427, mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97,
        setns=268, open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433,
        mount_setattr=442, setsid=157, setpgid=154, bpf=280, perf_event_open=241, userfaultfd=282, keyctl=219,
        add_key=217, request_key=218, personality=92, acct=89, swapon=224, swapoff=225, reboot=142,
        sethostname=161, setdomainname=162, init_module=105, finit_module=273, delete_module=106, kexec_load=104,
        kexec_file_load=294, quotactl=60, quotactl_fd=443, open_by_handle_at=265, name_to_handle_at=264,
        syslog=116, vhangup=58, lookup_dcookie=18, migrate_pages=238, move_pages=239, setpriority=140,
        ioprio_set=30, sched_setscheduler=119, sched_setparam=118, sched_setattr=274, sched_setaffinity=122,
        settimeofday=170, clock_settime=112, clock_adjtime=266, adjtimex=171, fanotify_init=262, setuid=146,
        setgid=144, setreuid=145, setregid=143, setresuid=147, setresgid=149, setgroups=159, setfsuid=151,
        setfsgid=152, capset=91, clone3=435, openat2=437, clone=220, prlimit64=261, openat=56, unlinkat=35,
        renameat=38, renameat2=276, mkdirat=34, linkat=37, symlinkat=36, fchmod=52, fchmodat=53, fchmodat2=452,
        fchown=55, fchownat=54, truncate=45, utimensat=88, mknodat=33, setxattr=5, lsetxattr=6, fsetxattr=7,
        removexattr=14, lremovexattr=15, fremovexattr=16),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Killed on sight: processes, signals to others, other processes' memory, mounts and namespaces, and kernel
# interfaces no test needs; sockets other than AF_UNIX are killed too, AF_UNIX ones refused (see below).
_KILL_CALLS = tuple(
    "fork vfork execve execveat kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_open pidfd_send_signal "
    "pidfd_getfd ptrace process_vm_readv process_vm_writev kcmp process_madvise process_mrelease "
    "io_uring_setup io_uring_enter io_uring_register mount umount2 pivot_root chroot unshare setns open_tree "
    "move_mount fsopen fsconfig fsmount fspick mount_setattr setsid setpgid bpf perf_event_open userfaultfd keyctl "
    "add_key request_key personality acct swapon swapoff reboot sethostname setdomainname init_module "
    "finit_module delete_module kexec_load kexec_file_load quotactl quotactl_fd open_by_handle_at "
    "name_to_handle_at syslog vhangup iopl ioperm modify_ldt uselib lookup_dcookie migrate_pages move_pages "
    "setpriority ioprio_set sched_setscheduler sched_setparam sched_setattr sched_setaffinity settimeofday "
    "clock_settime clock_adjtime adjtimex fanotify_init setuid setgid setreuid setregid setresuid setresgid "
    "setgroups setfsuid setfsgid capset".split())
_ENOSYS_CALLS = ("clone3", "openat2")  # refused as "not implemented", so libc falls back to what is checked
# Refused with EACCES where the file system is the host's (no bwrap): writing, creating, deleting, renaming.
_WRITE_CALLS = tuple(
    "creat unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir link linkat symlink symlinkat chmod fchmod "
    "fchmodat fchmodat2 chown fchown lchown fchownat truncate utime utimes utimensat futimesat mknod mknodat "
    "setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr".split())
_CLONE_THREAD, _CLONE_NAMESPACES = 0x10000, 0x7E020000
_OPEN_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000 | 0o20000000  # O_WRONLY O_RDWR O_CREAT O_TRUNC O_APPEND O_TMPFILE


def seccomp_program(machine: str, *, deny_writes: bool) -> bytes | None:
    """The classic-BPF seccomp filter for the solution process on ``machine`` (None: no table for it)."""
    table = _SYSCALLS.get(machine)
    if table is None:
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    kill, allow, errno = 0x80000000, 0x7FFF0000, 0x00050000
    prog: list[tuple[int, int, int, int]] = []

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k))

    op(ld, 4)                                      # seccomp_data.arch
    op(jeq, _AUDIT_ARCH[machine], 1, 0)
    op(ret, kill)
    op(ld, 0)                                      # seccomp_data.nr
    if machine == "x86_64":
        op(jge, 0x40000000, 0, 1)                  # the x32 ABI
        op(ret, kill)
    op(jeq, table["socket"], 0, 4)                 # socket: AF_UNIX refused (libc's nscd look-ups), others killed
    op(ld, 16)
    op(jeq, 1, 0, 1)
    op(ret, errno | 13)
    op(ret, kill)
    for name in _KILL_CALLS:
        if name in table:
            op(jeq, table[name], 0, 1)
            op(ret, kill)
    for name in _ENOSYS_CALLS:
        op(jeq, table[name], 0, 1)
        op(ret, errno | 38)
    op(jeq, table["clone"], 0, 5)                  # clone: threads only
    op(ld, 16)
    op(jset, _CLONE_THREAD, 0, 2)
    op(jset, _CLONE_NAMESPACES, 1, 0)
    op(ret, allow)
    op(ret, kill)
    op(jeq, table["prlimit64"], 0, 4)              # prlimit64: its own limits only
    op(ld, 16)
    op(jeq, 0, 0, 1)
    op(ret, allow)
    op(ret, kill)
    if deny_writes:
        for name in _WRITE_CALLS:
            if name in table:
                op(jeq, table[name], 0, 1)
                op(ret, errno | 13)
        for name, arg in (("open", 1), ("openat", 2)):
            if name in table:
                op(jeq, table[name], 0, 4)
                op(ld, 16 + 8 * arg)
                op(jset, _OPEN_WRITE_FLAGS, 0, 1)
                op(ret, errno | 13)
                op(ret, allow)
    op(ret, allow)
    return b"".join(c.to_bytes(2, "little") + bytes((jt, jf)) + k.to_bytes(4, "little") for c, jt, jf, k in prog)


# ------------------------------------------------------------------------------------------------ isolation plan


class _Plan:
    """How rollouts are started on this machine: a bwrap command line, or the interpreter with seccomp."""

    def __init__(self, mode: str, argv: list[str], *, features: list[str], popen: dict | None = None,
                 workdir: str = "/", bpf: bytes | None = None, deny_writes: bool = True, drop_caps: bool = False,
                 reason: str = ""):
        self.mode, self.argv, self.features, self.popen = mode, argv, features, dict(popen or {})
        self.workdir, self.bpf, self.deny_writes, self.drop_caps = workdir, bpf, deny_writes, drop_caps
        self.reason = reason
        self.level = 0       # set by the probe: what a rollout actually got
        self.achieved: list[str] = []

    @property
    def bwrap(self) -> bool:
        return self.mode == "bwrap"


_plans: dict[str, _Plan] = {}
_plan_lock = threading.Lock()
_hardened = False


def _harden_self() -> bool:
    """Mark this (the grader's) process non-dumpable: its /proc files (environ, mem, fd) become unreadable to
    other processes of the same user, rollouts included, and it leaves no core dump."""
    global _hardened
    if not _hardened:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            args = [ctypes.c_ulong(0)] * 4
            libc.prctl(ctypes.c_int(4), *args)                         # PR_SET_DUMPABLE, 0
            _hardened = libc.prctl(ctypes.c_int(3), *args) == 0        # PR_GET_DUMPABLE
        except (OSError, AttributeError):
            _hardened = False
        if not _hardened:
            logger.warning("code_tests reward: could not mark the grader non-dumpable (not Linux?)")
    return _hardened


def _interpreter() -> str:
    exe = getattr(sys, "_base_executable", None) or sys.executable or shutil.which("python3") or "python3"
    return os.path.realpath(exe)


def _usable_by_others(path: str) -> bool:
    """Whether a user with no relation to the owner can reach and read+execute ``path``."""
    try:
        path = os.path.realpath(path)
        parts = path.split("/")
        for i in range(1, len(parts)):
            if not os.stat("/".join(parts[:i]) or "/").st_mode & 0o001:
                return False
        return os.stat(path).st_mode & 0o005 == 0o005
    except OSError:
        return False


def _nobody_can_run(python: str) -> bool:
    stdlib = os.path.dirname(os.__file__)
    return all(_usable_by_others(p) for p in (python, stdlib, os.path.join(stdlib, "lib-dynload")))


def _bwrap_argv(bwrap: str, python: str, *, as_root: bool, disable_userns: bool) -> list[str]:
    argv = [bwrap, "--unshare-all", "--unshare-user"]
    argv += ["--disable-userns"] if disable_userns else []
    argv += ["--die-with-parent", "--new-session", "--as-pid-1", "--clearenv", "--uid", str(_NOBODY), "--gid",
             str(_NOBODY), "--hostname", "sandbox"]
    argv += ["--cap-drop", "ALL"] if as_root else []
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    seen = ["/usr"]
    for extra in (os.path.realpath(sys.base_prefix), os.path.dirname(python)):
        if extra not in ("/", "") and not any(extra == s or extra.startswith(s + "/") for s in seen):
            argv += ["--ro-bind", extra, extra]
            seen.append(extra)
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev",
             "--size", str(16 << 20), "--tmpfs", "/work", "--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", "/work"]
    return argv + [python, "-I", "-S", "-B", "-c", _BOOT]


def _nobody() -> dict:
    return {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}


def _candidates(requested: str) -> list[_Plan]:
    if not sys.platform.startswith("linux"):
        return []  # seccomp, Landlock, namespaces, memfd, pidfd: the sandbox is Linux-only
    python = _interpreter()
    root = os.geteuid() == 0
    nobody_ok = root and _nobody_can_run(python)
    machine = os.uname().machine
    common = ["empty-environment", "non-dumpable-grader"]
    plans: list[_Plan] = []
    bwrap = shutil.which(os.environ.get("CODE_TESTS_BWRAP", "bwrap"))
    if requested in ("auto", "bwrap") and bwrap:
        bpf = seccomp_program(machine, deny_writes=False)
        for as_nobody in ([True, False] if nobody_ok else [False]):
            for disable_userns in (True, False):
                argv = _bwrap_argv(bwrap, python, as_root=root and not as_nobody, disable_userns=disable_userns)
                plans.append(_Plan("bwrap", argv, features=["namespaces", "bwrap"] + common,
                                   popen=_nobody() if as_nobody else {}, workdir="/work", bpf=bpf,
                                   deny_writes=False))
    if requested in ("auto", "seccomp", "rlimits"):
        bpf = seccomp_program(machine, deny_writes=True) if requested != "rlimits" else None
        plans.append(_Plan("seccomp" if bpf else "rlimits", [python, "-I", "-S", "-B", "-c", _BOOT],
                           features=common + (["uid-nobody"] if nobody_ok else []),
                           popen=_nobody() if nobody_ok else {}, bpf=bpf, drop_caps=root and not nobody_ok))
    return plans


def _requested_mode() -> str:
    mode = os.environ.get("CODE_TESTS_ISOLATION", "").strip().lower()
    if not mode:
        mode = "auto" if _env_bool("CODE_TESTS_ISOLATE", True) else "seccomp"
    if mode not in ("auto", "bwrap", "seccomp", "rlimits"):
        raise ValueError(f"CODE_TESTS_ISOLATION must be auto, bwrap, seccomp or rlimits; got {mode!r}")
    return mode


def _min_level() -> int:
    name = os.environ.get("CODE_TESTS_MIN_ISOLATION", "seccomp").strip().lower()
    if name not in _LEVELS:
        raise ValueError(f"CODE_TESTS_MIN_ISOLATION must be bwrap, seccomp or rlimits; got {name!r}")
    return _LEVELS[name]


def _plan(requested: str | None = None) -> _Plan:
    """The isolation this process uses for ``requested`` (default: CODE_TESTS_ISOLATION), probed once."""
    requested = requested or _requested_mode()
    with _plan_lock:
        plan = _plans.get(requested)
        if plan is not None:
            return plan
        _harden_self()
        failures = []
        for candidate in _candidates(requested):
            outcome = _execute(candidate, "x = 1", {"kind": "cases", "entry": None, "cases": []}, 10.0,
                               256, min_level=1)
            if outcome["reported"] and outcome["loaded"]:
                candidate.level, candidate.achieved = outcome["level"], outcome["isolation"]
                candidate.reason = "; ".join(failures)
                plan = candidate
                break
            failures.append(f"{candidate.mode}: {_short(outcome['stderr'] or outcome['why'] or 'no report', 120)}")
        if plan is None:
            plan = _Plan("unavailable", [], features=[], reason="; ".join(failures) or (
                f"no way to run {requested} here" if sys.platform.startswith("linux") else "the sandbox needs Linux"))
        if plan.mode != "bwrap" and requested in ("auto", "bwrap") and failures:
            logger.warning("code_tests reward: bubblewrap could not start a sandbox here (%s); rollouts run with "
                           "%s isolation", plan.reason, plan.mode)
        logger.info("code_tests reward: isolation %s, level %d (%s)", plan.mode, plan.level,
                    ", ".join(plan.achieved))
        _plans[requested] = plan
        return plan


def isolation(requested: str | None = None) -> dict:
    """What a rollout gets on this machine: mode, level (3 bwrap, 2 seccomp, 1 rlimits), features, and why a
    stronger mode was not used."""
    plan = _plan(requested)
    return {"mode": plan.mode, "level": plan.level, "features": list(plan.achieved), "reason": plan.reason}


# ------------------------------------------------------------------------------------------------ running


def _short(value: Any, limit: int = 80) -> str:
    """Text that is safe to log: escaped (no control characters, no newlines) and cut to ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(ch if 32 <= ord(ch) < 127 else f"\\x{ord(ch):02x}" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _sweep(sessions: set[int]) -> int:
    """Kill every live process in one of these sessions or process groups; returns how many were found."""
    killed = 0
    me = os.getpid()
    for _ in range(3):
        found = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return killed
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2:].split()
            if len(fields) > 3 and fields[0] != b"Z" and (int(fields[3]) in sessions or int(fields[2]) in sessions):
                found.append(int(name))
        found = [pid for pid in found if pid != me]
        if not found:
            return killed
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def _exited(target: int, timeout: float, *, is_pidfd: bool = False) -> bool:
    """Whether a child (or the process behind a pidfd) has exited, waiting up to ``timeout``; never reaps it."""
    try:
        fd = target if is_pidfd else os.pidfd_open(target)
    except OSError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        if not is_pidfd:
            os.close(fd)


def _execute(plan: _Plan, code: str, spec: dict, timeout_s: float, memory_mb: int, *, min_level: int,
             io: bool = False, fsize: int = 8 << 20) -> dict:
    """Run one rollout: start the judge, feed it the job, collect its frames, then make sure nothing is left."""
    job = {"code": code, "io": io, "timeout": float(timeout_s), "mem": int(memory_mb) << 20,
           "cpu": int(timeout_s) + 1, "fsize": int(fsize), "nproc": 64, "workdir": plan.workdir,
           "writable": plan.bwrap, "features": list(plan.features), "bpf": plan.bpf,
           "landlock": plan.bpf is not None and _env_bool("CODE_TESTS_LANDLOCK", True),
           "drop_caps": plan.drop_caps, "capset": _SYSCALLS.get(os.uname().machine, {}).get("capset", -1),
           "min_level": min_level}
    data = _frame(_harness_code()) + _frame(marshal.dumps(job)) + _frame(marshal.dumps(spec))
    result = {"reported": False, "loaded": False, "timed_out": False, "passed": 0, "total": 0, "answered": 0,
              "answers": {}, "why": "", "load_error": "", "failure": "", "isolation": [], "level": 0,
              "returncode": None, "left_behind": 0, "stderr": "", "duration_s": 0.0, "overflow": False}
    argv, pass_fds, info_r = list(plan.argv), (), None
    if plan.bwrap:
        info_r, info_w = os.pipe()
        argv[1:1] = ["--info-fd", str(info_w)]
        pass_fds = (info_w,)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={}, cwd="/", start_new_session=True, close_fds=True, pass_fds=pass_fds,
                                **plan.popen)
    finally:
        for fd in pass_fds:
            os.close(fd)
    child_pid, pidfd = None, None
    out, err, info = bytearray(), bytearray(), bytearray()
    report = None
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        if info_r is not None:
            sel.register(info_r, selectors.EVENT_READ, "info")
        pending = memoryview(data)
        deadline = started + timeout_s + 3.0
        while report is None and len(sel.get_map()) > (1 if info_r is not None and child_pid else 0):
            left = deadline - time.monotonic()
            if left <= 0:
                result["timed_out"] = True
                break
            for key, _ in sel.select(left):
                if key.data == "in":
                    try:
                        pending = pending[os.write(key.fd, pending[:1 << 16]):]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fileobj)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if key.data == "err":
                    err += chunk[: max(0, _ERR_CAP - len(err))]
                elif key.data == "info":
                    info += chunk[:4096]
                    try:
                        child_pid = int(json.loads(bytes(info))["child-pid"])
                        pidfd = os.pidfd_open(child_pid)
                    except (ValueError, KeyError, TypeError, OSError):
                        pass
                else:
                    out += chunk
                    if len(out) > _READ_CAP:
                        result["overflow"] = True
                        report = b""
                        break
                    while len(out) >= 5:
                        size = int.from_bytes(out[1:5], "big")
                        if len(out) < 5 + size:
                            break
                        kind, payload = out[0], bytes(out[5:5 + size])
                        del out[:5 + size]
                        if kind == ord("C") and len(payload) >= 4:
                            result["answers"].setdefault(int.from_bytes(payload[:4], "big"), payload[4:])
                        elif kind == ord("R"):
                            report = payload
                            break
        if report:
            _exited(proc.pid, 1.0)  # the judge exits by itself right after its report
    finally:
        sel.close()
        sessions = {proc.pid}  # the judge's session (seccomp mode) or bwrap's; its pid stays ours until reaped
        if pidfd is not None:
            if not _exited(pidfd, 0.0, is_pidfd=True):
                sessions.add(child_pid)  # still alive, so its pid cannot have been reused: sweep its session
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        result["left_behind"] = _sweep(sessions)
        if pidfd is not None:
            os.close(pidfd)
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()
        if info_r is not None:
            os.close(info_r)
    result["returncode"] = proc.returncode
    result["duration_s"] = time.monotonic() - started
    result["stderr"] = err.decode("utf-8", "replace").strip().splitlines()[-1] if err.strip() else ""
    if report:
        try:
            rep = _untag(json.loads(report), _opaque)
            result.update(
                reported=True, loaded=bool(rep.get("loaded")), why=str(rep.get("why", ""))[:40],
                load_error=str(rep.get("load", ""))[:60], failure=str(rep.get("failure", ""))[:300],
                isolation=[str(f)[:40] for f in rep.get("features", [])][:20],
                level=int(rep.get("level", 0)), passed=int(rep.get("passed", 0)), total=int(rep.get("total", 0)),
                answered=int(rep.get("answered", 0)))
        except Exception:
            result["reported"] = False
    return result


class _Opaque:
    """An object of the program that is not plain data: equal to nothing the grader expects."""

    def __init__(self, tag: dict):
        self.kind = str(tag.get("n", "object"))[:60]

    def __repr__(self) -> str:
        return f"<solution {self.kind}>"


def _opaque(tag: dict) -> _Opaque:
    return _Opaque(tag)


# ------------------------------------------------------------------------------------------------ judging cases


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or \
        type(value).__name__ in ("Decimal", "Fraction")


def _json_key(key: Any) -> str | None:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        return repr(key)
    return None


def _same(actual: Any, expected: Any, rel_tol: float, abs_tol: float, depth: int = 0) -> bool:
    """``actual`` (plain data from the program) equals ``expected`` (a JSON value) as JSON values."""
    if depth > 400:
        return False
    if expected is None:
        return actual is None
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, (int, float)):
        if not _number(actual):
            return False
        if type(actual) is int and type(expected) is int:
            return actual == expected
        try:
            a, e = float(actual), float(expected)
        except (OverflowError, ValueError, TypeError):
            return False
        return math.isclose(a, e, rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    if isinstance(expected, list):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(_same(a, e, rel_tol, abs_tol, depth + 1) for a, e in zip(actual, expected, strict=True)))
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or len(actual) != len(expected):
            return False
        keyed = {}
        for k, v in actual.items():
            jk = _json_key(k)
            if jk is None or jk in keyed:
                return False
            keyed[jk] = v
        return all(k in keyed and _same(keyed[k], v, rel_tol, abs_tol, depth + 1) for k, v in expected.items())
    return False


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _same_output(actual: str, expected: str, rel_tol: float | None, abs_tol: float | None) -> bool:
    if rel_tol is None and abs_tol is None:
        return _lines(actual) == _lines(expected)
    got, want = actual.split(), expected.split()
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        try:
            if not math.isclose(float(g), float(w), rel_tol=rel_tol or 0.0, abs_tol=abs_tol or 0.0):
                return False
        except (ValueError, OverflowError):
            return False
    return True


def _judge(case: dict, raw: bytes | None, plan: dict) -> bool:
    """Whether the program's answer to one case (its raw reply, relayed by the judge) is right."""
    if raw is None:
        return False
    try:
        msg = json.loads(raw)
        if not isinstance(msg, dict) or "e" in msg:
            return False
        if case["kind"] == "io":
            out = msg.get("v")
            return msg.get("x") is None and isinstance(out, str) and _same_output(
                out, case["expected"][0], plan.get("rel_tol"), plan.get("abs_tol"))
        value = _untag(msg.get("v"), _opaque)
    except Exception:  # whatever the program sent, an answer that cannot be read is a wrong answer
        return False
    rel = plan.get("rel_tol")
    abs_ = plan.get("abs_tol")
    rel = 1e-9 if rel is None else rel
    abs_ = 0.0 if abs_ is None else abs_
    return any(_same(value, e, rel, abs_) for e in case["expected"])


# ------------------------------------------------------------------------------------------------ reference answers


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
    """Turn an assert-style reference answer into ordered (code, is_test) units; ValueError when it has no tests."""
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
            "reference_answer must be cases, test code, a list of tests or an object with one of "
            f"cases, inputs/outputs, {', '.join(_TEST_KEYS)}; got {type(tests).__name__}"
        )
    if not units:
        raise ValueError("reference_answer holds no tests")
    return setup + units


def _tolerance(ref: dict, key: str) -> float | None:
    value = ref.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative number; got {value!r}")
    return float(value)


def _cases_plan(ref: dict) -> dict:
    entry = ref.get("entry_point", ref.get("fn_name"))
    raw = ref.get("cases")
    if raw is None:  # APPS / CodeContests: parallel lists
        inputs, outputs = ref.get("inputs"), ref.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise ValueError("inputs and outputs must be lists of the same length")
        raw = []
        for given, want in zip(inputs, outputs, strict=True):
            if entry:
                raw.append({"args": given if isinstance(given, list) else [given], "expected": want,
                            "_alternatives": [want[0]] if isinstance(want, list) and len(want) == 1 else []})
            else:
                join = lambda v: "\n".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
                raw.append({"input": join(given), "output": join(want)})
    if not isinstance(raw, list) or not raw:
        raise ValueError("cases must be a non-empty list")
    if len(raw) > _MAX_CASES:
        raise ValueError(f"at most {_MAX_CASES} cases per sample; got {len(raw)}")
    cases, wire = [], []
    for i, case in enumerate(raw):
        if not isinstance(case, dict):
            raise ValueError(f"cases[{i}] must be an object")
        if "input" in case:
            if not isinstance(case["input"], str) or not isinstance(case.get("output"), str):
                raise ValueError(f"cases[{i}]: input and output must be strings (stdin and expected stdout)")
            cases.append({"kind": "io", "expected": [case["output"]], "input": case["input"]})
            wire.append((i, "io", case["input"], None))
        else:
            if not isinstance(entry, str) or not entry.isidentifier():
                raise ValueError("call-style cases need entry_point: the name of the function to call")
            args, kwargs = case.get("args", []), case.get("kwargs", {})
            if not isinstance(args, list) or not isinstance(kwargs, dict) or \
                    not all(isinstance(k, str) for k in kwargs):
                raise ValueError(f"cases[{i}]: args must be a list and kwargs an object")
            key = next((k for k in ("expected", "output", "return") if k in case), None)
            if key is None:
                raise ValueError(f"cases[{i}]: no expected value (expected, output or return)")
            cases.append({"kind": "call", "expected": [case[key], *case.get("_alternatives", [])]})
            wire.append((i, "call", args, kwargs))
    kinds = {c["kind"] for c in cases}
    if len(kinds) > 1:
        raise ValueError("cases must all be call-style (args) or all stdin/stdout (input)")
    return {"kind": "cases", "io": kinds == {"io"}, "entry": entry if kinds == {"call"} else None,
            "cases": cases, "wire": wire, "rel_tol": _tolerance(ref, "rel_tol"), "abs_tol": _tolerance(ref, "abs_tol")}


def parse_tests(reference: Any) -> dict:
    """A reference answer as a test plan: ``{"kind": "cases", ...}`` (judged by the grader) or
    ``{"kind": "asserts", "units": [...], "entry_point": ...}`` (judged by the judge process)."""
    if isinstance(reference, dict):
        ref = reference
        if "input_output" in ref and not any(k in ref for k in ("cases", "inputs", *_TEST_KEYS)):
            io = ref["input_output"]
            io = json.loads(io) if isinstance(io, str) else io
            if not isinstance(io, dict):
                raise ValueError("input_output must be an object with inputs and outputs")
            ref = {**ref, **io}
        if "cases" in ref or ("inputs" in ref and "outputs" in ref):
            return _cases_plan(ref)
    entry = reference.get("entry_point") if isinstance(reference, dict) else None
    return {"kind": "asserts", "units": test_units(reference), "entry_point": entry}


def run_in_sandbox(code: str, tests: Any, *, timeout_s: float = 5.0, memory_mb: int = 512,
                   isolation: str | None = None) -> dict:
    """Run ``code`` against ``tests`` (a plan from parse_tests, a reference answer, or a list of (code, is_test)
    units) and return what happened: passed/total, timed_out, why the solution process ended, the load error,
    the isolation features in force, and how many processes had to be swept up afterwards."""
    if isinstance(tests, dict) and tests.get("kind") in ("cases", "asserts"):
        plan_tests = tests
    elif isinstance(tests, list) and all(isinstance(u, tuple) and len(u) == 2 for u in tests):
        plan_tests = {"kind": "asserts", "units": list(tests), "entry_point": None}
    else:
        plan_tests = parse_tests(tests)
    plan = _plan(isolation)
    min_level = _min_level()
    if plan.mode == "unavailable":
        return {"reported": False, "loaded": False, "timed_out": False, "passed": 0, "answered": 0,
                "total": _count(plan_tests), "why": "isolation_unavailable", "load_error": "", "failure": plan.reason,
                "isolation": [], "level": 0, "returncode": None, "left_behind": 0, "stderr": "", "duration_s": 0.0,
                "overflow": False, "answers": {}}
    if plan_tests["kind"] == "cases":
        spec = {"kind": "cases", "entry": plan_tests["entry"], "cases": plan_tests["wire"]}
        biggest = max((len(c.get("input", "")) for c in plan_tests["cases"]), default=0)
        outcome = _execute(plan, code, spec, timeout_s, memory_mb, min_level=min_level, io=plan_tests["io"],
                           fsize=min(64 << 20, max(8 << 20, 4 * biggest + (1 << 20))))
        outcome["passed"] = sum(_judge(case, outcome["answers"].get(i), plan_tests)
                                for i, case in enumerate(plan_tests["cases"]))
        outcome["total"] = len(plan_tests["cases"])
    else:
        spec = {"kind": "asserts", "entry": plan_tests.get("entry_point"), "units": plan_tests["units"]}
        outcome = _execute(plan, code, spec, timeout_s, memory_mb, min_level=min_level)
        if not outcome["reported"]:
            outcome["total"] = _count(plan_tests)
    outcome.pop("answers", None)
    if outcome["level"] and outcome["level"] < min_level:
        outcome["why"] = "isolation_unavailable"
    return outcome


def _count(plan_tests: dict) -> int:
    if plan_tests["kind"] == "cases":
        return len(plan_tests["cases"])
    return sum(1 for _, is_test in plan_tests["units"] if is_test)


# ------------------------------------------------------------------------------------------------ handler


def _failure(sample_id: Any, reason: str, code_found: bool = False, level: int | None = None) -> dict:
    metrics = [_metric("pass_rate", 0.0, "Reward"), _metric("all_passed", 0.0), _metric("code_found", code_found),
               _metric(reason, 1.0)]
    if level is not None:
        metrics.append(_metric("isolation", level))
    return {"id": sample_id, "aggregate_reward_score": 0.0, "metrics_list": metrics}


def _prepare(sample: dict, default_timeout: float, max_timeout: float) -> tuple[str, dict, float] | dict:
    """Return (code, test plan, timeout) to run, or a finished result for a sample that cannot run."""
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
        tests = parse_tests(ref)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as exc:
        logger.warning("code_tests reward: sample %s has unusable tests: %s", _short(sample_id), _short(str(exc), 160))
        return _failure(sample_id, "error_invalid_tests")
    code = extract_code(content)
    if code is None:
        return _failure(sample_id, "no_code")
    if len(code.encode("utf-8", "surrogatepass")) > _MAX_CODE_BYTES:
        return _failure(sample_id, "error_code_too_long", code_found=True)
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _failure(sample_id, "syntax_error", code_found=True)
    timeout = metadata.get("timeout_s", ref.get("timeout_s") if isinstance(ref, dict) else None)
    timeout = min(float(timeout) if timeout is not None else default_timeout, max_timeout)
    return code, tests, timeout


_VIOLATIONS = ("violation", "output_limit", "protocol")


def _score(sample_id: Any, outcome: dict, partial_credit: bool) -> dict:
    level = outcome.get("level") or 0
    why = outcome["why"]
    if why == "isolation_unavailable":
        logger.error("code_tests reward: sample %s not run: the sandbox is weaker than CODE_TESTS_MIN_ISOLATION "
                     "(%s)", _short(sample_id), _short(outcome.get("failure") or f"level {level}", 200))
        return _failure(sample_id, "error_isolation_unavailable", code_found=True, level=level)
    if outcome["left_behind"]:
        logger.warning("code_tests reward: sample %s left %d process(es) behind; they were killed",
                       _short(sample_id), outcome["left_behind"])
    if why in _VIOLATIONS:
        logger.info("code_tests reward: sample %s scored 0: sandbox violation (%s)", _short(sample_id), why)
        return _failure(sample_id, "sandbox_violation", code_found=True, level=level)
    if not outcome["reported"]:
        reason = "timeout" if outcome["timed_out"] else "crashed"
        logger.info("code_tests reward: sample %s scored 0: %s (exit status %s)", _short(sample_id), reason,
                    outcome["returncode"])
        if outcome["stderr"] and not outcome["timed_out"]:  # bwrap or the judge itself failed: not the program
            logger.warning("code_tests reward: the sandbox of sample %s failed: %s", _short(sample_id),
                           _short(outcome["stderr"], 200))
        return _failure(sample_id, reason, code_found=True, level=level)
    if outcome["load_error"]:
        return _failure(sample_id, "solution_error", code_found=True, level=level)
    if not outcome["loaded"]:
        return _failure(sample_id, "timeout" if why == "timeout" else "crashed", code_found=True, level=level)
    total = outcome["total"]
    passed = min(max(outcome["passed"], 0), total)
    rate = passed / total if total else 0.0
    all_passed = 1.0 if total and passed == total else 0.0
    value = rate if partial_credit else all_passed
    metrics = [_metric("pass_rate", value, "Reward"), _metric("all_passed", all_passed), _metric("code_found", 1.0),
               _metric("tests_total", total), _metric("isolation", level)]
    if why == "timeout":
        metrics.append(_metric("timeout", 1.0))
    elif why == "exited":
        metrics.append(_metric("crashed", 1.0))
    return {"id": sample_id, "aggregate_reward_score": value, "metrics_list": metrics}


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
    _harden_self()

    results: list[dict | None] = [None] * len(samples)
    runnable = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            results[i] = _failure(None, "error_sample_not_an_object")
            continue
        try:
            prepared = _prepare(sample, default_timeout, max_timeout)
        except Exception as exc:  # one bad sample must never fail the batch
            logger.warning("code_tests reward: sample %s scored 0: %s", _short(sample.get("id")),
                           _short(f"{type(exc).__name__}: {exc}", 160))
            prepared = _failure(sample.get("id"), "error_invalid_sample")
        if isinstance(prepared, dict):
            results[i] = prepared
        else:
            runnable.append((i, prepared))

    def run(item: tuple[int, tuple[str, dict, float]]) -> None:
        i, (code, tests, timeout) = item
        sample_id = samples[i].get("id")
        try:
            outcome = run_in_sandbox(code, tests, timeout_s=timeout, memory_mb=memory_mb)
            results[i] = _score(sample_id, outcome, partial_credit)
        except Exception as exc:
            logger.warning("code_tests reward: sample %s could not run: %s", _short(sample_id),
                           _short(f"{type(exc).__name__}: {exc}", 160))
            results[i] = _failure(sample_id, "error_sandbox", code_found=True)

    if runnable:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(runnable)))) as pool:
            list(pool.map(run, runnable))
    return results  # type: ignore[return-value]
