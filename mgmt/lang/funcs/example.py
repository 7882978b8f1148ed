"""import "example": mgmt's sample functions (its docs and examples use them)."""

from __future__ import annotations

from mgmt.lang.funcs.convert import parse_int
from mgmt.lang.funcs.registry import define

define("example.answer", "func() int", impl=lambda: 42, doc="the answer: 42")
define("example.int2str", "func(int) str", impl=str)
define("example.str2int", "func(str) int", impl=parse_int)
define("example.plus", "func(str, str) str", impl=lambda a, b: a + b)
