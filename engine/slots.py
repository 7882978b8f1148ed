"""Slots: at most N holders at once, first come first served, O(1) per acquire and release.

asyncio.Semaphore (3.11) scans its waiters on every release and removes each woken waiter
from the middle of its deque: O(waiters) each, so 10,000 vertices queued for the engine's
check_apply slots cost O(N^2) (4 s of a 10,000-file first run under a profiler). Here a
release hands its slot straight to the first waiter still waiting.

Two lanes: `urgent()` waits in a lane of its own, served first (the engine's repairs of
resources already checked, ahead of a first run's or a swap's first checks: a drift of a file
already created waited 8-29 s behind 50,000 first checks), but after URGENT_RUN urgent hand-offs
in a row a waiting ordinary holder is served once: neither lane starves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

# Urgent holders served in a row while ordinary ones wait, before one of those is served.
URGENT_RUN = 8


class _Lane:
    """`async with` a lane of `slots`: a slot taken in it, then released."""

    def __init__(self, slots: Slots, urgent: bool) -> None:
        self._slots = slots
        self._is_urgent = urgent

    async def __aenter__(self) -> None:
        await self._slots.take(self._is_urgent)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._slots.release()


class Slots(_Lane):
    """`async with slots:` takes a slot in the ordinary lane; `slots.urgent()`'s, ahead."""

    def __init__(self, size: int) -> None:
        super().__init__(self, urgent=False)
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._run = 0  # urgent hand-offs in a row while ordinary holders waited
        self._lane = _Lane(self, urgent=True)

    def urgent(self) -> _Lane:
        """The same slots, taken ahead of the ordinary waiters (see the module doc)."""
        return self._lane

    async def take(self, urgent: bool) -> None:
        """Wait for a slot in the urgent lane or the ordinary one (`release()` gives it back)."""
        if self._free > 0 and not self._waiters and not self._urgent:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._waiters).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            raise

    def release(self) -> None:
        urgent, ordinary = self._urgent, self._waiters
        lanes = (ordinary, urgent) if self._run >= URGENT_RUN else (urgent, ordinary)
        for lane in lanes:
            while lane:
                waiter = lane.popleft()
                if not waiter.done():  # else it was cancelled while waiting
                    self._run = self._run + 1 if lane is urgent and ordinary else 0
                    waiter.set_result(None)
                    return
        self._free += 1

    @property
    def free(self) -> int:
        return self._free
