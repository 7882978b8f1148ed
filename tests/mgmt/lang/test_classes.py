"""class and include: a class's statements, included with arguments, each include checked and
run on a copy of its own (so a class is as polymorphic as its uses)."""

from __future__ import annotations

import pytest

import resources  # noqa: F401  # the kinds
from mgmt.lang.clock import ManualClock
from mgmt.lang.errors import FuncError
from mgmt.lang.source import build_graph
from tests.mgmt.lang.helpers import compile_ok, contents, problems, run

PROGRAM = """
import "fmt"

$base = "/srv"

class site($name, $port int) {
    $line = fmt.printf("%s listens on %d", $name, $port)
    file "${base}/${name}.conf" { content => "${line}\\n" }
    if $port < 1024 {
        include privileged($name)
    }
}

class privileged($who) {
    print "privileged-${who}" { msg => "${who} needs a low port" }
}

include site("www", 80)
include site("api", 8080)
"""


def test_includes_expand_with_their_own_arguments() -> None:
    assert contents(run(PROGRAM)) == {
        "/srv/www.conf": "www listens on 80\n",
        "/srv/api.conf": "api listens on 8080\n",
        "privileged-www": "www needs a low port",
    }


def test_each_include_is_typed_on_its_own() -> None:
    compile_ok(
        """
        class show($x) {
            noop "n-${x}" {}
        }
        class length($items) {
            noop "len" { comment => fmt.printf("%d", len($items)) }
        }
        import "fmt"
        include show("a")
        include length([1, 2])
        include length(["x"])
        """
    )


def test_a_class_sees_its_defining_scope_not_the_include_site() -> None:
    src = """
    $where = "top"
    class here {
        noop "n" { comment => $where }
    }
    if true {
        $where = "inner"
        include here
    }
    """
    rt = run(src)
    _changed, items, error = rt.evaluate()
    assert error is None
    assert dict(items[0].params)["comment"] == "top"


def test_streams_in_a_class_run_per_include() -> None:
    clock = ManualClock(start=100.5)
    rt = run(
        """
        import "datetime"
        import "fmt"
        class clock($label) {
            file "/t/${label}" { content => fmt.printf("%s %d", $label, datetime.now()) }
        }
        include clock("a")
        include clock("b")
        """,
        clock,
    )
    assert contents(rt) == {"/t/a": "a 100", "/t/b": "b 100"}
    clock.advance(1)
    assert contents(rt) == {"/t/a": "a 101", "/t/b": "b 101"}
    assert len(rt.streams) == 2


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("include nope(1)\n", "t.mcl:1:1: undefined class nope"),
        ('class a($x) { noop "n" {} }\ninclude a()\n', "class a takes 1 argument, got 0"),
        (
            "class a { include b }\nclass b { include a }\ninclude a\n",
            "t.mcl:2:11: include a: a class cannot include itself (a -> b -> a) "
            "(in include a at t.mcl:3:1)",
        ),
        (
            'class a($x) { file "/x" { content => $x } }\ninclude a(1)\n',
            "t.mcl:1:38: type error: file param content: expected str, got int "
            "(in include a at t.mcl:2:1)",
        ),
        (
            'class a { noop "n" {} }\nclass a { noop "m" {} }\n',
            "t.mcl:2:1: class a is already defined in this scope (at t.mcl:1:1)",
        ),
        ('class a($x str) { noop "n" {} }\ninclude a(1)\n', "$x is declared as str"),
        ("class a { }\ninclude a as b\ninclude a as b\n", "t.mcl:3:1: b is already a name"),
        ("class c($p, $p) { }\n", "t.mcl:1:13: parameter $p is given twice"),
        ("$a.b = 1\n", "$a.b: a name with a dot can be read, not declared"),
        ('for $i, $c.d in [1] { noop "n" {} }\n', "a name with a dot can be read, not declared"),
    ],
)
def test_errors(src: str, message: str) -> None:
    assert message in "\n".join(problems(src))


def test_a_duplicate_made_by_two_includes_or_iterations_names_where_each_came_from() -> None:
    """tester12 #7: "also at" named the class's statement, the same place as the problem's
    own; it names the other include now, and a loop's iterations say so."""
    src = 'class c($m) {\n\tprint "same" { msg => $m, }\n}\ninclude c("a")\ninclude c("b")\n'
    assert problems(src) == [
        "t.mcl:2:2: incompatible duplicate resource print[same]: msg: differs: 'a' vs 'b' "
        "(also at t.mcl:2:2, in include c at t.mcl:4:1) (in include c at t.mcl:5:1)"
    ]
    looped = (
        'class c($m) { print "same" { msg => $m, } }\nfor $i, $x in ["a", "b"] { include c($x) }\n'
    )
    _changed, items, _error = run(looped).evaluate()
    with pytest.raises(FuncError) as err:
        build_graph(items, "main")
    assert str(err.value) == (
        "t.mcl:1:15: incompatible duplicate resource print[same]: msg: differs: 'a' vs 'b' "
        "(also made there, by another iteration or include)"
    )
