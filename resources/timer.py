"""timer: an event source that fires every `interval` seconds; a refresh restarts the count.

A tick counts as a change, so `notify` edges from a timer refresh their targets on every tick
(e.g. timer -> exec runs the command periodically).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from engine.errors import ValidationError
from engine.handle import Handle
from engine.resource import Refreshable, Resource, register
from resources._lib.plan import nothing_to_do

# A floor: below it the ticks (each one a check, and a run of what it notifies) would take the
# agent's CPU; mgmt's interval is a whole number of seconds.
MIN_INTERVAL = 0.01


@register("timer")
@dataclass(kw_only=True, eq=False)
class TimerRes(Refreshable, Resource):
    # Seconds between ticks (at least MIN_INTERVAL). Required.
    interval: float

    def validate(self) -> None:
        super().validate()
        if not self.interval >= MIN_INTERVAL:
            raise ValidationError(
                f"must be at least {MIN_INTERVAL} seconds, got {self.interval}", "interval"
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._ticked = False
        self._reset = asyncio.Event()

    async def watch(self) -> None:
        await self.handle.event()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._reset.wait()
                self._reset.clear()
                continue  # restarted: count the interval from now
            self._ticked = True
            await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        refresh = self.handle.refresh()
        if not (self._ticked or refresh):
            return nothing_to_do(self.handle, "no tick since the last check")
        if apply:
            if refresh:
                self._reset.set()
                self.handle.logger.info("timer restarted by a refresh")
            else:
                self.handle.logger.debug("tick")  # what it refreshes says what it did
            self._ticked = False
        return False
