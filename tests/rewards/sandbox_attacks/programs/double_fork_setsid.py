"""Outliving the run: double fork, setsid, ignore SIGTERM and sleep in the background."""
import os
import signal
import time

PARAMS = {}  # filled in by the runner

try:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(3600)
        os._exit(0)
except OSError:
    pass


def f(x):
    return -1
