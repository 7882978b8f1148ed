"""import "list"."""

from __future__ import annotations

from typing import Any

from mgmt.lang import ast
from mgmt.lang.funcs.registry import Typer, define, fail
from mgmt.lang.types import TList, TVar, Type
from mgmt.lang.values import sized, sort_key


def _first(items: tuple[Any, ...]) -> Any:
    if not items:
        raise fail("list.first: the list is empty")
    return items[0]


def _last(items: tuple[Any, ...]) -> Any:
    if not items:
        raise fail("list.last: the list is empty")
    return items[-1]


def _type_concat(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """list.concat(a, b, ...): one or more lists of one element type."""
    if not args:
        raise typer.abort(e.pos, "list.concat: expected at least 1 argument, got 0")
    result = TList(TVar())
    for index, t in enumerate(args):
        typer.expect(t, result, e.args[index].pos, f"argument {index + 1} of list.concat")
    return result


def _concat(*lists: tuple[Any, ...]) -> tuple[Any, ...]:
    sized(sum(len(items) for items in lists))
    return tuple(item for items in lists for item in items)


def _lookup(items: tuple[Any, ...], index: int, *default: Any) -> Any:
    """list.lookup(list, index[, default]): without a default, a missing index is an error
    (which `<|>` can replace)."""
    if 0 <= index < len(items):
        return items[index]
    if default:
        return default[0]
    if index < 0:
        raise fail(f"list index was negative, got: {index}")
    raise fail(f"list index not present, got: {index}, len is: {len(items)}")


def _lookup_default(items: tuple[Any, ...], index: int, default: Any) -> Any:
    return items[index] if 0 <= index < len(items) else default


define(
    "list.concat",
    "func([]?1, []?1) []?1",
    typing=_type_concat,
    impl=_concat,
    doc="one or more lists (of one type), in order",
)
define("list.contains", "func([]?1, ?1) bool", impl=lambda items, x: x in items)
define("list.len", "func([]?1) int", impl=len)
define("list.first", "func([]?1) ?1", impl=_first)
define("list.last", "func([]?1) ?1", impl=_last)
define("list.reverse", "func([]?1) []?1", impl=lambda items: tuple(reversed(items)))
define("list.sort", "func([]?1) []?1", impl=lambda items: tuple(sorted(items, key=sort_key)))
define("list.uniq", "func([]?1) []?1", impl=lambda items: tuple(dict.fromkeys(items)))
define("list.lookup_default", "func([]?1, int, ?1) ?1", impl=_lookup_default)
define("list.lookup", "func([]?1, int) ?1", "func([]?1, int, ?1) ?1", impl=_lookup)
