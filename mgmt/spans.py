"""What two versions of a big input have in common at their ends, found at memcmp speed: a
graph file's bytes (yamlreparse.reparse) or a program's output (lang.source.Output), where an
edit changes a few items in the middle and the front-end redoes only those (issue 16).

Each is searched by lengths that double while the ends match, then halved: each element is
compared about twice, in C (no Python step per element).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_FIRST = 4096  # elements compared at first


def common_length(same: Callable[[int, int], bool], limit: int) -> int:
    """The largest n <= limit with same(0, n), given same(lo, hi): whether elements lo..hi of
    the two ends match (called with lo at a length known to match)."""
    lo, step = 0, _FIRST
    hi = min(step, limit)
    while lo < limit and same(lo, hi):  # doubling while they match
        lo, step = hi, step * 2
        hi = min(lo + step, limit)
    while lo < hi:  # same(0, lo); the first difference is before hi
        mid = (lo + hi + 1) // 2
        if same(lo, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_ends(a: bytes | Sequence[Any], b: bytes | Sequence[Any]) -> tuple[int, int]:
    """(head, tail): how many elements `a` and `b` have in common at their start, and then at
    their end (the two never overlap: head + tail <= the shorter length). Bytes are compared in
    place (a memoryview's slice is no copy; startswith compares with memcmp); other sequences
    (tuples) by their slices' ==, which takes an element as equal when it is the same object
    without calling its __eq__."""
    limit = min(len(a), len(b))
    la, lb = len(a), len(b)
    if isinstance(a, bytes) and isinstance(b, bytes):
        view = memoryview(b)
        head = common_length(lambda lo, hi: a.startswith(view[lo:hi], lo), limit)
        tail = common_length(
            lambda lo, hi: a.endswith(view[lb - hi : lb - lo], 0, la - lo), limit - head
        )
        return head, tail
    head = common_length(lambda lo, hi: a[lo:hi] == b[lo:hi], limit)
    tail = common_length(lambda lo, hi: a[la - hi : la - lo] == b[lb - hi : lb - lo], limit - head)
    return head, tail
