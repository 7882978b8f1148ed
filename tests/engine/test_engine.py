"""Engine semantics with real small resources (probe, and the real inotify watcher)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.errors import ValidationError
from engine.graph import Edge, Graph
from engine.meta import Meta
from engine.resource import Resource, register
from tests.aio import pass_ended
from tests.engine.conftest import make_graph, settle
from tests.engine.probe import state


def ran(name: str) -> int:
    return len(state(name).calls)


async def test_diamond_runs_branches_in_parallel_and_join_waits(engine: Engine) -> None:
    # a -> (b, c) -> d, plus an independent e; b and c are held until both have started.
    graph = make_graph("abcde", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    gate = asyncio.Event()
    state("b").gate = gate
    state("c").gate = gate
    await engine.apply(graph)
    async with asyncio.timeout(5):
        await state("b").entered.wait()
        await state("c").entered.wait()  # both inside check_apply at once: parallel
        await state("e").entered.wait()  # the independent branch did not wait for anything
    assert ran("d") == 0  # the join waits for both predecessors
    gate.set()
    await settle(engine)
    assert ran("d") == 1
    assert all(v.status is Status.OK for v in engine.vertices.values())


async def test_failure_blocks_only_descendants(engine: Engine) -> None:
    graph = make_graph("xyzs", [("x", "y"), ("y", "z")])
    state("x").failures_left = 100
    await engine.apply(graph)
    await settle(engine)
    assert engine.vertices[("probe", "x")].status is Status.FAILED
    assert ran("y") == ran("z") == 0
    assert engine.blocked(engine.vertices[("probe", "z")])
    assert engine.vertices[("probe", "s")].status is Status.OK  # the sibling is unaffected


async def test_retry_then_success(engine: Engine) -> None:
    graph = make_graph("ab", [("a", "b")], a={"meta": Meta(retry=3, delay=10)})
    state("a").failures_left = 2
    await engine.apply(graph)
    await settle(engine)
    assert ran("a") == 3
    assert engine.vertices[("probe", "a")].status is Status.OK
    assert ran("b") == 1
    assert engine.retries[("probe", "a")] == 2  # spent for good: no retryreset (mgmt's)


async def test_retries_are_spent_for_good_unless_retryreset(engine: Engine) -> None:
    """mgmt's Retry counts failures for the life of the resource: a success does not give
    them back, unless meta retryreset."""
    graph = make_graph("ab", a={"meta": Meta(retry=2)}, b={"meta": Meta(retry=2, retryreset=True)})
    for name in "ab":
        state(name).failures_left = 2
    await engine.apply(graph)
    await settle(engine)
    assert engine.retries.get(("probe", "a")) == 2 and ("probe", "b") not in engine.retries
    for name in "ab":
        state(name).failures_left = 1
        handle = state(name).handle
        assert handle is not None
        await handle.event()
    await settle(engine, lambda: ran("a") == 4 and ran("b") == 5)
    assert engine.vertices[("probe", "a")].status is Status.FAILED  # its retries were spent
    assert engine.vertices[("probe", "b")].status is Status.OK  # retried once, as new


async def test_retries_exhausted_then_a_new_event_gets_one_more_attempt(engine: Engine) -> None:
    graph = make_graph("a", a={"meta": Meta(retry=1)})
    state("a").failures_left = 3
    await engine.apply(graph)
    await settle(engine)
    vertex = engine.vertices[("probe", "a")]
    assert vertex.status is Status.FAILED and ran("a") == 2
    handle = state("a").handle
    assert handle is not None
    await handle.event()
    await settle(engine, lambda: ran("a") == 3 and vertex.status is Status.FAILED)
    state("a").failures_left = 0
    await handle.event()
    await settle(engine, lambda: vertex.status is Status.OK)


async def test_a_failure_another_change_caused_is_checked_again_without_retries(
    engine: Engine,
) -> None:
    """errors.Interfered under the failure: what it changed was changed by another meanwhile,
    an event its watch may not see (a write's temp name removed): checked again at once."""
    graph = make_graph("ab", a={"meta": Meta(retry=0)})
    state("a").interfered_left = 2
    state("b").failures_left = 1
    await engine.apply(graph)
    await settle(engine)
    a, b = engine.vertices[("probe", "a")], engine.vertices[("probe", "b")]
    assert (a.status, ran("a"), a.stats.events) == (Status.OK, 3, 3)  # the startup event, 2
    assert (b.status, ran("b")) == (Status.FAILED, 1)  # a plain failure waits for an event


async def test_exception_and_non_bool_are_vertex_failures(engine: Engine) -> None:
    graph = make_graph("ab")
    state("a").result = "yes"
    state("b").failures_left = 1
    await engine.apply(graph)
    await settle(engine)
    a, b = engine.vertices[("probe", "a")], engine.vertices[("probe", "b")]
    assert a.status is b.status is Status.FAILED
    assert "expected a bool" in str(a.error)
    assert "on purpose" in str(b.error)


async def test_refresh_only_after_a_real_change(engine: Engine) -> None:
    graph = make_graph("abcd", [("a", "b"), ("c", "d")], notify=True, a={"change": True})
    await engine.apply(graph)
    await settle(engine)
    assert state("b").calls == [(True, True)]  # a changed: b refreshed once
    assert state("d").calls == [(True, False)]  # c did not change: no refresh


async def test_poke_without_event_skips_check_apply_of_good_state(engine: Engine) -> None:
    graph = make_graph("ab", [("a", "b")])
    await engine.apply(graph)
    await settle(engine)
    handle = state("a").handle
    assert handle is not None
    await handle.event()
    await settle(
        engine, lambda: ran("a") == 2 and not engine.vertices[("probe", "b")].dirty.is_set()
    )
    await settle(engine)
    assert ran("b") == 1  # poked, but its state is known good and nothing refreshed it


async def test_noop_meta_and_engine_noop(tmp_path: Path) -> None:
    eng = Engine(hostname="t", prefix=tmp_path, noop=True)
    try:
        await eng.apply(make_graph("a", a={"change": True}))
        await settle(eng)
        assert state("a").calls[0] == (False, False)
    finally:
        await eng.stop()


async def test_noop_meta_per_resource(engine: Engine) -> None:
    await engine.apply(make_graph("ab", a={"meta": Meta(noop=True)}))
    await settle(engine)
    assert state("a").calls[0][0] is False
    assert state("b").calls[0][0] is True


async def test_named_semaphore_limits_concurrency(engine: Engine) -> None:
    meta = Meta(sema=["lock:2"])
    graph = make_graph("abcd", **{n: {"meta": meta} for n in "abcd"})
    gate = asyncio.Event()
    for name in "abcd":
        state(name).gate = gate
    await engine.apply(graph)
    await settle(engine, lambda: sum(state(n).active for n in "abcd") == 2)
    assert sum(state(n).active for n in "abcd") == 2  # two hold the semaphore, two wait
    gate.set()
    await settle(engine)
    assert all(ran(n) == 1 for n in "abcd")


async def test_a_semaphore_resized_by_a_swap_takes_its_new_size(engine: Engine) -> None:
    """A swap that gives every holder of a semaphore another size: the new size holds from
    then on (as mgmt keys a semaphore by `name:size`); before 2026-12-06 the engine kept the
    first size it saw for its whole life."""
    one = Meta(sema=["lock:1"])
    await engine.apply(make_graph("ab", **{n: {"meta": one} for n in "ab"}))
    await settle(engine)
    assert max(state(n).max_active for n in "ab") == 1
    gate = asyncio.Event()
    for name in "abcd":
        state(name).gate = gate
    three = Meta(sema=["lock:3"])
    await engine.apply(make_graph("abcd", **{n: {"meta": three} for n in "abcd"}))
    await settle(engine, lambda: sum(state(n).active for n in "abcd") == 3)
    gate.set()
    await settle(engine)
    assert all(ran(n) >= 1 for n in "abcd")


async def test_global_sema(tmp_path: Path) -> None:
    eng = Engine(hostname="t", prefix=tmp_path, sema=1)
    gate = asyncio.Event()
    for name in "abc":
        state(name).gate = gate
    try:
        await eng.apply(make_graph("abc"))
        await settle(eng, lambda: sum(state(n).active for n in "abc") == 1)
        gate.set()
        await settle(eng)
        assert all(ran(n) == 1 for n in "abc")
        assert max(state(n).max_active for n in "abc") == 1
    finally:
        await eng.stop()


async def test_timeout_meta_fails_a_stuck_check_apply(engine: Engine) -> None:
    state("a").gate = asyncio.Event()  # never set
    await engine.apply(make_graph("a", a={"meta": Meta(timeout=1)}))
    await settle(engine)
    vertex = engine.vertices[("probe", "a")]
    assert vertex.status is Status.FAILED
    assert "timed out after 1 ms (meta timeout)" in str(vertex.error)


async def test_poll_meta_replaces_watch(engine: Engine) -> None:
    await engine.apply(make_graph("a", a={"meta": Meta(poll=1)}))
    await settle(engine, lambda: ran("a") >= 2, timeout=10)
    assert state("a").watch_starts == 0  # the resource's own watch never ran


async def test_poll_minus_one_applies_once_without_watching(engine: Engine) -> None:
    # mgmt's `Meta:poll => -1`: the startup event only. A polled sibling ticks meanwhile.
    await engine.apply(make_graph("ab", a={"meta": Meta(poll=-1)}, b={"meta": Meta(poll=1)}))
    await settle(engine, lambda: ran("b") >= 3, timeout=10)
    assert ran("a") == 1 and state("a").watch_starts == 0
    assert engine.vertices[("probe", "a")].status is Status.OK
    with pytest.raises(
        ValidationError, match=r"must be -1 \(once\), 0 \(watch\) or from 1 to 2147483647 s"
    ):
        Meta(poll=-2)


async def test_startup_event_gates_check_apply(engine: Engine) -> None:
    from tests.engine.probe import ProbeRes

    class Slow(ProbeRes):
        async def watch(self) -> None:
            await state(self.name).entered.wait()  # never sends the startup event
            await super().watch()

    graph = make_graph("")
    graph.add(Slow(name="slow"))
    await engine.apply(graph)
    vertex = engine.vertices[("probe", "slow")]
    assert not vertex.started
    assert ran("slow") == 0
    state("slow").entered.set()
    await settle(engine, lambda: ran("slow") == 1)


async def test_swap_keeps_unchanged_vertices_running(engine: Engine) -> None:
    await engine.apply(make_graph("abc", [("a", "b")]))
    await settle(engine)
    kept_a, kept_b = engine.vertices[("probe", "a")], engine.vertices[("probe", "b")]
    tasks = list(kept_a._tasks)
    # b's params change, c is removed, d is new, a is untouched.
    new = make_graph("abd", [("a", "b"), ("a", "d")], b={"tag": "v2"})
    await engine.apply(new)
    await settle(engine)
    assert engine.vertices[("probe", "a")] is kept_a
    assert list(kept_a._tasks) == tasks and all(not t.done() for t in tasks)
    assert state("a").watch_starts == 1 and state("a").cleanups == 0
    assert engine.vertices[("probe", "b")] is not kept_b  # changed: restarted
    assert state("b").watch_starts == 2 and state("b").cleanups == 1
    assert ("probe", "c") not in engine.vertices and state("c").cleanups == 1
    assert ran("d") == 1


async def test_retry_counter_survives_swap(engine: Engine) -> None:
    state("a").failures_left = state("b").failures_left = 100
    await engine.apply(make_graph("a", a={"meta": Meta(retry=1)}))
    await settle(engine)
    assert engine.retries[("probe", "a")] == 2
    await engine.apply(make_graph("ab", a={"meta": Meta(retry=1)}))
    assert engine.retries[("probe", "a")] == 2
    # Changed, it is a new vertex with the same count (mgmt's MetaState by kind+name)...
    await engine.apply(make_graph("ab", a={"meta": Meta(retry=1), "tag": "v2"}))
    assert engine.retries[("probe", "a")] == 2
    # ... unless its meta reset; a resource that leaves the graph leaves its count.
    await engine.apply(make_graph("ab", a={"meta": Meta(retry=1, reset=True)}))
    assert ("probe", "a") not in engine.retries
    await settle(engine)
    assert engine.retries[("probe", "b")] == 1
    await engine.apply(make_graph("a", a={"meta": Meta(retry=1, reset=True)}))
    assert ("probe", "b") not in engine.retries


@pytest.mark.parametrize("realize", [False, True])
async def test_a_swap_lets_a_realize_vertex_run_before_removing_it(
    engine: Engine, realize: bool
) -> None:
    """mgmt's meta realize: a swap that removes `a` first waits for its predecessor's running
    check, then for `a` to run (it was owed a run); without realize `a` never runs."""
    gate = asyncio.Event()
    state("p").gate = gate
    await engine.apply(make_graph("pa", [("p", "a")], a={"meta": Meta(realize=realize)}))
    async with asyncio.timeout(5):
        await state("p").entered.wait()
    swap = asyncio.create_task(engine.apply(make_graph("z")))
    done, _ = await asyncio.wait({swap}, timeout=0.1)
    assert not done  # p's running check is waited for, realize or not
    gate.set()
    async with asyncio.timeout(5):
        await swap
    assert ran("p") == 1 and ran("a") == (1 if realize else 0)
    assert ("probe", "a") not in engine.vertices


async def test_realize_does_not_wait_for_a_vertex_a_failure_blocks(engine: Engine) -> None:
    state("p").failures_left = 100
    await engine.apply(make_graph("pa", [("p", "a")], a={"meta": Meta(realize=True)}))
    await settle(engine)
    async with asyncio.timeout(5):
        await engine.apply(make_graph("z"))
    assert ran("a") == 0


async def test_graceful_stop_lets_check_apply_finish(engine: Engine) -> None:
    gate = asyncio.Event()
    state("a").gate = gate
    await engine.apply(make_graph("a"))
    async with asyncio.timeout(5):
        await state("a").entered.wait()
    stopper = asyncio.create_task(engine.stop(graceful=True))
    done, _ = await asyncio.wait({stopper}, timeout=0.1)
    assert not done  # waits for the running check_apply
    gate.set()
    async with asyncio.timeout(5):
        await stopper
    vertex = engine.vertices[("probe", "a")]
    assert vertex.status is Status.STOPPED and vertex.outcome is Status.OK
    assert state("a").cleanups == 1


async def test_edges_merge_notify(engine: Engine) -> None:
    graph = make_graph("ab")
    graph.connect(("probe", "a"), ("probe", "b"), Edge("e1", False))
    graph.connect(("probe", "a"), ("probe", "b"), Edge("e2", True))
    assert graph.succ[("probe", "a")][("probe", "b")].notify


async def test_event_during_check_apply_is_not_lost(engine: Engine) -> None:
    gate = asyncio.Event()
    state("a").gate = gate
    await engine.apply(make_graph("a"))
    async with asyncio.timeout(5):
        await state("a").entered.wait()
    handle = state("a").handle
    assert handle is not None
    await handle.event()  # drift while check_apply is still running
    state("a").gate = None
    gate.set()
    await settle(engine, lambda: ran("a") == 2)  # checked again, not skipped as "known good"


async def test_notify_during_check_apply_is_not_lost(engine: Engine) -> None:
    graph = make_graph("ab", [("a", "b")], notify=True, a={"change": True})
    gate = asyncio.Event()
    state("b").gate = gate
    await engine.apply(graph)
    async with asyncio.timeout(5):
        await state("b").entered.wait()  # b runs (poked by a) while ...
    vertex_b = engine.vertices[("probe", "b")]
    vertex_b.refresh()  # ... another notify arrives
    state("b").gate = None
    gate.set()
    await settle(engine, lambda: any(refresh for _apply, refresh in state("b").calls[1:]))


async def test_failed_predecessor_is_not_rerun_by_downstream_events(engine: Engine) -> None:
    graph = make_graph("ab", [("a", "b")])
    state("a").failures_left = 100
    await engine.apply(graph)
    await settle(engine)
    runs = ran("a")
    handle = state("b").handle
    assert handle is not None
    for _ in range(3):
        await handle.event()
    await settle(engine)
    assert ran("a") == runs  # no back-poke re-ran the failed vertex


async def test_hidden_leaf_settles(engine: Engine) -> None:
    await engine.apply(make_graph("h", h={"meta": Meta(hidden=True)}))
    await settle(engine)
    assert engine.vertices[("probe", "h")].status is Status.OK


async def test_reversal_error_fails_the_vertex_not_the_worker(tmp_path: Path) -> None:
    from resources.file import FileRes

    blocker = tmp_path / "prefix"
    blocker.write_text("not a directory")  # the reversal store cannot be created under it
    eng = Engine(hostname="t", prefix=blocker)
    graph = make_graph("")
    graph.add(FileRes(name="f", path=str(tmp_path / "f"), content="x", meta=Meta(reverse=True)))
    try:
        await eng.apply(graph)
        await settle(eng)
        vertex = eng.vertices[("file", "f")]
        assert vertex.status is Status.FAILED
        # its watch runs (a file's, without a task: Listening), and an event runs it again
        assert vertex._watch_task is None and vertex._unlisten is not None
        failures = eng.retries[("file", "f")]
        vertex._on_event()
        await settle(eng, lambda: eng.retries[("file", "f")] > failures)
        assert vertex.status is Status.FAILED
    finally:
        await eng.stop()


def test_semaphore_named_twice_is_refused() -> None:
    import pytest

    from engine.errors import ValidationError

    with pytest.raises(ValidationError, match="twice"):
        Meta(sema=["lock", "lock:2"])


# SlowStop's events, made by the test that uses them (an Event is bound to its loop).
SLOW_STOP: dict[str, asyncio.Event] = {}


@register("slowstop")
@dataclass(kw_only=True, eq=False)
class SlowStop(Resource):
    """A watch whose cancellation takes more than one step (`slow`: once cancelled, it sets
    SLOW_STOP["unwinding"] and waits for SLOW_STOP["release"])."""

    # Whether its watch waits for SLOW_STOP["release"] once cancelled. Default false.
    slow: bool = False

    async def watch(self) -> None:
        await self.handle.event()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            if self.slow:
                SLOW_STOP["unwinding"].set()
                await SLOW_STOP["release"].wait()
            raise

    async def check_apply(self, apply: bool) -> bool:
        return True


async def test_stop_waits_for_every_task_also_one_whose_cancel_takes_steps(
    engine: Engine,
) -> None:
    """stop_all waits for the last task it cancelled, then for those still running: a watch
    whose cancellation waits (the first of three here) is waited for, and the stop ends with
    every vertex's tasks ended."""
    SLOW_STOP.update(unwinding=asyncio.Event(), release=asyncio.Event())
    graph = Graph()
    graph.add(SlowStop(name="a", slow=True))
    graph.add(SlowStop(name="b"))
    graph.add(SlowStop(name="c"))
    await engine.apply(graph)
    await settle(engine)
    stopper = asyncio.create_task(engine.stop())
    async with asyncio.timeout(5):
        await SLOW_STOP["unwinding"].wait()
    await pass_ended()
    assert not stopper.done()  # b's and c's tasks have ended; a's watch has not
    assert [len(v._tasks) for v in engine.vertices.values()] == [1, 0, 0]
    SLOW_STOP["release"].set()
    async with asyncio.timeout(5):
        await stopper
    for vertex in engine.vertices.values():
        assert vertex.status is Status.STOPPED and len(vertex._tasks) == 0


async def test_stop_cancels_a_retrys_wait_and_a_settled_vertex_has_no_worker(
    engine: Engine,
) -> None:
    """A worker's task runs while work is pending, then ends (Vertex._work): a converged
    vertex has none (it ended, not cancelled), and the stop has nothing of it to end; a worker
    sleeping before a retry, and every watch task, are cancelled. Each vertex is stopped and
    cleaned up."""
    state("b").failures_left = 1_000  # fails, and sleeps before each retry
    graph = make_graph("ab", b={"meta": Meta(retry=-1, delay=60_000)})
    await engine.apply(graph)
    await settle(
        engine, lambda: state("b").calls != [] and not engine.vertices[("probe", "b")].busy
    )
    a, b = engine.vertices[("probe", "a")], engine.vertices[("probe", "b")]
    a_work, b_work = a._work_task, b._work_task
    assert a.status is Status.OK and a_work is not None and a_work.done()
    assert not a_work.cancelled() and a_work not in a._tasks
    assert b_work is not None and b_work in b._tasks  # asleep until its retry
    a_watch, b_watch = a._watch_task, b._watch_task
    await engine.stop()
    assert b_work.cancelled()
    assert a_watch is not None and a_watch.cancelled()
    assert b_watch is not None and b_watch.cancelled()
    for vertex in (a, b):
        assert vertex.status is Status.STOPPED and len(vertex._tasks) == 0
    assert state("a").cleanups == state("b").cleanups == 1
