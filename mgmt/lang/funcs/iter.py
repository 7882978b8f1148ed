"""import "iter": functions over lists (most take a function)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import sized


def _range(*args: int) -> tuple[int, ...]:
    """range(stop), range(start, stop), range(start, stop, step): as Python's and mgmt's."""
    if len(args) == 3 and args[2] == 0:
        raise fail("the step cannot be 0")
    numbers = range(*args)
    sized(len(numbers))
    return tuple(numbers)


def _reduce(*args: Any) -> Any:
    """reduce(list, fn) or reduce(initial, list, fn): a left fold; an empty list without an
    initial value is an error."""
    if len(args) == 2:
        items, fn = args
        if not items:
            raise fail("cannot reduce an empty list without an initial value")
        acc, rest = items[0], items[1:]
    else:
        acc, rest, fn = args
    for item in rest:
        acc = fn(acc, item)
    return acc


def _zip(a: tuple[Any, ...], b: tuple[Any, ...], fn: Callable[[Any, Any], Any]) -> Any:
    """fn applied to the pairs, as long as the shorter list."""
    return tuple(fn(x, y) for x, y in zip(a, b, strict=False))


def _flatten(lists: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    sized(sum(len(items) for items in lists))
    return tuple(item for items in lists for item in items)


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
define(
    "iter.range",
    "func(int) []int",
    "func(int, int) []int",
    "func(int, int, int) []int",
    impl=_range,
    doc="(stop), (start, stop) or (start, stop, step)",
)
define(
    "iter.reduce",
    "func([]?1, func(?1, ?1) ?1) ?1",
    "func(?1, []?1, func(?1, ?1) ?1) ?1",
    impl=_reduce,
    doc="left fold, from the first element or from an initial value",
)
define("iter.zip", "func([]?1, []?2, func(?1, ?2) ?3) []?3", impl=_zip, doc="to the shorter")
define("iter.flatten", "func([][]?1) []?1", impl=_flatten)
