"""The standard library: every builtin function with its type signature(s) and implementation.

Modules are imported by name (`import "strings"`); core functions (len, contains, history,
debounce, template) need no import. Signatures use mgmt's type syntax; a function with several
signatures is overloaded (the checker picks the one the argument types allow). A few functions
cannot be typed by a signature (fmt.printf's arguments follow its format): they have a typing
rule of their own, defined next to them (`Builtin.typing`), which the checker calls.

One module of this package per module of mgmt's function tree; `registry` holds the table.
"""

from __future__ import annotations

from mgmt.lang.funcs import (
    convert,
    core,
    datetime,
    deploy,
    encoding,
    example,
    fmt,
    golang,
    golang_html,
    golang_math,
    golang_os,
    golang_path,
    golang_runtime,
    golang_strconv,
    golang_strings,
    iter,
    list,
    local,
    map,
    math,
    net,
    net_http,
    os,
    regexp,
    strings,
    sys,
    test,
    util,
    value,
    world,
)
from mgmt.lang.funcs.registry import (
    MODULES,
    RENAMED,
    Builtin,
    Context,
    Rule,
    Typer,
    lookup,
    module_names,
    template_funcs,
)

__all__ = [
    "MODULES",
    "RENAMED",
    "Builtin",
    "Context",
    "Rule",
    "Typer",
    "convert",
    "core",
    "datetime",
    "deploy",
    "encoding",
    "example",
    "fmt",
    "golang",
    "golang_html",
    "golang_math",
    "golang_os",
    "golang_path",
    "golang_runtime",
    "golang_strconv",
    "golang_strings",
    "iter",
    "list",
    "local",
    "lookup",
    "map",
    "math",
    "module_names",
    "net",
    "net_http",
    "os",
    "regexp",
    "strings",
    "sys",
    "template_funcs",
    "test",
    "util",
    "value",
    "world",
]
