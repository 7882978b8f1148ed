"""mcl source text -> syntax tree (mgmt.lang.ast), with a position on every node.

An LALR grammar for lark; the tree is built by an inline transformer (no intermediate parse
tree). The parser tables are generated into mgmt/lang/_tables.py (`python -m mgmt.lang.parser`
after changing the grammar; a test says when they are stale) and loaded once per process.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import lark
from lark import Lark, Token, Transformer
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.grammar import Rule
from lark.lexer import TerminalDef
from lark.parse_tree_builder import ExpandSingleChild
from lark.parsers.lalr_analysis import Shift

from mgmt.lang import ast
from mgmt.lang.errors import CompileError, Pos
from mgmt.lang.types import BASIC, TFunc, TList, TMap, TStruct, Type
from mgmt.lang.values import INT_MAX

GRAMMAR = r"""
start: _stmt*

_stmt: bind | resource | edge | if_stmt | import_stmt | func_stmt | class_stmt | include_stmt
     | for_stmt | panic_stmt

import_stmt: IMPORT STRING ("as" (NAME | STAR))?
bind: VAR type? "=" expr
func_stmt: FUNC NAME "(" params? ")" type? "{" expr "}"
params: param ("," param)* ","?
param: VAR type?
if_stmt: IF expr block (ELSE (block | if_stmt))?
class_stmt: CLASS class_name ("(" params? ")")? block
class_name: NAME (":" NAME)*
for_stmt: (FOR | FORKV) VAR "," VAR IN expr block
include_stmt: INCLUDE dotted ("(" args? ")")? ("as" NAME)?
panic_stmt: PANIC "(" expr ")"
block: "{" _stmt* "}"

resource: COLLECT? res_kind expr "{" (res_field ("," res_field)* ","?)? "}"
res_kind: NAME (":" NAME)*
res_field: NAME "=>" (expr ELVIS)? expr                 -> res_param
         | CAPNAME ":" NAME "=>" (expr ELVIS)? expr     -> res_meta
         | CAPNAME "=>" (expr ELVIS)? edge_half -> res_edge
edge: edge_half (ARROW edge_half)+
edge_half: cap_kind "[" expr "]" ("." NAME)?
cap_kind: CAPNAME (":" CAPNAME)*

// (few levels: every level costs a reduction per operand, most of the parse time)
?expr: or_test | expr EXCEPT or_test               -> except_
?or_test: and_test | or_test (OR | OROR) and_test -> binop
?and_test: not_test | and_test (AND | ANDAND) not_test -> binop
?not_test: comparison | (NOT | BANG) not_test     -> unop
?comparison: sum | sum (CMP | IN) sum             -> binop
?sum: term | sum (PLUS | MINUS) term              -> binop
?term: factor | term (STAR | SLASH) factor        -> binop
?factor: postfix | MINUS factor                   -> unop
?postfix: atom
        | postfix "(" args? ")"                   -> call_value
        | postfix "->" NAME                       -> field
        | postfix "[" expr "]"                    -> index
?atom: INT                                        -> int_lit
     | FLOAT                                      -> float_lit
     | STRING                                     -> str_lit
     | TRUE                                       -> true_lit
     | FALSE                                      -> false_lit
     | VAR                                        -> var
     | dotted "(" args? ")"                       -> call_named
     | lambda_
     | if_expr
     | LSQB (expr ("," expr)* ","?)? "]"          -> list_lit
     | LBRACE (map_pair ("," map_pair)* ","?)? "}" -> map_lit
     | STRUCT "{" (struct_field ("," struct_field)* ","?)? "}" -> struct_lit
     | "(" expr ")"
dotted: NAME ("." NAME)*
args: expr ("," expr)* ","?
map_pair: expr "=>" expr
struct_field: NAME "=>" expr
lambda_: FUNC "(" params? ")" type? "{" expr "}"
if_expr: IF expr "{" expr "}" ELSE ("{" expr "}" | if_expr)

type: NAME                                         -> type_name
    | "[" "]" type                                 -> type_list
    | MAP "{" type ":" type "}"                    -> type_map
    | STRUCT "{" (NAME type (";" NAME type)* ";"?)? "}" -> type_struct
    | FUNC "(" (type ("," type)*)? ")" type        -> type_func

interp: expr | dotted

IMPORT: "import"
CLASS: "class"
FOR: "for"
FORKV: "forkv"
INCLUDE: "include"
COLLECT: "collect"
PANIC: "panic"
IF: "if"
ELSE: "else"
FUNC: "func"
STRUCT: "struct"
MAP: "map"
TRUE: "true"
FALSE: "false"
OR: "or"
OROR: "||"
AND: "and"
ANDAND: "&&"
NOT: "not"
BANG: "!"
IN: "in"
CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
ARROW: "->"
LSQB: "["  // named where an empty literal needs its position
LBRACE: "{"
ELVIS: "?:"
EXCEPT: "<|>"
VAR: /\$[a-zA-Z_][a-zA-Z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_]*)*/
NAME: /[a-z_][a-zA-Z0-9_]*/
CAPNAME: /[A-Z][a-zA-Z0-9_]*/
STRING: /"(?:[^"\\]|\\[\s\S])*"/
FLOAT.2: /[0-9]+\.[0-9]+([eE][-+]?[0-9]+)?/
INT: /[0-9]+/
COMMENT: /#[^\n]*/
%import common.WS
%ignore WS
%ignore COMMENT
"""

EDGE_FIELDS = ("Depend", "Before", "Notify", "Listen")
MAX_DEPTH = 200  # nested syntax (each list, call, operator, block and statement is a level)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$", "a": "\a"}
_ESCAPES |= {"b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_ESCAPES_SHOWN = " ".join("\\" + c for c in _ESCAPES if c != "0")
_DOTTED = re.compile(r"^\s*[a-zA-Z_][a-zA-Z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_]*)*\s*$")


@functools.cache
def _lark() -> Lark:
    """The parser, once per process: from the tables generated into mgmt/lang/_tables.py
    (plain data, imported like the rest of the package), or built here when they are stale.

    Nothing is cached on disk at run time: a cache another user could plant is never read.
    """
    tables = _stored_tables()
    if tables is None:
        return _build(_BUILDER)
    # The builder runs inside the parser (no parse tree is built): about twice as fast.
    loaded = Lark._load_from_dict(  # type: ignore[no-untyped-call]
        tables.DATA, tables.MEMO, transformer=_BUILDER
    )
    assert isinstance(loaded, Lark)
    return loaded


def _build(transformer: Transformer[Any, Any] | None) -> Lark:
    """Build the LALR tables from the grammar (~0.15-0.2 s)."""
    return Lark(
        GRAMMAR,
        parser="lalr",
        lexer="contextual",
        start=["start", "interp"],
        maybe_placeholders=False,
        transformer=transformer,
    )


def tables_digest() -> str:
    """What the generated tables must match: the grammar and the lark version."""
    return hashlib.sha256(f"{GRAMMAR}\0{lark.__version__}".encode()).hexdigest()


def _stored_tables() -> ModuleType | None:
    try:
        from mgmt.lang import _tables
    except ImportError:
        return None
    return _tables if getattr(_tables, "DIGEST", None) == tables_digest() else None


def tables_source() -> str:
    """The text of mgmt/lang/_tables.py: the serialized tables as Python literals."""
    data, memo = _build(None).memo_serialize([TerminalDef, Rule])
    return (
        "# Generated by `python -m mgmt.lang.parser` from the grammar in parser.py: do not edit.\n"
        "# ruff: noqa\n# fmt: off\n# mypy: ignore-errors\n"
        "from typing import Any\n"
        f"DIGEST = {tables_digest()!r}\n"
        f"DATA: dict[str, Any] = {data!r}\n"
        f"MEMO: dict[int, Any] = {memo!r}\n"
    )


def warm() -> None:
    """Build the parser tables now (they are built on first use otherwise)."""
    _lark()
    _driver()


def parse(text: str, filename: str = "<program>") -> ast.Program:
    """Parse a program; CompileError (file:line:col) on a syntax error, a program larger than
    --max-graph-size (mgmt.lang.max_program_size) or nested deeper than MAX_DEPTH (found while
    parsing, before any recursive pass over the tree)."""
    from mgmt.config import max_program_size
    from mgmt.lang import too_large

    if len(text) > max_program_size() // 4:  # a character is 1 to 4 bytes
        problem = too_large(len(text) if text.isascii() else len(text.encode()), filename)
        if problem is not None:
            raise CompileError([problem])
    with _PARSING:
        try:
            body = _parse_once(text, filename, fast=True)
        except _Fallback:  # a syntax error: lark's parser says which
            body = _parse_once(text, filename, fast=False)
    return ast.Program(Pos(filename, 1, 1), body, source=text)


def _parse_once(text: str, filename: str, fast: bool) -> Any:
    _BUILDER.filename, _BUILDER.origin, _BUILDER.fast = filename, None, fast
    try:
        return _parse(text, filename, "start", 1, 1)
    finally:
        _BUILDER.depths.clear()
        _BUILDER.type_pos.clear()


def _parse(text: str, filename: str, start: str, line0: int, col0: int) -> Any:
    driver = _driver() if _BUILDER.fast else None
    if driver is not None:
        return driver.parse(text, start)  # _Fallback: parse() runs lark's own parser
    try:
        return _lark().parse(text, start=start)
    except VisitError as err:
        if isinstance(err.orig_exc, CompileError):
            raise err.orig_exc from None
        raise
    except UnexpectedInput as err:
        line = line0 + err.line - 1 if err.line > 0 else line0
        col = (col0 + err.column - 1 if err.line == 1 else err.column) if err.column > 0 else col0
        message = _describe(err) + _hint(text, err, line0, col0)
        raise CompileError.at(Pos(filename, line, col), message) from None


class _Fallback(Exception):
    """The fast driver met what it does not parse (a syntax error): lark's parser is run."""


_Lexer = tuple[list[Any], frozenset[str], frozenset[str], dict[str, Any]]
_Actions = dict[str, tuple[bool, Any]]


class _Driver:
    """lark's LALR parse loop and contextual lexer, run over lark's own tables, lexers and
    callbacks (so the same tokens and the same tree), without lark's per-token overhead
    (generator and method calls, the rules hashed in Python at each reduce) and with the unit
    rules' reduces (`?sum: term`, most of them) done without a call: a third of a big
    program's parse. It parses programs without syntax errors only: at the first one it
    raises _Fallback, and the whole program is parsed again by lark's parser, whose error
    (and its position) is reported. Each state's row and lexer is made on first use, as
    lark's are (their regexes take 60 ms to compile, all of them)."""

    def __init__(self, parser: Lark) -> None:
        frontend: Any = parser.parser
        table = frontend.parser.parser.parse_table
        assert not frontend.lexer_conf.callbacks, "no lexer callbacks"
        self._table: dict[int, dict[str, tuple[Any, Any]]] = table.states
        self._callbacks: dict[Any, Any] = frontend.parser.parser.callbacks
        assert not any(isinstance(k, str) for k in self._callbacks), "no terminal callbacks"
        self._reduces: dict[Any, tuple[int, str, Any]] = {}
        self._lark_lexers: dict[int, Any] = frontend.lexer.lexers
        self.start_states: dict[str, int] = table.start_states
        self.end_states: dict[str, int] = table.end_states
        self.actions: dict[int, _Actions] = {}
        self.lexers: dict[int, _Lexer] = {}

    def _actions(self, state: int) -> _Actions:
        """A state's row: by token type, (True, next state) for a shift, (False, (size, the
        rule's name, its callback or None for a unit rule)) for a reduce."""
        out: _Actions = {}
        for token, (action, arg) in self._table[state].items():
            if action is Shift:
                out[token] = (True, arg)
                continue
            if arg not in self._reduces:
                size, callback = len(arg.expansion), self._callbacks[arg]
                if size == 1 and type(callback) is ExpandSingleChild:
                    callback = None  # `?rule: one`: its one item, unchanged
                self._reduces[arg] = (size, arg.origin.name, callback)
            out[token] = (False, self._reduces[arg])
        self.actions[state] = out
        return out

    def _lexer(self, state: int) -> _Lexer:
        """A state's lexer: its regexes, the types it skips, those that may hold a newline,
        and its callbacks (NAME's: a keyword's text becomes the keyword's type)."""
        lexer = self._lark_lexers[state]
        found = (lexer.scanner._mres, lexer.ignore_types, lexer.newline_types, lexer.callback)
        self.lexers[state] = found
        return found

    def parse(self, text: str, start: str) -> Any:  # noqa: PLR0915 (one loop: no call a token)
        actions, lexers = self.actions, self.lexers
        state = self.start_states[start]
        end_state = self.end_states[start]
        states = [state]
        values: list[Any] = []
        new = str.__new__
        pos, line, line_start, end = 0, 1, 0, len(text)
        last = None
        while True:
            token: Token | None = None
            mres, ignore, newline_types, lexer_callbacks = lexers.get(state) or self._lexer(state)
            while pos < end:
                for mre in mres:
                    m = mre.match(text, pos)
                    if m:
                        break
                else:
                    raise _Fallback()
                value, type_ = m.group(0), m.lastgroup
                start_pos, start_line, column = pos, line, pos - line_start + 1
                if type_ in newline_types:
                    newlines = value.count("\n")
                    if newlines:
                        line += newlines
                        line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                if type_ in ignore:
                    continue
                token = new(Token, value)
                token.type, token.value, token.start_pos = type_, value, start_pos
                token.line, token.column = start_line, column
                token.end_line, token.end_column, token.end_pos = line, pos - line_start + 1, pos
                if type_ in lexer_callbacks:
                    token = lexer_callbacks[type_](token)
                break
            if token is None:  # the end: reduce until the start rule is done
                token = (
                    Token.new_borrow_pos("$END", "", last) if last else Token("$END", "", 0, 1, 1)
                )
            else:
                last = token
            kind = token.type
            while True:
                try:
                    shift, arg = (actions.get(state) or self._actions(state))[kind]
                except KeyError:
                    raise _Fallback() from None
                if shift:
                    if kind == "$END":
                        raise _Fallback()
                    state = arg
                    states.append(state)
                    values.append(token)
                    break
                size, origin, callback = arg
                if callback is None:  # a unit rule (most reduces): the item stays
                    state = (actions.get(states[-2]) or self._actions(states[-2]))[origin][1]
                    states[-1] = state
                    if kind == "$END" and state == end_state:
                        return values[-1]
                    continue
                if size:
                    items = values[-size:]
                    del states[-size:]
                    del values[-size:]
                else:
                    items = []
                value = callback(items)
                state = (actions.get(states[-1]) or self._actions(states[-1]))[origin][1]
                states.append(state)
                values.append(value)
                if kind == "$END" and state == end_state:
                    return values[-1]


@functools.cache
def _driver() -> _Driver | None:
    """The loop, or None under a lark whose insides differ from what it reads (lark's
    parser then parses every program: slower, the same tree)."""
    parser = _lark()
    try:
        driver = _Driver(parser)
        start = driver.start_states["start"]
        driver._actions(start)  # what it reads of lark's rows and lexers is there
        driver._lexer(start)
    except (AttributeError, AssertionError, KeyError, TypeError, ValueError):
        return None
    return driver


def _describe(err: UnexpectedInput) -> str:
    """One line (lark's own messages span several, with the context)."""
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            return "syntax error: unexpected end of file" + _expected(err.expected)
        shown = tok.value if len(tok.value) <= 40 else f"{tok.value[:30]}..."
        return f"syntax error: unexpected {shown!r}" + _expected(err.expected)
    if isinstance(err, UnexpectedCharacters):
        return f"syntax error: unexpected character {err.char!r}"
    if isinstance(err, UnexpectedEOF):
        return "syntax error: unexpected end of file" + _expected(set(err.expected))
    return "syntax error"


_OPENERS = {"{": "}", "(": ")", "[": "]"}
_TOKENS = re.compile(r'"(?:[^"\\]|\\[\s\S])*"|#[^\n]*|[{}()\[\]\n]')
_OLD_HISTORY = re.compile(r"\$[A-Za-z_][A-Za-z0-9_.]*$")
_LOWER_EDGE = re.compile(r"^\s*([a-z][a-z0-9_]*(?::[a-z0-9_]+)*)\[.*->")
# A name (`x`, `mymod.x`) right before where a call's '(' was expected: a variable without $.
_BARE_NAME = re.compile(r"(?<![$\w.\"])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*$")
# mgmt's `Meta => struct{...}` (or `Meta => $m`): the value of a `Meta =>` field (the brackets
# in it removed, _BRACKETED) and nothing after it.
_META_FIELD = re.compile(r"\bMeta\s*=>([^=]*)$")
_BRACKETED = re.compile(r"\{[^{}]*\}|\([^()]*\)|\[[^\[\]]*\]")
_WORDS = frozenset(
    ("if", "else", "in", "func", "class", "include", "import", "as", "true", "false")
)


def _hint(text: str, err: UnexpectedInput, line0: int, col0: int) -> str:
    """What a syntax error most likely is, when the text says so clearly (" (...)"), else "":
    a string without its closing quote, a brace left open before a line that starts a new
    statement, an edge naming a kind in lower case, the old history syntax `$x{1}`, a name
    where a variable was meant (`mymod.x` for `$mymod.x`: the parser wanted a call's '('),
    mgmt's `Meta => struct{...}`."""
    if isinstance(err, UnexpectedCharacters) and err.char == '"':  # no '"' closes it
        return " (a string without its closing '\"')"
    lines = text.splitlines()
    at = len(lines) if err.line <= 0 else err.line  # 1-based in `text`
    spans = {end: (line, col) for line, col, end in _multiline_strings(text)}
    if at in spans:  # a string may span lines: one not closed takes the next one's quote...
        line, col = spans[at]
        while line in spans and spans[line][0] < line:  # ...which opens the next, and so on
            line, col = spans[line]
        line, col = line0 + line - 1, (col0 + col - 1 if line == 1 else col)
        return (
            f" (the string opened at {line}:{col} spans lines {line}-{line0 + at - 1}:"
            " a missing closing '\"'?)"
        )
    if not isinstance(err, (UnexpectedToken, UnexpectedEOF)):
        return ""
    here = lines[at - 1] if 0 < at <= len(lines) else ""
    if (
        isinstance(err, UnexpectedToken)
        and err.token.type == "LBRACE"
        and _OLD_HISTORY.search(here[: max(err.column - 1, 0)].rstrip())
    ):
        return " ($x{N}, the old history syntax, is history($x, N) now)"
    if isinstance(err, UnexpectedToken) and err.pos_in_stream is not None:
        before = text[max(0, err.pos_in_stream - 4096) : err.pos_in_stream]  # its resource
        for _ in range(MAX_DEPTH):  # innermost brackets first, until none is left
            before, found = _BRACKETED.subn("", before)
            if not found:
                break
        if _META_FIELD.search(before):
            return (
                " (`Meta => ...`, mgmt's struct of meta params, is not supported: set each "
                "one as `Meta:name => value`, e.g. `Meta:noop => true`)"
            )
    match = _LOWER_EDGE.match(here)
    if match:
        kind = match.group(1)
        title = ":".join(part[:1].upper() + part[1:] for part in kind.split(":"))
        return f" (an edge names a resource by its kind capitalised: {title}[...])"
    eof = isinstance(err, UnexpectedEOF) or err.token.type == "$END"
    opened = _open_brackets(text, len(lines) + 1 if eof else at)
    starts_statement = here[:1].isalpha() or here.startswith("$")  # unindented
    if opened and (eof or (starts_statement and opened[-1][0] < at)):
        char, line, col = opened[-1][1], opened[-1][0], opened[-1][2]
        line, col = line0 + line - 1, (col0 + col - 1 if line == 1 else col)
        return f" (the {char!r} at {line}:{col} is not closed: a missing {_OPENERS[char]!r}?)"
    expected = err.expected if isinstance(err, UnexpectedToken) else set(err.expected)
    if "LPAR" in expected:  # after a name: `mymod.x` for `$mymod.x`
        end = len(text) if eof or err.pos_in_stream is None else err.pos_in_stream
        match = _BARE_NAME.search(text[:end].rstrip().rsplit("\n", 1)[-1])
        if match and match.group(1) not in _WORDS:
            return f" (did you mean `${match.group(1)}`? a variable needs its '$')"
    return ""


def _multiline_strings(text: str) -> list[tuple[int, int, int]]:
    """The string literals that span lines: (line, column, last line) each, 1-based."""
    found: list[tuple[int, int, int]] = []
    line, start = 1, 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        newlines = token.count("\n")
        if newlines and token != "\n":
            found.append((line, match.start() - start + 1, line + newlines))
        if newlines:
            line, start = line + newlines, match.start() + token.rfind("\n") + 1
    return found


def _open_brackets(text: str, before_line: int) -> list[tuple[int, str, int]]:
    """The brackets still open at the start of line `before_line` (1-based; past the end: at
    the end): (line, bracket, column) each, outermost first; strings and comments skipped."""
    stack: list[tuple[int, str, int]] = []
    line, start = 1, 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if "\n" in token:  # a newline, or a string that spans lines
            line, start = line + token.count("\n"), match.start() + token.rfind("\n") + 1
            if line >= before_line:
                break
        elif token in _OPENERS:
            stack.append((line, token, match.start() - start + 1))
        elif stack and token == _OPENERS.get(stack[-1][1]):
            stack.pop()
    return stack


_TERMINAL_NAMES = {
    "RBRACE": "'}'",
    "LBRACE": "'{'",
    "RPAR": "')'",
    "LPAR": "'('",
    "RSQB": "']'",
    "LSQB": "'['",
    "COMMA": "','",
    "EQUAL": "'='",
    "NAME": "a name",
    "CAPNAME": "a Kind",
    "VAR": "a $variable",
    "STRING": "a string",
    "INT": "a number",
}


def _expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(e, "") for e in expected} - {""})
    if not names or len(names) > 6:
        return ""
    return "; expected " + " or ".join(names)


class _Name(str):
    """A (dotted or colon-joined) name that remembers where it starts."""

    line: int
    column: int


def _name(text: str, first: Any) -> _Name:
    name = _Name(text)
    name.line, name.column = getattr(first, "line", 0) or 0, getattr(first, "column", 0) or 0
    return name


_NAMED = (Token, _Name)
_SEQUENCE = (list, tuple)


def _first(node: Any) -> tuple[int, int]:
    """Where the first token of some parsed items is (0, 0 if there is none)."""
    if isinstance(node, _NAMED):
        return node.line or 0, node.column or 0
    if isinstance(node, ast.Node):
        return node.pos.line, node.pos.col
    if isinstance(node, _SEQUENCE):
        for item in node:
            where = _first(item)
            if where != (0, 0):
                return where
    return 0, 0


def _inner(items: list[Any], built: Any) -> list[Any]:
    """What `built` (made of `items`) holds that may nest: not tokens and names (str), and
    an interpolated string's expressions."""
    inner = [i for i in items if not isinstance(i, str)]
    if isinstance(built, ast.Interp):
        inner += [part for part in built.parts if isinstance(part, ast.Expr)]
    return inner


class _Builder(Transformer[Any, Any]):
    """Parsed items -> ast nodes; runs inside the parser (positions come from the first token
    of each rule's items)."""

    def __init__(self) -> None:
        super().__init__()
        self.filename = "<program>"
        self.origin: Pos | None = None  # where a "${...}" expression starts in the file
        # How deeply each built item nests (by id; every item is alive until the parse ends).
        self.depths: dict[int, int] = {}
        # Where each type starts (types carry no position; `[]` has no token of its own).
        self.type_pos: dict[int, Pos] = {}
        self.fast = True  # parsing with _Driver (else with lark's parser)

    def nested(self, items: list[Any], built: Any) -> Any:
        """Record how deeply `built` nests; CompileError past MAX_DEPTH."""
        depths = self.depths
        depth = 1 + max((depths.get(id(i), 0) for i in _inner(items, built)), default=0)
        if depth > MAX_DEPTH or isinstance(built, Type):  # (where it is: only then)
            pos = built.pos if isinstance(built, ast.Node) else self._p(items)
            if pos.line == 0:
                type_pos = self.type_pos
                inner = _inner(items, built)
                pos = next((type_pos[id(i)] for i in inner if id(i) in type_pos), pos)
            if isinstance(built, Type):
                self.type_pos[id(built)] = pos
            if depth > MAX_DEPTH:
                raise CompileError.at(
                    pos, f"the program nests too deeply (more than {MAX_DEPTH} levels)"
                )
        depths[id(built)] = depth
        return built

    def _p(self, node: Any) -> Pos:
        line, col = _first(node)
        pos = Pos(self.filename, line, col)
        if self.origin is None or line == 0:
            return pos
        col = self.origin.col + pos.col - 1 if pos.line == 1 else pos.col
        return Pos(self.filename, self.origin.line + pos.line - 1, col)

    # statements ---------------------------------------------------------------------------

    def start(self, items: list[Any]) -> list[ast.Stmt]:
        return _nest_classes(items)

    def block(self, items: list[Any]) -> list[ast.Stmt]:
        return _nest_classes(items)

    def import_stmt(self, items: list[Any]) -> ast.Import:
        module = _unquote_plain(items[1])
        alias = str(items[2]) if len(items) > 2 else None
        return ast.Import(self._p(items), module, alias)

    def bind(self, items: list[Any]) -> ast.Bind:
        name = _declared(items[0], self._p(items))
        ann = items[1] if len(items) == 3 else None
        return ast.Bind(self._p(items), name, ann, items[-1])

    def func_stmt(self, items: list[Any]) -> ast.FuncDef:
        name = str(items[1])
        params, ret, body = self._signature(items[2:])
        lam = ast.Lambda(self._p(items), params, ret, body)
        return ast.FuncDef(self._p(items), name, lam)

    def _signature(self, items: list[Any]) -> tuple[list[ast.Param], Type | None, ast.Expr]:
        params: list[ast.Param] = []
        ret: Type | None = None
        for item in items[:-1]:
            if isinstance(item, list):
                params = item
            elif isinstance(item, Type):
                ret = item
        return params, ret, items[-1]

    def params(self, items: list[Any]) -> list[ast.Param]:
        return items

    def param(self, items: list[Any]) -> ast.Param:
        ann = items[1] if len(items) > 1 else None
        return ast.Param(self._p(items), _declared(items[0], self._p(items)), ann)

    def class_stmt(self, items: list[Any]) -> ast.ClassDef:
        params = next((i for i in items if isinstance(i, list) and _all(i, ast.Param)), [])
        body = items[-1]
        seen: set[str] = set()
        for param in params:
            if param.name in seen:
                raise CompileError.at(param.pos, f"parameter ${param.name} is given twice")
            seen.add(param.name)
        return ast.ClassDef(self._p(items), str(items[1]), params, body)

    def class_name(self, items: list[Any]) -> str:
        return _name(":".join(str(i) for i in items), items[0])

    def for_stmt(self, items: list[Any]) -> ast.For:
        keyword, first, second, _in, expr, body = items
        params = [ast.Param(self._p(v), _declared(v, self._p(v))) for v in (first, second)]
        if params[0].name == params[1].name:
            raise CompileError.at(params[1].pos, f"${params[1].name} is given twice")
        kv = str(keyword) == "forkv"
        return ast.For(self._p(items), params[0], params[1], expr, body, kv)

    def include_stmt(self, items: list[Any]) -> ast.Include:
        alias = next((str(i) for i in items[2:] if isinstance(i, Token) and i.type == "NAME"), None)
        args = next((i for i in items[2:] if isinstance(i, list)), [])
        return ast.Include(self._p(items), str(items[1]), args, alias)

    def panic_stmt(self, items: list[Any]) -> ast.Panic:
        return ast.Panic(self._p(items), items[1])

    def if_stmt(self, items: list[Any]) -> ast.IfStmt:
        other: list[ast.Stmt] = []
        if len(items) > 3:
            other = items[4] if isinstance(items[4], list) else [items[4]]
        return ast.IfStmt(self._p(items), items[1], items[2], other)

    def resource(self, items: list[Any]) -> ast.Resource:
        collect = isinstance(items[0], Token) and items[0].type == "COLLECT"
        kind, name, *fields = items[1:] if collect else items
        res = ast.Resource(self._p(items), kind, name, [], [], [], collect=collect)
        for f in fields:
            if isinstance(f, ast.ResParam):
                res.params.append(f)
            elif isinstance(f, ast.ResMeta):
                res.metas.append(f)
            else:
                res.edges.append(f)
        return res

    def res_kind(self, items: list[Any]) -> str:
        return _name(":".join(str(i) for i in items), items[0])

    def res_param(self, items: list[Any]) -> ast.ResParam:
        cond = items[1] if len(items) == 4 else None  # NAME cond ELVIS value
        return ast.ResParam(self._p(items), str(items[0]), items[-1], cond)

    def res_meta(self, items: list[Any]) -> ast.ResMeta:
        if str(items[0]) != "Meta":
            raise CompileError.at(
                self._p(items[0]), f"unknown field {items[0]}:{items[1]} (did you mean Meta:?)"
            )
        cond = items[2] if len(items) == 5 else None  # CAPNAME NAME cond ELVIS value
        return ast.ResMeta(self._p(items), str(items[1]), items[-1], cond)

    def res_edge(self, items: list[Any]) -> ast.ResEdge:
        name = str(items[0])
        if name not in EDGE_FIELDS:
            raise CompileError.at(
                self._p(items[0]),
                f"unknown field {name!r}; resource fields that make edges: "
                + ", ".join(EDGE_FIELDS),
            )
        cond = items[1] if len(items) == 4 else None  # CAPNAME cond ELVIS edge_half
        return ast.ResEdge(self._p(items), name, items[-1], cond)

    def edge(self, items: list[Any]) -> ast.Edge:
        return ast.Edge(self._p(items), [i for i in items if isinstance(i, ast.EdgeHalf)])

    def edge_half(self, items: list[Any]) -> ast.EdgeHalf:
        field = str(items[2]) if len(items) > 2 else None
        return ast.EdgeHalf(self._p(items), items[0], items[1], field)

    def cap_kind(self, items: list[Any]) -> str:
        return _name(":".join(str(i).lower() for i in items), items[0])

    # expressions --------------------------------------------------------------------------

    def binop(self, items: list[Any]) -> ast.BinOp:
        left, op, right = items
        op = {"||": "or", "&&": "and"}.get(str(op), str(op))
        return ast.BinOp(self._p(items), op, left, right)

    def except_(self, items: list[Any]) -> ast.Except:
        return ast.Except(self._p(items), items[0], items[2])

    def unop(self, items: list[Any]) -> ast.UnOp:
        op = "not" if str(items[0]) in ("!", "not") else "-"
        return ast.UnOp(self._p(items), op, items[1])

    def call_value(self, items: list[Any]) -> ast.Call:
        args = items[1] if len(items) > 1 else []
        return ast.Call(self._p(items), None, items[0], args)

    def call_named(self, items: list[Any]) -> ast.Call:
        args = items[1] if len(items) > 1 else []
        return ast.Call(self._p(items), items[0], None, args)

    def dotted(self, items: list[Any]) -> str:
        return _name(".".join(str(i) for i in items), items[0])

    def args(self, items: list[Any]) -> list[ast.Expr]:
        return items

    def field(self, items: list[Any]) -> ast.Field:
        return ast.Field(self._p(items), items[0], str(items[1]))

    def index(self, items: list[Any]) -> ast.Index:
        return ast.Index(self._p(items), items[0], items[1])

    def int_lit(self, items: list[Any]) -> ast.Lit:
        digits = str(items[0]).lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > INT_MAX:  # (19 digits: int() stays cheap)
            raise CompileError.at(
                self._p(items),
                f"integer {_abbreviated(digits)} is out of range (an int is 64 bits: "
                f"at most {INT_MAX})",
            )
        return ast.Lit(self._p(items), int(digits))

    def float_lit(self, items: list[Any]) -> ast.Lit:
        value = float(items[0])
        if math.isinf(value):
            raise CompileError.at(
                self._p(items),
                f"float {_abbreviated(str(items[0]))} is out of range (at most ~1.8e308)",
            )
        return ast.Lit(self._p(items), value)

    def true_lit(self, items: list[Any]) -> ast.Lit:
        return ast.Lit(self._p(items), True)

    def false_lit(self, items: list[Any]) -> ast.Lit:
        return ast.Lit(self._p(items), False)

    def str_lit(self, items: list[Any]) -> ast.Expr:
        return _string(items[0], self._p(items), self.filename)

    def var(self, items: list[Any]) -> ast.Var:
        return ast.Var(self._p(items), str(items[0])[1:])

    def list_lit(self, items: list[Any]) -> ast.ListLit:
        return ast.ListLit(self._p(items), items[1:])  # (items[0]: the "[")

    def map_lit(self, items: list[Any]) -> ast.MapLit:
        return ast.MapLit(self._p(items), items[1:])  # (items[0]: the "{")

    def map_pair(self, items: list[Any]) -> tuple[ast.Expr, ast.Expr]:
        return (items[0], items[1])

    def struct_lit(self, items: list[Any]) -> ast.StructLit:
        fields: list[tuple[str, ast.Expr]] = items[1:]
        seen: set[str] = set()
        for name, expr in fields:
            if name in seen:
                raise CompileError.at(expr.pos, f"struct field {name!r} given twice")
            seen.add(name)
        return ast.StructLit(self._p(items), fields)

    def struct_field(self, items: list[Any]) -> tuple[str, ast.Expr]:
        return (str(items[0]), items[1])

    def lambda_(self, items: list[Any]) -> ast.Lambda:
        params, ret, body = self._signature(items[1:])
        return ast.Lambda(self._p(items), params, ret, body)

    def if_expr(self, items: list[Any]) -> ast.If:
        _if, cond, then, _else, other = items
        return ast.If(self._p(items), cond, then, other)

    def interp(self, items: list[Any]) -> Any:
        return items[0]

    # types --------------------------------------------------------------------------------

    def type_name(self, items: list[Any]) -> Type:
        name = str(items[0])
        if name not in BASIC:
            raise CompileError.at(
                self._p(items[0]),
                f"unknown type {name!r}; types: bool, str, int, float, []T, map{{K: V}}, "
                "struct{...}, func(...) T",
            )
        return BASIC[name]

    def type_list(self, items: list[Any]) -> Type:
        return TList(items[0])

    def type_map(self, items: list[Any]) -> Type:
        return TMap(items[1], items[2])

    def type_struct(self, items: list[Any]) -> Type:
        rest = items[1:]
        return TStruct(tuple((str(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2)))

    def type_func(self, items: list[Any]) -> Type:
        types_ = items[1:]
        return TFunc(tuple(types_[:-1]), types_[-1])


def _nest_classes(stmts: list[ast.Stmt]) -> list[ast.Stmt]:
    """`class a:b {...}` is mgmt's sugar for a class `b` defined inside class `a`'s body (it
    sees a's parameters and bindings): move it there. `a` is a class of the same block;
    `a:b:c` goes into the `b` inside `a`."""
    if not any(isinstance(s, ast.ClassDef) and ":" in s.name for s in stmts):
        return stmts
    kept: list[ast.Stmt] = []
    for stmt in stmts:
        if not (isinstance(stmt, ast.ClassDef) and ":" in stmt.name):
            kept.append(stmt)
            continue
        *path, stmt.name = stmt.name.split(":")
        body = kept
        for depth, outer in enumerate(path):
            parent = next(
                (s for s in body if isinstance(s, ast.ClassDef) and s.name == outer), None
            )
            if parent is None:
                where = "in this block" if depth == 0 else f"in class {':'.join(path[:depth])}"
                raise CompileError.at(
                    stmt.pos,
                    f"class {':'.join([*path, stmt.name])}: no class {outer} {where} "
                    "(define it first)",
                )
            body = parent.body
        body.append(stmt)
    return kept


def _abbreviated(text: str) -> str:
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text):,} digits)"


def _declared(token: Any, pos: Pos) -> str:
    """A name being declared ($x =, a parameter, a loop name): no dots ($const.x is read-only)."""
    name = str(token)[1:]
    if "." in name:
        raise CompileError.at(pos, f"${name}: a name with a dot can be read, not declared")
    return name


def _all(items: list[Any], kind: type) -> bool:
    return all(isinstance(i, kind) for i in items)


def _unquote_plain(token: Token) -> str:
    text = str(token)[1:-1]
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _at(pos: Pos, raw: str, i: int) -> Pos:
    """Where character i of a string literal's body (which starts at pos, its '"') is: a
    literal may span lines, as in mgmt."""
    newline = raw.rfind("\n", 0, i)
    if newline < 0:
        return Pos(pos.file, pos.line, pos.col + 1 + i)
    return Pos(pos.file, pos.line + raw.count("\n", 0, i), i - newline)


def _string(token: Token, pos: Pos, filename: str) -> ast.Expr:
    """A string literal: escapes resolved, "${...}" parts parsed (\\$ is a literal $)."""
    raw = str(token)[1:-1]
    if "\\" not in raw and "${" not in raw:  # most strings: the text as it is
        return ast.Lit(pos, raw)
    parts: list[str | ast.Expr] = []
    buf: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt not in _ESCAPES:
                shown = "\\n" if nxt == "\n" else nxt
                raise CompileError.at(
                    _at(Pos(filename, pos.line, pos.col), raw, i),
                    f"unknown escape '\\{shown}' (mgmt's: {_ESCAPES_SHOWN})",
                )
            buf.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == "$" and raw.startswith("${", i):
            end = raw.find("}", i + 2)
            where = _at(Pos(filename, pos.line, pos.col), raw, i)
            if end < 0:
                raise CompileError.at(where, "unterminated ${ in string")
            inner = raw[i + 2 : end].replace('\\"', '"')
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_interp_expr(inner, filename, where))
            i = end + 1
            continue
        buf.append(ch)
        i += 1
    if buf or not parts:
        parts.append("".join(buf))
    if len(parts) == 1 and isinstance(parts[0], str):
        return ast.Lit(pos, parts[0])
    return ast.Interp(pos, parts)


def _interp_expr(inner: str, filename: str, where: Pos) -> ast.Expr:
    """The expression of a "${...}": a bare (dotted) name means that variable, as in mgmt."""
    if not inner.strip():
        raise CompileError.at(where, "empty ${} in string")
    if _DOTTED.match(inner):
        return ast.Var(where, inner.strip())
    saved = _BUILDER.origin
    _BUILDER.origin = Pos(filename, where.line, where.col + 2)
    try:
        expr = _parse(inner, filename, "interp", where.line, where.col + 2)
    finally:
        _BUILDER.origin = saved
    if isinstance(expr, str):  # a dotted name (handled above); kept for safety
        return ast.Var(where, expr)
    assert isinstance(expr, ast.Expr)
    return expr


def _track_depth(callback: Any) -> Any:
    @functools.wraps(callback)
    def tracked(self: _Builder, items: list[Any]) -> Any:
        return self.nested(items, callback(self, items))

    return tracked


for _rule, _callback in list(vars(_Builder).items()):
    if not _rule.startswith("_") and _rule != "nested" and callable(_callback):
        setattr(_Builder, _rule, _track_depth(_callback))

_BUILDER = _Builder()
# The builder (and the parser it runs in) keeps the state of one parse: programs compiled in
# threads (a daemon's reload) are parsed one at a time.
_PARSING = threading.Lock()


if __name__ == "__main__":
    Path(__file__).with_name("_tables.py").write_text(tables_source())
    sys.exit(0)
