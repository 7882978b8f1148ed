"""The language's graph stream in O(change) (issue 16): a resource declared as in the last graph
is that very object again (the engine keeps it on an identity check); a changed one is new."""

from __future__ import annotations

from mgmt.lang.funcs import Context
from mgmt.lang.runtime import Runtime
from mgmt.lang.source import Built, build_graph
from tests.mgmt.lang.helpers import compile_ok


def items_of(src: str) -> tuple[object, ...]:
    _changed, items, error = Runtime(compile_ok(src), ctx=Context("h1")).evaluate()
    assert error is None, error
    return items


def program(edited: str) -> str:
    return "".join(
        f'file "/srv/f{i}" {{ content => "{edited if i == 3 else i}\\n" }}\n' for i in range(20)
    )


def test_unchanged_declarations_give_the_same_resources() -> None:
    built: Built = {}
    first = build_graph(items_of(program("3")), "main", None, built)
    again: Built = {}
    second = build_graph(items_of(program("x")), "main", built, again)
    for key, res in first.graph.vertices.items():
        assert (second.graph.vertices[key] is res) == (key != ("file", "/srv/f3"))
    assert second.graph.vertices[("file", "/srv/f3")].content == "x\n"  # type: ignore[attr-defined]
    assert again[("file", "/srv/f3")][1] is second.graph.vertices[("file", "/srv/f3")]
