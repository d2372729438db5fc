"""Escaping an in-process guard: find and neutralise audit hooks, then write and delete outside the sandbox."""
import gc
import os
import sys

PARAMS = {}  # filled in by the runner

# the pre-hardening grader's audit hook was a closure reachable from here; make any such hook a no-op
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, "__name__", "") in ("hook", "audit", "_hook"):
        try:
            obj.__code__ = (lambda *a: None).__code__
        except Exception:
            pass
try:
    sys.addaudithook(lambda *a: None)
except Exception:
    pass
keep = PARAMS["keep"]
for action in (lambda: open(keep, "w").write("pwned"), lambda: os.remove(keep),
               lambda: open(PARAMS["pwned"] + "-audit", "w").write("pwned")):
    try:
        action()
    except OSError:
        pass


def f(x):
    return -1
