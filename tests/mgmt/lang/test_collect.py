"""Exported and collected resources in the language: `Meta:export`, `@@`, the collect
statement and `collect.res(kind)` (on the in-memory World; with real agents:
tests/e2e/test_lang_e2e.py)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from engine.meta import Meta
from engine.world import Exported, MemoryStore, MemoryWorld
from mgmt.collectscope import Collect
from mgmt.lang.errors import FuncError
from mgmt.lang.funcs import Context
from mgmt.lang.runtime import Runtime
from mgmt.lang.source import LangSource, build_graph
from resources.file import FileRes
from resources.pkg import PkgRes
from tests.mgmt.lang.helpers import compile_ok, problems


def items_of(src: str) -> tuple[object, ...]:
    """The output of a program without streams, evaluated once."""
    rt = Runtime(compile_ok(src), ctx=Context("h1"))
    _changed, items, error = rt.evaluate()
    assert error is None, error
    return items


def test_exports_and_collects_reach_the_loaded_graph() -> None:
    loaded = build_graph(
        items_of(
            """
            file "/srv/shown" { content => "a\\n", Meta:export => ["*"] }
            file "/srv/kept-back" { content => "b\\n", Meta:export => ["h2"], Meta:hidden => true }
            file "@@/srv/only-exported" { content => "c\\n" }
            collect file "/srv/x" { mode => "0600", Meta:hidden => false }
            collect file ["/srv/y", "/srv/z"] {}
            collect file [struct{name => "/srv/w", host => "h3"}] { content => "w\\n" }
            """
        ),
        "main",
    )
    assert sorted(r.name for r in loaded.graph) == ["/srv/kept-back", "/srv/shown"]
    assert loaded.graph.vertices[("file", "/srv/kept-back")].meta.hidden
    exported = {r.name: r.meta.export for r in loaded.exported}
    assert exported == {"/srv/shown": ["*"], "/srv/kept-back": ["h2"], "/srv/only-exported": []}
    assert loaded.collect == [
        Collect("file", name="/srv/x", params={"mode": "0600"}, meta={"hidden": False}),
        Collect("file", name="/srv/y"),
        Collect("file", name="/srv/z"),
        Collect("file", name="/srv/w", host="h3", params={"content": "w\n"}),
    ]


def test_a_resource_exported_twice_is_a_run_time_error() -> None:
    items = items_of('file "@@/x" { content => "a" }\nfile "/x" { Meta:export => ["*"] }\n')
    with pytest.raises(FuncError, match=r"file\[/x\] is exported twice \(also at t.mcl:1:1\)"):
        build_graph(items, "main")


def test_edges_to_collected_resources_wait_for_them() -> None:
    items = items_of(
        'collect file "/srv/x" {}\nnoop "n" {}\nFile["/srv/x"] -> Noop["n"]\n'
        'Noop["n"] -> File["/srv/x"]\n'
    )
    loaded = build_graph(items, "main")
    assert list(loaded.graph.edges()) == []
    assert [(s, d) for s, d, _ in loaded.pending] == [
        (("file", "/srv/x"), ("noop", "n")),
        (("noop", "n"), ("file", "/srv/x")),
    ]
    # (Unconditional, it is a compile error: test_check_resources; under an if, the run's.)
    items = items_of('noop "n" {}\nif true { Noop["n"] -> File["/srv/nowhere"] }\n')
    with pytest.raises(FuncError, match=r"edge to file\[/srv/nowhere\]: no such resource"):
        build_graph(items, "main")
    items = items_of(
        'collect file "/srv/x" {}\nnoop "n" {}\nFile["/srv/x"].content -> Noop["n"].comment\n'
    )
    with pytest.raises(FuncError, match="send/recv cannot involve a collected resource"):
        build_graph(items, "main")


def test_collect_statements_are_type_checked() -> None:
    errors = "\n".join(problems("collect file 3 {}\n"))
    assert "what a collect file names must be a str, a list of str or a list of struct" in errors
    errors = "\n".join(problems('collect file "/x" { contnet => "y" }\n'))
    assert "file has no param 'contnet'" in errors
    errors = "\n".join(problems('collect file "/x" { Depend => Noop["n"] }\nnoop "n" {}\n'))
    assert "a collect statement cannot have edges" in errors
    errors = "\n".join(problems('collect exec "x" {}\n'))
    assert "exec resources cannot be collected" in errors
    compile_ok('collect file [struct{name => "/x", host => "h1"}] { Meta:hidden => false }\n')
    errors = "\n".join(problems('import "world/collect"\n$x = collect.res(1)\n'))
    assert "collect.res" in errors


async def test_collect_res_lists_what_this_host_may_collect(tmp_path: Path) -> None:
    store = MemoryStore()
    me, other = MemoryWorld("h1", store), MemoryWorld("h2", store)
    program = tmp_path / "main.mcl"
    program.write_text(
        textwrap.dedent(
            """
            import "fmt"
            import "world/collect"
            noop "n" { comment => fmt.printf("%v", collect.res("file")) }
            """
        )
    )
    source = await LangSource.open(program, hostname="h1", watch=False)
    try:
        assert source.needs_cluster
        settled = await source.attach_world(me)
        assert settled is not None
        assert settled.graph.vertices[("noop", "n")].comment == "[]"  # type: ignore[attr-defined]
        await other.res_export(
            [
                Exported.of("h2", FileRes(name="/b", content="")),
                Exported.of("h2", FileRes(name="/a", content="")),
                Exported.of(
                    "h2", FileRes(name="/not-for-h1", content="", meta=Meta(export=["h3"]))
                ),
            ]
        )
        async with asyncio.timeout(5):
            following = await anext(aiter(source))
        comment = following.graph.vertices[("noop", "n")].comment  # type: ignore[attr-defined]
        assert comment == '[struct{name: "/a"; host: "h2"}, struct{name: "/b"; host: "h2"}]'
    finally:
        await source.aclose()


def test_duplicate_declarations_merge_or_name_both_positions() -> None:
    """engine.graph's rules, as for graph files: identical ones are one vertex, compatible ones
    merge (pkg installed + newest: newest), anything else names both declarations."""
    same = 'noop "n" {}\nnoop "n" {}\npkg "cowsay" {}\npkg "cowsay" { state => "newest" }\n'
    loaded = build_graph(items_of(same), "main")
    assert sorted(r.name for r in loaded.graph) == ["cowsay", "n"]
    pkg = loaded.graph.vertices[("pkg", "cowsay")]
    assert isinstance(pkg, PkgRes) and pkg.state == "newest"
    # (In a branch, so the checker leaves it to the run; it finds the unconditional ones.)
    clash = 'pkg "cowsay" {}\nif true { pkg "cowsay" { state => "uninstalled" } }\n'
    with pytest.raises(FuncError, match=r"incompatible duplicate .* \(also at t.mcl:1:1\)"):
        build_graph(items_of(clash), "main")
