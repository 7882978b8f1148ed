"""import "golang": Go's text/template.

A template that is a constant (a literal, or a variable bound to one) is parsed when the program
is checked: a template Go would refuse is a compile error at the call (with the template's own
line:col), as `fmt.printf`'s constant format is checked. Any other template is parsed when
applied.
"""

from __future__ import annotations

from typing import Any

from mgmt.lang import ast
from mgmt.lang.funcs.registry import Typer, define, template_funcs
from mgmt.lang.template import check_template, render
from mgmt.lang.template_parse import TemplateError
from mgmt.lang.types import STR, Type


def golang_template(text: str, data: Any = None) -> str:
    return render(text, data, template_funcs())


def type_template(typer: Typer, e: ast.Call, args: list[Type]) -> Type:
    """template(text[, data]): a str, of any data; a constant text parsed now."""
    name = e.func or "golang.template"
    if len(args) not in (1, 2):
        raise typer.abort(e.pos, f"{name}: expected a template and its data, got {len(args)} args")
    typer.expect(args[0], STR, e.args[0].pos, f"{name}'s template")
    text = ast.constant(e.args[0])
    if text is not None and isinstance(text.value, str):
        try:
            check_template(text.value, template_funcs())
        except TemplateError as err:
            raise typer.abort(e.pos, f"{name}: {err}") from None
    return STR


define(
    "golang.template",
    "func(str, ?1) str",
    typing=type_template,
    impl=golang_template,
    doc="Go text/template",
)
