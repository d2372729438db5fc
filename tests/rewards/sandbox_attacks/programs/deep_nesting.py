"""Crashing the parsers: answers nested 100,000 deep, a 100,000-digit integer, and hand-written broken frames."""
import os

PARAMS = {}  # filled in by the runner


def f(x):
    if x % 3 == 0:
        value = []
        for _ in range(100_000):
            value = [value]
        return value
    if x % 3 == 1:
        return 10 ** 100_000
    body = b'{"v":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    os.write(4, len(body).to_bytes(4, "big") + body)
    return -1
