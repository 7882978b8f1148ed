"""The converger over a real engine running probe resources: poll ticks and activity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.meta import Meta
from mgmt.converger import Converger
from tests.engine import probe
from tests.engine.conftest import make_graph, settle


@pytest.fixture(autouse=True)
def _fresh_probes() -> None:
    probe.STATE.clear()


async def test_poll_ticks_that_change_nothing_let_the_graph_converge(tmp_path: Path) -> None:
    """Timeout 1.5 s, a tick every 1 s (and downstream poked by each): converged anyway."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=1.5)
    try:
        await engine.apply(make_graph("ab", [("a", "b")], a={"meta": Meta(poll=1)}))
        async with asyncio.timeout(20):  # hang-preventing bound only
            await converger.converged.wait()
        ticks = len(probe.state("a").calls)
        assert ticks >= 2, ticks  # it was polled meanwhile: the ticks did not hold it back

        # A tick whose check_apply changes something is activity: the timer restarts.
        probe.state("a").result = False
        async with asyncio.timeout(20):
            await converger.diverged.wait()
        probe.state("a").result = None
        async with asyncio.timeout(20):
            await converger.converged.wait()
    finally:
        converger.close()
        await engine.stop(graceful=False)


async def test_unsettled_names_the_running_vertex(tmp_path: Path) -> None:
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=1)
    gate = probe.state("a").gate = asyncio.Event()
    try:
        await engine.apply(make_graph("ab"))
        await settle(engine, lambda: engine.vertices[("probe", "b")].status is Status.OK)
        async with asyncio.timeout(20):
            await probe.state("a").entered.wait()
        assert [(v.name, why) for v, why in converger.unsettled()] == [("probe[a]", "running")]
    finally:
        gate.set()
        converger.close()
        await engine.stop(graceful=False)
