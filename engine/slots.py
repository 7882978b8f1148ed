"""Slots: at most N holders at once, first come first served, O(1) per acquire and release.

asyncio.Semaphore (3.11) scans its waiters on every release and removes each woken waiter
from the middle of its deque: O(waiters) each, so 10,000 vertices queued for the engine's
check_apply slots cost O(N^2) (4 s of a 10,000-file first run under a profiler). Here a
release hands its slot straight to the first waiter still waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Slots:
    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # else it was cancelled while waiting
                waiter.set_result(None)
                return
        self._free += 1

    @property
    def free(self) -> int:
        return self._free
