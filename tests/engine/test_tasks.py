"""TaskSet: owned tasks, a failure logged once, everything cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from engine.tasks import TaskSet


async def test_a_failed_task_is_logged_once_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("owner")

    async def boom() -> None:
        raise ValueError("bad value")

    with caplog.at_level(logging.ERROR, logger="engine"):
        task = tasks.spawn(boom(), "boomer")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # the done callback runs
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
    task = tasks.spawn(asyncio.sleep(0), "short")
    await task
    await asyncio.sleep(0)
    assert len(tasks) == 0
