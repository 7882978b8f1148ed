"""import "math"."""

from __future__ import annotations

import math
from typing import Any

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import go_float


def _mod(a: Any, b: Any) -> Any:
    if b == 0:
        raise fail("math.mod: division by zero")
    if isinstance(a, float):
        return math.fmod(a, b)
    rest = abs(a) % abs(b)  # Go's %: the sign follows the dividend (exact: no float)
    return rest if a >= 0 else -rest


def _sqrt(a: float) -> float:
    if a < 0:
        raise fail(f"math.sqrt: negative argument {go_float(a)}")
    return math.sqrt(a)


_NUM2 = ("func(int, int) int", "func(float, float) float")
_NUM1 = ("func(int) int", "func(float) float")
define("math.mod", *_NUM2, impl=_mod)
define("math.pow", "func(float, float) float", impl=lambda a, b: float(math.pow(a, b)))
define("math.sqrt", "func(float) float", impl=_sqrt)
define("math.abs", *_NUM1, impl=abs)
define("math.min", *_NUM2, impl=min)
define("math.max", *_NUM2, impl=max)
define("math.floor", "func(float) int", impl=math.floor)
define("math.ceil", "func(float) int", impl=math.ceil)
define("math.round", "func(float) int", impl=lambda a: math.floor(a + 0.5))
define("math.minus1", "func(int) int", impl=lambda a: a - 1)
