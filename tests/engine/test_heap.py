"""FrozenHeap: the heap is frozen after each graph swap (the collector walks only what is
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


async def test_every_swap_freezes_the_heap_and_first_convergence_too(
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
    await engine.apply(second)  # a small swap (on a heap thawed as Engine._gc_resume does)
    await settle(engine)
    assert gc.get_freeze_count() > 0 and frozen.collections == 0


async def test_stopped_vertices_are_collected_in_full_now_and_then(
    engine: Engine, frozen: FrozenHeap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heap, "MIN_STOPPED", 3)
    names = [f"p{i}" for i in range(8)]
    await engine.apply(make_graph(names))
    await settle(engine)

    async def replace_all(tag: str) -> None:
        graph = make_graph(names)
        for name in names:
            graph.vertices[("probe", name)] = ProbeRes(name=name, tag=tag)
        await engine.apply(graph)
        await settle(engine)

    for round_ in range(4):  # each swap stops the 8: due once 4 times the graph (32) stopped
        await replace_all(str(round_))
    # Due, not made in the swap: made once the graph converged, or at the next swap if it
    # does not.
    assert frozen.collections == 0 and frozen.stopped == 32
    frozen.converged()
    assert frozen.collections == 1 and frozen.stopped == 0
    assert gc.get_freeze_count() > 0  # frozen again after the collection
    frozen.converged()
    assert frozen.collections == 1  # once
    for round_ in range(5):  # due again after the fourth; the fifth swap makes it
        await replace_all(f"again {round_}")
    assert frozen.collections == 2 and frozen.stopped == 8


def test_closing_for_the_end_of_the_process_leaves_the_heap_frozen_and_the_collector_off(
    engine: Engine,
) -> None:
    """The CLI's agent ends its process: the stopped graph is not walked once more."""
    was = gc.isenabled()
    heap_watch = FrozenHeap(engine)
    try:
        gc.enable()
        heap_watch.close(ending=True)
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
