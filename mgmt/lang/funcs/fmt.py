"""import "fmt": printf.

The format is usually a constant (a literal, or a variable bound to one): its verbs then type
the values at check time. As in mgmt, it may also be any other string expression: the values'
types must then be known from elsewhere, and each value is checked against its verb when the
format is applied (a mismatch, or a verb without a value, is a run-time error).
"""

from __future__ import annotations

from typing import Any

from mgmt.lang import ast
from mgmt.lang.errors import plural
from mgmt.lang.funcs.registry import Typer, define, fail
from mgmt.lang.gofmt import VERB_TYPES, sprintf, verbs
from mgmt.lang.types import BASIC, STR, Type


def _type_printf(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """fmt.printf(format, values...): one value per verb, of its type (if format is constant)."""
    if not e.args:
        raise typer.abort(e.pos, "fmt.printf: expected a format and its values, got nothing")
    typer.expect(args[0], STR, e.args[0].pos, "fmt.printf's format")
    fmt = ast.constant(e.args[0])
    if fmt is None or not isinstance(fmt.value, str):
        return STR  # checked when applied (_printf)
    try:
        wanted = verbs(fmt.value)
    except ValueError as err:
        raise typer.abort(e.args[0].pos, f"fmt.printf: {err}") from None
    if len(wanted) != len(args) - 1:
        raise typer.abort(
            e.pos,
            f"fmt.printf: the format has {plural(len(wanted), 'verb')} "
            f"but {plural(len(args) - 1, 'value')} "
            f"{'follows' if len(args) == 2 else 'follow'}",
        )
    for index, (verb, t) in enumerate(zip(wanted, args[1:], strict=True)):
        type_name = VERB_TYPES[verb.verb]
        if type_name:
            typer.expect(t, BASIC[type_name], e.args[index + 1].pos, f"fmt.printf %{verb.verb}")
    return STR


_PY_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _printf(fmt: str, *values: Any) -> str:
    """The format applied; a format that is not a constant is checked against the values here
    (a constant one was checked already, so this finds nothing)."""
    try:
        wanted = verbs(fmt)
    except ValueError as err:
        raise fail(str(err)) from None
    if len(wanted) > len(values):
        raise fail(f"more verbs ({len(wanted)}) than values ({len(values)}) in {fmt!r}")
    for index, (verb, value) in enumerate(zip(wanted, values, strict=False)):
        type_name = VERB_TYPES[verb.verb]
        if type_name and type(value) is not _PY_TYPES[type_name]:
            raise fail(
                f"%{verb.verb} (verb {index + 1} of {fmt!r}) needs a value of type {type_name}"
            )
    try:
        return sprintf(fmt, values, mgmt=True)
    except ValueError as err:
        raise fail(str(err)) from None


define("fmt.printf", "func(str) str", typing=_type_printf, impl=_printf)
