"""import "convert": between int, float, bool and str."""

from __future__ import annotations

import math
import re

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import go_float, go_str, int64

# What Go's strconv.ParseInt(s, 10, 64) and ParseFloat(s, 64) read: ASCII only (Python's int()
# and float() also take other scripts' digits, "١٢٣", and "1_000"). Floats may have spaces
# around them, as before.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
# (Each text has one way to match: `[0-9]+\.?[0-9]*` had n ways to split n digits, and a text
# that fails at its end was tried each way: quadratic, minutes for a long string of digits.)
_FLOAT_TEXT = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE,
)


def parse_int(text: str) -> int:
    if not _INT_TEXT.fullmatch(text):
        raise fail(f"cannot parse {text!r} as an int (ASCII digits, with an optional sign)")
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19:  # past int64 whatever they are: no int() of thousands of digits
        raise OverflowError(f"integer overflow: {text[:40]!r} does not fit 64 bits")
    return int64(int(text))


def _parse_float(text: str) -> float:
    stripped = text.strip()
    if not _FLOAT_TEXT.fullmatch(stripped):
        raise fail(f"cannot parse {text!r} as a float")
    value = float(stripped)
    if math.isinf(value) and "inf" not in stripped.lower():
        raise fail(f"cannot parse {text!r} as a float: out of range")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "t"):
        return True
    if lowered in ("false", "0", "f"):
        return False
    raise fail(f"cannot parse {text!r} as a bool")


define("convert.to_float", "func(int) float", impl=float)
define("convert.to_int", "func(float) int", impl=int)
define("convert.to_str", "func(int) str", "func(float) str", "func(bool) str", impl=go_str)
define("convert.format_bool", "func(bool) str", impl=go_str)
define("convert.format_int", "func(int) str", impl=str)
define("convert.format_float", "func(float) str", impl=go_float)
define("convert.parse_bool", "func(str) bool", impl=parse_bool)
define("convert.str_to_int", "func(str) int", impl=parse_int)
define("convert.str_to_float", "func(str) float", impl=_parse_float)
define("convert.parse_int", "func(str) int", impl=parse_int)
define("convert.parse_float", "func(str) float", impl=_parse_float)
