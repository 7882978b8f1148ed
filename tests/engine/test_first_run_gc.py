"""The cycle collector around the first run (engine.Engine._pause_gc), with real probes."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import engine as engine_module
from engine.engine import Engine
from engine.graph import Edge, Graph
from engine.resource import Resource, register
from tests.engine.conftest import make_graph, settle
from tests.engine.probe import state

SEEN: list[tuple[bool, int]] = []  # (collector enabled, objects frozen) at each check_apply


@register("gcprobe")
@dataclass(kw_only=True, eq=False)
class GcProbe(Resource):
    async def check_apply(self, apply: bool) -> bool:
        SEEN.append((gc.isenabled(), gc.get_freeze_count()))
        return True


def chain(names: str) -> Graph:
    graph = Graph("test")
    for name in names:
        graph.add(GcProbe(name=name))
    for src, dst in itertools.pairwise(names):
        graph.connect(("gcprobe", src), ("gcprobe", dst), Edge())
    return graph


@pytest.mark.usefixtures("collector")
async def test_paused_during_the_first_pass_then_frozen(tmp_path: Path) -> None:
    engine = Engine(hostname="test", prefix=tmp_path)
    SEEN.clear()
    try:
        await engine.apply(chain("abc"))
        await settle(engine)
        assert SEEN == [(False, 0)] * 3  # no full pass while the first graph is checked
        assert gc.isenabled() and gc.get_freeze_count() > 0  # then what lives is skipped
        await engine.apply(chain("abcd"))
        assert gc.isenabled() and gc.get_freeze_count() == 0  # a swap may make it garbage
        await settle(engine)
    finally:
        await engine.stop()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
async def test_a_failure_or_a_stop_resumes_the_collector(tmp_path: Path) -> None:
    engine = Engine(hostname="test", prefix=tmp_path)
    state("b").failures_left = 100
    try:
        await engine.apply(make_graph("abc", [("b", "c")]))
        await settle(engine, lambda: engine.vertices[("probe", "b")].error is not None)
        assert gc.isenabled()  # c never runs (blocked): the failure ends the pause
    finally:
        await engine.stop()
    engine = Engine(hostname="test", prefix=tmp_path)
    await engine.apply(make_graph("a"))
    await engine.stop(graceful=False)  # stopped before its first pass ended
    assert gc.isenabled()


@register("gcstuck")
@dataclass(kw_only=True, eq=False)
class GcStuck(Resource):
    """A check_apply that never ends (an exec whose command runs forever)."""

    async def check_apply(self, apply: bool) -> bool:
        await asyncio.Event().wait()
        return True


@pytest.mark.usefixtures("collector")
async def test_a_first_pass_that_never_ends_resumes_the_collector_after_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "FIRST_PASS_GC_BOUND", 0.05)
    graph = Graph("test")
    graph.add(GcStuck(name="forever"))
    engine = Engine(hostname="test", prefix=tmp_path)
    ended = asyncio.Event()
    end = engine._end_first_pass

    def end_and_say() -> None:
        end()
        ended.set()

    monkeypatch.setattr(engine, "_end_first_pass", end_and_say)
    try:
        await engine.apply(graph)
        assert not gc.isenabled()
        await asyncio.wait_for(ended.wait(), 10)
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        await engine.stop(graceful=False)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
async def test_the_bound_counts_from_the_last_first_outcome_not_from_the_start(
    tmp_path: Path,
) -> None:
    """A long first pass that keeps making progress (vertices start, get their startup event,
    their first outcome) stays paused (at 50,000 files, full collections from the 30th second
    on took 16 of the run's 69 s of user CPU); one that made no progress for the bound resumes
    the collector."""
    graph = chain("ab")
    graph.add(GcStuck(name="forever"))
    engine = Engine(hostname="test", prefix=tmp_path)
    try:
        before = time.monotonic()
        await engine.apply(graph)
        await settle(
            engine,
            lambda: (
                engine._first_progress >= before and engine._first_pass == {("gcstuck", "forever")}
            ),
        )
        bound = engine_module.FIRST_PASS_GC_BOUND
        engine._first_progress = time.monotonic() - bound / 2  # progress half a bound ago
        engine._first_pass_stalled()  # as its timer would, a bound after the start
        assert not gc.isenabled() and engine._first_pass is not None
        engine._first_progress = time.monotonic() - bound  # none for a whole bound
        engine._first_pass_stalled()
        assert gc.isenabled() and engine._first_pass is None
    finally:
        await engine.stop(graceful=False)
