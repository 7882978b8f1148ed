"""import "sys": this host (hostname, load, cpus) and the agent's environment."""

from __future__ import annotations

import operator
import os
import socket
from typing import ClassVar

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import FrozenDict


class Uptime(streams.Stream):
    """sys.uptime(): seconds since boot (/proc/uptime), every second."""

    PATH: ClassVar[str] = "/proc/uptime"

    def start(self) -> None:
        self._poll()

    def _poll(self) -> None:
        try:
            with open(self.PATH) as f:
                self.emit(int(float(f.read().split()[0])))
        except (OSError, ValueError, IndexError) as err:
            self.fail(f"cannot read {self.PATH}: {err}")
        self.later(1.0, self._poll)


define("sys.load", "func() struct{x1 float; x5 float; x15 float}", stream=streams.Load)
define("sys.hostname", "func() str", impl=operator.attrgetter("hostname"), ctx=True)


def getenv(name: str) -> str:
    """The variable's value ("" when set to ""); unset is a run-time error, which `<|>` catches
    (`sys.getenv("X") <|> "default"`), as mgmt's."""
    value = os.environ.get(name)
    if value is None:
        raise fail(f"environment variable not set: {name}")
    return value


define("sys.getenv", "func(str) str", impl=getenv, doc="unset: an error `<|>` catches")
define(
    "sys.defaultenv",
    "func(str, str) str",
    impl=os.environ.get,
    doc="mgmt's earlier API: the default when the variable is unset (not when empty)",
)
define("sys.hasenv", "func(str) bool", impl=lambda name: name in os.environ)
define("sys.cpu_count", "func() int", impl=streams.cpu_count, host=False)
define("sys.cpucount", "func() int", impl=streams.cpu_count, doc="mgmt's spelling", host=False)
define("sys.fqdn", "func() str", impl=socket.getfqdn, host=False)
define("sys.env", "func() map{str: str}", impl=lambda: FrozenDict(os.environ), doc="the agent's")
define("sys.uptime", "func() int", stream=Uptime, doc="seconds since boot, every second")
