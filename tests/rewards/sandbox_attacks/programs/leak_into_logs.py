"""Smuggling data into the grader's logs: refused writes on paths carrying data, huge stderr, exception texts."""
import os
import sys

PARAMS = {}  # filled in by the runner

payload = "LEAK-" + PARAMS["secret_name"] + "-" + os.environ.get(PARAMS["secret_name"], "none")
for path in (f"/tmp/{payload}", f"/{payload}/x", f"{PARAMS['sentinel_dir']}/{payload}"):
    try:
        open(path, "w").write(payload)
    except OSError:
        pass
sys.stderr.write(("\n" + payload + "\x1b[2J\r") * 1000)


class Leak(Exception):
    def __str__(self):
        return payload * 100


def f(x):
    raise Leak(payload)
