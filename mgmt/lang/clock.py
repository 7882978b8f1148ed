"""Where time comes from for the time-based functions (datetime.now, history, debounce, load).

The runtime takes a Clock; the agent uses the event loop's, tests can use a ManualClock and
drive time themselves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock unix seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes back."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run callback (in the event loop) after `delay` seconds."""
        ...


class LoopClock:
    """Real time, timers on the running event loop."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


class _ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when told to (`advance`), running the timers that fall due."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self._timers: list[tuple[float, int, _ManualTimer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = _ManualTimer()
        heapq.heappush(
            self._timers, (self._mono + max(delay, 0.0), next(self._seq), timer, callback)
        )
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, running each due timer at its own time, in order."""
        end = self._mono + seconds
        while self._timers and self._timers[0][0] <= end:
            due, _, timer, callback = heapq.heappop(self._timers)
            self._wall += due - self._mono
            self._mono = due
            if not timer.cancelled:
                callback()
        self._wall += end - self._mono
        self._mono = end
