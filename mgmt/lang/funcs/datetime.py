"""import "datetime": the time now (a stream) and what a unix time is."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define
from mgmt.lang.gofmt import go_time_format, go_time_string

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(t: float) -> int:
    return time.localtime(t).tm_wday


class WeekdayFast(streams.Stream):
    """datetime.weekday_fast(): today's weekday, re-emitted at every local midnight."""

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        now = self.host.clock.time()
        self.emit(_WEEKDAYS[_weekday(now)])
        today = dt.datetime.fromtimestamp(now).date()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time()).timestamp()
        self.later(midnight - now + 0.001, self._tick)


class StrNow(streams.Now):
    """datetime.str_now(): datetime.now() as a str (mgmt's)."""

    def emit(self, value: Any) -> None:
        super().emit(str(value))


define("datetime.now", "func() int", stream=streams.Now, doc="unix seconds, every second")
define("datetime.str_now", "func() str", stream=StrNow, doc="`now()` as a str, every second")
define("datetime.print", "func(int) str", impl=go_time_string)
define("datetime.format", "func(int, str) str", impl=go_time_format)
define("datetime.hour", "func(int) int", impl=lambda t: int(go_time_format(t, "15")))
define("datetime.weekday", "func(int) str", impl=lambda t: _WEEKDAYS[_weekday(t)])
define(
    "datetime.weekday_fast",
    "func() str",
    stream=WeekdayFast,
    doc="today's weekday (weekday(now()) without a value every second)",
)
