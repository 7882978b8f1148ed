"""The standard library: every builtin function with its type signature(s) and implementation.

Modules are imported by name (`import "strings"`); core functions (len, contains, history,
debounce, template) need no import. Signatures use mgmt's type syntax; a function with several
signatures is overloaded (the checker picks the one the argument types allow). A few functions
cannot be typed by a signature (fmt.printf's arguments follow its format): they have a typing
rule of their own, defined here next to them (`Builtin.typing`), which the checker calls.
"""

from __future__ import annotations

import math
import operator
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mgmt.lang import ast, streams
from mgmt.lang.errors import Abort, FuncError, Pos, plural
from mgmt.lang.gofmt import VERB_TYPES, go_time_format, go_time_string, sprintf, verbs
from mgmt.lang.template import BASE_FUNCS, render
from mgmt.lang.types import BASIC, BOOL, INT, STR, TList, TStruct, TVar, Type, prune, show
from mgmt.lang.values import FrozenDict, go_float, go_str, int64, sized, sort_key


@dataclass(frozen=True)
class Context:
    """What context-dependent builtins see: the agent's hostname, the cluster's World."""

    hostname: str
    # The World once the agent has started the cluster (world.* functions wait for it).
    world: streams.WorldRef = field(default_factory=streams.WorldRef, compare=False)


class Typer(Protocol):
    """What a typing rule may ask of the checker's type inference (mgmt.lang.infer)."""

    def expect(self, actual: Type, expected: Type, pos: Pos, context: str) -> None:
        """Unify, or record `type error: {context}: expected ..., got ...` and raise Abort."""

    def has_field(self, pos: Pos, obj: Type, name: str) -> Type:
        """The type of `obj`'s field `name`, checked once `obj`'s type is known."""

    def problem(self, pos: Pos, message: str) -> None:
        """Record a problem and go on."""

    def abort(self, pos: Pos, message: str) -> Abort:
        """Record a problem; the rule raises what it returns."""


# A typing rule: the call's result type, from the call and the types of its arguments.
Rule = Callable[[Typer, ast.Call, list[Type]], Type]


@dataclass(frozen=True)
class Builtin:
    # Full name: "datetime.now", or "len" for a core function.
    name: str
    # One mgmt type signature, or several for an overloaded function.
    sigs: tuple[str, ...]
    # A pure function of its arguments (with ctx: the Context first).
    impl: Callable[..., Any] | None = None
    # A function whose value changes over time.
    stream: type[streams.Stream] | None = None
    # A typing rule of its own (then `sigs` only documents it).
    typing: Rule | None = None
    ctx: bool = False
    doc: str = ""


MODULES: dict[str, dict[str, Builtin]] = {}


def _def(
    name: str,
    *sigs: str,
    impl: Callable[..., Any] | None = None,
    stream: type[streams.Stream] | None = None,
    typing: Rule | None = None,
    ctx: bool = False,
    doc: str = "",
) -> None:
    module, _, short = name.rpartition(".")
    MODULES.setdefault(module, {})[short] = Builtin(name, sigs, impl, stream, typing, ctx, doc)


def lookup(module: str, name: str) -> Builtin | None:
    return MODULES.get(module, {}).get(name)


def module_names() -> list[str]:
    return sorted(m for m in MODULES if m)


def _fail(message: str) -> FuncError:
    return FuncError(message)


# core ---------------------------------------------------------------------------------------


def _contains(needle: Any, haystack: Any) -> bool:
    return needle in haystack


_def("len", "func(str) int", "func([]?1) int", "func(map{?1: ?2}) int", impl=len)
_def("contains", "func(?1, []?1) bool", impl=_contains, doc="needle in a list")
_def("history", "func(?1, int) ?1", stream=streams.History)
_def("debounce", "func(?1, int) ?1", stream=streams.Debounce)

# fmt -----------------------------------------------------------------------------------------


def _type_printf(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """fmt.printf(format, values...): a constant format, one value per verb, of its type."""
    if not e.args or not isinstance(e.args[0], ast.Lit) or not isinstance(e.args[0].value, str):
        raise typer.abort(e.pos, "fmt.printf: the format must be a constant string")
    try:
        wanted = verbs(e.args[0].value)
    except ValueError as err:
        raise typer.abort(e.args[0].pos, f"fmt.printf: {err}") from None
    if len(wanted) != len(args) - 1:
        raise typer.abort(
            e.pos,
            f"fmt.printf: the format has {plural(len(wanted), 'verb')} "
            f"but {plural(len(args) - 1, 'value')} follow",
        )
    for index, (verb, t) in enumerate(zip(wanted, args[1:], strict=True)):
        type_name = VERB_TYPES[verb.verb]
        if type_name:
            typer.expect(t, BASIC[type_name], e.args[index + 1].pos, f"fmt.printf %{verb.verb}")
    return STR


_def(
    "fmt.printf",
    "func(str) str",
    typing=_type_printf,
    impl=lambda fmt, *args: sprintf(fmt, args),
)

# datetime ------------------------------------------------------------------------------------

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_def("datetime.now", "func() int", stream=streams.Now, doc="unix seconds, every second")
_def("datetime.print", "func(int) str", impl=go_time_string)
_def("datetime.format", "func(int, str) str", impl=go_time_format)
_def("datetime.hour", "func(int) int", impl=lambda t: int(go_time_format(t, "15")))
_def("datetime.weekday", "func(int) str", impl=lambda t: _WEEKDAYS[_weekday(t)])


def _weekday(t: int) -> int:
    import time

    return time.localtime(t).tm_wday


# sys -----------------------------------------------------------------------------------------

_def("sys.load", "func() struct{x1 float; x5 float; x15 float}", stream=streams.Load)
_def("sys.hostname", "func() str", impl=operator.attrgetter("hostname"), ctx=True)
_def(
    "sys.getenv",
    "func(str) str",
    "func(str, str) str",
    impl=lambda name, default="": os.environ.get(name) or default,
    doc="with a default: used when the variable is unset or empty (as mgmt's)",
)
_def(
    "sys.defaultenv",
    "func(str, str) str",
    impl=os.environ.get,
)
_def("sys.hasenv", "func(str) bool", impl=lambda name: name in os.environ)
_def("sys.cpu_count", "func() int", impl=streams.cpu_count)
_def("sys.cpucount", "func() int", impl=streams.cpu_count, doc="mgmt's spelling")
_def("sys.fqdn", "func() str", impl=socket.getfqdn)

# os ------------------------------------------------------------------------------------------

_def("os.readfile", "func(str) str", stream=streams.ReadFile, doc="re-emits on change")

# world ---------------------------------------------------------------------------------------
# They read the cluster: a program that imports "world" makes the agent start (or join) it.

_def(
    "world.getval",
    "func(str) struct{value str; exists bool}",
    stream=streams.GetVal,
    doc="a string of the cluster, re-emits on change",
)
_def(
    "world.kvlookup",
    "func(str) map{str: str}",
    stream=streams.KVLookup,
    doc="a per-host map of the cluster (host -> value), re-emits on change",
)

_def(
    "world.exchange",
    "func(str, str) map{str: str}",
    stream=streams.Exchange,
    doc="every host's value in a namespace (host -> value), this host's included",
)
SCHEDULE_OPTS = {"strategy": STR, "max": INT, "reuse": BOOL, "ttl": INT}
_SCHEDULE_OPTS_TYPE = TStruct(tuple(SCHEDULE_OPTS.items()))


def _type_schedule(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """world.schedule(namespace[, opts]): opts is a struct with any of SCHEDULE_OPTS's
    fields, in any order (as in mgmt), known when the call is checked."""
    if len(args) not in (1, 2):
        raise typer.abort(e.pos, f"world.schedule: expected 1 or 2 arguments, got {len(args)}")
    typer.expect(args[0], STR, e.args[0].pos, "argument 1 of world.schedule")
    if len(args) == 2:
        opts = prune(args[1])
        if isinstance(opts, TVar):  # not known here (a parameter): all the fields, then
            typer.expect(opts, _SCHEDULE_OPTS_TYPE, e.args[1].pos, "world.schedule options")
            return TList(STR)
        if not isinstance(opts, TStruct):
            raise typer.abort(
                e.args[1].pos,
                f"type error: world.schedule options: expected a struct with any of the "
                f"fields of {show(_SCHEDULE_OPTS_TYPE)}, got {show(opts)}",
            )
        for name, t in opts.fields:
            want = SCHEDULE_OPTS.get(name)
            if want is None:
                typer.problem(
                    e.args[1].pos,
                    f"world.schedule options: unknown field {name!r}; fields: "
                    + ", ".join(SCHEDULE_OPTS),
                )
            else:
                typer.expect(t, want, e.args[1].pos, f"world.schedule option {name}")
    return TList(STR)


_def(
    "world.schedule",
    "func(str) []str",
    f"func(str, {show(_SCHEDULE_OPTS_TYPE)}) []str",
    stream=streams.Schedule,
    typing=_type_schedule,
    doc="the hosts chosen among those scheduling in a namespace (opts: any of those fields)",
)
_def(
    "world/collect.res",
    "func(str) []struct{name str; host str}",
    stream=streams.CollectRes,
    doc="the exported resources of a kind this host may collect, re-emits on change",
)

# math ----------------------------------------------------------------------------------------


def _mod(a: Any, b: Any) -> Any:
    if b == 0:
        raise _fail("math.mod: division by zero")
    if isinstance(a, float):
        return math.fmod(a, b)
    rest = abs(a) % abs(b)  # Go's %: the sign follows the dividend (exact: no float)
    return rest if a >= 0 else -rest


def _sqrt(a: float) -> float:
    if a < 0:
        raise _fail(f"math.sqrt: negative argument {go_float(a)}")
    return math.sqrt(a)


_NUM2 = ("func(int, int) int", "func(float, float) float")
_NUM1 = ("func(int) int", "func(float) float")
_def("math.mod", *_NUM2, impl=_mod)
_def("math.pow", "func(float, float) float", impl=lambda a, b: float(math.pow(a, b)))
_def("math.sqrt", "func(float) float", impl=_sqrt)
_def("math.abs", *_NUM1, impl=abs)
_def("math.min", *_NUM2, impl=min)
_def("math.max", *_NUM2, impl=max)
_def("math.floor", "func(float) int", impl=math.floor)
_def("math.ceil", "func(float) int", impl=math.ceil)
_def("math.round", "func(float) int", impl=lambda a: math.floor(a + 0.5))
_def("math.minus1", "func(int) int", impl=lambda a: a - 1)

# strings -------------------------------------------------------------------------------------


def _pad(text: str, pad: str, length: int, left: bool) -> str:
    """Whole copies of `pad` until the text is at least `length` long (it may overshoot)."""
    if not pad:
        raise _fail("strings: the padding string is empty")
    if len(text) >= length:
        return text
    copies = -(-(length - len(text)) // len(pad))
    sized(len(text) + copies * len(pad))
    return pad * copies + text if left else text + pad * copies


def _repeat(text: str, count: int) -> str:
    count = max(count, 0)
    sized(len(text) * count)
    return text * count


def _range(count: int) -> tuple[int, ...]:
    sized(count)
    return tuple(range(count))


_def("strings.to_lower", "func(str) str", impl=str.lower)
_def("strings.to_upper", "func(str) str", impl=str.upper)
_def("strings.title", "func(str) str", impl=str.title)
_def("strings.trim_space", "func(str) str", impl=str.strip)
_def("strings.split", "func(str, str) []str", impl=lambda s, sep: tuple(s.split(sep)))
_def("strings.join", "func([]str, str) str", impl=lambda items, sep: sep.join(items))
_def(
    "strings.join_nonempty",
    "func([]str, str) str",
    impl=lambda items, sep: sep.join(i for i in items if i),
)
_def("strings.has_prefix", "func(str, str) bool", impl=str.startswith)
_def("strings.has_suffix", "func(str, str) bool", impl=str.endswith)
_def("strings.contains", "func(str, str) bool", impl=lambda s, sub: sub in s)
_def("strings.replace", "func(str, str, str) str", impl=lambda s, a, b: s.replace(a, b))
_def("strings.repeat", "func(str, int) str", impl=_repeat)
_def("strings.left_pad", "func(str, str, int) str", impl=lambda s, p, n: _pad(s, p, n, True))
_def("strings.right_pad", "func(str, str, int) str", impl=lambda s, p, n: _pad(s, p, n, False))
_def("strings.len", "func(str) int", impl=len)

# golang --------------------------------------------------------------------------------------


def _template(text: str, data: Any) -> str:
    return render(text, data, template_funcs())


_def("golang.template", "func(str, ?1) str", impl=_template, doc="Go text/template subset")
_def("template", "func(str, ?1) str", impl=_template, doc="mgmt's older name")
_def("random1", "func(int) str", stream=streams.Random, doc="a random string, drawn once")


def _type_structlookup(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    if len(args) != 2 or not (isinstance(e.args[1], ast.Lit) and isinstance(e.args[1].value, str)):
        raise typer.abort(e.pos, 'structlookup(struct, "field"): the field must be a constant')
    return typer.has_field(e.pos, args[0], e.args[1].value)


_def(
    "structlookup",
    "func(?1, str) ?2",
    typing=_type_structlookup,
    impl=lambda struct, name: struct[name],
    doc="a struct's field by its (constant) name: $s->name",
)

# list ----------------------------------------------------------------------------------------


def _first(items: tuple[Any, ...]) -> Any:
    if not items:
        raise _fail("list.first: the list is empty")
    return items[0]


def _last(items: tuple[Any, ...]) -> Any:
    if not items:
        raise _fail("list.last: the list is empty")
    return items[-1]


def _lookup_default(items: tuple[Any, ...], index: int, default: Any) -> Any:
    return items[index] if 0 <= index < len(items) else default


_def("list.concat", "func([]?1, []?1) []?1", impl=lambda a, b: a + b)
_def("list.contains", "func([]?1, ?1) bool", impl=lambda items, x: x in items)
_def("list.len", "func([]?1) int", impl=len)
_def("list.first", "func([]?1) ?1", impl=_first)
_def("list.last", "func([]?1) ?1", impl=_last)
_def("list.reverse", "func([]?1) []?1", impl=lambda items: tuple(reversed(items)))
_def("list.sort", "func([]?1) []?1", impl=lambda items: tuple(sorted(items, key=sort_key)))
_def("list.uniq", "func([]?1) []?1", impl=lambda items: tuple(dict.fromkeys(items)))
_def("list.lookup_default", "func([]?1, int, ?1) ?1", impl=_lookup_default)

# map -----------------------------------------------------------------------------------------


def _sorted_keys(m: FrozenDict) -> tuple[Any, ...]:
    return tuple(sorted(m, key=sort_key))


_def("map.keys", "func(map{?1: ?2}) []?1", impl=_sorted_keys, doc="sorted")
_def(
    "map.values",
    "func(map{?1: ?2}) []?2",
    impl=lambda m: tuple(m[k] for k in _sorted_keys(m)),
    doc="in key order",
)
_def("map.contains", "func(map{?1: ?2}, ?1) bool", impl=lambda m, k: k in m)
_def("map.len", "func(map{?1: ?2}) int", impl=len)
_def(
    "map.lookup_default",
    "func(map{?1: ?2}, ?1, ?2) ?2",
    impl=lambda m, k, default: m.get(k, default),
)

# iter ----------------------------------------------------------------------------------------

_def(
    "iter.map",
    "func([]?1, func(?1) ?2) []?2",
    impl=lambda items, fn: tuple(fn(x) for x in items),
)
_def(
    "iter.filter",
    "func([]?1, func(?1) bool) []?1",
    impl=lambda items, fn: tuple(x for x in items if fn(x)),
)
_def("iter.range", "func(int) []int", impl=_range)

# convert -------------------------------------------------------------------------------------


# What Go's strconv.ParseInt(s, 10, 64) and ParseFloat(s, 64) read: ASCII only (Python's int()
# and float() also take other scripts' digits, "١٢٣", and "1_000"). Floats may have spaces
# around them, as before.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)


def _parse_int(text: str) -> int:
    if not _INT_TEXT.fullmatch(text):
        raise _fail(f"cannot parse {text!r} as an int (ASCII digits, with an optional sign)")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19:  # past int64 whatever they are: no int() of thousands of digits
        raise OverflowError(f"integer overflow: {text[:40]!r} does not fit 64 bits")
    return int64(int(text))


def _parse_float(text: str) -> float:
    stripped = text.strip()
    if not _FLOAT_TEXT.fullmatch(stripped):
        raise _fail(f"cannot parse {text!r} as a float")
    value = float(stripped)
    if math.isinf(value) and "inf" not in stripped.lower():
        raise _fail(f"cannot parse {text!r} as a float: out of range")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "t"):
        return True
    if lowered in ("false", "0", "f"):
        return False
    raise _fail(f"cannot parse {text!r} as a bool")


_def("convert.to_float", "func(int) float", impl=float)
_def("convert.to_int", "func(float) int", impl=int)
_def("convert.to_str", "func(int) str", "func(float) str", "func(bool) str", impl=go_str)
_def("convert.format_bool", "func(bool) str", impl=go_str)
_def("convert.format_int", "func(int) str", impl=str)
_def("convert.format_float", "func(float) str", impl=go_float)
_def("convert.parse_bool", "func(str) bool", impl=_parse_bool)
_def("convert.str_to_int", "func(str) int", impl=_parse_int)
_def("convert.str_to_float", "func(str) float", impl=_parse_float)
_def("convert.parse_int", "func(str) int", impl=_parse_int)
_def("convert.parse_float", "func(str) float", impl=_parse_float)

_TEMPLATE_FUNCS: dict[str, Callable[..., Any]] = {}


def template_funcs() -> dict[str, Callable[..., Any]]:
    """Functions a template may call: Go's, and every pure builtin as `package_name`."""
    if not _TEMPLATE_FUNCS:
        _TEMPLATE_FUNCS.update(BASE_FUNCS)
        for module, table in MODULES.items():
            for short, builtin in table.items():
                if builtin.impl is None or builtin.ctx or builtin.typing:
                    continue
                if short == "template":
                    continue
                _TEMPLATE_FUNCS.setdefault(f"{module}_{short}" if module else short, builtin.impl)
    return _TEMPLATE_FUNCS
