"""import "fmt": printf."""

from __future__ import annotations

from mgmt.lang import ast
from mgmt.lang.errors import plural
from mgmt.lang.funcs.registry import Typer, define
from mgmt.lang.gofmt import VERB_TYPES, sprintf, verbs
from mgmt.lang.types import BASIC, STR, Type


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


define(
    "fmt.printf",
    "func(str) str",
    typing=_type_printf,
    impl=lambda fmt, *args: sprintf(fmt, args),
)
