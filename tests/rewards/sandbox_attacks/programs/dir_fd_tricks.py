"""Changing the host: the *at() calls with directory descriptors, symlinks and hard links to reach outside."""
import os

PARAMS = {}  # filled in by the runner

keep = PARAMS["keep"]
folder, name = os.path.split(keep)
attempts = []
try:
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    attempts += [lambda: os.unlink(keep.lstrip("/"), dir_fd=root),
                 lambda: os.close(os.open(keep.lstrip("/"), os.O_WRONLY | os.O_TRUNC, dir_fd=root)),
                 lambda: os.rename(keep.lstrip("/"), "tmp/moved", src_dir_fd=root, dst_dir_fd=root)]
except OSError:
    pass
try:
    parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    attempts += [lambda: os.unlink(name, dir_fd=parent),
                 lambda: os.close(os.open(name, os.O_RDWR | os.O_APPEND, dir_fd=parent)),
                 lambda: os.mkdir("pwned", dir_fd=parent),
                 lambda: os.symlink("/etc/passwd", "pwned-link", dir_fd=parent)]
except OSError:
    pass
attempts += [lambda: os.symlink(keep, "link"), lambda: open("link", "w").write("pwned"),
             lambda: os.link(keep, "hard"), lambda: open("hard", "w").write("pwned"),
             lambda: os.chmod(keep, 0o777), lambda: os.utime(keep, (0, 0))]
for attempt in attempts:
    try:
        attempt()
    except OSError:
        pass


def f(x):
    return -1
