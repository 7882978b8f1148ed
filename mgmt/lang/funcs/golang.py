"""import "golang": Go's text/template."""

from __future__ import annotations

from typing import Any

from mgmt.lang.funcs.registry import define, template_funcs
from mgmt.lang.template import render


def golang_template(text: str, data: Any) -> str:
    return render(text, data, template_funcs())


define("golang.template", "func(str, ?1) str", impl=golang_template, doc="Go text/template subset")
