"""Forging the comparison: return objects that claim to equal anything (and an int subclass doing the same)."""

PARAMS = {}  # filled in by the runner


class Anything:
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __hash__(self):
        return 0

    def __bool__(self):
        return True


class LyingInt(int):
    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = int.__hash__


def f(x):
    return Anything() if x % 2 else LyingInt(-1)
