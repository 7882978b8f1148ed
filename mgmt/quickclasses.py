"""Dataclasses made without compiling source, for the `mgmt` command's start-up.

`dataclasses` (3.11) writes each method it adds as Python source and compiles it with its own
`exec`: 118 of them for the 25 dataclasses a cron run of a graph file imports, ~85 M of its
~480 M instructions (the parser and compiler at work on 52 KB of text). `install()` (the
command does it before its imports) makes the comparison, hash, repr and frozen
`__setattr__`/`__delattr__` methods closures over the fields' names instead, which behave as the
generated ones do (the same results, exceptions and messages, field by field in the same
order); `__init__` is still `dataclasses`' own, compiled from a shorter text (its parameters'
defaults and annotations set on it after, not compiled). Nothing else changes: the library
API (`mgmt.agent.run`, the tests) makes its dataclasses as usual.

typing's forward references (each string annotation of a NamedTuple, each type hint resolved)
keep their text, `eval`ed when resolved, not a code object of `compile`'s (`_forward_code`).

Python 3.11 only (the private builders replaced are those of its `dataclasses`): on another
version `install()` does nothing.
"""

from __future__ import annotations

import dataclasses
import operator
import sys
import typing
from collections.abc import Callable, Sequence
from keyword import iskeyword
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


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default in `__init__`, as `dataclasses` gives it: its default value, the
    marker of a default factory (the body calls it), or MISSING (none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses._HAS_DEFAULT_FACTORY  # type: ignore[attr-defined]
    return dataclasses.MISSING


def _init_fn(  # noqa: PLR0917 (called as dataclasses calls its own)
    fields: Sequence[dataclasses.Field[Any]],
    std_fields: Sequence[dataclasses.Field[Any]],
    kw_only_fields: Sequence[dataclasses.Field[Any]],
    frozen: bool,
    has_post_init: bool,
    self_name: str,
    globals: dict[str, Any],
    slots: bool,
) -> Any:
    """`dataclasses`' own `__init__` (the same body, signature, defaults and annotations),
    compiled from a shorter text: its parameters' defaults and annotations are set on the
    function after, not written in its source (two thirds of the text)."""
    seen_default = False
    for f in std_fields:
        if f.init:
            if not (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
    locals: dict[str, Any] = {
        "MISSING": dataclasses.MISSING,
        "_HAS_DEFAULT_FACTORY": dataclasses._HAS_DEFAULT_FACTORY,  # type: ignore[attr-defined]
        "__dataclass_builtins_object__": object,
    }
    field_init = dataclasses._field_init  # type: ignore[attr-defined]
    body = [line for f in fields if (line := field_init(f, frozen, locals, self_name, slots))]
    if has_post_init:
        initvars = ",".join(
            f.name
            for f in fields
            if f._field_type is dataclasses._FIELD_INITVAR  # type: ignore[attr-defined]
        )
        body.append(f"{self_name}.__post_init__({initvars})")
    text = "\n".join(body)
    used = {name: value for name, value in locals.items() if name in text}
    used["_"] = None  # every default in the source: replaced below
    defaults = [(f.name, _default(f)) for f in std_fields]
    kw_defaults = [(f.name, _default(f)) for f in kw_only_fields]
    params = [name if d is dataclasses.MISSING else f"{name}=_" for name, d in defaults]
    if kw_defaults:
        params += ["*", *(n if d is dataclasses.MISSING else f"{n}=_" for n, d in kw_defaults)]
    create = dataclasses._create_fn  # type: ignore[attr-defined]
    init = create("__init__", [self_name, *params], body or ["pass"], locals=used, globals=globals)
    init.__defaults__ = tuple(d for _, d in defaults if d is not dataclasses.MISSING) or None
    init.__kwdefaults__ = {n: d for n, d in kw_defaults if d is not dataclasses.MISSING} or None
    init.__annotations__ = {f.name: f.type for f in (*std_fields, *kw_only_fields)}
    init.__annotations__["return"] = None
    return init


_CHECKED: set[str] = set()  # the forward references' texts checked: each is checked once


def _forward_code(source: str, filename: str, mode: str) -> str:
    """typing's `compile` (its one use: a ForwardRef's text, which it then `eval`s): the text
    itself, checked to be an expression (a SyntaxError, as compile raises) but not compiled by
    `compile`, whose first call in a process builds the `ast` module's ~120 node types (~9 M
    instructions, 3% of a cron run; a string annotation, which `from __future__ import
    annotations` makes of each, becomes a ForwardRef: NamedTuple fields, the params' type
    hints). `eval` of the text gives what `eval` of its code gave. A text is parsed for the
    check once (18 distinct of a cron run's 33), a name that is not a keyword not at all."""
    assert mode == "eval", mode
    if source not in _CHECKED:
        if not source.isidentifier() or iskeyword(source):
            eval("lambda: (\n" + source + "\n)", {})  # parsed: a syntax error raises
        _CHECKED.add(source)
    return source


def install() -> None:
    """Make the dataclasses defined from now on with the closures above (see the module doc),
    and typing's forward references with `_forward_code`."""
    if sys.version_info[:2] != (3, 11):
        return
    for builder in (_cmp_fn, _hash_fn, _repr_fn, _frozen_get_del_attr, _init_fn):
        setattr(dataclasses, builder.__name__, builder)
    typing.compile = _forward_code  # type: ignore[attr-defined]  # its ForwardRef's only use
