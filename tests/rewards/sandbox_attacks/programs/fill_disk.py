"""Exhausting the host: fill the working directory, /dev/shm and /tmp with files until something gives."""
import os

PARAMS = {}  # filled in by the runner

block = b"x" * (1 << 20)
for where in (".", "/dev/shm", "/tmp", PARAMS["sentinel_dir"]):
    for i in range(200):
        try:
            with open(os.path.join(where, f"fill-{os.getpid()}-{i}"), "wb") as fh:
                for _ in range(64):
                    fh.write(block)
        except OSError:
            break


def f(x):
    return -1
