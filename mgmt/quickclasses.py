"""Dataclasses made without compiling source, for the `mgmt` command's start-up.

`dataclasses` (3.11) writes each method it adds as Python source and compiles it with its own
`exec`: 118 of them for the 25 dataclasses a cron run of a graph file imports, ~85 M of its
~480 M instructions (the parser and compiler at work on 52 KB of text). `install()` (the
command does it before its imports) makes the comparison, hash, repr and frozen
`__setattr__`/`__delattr__` methods closures over the fields' names instead, which behave as the
generated ones do (the same results, exceptions and messages, field by field in the same
order); `__init__` (its signature, defaults and errors) is still `dataclasses`' own. Nothing
else changes: the library API (`mgmt.agent.run`, the tests) makes its dataclasses as usual.

Python 3.11 only (the private builders replaced are of its `dataclasses`; 3.13's compiles a
class's methods in one `exec`): on another version `install()` does nothing.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
from collections.abc import Callable, Sequence
from typing import Any

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _key(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of an object's fields, as `dataclasses` builds it: `(self.a, self.b,)`."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return operator.attrgetter(*names)


def _cmp_fn(name: str, op: str, self_tuple: str, other_tuple: str, globals: Any) -> Any:
    names = [n.removeprefix("self.") for n in self_tuple[1:-1].split(",") if n]
    compare, key = _COMPARE[op], _key(names)

    def method(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return compare(key(self), key(other))
        return NotImplemented

    method.__name__ = name
    return method


def _hash_fn(fields: Sequence[dataclasses.Field[Any]], globals: Any) -> Any:
    key = _key([f.name for f in fields])

    def __hash__(self: Any) -> int:
        return hash(key(self))

    return __hash__


def _repr_fn(fields: Sequence[dataclasses.Field[Any]], globals: Any) -> Any:
    names = tuple(f.name for f in fields)

    def __repr__(self: Any) -> str:
        qualname: str = self.__class__.__qualname__
        return (
            qualname + "(" + ", ".join([f"{name}={getattr(self, name)!r}" for name in names]) + ")"
        )

    return dataclasses._recursive_repr(__repr__)  # type: ignore[attr-defined]


def _frozen_get_del_attr(
    cls: type[Any], fields: Sequence[dataclasses.Field[Any]], globals: Any
) -> Any:
    names = tuple(f.name for f in fields)
    frozen = dataclasses.FrozenInstanceError

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise frozen(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__


def install() -> None:
    """Make the dataclasses defined from now on with the closures above (see the module doc)."""
    if sys.version_info[:2] != (3, 11):
        return
    for builder in (_cmp_fn, _hash_fn, _repr_fn, _frozen_get_del_attr):
        setattr(dataclasses, builder.__name__, builder)
