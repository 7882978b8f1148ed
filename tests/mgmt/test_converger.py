"""The converger over a real engine running probe resources: poll ticks and activity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.engine import Engine, Status, Vertex
from engine.events import VertexChanged
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


async def test_a_failure_re_evaluates_its_descendants_only(tmp_path: Path) -> None:
    """`a -> b`, and `c`...`f` on their own: a's failure and its recovery re-evaluate a and
    its descendant b only (re-evaluating the whole graph at every failure made 20,000 failing
    files quadratic), and the converger's failed list stays right."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.1)
    seen: list[str] = []
    settled = converger._settled

    def counting(vertex: Vertex) -> bool:
        seen.append(vertex.key[1])
        return settled(vertex)

    converger._settled = counting  # type: ignore[method-assign]
    a = ("probe", "a")
    try:
        await engine.apply(make_graph("abcdef", [("a", "b")], a={"meta": Meta(retry=0)}))
        async with asyncio.timeout(20):  # hang-preventing bound only
            await converger.converged.wait()
        seen.clear()  # the first graph's swap re-evaluated every vertex
        probe.state("a").failures_left = 1
        engine.vertices[a]._on_event()  # as its watch would: the next check fails
        await settle(engine, lambda: engine.vertices[a].failed)
        async with asyncio.timeout(20):
            await converger.converged.wait()
        assert [v.name for v in converger.failed()] == ["probe[a]"]
        assert converger.blocked() == []  # b ran before a failed: it is not held back
        assert sorted(seen) == ["a", "b"], seen  # the failure: a and its descendant
        seen.clear()
        engine.vertices[a]._on_event()  # an event: a failed vertex checks again, and succeeds
        await settle(engine, lambda: engine.vertices[a].status is Status.OK)
        async with asyncio.timeout(20):
            await converger.converged.wait()
        assert converger.failed() == [] and converger.blocked() == []
        assert set(seen) <= {"a", "b"}, seen  # the recovery: the same two, none of c...f
    finally:
        converger.close()
        await engine.stop(graceful=False)


async def test_a_full_swap_forgets_what_it_stopped_and_re_evaluates_no_vertex_again(
    tmp_path: Path,
) -> None:
    """Issue 16: `a -> b`, a failed for good before b ran (b held back, settled). A full swap
    (a hundred vertices added) that keeps a failed `x` and its held-back `y` and removes a:
    b, told by the swap once the new graph is in place, runs and the graph converges; a is
    forgotten, x is still failed and y still held back; the converger did not re-evaluate the
    whole graph at the swap's end (each kept vertex was told by the swap)."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.1)
    failing = {"meta": Meta(retry=0)}
    for name in ("a", "x"):
        probe.state(name).failures_left = 1000
    try:
        first = make_graph("abxy", [("a", "b"), ("x", "y")], a=failing, x=failing)
        await engine.apply(first)
        async with asyncio.timeout(20):  # hang-preventing bound only
            await converger.converged.wait()
        assert sorted(v.name for v in converger.failed()) == ["probe[a]", "probe[x]"]
        assert sorted(v.name for v in converger.blocked()) == ["probe[b]", "probe[y]"]
        assert not probe.state("b").calls
        recomputes: list[None] = []
        recompute = converger.recompute
        converger.recompute = lambda: (recomputes.append(None), recompute())[1]  # type: ignore[method-assign]
        names = ["b", "x", "y", *(f"n{i}" for i in range(100))]
        await engine.apply(make_graph(names, [("x", "y")], x=failing))
        await settle(engine, lambda: engine.vertices[("probe", "b")].status is Status.OK)
        async with asyncio.timeout(20):
            await converger.converged.wait()
        assert not recomputes
        assert [v.name for v in converger.failed()] == ["probe[x]"]
        assert [v.name for v in converger.blocked()] == ["probe[y]"]
        assert ("probe", "a") not in converger._failed | converger._unsettled
        assert converger.counts() == (0, 1)
    finally:
        converger.close()
        await engine.stop(graceful=False)


async def test_stopping_says_not_converged_and_follows_no_vertex(tmp_path: Path) -> None:
    """The agent's end: not converged at once (as the first vertex stopping said), then the
    engine's stop tells the converger nothing; an empty graph stays converged."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0)
    try:
        await engine.apply(make_graph("ab", [("a", "b")]))
        async with asyncio.timeout(20):  # hang-preventing bound only
            await converger.converged.wait()
        converger.stopping()
        assert not converger.converged.is_set() and converger.diverged.is_set()
        assert {v.name for v, _ in converger.unsettled()} == {"probe[a]", "probe[b]"}
        assert converger._changed not in engine.listeners.of(VertexChanged)
        await engine.stop()
        assert not converger.converged.is_set()
    finally:
        converger.close()
        await engine.stop(graceful=False)
    empty = Engine(hostname="test", prefix=tmp_path / "empty")
    idle = Converger(empty, timeout=0)
    try:
        await empty.apply(make_graph(""))
        async with asyncio.timeout(20):
            await idle.converged.wait()
        idle.stopping()
        await empty.stop()
        assert idle.converged.is_set()
    finally:
        idle.close()
        await empty.stop(graceful=False)


async def test_a_change_while_another_vertex_runs_keeps_it_diverged_until_all_settle(
    tmp_path: Path,
) -> None:
    """A check that changed something while another vertex is unsettled (a first run's every
    write) restarts nothing: diverged, no timer, not settled; once the last one settles the
    timer is armed and the graph converges."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.1)
    gate = probe.state("b").gate = asyncio.Event()
    probe.state("a").result = False  # a's check changes something
    try:
        await engine.apply(make_graph("ab"))
        async with asyncio.timeout(20):  # hang-preventing bound only
            await probe.state("b").entered.wait()
        await settle(engine, lambda: engine.vertices[("probe", "a")].status is Status.OK)
        assert probe.state("a").calls
        assert converger.diverged.is_set() and not converger.converged.is_set()
        assert not converger.settled.is_set()
        assert [(v.name, why) for v, why in converger.unsettled()] == [("probe[b]", "running")]
        gate.set()
        async with asyncio.timeout(20):
            await converger.converged.wait()
        assert not converger.diverged.is_set()
    finally:
        gate.set()
        converger.close()
        await engine.stop(graceful=False)


async def test_a_failed_vertexs_own_checks_do_not_hold_convergence_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vertex failed with an error that may pass (engine.heal) is checked again on its own
    every 0.02 s here (fewer under load), against a converged timeout of 0.3 s: each check is a tick, not
    activity, so the graph converges anyway, and the vertex counts as failed throughout."""
    from engine import heal
    from tests.engine.test_heal import FAILING, HealProbe

    monkeypatch.setattr(heal, "HEAL_MIN", 0.01)
    monkeypatch.setattr(heal, "HEAL_MAX", 0.02)
    FAILING["a"] = [28] * 100_000  # ENOSPC, for the test's life
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.3)
    graph = make_graph("b")
    graph.add(HealProbe(name="a"))
    try:
        await engine.apply(graph)
        async with asyncio.timeout(20):  # hang-preventing bound only
            await converger.converged.wait()
        assert 100_000 - len(FAILING["a"]) > 2  # checked again and again meanwhile
        assert [v.name for v in converger.failed()] == ["healprobe[a]"]
    finally:
        FAILING.clear()
        converger.close()
        await engine.stop(graceful=False)


async def test_retrying_lists_a_vertex_from_its_failed_attempt_until_it_recovers(
    tmp_path: Path,
) -> None:
    """`retrying()` (STATUS= names them): a vertex whose attempt failed with retries left is
    in it until an attempt succeeds; one out of retries is failed, not retrying."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.1)
    probe.state("a").failures_left = 2
    probe.state("b").failures_left = 1000
    try:
        meta = {"meta": Meta(retry=5, delay=200)}
        await engine.apply(make_graph("abc", a=meta, b={"meta": Meta(retry=0)}))
        await settle(engine, lambda: [v.name for v in converger.retrying()] == ["probe[a]"])
        await settle(engine, lambda: engine.vertices[("probe", "a")].status is Status.OK)
        assert converger.retrying() == []
        assert [v.name for v in converger.failed()] == ["probe[b]"]
        assert len(probe.state("a").calls) == 3  # two failed attempts, then the good one
    finally:
        converger.close()
        await engine.stop(graceful=False)


async def test_a_swap_forgets_the_retrying_vertices_it_removed(tmp_path: Path) -> None:
    """With nothing reading `retrying()` (no STATUS=: not under systemd), a vertex retrying
    when a swap removes it is forgotten by the swap: the set held every key that ever
    retried, for as long as the agent ran (review_user3)."""
    engine = Engine(hostname="test", prefix=tmp_path)
    converger = Converger(engine, timeout=0.1)
    probe.state("b").failures_left = 1000
    try:
        meta = {"meta": Meta(retry=-1, delay=600_000)}
        await engine.apply(make_graph("abc", b=meta))
        await settle(engine, lambda: engine.vertices[("probe", "b")].status is Status.RETRYING)
        await engine.apply(make_graph("ac"))
        assert ("probe", "b") not in engine.vertices
        assert ("probe", "b") not in converger._retrying
        await engine.apply(make_graph("a"))  # a full swap or a small one: each forgets
        assert converger._retrying == set()
    finally:
        converger.close()
        await engine.stop(graceful=False)
