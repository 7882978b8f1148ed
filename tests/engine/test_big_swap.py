"""A swap of many vertices (issue 16): the loop gets a turn after every slice of its work
(engine/slices.py), counted structurally (vertex changes between two turns), never timed; the
collector stays paused through it and the first pass of what it started, then what lives is
frozen (Engine._pause_gc)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import weakref

import pytest

from engine.engine import Engine
from engine.events import VertexChanged
from engine.slices import LEAST, SLICE, WORK, next_size, sliced
from tests.engine.conftest import make_graph, settle

N = 8 * SLICE


class Turns:
    """How many vertex changes the engine told between two turns of the loop's other tasks."""

    def __init__(self, engine: Engine) -> None:
        self.counts: list[int] = []
        self.collecting: list[bool] = []  # the collector enabled, at each turn
        self._count = 0
        self._unsubscribe = engine.listeners.subscribe(VertexChanged, self._changed)
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.call_soon(self._turn)

    def _changed(self, _event: VertexChanged) -> None:
        self._count += 1

    def _turn(self) -> None:
        """Once a step of the loop: a callback scheduled in a step runs in the next one."""
        self.counts.append(self._count)
        self.collecting.append(gc.isenabled())
        self._count = 0
        self._next = self._loop.call_soon(self._turn)

    async def close(self) -> None:
        self._unsubscribe()
        self._next.cancel()


async def test_sliced_gives_the_loop_a_turn_after_every_slice() -> None:
    loop = asyncio.get_running_loop()
    turns = 0
    ticking: asyncio.Handle

    def count() -> None:  # once a step of the loop
        nonlocal turns, ticking
        turns += 1
        ticking = loop.call_soon(count)

    ticking = loop.call_soon(count)
    seen = [(part, turns) async for part in sliced(range(3 * SLICE + 1))]
    ticking.cancel()
    assert [item for part, _ in seen for item in part] == list(range(3 * SLICE + 1))
    sizes = [len(part) for part, _ in seen]
    assert sizes[0] == LEAST and all(size <= SLICE for size in sizes)
    # each at most twice the last one
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes[:-1]))
    # one turn of the loop after each full slice
    assert [t - seen[0][1] for _, t in seen] == list(range(len(seen)))


async def test_a_slice_that_takes_long_keeps_the_next_ones_small() -> None:
    """Each item costing a millisecond of the loop, a slice's work takes at least its size in
    milliseconds, over WORK: the next slice is as small as may be (the load of the machine
    only makes the work longer, never the slices bigger)."""
    assert WORK <= 0.002
    sizes = []
    async for part in sliced(range(8 * LEAST)):
        sizes.append(len(part))
        for _ in part:
            busy_until = time.perf_counter() + 0.001
            while time.perf_counter() < busy_until:  # the item's work on the loop
                pass
    assert sizes == [LEAST] * 8


def test_the_next_slice_fits_the_turn() -> None:
    assert next_size(100, WORK / 2) == 200  # twice at most
    assert next_size(100, WORK * 4) == 25
    assert next_size(100, WORK * 1000) == LEAST
    assert next_size(SLICE, WORK / 10) == SLICE


@pytest.mark.usefixtures("collector")
async def test_replacing_a_big_graph_gives_the_loop_turns(engine: Engine) -> None:
    """20,000 vertices replaced by 20,000 others kept the loop for 10 s (tester11's #1): every
    vertex stopped and started in one step of it. Now a step tells the changes of at most a
    slice of vertices (each tells up to 3 in one step as it starts) and a slice of others
    stopping, however big the swap."""
    await engine.apply(make_graph([f"a{i}" for i in range(N)]))
    await settle(engine)
    assert gc.isenabled()
    turns = Turns(engine)
    try:
        await engine.apply(make_graph([f"b{i}" for i in range(N)]))
        await settle(engine)
    finally:
        await turns.close()
    assert len(turns.counts) >= 2 * N // SLICE  # its stop and its start, in slices
    assert max(turns.counts) <= 4 * SLICE < N, str(turns.counts)
    assert sorted(engine.vertices) == sorted(("probe", f"b{i}") for i in range(N))
    # paused from the swap's start until what it started has processed once, then what
    # lives is frozen
    assert not any(turns.collecting[: N // SLICE])
    assert gc.isenabled() and gc.get_freeze_count() > 0


async def test_a_vertex_a_swap_drops_is_freed_by_reference_counting(engine: Engine) -> None:
    """Its handle's callbacks and its event pointed back at it: each vertex a swap dropped
    waited for a full collection (frozen in the CLI's agent until one walked the whole heap).
    Vertex.release breaks them: with the collector off, it is gone once the swap is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        await engine.apply(make_graph(["a", "b"]))
        await settle(engine)
        dropped = weakref.ref(engine.vertices[("probe", "a")].res)
        await engine.apply(make_graph(["b", "c"]))  # `b` kept: cmp() finds it the same
        await settle(engine)
        assert dropped() is None
        assert ("probe", "b") in engine.vertices and ("probe", "c") in engine.vertices
    finally:
        if was:
            gc.enable()
