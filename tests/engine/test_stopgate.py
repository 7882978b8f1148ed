"""engine.stopgate: a stop refuses the executor jobs of check_applies whose work has not begun,
and a job its cancelled caller would wait for (in_thread) never starts.

Real threads (a GatedExecutor of one worker, kept busy by a job of the test's own), a real
engine, the real file kind on tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import os
import stat
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import resources.file as file_module
from engine import safefs, stopgate, uring
from engine.engine import Engine, Status
from engine.errors import ResourceError
from engine.graph import Graph
from engine.resource import Resource, register
from engine.slots import URGENT_RUN
from engine.stopgate import Gate, GatedExecutor, Stopped
from resources._lib.plan import DONE_NOTE, in_thread
from resources.file import FileRes
from tests.aio import pass_ended
from tests.engine.conftest import settle

RAN: list[str] = []  # the jobs of StopJob that ran, in order
HOLD = threading.Event()  # a StopJob with `hold` waits for it in its first job...
HELD = threading.Event()  # ...once it has set this
BOUND = 10.0  # seconds: a hang-preventing bound, never a measure


@register("stopjob")
@dataclass(kw_only=True, eq=False)
class StopJob(Resource):
    """A check_apply that does `jobs` jobs in the executor, one after another, and turns any
    error into a failure (as kinds do)."""

    # How many jobs each check_apply runs. Default 1.
    jobs: int = 1
    # The first job waits for HOLD (after setting HELD). Default false.
    hold: bool = False

    async def check_apply(self, apply: bool) -> bool:
        try:
            for i in range(self.jobs):
                await asyncio.to_thread(self._job, i)
        except Exception as err:
            raise ResourceError(f"{self.name}: {err}") from err
        return False

    def _job(self, i: int) -> None:
        if self.hold and i == 0:
            HELD.set()
            HOLD.wait(BOUND)
        RAN.append(f"{self.name}{i}")


@pytest.fixture
async def one_worker() -> AsyncIterator[GatedExecutor]:
    """The loop's default executor: a GatedExecutor with one worker (as the agent's, smaller)."""
    executor = GatedExecutor(max_workers=1, thread_name_prefix="gated")
    stopgate.install(asyncio.get_running_loop(), executor)  # in_thread's replies in batches
    RAN.clear()
    HOLD.clear()
    HELD.clear()
    try:
        yield executor
    finally:
        HOLD.set()
        executor.shutdown(wait=True)


async def in_other_thread(event: threading.Event) -> None:
    """Wait for `event` in a thread that is not the (busy) default executor's."""
    with ThreadPoolExecutor(1) as waiter:
        assert await asyncio.get_running_loop().run_in_executor(waiter, event.wait, BOUND)


def all_in(engine: Engine, status: Status) -> Callable[[], bool]:
    return lambda: all(v.status is status for v in engine.vertices.values())


def file_graph(out: Path, n: int) -> Graph:
    graph = Graph("files")
    graph.add(StopJob(name="busy", hold=True))  # holds the one worker: the writes queue
    for i in range(n):
        graph.add(FileRes(name=f"f{i}", path=str(out / f"f{i}"), content=f"{i}\n"))
    return graph


async def stop_while_queued(engine: Engine, graceful: bool = True) -> None:
    """Stop `engine` while its check_applies wait for the held worker, then free it."""
    await in_other_thread(HELD)
    await settle(engine, all_in(engine, Status.RUNNING), BOUND)  # each has queued its job
    stop = asyncio.create_task(engine.stop(graceful))
    await settle(engine, all_in(engine, Status.STOPPING), BOUND)  # the gate is closed
    HOLD.set()
    async with asyncio.timeout(BOUND):
        await stop


@pytest.mark.usefixtures("one_worker")
@pytest.mark.parametrize("grouped", [False, True])
async def test_queued_file_writes_never_start_once_the_engine_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, grouped: bool
) -> None:
    """The issue: a graceful stop wrote every file whose check_apply was queued in the executor.
    Now the running job finishes, and no file is written, none failed, none is applied; the
    stop's summary counts them. `grouped`: as first writes beside others (a first run), which
    a worker takes together (Replies' groups): each is refused all the same."""
    if grouped:
        monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    caplog.set_level(logging.INFO, logger="engine")
    out = tmp_path / "out"
    out.mkdir()
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    await engine.apply(file_graph(out, 20))
    await stop_while_queued(engine)
    assert RAN == ["busy0"]
    assert sorted(p.name for p in out.iterdir()) == []  # no file, no temp file
    for vertex in engine.vertices.values():
        if vertex.name == "stopjob[busy]":
            continue
        assert vertex.error is None and not vertex.failed and not vertex.changed_last
        assert vertex.outcome is Status.PENDING and not vertex.state_ok  # not applied
    assert engine.gate.refused == 20 and not engine.gate.closed  # open again after the stop
    assert "(20 check_applies stopped before their work began)" in caplog.text


@pytest.mark.usefixtures("one_worker")
async def test_a_forced_stop_does_not_wait_for_queued_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """stop(graceful=False) still cancels; a file check_apply cancelled waits for its queued
    job (resources._lib.plan.in_thread), and that job is refused at once, quietly (its Stopped
    was "never retrieved", logged when collected, in the middle of whatever ran then)."""
    out = tmp_path / "out"
    out.mkdir()
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    await engine.apply(file_graph(out, 5))
    await stop_while_queued(engine, graceful=False)
    assert list(out.iterdir()) == []
    gc.collect()
    assert "never retrieved" not in caplog.text


@pytest.mark.usefixtures("one_worker")
async def test_a_check_apply_that_has_begun_finishes(tmp_path: Path) -> None:
    """`a`'s first job runs when the stop comes: its second job runs too. `b`'s first job was
    only queued: it never runs, though b's `except Exception` would have made a failure of it."""
    engine = Engine(hostname="test", prefix=tmp_path)
    graph = Graph("jobs")
    graph.add(StopJob(name="a", jobs=2, hold=True))
    await engine.apply(graph)
    await in_other_thread(HELD)  # a's first job holds the one worker
    graph = Graph("jobs")
    graph.add(StopJob(name="a", jobs=2, hold=True))
    graph.add(StopJob(name="b", jobs=2))
    await engine.apply(graph)  # a is kept; b queues its first job
    await settle(engine, all_in(engine, Status.RUNNING), BOUND)
    stop = asyncio.create_task(engine.stop())
    await settle(engine, all_in(engine, Status.STOPPING), BOUND)
    HOLD.set()
    async with asyncio.timeout(BOUND):
        await stop
    assert RAN == ["a0", "a1"]
    a, b = engine.vertices[("stopjob", "a")], engine.vertices[("stopjob", "b")]
    assert a.outcome is Status.OK and a.changed_last
    assert b.outcome is Status.PENDING and b.error is None and not b.failed
    assert engine.gate.refused == 1


async def test_the_gate_admits_what_is_not_a_check_apply_not_begun() -> None:
    loop = asyncio.get_running_loop()
    gate = Gate()
    with GatedExecutor(max_workers=1) as executor:
        gate.close()
        assert await loop.run_in_executor(executor, str, "out") == "out"  # no check_apply
        with pytest.raises(Stopped), gate.work():  # a check_apply's first job, gate closed
            await loop.run_in_executor(executor, str, "refused")
        assert gate.refused == 1
        with gate.closing():
            pass
        assert not gate.closed  # open again after a stop
        with gate.work():
            assert await loop.run_in_executor(executor, str, 1) == "1"  # begun while open...
            gate.close()
            assert await loop.run_in_executor(executor, str, 2) == "2"  # ...so it goes on
        hold = threading.Event()
        blocker = loop.run_in_executor(executor, hold.wait, BOUND)
        fresh = Gate()
        with fresh.work():
            left = loop.run_in_executor(executor, str, "left")  # queued behind the blocker
        fresh.close()  # its check_apply has returned: what it left behind is not gated
        hold.set()
        assert await blocker
        assert await left == "left"


@contextlib.contextmanager
def gil_kept(seconds: float) -> Iterator[None]:
    """The running thread keeps the GIL until it blocks (or `seconds` pass): no other thread
    runs meanwhile."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.skipif(not stopgate._QUICK_START, reason="this Python's executor starts its own")
def test_a_submit_does_not_wait_for_the_worker_it_starts_to_run() -> None:
    """The loop submitting a first run's writes waited for each new worker to run its first
    lines, which waits for the GIL that the workers started before hold: it no longer does. A
    worker not run yet is joined all the same (the shutdown's, the interpreter's exit's)."""
    done = threading.Event()
    executor = GatedExecutor(max_workers=3, thread_name_prefix="quick")
    with gil_kept(BOUND):  # no thread runs until this one blocks
        futures = [executor.submit(done.wait, BOUND) for _ in range(3)]
        workers = list(executor._threads)
        assert len(workers) == 3
        assert not any(worker.is_alive() for worker in workers)  # started, not run yet
        done.set()
        executor.shutdown(wait=True)  # joins each: the first blocks, and they all run
    assert all(future.result() for future in futures)
    assert not any(worker.is_alive() for worker in workers)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(str, 1)


@pytest.mark.parametrize("installed", [True, False], ids=["replies", "any-executor"])
async def test_a_job_its_cancelled_caller_would_wait_for_never_starts(installed: bool) -> None:
    """in_thread waits for its job even when cancelled; a job still queued then never starts
    (a forced stop's cancelled check_applies wrote their files after all, logging nothing),
    with the agent's executor (stopgate.install) or any other. A job whose future outlives
    its task (a spare file made ahead) runs."""
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    hold = threading.Event()
    with GatedExecutor(max_workers=1) if installed else ThreadPoolExecutor(1) as executor:
        if isinstance(executor, GatedExecutor):
            stopgate.install(loop, executor)
        else:
            loop.set_default_executor(executor)
        blocker = loop.run_in_executor(None, hold.wait, BOUND)  # holds the one worker
        detached: list[asyncio.Future[None]] = []

        async def caller() -> None:
            detached.append(loop.run_in_executor(None, ran.append, "detached"))
            await in_thread(functools.partial(ran.append, "awaited"))

        task = asyncio.create_task(caller())
        await pass_ended()  # both jobs are queued behind the blocker
        task.cancel()
        hold.set()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        assert await blocker
        await detached[0]
    assert ran == ["detached"]
    assert DONE_NOTE not in getattr(cancelled.value, "__notes__", ())


@pytest.mark.usefixtures("one_worker")
async def test_a_swap_never_starts_the_queued_writes_of_the_resources_it_removes(
    tmp_path: Path,
) -> None:
    """A graph file edited during a big first run, removing resources: their check_applies
    queued in the executor ran all the same (the swap waited for them), writing files the
    new graph no longer has. Now their work never begins; the kept ones are written."""
    out = tmp_path / "out"
    out.mkdir()
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    await engine.apply(file_graph(out, 20))
    await in_other_thread(HELD)
    await settle(engine, all_in(engine, Status.RUNNING), BOUND)  # each has queued its job
    swap = asyncio.create_task(engine.apply(file_graph(out, 5)))  # f5..f19 removed
    removed = [engine.vertices[("file", f"f{i}")] for i in range(5, 20)]
    await settle(engine, lambda: all(v.status is Status.STOPPING for v in removed), BOUND)
    HOLD.set()
    async with asyncio.timeout(BOUND):
        await swap
    await settle(engine)  # the kept ones applied
    assert sorted(p.name for p in out.iterdir()) == [f"f{i}" for i in range(5)]
    assert not engine.gate.closed and engine.gate.refused == 0  # no stop: nothing to report
    await engine.stop()


async def test_replies_come_back_together_each_to_its_caller() -> None:
    """stopgate.Replies: the outcomes of many in_thread jobs that ended while the loop was
    busy come back with one wake-up of the loop, each to its own caller: its value, or its
    exception."""
    loop = asyncio.get_running_loop()
    with GatedExecutor(max_workers=4) as executor:
        stopgate.install(loop, executor)
        wakes = 0
        deliver = stopgate.replies(loop)._deliver  # type: ignore[union-attr]

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            deliver()

        stopgate.replies(loop)._deliver = counted  # type: ignore[union-attr,method-assign]
        gate = threading.Event()

        def job(i: int) -> int:
            gate.wait(BOUND)
            if i == 7:
                raise ValueError("seven")
            return i * i

        calls = [asyncio.ensure_future(in_thread(functools.partial(job, i))) for i in range(40)]
        await pass_ended()  # all submitted
        gate.set()
        executor.shutdown(wait=True)  # every job has ended, none handed back yet
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 7] == [i * i for i in range(40) if i != 7]
    assert isinstance(results[7], ValueError) and str(results[7]) == "seven"
    assert wakes == 1


async def test_a_cancelled_caller_of_a_running_job_waits_for_its_end() -> None:
    """in_thread through stopgate.Replies, cancelled while its job runs: it waits for the job's
    end (the job may use the caller's descriptors), then raises CancelledError noting that
    the job was done (apply_steps then logs its step)."""
    loop = asyncio.get_running_loop()
    started, hold, ended = threading.Event(), threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        hold.wait(BOUND)
        ended.set()

    with GatedExecutor(max_workers=1) as executor:
        stopgate.install(loop, executor)
        task = asyncio.create_task(in_thread(job))
        await in_other_thread(started)
        task.cancel()
        await pass_ended()
        assert not task.done()  # waiting for the job
        hold.set()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        assert ended.is_set()
    assert DONE_NOTE in getattr(cancelled.value, "__notes__", ())


def test_an_installed_loop_is_not_kept_alive_by_its_replies() -> None:
    """stopgate.install's registry holds a loop weakly: a loop used and closed is freed
    (tests run many agents in one process, each on its own loop)."""
    loop = asyncio.new_event_loop()
    executor = GatedExecutor(max_workers=1)
    stopgate.install(loop, executor)
    assert loop.run_until_complete(in_thread(lambda: 42)) == 42
    executor.shutdown(wait=True)
    loop.close()
    freed = weakref.ref(loop)
    del loop
    gc.collect()
    assert freed() is None


async def test_queued_in_thread_jobs_let_the_executors_other_jobs_take_turns() -> None:
    """stopgate.Replies runs in_thread's jobs from a queue of its own, at most one executor
    job (a drain) per worker; a drain yields its worker after DRAIN_TURN jobs, so a job
    submitted to the executor otherwise (asyncio.to_thread's) runs before a long queue of
    in_thread jobs is through, and every job runs, in order."""
    loop = asyncio.get_running_loop()
    ran: list[object] = []
    hold = threading.Event()
    count = stopgate.DRAIN_TURN * 3
    with GatedExecutor(max_workers=1) as executor:
        stopgate.install(loop, executor)
        first = asyncio.ensure_future(in_thread(functools.partial(hold.wait, BOUND)))
        calls = [
            asyncio.ensure_future(in_thread(functools.partial(ran.append, i))) for i in range(count)
        ]
        await pass_ended()  # all queued behind the held first job
        other = loop.run_in_executor(None, ran.append, "other")
        hold.set()
        assert await first
        await asyncio.gather(*calls, other)
    assert [r for r in ran if r != "other"] == list(range(count))
    assert ran.index("other") <= stopgate.DRAIN_TURN


# groups: jobs of one key that wait for a worker, taken together ------------------------------


async def hold_the_worker() -> tuple[threading.Event, asyncio.Future[object]]:
    """A job that holds the one worker until the returned event is set; and its outcome."""
    hold, held = threading.Event(), threading.Event()

    def busy() -> None:
        held.set()
        hold.wait(BOUND)

    job = asyncio.ensure_future(in_thread(busy))
    await in_other_thread(held)
    return hold, job


@pytest.mark.usefixtures("one_worker")
async def test_the_jobs_of_a_group_waiting_for_a_worker_run_together() -> None:
    """Jobs of one group queued while the worker is busy: the worker takes them together,
    opens what they share once, and runs each with it; each has its own outcome (one that
    fails fails alone). A job submitted while the worker is free runs alone, called with None.
    An opening that fails is each job's failure."""
    replies = stopgate.replies(asyncio.get_running_loop())
    assert replies is not None
    opened: list[str] = []

    @contextlib.contextmanager
    def opening() -> Iterator[str]:
        opened.append("open")
        yield "shared"
        opened.append("close")

    def job(i: int, shared: str | None) -> tuple[int, str | None]:
        if i == 2:
            raise OSError(f"job {i} failed")
        return i, shared

    group: stopgate.Group = ("dir", opening)
    assert await in_thread(functools.partial(job, 0), group) == (0, None)
    assert opened == []
    hold, busy = await hold_the_worker()
    queued = [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(4)]
    hold.set()
    outcomes = await asyncio.gather(*(r.future for r in queued), return_exceptions=True)
    await busy
    assert outcomes[:2] == [(0, "shared"), (1, "shared")] and outcomes[3] == (3, "shared")
    assert isinstance(outcomes[2], OSError) and str(outcomes[2]) == "job 2 failed"
    assert opened == ["open", "close"]

    @contextlib.contextmanager
    def refused() -> Iterator[str]:
        raise PermissionError("no way in")
        yield "never"

    hold, busy = await hold_the_worker()
    queued = [
        replies.submit(stopgate.Job(functools.partial(job, i)), ("other", refused))
        for i in range(2)
    ]
    hold.set()
    outcomes = await asyncio.gather(*(r.future for r in queued), return_exceptions=True)
    await busy
    assert all(isinstance(o, PermissionError) for o in outcomes)


async def first_writes_together(
    run_resource: Any, out: Path, count: int, mode: str | None = None
) -> list[object]:
    """The first checks of `count` files f0... in `out`, each queued behind the held worker
    (so that it takes them together); their outcomes (an exception for a failed one)."""
    files = [
        FileRes(name=f"f{i}", path=str(out / f"f{i}"), content=f"{i}\n", mode=mode)
        for i in range(count)
    ]
    for res in files:
        await run_resource(res)
    hold, busy = await hold_the_worker()
    checks = [asyncio.ensure_future(res.check_apply(True)) for res in files]
    while file_module._writing[0] < 1 + count:  # each has queued its write
        await pass_ended()
    hold.set()
    outcomes = await asyncio.gather(*checks, return_exceptions=True)
    await busy
    return list(outcomes)


@pytest.mark.usefixtures("one_worker")
async def test_first_writes_of_a_directory_share_one_walk_and_fail_alone(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run's writes of one directory that wait for a worker are made by it together:
    the directory walked to once (not once a file), each file written atomically as alone. A
    file that fails (a directory at its path, a symlink planted at its name) fails alone,
    the link not followed; the others are created."""
    monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    out = tmp_path / "out"
    out.mkdir()
    (out / "f1").mkdir()  # a directory where a file is wanted: not replaced without force
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    (out / "f3").symlink_to(victim)
    walked: list[str] = []
    real_walk = safefs.walk

    def walk(path: str, **kwargs: Any) -> Any:
        walked.append(path)
        return real_walk(path, **kwargs)

    monkeypatch.setattr(safefs, "walk", walk)
    outcomes = await first_writes_together(run_resource, out, 6)
    assert walked.count(str(out)) == 3  # the group's, and the two not found absent alone
    for i in (0, 2, 4, 5):
        assert outcomes[i] is False and (out / f"f{i}").read_text() == f"{i}\n"
    assert isinstance(outcomes[1], ResourceError) and (out / "f1").is_dir()
    assert isinstance(outcomes[3], ResourceError) and "is a symlink" in str(outcomes[3])
    assert (out / "f3").is_symlink() and victim.read_text() == "victim\n"
    assert sorted(os.listdir(out)) == [f"f{i}" for i in range(6)]  # no temp file left


@pytest.mark.usefixtures("one_worker")
async def test_first_writes_taken_together_in_a_missing_directory_make_it_once(
    tmp_path: Path,
    run_resource: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The group's directory is missing: the first write makes it (its lines logged by that
    resource), the others are written in it, through one walk to it made after."""
    monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    caplog.set_level(logging.INFO, logger="engine")
    out = tmp_path / "new" / "sub"
    assert await first_writes_together(run_resource, out, 4) == [False] * 4
    assert sorted(os.listdir(out)) == [f"f{i}" for i in range(4)]
    assert all((out / f"f{i}").read_text() == f"{i}\n" for i in range(4))
    made = [m for m in caplog.messages if "created parent directory" in m]
    assert made == [
        f"file[f0]: created parent directory {tmp_path / 'new'}",
        f"file[f0]: created parent directory {out}",
    ]


async def taken_together(job: Callable[[int, object], object], count: int) -> list[object]:
    """The outcomes of `job(i, shared)` for i in range(count), jobs of one group queued behind
    the held worker (so that it takes them together)."""
    replies = stopgate.replies(asyncio.get_running_loop())
    assert replies is not None
    hold, busy = await hold_the_worker()
    group: stopgate.Group = ("together", contextlib.nullcontext)
    queued = [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(count)]
    hold.set()
    outcomes = await asyncio.gather(*(r.future for r in queued), return_exceptions=True)
    await busy
    return list(outcomes)


@pytest.mark.usefixtures("one_worker")
async def test_the_second_parts_of_a_groups_jobs_run_after_every_first_part() -> None:
    """A job of a group that returns a Later finishes after the group's other jobs' first
    parts, in order (a group's writes fsynced after all of them are written); a second part
    that fails fails its own job only."""
    order: list[str] = []

    def second(i: int) -> int:
        order.append(f"second {i}")
        if i == 1:
            raise OSError("fsync failed")
        return i

    def job(i: int, shared: object) -> stopgate.Later:
        order.append(f"first {i}")
        return stopgate.Later(functools.partial(second, i))

    outcomes = await taken_together(job, 3)
    assert order == ["first 0", "first 1", "first 2", "second 0", "second 1", "second 2"]
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], OSError)


def staged_group() -> tuple[
    list[str],
    list[str],
    threading.Event,
    threading.Event,
    Callable[[int, object], stopgate.Later],
    stopgate.Group,
]:
    """What the group tests share: the jobs' `order`, the group's `opened`, job 0's `started`
    and `more` (staged_job), the job, and the group ("dir", opened with recorded_opening)."""
    order: list[str] = []
    opened: list[str] = []
    started, more = threading.Event(), threading.Event()
    return (
        order,
        opened,
        started,
        more,
        staged_job(order, started, more),
        ("dir", recorded_opening(opened)),
    )


def recorded_opening(opened: list[str]) -> Callable[[], contextlib.AbstractContextManager[str]]:
    """A group's opening of what its jobs share ("dir"), its open and close appended to
    `opened`."""

    @contextlib.contextmanager
    def opening() -> Iterator[str]:
        opened.append("open")
        yield "dir"
        opened.append("close")

    return opening


def staged_job(
    order: list[str], started: threading.Event, more: threading.Event
) -> Callable[[int, object], stopgate.Later]:
    """A group's job i: its first part (job 0's waits for `more`, after setting `started`),
    then a Later whose second part says so; each part's line in `order`."""

    def second(i: int) -> int:
        order.append(f"second {i}")
        return i

    def job(i: int, shared: object) -> stopgate.Later:
        order.append(f"first {i} {shared}")
        if i == 0:
            started.set()
            more.wait(BOUND)
        return stopgate.Later(functools.partial(second, i))

    return job


@pytest.mark.usefixtures("one_worker")
@pytest.mark.parametrize("most", [32, 3])
async def test_jobs_of_a_group_queued_while_its_worker_runs_it_join_its_round(
    monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """A burst: jobs of a group queued while a worker runs the group's first parts are run by
    it too, with what it opened, before the second parts of them all (one round of fsyncs);
    jobs of another group wait for their turn. At most GROUP_MOST jobs a round: the rest are
    the next round's, opened again."""
    monkeypatch.setattr(stopgate, "GROUP_MOST", most)
    replies = stopgate.replies(asyncio.get_running_loop())
    assert replies is not None
    order, opened, started, more, job, group = staged_group()
    hold, busy = await hold_the_worker()
    queued = [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(2)]
    hold.set()
    await in_other_thread(started)  # the worker runs job 0's first part
    other = replies.submit(
        stopgate.Job(lambda shared: order.append(f"other {shared}")), ("x", group[1])
    )
    queued += [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(2, 5)]
    more.set()
    outcomes = await asyncio.gather(*(r.future for r in queued), other.future, busy)
    assert outcomes[:5] == list(range(5))
    if most == 32:
        assert order == [
            *[f"first {i} dir" for i in range(5)],
            *[f"second {i}" for i in range(5)],
            "other None",  # alone: called with None
        ]
        assert opened == ["open", "close"]
    else:
        assert order == [
            *[f"first {i} dir" for i in range(3)],
            *[f"second {i}" for i in range(3)],
            "other None",
            *[f"first {i} dir" for i in (3, 4)],
            *[f"second {i}" for i in (3, 4)],
        ]
        assert opened == ["open", "close", "open", "close"]


async def test_jobs_of_a_group_a_drain_runs_start_no_drain_of_their_own() -> None:
    """A burst's jobs queued while a worker runs their group's first parts start no drain on
    the free worker (which would take them in a round of its own): the running one takes
    them all into its round. Two workers: one runs the group, the other is free."""
    loop = asyncio.get_running_loop()
    order, opened, started, more, job, group = staged_group()
    with GatedExecutor(max_workers=2) as executor:
        stopgate.install(loop, executor)
        replies = stopgate.replies(loop)
        assert replies is not None
        (hold1, busy1), (hold2, busy2) = await hold_the_worker(), await hold_the_worker()
        queued = [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in (0, 1)]
        hold1.set()  # its worker takes the group (job 0, then job 1: one of them would be alone)
        await in_other_thread(started)
        hold2.set()
        await busy2
        async with asyncio.timeout(BOUND):
            while replies._draining > 1:  # the other worker's drain ends: it is free
                await pass_ended()
        queued += [
            replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(2, 8)
        ]
        assert replies._draining == 1  # none submitted for them: the free worker takes none
        more.set()
        outcomes = await asyncio.gather(*(r.future for r in queued), busy1)
    assert outcomes[:8] == list(range(8))
    assert order == [*[f"first {i} dir" for i in range(8)], *[f"second {i}" for i in range(8)]]
    assert opened == ["open", "close"]


@pytest.mark.usefixtures("one_worker")
async def test_a_groups_round_takes_no_more_jobs_once_an_urgent_one_waits() -> None:
    """An urgent job (a repair) queued while a worker runs a group's first parts: the worker
    takes none of the group's later jobs into its round, and runs the urgent one next."""
    replies = stopgate.replies(asyncio.get_running_loop())
    assert replies is not None
    order: list[str] = []
    started, more = threading.Event(), threading.Event()
    job = staged_job(order, started, more)
    group: stopgate.Group = ("dir", lambda: contextlib.nullcontext("dir"))
    hold, busy = await hold_the_worker()
    queued = [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in range(2)]
    hold.set()
    await in_other_thread(started)
    with Gate().work(urgent=True):
        urgent = replies.submit(stopgate.Job(lambda: order.append("urgent")))
    queued += [replies.submit(stopgate.Job(functools.partial(job, i)), group) for i in (2, 3)]
    more.set()
    await asyncio.gather(*(r.future for r in queued), urgent.future, busy)
    assert order == [
        "first 0 dir",
        "first 1 dir",
        "second 0",
        "second 1",
        "urgent",
        "first 2 dir",
        "first 3 dir",
        "second 2",
        "second 3",
    ]


# a group's new files fsynced and named through the worker's io_uring, or one after another ----


@pytest.fixture(params=[True, False], ids=["io_uring", "sequential"])
async def one_worker_rings(request: pytest.FixtureRequest) -> AsyncIterator[GatedExecutor]:
    """one_worker's executor with its rings (engine/uring.py), where this kernel allows, or
    without (`rings=False`: the sequential path); its shutdown closes them: no ring's
    descriptor left open."""
    rings = request.param and uring.unavailable() is None
    if request.param and not rings:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    before = ring_fds()
    executor = GatedExecutor(max_workers=1, thread_name_prefix="gated", rings=rings)
    stopgate.install(asyncio.get_running_loop(), executor)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)
    assert executor.rings is None or executor.rings.open() == 0
    assert ring_fds() == before


def ring_fds() -> int:
    """This process's io_uring descriptors."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[io_uring]"
    return count


async def test_a_groups_first_writes_are_named_durable_each_with_its_content_and_mode(
    tmp_path: Path,
    run_resource: Any,
    monkeypatch: pytest.MonkeyPatch,
    one_worker_rings: GatedExecutor,
) -> None:
    """A first run's writes taken together by a worker: each file gets its content, mode and
    name, with the worker's ring (then made once, kept until the shutdown) or without; a file
    that fails (a symlink planted at its name) fails alone, the link not followed."""
    monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    (out / "f2").symlink_to(victim)
    outcomes = await first_writes_together(run_resource, out, 5, mode="0640")
    assert [o for i, o in enumerate(outcomes) if i != 2] == [False] * 4
    assert isinstance(outcomes[2], ResourceError) and "is a symlink" in str(outcomes[2])
    assert (out / "f2").is_symlink() and victim.read_text() == "victim\n"
    for i in (0, 1, 3, 4):
        assert (out / f"f{i}").read_text() == f"{i}\n"
        assert (out / f"f{i}").stat().st_mode & 0o7777 == 0o640
    assert sorted(os.listdir(out)) == [f"f{i}" for i in range(5)]  # no temp file left
    rings = one_worker_rings.thread_rings()
    assert rings is None or rings.open() == 1  # the worker's, made for its group


def writes_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order of the writes' new inodes written (safefs.unnamed_filled), fsyncs (alone, or
    a group's through its ring) and renames (each still made)."""
    order: list[str] = []
    real_filled, real_fsync, real_rename = safefs.unnamed_filled, os.fsync, safefs._RELEASING.rename
    real_together = uring.fsync_all

    def fsync_all(ring: uring.Ring, fds: list[int]) -> Any:
        order.extend("fsync" for _fd in fds)
        return real_together(ring, fds)

    def unnamed_filled(*args: Any, **kwargs: Any) -> int | None:
        order.append("write")
        return real_filled(*args, **kwargs)

    def fsync(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    def rename(*args: Any) -> None:
        order.append("rename")
        real_rename(*args)

    monkeypatch.setattr(safefs, "unnamed_filled", unnamed_filled)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(uring, "fsync_all", fsync_all)
    for name in ("_RELEASING", "_HOLDING"):
        c = getattr(safefs, name)
        calls = safefs._Calls(c.write_all, c.fchmod, c.link, rename, c.close)
        monkeypatch.setattr(safefs, name, calls)
    return order


async def test_a_groups_updates_make_every_new_inode_before_renaming_any(
    tmp_path: Path,
    run_resource: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_worker_rings: GatedExecutor,
) -> None:
    """A first run's updates (the files there with other content) taken together by a worker:
    every new inode written before the first is renamed over its old file (whose inode that
    frees), each fsynced before its rename (the group's fsyncs, together through the ring or
    one after another without, then the renames); each file's mode and content as wanted, its line
    logged; one already right is left alone, one whose mode differs is planned on the loop
    (its chmod too); no temp file left."""
    monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    caplog.set_level(logging.INFO, logger="engine")
    out = tmp_path / "out"
    out.mkdir()
    for i in range(5):
        (out / f"f{i}").write_text("right\n" if i == 3 else f"old {i}\n")
        (out / f"f{i}").chmod(0o640 if i == 1 else 0o600)
    if os.geteuid() == 0:  # another owner, kept (the others' is the new inode's: no fchown)
        os.chown(out / "f2", 65534, 65534)
    owners = {i: (out / f"f{i}").stat().st_uid for i in range(5)}
    inodes = {i: (out / f"f{i}").stat().st_ino for i in range(5)}
    order = writes_seen(monkeypatch)
    files = [
        FileRes(name=f"f{i}", path=str(out / f"f{i}"), content="right\n" if i == 3 else f"{i}\n")
        for i in range(4)
    ]
    files.append(FileRes(name="f4", path=str(out / "f4"), content="4\n", mode="0644"))
    running = [await run_resource(res) for res in files]
    hold, busy = await hold_the_worker()
    checks = [asyncio.ensure_future(res.check_apply(True)) for res in files]
    while file_module._writing[0] < 1 + len(files):  # each has queued its lookup
        await pass_ended()
    hold.set()
    outcomes = await asyncio.gather(*checks)
    await busy
    assert outcomes == [False, False, False, True, False]
    # f0-f2 together (f3 is right); f4 alone after, planned on the loop (its mode differs)
    # with a ring or without, the group's fsyncs all go before its first rename
    assert order == ["write"] * 3 + ["fsync"] * 3 + ["rename"] * 3 + ["fsync", "rename"]
    for i, (content, mode) in enumerate(
        [("0\n", 0o600), ("1\n", 0o640), ("2\n", 0o600), ("right\n", 0o600), ("4\n", 0o644)]
    ):
        assert (out / f"f{i}").read_text() == content
        assert stat.S_IMODE((out / f"f{i}").stat().st_mode) == mode
    assert (out / "f3").stat().st_ino == inodes[3]  # left alone
    assert all((out / f"f{i}").stat().st_ino != inodes[i] for i in (0, 1, 2, 4))
    assert all((out / f"f{i}").stat().st_uid == owners[i] for i in range(5))
    # The group's old inodes are held (not freed) while a write is in flight (`_writing`):
    # the next allocations do not pass over them; the last write's end lets them go.
    held = [os.fstat(fd) for fd in safefs._kept]
    assert sorted(st.st_ino for st in held) == sorted(inodes[i] for i in range(3))
    assert all(st.st_nlink == 0 for st in held)
    file_module._writing[0] = 0
    await file_module._written()
    assert not safefs.kept()
    assert await running[0].handle.no_event()  # its own replace
    (out / "f0").write_text("drift\n")  # the new inode's watch: a change to it is seen
    await running[0].handle.next_event()
    assert sorted(os.listdir(out)) == [f"f{i}" for i in range(5)]  # no temp file left
    assert sorted(caplog.messages) == [
        *(f"file[f{i}]: content updated" for i in range(5) if i != 3),
        "file[f4]: mode 0600 -> 0644",
    ]


async def test_a_file_whose_fsync_fails_gets_no_name_and_its_own_error(
    tmp_path: Path, one_worker_rings: GatedExecutor
) -> None:
    """A group's second parts (safefs.named_new, as the file kind's): a file whose fsync fails
    (its descriptor a pipe's: EINVAL) is never named and fails alone with that error; a name
    taken meanwhile is replaced (as alone); the others are named, each durable first."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "f3").write_text("taken meanwhile\n")
    read, write = os.pipe()
    directory = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fds: list[int] = []

    def job(i: int, shared: object) -> stopgate.Later:
        if i == 1:
            fd = write
        else:
            fd = safefs.unnamed_filled(
                directory, b"%d\n" % i, mode=0o640, uid=-1, gid=-1, local=True
            )
            assert fd is not None
            fds.append(fd)
        name = functools.partial(
            safefs.named_new, directory, f"f{i}", fd, data=b"%d\n" % i, local=True
        )
        return stopgate.Later(name, (fd, directory, f"f{i}"))

    try:
        outcomes = await taken_together(job, 4)
    finally:
        os.close(read)
        os.close(directory)
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.EINVAL
    assert sorted(os.listdir(out)) == ["f0", "f2", "f3"]
    assert all((out / f"f{i}").read_text() == f"{i}\n" for i in (0, 2, 3))
    assert len(fds) == 3
    rings = one_worker_rings.thread_rings()
    assert rings is None or rings.open() == 1  # the group went through the worker's ring
    for fd in (*fds, write):  # every descriptor closed by its named_new
        with pytest.raises(OSError):
            os.fstat(fd)


async def test_the_jobs_of_an_urgent_check_go_first_and_the_others_still_get_a_turn() -> None:
    """stopgate.Replies: the jobs of a check_apply whose Work is urgent (a repair of a vertex
    that has converged before) run ahead of those queued before them, alone (a grouped one is
    given None), and after URGENT_RUN of them in a row one of the others runs."""
    loop = asyncio.get_running_loop()
    started, hold = threading.Event(), threading.Event()
    order: list[str] = []
    opened: list[str] = []

    def blocker() -> None:
        started.set()
        hold.wait(BOUND)

    def job(name: str, shared: object = None) -> None:
        order.append(name if shared is None else f"{name} with {shared}")

    @contextlib.contextmanager
    def opening() -> Iterator[str]:
        opened.append("group")
        yield "group"

    with GatedExecutor(max_workers=1) as executor:
        stopgate.install(loop, executor)
        first = asyncio.ensure_future(in_thread(blocker))
        await in_other_thread(started)
        calls = [
            asyncio.ensure_future(in_thread(functools.partial(job, f"o{i}"))) for i in range(20)
        ]
        with Gate().work(urgent=True):  # the tasks made here carry its Work
            for i in range(20):
                if i == 3:  # a grouped job of an urgent Work runs alone
                    grouped = functools.partial(job, f"u{i}")
                    calls.append(asyncio.ensure_future(in_thread(grouped, ("dir", opening))))
                else:
                    calls.append(asyncio.ensure_future(in_thread(functools.partial(job, f"u{i}"))))
        await pass_ended()  # all submitted
        hold.set()
        await asyncio.gather(first, *calls)
    run = URGENT_RUN
    assert order == [
        *[f"u{i}" for i in range(run)],
        "o0",
        *[f"u{i}" for i in range(run, 2 * run)],
        "o1",
        *[f"u{i}" for i in range(2 * run, 20)],
        *[f"o{i}" for i in range(2, 20)],
    ]
    assert not opened
