"""The parser: mcl text -> syntax tree, positions, strings, syntax errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mgmt.lang import ast, parser
from mgmt.lang.errors import CompileError
from mgmt.lang.parser import parse
from mgmt.lang.types import TList, TMap
from tests.e2e.helpers import ROOT, run_mgmt


def one(src: str) -> ast.Stmt:
    (stmt,) = parse(src, "t.mcl").body
    return stmt


def test_binding_with_precedence_and_positions() -> None:
    stmt = one("$x = 1 + 2 * 3")
    assert isinstance(stmt, ast.Bind) and stmt.name == "x"
    expr = stmt.expr
    assert isinstance(expr, ast.BinOp) and expr.op == "+"
    assert isinstance(expr.right, ast.BinOp) and expr.right.op == "*"
    assert (expr.right.pos.line, expr.right.pos.col) == (1, 10)


def test_logic_operators_both_spellings() -> None:
    a = one("$x = not $a and $b or $c").expr  # type: ignore[attr-defined]
    b = one("$x = !$a && $b || $c").expr  # type: ignore[attr-defined]
    for expr in (a, b):
        assert isinstance(expr, ast.BinOp) and expr.op == "or"
        assert isinstance(expr.left, ast.BinOp) and expr.left.op == "and"
        assert isinstance(expr.left.left, ast.UnOp) and expr.left.left.op == "not"


def test_keywords_do_not_swallow_names() -> None:
    stmt = one('$x = strings.to_upper($import_name) + android($and_x, "and") + format()')
    assert isinstance(stmt, ast.Bind)


def test_resource_with_params_meta_and_edges() -> None:
    stmt = one(
        """
        file "/tmp/x" {
            content => "hi",
            Meta:noop => true,
            Depend => Pkg["foo"],
            Notify => Svc["bar"],
        }
        """
    )
    assert isinstance(stmt, ast.Resource) and stmt.kind == "file"
    assert [p.name for p in stmt.params] == ["content"]
    assert [m.name for m in stmt.metas] == ["noop"]
    assert [(e.name, e.target.kind) for e in stmt.edges] == [("Depend", "pkg"), ("Notify", "svc")]


def test_edges_chain_sendrecv_and_colon_kinds() -> None:
    stmt = one('Pkg["a"] -> File["b"] -> Http:Server:File["c"]')
    assert isinstance(stmt, ast.Edge)
    assert [h.kind for h in stmt.halves] == ["pkg", "file", "http:server:file"]
    stmt = one('Exec["x"].output -> File["y"].content')
    assert isinstance(stmt, ast.Edge) and [h.field for h in stmt.halves] == ["output", "content"]


def test_if_else_if_statement_and_expression() -> None:
    stmt = one('if $a { $x = 1 } else if $b { noop "n" {} } else { }')
    assert isinstance(stmt, ast.IfStmt) and isinstance(stmt.other[0], ast.IfStmt)
    expr = one("$x = if $a { 1 } else if $b { 2 } else { 3 }").expr  # type: ignore[attr-defined]
    assert isinstance(expr, ast.If) and isinstance(expr.other, ast.If)


def test_lambdas_funcs_and_type_annotations() -> None:
    stmt = one("$f = func($a int, $b []str) map{str: int} { {} }")
    lam = stmt.expr  # type: ignore[attr-defined]
    assert isinstance(lam, ast.Lambda)
    assert lam.params[1].ann == TList(lam.params[1].ann.elem)  # type: ignore[union-attr]
    assert isinstance(lam.ret, TMap)
    stmt = one("func double($x) { $x * 2 }")
    assert isinstance(stmt, ast.FuncDef) and stmt.name == "double"


def test_string_escapes_and_interpolation() -> None:
    expr = one(r'$s = "a\tb \${x} \\${y} ${z}!"').expr  # type: ignore[attr-defined]
    assert isinstance(expr, ast.Interp)
    assert expr.parts[0] == "a\tb ${x} \\"
    assert isinstance(expr.parts[1], ast.Var) and expr.parts[1].name == "y"
    assert isinstance(expr.parts[3], ast.Var) and expr.parts[3].name == "z"
    plain = one(r'$s = "no interpolation \$here"').expr  # type: ignore[attr-defined]
    assert isinstance(plain, ast.Lit) and plain.value == "no interpolation $here"


def test_interpolated_expression_has_file_positions() -> None:
    expr = one('$s = "n: ${fmt.printf(\\"%d\\", $n)}"').expr  # type: ignore[attr-defined]
    call = expr.parts[1]
    assert isinstance(call, ast.Call) and call.func == "fmt.printf"
    assert call.pos.line == 1 and call.pos.col > 10


def test_a_string_literal_may_span_lines_as_in_mgmt() -> None:
    """tester7: `content => "line1<newline>line2"` was refused; mgmt's lexer accepts it."""
    expr = one('$s = "line1\n\tline2 ${x}\n"').expr  # type: ignore[attr-defined]
    assert isinstance(expr, ast.Interp)
    assert expr.parts[0] == "line1\n\tline2 " and expr.parts[2] == "\n"
    var = expr.parts[1]
    assert isinstance(var, ast.Var) and (var.pos.line, var.pos.col) == (2, 8)


def test_struct_map_list_field_index() -> None:
    expr = one('$v = struct{a => [1, 2,], b => {"k" => 1.5},}->a[0]').expr  # type: ignore[attr-defined]
    assert isinstance(expr, ast.Index) and isinstance(expr.obj, ast.Field)


@pytest.mark.parametrize(
    ("src", "where", "text"),
    [
        ("$x = 1 +\n", "t.mcl:1:8", "unexpected end of file"),
        ("$x = (1 + 2", "t.mcl:1:11", "unexpected end of file; expected ')'"),
        ('file "x" {\n  content => "a"\n  mode => "0644",\n}', "t.mcl:3:3", "unexpected 'mode'"),
        ("$x = 1 @ 2", "t.mcl:1:8", "unexpected character '@'"),
        ('$s = "bad \\q escape"', "t.mcl:1:11", "unknown escape"),
        ('$s = "${}"', "t.mcl:1:7", "empty ${}"),
        # a string may span lines (mgmt's lexer: "(\\.|[^"])*"): positions after a newline
        ('$s = "a\nb \\q"', "t.mcl:2:3", "unknown escape '\\q' (mgmt's: \\n \\t"),
        ('$s = "a\n${}"', "t.mcl:2:1", "empty ${}"),
        ('$s = "a\n  ${nope + }"', "t.mcl:2:", "syntax error"),
        # mgmt's escapes have no \u (lang/interpolate: "unknown escape sequence")
        ('$s = "\\u00e9"', "t.mcl:1:7", "unknown escape '\\u' (mgmt's: "),
        ("$x int64 = 1", "t.mcl:1:4", "unknown type 'int64'"),
        ('file "x" { Depends => Pkg["a"] }', "t.mcl:1:12", "unknown field 'Depends'"),
    ],
)
def test_syntax_errors_have_positions(src: str, where: str, text: str) -> None:
    with pytest.raises(CompileError) as info:
        parse(src, "t.mcl")
    message = str(info.value)
    assert message.startswith(where), message
    assert text in message


@pytest.mark.parametrize(
    ("src", "hint"),
    [
        # A brace left open: the next unindented statement (or the end) says where it opened.
        ('file "/a" {\n\tcontent => "x",\n\nprint "p" { msg => "y", }\n', "the '{' at 1:11 is not"),
        ('file "/a" {\n\tcontent => "x",\n', "the '{' at 1:11 is not closed: a missing '}'?"),
        ('$x = "unterminated\nfile "/a" { content => $x, }\n', "without its closing '\"'"),
        # an unclosed string takes the next one's quote: the first of the chain is named
        ('$a = "x\n$b = "y"\nnoop "n" {}\n', "the string opened at 1:6 spans lines 1-3"),
        ('print "p" { msg => "a", }\nprint["p"] -> print["q"]\n', "capitalised: Print[...]"),
        ("$dt = 1\n$x = $dt{1}\n", "is history($x, N) now"),
        # A name where a variable was meant: the parser wanted a call's '(' after it.
        ('file "/a" {\n\tcontent => sys.hostname() + mymod.x + "\\n",\n}\n', "`$mymod.x`?"),
        ("$y = mymod.x\n", "did you mean `$mymod.x`? a variable needs its '$'"),
        ("$y = x\n$z = 1\n", "did you mean `$x`?"),
        # mgmt's struct of meta params (listed as unsupported): each as `Meta:name =>`.
        ('print "p" { msg => "x", Meta => struct{noop => true,}, }\n', "`Meta:noop => true`)"),
        ('print "p" {\n\tMeta => struct{\n\t\tnoop => true,\n\t},\n}\n', "`Meta:name => value`"),
        ('$m = struct{noop => true,}\nprint "p" { Meta => $m, }\n', "`Meta => ...`, mgmt's"),
        # No guess where the text does not say: a value missing in an open, indented body.
        ('file "/a" {\n\tcontent => ,\n}\n', ""),
        ('$b = "{" # {\n$x = 1 +\n$y = 2\n', ""),  # in a string or a comment: no brace
        ("$y = $x.z +\n", ""),  # a variable before: no guess
    ],
)
def test_syntax_errors_say_what_is_likely_wrong(src: str, hint: str) -> None:
    with pytest.raises(CompileError) as info:
        parse(src, "t.mcl")
    message = str(info.value)
    assert "\n" not in message
    if hint:
        assert hint in message and message.endswith(")"), message
    else:
        assert not message.endswith(")"), message


# The parser tables -------------------------------------------------------------------------


def test_generated_tables_match_the_grammar_and_lark() -> None:
    from mgmt.lang import _tables

    assert parser.tables_digest() == _tables.DIGEST, (
        "mgmt/lang/_tables.py is stale: run `python -m mgmt.lang.parser`"
    )
    assert parser._stored_tables() is _tables


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.mcl")), ids=lambda p: p.name)
def test_tables_parse_like_a_freshly_built_parser(example: Path) -> None:
    text = example.read_text()
    parser._BUILDER.filename, parser._BUILDER.origin = "t.mcl", None
    built = parser._build(parser._BUILDER).parse(text, start="start")
    assert repr(parse(text, "t.mcl").body) == repr(built)  # nodes compare by identity


class _Payload:
    """A pickle that creates a file when it is loaded (what a planted cache would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("cache_dir", ["writable", "uncreatable"])
def test_check_reads_no_cache_another_user_could_plant(tmp_path: Path, cache_dir: str) -> None:
    # The attack of issue 11: run `mgmt check` once, keep each cache file's header, replace
    # its pickle by one that runs code, run again. Nothing may be written, let alone loaded.
    home, tmp, xdg = tmp_path / "home", tmp_path / "tmp", tmp_path / "xdg"
    home.mkdir()
    tmp.mkdir()
    if cache_dir == "writable":
        xdg.mkdir()
    else:
        xdg.write_text("a file: ~/.cache/mgmt cannot be created under it")
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(xdg), "TMPDIR": str(tmp)}

    def written() -> list[Path]:
        return [p for d in (home, tmp, xdg) if d.is_dir() for p in d.rglob("*") if p.is_file()]

    marker = tmp_path / "pwned"
    for _ in range(2):
        code, out = run_mgmt(["check", str(ROOT / "examples" / "hello.mcl")], env=env)
        assert code == 0, out
        for planted in written():
            header = planted.read_bytes().split(b"\n", 1)[0]
            planted.write_bytes(header + b"\n" + pickle.dumps(_Payload(marker)))
    assert not marker.exists()
    assert written() == []


def test_programs_compiled_in_threads_keep_their_own_names_and_lines() -> None:
    """The daemon compiles an edited program in a thread: parses running at once do not mix
    their state (file name, depths, positions)."""
    from concurrent.futures import ThreadPoolExecutor

    from mgmt.lang import compile_text

    filler = "".join(f'$v{i} = [{i}, {i} + 1, len("{i}")]\n' for i in range(400))

    def problems(index: int) -> list[str]:
        text = "\n" * index + '$a = 1 + "x"\n' + filler
        with pytest.raises(CompileError) as err:
            compile_text(text, f"p{index}.mcl")
        return err.value.problems

    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(problems, [i % 4 for i in range(16)]))
    for i, lines in enumerate(found):
        index = i % 4
        assert lines == [
            f"p{index}.mcl:{index + 1}:6: type error: operator + cannot combine int and str"
        ]


def test_the_parsers_loop_builds_the_tree_that_larks_parser_builds() -> None:
    """parser._Driver runs lark's tables, lexers and callbacks in a loop of its own: each of
    the examples gives the same tree both ways, and a syntax error (here inside a string's
    `${...}`) stops it and is reported by lark's parser, at its place."""
    assert parser._driver() is not None
    programs = sorted((ROOT / "examples").rglob("*.mcl"))
    assert len(programs) >= 10
    for path in programs:
        text = path.read_text()
        with parser._PARSING:
            fast = repr(parser._parse_once(text, str(path), fast=True))
            slow = repr(parser._parse_once(text, str(path), fast=False))
        assert fast == slow, path
    bad = '$x = "a"\n$y = "a ${1 +} b"\n'
    with parser._PARSING, pytest.raises(parser._Fallback):
        parser._parse_once(bad, "x.mcl", fast=True)
    with pytest.raises(CompileError) as err:
        parse(bad, "x.mcl")
    assert err.value.problems == ["x.mcl:2:13: syntax error: unexpected end of file"]
