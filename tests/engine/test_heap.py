"""FrozenHeap: the heap is frozen after each full graph swap (the collector walks only what is
newer), and collected in full once enough vertices were stopped since the last time."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from engine import heap
from engine.engine import Engine
from engine.heap import FrozenHeap
from tests.engine.conftest import make_graph, settle
from tests.engine.probe import ProbeRes


@pytest.fixture
def frozen(engine: Engine) -> Iterator[FrozenHeap]:
    watcher = FrozenHeap(engine)
    yield watcher
    watcher.close()
    assert gc.get_freeze_count() == 0


async def test_a_full_swap_freezes_the_heap_a_small_one_if_it_was_thawed(
    engine: Engine, frozen: FrozenHeap
) -> None:
    first = make_graph([f"p{i}" for i in range(20)])
    await engine.apply(first)
    await settle(engine)
    assert gc.get_freeze_count() > 0  # the graph, its vertices and tasks
    gc.unfreeze()
    frozen.converged()  # and again once it first converged
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    frozen.converged()  # not again
    assert gc.get_freeze_count() == 0
    second = first.copy()
    second.vertices[("probe", "p3")] = ProbeRes(name="p3", tag="x")
    await engine.apply(second)  # a small swap on a thawed heap (Engine._gc_resume does that)
    await settle(engine)
    assert gc.get_freeze_count() > 0
    before = gc.get_freeze_count()
    third = second.copy()
    third.vertices[("probe", "p3")] = ProbeRes(name="p3", tag="y")
    await engine.apply(third)  # a small swap on a frozen heap: what it made stays young
    await settle(engine)
    assert gc.get_freeze_count() <= before and frozen.collections == 0


async def test_stopped_vertices_are_collected_in_full_now_and_then(
    engine: Engine, frozen: FrozenHeap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "MIN_STOPPED", 3)
    graph = make_graph([f"p{i}" for i in range(8)])
    await engine.apply(graph)
    await settle(engine)
    for round_ in range(3):  # each swap stops one vertex; a quarter of 8 is 2, at least 3
        graph = graph.copy()
        graph.vertices[("probe", "p1")] = ProbeRes(name="p1", tag=str(round_))
        await engine.apply(graph)
        await settle(engine)
    assert frozen.collections == 1 and frozen.stopped == 0
    assert gc.get_freeze_count() > 0  # frozen again after the collection
