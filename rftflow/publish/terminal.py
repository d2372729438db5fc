"""The terminal's view of a running cycle (`rftflow run`, the demo): the current task and, while a trainer
runs, step n/N and the time left.

It follows the output of `airflow dags test` (the task logs, where the trainer's progress lines land; see
rftflow.backends.local.progress), so it shows the same whether the training task waits for its trainer or defers.
On a terminal it draws a live status line with `rich`; otherwise (a pipe, a file, CI) it prints plain lines:
one when a task starts and at most one progress line per `every_s` while a trainer runs.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

from rftflow.backends.local.progress import LEFT, STEP_LINE, duration

PLAIN_EVERY_S = 30.0
_STARTED = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+)")
_ENDED = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+)")
_DEFERRED = "[DAG TEST] running trigger in line"
_HITL = "Waiting for Human-in-the-loop input"
_LOADING = re.compile(r"\b(?P<kind>sft|grpo): loading the model and data")
_DONE = re.compile(r"\b(?P<kind>sft|grpo): training done at step (?P<step>\d+)/(?P<total>\d+)")
_TIMESTAMP = re.compile(r"^\S+ \[\w+\s*\] ")  # structlog's "<time> [info     ] " in front of a message
_LOGGER = re.compile(r" \[[\w.]+\]( loc=\S+)?.*$")  # "[logger] loc=file.py:12 key=value" after it


def _message(line: str) -> str:
    return _LOGGER.sub("", _TIMESTAMP.sub("", line)).strip()


class CycleProgress:
    """Feed it the new text of the run's output (`feed`); `close()` when the run ended."""

    def __init__(self, stream: TextIO | None = None, *, rich: bool | None = None, indent: str = "   ",
                 every_s: float = PLAIN_EVERY_S):
        self.stream = stream or sys.stdout
        self.indent, self.every_s = indent, every_s
        self.task: str | None = None
        self.task_started = time.monotonic()
        self.detail = ""
        self.step: tuple[int, int] | None = None
        self.left: str | None = None
        self._partial = ""
        self._last_plain = -float("inf")
        use_rich = self.stream.isatty() if rich is None else rich
        self._live: Any = None
        if use_rich:
            try:
                self._start_rich()
            except ImportError:  # rich missing: plain lines
                self._live = None

    # ------------------------------------------------------------------ rendering

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, force_terminal=True)
        self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30),
                              TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                              transient=True, refresh_per_second=4)
        self._bar = self._live.add_task("starting", total=None, detail="")
        self._live.start()

    def _say(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(self.indent + text, markup=False, highlight=False)
        else:
            print(self.indent + text, file=self.stream, flush=True)

    def _show(self) -> None:
        if self._live is None:
            return
        step = self.step
        detail = self.detail
        if step and not detail:
            detail = f"step {step[0]}/{step[1]}" + (f", left ~{self.left}" if self.left else "")
        self._live.update(self._bar, description=self.task or "starting", detail=detail,
                          total=step[1] if step else None, completed=step[0] if step else 0, refresh=True)

    # ------------------------------------------------------------------ parsing

    def feed(self, text: str) -> None:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the rest
        for line in lines:
            self._line(line)
        self._show()

    def _line(self, line: str) -> None:
        if m := _STARTED.search(line):
            self.task, self.task_started = m["task"], time.monotonic()
            self.detail, self.step, self.left = "", None, None
            self._say(f"{time.strftime('%H:%M:%S')} {self.task}")
            return
        if m := _ENDED.search(line):
            if self._live is not None and m["task"] == self.task:
                self._say(f"{time.strftime('%H:%M:%S')} {self.task} done in "
                          f"{duration(time.monotonic() - self.task_started)}")
            self.detail, self.step, self.left = "", None, None
            return
        if _DEFERRED in line:
            self.detail = "deferred: waiting for the trainer"
        elif _HITL in line:
            self.detail = "waiting for a reviewer"
        elif m := _LOADING.search(line):
            self.detail = f"{m['kind']}: loading the model and data"
        elif m := _DONE.search(line):
            self.step, self.left = (int(m["step"]), int(m["total"])), None
            self.detail = f"{m['kind']}: saving the final model"
            self._say(_message(line))
        elif m := STEP_LINE.search(line):
            self.step, self.detail = (int(m["step"]), int(m["total"])), ""
            left = LEFT.search(m["rest"])
            self.left = left["left"] if left else None
            now = time.monotonic()
            if self._live is None and now - self._last_plain >= self.every_s:
                self._say(_message(line))
                self._last_plain = now

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        if self._live is not None:
            self._live.stop()
            self._live = None


def follow(path: Any, offset: int, progress: CycleProgress) -> int:
    """Feed the text appended to `path` since `offset` into `progress`; returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return offset
    if chunk:
        progress.feed(chunk.decode("utf-8", errors="replace"))
    return offset + len(chunk)
