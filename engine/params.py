"""Typed construction of parameter dataclasses from plain data (a parsed graph file).

`build(cls, data)` checks every key against the dataclass fields and every value against the
field's type hint, and raises `ValidationError` naming the key (dotted for nested dataclasses).
Supported hints: str, int, float, bool, Literal[...], list[X], dict[str, X], X | None and nested
dataclasses. A `str` field given a YAML scalar takes the scalar's source text (so `mode: 0644`
stays "0644", as in mgmt), which the caller passes in `raw`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from engine.errors import ValidationError

T = TypeVar("T")


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass (cached: resolution is slow)."""
    return typing.get_type_hints(cls)


def field_names(cls: type) -> list[str]:
    """The init-able dataclass fields of `cls`, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def close_match(key: str, names: list[str]) -> str:
    """A ' (did you mean 'x'?)' hint, or ''."""
    match = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def build(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    raw: Mapping[str, str] | None = None,
    prefix: str = "",
    skip: frozenset[str] = frozenset(),
) -> T:
    """Build `cls` from `data`; unknown keys and wrong types raise ValidationError."""
    names = field_names(cls)
    types_ = hints(cls)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in skip:
            continue
        if not isinstance(key, str) or key not in names:
            raise ValidationError(f"unknown key{close_match(str(key), names)}", prefix + str(key))
        source = raw.get(key) if raw else None
        kwargs[key] = convert(types_[key], value, prefix + key, source)
    missing = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValidationError("is required", prefix + missing[0])
    try:
        return cls(**kwargs)
    except ValidationError as err:
        if err.key and not err.key.startswith(prefix):
            err.key = prefix + err.key
        raise


def describe(hint: Any) -> str:
    """A human name for a type hint: 'a string', 'a list of strings', 'one of a, b'."""
    origin = get_origin(hint)
    if hint is str:
        return "a string"
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is list:
        return f"a list of {describe(get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(hint) if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


def convert(hint: Any, value: Any, key: str, raw: str | None = None) -> Any:
    """Check (and lightly coerce) one value against a type hint."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        members = get_args(hint)
        if value is None and type(None) in members:
            return None
        errors: list[ValidationError] = []
        for member in members:
            if member is type(None):
                continue
            try:
                return convert(member, value, key, raw)
            except ValidationError as err:
                errors.append(err)
        raise ValidationError(f"expected {describe(hint)}, got {value!r}", key)
    if hint is Any:
        return value
    if hint is str:
        if isinstance(value, str):
            return value
        if raw is not None and isinstance(value, int | float) and not isinstance(value, bool):
            return raw
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValidationError(f"expected a string, got {value!r}", key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValidationError(f"expected true or false, got {value!r}", key)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValidationError(f"expected an integer, got {value!r}", key)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf"):
            return float("inf")
        raise ValidationError(f"expected a number, got {value!r}", key)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise ValidationError(f"expected {describe(hint)}, got {value!r}", key)
    if origin is list:
        if not isinstance(value, list):
            raise ValidationError(f"expected {describe(hint)}, got {value!r}", key)
        (item,) = get_args(hint)
        return [convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValidationError(f"expected a mapping, got {value!r}", key)
        _, item = get_args(hint)
        return {str(k): convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValidationError(f"expected a mapping, got {value!r}", key)
        return build(hint, value, raw=getattr(value, "raw", None), prefix=key + ".")
    raise ValidationError(f"unsupported parameter type {hint!r}", key)


def to_plain(obj: Any) -> dict[str, Any]:
    """The fields of a dataclass instance as plain data (for cmp, export and --graphviz)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
