"""Changing the host: overwrite, append to and create files outside the working directory."""
import os

PARAMS = {}  # filled in by the runner

targets = [PARAMS["keep"], PARAMS["pwned"] + "-write", os.path.join(PARAMS["sentinel_dir"], "new.txt"),
           "/usr/pwned", os.path.expanduser("~/pwned"), "../pwned", "/etc/pwned"]
for path in targets:
    for mode in ("w", "a", "x", "r+"):
        try:
            with open(path, mode) as fh:
                fh.write("pwned")
        except OSError:
            pass
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    except OSError:
        pass


def f(x):
    return -1
