"""Resource kinds as the language sees them: each registered kind's params, typed from hints.

`str` -> str, `int` -> int, `float` -> float (an int is accepted too), `bool` -> bool,
`Literal["a", "b"]` -> str (a constant is checked at compile time), `list[X]` -> []X,
`bool | int | str` (a union of scalars) -> any one of them,
`dict[str, X]` -> map{str: X}, `X | None` -> X (leaving a param out means None), `Any` -> a
value of any type, a dataclass -> a struct of its fields in their order (as mgmt's Go structs:
every field given). Params of other types cannot be set from the language (a clear error says
so).
"""

from __future__ import annotations

import dataclasses
import types as pytypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from engine.meta import Meta, check_name
from engine.params import build, hints, key_of
from engine.resource import Resource, lookup
from mgmt.lang.types import BOOL, FLOAT, INT, STR, TList, TMap, TStruct, TVar, Type

# A resource named "@@name" is exported only (as in graph files), not applied here.
EXPORT_PREFIX = "@@"


@dataclass(frozen=True)
class ParamType:
    # The param's type in the language, or None if the language cannot express it.
    type: Type | None
    # For Literal hints: the accepted constants.
    choices: tuple[Any, ...] = ()
    # A float param: an int is accepted and converted.
    numeric: bool = False
    # Why the type cannot be expressed (when type is None).
    why: str = ""
    # A union of scalars (e.g. `bool | int | str`, gsettings' value): any one of these types
    # (then `type` is the first).
    alternatives: tuple[Type, ...] = ()
    # A param hinted `Any` (value's `any`): a value of any type is accepted.
    any: bool = False


def mcl_type(hint: Any) -> ParamType:
    """The language type of one dataclass field hint."""
    if hint is Any:
        return ParamType(TVar(), any=True)
    origin = get_origin(hint)
    if origin in (Union, pytypes.UnionType):
        members = [m for m in get_args(hint) if m is not type(None)]
        if set(members) == {int, float}:
            return ParamType(FLOAT, numeric=True)
        if len(members) == 1:
            return mcl_type(members[0])
        scalars = {bool: BOOL, int: INT, float: FLOAT, str: STR}
        if all(m in scalars for m in members):
            alternatives = tuple(scalars[m] for m in members)
            return ParamType(alternatives[0], alternatives=alternatives)
        return ParamType(None, why=f"a union {hint}")
    if hint is str:
        return ParamType(STR)
    if hint is bool:
        return ParamType(BOOL)
    if hint is int:
        return ParamType(INT)
    if hint is float:
        return ParamType(FLOAT, numeric=True)
    if origin is Literal:
        choices = get_args(hint)
        if all(isinstance(c, str) for c in choices):
            return ParamType(STR, choices=choices)
        return ParamType(None, why=f"{hint}")
    if origin is list:
        inner = mcl_type(get_args(hint)[0])
        return ParamType(TList(inner.type), why=inner.why) if inner.type else inner
    if origin is dict:
        key, val = get_args(hint)
        inner = mcl_type(val)
        if key is str and inner.type is not None:
            return ParamType(TMap(STR, inner.type))
        return ParamType(None, why=f"{hint}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _struct_type(hint)
    return ParamType(None, why=f"{hint}")


def _struct_type(cls: type) -> ParamType:
    """A dataclass (a device of virt, its auth...) as a struct of its fields, in their order."""
    table = hints(cls)
    fields: list[tuple[str, Type]] = []
    for f in dataclasses.fields(cls):
        inner = mcl_type(table[f.name])
        if inner.type is None or inner.alternatives or inner.any or inner.numeric:
            return ParamType(None, why=f"{cls.__name__}.{f.name}: {inner.why or table[f.name]}")
        fields.append((f.name, inner.type))
    return ParamType(TStruct(tuple(fields)))


_PARAMS: dict[type, dict[str, ParamType]] = {}


def params_of(cls: type) -> dict[str, ParamType]:
    """Every settable param of a kind (or of Meta), without name and meta (cached)."""
    if cls in _PARAMS:
        return _PARAMS[cls]
    table = hints(cls)
    _PARAMS[cls] = {
        key_of(f): mcl_type(table[f.name])
        for f in dataclasses.fields(cls)
        if f.init and f.name not in ("name", "meta")
    }
    return _PARAMS[cls]


def kind_params(kind: str) -> dict[str, ParamType] | None:
    cls = lookup(kind)
    return None if cls is None else params_of(cls)


def meta_params() -> dict[str, ParamType]:
    return params_of(Meta)


def sends(kind: str) -> tuple[str, ...]:
    """The names of the values a kind publishes for send/recv edges (its SENDS)."""
    cls: type[Resource] | None = lookup(kind)
    return tuple(cls.SENDS) if cls is not None else ()


def build_resource(
    cls: type[Resource], name: str, params: Mapping[str, Any], meta: Mapping[str, Any]
) -> Resource:
    """A resource of kind `cls` from plain values, validated by its kind (ValidationError
    names the bad key: `param`, or `Meta:name`)."""
    res = build(cls, {"name": name, **params})
    res.meta = build(Meta, meta, prefix="Meta:")
    res.validate()
    check_name(res.name, res.meta)
    return res


def required_params(cls: type[Resource]) -> list[str]:
    """The params a resource of kind `cls` cannot leave out (no default)."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in ("name", "meta")
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]


def capitalized(kind: str) -> str:
    """How an edge names a kind: file -> File, http:server:file -> Http:Server:File."""
    return ":".join(part[:1].upper() + part[1:] for part in kind.split(":"))


CONST_PREFIX = "const.res."


def constant(name: str) -> str | int | None:
    """mgmt's `$const.res.<kind>.<param>.<value>`: `value`, if it is one of the choices of that
    param of that kind (e.g. `$const.res.file.state.exists` is "exists"), or the value the kind
    names so in its CONSTANTS (`$const.res.gzip.level.best_compression` is 9); else None."""
    if not name.startswith(CONST_PREFIX):
        return None
    kind, _, rest = name.removeprefix(CONST_PREFIX).rpartition(".")[0].rpartition(".")
    value = name.rpartition(".")[2]
    table = kind_params(
        kind.replace(".", ":")
    )  # $const.res.http.server.file... -> http:server:file
    ptype = table.get(rest) if table is not None else None
    if ptype is None:
        return None
    if value in ptype.choices:
        return value
    cls = lookup(kind.replace(".", ":"))
    return cls.CONSTANTS.get(rest, {}).get(value) if cls is not None else None
