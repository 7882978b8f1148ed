"""Go's text/template: the lexer and parser (`compile_template`), producing the tree that
mgmt.lang.template executes. Errors are Go's, with the template's line:col."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from mgmt.lang.errors import FuncError

NAME = "template"  # the name mgmt gives its template (Go's messages name it)
_KEYWORDS = frozenset(
    ("block", "break", "continue", "define", "else", "end", "if", "nil", "range", "template")
) | {"with", "true", "false"}
_SPACE = " \t\r\n"
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES |= {"\\": "\\", "'": "'", '"': '"'}


class TemplateError(FuncError):
    pass


# ---- lexing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # text, left, right, field, var, ident, str, num, char, punct, eof
    value: Any
    pos: int  # offset in the template
    space: bool = False  # preceded by space (within an action)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[_Tok] = []
        self.trim_next = False  # the last action ended with ` -}}`

    def fail(self, pos: int, message: str) -> NoReturn:
        raise TemplateError(f"template: {where(self.text, pos)}: {message}")

    def run(self) -> list[_Tok]:
        text, pos = self.text, 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                self._text(pos, len(text))
                break
            trim = text.startswith("{{-", start) and text[start + 3 : start + 4] in tuple(_SPACE)
            self._text(pos, start, trim)
            pos = self._action(start, start + (4 if trim else 2))
        self.toks.append(_Tok("eof", None, len(text)))
        return self.toks

    def _text(self, start: int, end: int, trim: bool = False) -> None:
        body = self.text[start:end]
        if trim:
            body = body.rstrip(_SPACE)
        if self.trim_next:
            self.trim_next = False
            body = body.lstrip(_SPACE)
        if body:
            self.toks.append(_Tok("text", body, start))

    def _close(self, pos: int) -> int | None:
        """The end of a closing delimiter at pos (` -}}` or `}}`, after spaces), or None."""
        text, i = self.text, pos
        while i < len(text) and text[i] in _SPACE:
            i += 1
        if i > pos and text.startswith("-}}", i):
            self.trim_next = True
            return i + 3
        if text.startswith("}}", i):
            return i + 2
        return None

    def _action(self, start: int, pos: int) -> int:
        text = self.text
        i = pos
        if text.startswith("/*", i):  # Go's comment: right after `{{` or `{{- `
            end = text.find("*/", i + 2)
            if end < 0:
                self.fail(i, "unclosed comment")
            after = self._close(end + 2)
            if after is None:
                self.fail(end, "comment ends before closing delimiter")
            return after
        self.toks.append(_Tok("left", None, start))
        space = False
        while True:
            if i >= len(text):
                self.fail(start, "unclosed action")
            closed = self._close(i)
            if closed is not None:
                self.toks.append(_Tok("right", None, i))
                return closed
            ch = text[i]
            if ch in _SPACE:
                space = True
                i += 1
                continue
            i = self._token(i, space)
            space = False

    def _token(self, i: int, space: bool) -> int:
        text = self.text
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        add = self.toks.append
        if ch == "." and (nxt.isalpha() or nxt == "_"):
            m = _IDENT.match(text, i + 1)
            assert m is not None
            add(_Tok("field", m.group(), i, space))
            return m.end()
        if ch == "." and not nxt.isdigit():
            add(_Tok("dot", None, i, space))
            return i + 1
        if ch == "$":
            m = _IDENT.match(text, i + 1)
            name = "$" + (m.group() if m else "")
            add(_Tok("var", name, i, space))
            return i + len(name)
        if ch == '"':
            return self._string(i, space)
        if ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                self.fail(i, "unterminated raw quoted string")
            add(_Tok("str", text[i + 1 : end], i, space))
            return end + 1
        if ch == "'":
            m = re.compile(r"'(\\.[^']*|[^'\\])'").match(text, i)
            if not m:
                self.fail(i, "unterminated character constant")
            add(_Tok("char", ord(_unquote(m.group()[1:-1], lambda m_: self.fail(i, m_))), i, space))
            return m.end()
        if ch.isdigit() or (ch in "+-." and (nxt.isdigit() or nxt == ".")):
            m = _NUMBER.match(text, i)
            if not m or (m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == ".")):
                self.fail(i, f"bad number syntax: {text[i : (m.end() if m else i) + 1]!r}")
            add(_Tok("num", _number(m.group(), lambda m_: self.fail(i, m_)), i, space))
            return m.end()
        if ch.isalpha() or ch == "_":
            m = _IDENT.match(text, i)
            assert m is not None
            add(_Tok("ident", m.group(), i, space))
            return m.end()
        if text.startswith(":=", i):
            add(_Tok("punct", ":=", i, space))
            return i + 2
        if ch in "=,|()":
            add(_Tok("punct", ch, i, space))
            return i + 1
        self.fail(i, f"unexpected {ch!r} in command")

    def _string(self, i: int, space: bool) -> int:
        text = self.text
        j = i + 1
        while j < len(text) and text[j] != '"':
            if text[j] == "\n":
                break
            j += 2 if text[j] == "\\" else 1
        if j >= len(text) or text[j] != '"':
            self.fail(i, "unterminated quoted string")
        value = _unquote(text[i + 1 : j], lambda m: self.fail(i, m))
        self.toks.append(_Tok("str", value, i, space))
        return j + 1


def _unquote(body: str, fail: Callable[[str], NoReturn]) -> str:
    """A Go quoted string's (or rune's) body with its escapes resolved."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1 : i + 2]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
            continue
        if esc in ("x", "u", "U"):
            width, base, start = {"x": 2, "u": 4, "U": 8}[esc], 16, i + 2
        elif esc and esc in "01234567":
            width, base, start = 3, 8, i + 1
        else:
            fail(f"invalid syntax: unknown escape '\\{esc}'")
        digits = body[start : start + width]
        try:
            code = int(digits, base) if len(digits) == width else -1
        except ValueError:
            code = -1
        if not 0 <= code <= 0x10FFFF or 0xD800 <= code < 0xE000:
            fail(f"invalid syntax: escape '{body[i : start + width]}'")
        out.append(chr(code))
        i = start + width
    return "".join(out)


def _number(text: str, fail: Callable[[str], NoReturn]) -> int | float:
    """A Go number constant: an int when it is one, else a float (Go's ideal constant)."""
    plain = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", plain):
            return int(plain, 8)
        if not re.search(r"[.eE]", plain) or re.match(r"[+-]?0[xX]", plain):
            return int(plain, 0)
        return float(plain)
    except ValueError:
        fail(f"bad number syntax: {text!r}")


def where(text: str, pos: int) -> str:
    """`template:LINE:COL` of an offset (1-based, as Go counts)."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{NAME}:{line}:{col}"


# ---- the tree -----------------------------------------------------------------------------


@dataclass
class Node:
    kind: str  # text, action, if, range, with, template, break, continue
    pos: int
    text: str = ""
    pipe: Pipe | None = None
    body: list[Node] = field(default_factory=list)
    other: list[Node] = field(default_factory=list)


@dataclass
class Pipe:
    pos: int
    decl: list[str]
    assign: bool  # `=` (set an existing variable) rather than `:=`
    cmds: list[list[Arg]]


@dataclass
class Arg:
    kind: str  # dot, field, var, ident, str, num, bool, nil, pipe
    pos: int
    value: Any = None
    fields: tuple[str, ...] = ()  # `.A.B` after the operand


@dataclass
class Template:
    """A parsed template: its body and the templates it defines (`define`, `block`)."""

    text: str
    trees: dict[str, list[Node]]


class _Parser:
    def __init__(self, text: str, funcs: frozenset[str]) -> None:
        self.text = text
        self.funcs = funcs
        self.toks = _Lexer(text).run()
        self.i = 0
        self.trees: dict[str, list[Node]] = {}
        self.vars: list[list[str]] = []

    def fail(self, pos: int, message: str) -> NoReturn:
        raise TemplateError(f"template: {where(self.text, pos)}: {message}")

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self) -> Template:
        self.vars = [["$"]]
        body: list[Node] = []
        while self.peek().kind != "eof":
            if self.peek().kind == "left" and self.peek(1).value == "define":
                define = self.next()
                self.next()
                self._define(define.pos, self._name("define"))
                continue
            body.append(self._item())
        self._add(NAME, body, 0)
        return Template(self.text, self.trees)

    def _add(self, name: str, body: list[Node], pos: int) -> None:
        old = self.trees.get(name)
        if old is not None and not _empty(old) and not _empty(body):
            self.fail(pos, f'template: multiple definition of template "{name}"')
        if old is None or not _empty(body):
            self.trees[name] = body

    def _name(self, context: str) -> tuple[str, int]:
        tok = self.next()
        if tok.kind != "str":
            self.fail(tok.pos, f"unexpected {self._shown(tok)} in {context} clause")
        return tok.value, tok.pos

    def _define(self, pos: int, name: tuple[str, int]) -> None:
        self._expect_right("define")
        saved, self.vars = self.vars, [["$"]]
        body, end = self._list()
        self.vars = saved
        if end != "end":
            self.fail(pos, f"unexpected {{{{{end}}}}} in define clause")
        self._add(name[0], body, name[1])

    def _shown(self, tok: _Tok) -> str:
        if tok.kind == "eof":
            return "EOF"
        if tok.kind == "right":
            return '"}}"'
        if tok.kind == "str":
            return f'"{tok.value}"'
        return f"<{tok.value}>" if tok.kind in ("ident", "field") else repr(str(tok.value))

    def _expect_right(self, context: str) -> None:
        tok = self.next()
        if tok.kind != "right":
            self.fail(tok.pos, f"unexpected {self._shown(tok)} in {context}")

    def _list(self) -> tuple[list[Node], str]:
        """Nodes until {{end}} or {{else}}: the nodes and which ended them ("else" leaves the
        tokens after `else` to the caller)."""
        nodes: list[Node] = []
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                self.fail(tok.pos, "unexpected EOF")
            if (
                tok.kind == "left"
                and self.peek(1).value in ("end", "else")
                and self.peek(1).kind == "ident"
            ):
                self.next()
                word = self.next().value
                if word == "end":
                    self._expect_right("end")
                return nodes, word
            nodes.append(self._item())

    def _item(self) -> Node:
        tok = self.next()
        if tok.kind == "text":
            return Node("text", tok.pos, text=tok.value)
        assert tok.kind == "left"
        word = self.peek()
        if word.kind == "ident" and word.value in _KEYWORDS - {"nil", "true", "false"}:
            self.next()
            if word.value in ("if", "range", "with"):
                return self._block(word.value, word.pos)
            if word.value == "template":
                name = self._name("template")
                pipe = None if self.peek().kind == "right" else self._pipe("template")
                self._expect_right("template")
                return Node("template", word.pos, text=name[0], pipe=pipe)
            if word.value == "block":
                name = self._name("block")
                pipe = self._pipe("block")
                self._expect_right("block")
                saved, self.vars = self.vars, [["$"]]
                body, end = self._list()
                self.vars = saved
                if end != "end":
                    self.fail(word.pos, "unexpected {{else}} in block clause")
                self._add(name[0], body, name[1])
                return Node("template", word.pos, text=name[0], pipe=pipe)
            if word.value in ("break", "continue"):
                if not any(scope and scope[0] == "range" for scope in self.vars):
                    self.fail(word.pos, f"{{{{{word.value}}}}} outside {{{{range}}}}")
                self._expect_right(word.value)
                return Node(word.value, word.pos)
            if word.value in ("end", "else"):
                self.fail(word.pos, f"unexpected {{{{{word.value}}}}}")
            self.fail(word.pos, f"unexpected <{word.value}> in command")
        pipe = self._pipe("command")
        self._expect_right("command")
        return Node("action", tok.pos, pipe=pipe)

    def _block(self, kind: str, pos: int) -> Node:
        self.vars.append([kind])
        pipe = self._pipe(kind)
        if kind == "range" and len(pipe.decl) > 2:
            self.fail(pos, "too many declarations in range")
        if kind != "range" and len(pipe.decl) > 1:
            self.fail(pos, "too many declarations in command")
        self._expect_right(kind)
        node = Node(kind, pos, pipe=pipe)
        node.body, end = self._list()
        if end == "else":
            after = self.peek()
            if kind in ("if", "with") and after.kind == "ident" and after.value == kind:
                # {{ else if x }} / {{ else with x }}: a nested block that shares our {{end}}
                self.next()
                node.other = [self._block(kind, after.pos)]
                self.vars.pop()
                return node
            self._expect_right("else")
            node.other, end = self._list()
            if end != "end":
                self.fail(pos, f"expected end; found {{{{else}}}} in {kind}")
        self.vars.pop()
        return node

    def _pipe(self, context: str) -> Pipe:
        start = self.peek().pos
        decl: list[str] = []
        assign = False
        if self.peek().kind == "var":
            # `$x :=`, `$x =`, `$k, $v :=` (range)
            names: list[str] = []
            j = 0
            while self.peek(j).kind == "var":
                names.append(self.peek(j).value)
                nxt = self.peek(j + 1)
                if (
                    nxt.kind == "punct"
                    and nxt.value == ","
                    and context == "range"
                    and not names[1:]
                ):
                    j += 2
                    continue
                if nxt.kind == "punct" and nxt.value in (":=", "="):
                    decl, assign = names, nxt.value == "="
                    self.i += j + 2
                break
        for name in decl:
            if assign:
                self._lookup(name, start)
            else:
                self.vars[-1].append(name)
        cmds: list[list[Arg]] = []
        while True:
            cmds.append(self._command(context))
            tok = self.peek()
            if tok.kind == "punct" and tok.value == "|":
                self.next()
                continue
            break
        return Pipe(start, decl, assign, cmds)

    def _command(self, context: str) -> list[Arg]:
        args: list[Arg] = []
        while True:
            tok = self.peek()
            if tok.kind in ("right", "eof") or (tok.kind == "punct" and tok.value in "|)"):
                break
            if args and not tok.space:
                self.fail(tok.pos, f"missing space? unexpected {self._shown(tok)} in operand")
            args.append(self._operand())
        if not args:
            tok = self.peek()
            self.fail(tok.pos, f"missing value for {context}")
        return args

    def _operand(self) -> Arg:
        tok = self.next()
        arg: Arg
        if tok.kind == "field":
            names = [tok.value]
            while self.peek().kind == "field" and not self.peek().space:
                names.append(self.next().value)
            return Arg("field", tok.pos, fields=tuple(names))
        if tok.kind == "dot":
            arg = Arg("dot", tok.pos)
        elif tok.kind == "var":
            self._lookup(tok.value, tok.pos)
            arg = Arg("var", tok.pos, tok.value)
        elif tok.kind == "str":
            arg = Arg("str", tok.pos, tok.value)
        elif tok.kind in ("num", "char"):
            arg = Arg("num", tok.pos, tok.value)
        elif tok.kind == "ident" and tok.value in ("true", "false"):
            arg = Arg("bool", tok.pos, tok.value == "true")
        elif tok.kind == "ident" and tok.value == "nil":
            arg = Arg("nil", tok.pos)
        elif tok.kind == "ident" and tok.value not in _KEYWORDS:
            if tok.value not in self.funcs:
                self.fail(tok.pos, f'function "{tok.value}" not defined')
            arg = Arg("ident", tok.pos, tok.value)
        elif tok.kind == "punct" and tok.value == "(":
            pipe = self._pipe("parenthesized pipeline")
            close = self.next()
            if close.kind != "punct" or close.value != ")":
                self.fail(close.pos, f"unclosed left paren: unexpected {self._shown(close)}")
            arg = Arg("pipe", tok.pos, pipe)
        else:
            self.fail(tok.pos, f"unexpected {self._shown(tok)} in operand")
        fields: list[str] = []
        while self.peek().kind == "field" and not self.peek().space:
            fields.append(self.next().value)
        if fields:
            if arg.kind in ("bool", "str", "num", "nil", "dot", "ident"):
                self.fail(tok.pos, f"unexpected . after term {self._shown(tok)}")
            arg.fields = tuple(fields)
        return arg

    def _lookup(self, name: str, pos: int) -> None:
        if not any(name in scope for scope in self.vars):
            self.fail(pos, f"undefined variable: {name}")


def _empty(nodes: list[Node]) -> bool:
    return all(n.kind == "text" and not n.text.strip() for n in nodes)


@functools.lru_cache(maxsize=256)
def compile_template(text: str, funcs: frozenset[str]) -> Template:
    """Parse a template once (cached by text); TemplateError names its line:col."""
    try:
        return _Parser(text, funcs).parse()
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
