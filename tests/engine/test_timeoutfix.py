"""asyncio.timeout() in a task being cancelled (engine/timeoutfix.py): on every interpreter, as
Python 3.11.3 made it; on 3.11.0-3.11.2 (Debian 12's python3) through the fix `engine`
installs (tests/conftest.py imports it). Real tasks, real loops,
real interpreters."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


async def test_a_new_cancellation_in_the_timeouts_scope_still_cancels() -> None:
    """A cancellation that comes while a cleanup's timeout runs is not taken for its own."""
    started, in_cleanup = asyncio.Event(), asyncio.Event()

    async def victim() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            in_cleanup.set()
            async with asyncio.timeout(30):
                await asyncio.Event().wait()

    task = asyncio.create_task(victim())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    await asyncio.wait_for(in_cleanup.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


# What a forced stop's stop_group relies on: in a task being cancelled, its grace's timeout
# expires as TimeoutError, and the SIGKILL that follows is sent.
SCRIPT = """
import asyncio

async def victim(started):
    try:
        started.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return "timed out"
        raise

async def main():
    started = asyncio.Event()
    task = asyncio.create_task(victim(started))
    await started.wait()
    task.cancel()
    print(await task)

asyncio.run(main())
"""


@pytest.mark.parametrize("first", ["engine", "asyncio"])
def test_a_timeout_in_a_cancelled_tasks_cleanup_expires_as_timeouterror(first: str) -> None:
    """In a fresh interpreter, `engine` imported before asyncio (the fix made when asyncio's
    timeouts are) or after (made at once)."""
    second = "asyncio" if first == "engine" else "engine"
    done = subprocess.run(
        [sys.executable, "-c", f"import {first}, {second}\n{SCRIPT}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "timed out\n", "")
