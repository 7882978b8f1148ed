"""import "iter": functions over lists that take a function."""

from __future__ import annotations

from mgmt.lang.funcs.registry import define
from mgmt.lang.values import sized


def _range(count: int) -> tuple[int, ...]:
    sized(count)
    return tuple(range(count))


define(
    "iter.map",
    "func([]?1, func(?1) ?2) []?2",
    impl=lambda items, fn: tuple(fn(x) for x in items),
)
define(
    "iter.filter",
    "func([]?1, func(?1) bool) []?1",
    impl=lambda items, fn: tuple(x for x in items if fn(x)),
)
define("iter.range", "func(int) []int", impl=_range)
