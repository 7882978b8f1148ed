"""import "datetime": the time now (a stream) and what a unix time is."""

from __future__ import annotations

import time

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define
from mgmt.lang.gofmt import go_time_format, go_time_string

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(t: int) -> int:
    return time.localtime(t).tm_wday


define("datetime.now", "func() int", stream=streams.Now, doc="unix seconds, every second")
define("datetime.print", "func(int) str", impl=go_time_string)
define("datetime.format", "func(int, str) str", impl=go_time_format)
define("datetime.hour", "func(int) int", impl=lambda t: int(go_time_format(t, "15")))
define("datetime.weekday", "func(int) str", impl=lambda t: _WEEKDAYS[_weekday(t)])
