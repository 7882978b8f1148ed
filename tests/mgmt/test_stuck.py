"""mgmt.stuck's lines stay one bounded line, whatever the number of tasks and their names:
a forced stop's warning and a stop's "left behind" line at 10,000 stubborn tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from mgmt import stuck

BOUND = 30.0  # seconds: a generous bound against a hang, never a timing
LINE_MAX = 8000  # characters: MAX_PLACES places, each a name (cut) and DEPTH frames


class _Started:
    """Counts the tasks started; `all` set once `count` have."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.all = asyncio.Event()

    def one(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.all.set()


async def _stubborn(release: asyncio.Event, started: _Started) -> None:
    started.one()  # (then waits, in the same step)
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def test_ten_thousand_tasks_left_behind_are_said_in_a_bounded_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, `cancel_within` named every task left behind: 10,000 watches that ignored
    their cancellation made one line of ~300 KB (a journal's line limit is 48 KiB)."""
    release, started = asyncio.Event(), _Started(10_000)
    tasks = [
        asyncio.create_task(_stubborn(release, started), name=f"watch /k/{i}")
        for i in range(10_000)
    ]
    async with asyncio.timeout(BOUND):
        await started.all.wait()  # each waits
    caplog.set_level(logging.WARNING, "test")
    try:
        async with asyncio.timeout(BOUND):
            ended = await stuck.cancel_within(tasks, 0.01, "etcd client", logging.getLogger("test"))
        assert not ended
        (line,) = [r.getMessage() for r in caplog.records]
        assert "10000 task(s) did not end within 0.01s" in line, line[:500]
        assert "10000x watch /k/" in line, line[:500]  # one place, counted, one name said
        assert "in _stubborn" in line
        assert len(line) < LINE_MAX, len(line)
    finally:
        release.set()
        await asyncio.gather(*tasks)


async def test_a_long_task_name_is_cut() -> None:
    """A task's name (a watched key, a resource's) is said cut: a 1 MB key made a 1 MB line."""
    release, started = asyncio.Event(), _Started(1)
    task = asyncio.create_task(_stubborn(release, started), name="watch /" + "k" * 1_000_000)
    async with asyncio.timeout(BOUND):
        await started.all.wait()  # it waits
    try:
        line = stuck.still_running()
        assert "watch /kkk" in line and "in _stubborn" in line, line[:500]
        assert len(line) < LINE_MAX, len(line)
    finally:
        release.set()
        await task


EXIT_SCRIPT = """
import asyncio, logging, sys, threading
from mgmt import stuck

logging.basicConfig(stream=sys.stderr, format="%(message)s")
never = threading.Event()

def held_read() -> None:  # a read that a hung file system never answers, as an I/O thread's
    never.wait()

reader = threading.Thread(target=held_read, name="mgmt-io_0")
reader.start()

async def main() -> None:
    stuck.exit_within(0.2, "the exit after the stop", asyncio.get_running_loop(), lambda: None, 7)

asyncio.run(main())
reader.join()  # (the interpreter's own join at exit, as the agent's of its I/O threads)
"""


def test_an_exit_held_by_a_thread_names_the_thread_and_where_it_waits() -> None:
    """Until 2026-12-07 (eleventh session) the line said "no task (a thread?)": the loop had no
    task left, and which thread held the exit, in what call, was not said."""
    from tests.child import python

    done = python(EXIT_SCRIPT, timeout=BOUND)
    assert done.returncode == 7, done.stderr
    assert "the exit after the stop did not end within 0.2s: exiting now" in done.stderr
    assert "thread mgmt-io @ <string>:9 in held_read" in done.stderr, done.stderr
    assert "thread MainThread @ <string>:18 in <module>" in done.stderr, done.stderr
