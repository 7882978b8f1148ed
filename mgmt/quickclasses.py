"""Dataclasses made without compiling source, for the `mgmt` command's start-up.

`dataclasses` (3.11) writes each method it adds as Python source and compiles it with its own
`exec`: 118 of them for the 25 dataclasses a cron run of a graph file imports, ~85 M of its
~480 M instructions (the parser and compiler at work on 52 KB of text). `install()` (the
command does it before its imports) makes the comparison, hash, repr and frozen
`__setattr__`/`__delattr__` methods closures over the fields' names instead, which behave as the
generated ones do (the same results, exceptions and messages, field by field in the same
order); `__init__` is the generated one's bytecode, written by `_init_code` (the same
statements on the same lines, for the same arguments; its defaults and annotations set on the
function after), which spares the last ~21 M of compiling (a class with over 255 fields, or
an InitVar outside `__init__`, is still compiled); a plain field's `self.name = name` is
written at once (`_Body.assign`: -0.75 M instructions of a run). Nothing else changes: the library API
(`mgmt.agent.run`, the tests) makes its dataclasses as usual.

typing's forward references (each string annotation of a NamedTuple, each type hint resolved)
keep their text, `eval`ed when resolved, not a code object of `compile`'s (`_forward_code`);
a namedtuple's `__new__` is bytecode written as the evaluated lambda's (`_namedtuple_eval`);
typing's NamedTuple class does not set its new class's `__bases__` again to the `(tuple,)`
it has (`_named_tuple_new`: the interpreter would compute its MRO and slots again, -0.7 M
instructions of a run's 5 NamedTuples);
dataclasses' check of a string annotation for ClassVar, InitVar or KW_ONLY matches its
pattern once per text (`_is_type`), and a field of a plain-name annotation is made with one
lookup of that name for both its ClassVar and InitVar checks (`_get_field`: -1.1 M
instructions of a run's 200 fields).

`enum`'s `_convert_` (the int enums and flags socket and signal make of their constants at
import: AddressFamily, SocketKind, MsgFlag, AddressInfo, Signals, Handlers, Sigmasks; ~7.4 M
instructions, 4% of an empty run) makes each member with `_simple_enum`'s Python calls: an
`Enum.__init__` that does nothing, an `enum.property` through its `__init__` (which formats
and drops an AttributeError asking None for `__isabstractmethod__`) and `__set_name__`, and
the class's `__setattr__`: ~25 K instructions a member. `_convert_` here makes the same class
(the same attributes in the same order, members with the same attributes in the same order;
tests/mgmt/test_startup.py compares all seven with enum's own) with those objects filled
directly: -1.2 M instructions of a run (docs/benchmarks.md). An int enum or flag of int values
only; any other `_convert_` is enum's own, and so is every one where enum's code is not the
3.11.2 code this follows (`_enum_followed`: 3.11.7's makes other classes).

Python 3.11 only (the private builders replaced are those of its `dataclasses`, `typing` and
`enum`): on another version `install()` does nothing; on a 3.11 release whose code of one of
them (or of its caller) is not the code ours follows (`_STAMPS`: the names it reads and its
bytecode), that one is left as it is (2026-12-06: before, only enum's was checked).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import operator
import sys
import types
import typing
from binascii import crc32  # (built into the interpreter)
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


# Python 3.11's opcodes, and the inline cache entries after each (opcode.opmap,
# opcode._inline_cache_entries; a test compares): what `_init_code` writes.
_RESUME, _LOAD_FAST, _LOAD_CONST, _STORE_ATTR, _LOAD_METHOD = 151, 124, 100, 95, 160
_IS_OP, _POP_JUMP_FORWARD_IF_FALSE, _JUMP_FORWARD, _PUSH_NULL = 117, 114, 110, 2
_PRECALL, _CALL, _POP_TOP, _RETURN_VALUE = 166, 171, 1, 83
_LOAD_GLOBAL, _BUILD_TUPLE = 116, 102
_CACHES = {_STORE_ATTR: 4, _LOAD_METHOD: 10, _PRECALL: 1, _CALL: 4, _LOAD_GLOBAL: 5}
_FIELD_INITVAR = getattr(dataclasses, "_FIELD_INITVAR", None)
_HAS_DEFAULT_FACTORY = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", None)
_TEMPLATE = (lambda: None).__code__  # replaced whole: its kind of code object only


class _Body:
    """The bytecode of an `__init__`, one statement (a line of dataclasses' text) after another,
    with its line table: each statement on its own line, from line 3, as dataclasses' text
    puts them (`def __create_fn__(...)` on line 1, `def __init__(...)` on line 2)."""

    def __init__(self, names: list[str]) -> None:
        self.code = bytearray([_RESUME, 0])
        self.lines = bytearray(_line_entry(1, 0))
        self.line = 2
        self.consts: list[Any] = [None]
        self.names: dict[str, int] = {}  # co_names (in order), each with its index
        self.varnames = names
        self._locals: dict[str, int] = {}  # each name's first index in varnames
        for index, name in enumerate(names):
            self._locals.setdefault(name, index)

    def op(self, opcode: int, arg: int = 0) -> None:
        if not 0 <= arg <= 255:
            raise _Compiled
        self.code += _unit(opcode, arg)

    def constant(self, value: Any) -> int:
        """`value` as the next constant: its index."""
        self.consts.append(value)
        return len(self.consts) - 1

    def local(self, name: str) -> int:
        """The index of the argument `name`."""
        index = self._locals.get(name)
        if index is None:  # an InitVar not in __init__: the text's name is global
            raise _Compiled
        return index

    def fast(self, name: str) -> None:
        self.op(_LOAD_FAST, self.local(name))

    def name(self, name: str) -> int:
        return self.names.setdefault(name, len(self.names))

    def call(self, count: int) -> None:
        self.op(_PRECALL, count)
        self.op(_CALL, count)

    def statement(self, ops: tuple[int, ...]) -> None:
        """The next line: the instructions `ops` (opcode, argument, opcode, argument...)."""
        code = _code(ops)
        self.code += code
        self.lines += _lines(len(code) // 2)
        self.line += 1

    def assign(self, this: int, name: str) -> None:
        """The next line: `self.name = name`, a plain field's statement, as `statement` writes
        it (LOAD_FAST name, LOAD_FAST self, STORE_ATTR name and its caches: 7 code units),
        without `_code`'s loop (each field's is another tuple: its cache misses)."""
        local, attr = self.local(name), self.names.setdefault(name, len(self.names))
        if local > 255 or attr > 255 or this > 255:
            raise _Compiled
        self.code += bytes((_LOAD_FAST, local, _LOAD_FAST, this, _STORE_ATTR, attr))
        self.code += _STORE_ATTR_CACHES
        self.lines += _ASSIGN_LINE
        self.line += 1


class _Compiled(Exception):
    """What `_init_code` does not write (an argument beyond one byte, EXTENDED_ARG; a name
    not among the arguments): the class's `__init__` is compiled from text as before."""


@functools.cache
def _unit(opcode: int, arg: int) -> bytes:
    """An instruction's code unit and the inline cache entries after it (zeros)."""
    return bytes((opcode, arg)) + bytes(2 * _CACHES.get(opcode, 0))


@functools.cache
def _code(ops: tuple[int, ...]) -> bytes:
    """The code units of the instructions `ops` (opcode, argument, ...), with their inline
    caches: a statement's, the same for a field at the same place in another class."""
    out = bytearray()
    for at in range(0, len(ops), 2):
        if not 0 <= ops[at + 1] <= 255:
            raise _Compiled
        out += _unit(ops[at], ops[at + 1])
    return bytes(out)


@functools.cache
def _lines(units: int) -> bytes:
    """The line table entries of a statement of `units` code units, on the next line."""
    out, delta = b"", 1
    while units > 0:
        out += _line_entry(min(units, 8), delta)
        units, delta = units - 8, 0
    return out


@functools.cache
def _line_entry(units: int, delta: int) -> bytes:
    """A 3.11 line table entry without columns (PY_CODE_LOCATION_INFO_NO_COLUMNS, 13): `units`
    code units (1-8) on the line `delta` after the previous entry's (a signed varint)."""
    value = (-delta << 1) | 1 if delta < 0 else delta << 1
    out = bytearray([0x80 | (13 << 3) | (units - 1)])
    while value >= 64:
        out.append(0x40 | (value & 63))
        value >>= 6
    out.append(value)
    return bytes(out)


_STORE_ATTR_CACHES = bytes(2 * _CACHES[_STORE_ATTR])
_ASSIGN_LINE = _lines(7)  # `self.name = name`: 7 code units on the next line


def _init_code(  # noqa: PLR0917 (dataclasses' _init_fn's own arguments)
    fields: Sequence[dataclasses.Field[Any]],
    std_fields: Sequence[dataclasses.Field[Any]],
    kw_only_fields: Sequence[dataclasses.Field[Any]],
    frozen: bool,
    has_post_init: bool,
    self_name: str,
    slots: bool,
) -> Any:
    """The code of dataclasses' `__init__`, written as bytecode: the same statements in the
    same order, on the same lines, for the same arguments (its names, positional then
    keyword-only). What the text reads from `__create_fn__`'s closure (a default factory, the
    factory marker, `object.__setattr__` of a frozen class) the code has as constants."""
    body = _Body([self_name, *(f.name for f in (*std_fields, *kw_only_fields))])
    this = body.local(self_name)
    for f in fields:
        if f._field_type is _FIELD_INITVAR or (  # type: ignore[attr-defined]
            not f.init
            and f.default_factory is dataclasses.MISSING
            and not (slots and f.default is not dataclasses.MISSING)
        ):
            continue  # no statement (an InitVar's factory is only called when assigned)
        if not frozen and f.init and f.default_factory is dataclasses.MISSING:
            body.assign(this, f.name)  # self.name = name
            continue
        ops: tuple[int, ...] = ()
        if frozen:  # object.__setattr__(self, 'name', value)
            setattr_, named = body.constant(object.__setattr__), body.constant(f.name)
            ops = (_PUSH_NULL, 0, _LOAD_CONST, setattr_, _LOAD_FAST, this, _LOAD_CONST, named)
        if f.default_factory is not dataclasses.MISSING:
            if f.init:  # factory() if name is _HAS_DEFAULT_FACTORY else name
                marker = body.constant(_HAS_DEFAULT_FACTORY)
                ops += (_LOAD_FAST, body.local(f.name), _LOAD_CONST, marker, _IS_OP, 0)
                ops += (_POP_JUMP_FORWARD_IF_FALSE, 10)  # to the else: 10 code units on
            factory = body.constant(f.default_factory)
            ops += (_PUSH_NULL, 0, _LOAD_CONST, factory, _PRECALL, 0, _CALL, 0)
            if f.init:
                ops += (_JUMP_FORWARD, 1, _LOAD_FAST, body.local(f.name))
        elif f.init:
            ops += (_LOAD_FAST, body.local(f.name))
        else:  # a slotted class's field not in __init__, with a default
            ops += (_LOAD_CONST, body.constant(f.default))
        if frozen:
            ops += (_PRECALL, 3, _CALL, 3, _POP_TOP, 0)
        else:
            ops += (_LOAD_FAST, this, _STORE_ATTR, body.name(f.name))
        body.statement(ops)
    if has_post_init:  # self.__post_init__(initvars...)
        initvars = [f.name for f in fields if f._field_type is _FIELD_INITVAR]  # type: ignore[attr-defined]
        ops = (_LOAD_FAST, this, _LOAD_METHOD, body.name("__post_init__"))
        for name in initvars:
            ops += (_LOAD_FAST, body.local(name))
        body.statement((*ops, _PRECALL, len(initvars), _CALL, len(initvars), _POP_TOP, 0))
    end = (_LOAD_CONST, 0, _RETURN_VALUE, 0)
    if body.line == 2:  # no statement: dataclasses' `pass`
        body.statement(end)
    else:  # the return is the last statement's
        body.code += _code(end)
        body.lines += _line_entry(2, 0)
    return _TEMPLATE.replace(
        co_argcount=1 + len(std_fields),
        co_posonlyargcount=0,
        co_kwonlyargcount=len(kw_only_fields),
        co_nlocals=len(body.varnames),
        co_stacksize=8 + len(fields),  # at most 6 and 2 + the InitVars: more is harmless
        co_flags=0x3,  # CO_OPTIMIZED | CO_NEWLOCALS
        co_code=bytes(body.code),
        co_consts=tuple(body.consts),
        co_names=tuple(body.names),
        co_varnames=tuple(body.varnames),
        co_filename="<string>",
        co_name="__init__",
        co_qualname="__create_fn__.<locals>.__init__",
        co_firstlineno=2,
        co_linetable=bytes(body.lines),
        co_exceptiontable=b"",
        co_freevars=(),
        co_cellvars=(),
    )


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
    """`dataclasses`' own `__init__` (the same statements, signature, defaults and
    annotations), its code written as bytecode (`_init_code`), not compiled from text: its
    parameters' defaults and annotations are set on the function after."""
    seen_default = False
    for f in std_fields:
        if f.init:
            if not (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
    args = (fields, std_fields, kw_only_fields, frozen, has_post_init, self_name)
    try:
        init = types.FunctionType(_init_code(*args, slots), globals, "__init__")
    except _Compiled:
        init = _compiled_init(*args, globals, slots)
    defaults = [(f.name, _default(f)) for f in std_fields]
    kw_defaults = [(f.name, _default(f)) for f in kw_only_fields]
    init.__defaults__ = tuple(d for _, d in defaults if d is not dataclasses.MISSING) or None
    init.__kwdefaults__ = {n: d for n, d in kw_defaults if d is not dataclasses.MISSING} or None
    init.__annotations__ = {f.name: f.type for f in (*std_fields, *kw_only_fields)}
    init.__annotations__["return"] = None
    return init


def _compiled_init(  # noqa: PLR0917
    fields: Sequence[dataclasses.Field[Any]],
    std_fields: Sequence[dataclasses.Field[Any]],
    kw_only_fields: Sequence[dataclasses.Field[Any]],
    frozen: bool,
    has_post_init: bool,
    self_name: str,
    globals: dict[str, Any],
    slots: bool,
) -> Any:
    """`__init__` compiled from dataclasses' text, with every default written `_` (its
    defaults are set after): what `_init_code` does not write (`_Compiled`)."""
    locals: dict[str, Any] = {
        "MISSING": dataclasses.MISSING,
        "_HAS_DEFAULT_FACTORY": _HAS_DEFAULT_FACTORY,
        "__dataclass_builtins_object__": object,
    }
    field_init = dataclasses._field_init  # type: ignore[attr-defined]
    body = [line for f in fields if (line := field_init(f, frozen, locals, self_name, slots))]
    if has_post_init:
        initvars = ",".join(f.name for f in fields if f._field_type is _FIELD_INITVAR)  # type: ignore[attr-defined]
        body.append(f"{self_name}.__post_init__({initvars})")
    text = "\n".join(body)
    used = {name: value for name, value in locals.items() if name in text}
    used["_"] = None  # every default in the source: replaced by the caller
    params = [f.name if _default(f) is dataclasses.MISSING else f"{f.name}=_" for f in std_fields]
    if kw_only_fields:
        params += ["*"]
        params += [
            f.name if _default(f) is dataclasses.MISSING else f"{f.name}=_" for f in kw_only_fields
        ]
    create = dataclasses._create_fn  # type: ignore[attr-defined]
    return create("__init__", [self_name, *params], body or ["pass"], locals=used, globals=globals)


_NEW_HEAD, _NEW_CALL = "lambda _cls, ", ": _tuple_new(_cls, ("


def _namedtuple_eval(source: str, namespace: dict[str, Any]) -> Any:
    """collections.namedtuple's `eval` (its one use: the class's `__new__`, `lambda _cls, a,
    b: _tuple_new(_cls, (a, b))`): that lambda's code written as bytecode, not compiled (10
    namedtuples on a cron run's imports, ~0.2 M instructions each); any other text (over 254
    fields: an argument beyond a byte) evaluated as before."""
    head, sep, rest = source.partition(_NEW_CALL)
    names = head.removeprefix(_NEW_HEAD).rstrip(",").split(", ")
    if not (sep and head.startswith(_NEW_HEAD) and rest == head[len(_NEW_HEAD) :] + "))"):
        return eval(source, namespace)
    if len(names) > 254 or not all(name.isidentifier() for name in names):
        return eval(source, namespace)
    body = _Body(["_cls", *names])  # its code starts with RESUME
    body.op(_LOAD_GLOBAL, body.name("_tuple_new") << 1 | 1)  # NULL + _tuple_new
    for name in body.varnames:
        body.fast(name)
    body.op(_BUILD_TUPLE, len(names))
    body.call(2)
    body.op(_RETURN_VALUE)
    units, lines = len(body.code) // 2, bytearray()
    while units > 0:
        lines += _line_entry(min(units, 8), 0)
        units -= 8
    code = _TEMPLATE.replace(
        co_argcount=len(body.varnames),
        co_nlocals=len(body.varnames),
        co_stacksize=3 + len(names),
        co_flags=0x3,  # CO_OPTIMIZED | CO_NEWLOCALS
        co_code=bytes(body.code),
        co_consts=(None,),
        co_names=tuple(body.names),
        co_varnames=tuple(body.varnames),
        co_filename="<string>",
        co_name="<lambda>",
        co_qualname="<lambda>",
        co_firstlineno=1,
        co_linetable=bytes(lines),
        co_exceptiontable=b"",
    )
    return types.FunctionType(code, namespace)


_IDENTIFIERS: dict[str, tuple[str | None, str] | None] = {}  # _is_type's match, by annotation


def _is_type(
    annotation: str, cls: type, a_module: Any, a_type: Any, is_type_predicate: Any
) -> bool:
    """dataclasses' `_is_type` (does a string annotation name `a_type` of `a_module`: a
    ClassVar, an InitVar, KW_ONLY), the same lookups, with its pattern's match of each
    annotation text made once (two or three calls a field, ~580 a cron run)."""
    try:
        found = _IDENTIFIERS[annotation]
    except KeyError:
        match = dataclasses._MODULE_IDENTIFIER_RE.match(annotation)  # type: ignore[attr-defined]
        found = _IDENTIFIERS[annotation] = match and (match.group(1), match.group(2))
    if not found:
        return False
    module_name, name = found
    ns = None
    if not module_name:
        ns = sys.modules.get(cls.__module__).__dict__
    else:
        module = sys.modules.get(cls.__module__)
        if module and module.__dict__.get(module_name) is a_module:
            ns = sys.modules.get(a_type.__module__).__dict__
    return bool(ns and is_type_predicate(ns.get(name), a_module))


_GET_FIELD = dataclasses._get_field  # type: ignore[attr-defined]
_FIELD = getattr(dataclasses, "_FIELD", None)
_FIELD_CLASSVAR = getattr(dataclasses, "_FIELD_CLASSVAR", None)


def _get_field(cls: type, a_name: str, a_type: Any, default_kw_only: bool) -> Any:
    """dataclasses' `_get_field` (3.11) of a string annotation (each field of a module with
    `from __future__ import annotations`) that is a plain name or none: its two `_is_type`
    checks (a ClassVar? an InitVar?) made with one lookup of that name in the class's module,
    as `_is_type` looks it up (~8 K instructions of a field's ~17 K). Any other annotation
    (a type, a dotted name), or a class whose module is gone, is dataclasses' own."""
    if type(a_type) is not str:
        return _GET_FIELD(cls, a_name, a_type, default_kw_only)
    try:
        found = _IDENTIFIERS[a_type]
    except KeyError:
        match = dataclasses._MODULE_IDENTIFIER_RE.match(a_type)  # type: ignore[attr-defined]
        found = _IDENTIFIERS[a_type] = match and (match.group(1), match.group(2))
    module = sys.modules.get(cls.__module__)
    if (found and found[0]) or module is None:
        return _GET_FIELD(cls, a_name, a_type, default_kw_only)
    default: Any = getattr(cls, a_name, dataclasses.MISSING)
    f: Any
    if isinstance(default, dataclasses.Field):
        f = default
    else:
        if isinstance(default, types.MemberDescriptorType):
            default = dataclasses.MISSING
        f = dataclasses.field(default=default)
    f.name = a_name
    f.type = a_type
    f._field_type = _FIELD
    if found:  # the name the text starts with, in the class's module (as _is_type reads it)
        named: Any = module.__dict__.get(found[1])
        loaded: Any = sys.modules.get("typing")
        if loaded and (
            named is loaded.ClassVar
            or (type(named) is loaded._GenericAlias and named.__origin__ is loaded.ClassVar)
        ):
            f._field_type = _FIELD_CLASSVAR
        elif named is dataclasses.InitVar or type(named) is dataclasses.InitVar:
            f._field_type = _FIELD_INITVAR
    return _checked(f, default_kw_only)


def _checked(f: Any, default_kw_only: bool) -> Any:
    """The end of dataclasses' `_get_field` (3.11): its checks, and the field's kw_only."""
    if (
        f._field_type in (_FIELD_CLASSVAR, _FIELD_INITVAR)
        and f.default_factory is not dataclasses.MISSING
    ):
        raise TypeError(f"field {f.name} cannot have a default factory")
    if f._field_type in (_FIELD, _FIELD_INITVAR):
        if f.kw_only is dataclasses.MISSING:
            f.kw_only = default_kw_only
    else:
        assert f._field_type is _FIELD_CLASSVAR
        if f.kw_only is not dataclasses.MISSING:
            raise TypeError(f"field {f.name} is a ClassVar but specifies kw_only")
    if f._field_type is _FIELD and f.default.__class__.__hash__ is None:
        raise ValueError(
            f"mutable default {type(f.default)} for field {f.name} is not allowed: use default_factory"
        )
    return f


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


_CONVERT = enum.EnumType._convert_  # type: ignore[attr-defined]
_BY_VALUE, _BY_NAME = operator.itemgetter(1, 0), operator.itemgetter(0)
# An enum.property's attributes as its __init__ (fget... None) and __set_name__ set them.
_PROPERTY = {
    "fget": None,
    "fset": None,
    "fdel": None,
    "__doc__": None,
    "overwrite_doc": True,
    "__isabstractmethod__": False,
    "name": "",
    "clsname": "",
}


def _convert_(
    cls: Any,
    name: str,
    module: str,
    filter: Callable[[str], bool],
    source: Any = None,
    *,
    boundary: Any = None,
    as_global: bool = False,
) -> Any:
    """enum's `EnumType._convert_` (3.11), its class made by `_int_enum` (an IntEnum or an
    IntFlag of ints: socket's and signal's); any other by enum's own."""
    if cls is not enum.IntEnum and cls is not enum.IntFlag:
        return _CONVERT(cls, name, module, filter, source, boundary=boundary, as_global=as_global)
    module_globals = sys.modules[module].__dict__
    found = source.__dict__ if source else module_globals
    members = [(key, value) for key, value in found.items() if filter(key)]
    try:
        members.sort(key=_BY_VALUE)  # (value, name), as enum's lambdas
    except TypeError:
        members.sort(key=_BY_NAME)
    body = dict(members)
    body["__module__"] = module
    made = type(name, (object,), body)
    if all(type(value) is int for _, value in members):
        made = _int_enum(cls, boundary or enum.KEEP, made)
    else:
        made = enum._simple_enum(etype=cls, boundary=boundary or enum.KEEP)(made)  # type: ignore[attr-defined]
    made.__reduce_ex__ = enum._reduce_ex_by_global_name  # type: ignore[attr-defined]
    if as_global:
        enum.global_enum(made)
    else:
        sys.modules[made.__module__].__dict__.update(made.__members__)
    module_globals[name] = made
    return made


def _stamp(code: types.CodeType) -> int:
    """A code object's stamp: the CRC-32 of its bytecode and of the names it reads (the same
    source compiled by the same Python gives the same stamp, on any build of it)."""
    return crc32(" ".join(code.co_names).encode(), crc32(code.co_code))


# The stamps (`_stamp`) of the standard library's code each replacement here follows, the ones
# accepted for each code object: 3.11.2's (Debian 12's python3) and 3.11.7's where it differs but
# not in what ours follows (`dataclasses._process_class`: a class whose signature cannot be had
# gets an empty one in its docstring). Where a 3.11 release has other code, its own is left
# (`_followed`). enum's `_convert_` and `_simple_enum`'s class maker are 3.11.2's only: 3.11.7's
# `_convert_` sets no `__reduce_ex__`, its flags have a `_singles_mask_` and a `_flag_mask_` of
# all their values, multi-bit ones too: there ours would make another class.
_Stamps = tuple[tuple[int, ...], ...]
_ENUM_STAMPS: _Stamps = ((1981970714,), (1577854305,))
_STAMPS: dict[str, _Stamps] = {
    # _process_class (the builders' caller), then the seven builders replaced, in install()'s order
    "dataclasses": (
        (404233994, 2266570274),
        (3129556739,),
        (3117022383,),
        (1350485461,),
        (477153210,),
        (2591176722,),
        (3048573919,),
        (3068856157,),
    ),
    "ForwardRef": ((28658977,),),  # __init__: its compile() is its only use
    "namedtuple": ((2056241784,),),  # its eval() is its only use
    "NamedTupleMeta": ((600561903,),),  # __new__
}


def _followed(*codes: types.CodeType, stamps: _Stamps) -> bool:
    """Whether `codes` are the standard library's code that ours follows (`stamps`)."""
    return len(codes) == len(stamps) and all(
        _stamp(code) in accepted for code, accepted in zip(codes, stamps, strict=True)
    )


def _enum_followed() -> bool:
    """Whether this Python's enum is the one `_convert_` here follows (`_ENUM_STAMPS`); else
    `install()` leaves enum's own."""
    makers = [c for c in enum._simple_enum.__code__.co_consts if isinstance(c, types.CodeType)]  # type: ignore[attr-defined]
    return _followed(_CONVERT.__code__, *makers, stamps=_ENUM_STAMPS)


def _int_enum(etype: Any, boundary: Any, cls: type) -> Any:
    """enum's `_simple_enum(etype, boundary=boundary)(cls)` (3.11) for `_convert_`'s class of
    int constants: the same steps, each member and its `enum.property` filled directly."""
    body, attrs = _int_enum_body(etype, boundary, cls)
    cls_name, member_type = cls.__name__, etype._member_type_
    made: Any = type(cls_name, (etype,), body, boundary=boundary, _simple=True)
    for key in ("__repr__", "__str__", "__format__", "__reduce_ex__"):
        if key not in body:
            found = getattr(made, key)
            if found in (getattr(member_type, key), getattr(object, key)):
                setattr(made, key, getattr(etype, key))
    new_member, flag = body["_new_member_"], "_boundary_" in body
    member_names, member_map = body["_member_names_"], body["_member_map_"]
    value2member_map = body["_value2member_map_"]
    single_bits = multi_bits = 0
    for key, value in attrs.items():
        redirect = object.__new__(enum.property)
        redirect.__dict__ = {**_PROPERTY, "name": key, "clsname": cls_name}
        type.__setattr__(made, key, redirect)
        if value in value2member_map:  # an alias
            member_map[key] = value2member_map[value]
            continue
        member = new_member(made, value)
        member._value_ = value
        member._name_ = key
        member.__objclass__ = made
        member._sort_order_ = len(member_names)  # (Enum.__init__ does nothing: not called)
        member_map[key] = member
        value2member_map[value] = member
        if not flag:
            member_names.append(key)
        elif enum._is_single_bit(value):  # type: ignore[attr-defined]
            member_names.append(key)
            single_bits |= value
        else:
            multi_bits |= value
    if flag:
        made._flag_mask_ = single_bits
        made._all_bits_ = 2 ** ((single_bits | multi_bits).bit_length()) - 1
        values = [m._value_ for m in made]
        if values != sorted(values):
            made._iter_member_ = made._iter_member_by_def_
    made.__new__ = enum.Enum.__new__
    return made


def _int_enum_body(etype: Any, boundary: Any, cls: type) -> tuple[dict[str, Any], dict[str, int]]:
    """`_simple_enum`'s class body for `etype` (its attributes in its order), and the members'
    names and values from `cls`."""
    cls_name = cls.__name__
    body: dict[str, Any] = {
        "_new_member_": etype._member_type_.__new__,
        "_use_args_": etype._use_args_,
        "_generate_next_value_": etype._generate_next_value_,
        "_member_names_": [],
        "_member_map_": {},
        "_value2member_map_": {},
        "_unhashable_values_": [],
        "_member_type_": etype._member_type_,
        "_value_repr_": etype._value_repr_,
    }
    if issubclass(etype, enum.Flag):
        body["_boundary_"] = boundary or etype._boundary_
        body["_flag_mask_"] = body["_all_bits_"] = body["_inverted_"] = None
        for method in ("__or__", "__xor__", "__and__", "__ror__", "__rxor__", "__rand__"):
            body[method] = getattr(enum.Flag, method)
        body["__invert__"] = enum.Flag.__invert__
    attrs: dict[str, int] = {}
    for key, obj in cls.__dict__.items():
        if key in ("__dict__", "__weakref__"):
            continue
        if key[0] != "_":  # an int: not a dunder, sunder, private name or descriptor
            attrs[key] = obj
        elif (
            enum._is_dunder(key)  # type: ignore[attr-defined]
            or enum._is_private(cls_name, key)  # type: ignore[attr-defined]
            or enum._is_sunder(key)  # type: ignore[attr-defined]
            or enum._is_descriptor(obj)  # type: ignore[attr-defined]
        ):
            body[key] = obj
        else:
            attrs[key] = obj
    if cls.__dict__.get("__doc__") is None:
        body["__doc__"] = "An enumeration."
    return body, attrs


def _named_tuple_new(cls: type, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
    """typing's `NamedTupleMeta.__new__` (3.11), the same steps, but for setting the new class's
    `__bases__` to the `(tuple,)` it has already: that assignment makes the interpreter compute
    the class's MRO and every slot again, ~160 K instructions a class (5 NamedTuples in a run),
    for the same class. A generic NamedTuple's bases (with Generic) are set as before."""
    named_tuple: Any = typing._NamedTuple  # type: ignore[attr-defined]
    assert named_tuple in bases
    for base in bases:
        if base is not named_tuple and base is not typing.Generic:
            raise TypeError("can only inherit from a NamedTuple type and Generic")
    bases = tuple(tuple if base is named_tuple else base for base in bases)
    types = ns.get("__annotations__", {})
    default_names: list[str] = []
    for field_name in types:
        if field_name in ns:
            default_names.append(field_name)
        elif default_names:
            raise TypeError(
                f"Non-default namedtuple field {field_name} "
                f"cannot follow default field"
                f"{'s' if len(default_names) > 1 else ''} "
                f"{', '.join(default_names)}"
            )
    nm_tpl = typing._make_nmtuple(  # type: ignore[attr-defined]
        typename, types.items(), defaults=[ns[n] for n in default_names], module=ns["__module__"]
    )
    if nm_tpl.__bases__ != bases:
        nm_tpl.__bases__ = bases
    if typing.Generic in bases:
        class_getitem = typing.Generic.__class_getitem__.__func__  # type: ignore[attr-defined]
        nm_tpl.__class_getitem__ = classmethod(class_getitem)
    # update from user namespace without overriding special namedtuple attributes
    for key, value in ns.items():
        if key in typing._prohibited:  # type: ignore[attr-defined]
            raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
        if key not in typing._special and key not in nm_tpl._fields:  # type: ignore[attr-defined]
            setattr(nm_tpl, key, value)
    if typing.Generic in bases:
        nm_tpl.__init_subclass__()
    return nm_tpl


def install() -> None:
    """Make the dataclasses defined from now on with the closures above (see the module doc),
    typing's forward references with `_forward_code`, and enum's `_convert_` with ours."""
    if sys.version_info[:2] != (3, 11):
        return
    if enum.IntEnum.__init__ is enum.Enum.__init__ is enum.IntFlag.__init__ and _enum_followed():
        enum.EnumType._convert_ = _convert_  # type: ignore[attr-defined]
    builders = (_cmp_fn, _hash_fn, _repr_fn, _frozen_get_del_attr, _init_fn, _is_type, _get_field)
    owns = [getattr(dataclasses, builder.__name__).__code__ for builder in builders]
    if _followed(dataclasses._process_class.__code__, *owns, stamps=_STAMPS["dataclasses"]):  # type: ignore[attr-defined]
        for builder in builders:
            setattr(dataclasses, builder.__name__, builder)
    if _followed(typing.ForwardRef.__init__.__code__, stamps=_STAMPS["ForwardRef"]):
        typing.compile = _forward_code  # type: ignore[attr-defined]  # its ForwardRef's only use
    if _followed(collections.namedtuple.__code__, stamps=_STAMPS["namedtuple"]):
        collections.eval = _namedtuple_eval  # type: ignore[attr-defined]  # namedtuple's only use
    meta = typing.NamedTupleMeta  # type: ignore[attr-defined]
    if _followed(meta.__new__.__code__, stamps=_STAMPS["NamedTupleMeta"]):
        meta.__new__ = staticmethod(_named_tuple_new)
