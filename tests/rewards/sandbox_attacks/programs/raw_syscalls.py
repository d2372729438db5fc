"""Going around Python: raw syscalls through ctypes (fork, clone without CLONE_THREAD, clone3, vfork)."""
import ctypes
import os

PARAMS = {}  # filled in by the runner

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
machine = os.uname().machine
calls = {"x86_64": [(57,), (56, 17, 0, 0, 0, 0), (58,)], "aarch64": [(220, 17, 0, 0, 0, 0)]}.get(machine, [])
for call in [(435, 0, 0)] + calls:  # clone3 first: refused as not implemented
    pid = libc.syscall(*call)
    if pid == 0:
        open(PARAMS["pwned"] + "-raw", "w").write("pwned")
        os._exit(0)


def f(x):
    return -1
