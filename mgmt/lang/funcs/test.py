"""import "test": mgmt's functions for trying the language itself (its examples use them).

- test.fastcount(): 0, 1, 2, ... as fast as the runtime takes them, forever (mgmt's: "counts
  up as fast as possible"); each value is one event loop turn, so the agent stays responsive.
- test.slow_string(): "five seconds has elapsed", five seconds after the call site starts:
  shows that `a <|> b` starts b only when a fails.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define


class FastCount(streams.Stream):
    def start(self) -> None:
        self._tasks.append(self.host.spawn(self._count(), self.name))

    async def _count(self) -> None:
        count = 0
        while True:
            self.emit(count)
            count += 1
            await asyncio.sleep(0)  # one value per turn of the loop: everything else runs too


class SlowString(streams.Stream):
    DELAY: ClassVar[float] = 5.0

    def start(self) -> None:
        self.later(self.DELAY, lambda: self.emit("five seconds has elapsed"))


define("test.fastcount", "func() int", stream=FastCount, doc="counts up, as fast as it can")
define("test.slow_string", "func() str", stream=SlowString, doc="a string after five seconds")
