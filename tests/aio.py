"""asyncio helpers for tests."""

from __future__ import annotations

import asyncio
import logging


async def pass_ended() -> None:
    """Return once the callbacks the event loop holds now have run (a task woken by them has
    taken its next step): an event set by a callback queued after them, not a time."""
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    async with asyncio.timeout(10):
        await ran.wait()


class OnLog(logging.Handler):
    """Sets `seen` when a record with `text` is logged (in the loop's thread): add it to the
    logger that logs it, remove it after."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()
