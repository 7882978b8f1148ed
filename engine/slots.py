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
drift's repair waits for four or five turns. The window bounds what the first checks put on
a busy loop at once, not how long one may take nor how many run on a loop that keeps up.
While ordinary holders wait for it, a timer looks every TICK seconds:

- no ordinary holder left since the last look (slow checks: commands, the network): the
  window grows by its size;
- else the timer ran at most LATE seconds late (the loop keeps up: a first run waiting for
  the disk's fsyncs, whose jobs the I/O threads take together): it grows by its size too, up
  to `size` (a fixed window cost a 1,000-file first run more CPU: more, smaller batches);
- else (the loop is busy) it halves, down to its size.

It is back to its size once fewer than its size hold it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

# Urgent holders served in a row while ordinary ones wait, before one of those is served.
URGENT_RUN = 8
# Seconds between two looks at a window that ordinary holders wait for (see the module doc).
TICK = 0.01
# How late the look's timer may run for the loop to count as keeping up.
LATE = 0.001


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

    def __init__(self, size: int, window: int = 0, tick: float = TICK) -> None:
        super().__init__(self, urgent=False)
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._run = 0  # urgent hand-offs in a row while ordinary holders waited
        self._lane = _Lane(self, urgent=True)
        self._size = size
        self._window = window or size  # ordinary holders at once, as given
        self._open = self._window  # the same, as the looks made it (see the module doc)
        self._ordinary = 0  # ordinary holders
        self._left = False  # an ordinary holder left since the look's timer was set
        self._look: asyncio.TimerHandle | None = None
        self._tick = tick

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
            self._watch()
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
                self._open = self._window
        self._free += 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Hand the free slots to the waiters the lanes' rules let in."""
        urgent, ordinary = self._urgent, self._waiters
        if not (urgent or ordinary):
            return  # nobody waits (most releases: a check_apply that did not wait for one)
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

    def _watch(self) -> None:
        """Ordinary holders wait for the window: look again in a tick (one timer)."""
        if self._look is None and self._ordinary >= self._open:
            self._left = False
            self._look = asyncio.get_running_loop().call_later(self._tick, self._looked)

    def _looked(self) -> None:
        look, self._look = self._look, None
        late = asyncio.get_running_loop().time() - look.when() if look is not None else 0.0
        waiters = self._waiters
        while waiters and waiters[0].done():  # cancelled while waiting
            waiters.popleft()
        if not waiters:
            return
        if not self._left or late <= LATE:
            self._open = min(self._open + self._window, self._size)
        else:
            self._open = max(self._open // 2, self._window)
        self._hand_on()
        self._watch()

    @property
    def free(self) -> int:
        return self._free
