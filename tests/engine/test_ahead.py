"""engine.handle.Ahead: the work a daemon's resources do in its idle time (the file kind's
spares): run while idle, paused when not, nothing run when nothing is queued."""

from __future__ import annotations

import asyncio

import pytest

from engine.handle import Ahead
from tests.aio import pass_ended


async def test_jobs_run_in_order_while_idle_and_wait_when_not() -> None:
    ahead = Ahead()
    ran: list[int] = []
    idle = [True]

    def job(n: int) -> None:
        ran.append(n)
        if n == 1:
            idle[0] = False  # a drift: the graph diverged

    async def waiting(n: int) -> None:
        await pass_ended()  # a job that waits (for the loop's next step)
        ran.append(n)

    for n in range(3):
        ahead.want(lambda n=n: job(n))
    ahead.want(lambda: waiting(3))
    await ahead.run(lambda: idle[0])
    assert ran == [0, 1]  # not idle after job 1: the rest waits
    assert not ahead.drained.is_set()
    idle[0] = True
    await ahead.run(lambda: idle[0])
    assert ran == [0, 1, 2, 3]
    assert ahead.drained.is_set()
    assert ahead.ran == 4


async def test_a_failing_job_is_logged_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ahead = Ahead()
    ran: list[str] = []

    def bad() -> None:
        raise RuntimeError("boom")

    ahead.want(bad)
    ahead.want(lambda: ran.append("next"))
    await ahead.run(lambda: True)
    assert ran == ["next"]
    assert "work ahead failed" in caplog.text


async def test_with_nothing_queued_it_waits_for_a_job() -> None:
    ahead = Ahead()
    waiter = asyncio.create_task(ahead.queued())
    await pass_ended()
    assert not waiter.done()
    ahead.want(lambda: None)
    async with asyncio.timeout(10):
        await waiter
    await ahead.run(lambda: True)
    again = asyncio.create_task(ahead.queued())
    await pass_ended()
    assert not again.done()  # drained: waiting again, for a job (no timer)
    again.cancel()
