"""Flag: asyncio.Event's is_set/set/clear/wait for the engine's per-vertex and per-watch flags.

asyncio.Event (3.11) makes a deque of waiters and checks the running loop (a Python call, and a
getpid) at each wait, for flags that have at most one waiter, mostly none: a vertex's `ready`
and `dirty`, a watch's wake-up. A 1,000-file run made 3,000 of them. A Flag makes its list of
waiters on the first wait; each waiter is woken as an Event's is (its future's result, in the
loop's next step), also when the flag is cleared again before then.
"""

from __future__ import annotations

import asyncio

from engine.tasks import running_loop


class Flag:
    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            if self._waiters:
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        """Until the flag is set (at once if it is); True, as Event.wait()."""
        if self._set:
            return True
        waiter = running_loop().create_future()  # (no getpid: engine.tasks)
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
