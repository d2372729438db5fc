"""Forging the verdict: find the run's nonce in memory and write forged result lines on every descriptor."""
import gc
import os
import re

PARAMS = {}  # filled in by the runner

# the pre-hardening grader trusted "<nonce> <passed> <total> <error> <violations> <detail hex>" lines on a pipe
# whose nonce sat in the job dict; look for anything nonce-like, then claim 1000 of 1 tests passed everywhere
nonces = {"0" * 32}
for obj in gc.get_objects():
    if isinstance(obj, dict):
        nonces.update(v for v in obj.values() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{32}", v))


def forge():
    for nonce in nonces:
        line = f"{nonce} 1000 1 0 0 {b'isolation='.hex()}\n".encode()
        for fd in range(0, 64):
            try:
                os.write(fd, line)
            except OSError:
                pass


forge()


def f(x):
    forge()
    os._exit(0)  # so that no genuine line follows the forged ones
