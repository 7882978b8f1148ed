"""A full swap prepares its graph (Engine.prepare: the automatic edges, groups and checks of the
whole graph) on the loop in steps (engine.steps, engine.slices.stepped): the running graph runs
meanwhile, a graph it refuses changes nothing, and a swap asked for meanwhile waits for it.

A real engine, the real file kind on tmp_path, real inotify; order, never time. The big graphs
are BULK hidden file resources (ordered and prepared as any, never applied: cheap to start) and
a kept file, f0, the running graph's only one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.errors import EngineStopped, GraphError
from engine.events import CheckApplied, GraphSwapped, VertexChanged
from engine.graph import Edge, Graph
from engine.meta import Meta
from engine.steps import finish
from resources.file import FileRes
from tests.engine.conftest import settle

BULK = 20_000  # ~0.15 s of preparation at least: hundreds of the loop's turns


def bulk(out: Path, kept: FileRes) -> Graph:
    """`kept` and BULK hidden files."""
    graph = Graph("files")
    graph.add(kept)
    for i in range(BULK):
        meta = Meta(hidden=True)
        graph.add(FileRes(name=f"h{i}", path=f"{out}/h{i}", content=f"{i}\n", meta=meta))
    return graph


def one(res: FileRes) -> Graph:
    graph = Graph("files")
    graph.add(res)
    return graph


class Told:
    """What the engine told, in order: f0's check_applies begun and those that changed
    something, the swaps; and the `accepted` callbacks."""

    def __init__(self, engine: Engine) -> None:
        self.order: list[str] = []
        engine.listeners.subscribe(CheckApplied, self._checked)
        engine.listeners.subscribe(VertexChanged, self._changed)
        engine.listeners.subscribe(GraphSwapped, lambda e: self.order.append(f"swap +{e.started}"))

    def _changed(self, event: VertexChanged) -> None:
        vertex = event.vertex
        if vertex.res.name == "f0" and vertex.status is Status.RUNNING:
            self.order.append("f0 checking")

    def _checked(self, event: CheckApplied) -> None:
        if event.vertex.res.name == "f0" and event.changed:
            self.order.append("f0 repaired")

    def accepted(self, name: str) -> None:
        self.order.append(f"{name} accepted")


@pytest.fixture
async def running(tmp_path: Path) -> tuple[Engine, Path, FileRes]:
    """An engine converged with f0 alone (yielded: the engine, the files' directory, f0)."""
    out = tmp_path / "out"
    out.mkdir()
    f0 = FileRes(name="f0", path=f"{out}/f0", content="zero\n")
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    await engine.apply(one(f0))
    await settle(engine)
    assert (out / "f0").read_text() == "zero\n"
    return engine, out, f0


@pytest.mark.slow  # a few seconds: 20,000 resources made, prepared and started
async def test_a_drift_is_repaired_while_a_big_swap_prepares(
    running: tuple[Engine, Path, FileRes],
) -> None:
    engine, out, f0 = running
    told = Told(engine)
    try:
        big = bulk(out, f0)  # f0 the same object: kept
        (out / "f0").unlink()  # its event is read at the loop's next turn
        await engine.apply(big, accepted=lambda: told.accepted("big"))
        await settle(engine, lambda: "f0 repaired" in told.order, timeout=60)
        # Its event read, its worker woken, its check begun, all on the loop, before the swap
        # was prepared (before, the preparation was one step of the loop: the event was read
        # after it). Its end is the disk's (an fsync, in an I/O thread): not ordered here.
        assert told.order.index("f0 checking") < told.order.index("big accepted"), told.order
        assert (out / "f0").read_text() == "zero\n"
        assert len(engine.vertices) == BULK + 1
        assert engine.vertices[("file", "f0")].res is f0  # kept
    finally:
        await engine.stop(graceful=False)


@pytest.mark.slow  # a few seconds: 20,000 resources made and prepared
async def test_a_big_graph_refused_changes_nothing(running: tuple[Engine, Path, FileRes]) -> None:
    """A cycle, found once the automatic edges of all are added: the swap had given the loop
    turns (the drift repaired meanwhile), and nothing of the graph ran."""
    engine, out, f0 = running
    told = Told(engine)
    try:
        graph, vertices = engine.graph, dict(engine.vertices)
        big = bulk(out, f0)
        big.connect(("file", "h1"), ("file", "h2"), Edge())
        big.connect(("file", "h2"), ("file", "h1"), Edge())
        (out / "f0").unlink()
        with pytest.raises(GraphError, match=r"cycle: file\[h1\] -> file\[h2\] -> file\[h1\]"):
            await engine.apply(big, accepted=lambda: told.accepted("big"))
        await settle(engine, lambda: "f0 repaired" in told.order, timeout=60)
        assert "big accepted" not in told.order  # nor a swap
        assert not any(line.startswith("swap") for line in told.order), told.order
        assert engine.graph is graph and engine.vertices == vertices
        # The engine runs on as it was: a change of f0 alone is swapped in.
        changed = FileRes(name="f0", path=f"{out}/f0", content="one\n")
        await engine.apply(one(changed))
        await settle(engine)
        assert (out / "f0").read_text() == "one\n"
    finally:
        await engine.stop(graceful=False)


@pytest.mark.slow  # a few seconds: 20,000 resources made, prepared and started
async def test_a_swap_asked_for_while_one_prepares_waits_for_it(
    running: tuple[Engine, Path, FileRes],
) -> None:
    """The second swap (f0 changed, alone) is asked for as the first prepares: it runs once
    the first is done, on the graph that one left (else it swapped from the graph before, and
    the first, ending after it, undid it)."""
    engine, out, f0 = running
    told = Told(engine)
    try:
        changed = FileRes(name="f0", path=f"{out}/f0", content="one\n")
        first = asyncio.create_task(engine.apply(bulk(out, f0), None, lambda: told.accepted("big")))
        second = asyncio.create_task(engine.apply(one(changed), None, lambda: told.accepted("one")))
        await asyncio.gather(first, second)
        await settle(engine)
        swaps = [line for line in told.order if "accepted" in line or "swap" in line]
        assert swaps == ["big accepted", f"swap +{BULK}", "one accepted", "swap +1"], told.order
        assert sorted(engine.vertices) == [("file", "f0")]
        assert (out / "f0").read_text() == "one\n"
    finally:
        await engine.stop(graceful=False)


def test_the_steps_of_a_preparation_are_its_whole_work_at_once(tmp_path: Path) -> None:
    """Engine.prepare (a command's check, a tool) runs the same steps to their end at once: the
    automatic edges of a directory's files, the cycle found in steps."""
    engine = Engine(hostname="test", prefix=tmp_path)
    graph = Graph("files")
    graph.add(FileRes(name="dir", path=f"{tmp_path}/d/", state="exists"))
    for i in range(100):
        graph.add(FileRes(name=f"f{i}", path=f"{tmp_path}/d/f{i}", content="x"))
    engine.prepare(graph)
    assert sorted(graph.succ[("file", "dir")]) == sorted(("file", f"f{i}") for i in range(100))
    graph.connect(("file", "f1"), ("file", "f2"))
    graph.connect(("file", "f2"), ("file", "f1"))
    assert finish(graph.cycle_steps()) == [("file", "f1"), ("file", "f2"), ("file", "f1")]


@pytest.mark.slow  # a few seconds: 20,000 resources made and (partly) prepared
async def test_a_stop_while_a_big_swap_prepares_applies_nothing_of_it(
    running: tuple[Engine, Path, FileRes],
) -> None:
    """stop() during the preparation (it gives the loop turns): the swap ends refused once
    prepared, none of its vertices ever started (before 2026-12-06 they started in the stopped
    engine and ran on)."""
    engine, out, f0 = running
    told = Told(engine)
    try:
        (out / "f0").unlink()
        swap = asyncio.create_task(
            engine.apply(bulk(out, f0), accepted=lambda: told.accepted("big"))
        )
        await settle(engine, lambda: "f0 checking" in told.order, timeout=60)  # it prepares
        assert not swap.done()
        await engine.stop()
        with pytest.raises(EngineStopped, match="the engine is stopping"):
            await swap
        assert "big accepted" not in told.order, told.order
        assert list(engine.vertices) == [("file", "f0")]
        assert engine.vertices[("file", "f0")].status is Status.STOPPED
        with pytest.raises(EngineStopped):
            await engine.apply(one(f0))
    finally:
        await engine.stop(graceful=False)
