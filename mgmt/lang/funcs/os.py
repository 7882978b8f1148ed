"""import "os": this host's files and system."""

from __future__ import annotations

from mgmt.lang import streams
from mgmt.lang.funcs.registry import define

define("os.readfile", "func(str) str", stream=streams.ReadFile, doc="re-emits on change")
