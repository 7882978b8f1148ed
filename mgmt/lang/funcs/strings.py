"""import "strings": mgmt's own string functions (Go's are in "golang/strings")."""

from __future__ import annotations

from mgmt.lang.funcs.registry import define, fail
from mgmt.lang.values import go_len, sized_str


def _pad(text: str, pad: str, length: int, left: bool) -> str:
    """Whole copies of `pad` until the text is at least `length` long (it may overshoot)."""
    if not pad:
        raise fail("strings: the padding string is empty")
    if len(text) >= length:
        return text
    copies = -(-(length - len(text)) // len(pad))
    sized_str(len(text) + copies * len(pad))
    return pad * copies + text if left else text + pad * copies


def _repeat(text: str, count: int) -> str:
    count = max(count, 0)
    sized_str(len(text) * count)
    return text * count


define("strings.to_lower", "func(str) str", impl=str.lower)
define("strings.to_upper", "func(str) str", impl=str.upper)
define("strings.title", "func(str) str", impl=str.title)
define("strings.trim_space", "func(str) str", impl=str.strip)
define("strings.split", "func(str, str) []str", impl=lambda s, sep: tuple(s.split(sep)))
define("strings.join", "func([]str, str) str", impl=lambda items, sep: sep.join(items))
define(
    "strings.join_nonempty",
    "func([]str, str) str",
    impl=lambda items, sep: sep.join(i for i in items if i),
)
define("strings.has_prefix", "func(str, str) bool", impl=str.startswith)
define("strings.has_suffix", "func(str, str) bool", impl=str.endswith)
define("strings.contains", "func(str, str) bool", impl=lambda s, sub: sub in s)
define("strings.replace", "func(str, str, str) str", impl=lambda s, a, b: s.replace(a, b))
define("strings.repeat", "func(str, int) str", impl=_repeat)
define("strings.left_pad", "func(str, str, int) str", impl=lambda s, p, n: _pad(s, p, n, True))
define("strings.right_pad", "func(str, str, int) str", impl=lambda s, p, n: _pad(s, p, n, False))
define("strings.len", "func(str) int", impl=go_len, doc="its bytes, as `len`")


def _substr(s: str, low: int, high: int) -> str:
    """s[low:high] in bytes, as mgmt's (Go's); an index out of range, or one inside a
    character (Go would make a string that is not UTF-8), is an error (`<|>` can replace it)."""
    if s.isascii():
        data: str | bytes = s
    else:
        data = s.encode()
    if not 0 <= low <= len(data) or not 0 <= high <= len(data) or low > high:
        raise fail(f"low/high out of range: {low}, {high} (the length is {len(data)} bytes)")
    if isinstance(data, str):
        return data[low:high]
    try:
        return data[low:high].decode()
    except UnicodeDecodeError:
        raise fail(f"low/high {low}, {high}: inside a character of {s!r} (bytes, as Go)") from None


define("strings.substr", "func(str, int, int) str", impl=_substr, doc="s[low:high]")
