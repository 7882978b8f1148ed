"""mgmt's syntax and semantics beyond the basics: `<|>`, `$hostname`, `panic(...)`, conditional
edges, `include ... as`, nested class names `class a:b`, polymorphic lambdas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mgmt.lang.errors import FuncError
from mgmt.lang.runtime import EdgeSpec, ResSpec
from tests.mgmt.lang.helpers import binding, contents, problems, run, settled, value_of


def test_except_gives_the_fallback_only_while_the_left_side_is_an_error() -> None:
    prelude = '$l = ["a", "b"]\n$m = {"k" => 1}'
    assert value_of('$l[1] <|> "z"', prelude) == "b"
    assert value_of('$l[7] <|> "z"', prelude) == "z"
    assert value_of('$m["nope"] <|> 13', prelude) == 13
    assert value_of('$l[7] <|> $l[9] <|> "last"', prelude) == "last"  # left to right
    assert value_of("1 / 0 <|> 2.0 + 3.0") == 5.0  # the loosest operator (/ is a float division)
    rt = run('$l = ["a"]\n$v = $l[3] <|> $l[4]\nnoop "n" { comment => $v }\n')
    _changed, _items, error = rt.evaluate()
    assert isinstance(error, FuncError) and str(error).startswith("t.mcl:2:16: index 4")


def test_except_sides_must_have_one_type() -> None:
    (problem,) = problems('$l = [1]\n$v = $l[3] <|> "x"\nnoop "n" {}\n')
    assert problem == (
        "t.mcl:2:16: type error: both sides of <|> must have one type: expected int, got str"
    )


async def test_except_follows_a_stream_into_and_out_of_its_error(tmp_path: Path) -> None:
    """mgmt's except-readfile-recovery: the fallback while the file is missing."""
    path = tmp_path / "input"
    woke = asyncio.Event()
    rt = run(
        f'import "os"\nfile "/n" {{ content => os.readfile("{path}") <|> "default" }}\n',
        notify=woke.set,
    )

    async def next_value() -> dict[str, object]:
        async with asyncio.timeout(5):
            while not rt.pending:
                woke.clear()
                await woke.wait()
        return contents(rt)

    try:
        assert contents(await settled(rt)) == {"/n": "default"}
        path.write_text("recovered\n")
        assert await next_value() == {"/n": "recovered\n"}
        path.unlink()
        assert await next_value() == {"/n": "default"}
    finally:
        await rt.close()


def test_mgmts_lookup_default_with_double_bar_says_how_to_write_it() -> None:
    """tester12's #5: mgmt's 2024 grammar reads `$m["b"] || "d"` as a lookup's default; here
    `||` is `or` (as in mgmt's earlier grammar), and the type error says to write `<|>`. A
    bool lookup stays a boolean `or`."""
    src = (
        '$m = {"a" => "x",}\n$l = ["a",]\n$s = struct{a => "x",}\n$b = {"t" => true,}\n'
        'print "p" { msg => $m["b"] || "d", }\nprint "q" { msg => $l[5] || "d", }\n'
        'print "r" { msg => $s->a || "d", }\n$ok = $b["t"] || false\n'
    )
    index = "mgmt's `$m[key] || default` is `$m[key] <|> default` here: `||` is `or`"
    assert problems(src) == [
        f"t.mcl:5:20: type error: the left side of or: expected bool, got str ({index})",
        f"t.mcl:6:20: type error: the left side of or: expected bool, got str ({index})",
        "t.mcl:7:20: type error: the left side of or: expected bool, got str (mgmt's "
        "`$s->field || default`, for a field the struct may lack, has no equivalent here: a "
        "struct's fields are known when the program is checked; `||` is `or`)",
    ]
    assert value_of('$m["b"] <|> "d"', '$m = {"a" => "x",}') == "d"
    assert problems("$v = 1 || true\n") == [
        "t.mcl:1:6: type error: the left side of or: expected bool, got int"
    ]


def test_hostname_is_the_agents_and_a_binding_may_shadow_it() -> None:
    assert value_of('"on ${hostname}"') == "on testhost"
    assert value_of('$hostname + "!"') == "testhost!"
    rt = run('$hostname = "mine"\n$v = $hostname\nnoop "n" {}\n')
    assert binding(rt, "v") == "mine"
    (problem,) = problems('$v = $hostname + 1\nnoop "n" {}\n')
    assert "operator + cannot combine str and int" in problem


def test_panic_is_a_runtime_error_while_its_value_is_true_or_not_empty() -> None:
    rt = run('$p = false\npanic($p)\npanic("")\nnoop "n" {}\n')
    assert contents(rt) == {"n": None}
    rt = run('noop "n" {}\npanic(1 > 0)\n')
    _changed, _items, error = rt.evaluate()
    assert isinstance(error, FuncError) and str(error) == "t.mcl:2:1: panic"
    rt = run('noop "n" {}\nif true {\n\tpanic("fail1")\n}\n')
    _changed, _items, error = rt.evaluate()
    assert isinstance(error, FuncError) and str(error) == "t.mcl:3:2: panic: fail1"
    (problem,) = problems("panic(3)\n")
    assert problem == "t.mcl:1:7: type error: panic needs a bool or a str, got int"


def test_an_edge_field_with_a_condition_is_made_only_while_it_holds() -> None:
    src = """
    $b = {b}
    noop "a" {{ Depend => $b ?: Noop["b"], Before => not $b ?: Noop["c"] }}
    noop "b" {{}}
    noop "c" {{}}
    """
    for b, edge in (
        ("true", (("noop", "b"), ("noop", "a"))),
        ("false", (("noop", "a"), ("noop", "c"))),
    ):
        _changed, items, error = run(src.format(b=b)).evaluate()
        assert error is None
        assert [(e.src, e.dst) for e in items if isinstance(e, EdgeSpec)] == [edge]
    (problem,) = problems('noop "a" { Depend => 1 ?: Noop["b"] }\nnoop "b" {}\n')
    assert "the condition of Depend (before ?:): expected bool, got int" in problem


def test_include_as_exposes_the_bindings_and_classes_of_the_include() -> None:
    """mgmt's class-include-as1 and class-include-nested1 (`class a:b` is a class b defined
    inside a, seeing a's parameters and bindings)."""
    rt = run(
        """
        $top = "top-level"
        class base($s) {
            noop ["middle " + $s] {}
            $middle = "inside base"
            class c0 {
                $x = "goodbye"
            }
        }
        class base:inner1($s) {
            noop ["inner1 " + $s] {}
            $last = "inner1 sees " + $middle
        }
        class base:inner1:deep($s, $b) {
            $end = "deep sees " + $middle + " and " + $last
        }
        include base("world") as b0
        include b0.inner1("hello") as b1
        include b1.deep("deep", true) as d
        include b0.c0 as c
        noop [$top, $b0.middle, $b1.last, $d.end, $c.x] {}
        """
    )
    _changed, items, error = rt.evaluate()
    assert error is None
    assert sorted(i.name for i in items if isinstance(i, ResSpec)) == [
        "deep sees inside base and inner1 sees inside base",
        "goodbye",
        "inner1 hello",
        "inner1 sees inside base",
        "inside base",
        "middle world",
        "top-level",
    ]


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("class a:b { }\n", "t.mcl:1:1: class a:b: no class a in this block (define it first)"),
        ("class a { }\nclass a:b:c { }\n", "t.mcl:2:1: class a:b:c: no class b in class a"),
        (
            "class a { $x = 1 }\ninclude a as i\nnoop [$i.y] {}\n",
            "t.mcl:3:7: undefined variable $i.y: i has no $y",
        ),
        ("class a { }\ninclude a as i\ninclude i.nope\n", "t.mcl:3:1: undefined class i.nope"),
        (
            "class a($p) { $x = $p }\ninclude a($v) as i\n$v = $i.x\n",
            "t.mcl:3:1: dependency cycle: $v -> include a as i -> $v",
        ),
    ],
)
def test_include_as_and_nested_class_errors(src: str, message: str) -> None:
    assert any(p.startswith(message) for p in problems(src)), problems(src)


def test_a_binding_may_read_an_include_written_after_it() -> None:
    rt = run(
        """
        $v = $i.x + $j.y
        include a("p") as i
        include a($i.x + "q") as j
        class a($p) {
            $x = $p + "!"
            $y = $x + "?"
        }
        noop [$v] {}
        """
    )
    assert binding(rt, "v") == "p!p!q!?"


def test_lambdas_and_funcs_with_overloaded_operators_are_typed_per_use() -> None:
    rt = run(
        """
        $add = func($a, $b) { $a + $b }
        func twice($x) { $x + $x }
        $get = func($s) { $s->x }
        $s = $add("a", "b") + twice("c")
        $i = $add(1, 2) + twice(4)
        $f = $add(1.5, 2.0)
        $g = $get(struct{x => true})
        noop "n" {}
        """
    )
    assert [binding(rt, n) for n in "sifg"] == ["abcc", 11, 3.5, True]
    (problem,) = problems("$add = func($a, $b) { $a + $b }\n$x = $add(true, false)\n")
    assert problem == (
        "t.mcl:1:23: type error: operator + cannot combine bool and bool "
        "(in a function used at t.mcl:2:6)"
    )
