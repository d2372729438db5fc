"""Exhausting the host: allocate 10 GB at once, then grow a list until refused."""

PARAMS = {}  # filled in by the runner

try:
    blob = bytearray(10 * 1024 ** 3)
except MemoryError:
    blob = None
hog = []
try:
    while True:
        hog.append(bytearray(64 << 20))
except MemoryError:
    hog = None


def f(x):
    return -1
