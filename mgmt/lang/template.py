"""Go's text/template, as mgmt's golang.template runs it (a template named "template").

A struct is a map of its Title-cased fields, as mgmt makes it (`{{ .Load }}` for
`struct{load => ...}`).
The language is Go's: text and actions with `{{-`/`-}}` trimming and `{{/* comments */}}`;
operands `.`, `.Field.Sub`, `$`, `$var`, `$var.Field`, `(pipeline).Field`, "strings" (Go
escapes), `raw strings`, 'c' (a rune: its number), numbers (Go's forms: 0x1F, 1e3, 1_000),
true, false, nil; pipelines `a | f b` (the left value is the last argument of f); variables
`{{ $x := pipeline }}` (until the end of the enclosing block) and `{{ $x = pipeline }}`;
`{{ if }}`, `{{ else if }}`, `{{ else with }}`, `{{ else }}`, `{{ range }}` (lists, maps by
sorted key, ints; `range $i, $e := .L`, `range $k, $v := .M`, `range $e := .L`, with
`{{ break }}` and `{{ continue }}`), `{{ with }}`, `{{ define "name" }}`, `{{ template "name"
pipeline }}`, `{{ block "name" pipeline }}`, `{{ end }}`.
Functions: Go's builtins (and, or, not, call, html, index, slice, js, len, print, printf,
println, urlquery, eq, ne, lt, le, gt, ge), plus every pure builtin of the language by mgmt's
template name (e.g. `datetime_print`).

A template is parsed once per text (`compile_template`, cached); a constant template is parsed
when the program is checked (`check_template`), so its errors are compile errors there.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from mgmt.lang.errors import FuncError
from mgmt.lang.gofmt import sprintf
from mgmt.lang.template_parse import (
    NAME,
    Arg,
    Node,
    Pipe,
    Template,
    TemplateError,
    compile_template,
    where,
)
from mgmt.lang.values import MAX_LEN, STR_BYTES, FrozenDict, Struct, go_str, sort_key, spend

MAX_DEPTH = 100  # nested {{ template }} calls (Go allows 100000: Python's stack does not)


class _NoValue:
    """A missing map key (Go's invalid value): printed as `<no value>`, false, nil as an arg."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


# ---- execution ----------------------------------------------------------------------------

Funcs = Mapping[str, Callable[..., Any]]


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _State:
    def __init__(self, tmpl: Template, funcs: Funcs) -> None:
        self.tmpl = tmpl
        self.funcs = funcs
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[Any]] = []  # [name, value], innermost last
        self.depth = 0
        self.name = NAME

    def fail(self, pos: int, message: str) -> NoReturn:
        raise TemplateError(
            f'template: {where(self.tmpl.text, pos)}: executing "{self.name}": {message}'
        )

    def add(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_LEN:
            raise TemplateError(f"template: result too large: over {MAX_LEN:,} characters")
        self.out.append(text)

    def walk(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if node.kind == "text":  # most nodes: inline
                self.add(node.text)
            else:
                self.node(node, dot)

    def node(self, node: Node, dot: Any) -> None:
        kind = node.kind
        if kind == "text":
            self.add(node.text)
            return
        if kind == "action":
            assert node.pipe is not None
            value = self.pipe(node.pipe, dot)
            if not node.pipe.decl:
                self.add(_printed(value))
            return
        if kind in ("break", "continue"):
            raise _Break() if kind == "break" else _Continue()
        if kind == "template":
            self.template(node, dot)
            return
        mark = len(self.vars)
        try:
            if kind == "range":
                self.range(node, dot)
                return
            assert node.pipe is not None
            value = self.pipe(node.pipe, dot)
            if _truth(value):
                self.walk(node.body, value if kind == "with" else dot)
            else:
                self.walk(node.other, dot)
        finally:
            del self.vars[mark:]

    def template(self, node: Node, dot: Any) -> None:
        tree = self.tmpl.trees.get(node.text)
        if tree is None:
            self.fail(node.pos, f'no template "{node.text}" associated with template "{NAME}"')
        if self.depth >= MAX_DEPTH:
            self.fail(node.pos, f"exceeded maximum template depth ({MAX_DEPTH})")
        new_dot = NO_VALUE if node.pipe is None else self.pipe(node.pipe, dot)
        saved = self.vars, self.name
        self.vars, self.name = [["$", new_dot]], node.text
        self.depth += 1
        try:
            self.walk(tree, new_dot)
        finally:
            self.depth -= 1
            self.vars, self.name = saved

    def range(self, node: Node, dot: Any) -> None:
        assert node.pipe is not None
        pipe = node.pipe
        # the loop's variables are set per element, not by the pipeline
        value = self.pipe(Pipe(pipe.pos, [], False, pipe.cmds) if pipe.decl else pipe, dot)
        items = self.range_items(node.pos, value, len(pipe.decl))
        spend(len(items))  # nested ranges multiply (the pass's budget: values.budget, --max-steps)
        for key, item in items:
            mark = len(self.vars)
            if len(pipe.decl) == 1:
                self.vars.append([pipe.decl[0], item])
            elif len(pipe.decl) == 2:
                self.vars.append([pipe.decl[0], key])
                self.vars.append([pipe.decl[1], item])
            try:
                self.walk(node.body, item)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del self.vars[mark:]
        if not items:
            self.walk(node.other, dot)

    def range_items(self, pos: int, value: Any, nvars: int) -> list[tuple[Any, Any]]:
        if isinstance(value, dict) and not isinstance(value, Struct):
            return [(k, value[k]) for k in sorted(value, key=sort_key)]
        if isinstance(value, tuple | list):
            return list(enumerate(value))
        if isinstance(value, int) and not isinstance(value, bool):
            if nvars > 1:
                self.fail(pos, f"can't use {value} to iterate over more than one variable")
            if value > MAX_LEN:
                self.fail(pos, f"range over {value:,}: over {MAX_LEN:,} iterations")
            return [(i, i) for i in range(value)]
        if value is None or value is NO_VALUE:
            return []
        self.fail(pos, f"range can't iterate over {_printed(value)}")

    def pipe(self, pipe: Pipe, dot: Any) -> Any:
        value: Any = NO_VALUE
        for index, cmd in enumerate(pipe.cmds):
            value = self.command(cmd, dot, value if index else NO_VALUE, index > 0)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(pipe.pos, name, value)
            else:
                self.vars.append([name, value])
        return value

    def set_var(self, pos: int, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        self.fail(pos, f"undefined variable: {name}")

    def var(self, pos: int, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        self.fail(pos, f"undefined variable: {name}")

    def command(self, cmd: list[Arg], dot: Any, final: Any, has_final: bool) -> Any:
        first = cmd[0]
        if first.kind == "ident" and not first.fields:
            return self.call(first, cmd[1:], dot, final, has_final)
        if len(cmd) > 1 or has_final:
            self.fail(first.pos, f"can't give argument to non-function {_shown_arg(first)}")
        if first.kind == "nil":
            self.fail(first.pos, "nil is not a command")
        return self.arg(first, dot)

    def arg(self, arg: Arg, dot: Any) -> Any:
        kind = arg.kind
        if kind == "field":
            return self.fields(arg.pos, dot, arg.fields)
        if kind == "dot":
            value = dot
        elif kind == "var":
            value = self.var(arg.pos, arg.value)
        elif kind in ("str", "num", "bool"):
            value = arg.value
        elif kind == "nil":
            return None
        elif kind == "pipe":
            value = self.pipe(arg.value, dot)
        else:  # a function as an argument: called without arguments (Go's niladic call)
            value = self.call(arg, [], dot, NO_VALUE, False)
        return self.fields(arg.pos, value, arg.fields) if arg.fields else value

    def fields(self, pos: int, value: Any, names: tuple[str, ...]) -> Any:
        for name in names:
            if isinstance(value, Struct):
                if name not in value:
                    self.fail(pos, f"can't evaluate field {name} in type {_type_name(value)}")
                value = value[name]
            elif isinstance(value, dict):
                value = value.get(name, NO_VALUE)
            elif value is None or value is NO_VALUE:  # Go's invalid value: no error
                value = NO_VALUE
            else:
                self.fail(pos, f"can't evaluate field {name} in type {_type_name(value)}")
        return value

    def call(self, fn: Arg, args: list[Arg], dot: Any, final: Any, has_final: bool) -> Any:
        name = fn.value
        if name in ("and", "or"):  # short-circuit, as Go's (1.18+)
            if not args and not has_final:
                self.fail(fn.pos, f"wrong number of args for {name}: want at least 1 got 0")
            value: Any = None
            for arg in args:
                value = _plain(self.arg(arg, dot))
                if _truth(value) == (name == "or"):
                    return value
            return _plain(final) if has_final else value
        values = [_plain(self.arg(arg, dot)) for arg in args]
        if has_final:
            values.append(_plain(final))
        impl = self.funcs.get(name)
        if impl is None:
            self.fail(fn.pos, f'function "{name}" not defined')
        try:
            return go_data(impl(*values))
        except TemplateError as err:
            self.fail(fn.pos, f"error calling {name}: {str(err).removeprefix('template: ')}")
        except FuncError as err:
            self.fail(fn.pos, f"error calling {name}: {err}")
        except TypeError as err:
            self.fail(fn.pos, f"wrong arguments for {name}: {err}")
        except (ValueError, KeyError, IndexError, ZeroDivisionError, ArithmeticError) as err:
            self.fail(fn.pos, f"error calling {name}: {err}")


def _plain(value: Any) -> Any:
    """A value as an argument of a function: a missing key is nil."""
    return None if value is NO_VALUE else value


def _printed(value: Any) -> str:
    """A value as a template prints it (Go's fmt.Print, and `<no value>`)."""
    if type(value) is str:
        return value
    if value is NO_VALUE:
        return "<no value>"
    return go_str(value)


def _shown_arg(arg: Arg) -> str:
    if arg.kind == "str":
        return f'"{arg.value}"'
    if arg.kind == "field":
        return "." + ".".join(arg.fields)
    if arg.kind == "dot":
        return "."
    if arg.kind == "nil":
        return "nil"
    return go_str(arg.value)


# Go's names of the types mcl values have in a template (bool before int, Struct before dict).
_GO_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "bool"),
    (int, "int64"),
    (float, "float64"),
    (str, "string"),
    (Struct, "struct"),
    (dict, "map"),
    ((tuple, list), "slice"),
)


def _type_name(value: Any) -> str:
    return next((name for t, name in _GO_TYPES if isinstance(value, t)), type(value).__name__)


def _sprint(*args: Any) -> str:
    """Go's fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if index and not isinstance(arg, str) and not isinstance(args[index - 1], str):
            out.append(" ")
        out.append(go_str(arg))
    return "".join(out)


def _sprintln(*args: Any) -> str:
    return " ".join(go_str(a) for a in args) + "\n"


def render(text: str, data: Any, funcs: Funcs) -> str:
    """Execute a template on `data`; TemplateError on a bad template or value.

    As in mgmt, a struct is a map of its Title-cased fields (`struct{load => 1}` is
    `{{ .Load }}`, wherever the struct is: the data, a list's item, a map's value); a map's keys
    are not (go_data)."""
    tmpl = compile_template(text, frozenset(funcs))
    data = NO_VALUE if data is None else go_data(data)
    state = _State(tmpl, funcs)
    state.vars = [["$", data]]
    try:
        state.walk(tmpl.trees[NAME], data)
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    # What it built counts as a str built does (values.sized_str: a step every STR_BYTES
    # bytes), once at its end (one render builds MAX_LEN at most): before, a template's text
    # in a range built megabytes in a few steps, beside the budget of --max-steps.
    spend(state.size // STR_BYTES + 1)
    return "".join(state.out)


def check_template(text: str, funcs: Funcs) -> None:
    """Parse a template (TemplateError if it is not a valid one), as the checker does for a
    constant template."""
    compile_template(text, frozenset(funcs))


def go_data(value: Any) -> Any:
    """A value as mgmt hands it to Go's text/template (lang/core/golang/template.go, convert):
    a struct is a map of its Title-cased fields (so it prints as `map[Name:web Port:80]`, a
    `range` goes over its values, and a missing field is `<no value>`, as any map's missing key);
    as a map's key it is a Go struct of Title-cased fields (`{web 80}`)."""
    if isinstance(value, Struct):
        return FrozenDict({_title(name): go_data(v) for name, v in value.items()})
    if isinstance(value, dict):
        return FrozenDict({_go_key(k): go_data(v) for k, v in value.items()})
    if isinstance(value, tuple):
        return tuple(go_data(v) for v in value)
    return value


def _go_key(value: Any) -> Any:
    if isinstance(value, Struct):
        return Struct({_title(name): _go_key(v) for name, v in value.items()})
    return value


def _title(name: str) -> str:
    return name[:1].upper() + name[1:]


# ---- Go's builtin functions ---------------------------------------------------------------


def _truth(value: Any) -> bool:
    if value is None or value is NO_VALUE:
        return False
    if isinstance(value, bool | int | float | str | tuple | list) or (
        isinstance(value, dict) and not isinstance(value, Struct)
    ):
        return bool(value)
    return True


def _basic(value: Any, op: str) -> str:
    """The kind of a value eq, lt... compare (nil or a basic kind), else TemplateError."""
    if value is None:
        return "nil"
    kind = _type_name(value)
    if kind not in ("bool", "int64", "float64", "string"):
        raise TemplateError(f"{op}: invalid type for comparison")
    return kind


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    kind = _basic(a, "eq")
    for b in others:
        other = _basic(b, "eq")
        if other != kind and "nil" not in (kind, other):
            raise TemplateError("incompatible types for comparison")
        if a == b and other == kind:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _order(op: str) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        kind, other = _basic(a, op), _basic(b, op)
        if kind in ("bool", "nil") or other in ("bool", "nil"):
            raise TemplateError("invalid type for comparison")
        if kind != other:
            raise TemplateError("incompatible types for comparison")
        result: bool = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
        return result

    return compare


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())  # Go counts bytes
    if isinstance(value, tuple | list | dict) and not isinstance(value, Struct):
        return len(value)
    raise TemplateError(f"len of type {_type_name(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if value is None:
            raise TemplateError("index of untyped nil")
        if isinstance(value, str | tuple | list):
            items = value.encode() if isinstance(value, str) else value
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError(f"cannot index slice/array with type {_type_name(key)}")
            if not 0 <= key < len(items):
                raise TemplateError(f"index out of range: {key}")
            value = items[key]
        elif isinstance(value, dict) and not isinstance(value, Struct):
            # a missing key: the zero value of the map's values
            value = value[key] if key in value else _zero(next(iter(value.values()), None))
        else:
            raise TemplateError(f"can't index item of type {_type_name(value)}")
    return value


def _zero(example: Any) -> Any:
    if isinstance(example, bool):
        return False
    if isinstance(example, int | float | str):
        return type(example)()
    return None


def _slice(value: Any, *bounds: Any) -> Any:
    if value is None:
        raise TemplateError("slice of untyped nil")
    if len(bounds) > 3:
        raise TemplateError(f"too many slice indexes: {len(bounds)}")
    if not isinstance(value, str | tuple | list):
        raise TemplateError(f"can't slice item of type {_type_name(value)}")
    items: Any = value.encode() if isinstance(value, str) else value
    if isinstance(value, str) and len(bounds) == 3:
        raise TemplateError("cannot 3-index slice a string")
    idx = [0, len(items), len(items)]
    for i, bound in enumerate(bounds):
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise TemplateError(f"cannot index slice/array with type {_type_name(bound)}")
        if not 0 <= bound <= len(items):
            raise TemplateError(f"index out of range: {bound}")
        idx[i] = bound
    if idx[0] > idx[1]:
        raise TemplateError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(bounds) == 3 and idx[1] > idx[2]:
        raise TemplateError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = items[idx[0] : idx[1]]
    return part.decode(errors="replace") if isinstance(value, str) else part


def _eval_args(args: tuple[Any, ...]) -> str:
    """The text the escapers work on: the one string argument, or fmt.Sprint of them all."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return _sprint(*args)


_HTML = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E"}
_JS |= {"&": "\\u0026", "=": "\\u003D"}


def _html(*args: Any) -> str:
    return "".join(_HTML.get(c, c) for c in _eval_args(args))


def _js(*args: Any) -> str:
    out: list[str] = []
    for c in _eval_args(args):
        if c in _JS:
            out.append(_JS[c])
        elif c < " " or (ord(c) >= 0x80 and not c.isprintable()):
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(args), safe="")


def _not(value: Any) -> bool:
    return not _truth(value)


def _call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise TemplateError("call of nil")
    if not callable(fn):
        raise TemplateError(f"non-function of type {_type_name(fn)}")
    return fn(*args)


BASE_FUNCS: dict[str, Callable[..., Any]] = {
    "and": lambda *args: args[-1],  # evaluated lazily by the executor (short-circuit)
    "or": lambda *args: args[-1],
    "call": _call,
    "html": _html,
    "index": _index,
    "slice": _slice,
    "js": _js,
    "len": _len,
    "not": _not,
    "print": _sprint,
    "printf": lambda fmt, *args: sprintf(fmt, args),
    "println": _sprintln,
    "urlquery": _urlquery,
    "eq": _eq,
    "ne": _ne,
    **{op: _order(op) for op in ("lt", "le", "gt", "ge")},
}
