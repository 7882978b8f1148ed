"""A cluster key two writers fight over: told, and our writes of it spaced out.

Two hosts declaring different values for one etcd key (two `kv` resources, or `json:edit`s of
one `etcd:///` document whose edits disagree) each repair the other's write as soon as their
watch sees it: 254 writes a second between two hosts, the load of the machines up by half,
and nothing said (tester9). mgmt does the same; we say it and back off instead.

Each resource keeps a `Fight` of its writes: a write is only made when the key does not hold
what the resource wants, so WRITES of them within WINDOW seconds means another writer undid
them. Then one warning, and the next write waits (1 s, doubling to MAX_WAIT) until the key is
left alone for a WINDOW (the writes space out again by themselves: the fight is over). The
resource's stop ends a wait at once (`pace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from engine.handle import Handle
from engine.stopgate import Stopped

WRITES = 10  # our writes within WINDOW seconds that mean a fight
WINDOW = 5.0
MAX_WAIT = 30.0  # seconds between two of our writes, at most, while the fight lasts


class Fight:
    """Our recent writes of one key (see the module doc): `pace()` before reading the key to
    repair it, `wrote()` after each write."""

    def __init__(self) -> None:
        self._writes: deque[float] = deque(maxlen=WRITES)
        self.wait = 0.0  # seconds a repair waits first (0: no fight)

    def _over(self, now: float) -> bool:
        """Our last write was left alone for a while: no fight (any more)."""
        return bool(self._writes) and now - self._writes[-1] > max(WINDOW, 2 * self.wait)

    async def pace(self, handle: Handle) -> None:
        """While a fight lasts, wait before the next repair (the back-off itself).

        The resource's stop (the agent's, graceful or not, or a swap's) ends the wait:
        `Stopped`, the repair not made (no error, the state left unknown), as a check_apply
        that the stop refuses before it begins. A graceful stop lets a running check_apply
        finish, and this wait is up to MAX_WAIT: an agent sat out the rest of it (past
        a 30 s stop bound in CI) and then wrote the key after its SIGTERM."""
        if not self.wait or self._over(time.monotonic()):
            return
        stopped = asyncio.Event()
        unregister = handle.on_stop(stopped.set)  # at once if it is stopping already
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.wait):
                    await stopped.wait()
        finally:
            unregister()
        if stopped.is_set():
            raise Stopped

    def wrote(self, handle: Handle, where: str) -> None:
        """We wrote `where`: a fight is said (once), and while it lasts each write doubles the
        wait; it is over once our last write was left alone for a while."""
        now = time.monotonic()
        if self._over(now):
            self._writes.clear()
            if self.wait:
                handle.logger.info("%s is left alone again: repaired at once again", where)
            self.wait = 0.0
        self._writes.append(now)
        if self.wait:
            self.wait = min(2 * self.wait, MAX_WAIT)
        elif len(self._writes) == WRITES and now - self._writes[0] <= WINDOW:
            handle.logger.warning(
                "another writer keeps changing %s (%d writes of this host's undone within "
                "%.1fs: another host declares another value?); repairing it at most every 1s, "
                "doubling to %.0fs, until it is left alone",
                where,
                WRITES - 1,
                now - self._writes[0],
                MAX_WAIT,
            )
            self.wait = 1.0
