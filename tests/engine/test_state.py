"""The vertex state machine and the listener events, with real probes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.engine import TRANSITIONS, Engine, Status, TransitionError, Vertex
from engine.events import CheckApplied, GraphSwapped, VertexChanged
from engine.graph import Edge, Graph
from engine.handle import Handle
from engine.meta import Meta
from engine.resource import Resource, register
from tests.engine.conftest import make_graph, settle
from tests.engine.probe import ProbeRes, state


@register("initfail")
@dataclass(kw_only=True, eq=False)
class InitFails(ProbeRes):
    async def init(self, handle: Handle) -> None:
        raise RuntimeError("no such device")


@register("initfailonce")
@dataclass(kw_only=True, eq=False)
class InitFailsOnce(ProbeRes):
    inits: int = 0  # of this instance (a revived vertex runs the same one's init again)

    async def init(self, handle: Handle) -> None:
        self.inits += 1
        if self.inits == 1:
            raise RuntimeError("not yet")
        await super().init(handle)


@register("plainprobe")
@dataclass(kw_only=True, eq=False)
class PlainProbe(Resource):
    """Not Refreshable: records what handle.refresh() said in each check_apply."""

    async def check_apply(self, apply: bool) -> bool:
        state(self.name).calls.append((apply, self.handle.refresh()))
        return True


class BrokenWatch(ProbeRes):
    async def watch(self) -> None:
        await self.handle.event()
        raise RuntimeError("watch broke")


def record(engine: Engine) -> dict[str, list[Status]]:
    """The statuses each vertex went through (repeats folded), from VertexChanged events."""
    seen: dict[str, list[Status]] = {}

    def changed(event: VertexChanged) -> None:
        history = seen.setdefault(event.vertex.res.name, [])
        if not history or history[-1] is not event.vertex.status:
            history.append(event.vertex.status)

    engine.listeners.subscribe(VertexChanged, changed)
    return seen


def test_transition_table_is_complete_and_ends_in_stopped() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert not any(Status.NEW in targets for targets in TRANSITIONS.values())
    assert TRANSITIONS[Status.STOPPED] == frozenset()
    # dead until replaced, or revived (Engine.retry_failed: SIGHUP)
    assert TRANSITIONS[Status.DEAD] == {Status.PENDING, Status.STOPPING}


async def test_a_vertex_lives_pending_running_ok_stopping_stopped(engine: Engine) -> None:
    seen = record(engine)
    await engine.apply(make_graph("a"))
    await settle(engine)
    await engine.stop()
    assert seen["a"] == [
        Status.PENDING,
        Status.RUNNING,
        Status.OK,
        Status.STOPPING,
        Status.STOPPED,
    ]
    for old, new in zip(seen["a"], seen["a"][1:], strict=False):
        assert new in TRANSITIONS[old]


async def test_a_vertex_tells_each_status_once_and_not_its_startup_event(
    engine: Engine,
) -> None:
    """A first run tells its listeners of each status and nothing more: the startup event
    that makes a PENDING vertex dirty changes how nobody sees it (no 6th event per vertex)."""
    told: list[Status] = []
    engine.listeners.subscribe(VertexChanged, lambda e: told.append(e.vertex.status))
    await engine.apply(make_graph("a"))
    await settle(engine)
    await engine.stop()
    assert told == [Status.PENDING, Status.RUNNING, Status.OK, Status.STOPPING, Status.STOPPED]


async def test_a_poke_of_a_settled_vertex_is_told(engine: Engine) -> None:
    """Work pending on an OK vertex unsettles it: that poke is told."""
    await engine.apply(make_graph("a"))
    await settle(engine)
    vertex = engine.vertices[("probe", "a")]
    told: list[bool] = []
    engine.listeners.subscribe(VertexChanged, lambda e: told.append(e.vertex.dirty.is_set()))
    vertex.poke()
    assert told == [True]


@register("silentprobe")
@dataclass(kw_only=True, eq=False)
class SilentProbe(ProbeRes):
    """Never sends its startup event: after start() it stays PENDING, untouched."""

    async def watch(self) -> None:
        await asyncio.Future()


async def test_a_first_graph_tells_each_started_vertex_once(engine: Engine) -> None:
    """Applying a first graph: each vertex's start tells its PENDING, and apply() does not
    tell it again (at 10,000 files, 10,000 listener calls less)."""
    events: list[str] = []
    engine.listeners.subscribe(VertexChanged, lambda e: events.append(e.vertex.res.name))
    graph = Graph("test")
    for name in ("a", "b"):
        graph.add(SilentProbe(name=name))
    await engine.apply(graph)
    assert sorted(events) == ["a", "b"]


async def test_retrying_then_ok(engine: Engine) -> None:
    seen = record(engine)
    state("a").failures_left = 1
    await engine.apply(make_graph("a", a={"meta": Meta(retry=1)}))
    await settle(engine, lambda: engine.vertices[("probe", "a")].status is Status.OK)
    assert seen["a"] == [
        Status.PENDING,
        Status.RUNNING,
        Status.RETRYING,
        Status.RUNNING,
        Status.OK,
    ]


async def test_an_illegal_transition_raises(tmp_path: Path) -> None:
    engine = Engine(hostname="t", prefix=tmp_path)
    vertex = Vertex(engine, ProbeRes(name="a"))
    assert vertex.status is Status.NEW
    with pytest.raises(TransitionError, match=r"probe\[a\]: new -> running is not allowed"):
        vertex._set_status(Status.RUNNING)


async def test_init_failure_is_dead_and_not_cleaned_up(engine: Engine) -> None:
    graph = make_graph("b")
    graph.add(InitFails(name="x"))
    graph.connect(("initfail", "x"), ("probe", "b"))
    await engine.apply(graph)
    await settle(engine)
    vertex = engine.vertices[("initfail", "x")]
    assert vertex.status is Status.DEAD and vertex.failed and "no such device" in str(vertex.error)
    assert engine.blocked(engine.vertices[("probe", "b")])
    await engine.stop()
    assert vertex.status is Status.STOPPED and vertex.failed  # the outcome survives the stop
    assert state("x").cleanups == 0


async def test_a_dead_vertex_is_not_run_when_poked(engine: Engine) -> None:
    graph = make_graph("a")
    graph.add(BrokenWatch(name="x"))
    graph.connect(("probe", "a"), ("probe", "x"))
    await engine.apply(graph)
    await settle(engine, lambda: engine.vertices[("probe", "x")].status is Status.DEAD)
    runs = len(state("x").calls)
    handle = state("a").handle
    assert handle is not None
    await handle.event()  # a runs again and pokes x
    await settle(engine, lambda: len(state("a").calls) == 2)
    await settle(engine)
    assert len(state("x").calls) == runs
    assert engine.vertices[("probe", "x")].status is Status.DEAD


async def test_retry_failed_revives_dead_vertices_and_rechecks_failed_ones(engine: Engine) -> None:
    graph = make_graph("bf")
    graph.add(InitFailsOnce(name="i"))
    graph.add(BrokenWatch(name="w"))
    graph.connect(("initfailonce", "i"), ("probe", "b"))
    state("f").failures_left = 1
    await engine.apply(graph)
    vertices = engine.vertices
    dead = [vertices[("initfailonce", "i")], vertices[("probe", "w")]]
    await settle(engine, lambda: all(v.status is Status.DEAD for v in dead))
    await settle(engine)
    assert vertices[("probe", "f")].status is Status.FAILED
    assert not state("b").calls and engine.blocked(vertices[("probe", "b")])
    starts = vertices[("probe", "w")].stats.watch_starts
    assert engine.retry_failed() == (2, 1, 0)
    await settle(engine, lambda: vertices[("probe", "w")].stats.watch_starts > starts)
    await settle(engine)
    assert vertices[("initfailonce", "i")].status is Status.OK
    assert vertices[("probe", "f")].status is Status.OK
    assert state("b").calls  # no longer blocked
    assert vertices[("probe", "w")].status is Status.DEAD  # its watch broke again
    assert engine.retry_failed() == (1, 0, 0)
    await engine.stop()
    assert state("i").cleanups == 1


async def test_a_failed_outcome_is_kept_after_stop(engine: Engine) -> None:
    state("a").failures_left = 1
    await engine.apply(make_graph("a"))
    await settle(engine)
    vertex = engine.vertices[("probe", "a")]
    assert vertex.status is Status.FAILED
    await engine.stop()
    assert vertex.status is Status.STOPPED and vertex.outcome is Status.FAILED and vertex.failed


@register("slowinit")
@dataclass(kw_only=True, eq=False)
class SlowInit(ProbeRes):
    """Its init() waits until `release` is set (entered: `entered`)."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def init(self, handle: Handle) -> None:
        self.entered.set()
        await self.release.wait()
        await super().init(handle)


async def test_a_graceful_stop_while_init_runs_lets_it_finish_then_cleans_up_once(
    engine: Engine,
) -> None:
    res = SlowInit(name="a")
    vertex = Vertex(engine, res)
    stopping_told = asyncio.Event()

    def told(event: VertexChanged) -> None:
        if event.vertex.status is Status.STOPPING:
            stopping_told.set()

    engine.listeners.subscribe(VertexChanged, told)
    vertex.start()
    await res.entered.wait()
    stopping = asyncio.create_task(vertex.stop())
    async with asyncio.timeout(10):
        await stopping_told.wait()  # the stop began, and waits for init() since
    assert not stopping.done()
    res.release.set()
    await stopping
    assert vertex.status is Status.STOPPED and not vertex._tasks and vertex.ready.is_set()
    assert state("a").handle is not None and state("a").cleanups == 1


async def test_a_vertex_stopped_before_its_task_ran_is_never_initialized(engine: Engine) -> None:
    vertex = Vertex(engine, ProbeRes(name="a"))
    vertex.start()
    await vertex.stop()
    assert vertex.status is Status.STOPPED and not vertex._tasks and vertex.ready.is_set()
    assert state("a").handle is None and state("a").cleanups == 0


# events --------------------------------------------------------------------------------------


async def test_listeners_get_typed_events_until_they_unsubscribe(engine: Engine) -> None:
    applied: list[CheckApplied] = []
    swaps: list[GraphSwapped] = []
    unsubscribe = engine.listeners.subscribe(CheckApplied, applied.append)
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    state("b").failures_left = 1
    await engine.apply(make_graph("ab", a={"change": True}))
    await settle(engine)
    by_name = {e.vertex.res.name: e for e in applied}
    assert by_name["a"].apply and by_name["a"].changed is True and by_name["a"].error is None
    assert by_name["b"].changed is None and isinstance(by_name["b"].error, RuntimeError)
    assert swaps == [GraphSwapped(kept=0, stopped=0, started=2, counted=(("probe", 2),))]
    unsubscribe()
    unsubscribe()  # twice is harmless
    await engine.apply(make_graph("abc", a={"change": True}))
    await settle(engine)
    assert len(applied) == 2  # c's check_apply was not delivered
    c = frozenset({("probe", "c")})  # added alone: a small swap
    assert swaps[-1] == GraphSwapped(kept=2, stopped=0, started=1, replaced=c, added=c)


# refresh -------------------------------------------------------------------------------------


async def test_a_notify_edge_refreshes_only_a_refreshable_kind(engine: Engine) -> None:
    graph = make_graph("ab", [("a", "b")], notify=True, a={"change": True})
    graph.add(PlainProbe(name="p"))
    graph.connect(("probe", "a"), ("plainprobe", "p"), Edge(notify=True))
    await engine.apply(graph)
    await settle(engine)
    assert state("b").calls == [(True, True)]  # ProbeRes is Refreshable
    assert state("p").calls == [(True, False)]  # PlainProbe is not: a plain edge
    assert not engine.vertices[("plainprobe", "p")].refresh_pending


async def test_a_failure_whose_long_output_differs_each_time_is_bounded_and_folded(
    tmp_path: Path,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tester15's finding 4: a command writing 300 KB of stderr, different at each run (a
    timestamp), failing for ever: each failure logged its whole stderr, its error (the status
    page's, its events') held all of it, and differing failures were not folded. Now each
    output line is clipped, the error quotes a bounded tail, and repeats are counted, the
    last one said (REPEAT_EVERY 0.2 s here)."""
    import sys

    from engine import engine as engine_module
    from resources.exec import FAILURE_STDERR, ExecRes

    monkeypatch.setattr(engine_module, "REPEAT_EVERY", 0.2)
    script = tmp_path / "noisy.py"
    script.write_text(
        "import sys, time\n"
        "for n in range(12): sys.stderr.write(f'{time.time()} {n} ' + 'A' * 30000 + '\\n')\n"
        "sys.stderr.write(f'{time.time()} ' + 'B' * 300000 + '\\n')\n"
        "sys.exit(3)\n"
    )
    res = ExecRes(name="x", args=[str(script)], cmd=sys.executable, meta=Meta(retry=-1, delay=10))
    graph = Graph("t")
    graph.add(res)
    caplog.set_level(logging.INFO, logger="engine")
    await engine.apply(graph)

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)

    await settle(engine, lambda: said("exec[x]: failed, retrying in 0.01s (forever): again") >= 2)
    assert said("exec[x]: failed, retrying in 0.01s (forever): cmd exited with code 3") == 1
    assert max(len(r.getMessage()) for r in caplog.records) < 2 * FAILURE_STDERR
    error = str(engine.vertices[("exec", "x")].error)
    assert len(error) < 2 * FAILURE_STDERR
    assert "earlier lines left out" in error  # of the 13, the last few
    assert "BBB... (" in error  # the last line (in chunks: over the reader's limit), clipped


async def test_a_failure_repeated_for_ever_is_said_once_then_with_its_count(
    tmp_path: Path,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tester11's finding 7 (engine.engine.Vertex._say_failure): a real command failing for
    ever. Its failure line once, then its repeats counted and said with the count once a
    REPEAT_EVERY (0.2 s here); its own `running:` line once more (the 2nd attempt's), not at
    every attempt; after a recovery its lines are said again."""
    from engine import engine as engine_module
    from resources.exec import ExecRes

    monkeypatch.setattr(engine_module, "REPEAT_EVERY", 0.2)
    flag = tmp_path / "ok"
    cmd = f"test -e {flag}"
    graph = Graph("t")
    graph.add(ExecRes(name="x", cmd=cmd, shell="/bin/sh", meta=Meta(retry=-1, delay=10)))
    caplog.set_level(logging.INFO, logger="engine")
    await engine.apply(graph)

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)

    failed = "exec[x]: failed, retrying in 0.01s (forever): cmd exited with code 1; no stderr"
    await settle(engine, lambda: said(failed + " (the same") >= 2)
    assert said(failed) == 1 + said(failed + " (the same")
    assert said(f"exec[x]: running: {cmd}") == 2
    flag.touch()
    await settle(engine, lambda: said("exec[x]: recovered") == 1)
    assert engine.vertices[("exec", "x")].handle.logger.repeats is None  # said again from now
