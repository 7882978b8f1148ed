"""asyncio helpers for tests."""

from __future__ import annotations

import asyncio


async def pass_ended() -> None:
    """Return once the callbacks the event loop holds now have run (a task woken by them has
    taken its next step): an event set by a callback queued after them, not a time."""
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    async with asyncio.timeout(10):
        await ran.wait()
