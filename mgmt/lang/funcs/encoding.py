"""import "encoding": JSON decoding.

decode_json(data[, type]) reads JSON as an mcl value of the type given as a constant string
("struct{hello int;}", "map{str: int}"), or, without one, of the type the program's use of
the result implies (a JSON object is then a map). decode_json_flexible is the same, but a
struct field the data lacks gets its zero value instead of being an error."""

from __future__ import annotations

import json
from typing import Any

from mgmt.lang import ast
from mgmt.lang.funcs.registry import Typer, define, fail
from mgmt.lang.types import BOOL, FLOAT, INT, STR, TList, TMap, TStruct, TVar, Type, parse_type
from mgmt.lang.values import FrozenDict, Struct, int64


def _type_decode(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    name = e.func or "encoding.decode_json"
    if len(args) not in (1, 2):
        raise typer.abort(e.pos, f"{name}: expected 1 or 2 arguments, got {len(args)}")
    for index, t in enumerate(args):
        typer.expect(t, STR, e.args[index].pos, f"argument {index + 1} of {name}")
    if len(args) == 2:
        spec = e.args[1]
        if not isinstance(spec, ast.Lit) or not isinstance(spec.value, str):
            raise typer.abort(spec.pos, f"{name}: the type must be a constant string")
        try:
            return parse_type(spec.value)
        except ValueError as err:
            raise typer.abort(spec.pos, f"{name}: {err}") from None
    return TVar()


def zero(t: Type | None) -> Any:
    """The zero value of a type (what Go's json leaves in a field the data lacks)."""
    if t == BOOL:
        return False
    if t == INT:
        return 0
    if t == FLOAT:
        return 0.0
    if t == STR:
        return ""
    if isinstance(t, TList):
        return ()
    if isinstance(t, TStruct):
        return Struct((n, zero(ft)) for n, ft in t.fields)
    return FrozenDict()


def from_json(value: Any, t: Type | None, flexible: bool, where: str = "value") -> Any:
    """JSON data as an mcl value of type t (None or a variable: as the data says)."""
    if t is None or isinstance(t, TVar):
        return _plain(value)
    if t == BOOL and isinstance(value, bool):
        return value
    if t == INT and isinstance(value, int) and not isinstance(value, bool):
        return int64(value)
    if t == FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if t == STR and isinstance(value, str):
        return value
    if isinstance(t, TList) and isinstance(value, list):
        return tuple(from_json(v, t.elem, flexible, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(t, TMap) and isinstance(value, dict):
        return FrozenDict(
            (from_json(_key(k, t.key), t.key, flexible, where), from_json(v, t.val, flexible, k))
            for k, v in value.items()
        )
    if isinstance(t, TStruct) and isinstance(value, dict):
        fields = []
        for name, ft in t.fields:
            if name in value:
                fields.append((name, from_json(value[name], ft, flexible, name)))
            elif flexible:
                fields.append((name, zero(ft)))
            else:
                raise fail(f"{where}: the data has no field {name!r}")
        return Struct(fields)
    raise fail(f"{where}: expected {t}, got {json.dumps(value)[:60]}")


def _key(key: str, t: Type) -> Any:
    if t == INT:
        try:
            return int(key)
        except ValueError:
            raise fail(f"map key {key!r} is not an int") from None
    return key


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return FrozenDict((k, _plain(v)) for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return int64(value)
    return value


def _decode(flexible: bool) -> Any:
    def decode(data: str, spec: str | None = None) -> Any:
        try:
            value = json.loads(data, parse_constant=_no_constant)
        except ValueError as err:
            raise fail(f"invalid JSON: {err}") from None
        return from_json(value, parse_type(spec) if spec is not None else None, flexible)

    return decode


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


define(
    "encoding.decode_json",
    "func(str) ?1",
    "func(str, str) ?1",
    typing=_type_decode,
    impl=_decode(False),
    doc="JSON as the type given (a constant string) or inferred",
)
define(
    "encoding.decode_json_flexible",
    "func(str) ?1",
    "func(str, str) ?1",
    typing=_type_decode,
    impl=_decode(True),
    doc="as decode_json; a missing struct field is its zero value",
)
