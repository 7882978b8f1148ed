"""The parser: mcl text -> syntax tree, positions, strings, syntax errors."""

from __future__ import annotations

import pytest

from mgmt.lang import ast
from mgmt.lang.errors import CompileError
from mgmt.lang.parser import parse
from mgmt.lang.types import TList, TMap


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
