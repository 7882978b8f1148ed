"""Run-time values: bool, int, float, str as themselves; lists are tuples, maps FrozenDicts,
structs Structs (all immutable and hashable, so they can key stream instances and be compared
to skip unchanged results); functions are Closures."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mgmt.lang.errors import Pos

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # mcl's int is Go's int64
MAX_LEN = 16 * 1024 * 1024  # the longest str or list a function or an operator may build
# What one evaluation pass may do: the items of every str and list its functions and operators
# build (`sized`) and the functions it applies (`spend`), together. Each list had a limit, not
# their number: a map of ranges (`iter.map(iter.range(100000), func($x) {iter.range(100000)})`)
# took 24 GB and more than 100 s to check; now ~0.6 GB and seconds at most, then an error.
# `--max-steps N` (mgmt.config.max_steps, 16 Mi by default) sets it for a program that needs more.
# A str's bytes cost a step each STR_BYTES (`sized_str`): copying them is cheap, and a left fold
# that appends lines (`iter.reduce("", $lines, func($a, $l) { $a + $l })`) copies its text
# again at every line: counted byte by byte, a hosts file of 1,000 lines (40 KB) was refused.
# The strs one pass may build stay bounded (--max-steps * STR_BYTES: 256 MB by default).
STR_BYTES = 16
_pass = threading.local()  # .budget: the Budget of the pass running in this thread


def int64(value: int) -> int:
    """The value if it fits an mcl int; ArithmeticError (Go would wrap around: mcl refuses)."""
    if not INT_MIN <= value <= INT_MAX:
        shown = str(value) if abs(value) < 10**40 else f"~{float(value):.3e}"
        raise OverflowError(f"integer overflow: {shown} does not fit 64 bits")
    return value


def sized(length: int) -> int:
    """The length if a str or list that long may be built; ValueError otherwise (and
    GraphLimitError past what the pass may build, `spend`)."""
    if length > MAX_LEN:
        raise ValueError(f"result too large: {length:,} items (the limit is {MAX_LEN:,})")
    spend(length)
    return length


def sized_str(length: int) -> int:
    """`sized` for a str `length` bytes long: a step every STR_BYTES of it (at least one)."""
    if length > MAX_LEN:
        raise ValueError(f"result too large: {length:,} items (the limit is {MAX_LEN:,})")
    spend(length // STR_BYTES + 1)
    return length


class Budget:
    """What an evaluation pass may still spend (`limit`, --max-steps, at its start)."""

    __slots__ = ("left", "limit")

    def __init__(self, left: int) -> None:
        self.left = self.limit = left


UNBOUNDED = Budget(2**62)  # outside a pass: a function a test calls


@contextlib.contextmanager
def budget() -> Iterator[Budget]:
    """Bound what an evaluation pass spends (`spend`, and the runtime's own count of the
    functions it applies and loop iterations) to --max-steps (mgmt.config), in this thread."""
    from mgmt.config import max_steps

    before = getattr(_pass, "budget", None)
    _pass.budget = spent = Budget(max_steps())
    try:
        yield spent
    finally:
        _pass.budget = before


def spend(units: int, pos: Pos | None = None) -> None:
    """Count `units` (items built, iterations) against the pass's budget; past it, `exceeded`."""
    spent = getattr(_pass, "budget", None)
    if spent is None:  # no pass running (a test calling a function)
        return
    spent.left -= units
    if spent.left < 0:
        raise exceeded(pos)


def exceeded(pos: Pos | None) -> Exception:
    """The pass spent its budget: GraphLimitError (the same on every host: `mgmt check`
    refuses the program), at `pos`."""
    from mgmt.lang.errors import GraphLimitError

    spent = getattr(_pass, "budget", None)
    limit = spent.limit if spent is not None else 0
    return GraphLimitError(
        f"the program takes more than {limit:,} steps in one evaluation (a step: "
        f"an item of a list or {STR_BYTES} bytes of a str built, a function applied, a loop's "
        "iteration; nested loops and maps multiply them; --max-steps N sets the limit)",
        pos,
    )


def go_len(value: Any) -> int:
    """Go's len: a str's bytes (UTF-8), a list's or a map's items, as mgmt's `len`."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode())
    return len(value)


class FrozenDict(dict[Any, Any]):
    """An immutable, hashable map (mcl's map)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("mcl values are immutable")

    __setitem__ = __delitem__ = _immutable
    update = clear = pop = popitem = setdefault = _immutable  # type: ignore[assignment]


class Struct(FrozenDict):
    """An mcl struct: field name -> value, in declaration order."""


class Closure:
    """A function value: a lambda with the parameters of the enclosing lambdas it captured."""

    __slots__ = ("call", "env", "node")

    def __init__(self, node: Any, env: FrozenDict, call: Callable[..., Any]) -> None:
        self.node = node
        self.env = env
        self.call = call

    def __call__(self, *args: Any) -> Any:
        return self.call(self, *args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Closure) and other.node is self.node and other.env == self.env

    def __hash__(self) -> int:
        return hash((id(self.node), self.env))

    def __repr__(self) -> str:
        return f"<func at {self.node.pos}>"


def to_plain(value: Any) -> Any:
    """A value as plain Python data for a resource param: lists, dicts."""
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def go_float(value: float) -> str:
    """A float as Go's %v prints it (strconv 'g', shortest): 2 -> "2", 0.5 -> "0.5"."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    if "e" in text or "E" in text:
        mantissa, exp = text.split("e")
        mantissa = mantissa.removesuffix(".0")
        sign = "-" if exp.startswith("-") else "+"
        return f"{mantissa}e{sign}{int(exp.lstrip('+-')):02d}"
    exponent = math.floor(math.log10(abs(value))) if value else 0
    if exponent >= 21:
        return go_float_exp(value)
    return text.removesuffix(".0")


def go_float_exp(value: float) -> str:
    text = f"{value:e}"
    mantissa, exp = text.split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    sign = "-" if exp.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exp.lstrip('+-')):02d}"


def go_str(value: Any) -> str:
    """A value as Go's %v prints it (what templates show; nil as `<nil>`; a Struct as a Go
    struct, `{web 80}`: a template sees mcl's structs as maps but for a map's key, go_data)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, Struct):
        return "{" + " ".join(go_str(v) for v in value.values()) + "}"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v)}" for k, v in items) + "]"
    if isinstance(value, tuple | list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def go_quote(text: str) -> str:
    """Go's strconv.Quote: double-quoted, printable characters kept, the rest escaped."""
    out = ['"']
    for c in text:
        if c in _QUOTED:
            out.append(_QUOTED[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


_QUOTED = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_QUOTED |= {"\v": "\\v", "\\": "\\\\", '"': '\\"'}


def mcl_float(value: float) -> str:
    """A float as mgmt's FloatValue.String() prints it (Go's strconv.FormatFloat(v, 'f', -1,
    64)): the shortest digits that read back the same, never an exponent: 0.75, 2, 1e21 as
    1000000000000000000000."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return f"{Decimal(repr(value)).normalize():f}"


def mcl_str(value: Any) -> str:
    """A value as mgmt's Value.String() prints it (lang/types/value.go), what its fmt.printf
    shows for %v of a float, a list, a map or a struct: `[1, 2]`, `{"a": 1}` (keys sorted),
    `struct{x: 1; y: "s"}`, strings quoted as Go's strconv.Quote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return mcl_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, Struct):
        return "struct{" + "; ".join(f"{k}: {mcl_str(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        keys = sorted(value, key=_mcl_order)
        return "{" + ", ".join(f"{mcl_str(k)}: {mcl_str(value[k])}" for k in keys) + "}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(mcl_str(v) for v in value) + "]"
    return str(value)


def _mcl_order(value: Any) -> Any:
    """mgmt's Value.Less for sorting a map's keys: numbers, strings and bools (false first) as
    themselves, the others by their String()."""
    return value if isinstance(value, int | float | str) else mcl_str(value)


def _sort_key(value: Any) -> Any:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def sort_key(value: Any) -> Any:
    """An ordering usable for any one type of mcl value (map keys, list.sort)."""
    return _sort_key(value)
