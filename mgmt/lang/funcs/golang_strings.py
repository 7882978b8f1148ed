"""import "golang/strings": Go's strings package, as mgmt exposes it (snake_case names).

Indexes count characters (Go counts bytes: the same for ASCII text)."""

from __future__ import annotations

from mgmt.lang.funcs.registry import define
from mgmt.lang.values import sized_str


def _title(s: str) -> str:
    """Go's (deprecated) strings.Title: a letter after a non-letter is upper-cased."""
    out: list[str] = []
    previous = " "
    for c in s:
        out.append(c.upper() if not (previous.isalnum() or previous == "_") else c)
        previous = c
    return "".join(out)


def _index_any(s: str, chars: str, last: bool) -> int:
    found = [i for i, c in enumerate(s) if c in chars]
    if not found:
        return -1
    return found[-1] if last else found[0]


def _replace(s: str, old: str, new: str, n: int) -> str:
    count = -1 if n < 0 else n
    if count and old == "" and len(new):  # the result grows with every match
        sized_str(len(s) + (len(s) + 1) * len(new))
    elif new and len(new) > len(old):
        sized_str(len(s) + s.count(old) * (len(new) - len(old)))
    return s.replace(old, new, count)


def _repeat(s: str, count: int) -> str:
    if count < 0:
        raise ValueError(f"negative repeat count {count}")
    sized_str(len(s) * count)
    return s * count


_M = "golang/strings."
define(_M + "clone", "func(str) str", impl=lambda s: s)
define(_M + "compare", "func(str, str) int", impl=lambda a, b: (a > b) - (a < b))
define(_M + "contains", "func(str, str) bool", impl=lambda s, sub: sub in s)
define(_M + "contains_any", "func(str, str) bool", impl=lambda s, cs: any(c in s for c in cs))
define(_M + "count", "func(str, str) int", impl=lambda s, sub: s.count(sub))
define(_M + "equal_fold", "func(str, str) bool", impl=lambda a, b: a.casefold() == b.casefold())
define(_M + "has_prefix", "func(str, str) bool", impl=str.startswith)
define(_M + "has_suffix", "func(str, str) bool", impl=str.endswith)
define(_M + "index", "func(str, str) int", impl=str.find)
define(_M + "index_any", "func(str, str) int", impl=lambda s, cs: _index_any(s, cs, False))
define(_M + "join", "func([]str, str) str", impl=lambda items, sep: sep.join(items))
define(_M + "last_index", "func(str, str) int", impl=str.rfind)
define(_M + "last_index_any", "func(str, str) int", impl=lambda s, cs: _index_any(s, cs, True))
define(_M + "repeat", "func(str, int) str", impl=_repeat)
define(_M + "replace", "func(str, str, str, int) str", impl=_replace, doc="n < 0: all")
define(_M + "replace_all", "func(str, str, str) str", impl=lambda s, a, b: _replace(s, a, b, -1))
define(_M + "title", "func(str) str", impl=_title)
define(_M + "to_lower", "func(str) str", impl=str.lower)
define(_M + "to_title", "func(str) str", impl=str.upper)
define(_M + "to_upper", "func(str) str", impl=str.upper)
define(_M + "to_valid_utf_8", "func(str, str) str", impl=lambda s, _replacement: s)
define(_M + "trim", "func(str, str) str", impl=lambda s, cutset: s.strip(cutset))
define(_M + "trim_left", "func(str, str) str", impl=lambda s, cutset: s.lstrip(cutset))
define(_M + "trim_prefix", "func(str, str) str", impl=str.removeprefix)
define(_M + "trim_right", "func(str, str) str", impl=lambda s, cutset: s.rstrip(cutset))
define(_M + "trim_space", "func(str) str", impl=str.strip)
define(_M + "trim_suffix", "func(str, str) str", impl=str.removesuffix)
