"""mgmt.spans: the ends two versions of an input have in common, found by doubling and
halving, are those a plain element-by-element walk finds."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mgmt.spans import common_ends
from tests.fuzz import fuzz_settings


def walked(a: Any, b: Any) -> tuple[int, int]:
    limit = min(len(a), len(b))
    head = 0
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail


# Long runs of one value with a few changes in them: the doubling passes the first chunk.
VERSIONS = st.tuples(
    st.integers(0, 20_000), st.lists(st.tuples(st.integers(0, 20_000), st.binary(max_size=3)))
)


def edited(length: int, edits: list[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    base = bytes(i % 251 for i in range(length))
    now = base
    for where, text in edits:
        at = min(where, len(now))
        now = now[:at] + text + now[at + 1 :]
    return base, now


@fuzz_settings()
@given(VERSIONS)
def test_bytes_ends_are_walked_ends(version: tuple[int, list[tuple[int, bytes]]]) -> None:
    base, now = edited(*version)
    assert common_ends(base, now) == walked(base, now)


@fuzz_settings()
@given(VERSIONS)
def test_tuple_ends_are_walked_ends(version: tuple[int, list[tuple[int, bytes]]]) -> None:
    base, now = edited(*version)
    assert common_ends(tuple(base), tuple(now)) == walked(base, now)


def test_the_same_object_is_equal_without_its_eq() -> None:
    calls: list[object] = []

    class Counted:
        def __eq__(self, other: object) -> bool:
            calls.append(other)
            return self is other

        __hash__ = object.__hash__

    items = tuple(Counted() for _ in range(10_000))
    assert common_ends(items, items) == (10_000, 0)
    assert common_ends(items, (*items[:5000], Counted(), *items[5001:])) == (5000, 4999)
    assert len(calls) < 50  # the new one and the old one at its place, a few times each
