"""Exhausting the grader: answer with a 200 MB string, a list of ten million items and a frame header of 4 GB."""
import os

PARAMS = {}  # filled in by the runner


def f(x):
    if x % 3 == 0:
        return "x" * (200 << 20)
    if x % 3 == 1:
        return list(range(10_000_000))
    os.write(4, (0xFFFFFFFF).to_bytes(4, "big") + b"x" * 1000)
    return -1
