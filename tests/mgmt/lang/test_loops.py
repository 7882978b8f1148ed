"""for and forkv: statements declared once per element of a list or map."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mgmt.lang.clock import ManualClock
from mgmt.lang.errors import FuncError
from tests.mgmt.lang.helpers import contents, problems, run


def test_for_declares_per_element_with_its_index() -> None:
    rt = run(
        """
        import "fmt"
        for $i, $name in ["a", "b"] {
            file "/t/${name}" { content => fmt.printf("%d %s", $i, $name) }
        }
        """
    )
    assert contents(rt) == {"/t/a": "0 a", "/t/b": "1 b"}


def test_forkv_walks_a_map_in_key_order_with_ifs_and_nested_loops() -> None:
    rt = run(
        """
        $owners = {"www" => ["alice", "carol"], "api" => ["bob"], "db" => []}
        forkv $site, $people in $owners {
            for $i, $who in $people {
                if $who != "carol" {
                    print "${site}-${who}" { msg => "${who} owns ${site}" }
                }
            }
        }
        """
    )
    assert list(contents(rt).items()) == [
        ("api-bob", "bob owns api"),
        ("www-alice", "alice owns www"),
    ]


def test_bindings_inside_a_loop_are_per_element() -> None:
    """As in mgmt's examples/lang/for.mcl: a binding in the body sees the loop's values."""
    rt = run(
        """
        import "fmt"
        $lists = [["a", "b"], ["c"]]
        for $index, $value in $lists {
            for $i, $v in $value {
                $s = fmt.printf("%s is %d", $v, $i + $index)
                if $i == 0 {
                    $first = "first " + $s
                    print [$first,] {}
                } else {
                    print [$s,] {}
                }
            }
        }
        """
    )
    assert list(contents(rt)) == ["first a is 0", "b is 1", "first c is 1"]


def test_a_loop_follows_its_list_as_it_changes() -> None:
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "fmt"
        import "iter"
        import "math"
        $n = math.mod(datetime.now(), 3)
        for $i, $x in iter.range($n) {
            noop fmt.printf("n%d", $x) {}
        }
        """,
        clock,
    )
    assert list(contents(rt)) == ["n0"]  # 100 % 3 = 1
    clock.advance(1)
    assert list(contents(rt)) == ["n0", "n1"]
    clock.advance(1)
    assert list(contents(rt)) == []


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ('for $i, $x in "abc" { noop "n" {} }\n', "for needs a list: expected []"),
        ('forkv $k, $v in [1] { noop "n" {} }\n', "forkv needs a map: expected map{"),
        ("for $i, $x in [1] { func f() { 1 } }\n", "a func cannot be inside a for loop (yet)"),
        (  # a class included in a loop is expanded there: its funcs are refused there
            "for $i, $x in [1] { include c }\nclass c { func f() { 1 } }\n",
            "a func cannot be inside a for loop (yet)",
        ),
        ('for $i, $i in [1] { noop "n" {} }\n', "$i is given twice"),
        ('for $i, $x in [1] { noop "n" { comment => $x } }\n', "expected str, got int"),
    ],
)
def test_errors(src: str, message: str) -> None:
    assert message in "\n".join(problems(src))


def test_a_refused_func_or_import_in_a_loop_is_one_error() -> None:
    """tester12 #11: its uses were a second error each (`undefined function bang`), as a
    failed import's are not."""
    src = (
        'class c($x) {\n\tfunc bang($a) { $a + "!" }\n\tprint "p${x}" { msg => bang($x), }\n}\n'
        'for $i, $x in ["a", "b"] { include c($x) }\n'
        'for $i, $x in ["c"] {\n\timport "fmt"\n\tprint "q" { msg => fmt.printf("%s", $x), }\n}\n'
    )
    assert problems(src) == [
        "t.mcl:2:2: a func cannot be inside a for loop (yet): use the loop's values directly "
        "(in include c at t.mcl:5:28)",
        "t.mcl:7:2: an import cannot be inside a for loop (yet): use the loop's values directly",
    ]
    # another undefined function is still one
    assert "undefined function nope" in "\n".join(
        problems('for $i, $x in ["a"] { func f() { 1 } }\n$y = nope()\n')
    )


def test_include_and_class_inside_for_and_forkv_per_element_as_in_mgmt() -> None:
    """tester7 (lower): `include` inside `for` was refused; mgmt's for loops hold includes
    (and class definitions), each included once per element with that element's values."""
    clock = ManualClock(start=100.2)
    rt = run(
        """
        import "datetime"
        import "fmt"
        $now = datetime.now()
        class greet($x) {
            $result = "hi " + $x
            print "n-${x}" { msg => fmt.printf("%s %d", $result, $now) }
        }
        for $index, $value in ["a", "b"] {
            if $index > 0 {
                include greet($value) as g
                print [fmt.printf("%s is %d", $g.result, $index),] {}
            }
            include greet($value + "2")
        }
        forkv $k, $v in {"x" => 1, "y" => 2} {
            class inner($n) {
                $r = fmt.printf("%s=%d", $k, $n)
            }
            include inner($v * 10) as i
            noop [$i.r,] {}
        }
        """,
        clock,
    )
    expected = {
        "n-a2": "hi a2 100",
        "n-b": "hi b 100",
        "n-b2": "hi b2 100",
        "hi b is 1": None,
        "x=10": None,
        "y=20": None,
    }
    assert contents(rt) == expected
    clock.advance(1)  # what the included classes read changes: each element follows
    assert contents(rt) == {k: v.replace("100", "101") if v else v for k, v in expected.items()}


def test_a_lambda_parameter_does_not_shadow_a_loop_name() -> None:
    rt = run(
        """
        import "iter"
        for $i, $x in ["a"] {
            $y = $x + "!"
            print iter.map(["q"], func($x) { $y }) { msg => "m" }
        }
        """
    )
    assert list(contents(rt)) == ["a!"]


async def test_reordering_a_loops_list_keeps_the_streams_of_elements_that_stay(
    tmp_path: Path,
) -> None:
    """A stream's instance follows the names its arguments read, not the loop's index."""
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name.upper())
    names = tmp_path / "names"
    names.write_text("a b c")
    kicked = asyncio.Event()
    rt = run(
        f"""
        import "os"
        import "strings"
        for $i, $x in strings.split(os.readfile("{names}"), " ") {{
            noop $x {{ comment => os.readfile("{tmp_path}/${{x}}") }}
        }}
        """,
        notify=kicked.set,
    )

    async def declared(wanted: list[str]) -> None:
        async with asyncio.timeout(5):
            while True:
                kicked.clear()
                _changed, items, error = rt.evaluate()
                if error is None and [i.name for i in items] == wanted:
                    return
                await kicked.wait()

    try:
        await declared(["a", "b", "c"])
        before = {s.args[0]: s for s, _ in rt.streams.values()}
        names.write_text("c a")
        await declared(["c", "a"])
        after = {s.args[0]: s for s, _ in rt.streams.values()}
        for kept in (f"{tmp_path}/a", f"{tmp_path}/c"):
            assert after[kept] is before[kept]
        assert f"{tmp_path}/b" not in after
    finally:
        await rt.close()


def test_a_change_read_by_one_iteration_evaluates_that_body_only() -> None:
    """A top-level loop keeps each element's declarations and what they read: a change that
    one element's body reads evaluates that body again, not the others; a failed iteration
    recovers with what it reads; a new element is evaluated, the others are not."""
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "fmt"
        import "iter"
        $now = datetime.now()
        $size = if $now < 103 { 100 } else { 101 }
        for $i, $x in iter.range($size) {
            print fmt.printf("n%d", $x) {
                msg => if $x == 50 { fmt.printf("%.1f", 10 / ($now - 100)) } else { "-" },
            }
        }
        """,
        clock,
    )
    with pytest.raises(FuncError, match="divide by zero"):
        contents(rt)
    assert rt.iterations == 51  # up to the failing one
    steps = []
    for _ in range(3):
        clock.advance(1)
        seen = rt.iterations
        got = contents(rt)
        steps.append((len(got), got["n50"], got["n49"], rt.iterations - seen))
    assert steps == [
        (100, "10.0", "-", 50),  # the failed one, and those after it not evaluated yet
        (100, "5.0", "-", 1),  # the one reading $now
        (101, "3.3", "-", 2),  # that one and the new element
    ]


def test_a_loop_over_the_same_list_visits_only_the_elements_a_change_reads() -> None:
    """Over the same list, a change costs the elements that read it, not one check per element
    (Runtime.revisited): the others' declarations are the very objects of the last output."""
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "fmt"
        import "iter"
        $now = datetime.now()
        for $i, $x in iter.range(2000) {
            print fmt.printf("n%d", $x) {
                msg => if $x == 7 { fmt.printf("%d", $now) } else { "-" },
            }
        }
        """,
        clock,
    )
    first = rt.evaluate()[1]
    assert rt.iterations == 2000
    clock.advance(1)
    seen = rt.revisited
    _changed, items, error = rt.evaluate()
    assert error is None and (rt.iterations, rt.revisited) == (2001, seen)
    assert items[7].params == (("msg", "101"),) and first[7].params == (("msg", "100"),)
    assert all(a is b for a, b in zip(first, items, strict=True) if a.name != "n7")
