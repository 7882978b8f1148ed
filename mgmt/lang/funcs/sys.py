"""import "sys": this host (hostname, load, cpus) and the agent's environment."""

from __future__ import annotations

import operator
import os
import socket

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define

define("sys.load", "func() struct{x1 float; x5 float; x15 float}", stream=streams.Load)
define("sys.hostname", "func() str", impl=operator.attrgetter("hostname"), ctx=True)
define(
    "sys.getenv",
    "func(str) str",
    "func(str, str) str",
    impl=lambda name, default="": os.environ.get(name) or default,
    doc="with a default: used when the variable is unset or empty (as mgmt's)",
)
define("sys.defaultenv", "func(str, str) str", impl=os.environ.get)
define("sys.hasenv", "func(str) bool", impl=lambda name: name in os.environ)
define("sys.cpu_count", "func() int", impl=streams.cpu_count)
define("sys.cpucount", "func() int", impl=streams.cpu_count, doc="mgmt's spelling")
define("sys.fqdn", "func() str", impl=socket.getfqdn)
