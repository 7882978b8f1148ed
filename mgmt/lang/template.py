"""A subset of Go's text/template, as mgmt's golang.template uses it.

Struct fields are Title-cased as mgmt does (`{{ .Load }}` for `struct{load => ...}`).
Supported: text and `{{ pipeline }}` actions with `{{-`/`-}}` trimming and `{{/* comments */}}`;
operands `.`, `.field.sub`, `$`, `$.field`, "strings", numbers, true/false, `(pipeline)`;
pipelines `a | f b` (the left value is the last argument of f); `{{ if }}`, `{{ else if }}`,
`{{ else }}`, `{{ range }}` (lists, and maps by sorted key), `{{ with }}`, `{{ end }}`.
Functions: printf, print, len, index, eq, ne, lt, le, gt, ge, and, or, not, plus every pure
builtin of the language as `package_name` (e.g. `datetime_print`), as mgmt registers them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mgmt.lang.errors import FuncError
from mgmt.lang.gofmt import sprintf
from mgmt.lang.values import MAX_LEN, Struct, go_str, sort_key

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
    | (?P<dot>\.)
    | (?P<var>\$[A-Za-z0-9_]*)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[|()])
    )""",
    re.X,
)


@dataclass
class _Node:
    kind: str  # text, print, if, range, with
    text: str = ""
    pipe: list[list[Any]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)


class TemplateError(FuncError):
    pass


@functools.lru_cache(maxsize=256)
def compile_template(text: str) -> list[_Node]:
    """Parse a template once (cached by text)."""
    pieces: list[tuple[str, str]] = []  # ("text", s) / ("action", s)
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos : m.start()]
        if m.group(1):
            literal = literal.rstrip()
        pieces.append(("text", literal))
        pieces.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", text[pos:]))
    nodes, _, end = _parse_list(pieces, 0)
    if end is not None:
        raise TemplateError(f"template: unexpected {{{{{end}}}}}")
    return nodes


def _parse_list(pieces: list[tuple[str, str]], i: int) -> tuple[list[_Node], int, str | None]:
    """Nodes until {{end}} / {{else...}} (returned as the third value) or the end."""
    nodes: list[_Node] = []
    while i < len(pieces):
        kind, body = pieces[i]
        i += 1
        if kind == "text":
            if body:
                nodes.append(_Node("text", text=body))
            continue
        if body.startswith("/*"):
            continue
        word = body.split(None, 1)[0] if body else ""
        if word in ("end", "else"):
            return nodes, i, body
        if word in ("if", "range", "with"):
            node, i = _parse_block(pieces, i, word, body[len(word) :].strip())
            nodes.append(node)
            continue
        nodes.append(_Node("print", pipe=_parse_pipe(body)))
    return nodes, i, None


def _parse_block(pieces: list[tuple[str, str]], i: int, word: str, arg: str) -> tuple[_Node, int]:
    node = _Node(word, pipe=_parse_pipe(arg))
    node.body, i, end = _parse_list(pieces, i)
    if end is not None and end.startswith("else"):
        rest = end[4:].strip()
        if rest.startswith("if "):  # {{ else if x }} nests an if that shares our {{ end }}
            inner, i = _parse_block(pieces, i, "if", rest[3:].strip())
            node.other = [inner]
            return node, i
        node.other, i, end = _parse_list(pieces, i)
    if end != "end":
        raise TemplateError(f"template: {{{{{word}}}}} without {{{{end}}}}")
    return node, i


def _parse_pipe(text: str) -> list[list[Any]]:
    tokens = _tokenize(text)
    pipe, rest = _pipe(tokens, 0)
    if rest != len(tokens):
        raise TemplateError(f"template: unexpected {tokens[rest][1]!r} in {{{{{text}}}}}")
    if not pipe or not pipe[0]:
        raise TemplateError(f"template: empty action {{{{{text}}}}}")
    return pipe


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"template: cannot parse {text[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _pipe(tokens: list[tuple[str, str]], i: int) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "punct" and value == ")":
            break
        i += 1
        if kind == "punct" and value == "|":
            commands.append([])
        elif kind == "punct" and value == "(":
            inner, i = _pipe(tokens, i)
            if i >= len(tokens) or tokens[i][1] != ")":
                raise TemplateError("template: unclosed (")
            i += 1
            commands[-1].append(("pipe", inner))
        else:
            commands[-1].append((kind, value))
    return commands, i


Funcs = Mapping[str, Callable[..., Any]]


def render(text: str, data: Any, funcs: Funcs) -> str:
    """Execute a template on `data`; TemplateError on a bad template or value.

    As in mgmt, a struct's fields are seen Title-cased (`struct{load => 1}` is `{{ .Load }}`,
    wherever the struct is: the data, a list's item, a map's value); a map's keys are not."""
    data = go_data(data)
    out = _Out()
    _exec(compile_template(text), data, data, funcs, out)
    return "".join(out)


def go_data(value: Any) -> Any:
    """A value as mgmt hands it to Go's text/template: struct fields Title-cased."""
    if isinstance(value, Struct):
        return {name[:1].upper() + name[1:]: go_data(v) for name, v in value.items()}
    if isinstance(value, dict):
        return {k: go_data(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(go_data(v) for v in value)
    return value


class _Out(list[str]):
    """The output so far; TemplateError once it would be longer than a string may be."""

    size = 0

    def add(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_LEN:
            raise TemplateError(f"template: result too large: over {MAX_LEN:,} characters")
        self.append(text)


def _exec(nodes: list[_Node], dot: Any, root: Any, funcs: Funcs, out: _Out) -> None:
    for node in nodes:
        if node.kind == "text":
            out.add(node.text)
        elif node.kind == "print":
            out.add(go_str(_eval_pipe(node.pipe, dot, root, funcs)))
        elif node.kind == "if":
            value = _eval_pipe(node.pipe, dot, root, funcs)
            _exec(node.body if _truth(value) else node.other, dot, root, funcs, out)
        elif node.kind == "with":
            value = _eval_pipe(node.pipe, dot, root, funcs)
            if _truth(value):
                _exec(node.body, value, root, funcs, out)
            else:
                _exec(node.other, dot, root, funcs, out)
        elif node.kind == "range":
            value = _eval_pipe(node.pipe, dot, root, funcs)
            items = _range_items(value)
            for item in items:
                _exec(node.body, item, root, funcs, out)
            if not items:
                _exec(node.other, dot, root, funcs, out)


def _range_items(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value[k] for k in sorted(value, key=sort_key)]
    if isinstance(value, tuple | list):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value > MAX_LEN:
            raise TemplateError(f"template: range over {value:,}: over {MAX_LEN:,} iterations")
        return list(range(value))
    raise TemplateError(f"template: range can't iterate over {go_str(value)}")


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float | str | tuple | list | dict):
        return bool(value)
    return True


def _eval_pipe(pipe: list[list[Any]], dot: Any, root: Any, funcs: Funcs) -> Any:
    result: Any = None
    for index, command in enumerate(pipe):
        extra = [result] if index > 0 else []
        result = _eval_command(command, extra, dot, root, funcs)
    return result


def _eval_command(command: list[Any], extra: list[Any], dot: Any, root: Any, funcs: Funcs) -> Any:
    if not command:
        raise TemplateError("template: empty command in pipeline")
    kind, value = command[0]
    if kind == "ident" and value not in ("true", "false", "nil"):
        fn = funcs.get(value)
        if fn is None:
            raise TemplateError(f'template: function "{value}" not defined')
        args = [_operand(op, dot, root, funcs) for op in command[1:]] + extra
        try:
            return go_data(fn(*args))
        except FuncError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as err:
            raise TemplateError(f"template: {value}: {err}") from err
    if len(command) > 1 or extra:
        raise TemplateError(f"template: {value} is not a function")
    return _operand(command[0], dot, root, funcs)


def _operand(op: tuple[str, Any], dot: Any, root: Any, funcs: Funcs) -> Any:
    kind, value = op
    if kind == "dot":
        return dot
    if kind == "pipe":
        return _eval_pipe(value, dot, root, funcs)
    if kind == "str":
        if value.startswith("`"):
            return value[1:-1]
        return value[1:-1].encode().decode("unicode_escape")
    if kind == "num":
        return float(value) if "." in value else int(value)
    if kind == "ident":
        if value == "nil":
            return None
        return value == "true"
    if kind == "var":
        return root
    if kind == "field":
        base, _, path = value.partition(".")
        current = root if base.startswith("$") else dot
        for name in path.split("."):
            if not isinstance(current, dict) or name not in current:
                raise TemplateError(f"template: can't evaluate field {name} in {go_str(current)}")
            current = current[name]
        return current
    raise TemplateError(f"template: unexpected {value!r}")


def _compare(op: str) -> Callable[..., bool]:
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: bool(a == b),
        "ne": lambda a, b: bool(a != b),
        "lt": lambda a, b: bool(a < b),
        "le": lambda a, b: bool(a <= b),
        "gt": lambda a, b: bool(a > b),
        "ge": lambda a, b: bool(a >= b),
    }
    fn = ops[op]

    def compare(a: Any, *others: Any) -> bool:
        if op == "eq" and others:
            return any(fn(a, b) for b in others)
        if len(others) != 1:
            raise TemplateError(f"template: {op} takes two arguments")
        return fn(a, others[0])

    return compare


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise TemplateError(f"template: index of {go_str(key)} in {go_str(value)}") from None
    return value


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1] if args else True


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1] if args else False


BASE_FUNCS: dict[str, Callable[..., Any]] = {
    "printf": lambda fmt, *args: sprintf(fmt, args),
    "print": lambda *args: "".join(go_str(a) for a in args),
    "println": lambda *args: " ".join(go_str(a) for a in args) + "\n",
    "len": len,
    "index": _index,
    "not": lambda a: not _truth(a),
    "and": _and,
    "or": _or,
    **{name: _compare(name) for name in ("eq", "ne", "lt", "le", "gt", "ge")},
}
