"""Running other programs: subprocess, os.system, posix_spawn, execv of a shell."""
import os
import subprocess

PARAMS = {}  # filled in by the runner

cmd = f"echo pwned > {PARAMS['pwned']}-exec"
for attempt in (lambda: subprocess.run(["/bin/sh", "-c", cmd]), lambda: os.system(cmd),
                lambda: os.posix_spawn("/bin/sh", ["sh", "-c", cmd], {}), lambda: os.execv("/bin/sh", ["sh", "-c", cmd])):
    try:
        attempt()
    except OSError:
        pass


def f(x):
    return -1
