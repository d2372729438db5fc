"""Outliving the deadline: ignore every catchable signal and spin."""
import signal

PARAMS = {}  # filled in by the runner

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM, signal.SIGUSR1):
    signal.signal(sig, signal.SIG_IGN)


def f(x):
    while True:
        pass
