"""import "golang/math": Go's math package on floats. A result out of the domain is NaN and
one too large is ±Inf, as in Go (Python's math raises instead)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mgmt.lang.funcs.registry import define


def _go(fn: Callable[..., float]) -> Callable[..., float]:
    def call(*args: Any) -> float:
        try:
            return float(fn(*args))
        except ValueError:
            return math.nan
        except (OverflowError, ZeroDivisionError):
            return math.inf

    return call


def _max(x: float, y: float) -> float:
    return math.nan if math.isnan(x) or math.isnan(y) else max(x, y)


def _min(x: float, y: float) -> float:
    return math.nan if math.isnan(x) or math.isnan(y) else min(x, y)


def _round(x: float) -> float:
    """Half away from zero (Python's round() goes to even)."""
    if math.isnan(x) or math.isinf(x):
        return x
    return math.copysign(math.floor(abs(x) + 0.5), x)


def _is_inf(f: float, sign: int) -> bool:
    return (sign >= 0 and f == math.inf) or (sign <= 0 and f == -math.inf)


_F1: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "acos": math.acos,
    "acosh": math.acosh,
    "asin": math.asin,
    "asinh": math.asinh,
    "atan": math.atan,
    "atanh": math.atanh,
    "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "ceil": math.ceil,
    "cos": math.cos,
    "cosh": math.cosh,
    "erf": math.erf,
    "erfc": math.erfc,
    "exp": math.exp,
    "exp_2": lambda x: 2.0**x,
    "expm_1": math.expm1,
    "floor": math.floor,
    "gamma": math.gamma,
    "log": math.log,
    "log_10": math.log10,
    "log_1_p": math.log1p,
    "log_2": math.log2,
    "round": _round,
    "round_to_even": round,
    "sin": math.sin,
    "sinh": math.sinh,
    "sqrt": math.sqrt,
    "tan": math.tan,
    "tanh": math.tanh,
    "trunc": math.trunc,
}
_F2: dict[str, Callable[[float, float], float]] = {
    "atan_2": math.atan2,
    "copysign": math.copysign,
    "dim": lambda x, y: max(x - y, 0.0),
    "hypot": math.hypot,
    "max": _max,
    "min": _min,
    "mod": math.fmod,
    "pow": math.pow,
    "remainder": math.remainder,
}
for _name, _fn in _F1.items():
    define(f"golang/math.{_name}", "func(float) float", impl=_go(_fn))
for _name, _fn2 in _F2.items():
    define(f"golang/math.{_name}", "func(float, float) float", impl=_go(_fn2))
define("golang/math.inf", "func(int) float", impl=lambda sign: math.inf if sign >= 0 else -math.inf)
define("golang/math.is_inf", "func(float, int) bool", impl=_is_inf)
define("golang/math.na_n", "func() float", impl=lambda: math.nan)
define("golang/math.pow_10", "func(int) float", impl=_go(lambda n: 10.0**n))
define("golang/math.signbit", "func(float) bool", impl=lambda x: math.copysign(1, x) < 0)
