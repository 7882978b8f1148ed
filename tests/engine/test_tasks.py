"""TaskSet: owned tasks, a failure logged once, everything cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import weakref
from typing import Any

import pytest

from engine.tasks import TaskSet, running_loop, running_loop_or_none


async def after_done_callbacks(task: asyncio.Task[None]) -> None:
    """Wait until the task has ended and the set's done callback (added first) has run."""
    ran = asyncio.Event()
    task.add_done_callback(lambda _task: ran.set())  # callbacks run in the order added
    await ran.wait()


async def short() -> None:
    """A task that ends at once."""


async def test_a_failed_task_is_logged_once_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("owner")

    async def boom() -> None:
        raise ValueError("bad value")

    with caplog.at_level(logging.ERROR, logger="engine"):
        task = tasks.spawn(boom(), "boomer")
        await after_done_callbacks(task)
        await tasks.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["owner: task boomer failed: bad value"]
    assert len(tasks) == 0


async def test_close_cancels_and_awaits_every_task(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("owner")
    started = asyncio.Event()
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    first = tasks.spawn(forever("a"), "a")
    tasks.spawn(forever("b"), "b")
    assert [t.get_name() for t in tasks] == ["a", "b"]
    await started.wait()
    await tasks.close()
    assert sorted(cancelled) == ["a", "b"] and first.cancelled()
    assert len(tasks) == 0 and not caplog.records  # a cancellation is not a failure


async def test_a_task_that_ends_leaves_the_set() -> None:
    tasks = TaskSet("owner")
    task = tasks.spawn(short(), "short")
    await after_done_callbacks(task)
    assert len(tasks) == 0


def test_running_loop_is_the_loop_running_in_this_thread_or_none() -> None:
    """running_loop() is asyncio.get_running_loop() (kept between calls, without its getpid):
    each loop while it runs, none outside one (RuntimeError, or None), one per thread."""

    async def both() -> tuple[object, object, object]:
        return running_loop(), running_loop(), asyncio.get_running_loop()

    for _ in range(2):  # a new loop in the same thread, the last one closed
        first, again, real = asyncio.run(both())
        assert first is again is real
    with pytest.raises(RuntimeError):
        running_loop()  # (the last loop, kept, no longer runs)
    assert running_loop_or_none() is None
    seen: dict[str, tuple[object, object]] = {}

    def in_thread(name: str) -> None:
        seen[name] = asyncio.run(both())[::2]

    threads = [threading.Thread(target=in_thread, args=(str(i),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(found is real for found, real in seen.values()) and len(seen) == 2


async def test_a_forked_child_does_not_take_its_parents_running_loop() -> None:
    """asyncio's own lookup asks getpid for this; running_loop() forgets its loop in a child."""
    assert running_loop() is asyncio.get_running_loop()
    pid = os.fork()
    if pid == 0:  # the child: no loop runs here
        os._exit(0 if running_loop_or_none() is None else 1)
    _pid, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_running_loop_does_not_keep_a_closed_loop_alive() -> None:
    """The loop it found last is held weakly: one closed is freed (as stopgate's registry)."""
    loop = asyncio.new_event_loop()

    async def found() -> object:
        return running_loop()

    assert loop.run_until_complete(found()) is loop
    loop.close()
    freed = weakref.ref(loop)
    del loop
    gc.collect()
    assert freed() is None


def test_quick_call_soon_schedules_as_asyncios_own() -> None:
    """The command loop's call_soon (engine.tasks.quick_call_soon): callbacks run in the order
    scheduled, with their arguments, each in the context given (else a copy of the caller's),
    and a handle cancelled before its turn does not run; futures' and tasks' callbacks (which
    asyncio's C code schedules through it) too."""
    import contextvars

    from engine.tasks import quick_call_soon

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    loop = asyncio.new_event_loop()
    try:
        quick_call_soon(loop)
        assert "call_soon" in vars(loop)  # installed on this loop only
        ran: list[tuple[str, object, str]] = []
        var.set("caller's")
        loop.call_soon(lambda a, b: ran.append(("args", (a, b), var.get())), 1, 2)
        given = contextvars.Context()
        given.run(var.set, "given")
        loop.call_soon(lambda: ran.append(("context", None, var.get())), context=given)
        cancelled = loop.call_soon(lambda: ran.append(("cancelled", None, "")))
        assert isinstance(cancelled, asyncio.Handle)
        cancelled.cancel()
        var.set("changed after")

        async def step() -> str:
            woken = loop.create_future()
            loop.call_soon(woken.set_result, None)
            await woken  # the task's next step: scheduled by C through call_soon
            return var.get()

        got = loop.run_until_complete(step())
        assert ran == [("args", (1, 2), "caller's"), ("context", None, "given")]
        assert got == "changed after"
        future, told = loop.create_future(), loop.create_future()
        future.add_done_callback(lambda f: ran.append(("done", f.result(), "")))
        future.add_done_callback(lambda _f: told.set_result(None))  # (after the one above)
        loop.call_soon(future.set_result, 7)
        loop.run_until_complete(told)
        assert ran[-1] == ("done", 7, "")
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(print)


def test_quick_call_soon_in_debug_mode_is_asyncios_own() -> None:
    """A loop in debug mode (PYTHONASYNCIODEBUG, -X dev, set_debug) schedules through
    asyncio's own call_soon: its checks (a call from another thread) and each handle's
    source traceback."""
    from engine.tasks import quick_call_soon

    loop = asyncio.new_event_loop()
    try:
        quick_call_soon(loop)
        loop.set_debug(True)
        handle = loop.call_soon(print)
        assert handle._source_traceback  # type: ignore[attr-defined]
        handle.cancel()
        errors: list[BaseException] = []

        def elsewhere() -> None:
            try:
                loop.call_soon(print)
            except RuntimeError as err:
                errors.append(err)

        loop._thread_id = threading.get_ident()  # as while it runs
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        loop._thread_id = None
        assert errors and "thread" in str(errors[0])
    finally:
        loop.close()


def test_quick_call_soon_leaves_another_loop_class_alone() -> None:
    """A loop whose class has its own call_soon keeps it."""
    from engine.tasks import quick_call_soon

    class Own(asyncio.SelectorEventLoop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
            return super().call_soon(callback, *args, context=context)

    loop = Own()
    try:
        quick_call_soon(loop)
        assert "call_soon" not in vars(loop)
    finally:
        loop.close()


def test_quick_call_soon_keeps_asyncios_own_for_another_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Python whose Handle has other fields (one quick_call_soon would leave unset) keeps
    asyncio's call_soon."""
    import asyncio.events

    from engine.tasks import quick_call_soon

    class Other(asyncio.events.Handle):
        __slots__ = ("_more",)

    monkeypatch.setattr(asyncio.events, "Handle", Other)
    monkeypatch.setattr(Other, "__slots__", (*asyncio.Handle.__slots__, "_more"), raising=False)
    loop = asyncio.new_event_loop()
    try:
        quick_call_soon(loop)
        assert "call_soon" not in vars(loop)
    finally:
        loop.close()
