"""TaskSet: owned tasks, a failure logged once, everything cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.tasks import TaskSet


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
