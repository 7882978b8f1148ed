"""Slots: at most N holders at once, first come first served, O(1) per acquire and release.

asyncio.Semaphore (3.11) scans its waiters on every release and removes each woken waiter
from the middle of its deque: O(waiters) each, so 10,000 vertices queued for the engine's
check_apply slots cost O(N^2) (4 s of a 10,000-file first run under a profiler). Here a
release hands its slot straight to the first waiter still waiting.

Two lanes: `urgent()` waits in a lane of its own, served first (the engine's repairs of
resources already checked, ahead of a first run's or a swap's first checks: a drift of a file
already created waited 8-29 s behind 50,000 first checks), but after URGENT_RUN urgent hand-offs
in a row a waiting ordinary holder is served once: neither lane starves.

A window: with `window`, at most that many ordinary holders at once (the urgent lane is not
bounded by it), a new one let in as one leaves. The engine's first checks go through it: the
5,000 first checks that `check_limit()` let run at once each readied a callback on the event
loop at each of their hops (their jobs' replies from the I/O threads, the slots' hand-offs),
and on a loop kept busy by a first run the turns grew to 100-400 callbacks (10-90 ms each); a
drift's repair waits for four or five turns. The window bounds what the first checks have on
the loop at once, not how long one may take: when no ordinary holder has left for STALL
seconds while others wait for the window (slow checks: commands, the network), the window
grows by its size, until fewer than its size hold it again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

# Urgent holders served in a row while ordinary ones wait, before one of those is served.
URGENT_RUN = 8
# Seconds without an ordinary holder leaving, others waiting for the window, before it grows.
STALL = 0.05


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
        self._slots.release(self._is_urgent)


class Slots(_Lane):
    """`async with slots:` takes a slot in the ordinary lane; `slots.urgent()`'s, ahead."""

    def __init__(self, size: int, window: int = 0) -> None:
        super().__init__(self, urgent=False)
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._run = 0  # urgent hand-offs in a row while ordinary holders waited
        self._lane = _Lane(self, urgent=True)
        self._window = window or size  # ordinary holders at once, as given
        self._open = self._window  # the same, grown while they stall (see the module doc)
        self._ordinary = 0  # ordinary holders
        self._left = False  # an ordinary holder left since the stall timer was set
        self._stall: asyncio.TimerHandle | None = None

    def urgent(self) -> _Lane:
        """The same slots, taken ahead of the ordinary waiters (see the module doc)."""
        return self._lane

    async def take(self, urgent: bool) -> None:
        """Wait for a slot in the urgent lane or the ordinary one (`release()` gives it back)."""
        if self._free > 0 and not self._urgent:
            if urgent:  # (ordinary waiters with a slot free wait for the window)
                self._free -= 1
                return
            if not self._waiters and self._ordinary < self._open:
                self._free -= 1
                self._ordinary += 1
                return
        waiter = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._waiters).append(waiter)
        if not urgent:
            self._watch_stall()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(urgent)  # handed a slot, then cancelled: pass it on
            raise

    def release(self, urgent: bool = False) -> None:
        """Give back a slot taken in the `urgent` lane or the ordinary one."""
        if not urgent:
            self._ordinary -= 1
            self._left = True
            if self._ordinary < self._window:
                self._open = self._window  # the stall is over
        self._free += 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Hand the free slots to the waiters the lanes' rules let in."""
        urgent, ordinary = self._urgent, self._waiters
        while self._free > 0:
            admit = self._ordinary < self._open
            lanes = (ordinary, urgent) if self._run >= URGENT_RUN else (urgent, ordinary)
            for lane in lanes:
                if lane is ordinary and not admit:
                    continue
                waiter = self._first(lane)
                if waiter is None:
                    continue
                self._run = self._run + 1 if lane is urgent and ordinary and admit else 0
                self._free -= 1
                if lane is ordinary:
                    self._ordinary += 1
                waiter.set_result(None)
                break
            else:
                return

    @staticmethod
    def _first(lane: deque[asyncio.Future[None]]) -> asyncio.Future[None] | None:
        """The first waiter of `lane` still waiting (those cancelled while waiting dropped)."""
        while lane:
            waiter = lane.popleft()
            if not waiter.done():
                return waiter
        return None

    def _watch_stall(self) -> None:
        """Ordinary holders wait for the window: look again in STALL s (one timer)."""
        if self._stall is None and self._ordinary >= self._open:
            self._left = False
            self._stall = asyncio.get_running_loop().call_later(STALL, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        waiters = self._waiters
        while waiters and waiters[0].done():  # cancelled while waiting
            waiters.popleft()
        if not waiters:
            return
        if not self._left:
            self._open += self._window  # none left: slow holders, let more in
            self._hand_on()
        self._watch_stall()

    @property
    def free(self) -> int:
        return self._free
