"""import "golang/strconv": Go's conversions between strings and bool or int."""

from __future__ import annotations

import json

from mgmt.lang.funcs.convert import parse_bool, parse_int
from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import go_quote

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _format_int(i: int, base: int) -> str:
    if not 2 <= base <= 36:
        raise fail(f"illegal base {base} (2 to 36)")
    digits: list[str] = []
    n = abs(i)
    while True:
        n, rest = divmod(n, base)
        digits.append(_DIGITS[rest])
        if not n:
            break
    return ("-" if i < 0 else "") + "".join(reversed(digits))


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] == "`" and "`" not in s[1:-1]:
        return s[1:-1]
    try:
        value = json.loads(s) if s.startswith('"') else None
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise fail(f"invalid syntax: {s!r}")
    return value


_M = "golang/strconv."
define(_M + "atoi", "func(str) int", impl=parse_int)
define(_M + "can_backquote", "func(str) bool", impl=lambda s: "`" not in s and "\n" not in s)
define(_M + "format_bool", "func(bool) str", impl=lambda b: "true" if b else "false")
define(_M + "format_int", "func(int, int) str", impl=_format_int)
define(_M + "itoa", "func(int) str", impl=str)
define(_M + "parse_bool", "func(str) bool", impl=parse_bool)
define(_M + "quote", "func(str) str", impl=go_quote)
define(_M + "unquote", "func(str) str", impl=_unquote)
