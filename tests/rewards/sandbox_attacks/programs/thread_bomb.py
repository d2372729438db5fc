"""Exhausting the host: start threads until refused, each sleeping, and keep them alive past the answer."""
import threading
import time

PARAMS = {}  # filled in by the runner

started = 0
for _ in range(100000):
    try:
        threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
        started += 1
    except RuntimeError:
        break


def f(x):
    return -1
