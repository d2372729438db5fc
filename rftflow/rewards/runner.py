"""The local reward runner: loading built-in or user handler files, and ``score``, which sends batches of up to
128 samples to a handler in-process or in a worker pool, with a timeout. The contract the handler keeps (samples,
results, the output validator) is rftflow.rewards.contract.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import json
import multiprocessing
import os
import re
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import ModuleType
from typing import Any

from rftflow.rewards.contract import (
    MAX_BATCH,
    RewardContractError,
    RewardError,
    RewardLoadError,
    RewardResult,
    RewardTimeoutError,
    validate_output,
    validate_samples,
)

HANDLER = "lambda_handler"
_BUILTIN_FILES = {
    "numeric": "numeric.py",
    "exact_match": "exact_match.py",
    "code_tests": "code_tests.py",
    "llm_judge": "llm_judge.py",
    "shaping": "shaping.py",
}
_SHAPED = "shaped_"  # shaped_<builtin>: shaping.py around that built-in (e.g. shaped_numeric)
_module_counter = itertools.count(1)



# ------------------------------------------------------------------------------------------------ loading


def builtin_dir() -> Path:
    """Where the built-in handlers live (include/rewards/ in the project)."""
    return Path(__file__).resolve().parents[2] / "include" / "rewards"


def builtin_names() -> list[str]:
    names = list(_BUILTIN_FILES)
    names += [_SHAPED + n for n in _BUILTIN_FILES if n != "shaping"]
    return names


@dataclass
class LocalLambdaContext:
    """The parts of the Lambda context object handlers commonly use."""

    function_name: str
    deadline: float | None = None
    aws_request_id: str = ""
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:rftflow-local"

    def get_remaining_time_in_millis(self) -> int:
        if self.deadline is None:
            return 900_000
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _error_line(exc: BaseException, path: Path) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        return exc.lineno
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return line


def _load_handler(path: str, handler: str, settings: dict[str, Any]) -> tuple[ModuleType, Callable]:
    """Import a handler file as its own module (a unique name, so two loads never share state)."""
    file = Path(path)
    stem = re.sub(r"\W", "_", file.stem)
    name = f"rftflow_reward_{stem}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RewardLoadError(f"{file}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        line = _error_line(exc, file)
        where = f"{file}:{line}" if line else str(file)
        raise RewardLoadError(f"{where}: importing the reward handler failed: {type(exc).__name__}: {exc}") from exc
    for key, value in settings.items():
        setattr(module, key, value)
    fn = getattr(module, handler, None)
    if not callable(fn):
        defined = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", None) == name]
        hint = f"; it defines {', '.join(defined[:8])}" if defined else ""
        raise RewardLoadError(f"{file}: no function {handler}(event, context){hint}")
    return module, fn


class RewardFunction:
    """A loaded reward handler: call it with a list of samples to get validated RewardResults."""

    def __init__(self, name: str, path: str, *, handler: str = HANDLER, settings: dict[str, Any] | None = None):
        self.name = name
        self.path = str(path)
        self.handler = handler
        self.settings = dict(settings or {})
        self.module, self._fn = _load_handler(self.path, handler, self.settings)
        self._pool: _WorkerPool | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RewardFunction(name={self.name!r}, path={self.path!r}, handler={self.handler!r})"

    def invoke(self, samples: list[dict] | str, *, timeout_s: float | None = None) -> Any:
        """Call the handler as Lambda would: a JSON copy of the batch in, JSON-serialisable output back.

        ``samples`` may already be the JSON text of the batch.
        """
        payload = json.loads(samples if isinstance(samples, str) else encode_batch(samples))
        context = LocalLambdaContext(self.name, time.monotonic() + timeout_s if timeout_s else None,
                                     uuid.uuid4().hex)
        return _json_roundtrip(self._fn(payload, context), self)

    def __call__(self, samples: list[dict]) -> list[RewardResult]:
        return validate_output(samples, self.invoke(samples))

    def pool(self, workers: int) -> _WorkerPool:
        """A worker pool of this size, started once and reused across calls (restarted after a timeout)."""
        with self._pool_lock:
            if self._pool is None or not self._pool.usable(workers):
                if self._pool is not None:
                    self._pool.close()
                self._pool = _WorkerPool(self, workers)
            return self._pool

    def close(self) -> None:
        """Stop the worker pool, if any."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def encode_batch(samples: Sequence[dict]) -> str:
    """The JSON text a Lambda would receive for these samples."""
    try:
        return json.dumps(list(samples), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise RewardContractError("samples are not JSON-serialisable (a reward Lambda receives JSON)",
                                  [str(exc)]) from exc


def _json_roundtrip(raw: Any, reward: RewardFunction) -> Any:
    try:
        return json.loads(json.dumps(raw))
    except (TypeError, ValueError) as exc:
        raise RewardError(f"reward {reward.name!r} ({reward.path}): output is not JSON-serialisable, so Lambda "
                          f"could not return it: {exc}") from exc


def load_reward(spec: str) -> RewardFunction:
    """A built-in reward by name (numeric, exact_match, code_tests, llm_judge, shaping, shaped_<name>) or a
    handler file path, optionally ``path.py:function`` (default function: lambda_handler)."""
    spec = str(spec).strip()
    if spec in _BUILTIN_FILES:
        return RewardFunction(spec, str(builtin_dir() / _BUILTIN_FILES[spec]))
    if spec.startswith(_SHAPED) and spec[len(_SHAPED):] in _BUILTIN_FILES and spec != _SHAPED + "shaping":
        return RewardFunction(spec, str(builtin_dir() / "shaping.py"), settings={"INNER_REWARD": spec[len(_SHAPED):]})
    path_text, handler = spec, HANDLER
    if spec.startswith("file://"):
        path_text = spec[len("file://"):]
    m = re.match(r"^(.*\.py):([A-Za-z_]\w*)$", path_text)
    if m:
        path_text, handler = m.group(1), m.group(2)
    looks_like_path = path_text.endswith(".py") or "/" in path_text or os.sep in path_text
    if not looks_like_path:
        close = difflib.get_close_matches(spec, builtin_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RewardLoadError(f"unknown reward {spec!r}{hint}: expected one of {', '.join(builtin_names())} "
                              "or a path to a handler .py file")
    path = Path(path_text).expanduser()
    if not path.is_file():
        what = "is a directory, not a handler .py file" if path.is_dir() else "does not exist"
        raise RewardLoadError(f"reward handler file {path} {what}")
    name = path.stem if handler == HANDLER else f"{path.stem}:{handler}"
    return RewardFunction(name, str(path.resolve()), handler=handler)


# ------------------------------------------------------------------------------------------------ running


def _worker_main(conn: Connection, path: str, handler: str, settings: dict[str, Any], name: str) -> None:
    """Worker process: load the handler once, then answer batches until told to stop."""
    try:
        _, fn = _load_handler(path, handler, settings)
    except Exception as exc:
        conn.send(("load_error", -1, str(exc)))
        return
    conn.send(("ready", -1, ""))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, payload, timeout_s = message
        context = LocalLambdaContext(name, time.monotonic() + timeout_s, uuid.uuid4().hex)
        try:
            raw = fn(json.loads(payload), context)
        except SystemExit as exc:
            conn.send(("error", index, f"the handler exited with sys.exit({exc.code!r}) instead of returning its "
                                       f"results:\n{traceback.format_exc()}"))
            continue
        except BaseException:
            conn.send(("error", index, traceback.format_exc()))
            continue
        try:
            conn.send(("ok", index, json.dumps(raw)))
        except (TypeError, ValueError) as exc:
            conn.send(("unserialisable", index, str(exc)))


class _WorkerPool:
    """Spawned worker processes, each with the handler loaded, fed one batch at a time over a pipe.

    Unlike a ProcessPoolExecutor, a worker that overruns its timeout can be killed outright.
    """

    def __init__(self, reward: RewardFunction, workers: int, start_timeout_s: float = 120.0):
        self.reward = reward
        self.size = workers
        self.broken = False
        ctx = multiprocessing.get_context("spawn")
        self._run_lock = threading.Lock()
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, daemon=True, name=f"rftflow-reward-{reward.name}",
                               args=(child, reward.path, reward.handler, reward.settings, reward.name))
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        self._finalizer = weakref.finalize(self, _stop_workers, list(self.procs), list(self.conns))
        deadline = time.monotonic() + start_timeout_s
        for conn, proc in zip(self.conns, self.procs, strict=True):
            remaining = deadline - time.monotonic()
            if not conn.poll(max(0.0, remaining)):
                self.close()
                raise RewardTimeoutError(f"reward {reward.name!r}: a worker did not start within "
                                         f"{start_timeout_s:g}s")
            try:
                kind, _, text = conn.recv()
            except EOFError:
                self.close()
                raise RewardError(f"reward {reward.name!r}: a worker exited while starting "
                                  f"(exit code {proc.exitcode})") from None
            if kind == "load_error":
                self.close()
                raise RewardLoadError(text)

    def usable(self, workers: int) -> bool:
        return not self.broken and self.size == workers and all(p.is_alive() for p in self.procs)

    def close(self) -> None:
        self.broken = True
        self._finalizer()

    def run(self, batches: list[list[dict]], payloads: list[str], timeout_s: float) -> list[Any]:
        """Raw outputs, one per batch (sent as its JSON payload); kills the pool and raises on a timeout or a
        crashed worker."""
        with self._run_lock:
            return self._run(batches, payloads, timeout_s)

    def _run(self, batches: list[list[dict]], payloads: list[str], timeout_s: float) -> list[Any]:
        outputs: list[Any] = [None] * len(batches)
        pending = list(range(len(batches)))[::-1]
        busy: dict[int, tuple[int, float]] = {}  # worker -> (batch, deadline)
        idle = list(range(self.size))
        try:
            while pending or busy:
                while pending and idle:
                    w, b = idle.pop(), pending.pop()
                    self.conns[w].send((b, payloads[b], timeout_s))
                    busy[w] = (b, time.monotonic() + timeout_s)
                soonest = min(deadline for _, deadline in busy.values())
                ready = wait([self.conns[w] for w in busy], timeout=max(0.0, soonest - time.monotonic()))
                if not ready:
                    now = time.monotonic()
                    late = next(b for b, deadline in busy.values() if deadline <= now + 1e-3)
                    raise RewardTimeoutError(
                        f"reward {self.reward.name!r} ({self.reward.path}) did not return within {timeout_s:g}s "
                        f"for {_describe_batch(batches, late)}; its worker was stopped. Look for a hang in the "
                        "handler or raise the timeout.")
                for w in [w for w in busy if self.conns[w] in ready]:
                    b, _ = busy.pop(w)
                    try:
                        kind, _, text = self.conns[w].recv()
                    except (EOFError, OSError):
                        self.procs[w].join(1)
                        raise RewardError(
                            f"reward {self.reward.name!r}: its worker died while scoring {_describe_batch(batches, b)}"
                            f" (exit code {self.procs[w].exitcode}; -9 often means it ran out of memory)") from None
                    if kind == "error":
                        raise RewardError(f"reward {self.reward.name!r} ({self.reward.path}) raised while scoring "
                                          f"{_describe_batch(batches, b)}:\n{text.rstrip()}")
                    if kind == "unserialisable":
                        raise RewardError(f"reward {self.reward.name!r} ({self.reward.path}): output for "
                                          f"{_describe_batch(batches, b)} is not JSON-serialisable, so Lambda "
                                          f"could not return it: {text}")
                    outputs[b] = json.loads(text)
                    idle.append(w)
        except BaseException:
            self.close()
            raise
        return outputs


def _stop_workers(procs: list[Any], conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    for conn in conns:
        conn.close()


def _describe_batch(batches: list[list[dict]], b: int) -> str:
    batch = batches[b]
    start = sum(len(x) for x in batches[:b])
    ids = f"ids {batch[0].get('id')!r}..{batch[-1].get('id')!r}" if batch else "no samples"
    return f"batch {b + 1}/{len(batches)} (samples {start}-{start + len(batch) - 1}, {ids})"


def _handler_failure(exc: BaseException, path: str) -> str:
    """What a handler did instead of returning, and where in its file: ``raised KeyError: 'x' (at
    /path/my_reward.py:3, in lambda_handler: raise KeyError('x'))``."""
    if isinstance(exc, SystemExit):
        call = getattr(exc, "call", None) or f"sys.exit({exc.code!r})"
        text = (f"exited with {call} instead of returning its results (on Lambda the invocation would fail with "
                "no scores)")
    else:
        text = f"raised {type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno}, in {last.name}" + (f": {last.line}" if last.line else "") + ")"
    return text


def _call_in_thread(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="rftflow-reward")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RewardTimeoutError(f"{what} did not return within {timeout_s:g}s (in-process: the call is left "
                                 "running in a background thread; use workers >= 1 to have hung handlers stopped)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def score(reward: RewardFunction | str, samples: Sequence[dict], *, workers: int = 0, timeout_s: float = 60,
          batch_size: int = MAX_BATCH, strict: bool = False, bounds: tuple[float, float] | None = None,
          warnings: list[str] | None = None) -> list[RewardResult]:
    """Score samples through a handler in batches of ``batch_size`` (the services send up to 128).

    ``workers`` = 0 runs in this process (a hung call raises after ``timeout_s`` but its thread lingers; a call
    to sys.exit() is an error naming the handler's file and line); ``workers`` >= 1 uses that many spawned
    processes, kept for later calls, and kills one that overruns (a worker that exits or is killed is an error).
    Results come back in the samples' order; any contract breach raises RewardContractError. ``strict``,
    ``bounds`` and ``warnings`` are passed to validate_output for every batch.
    """
    if isinstance(reward, str):
        reward = load_reward(reward)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    samples = list(samples)
    validate_samples(samples)
    batches = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    payloads = [encode_batch(batch) for batch in batches]
    if workers <= 0:
        raws = []
        for b in range(len(batches)):
            what = f"reward {reward.name!r} ({reward.path}) on {_describe_batch(batches, b)}"
            try:
                if timeout_s and timeout_s > 0:
                    raws.append(_call_in_thread(lambda p=payloads[b]: reward.invoke(p, timeout_s=timeout_s),
                                                timeout_s, what))
                else:
                    raws.append(reward.invoke(payloads[b]))
            except RewardError:
                raise
            except (Exception, SystemExit) as exc:  # SystemExit: a handler calling sys.exit() (or exit())
                raise RewardError(f"{what} {_handler_failure(exc, reward.path)}") from exc
    else:
        raws = reward.pool(workers).run(batches, payloads, timeout_s) if batches else []
    results: list[RewardResult] = []
    for b, (batch, raw) in enumerate(zip(batches, raws, strict=True)):
        try:
            results += validate_output(batch, raw, strict=strict, bounds=bounds, warnings=warnings)
        except RewardContractError as exc:
            raise RewardContractError(f"reward {reward.name!r} ({reward.path}), {_describe_batch(batches, b)}: "
                                      f"{exc.summary}", exc.problems) from None
    return results
