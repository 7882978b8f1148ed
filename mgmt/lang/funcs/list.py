"""import "list"."""

from __future__ import annotations

from typing import Any

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import sort_key


def _first(items: tuple[Any, ...]) -> Any:
    if not items:
        raise fail("list.first: the list is empty")
    return items[0]


def _last(items: tuple[Any, ...]) -> Any:
    if not items:
        raise fail("list.last: the list is empty")
    return items[-1]


def _lookup_default(items: tuple[Any, ...], index: int, default: Any) -> Any:
    return items[index] if 0 <= index < len(items) else default


define("list.concat", "func([]?1, []?1) []?1", impl=lambda a, b: a + b)
define("list.contains", "func([]?1, ?1) bool", impl=lambda items, x: x in items)
define("list.len", "func([]?1) int", impl=len)
define("list.first", "func([]?1) ?1", impl=_first)
define("list.last", "func([]?1) ?1", impl=_last)
define("list.reverse", "func([]?1) []?1", impl=lambda items: tuple(reversed(items)))
define("list.sort", "func([]?1) []?1", impl=lambda items: tuple(sorted(items, key=sort_key)))
define("list.uniq", "func([]?1) []?1", impl=lambda items: tuple(dict.fromkeys(items)))
define("list.lookup_default", "func([]?1, int, ?1) ?1", impl=_lookup_default)
