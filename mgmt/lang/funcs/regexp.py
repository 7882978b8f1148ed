"""import "regexp": regular expressions (Go's RE2 syntax; Python's re reads the common part)."""

from __future__ import annotations

import functools
import re

from mgmt.lang.funcs.registry import define, fail


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise fail(f"bad pattern {pattern!r}: {err}") from None


define(
    "regexp.match",
    "func(str, str) bool",
    impl=lambda pattern, s: _compile(pattern).search(s) is not None,
    doc="whether the pattern matches somewhere in the string",
)
