"""Changing the host: delete, rename and rmtree files and folders outside the working directory."""
import os
import shutil

PARAMS = {}  # filled in by the runner

keep, folder = PARAMS["keep"], PARAMS["sentinel_dir"]
for action in (lambda: os.remove(keep), lambda: os.rename(keep, keep + ".moved"), lambda: os.unlink(keep),
               lambda: shutil.rmtree(folder), lambda: os.rmdir(folder), lambda: os.truncate(keep, 0)):
    try:
        action()
    except OSError:
        pass


def f(x):
    return -1
