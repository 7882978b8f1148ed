"""Core functions: no import needed (len, contains, history, delayed, debounce, template, random1,
structlookup)."""

from __future__ import annotations

from typing import Any

from mgmt.lang import ast, streams
from mgmt.lang.funcs.golang import golang_template, type_template
from mgmt.lang.funcs.registry import Typer, define
from mgmt.lang.types import Type
from mgmt.lang.values import go_len


def _contains(needle: Any, haystack: Any) -> bool:
    return needle in haystack


define("len", "func(str) int", "func([]?1) int", "func(map{?1: ?2}) int", impl=go_len)
define("contains", "func(?1, []?1) bool", impl=_contains, doc="needle in a list")
define("history", "func(?1, int) ?1", stream=streams.History, doc="the value n values ago")
define("delayed", "func(?1, int) ?1", stream=streams.Delayed, doc="the value ms ago")
define("debounce", "func(?1, int) ?1", stream=streams.Debounce)
define(
    "template",
    "func(str, ?1) str",
    typing=type_template,
    impl=golang_template,
    doc="mgmt's older name",
)
define("random1", "func(int) str", stream=streams.Random, doc="a random string, drawn once")


def _type_structlookup(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    if len(args) != 2 or not (isinstance(e.args[1], ast.Lit) and isinstance(e.args[1].value, str)):
        raise typer.abort(e.pos, 'structlookup(struct, "field"): the field must be a constant')
    return typer.has_field(e.pos, args[0], e.args[1].value)


define(
    "structlookup",
    "func(?1, str) ?2",
    typing=_type_structlookup,
    impl=lambda struct, name: struct[name],
    doc="a struct's field by its (constant) name: $s->name",
)
