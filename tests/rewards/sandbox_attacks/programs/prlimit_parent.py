"""Harming the grader: shrink its resource limits (no files, no memory) and renice it with prlimit/setpriority."""
import os
import resource

PARAMS = {}  # filled in by the runner

for pid in (PARAMS["grader_pid"], os.getppid()):
    for which in (resource.RLIMIT_NOFILE, resource.RLIMIT_AS, resource.RLIMIT_NPROC):
        try:
            resource.prlimit(pid, which, (0, 0))
        except (OSError, ValueError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    except OSError:
        pass


def f(x):
    return -1
