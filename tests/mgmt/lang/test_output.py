"""The language's graph stream in O(change) (issues 15/16): a new output is diffed against the
last one by identity, and only what came or left changes in the last graph (engine.derive.derive):
the engine is told which resources those are and the ends of the edges that changed
(Loaded.since)."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.events import GraphSwapped
from engine.graph import Graph
from engine.steps import Steps
from mgmt.lang import source as lang_source
from mgmt.lang.errors import FuncError
from mgmt.lang.runtime import ResSpec
from mgmt.lang.source import LangSource
from mgmt.yamlgraph import Loaded
from tests.engine.conftest import settle

PROGRAM = """
import "fmt"
import "iter"
import "os"
$value = os.readfile("TMP/input")
for $i, $n in iter.range(200) {
    file fmt.printf("TMP/f%d", $n) {
        content => if $n == 7 { $value } else { "x" },
    }
    Noop["a"] -> File[fmt.printf("TMP/f%d", $n)]
}
noop "a" {}
noop "b" {}
if $value == "edge" {
    Noop["a"] -> Noop["b"]
}
if $value == "more" {
    noop "c" {}
}
if $value == "cycle" {
    Noop["a"] -> Noop["b"]
    Noop["b"] -> Noop["a"]
}
"""


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[LangSource]:
    (tmp_path / "input").write_text("0")
    program = tmp_path / "main.mcl"
    program.write_text(textwrap.dedent(PROGRAM).replace("TMP", str(tmp_path)))
    opened = await LangSource.open(program, hostname="h", watch=False)
    yield opened
    await opened.aclose()


async def change(source: LangSource, tmp_path: Path, value: str) -> Loaded:
    """The graph after the input became `value` (read through inotify)."""
    (tmp_path / "input").write_text(value)
    async with asyncio.timeout(10):
        return await anext(aiter(source))


def f7(tmp_path: Path) -> tuple[str, str]:
    return ("file", f"{tmp_path}/f7")


async def test_one_value_changes_one_vertex_of_the_last_graph(
    source: LangSource, tmp_path: Path
) -> None:
    assert source.first is not None
    first = source.first.graph
    loaded = await change(source, tmp_path, "1")
    assert source._output.derived == 1
    assert loaded.since == (first, frozenset({f7(tmp_path)}))
    graph = loaded.graph
    assert graph.vertices[f7(tmp_path)].content == "1"  # type: ignore[attr-defined]
    assert first.vertices[f7(tmp_path)].content == "0"  # type: ignore[attr-defined]
    same = [k for k, res in first.vertices.items() if graph.vertices[k] is res]
    assert len(same) == len(first) - 1 == 201
    assert graph.succ == first.succ  # its edge, declared again alike, stays


async def test_edges_and_vertices_come_and_go(source: LangSource, tmp_path: Path) -> None:
    a, b, c = ("noop", "a"), ("noop", "b"), ("noop", "c")
    loaded = await change(source, tmp_path, "edge")
    assert a in loaded.graph.pred[b] and loaded.since is not None
    assert loaded.since[1] == {f7(tmp_path), a, b}  # the engine swaps the edge in O(change)
    loaded = await change(source, tmp_path, "1")
    assert not loaded.graph.pred[b] and loaded.since is not None
    assert loaded.since[1] == {f7(tmp_path), a, b}
    loaded = await change(source, tmp_path, "more")
    assert c in loaded.graph and loaded.since is not None
    assert loaded.since[1] == {f7(tmp_path), c}
    loaded = await change(source, tmp_path, "2")
    assert c not in loaded.graph and len(loaded.graph) == 202
    assert loaded.since is not None and loaded.since[1] == {f7(tmp_path), c}
    assert source._output.derived == 4


async def test_a_cycle_keeps_the_last_graph_and_says_where(
    source: LangSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "lang")
    graphs = source.graphs
    source.evaluated.clear()
    (tmp_path / "input").write_text("cycle")
    async with asyncio.timeout(10):
        await source.evaluated.wait()
    assert source.graphs == graphs
    program = tmp_path / "main.mcl"
    assert (
        f"{program}:22:5: cycle: noop[a] -> noop[b] -> noop[a] (edges at {program}:21:5, "
        f"{program}:22:5) (keeping the last good graph)"
    ) in caplog.text
    loaded = await change(source, tmp_path, "2")
    assert loaded.graph.vertices[f7(tmp_path)].content == "2"  # type: ignore[attr-defined]


async def test_the_engine_swaps_an_edge_of_the_stream_alone(
    source: LangSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on real files: the graphs of an edge added and removed by an `if` are swapped
    without preparing the whole graph, and the files are what the program says."""
    assert source.first is not None
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    a, b = ("noop", "a"), ("noop", "b")
    try:
        await engine.apply(source.first.graph)
        await settle(engine)
        prepares = 0
        original = engine.prepare_steps

        def counted(graph: Graph) -> Steps[None]:
            nonlocal prepares
            prepares += 1
            return original(graph)

        monkeypatch.setattr(engine, "prepare_steps", counted)
        for value in ("edge", "1", "edge"):
            loaded = await change(source, tmp_path, value)
            await engine.apply(loaded.graph, loaded.since)
            await settle(engine)
            assert (tmp_path / "f7").read_text() == value
            assert (a in engine.graph.pred[b]) == (value == "edge")
            assert swaps[-1].rewired == {a, b} and swaps[-1].replaced == {f7(tmp_path)}
        assert prepares == 0
    finally:
        await engine.stop()


def _specs(count: int) -> list[ResSpec]:
    return [
        ResSpec("file", f"/tmp/out/f{n}", (("content", f"{n}"),), (), None) for n in range(count)
    ]


@pytest.mark.parametrize(
    ("bad", "alone"),
    [
        ({500: (("content", "x"), ("mode", "abc"))}, True),  # one statement's value
        ({500: (("state", "gone"),)}, True),  # a value not among a param's
        ({500: (("content", "x"), ("mode", "abc")), 900: (("content", "y"),)}, False),
        ({500: (("content", "x"), ("mode", "abc")), 100: (("mode", "u=q"),)}, False),
    ],
)
def test_a_bad_value_of_one_statement_is_told_from_it_alone(
    monkeypatch: pytest.MonkeyPatch, bad: dict[int, tuple[tuple[str, object], ...]], alone: bool
) -> None:
    """A value that makes one statement's resource wrong is told from that statement (the
    others are the last output's: none can fail first), as build_graph tells it; with two new
    statements, build_graph tells the first in the output's order."""
    items = _specs(1000)
    output = lang_source.Output("g")
    output.build(tuple(items))
    for n, params in bad.items():
        items[n] = ResSpec("file", f"/tmp/out/f{n}", params, (), None)
    with pytest.raises(FuncError) as expected:
        lang_source.build_graph(tuple(items), "g")
    full: list[int] = []
    original = lang_source.build_graph
    monkeypatch.setattr(
        lang_source, "build_graph", lambda *a, **k: full.append(1) or original(*a, **k)
    )
    with pytest.raises(FuncError) as told:
        output.build(tuple(items))
    assert (str(told.value), told.value.pos) == (str(expected.value), expected.value.pos)
    assert full == ([] if alone else [1])
    items = _specs(1000)  # and back: the last good graph is still the one derived from
    assert output.build(tuple(items)).since is not None
