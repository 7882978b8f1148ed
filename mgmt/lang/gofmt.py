"""Go formatting: fmt.Printf verbs (%s %d %f %v %t %q %e %g %x %%) and time layouts."""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mgmt.lang.errors import FuncError
from mgmt.lang.values import MAX_LEN, go_float, go_quote, go_str, mcl_float, mcl_str

_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")

# verb -> the mcl type its argument must have ("" = any)
VERB_TYPES = {
    "s": "str",
    "q": "str",
    "d": "int",
    "x": "",
    "X": "",
    "o": "int",
    "b": "int",
    "c": "int",
    "f": "float",
    "F": "float",
    "e": "float",
    "E": "float",
    "g": "float",
    "G": "float",
    "t": "bool",
    "v": "",
}


@dataclass(frozen=True)
class Verb:
    flags: str
    width: int | None
    prec: int | None
    verb: str


CACHED_FORMAT = 256  # characters of a format string whose parse is kept (_parts)


def parse_format(fmt: str) -> list[str | Verb]:
    """Split a format string into literal text and verbs; ValueError on an unknown verb."""
    return list(_parts(fmt))


def _parts(fmt: str) -> tuple[str | Verb, ...]:
    """parse_format(), kept for short formats: a `for` over 10,000 items formats with the same
    one 10,000 times on every change (its parse was 2/7 of such a re-evaluation)."""
    return _cached_parts(fmt) if len(fmt) <= CACHED_FORMAT else _parse(fmt)


@functools.lru_cache(maxsize=1024)
def _cached_parts(fmt: str) -> tuple[str | Verb, ...]:
    return _parse(fmt)


def _parse(fmt: str) -> tuple[str | Verb, ...]:
    parts: list[str | Verb] = []
    pos = 0
    for m in _VERB.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos : m.start()])
        flags, width, prec, verb = m.groups()
        for what, digits in (("width", width), ("precision", prec)):
            if digits and (len(digits) > len(str(MAX_LEN)) or int(digits) > MAX_LEN):
                raise ValueError(
                    f"{m.group()}: the {what} {_shown(digits)} is over the limit of "
                    f"{MAX_LEN:,} characters a string may have"
                )
        if verb == "%":
            parts.append("%")
        elif verb not in VERB_TYPES:
            raise ValueError(f"unknown verb %{verb}; accepted: %s %d %f %v %t %q %e %g %x %%")
        else:
            parts.append(
                Verb(flags, int(width) if width else None, int(prec) if prec else None, verb)
            )
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    return tuple(parts)


def _shown(digits: str) -> str:
    digits = digits.lstrip("0") or "0"
    return f"{int(digits):,}" if len(digits) <= 20 else f"of {len(digits):,} digits"


def verbs(fmt: str) -> list[Verb]:
    return [p for p in parse_format(fmt) if isinstance(p, Verb)]


def sprintf(fmt: str, args: tuple[Any, ...], mgmt: bool = False) -> str:
    """Go's fmt.Sprintf; ValueError if the result would be longer than a string may be.

    `mgmt`: as mgmt's fmt.printf prints (lang/core/fmt/printf.go): `%f` and `%v` of a float,
    `%v` of a list, a map or a struct as mgmt's Value.String() (mcl_str). Its printf has no
    width, precision, flag or other verb: those (a superset) are Go's here.

    Widths and precisions are bounded when the format is parsed, and each verb's length is
    worked out before it is built, so a format cannot make a huge string even for a moment.
    """
    out: list[str] = []
    room = MAX_LEN
    args_iter = iter(args)
    for part in _parts(fmt):
        if isinstance(part, str):
            text = part
        else:
            try:
                value = next(args_iter)
            except StopIteration:
                text = f"%!{part.verb}(MISSING)"
            else:
                text = _one(part, value, room, mgmt)
        room -= len(text)
        if room < 0:
            raise ValueError(f"result too large: over {MAX_LEN:,} characters (the limit)")
        out.append(text)
    return "".join(out)


def _printed(value: Any) -> str:
    """%v as mgmt's printf shows a value (lang/core/fmt/printf.go, valueToString): a float, a
    list, a map or a struct as its Value.String() (mcl_str), any other as Go's %v."""
    if isinstance(value, float | tuple | list | dict):
        return mcl_str(value)
    return go_str(value)


def _fits(v: Verb, body: int, room: int) -> None:
    """Refuse a verb whose result (at least `body` long, padded to its width) would not fit."""
    if max(v.width or 0, body) > room:
        shown = f"%{v.flags}{v.width or ''}{'' if v.prec is None else f'.{v.prec}'}{v.verb}"
        raise ValueError(
            f"{shown}: the result would be over {MAX_LEN:,} characters (the limit of a string)"
        )


def _one(v: Verb, value: Any, room: int = MAX_LEN, mgmt: bool = False) -> str:
    """One verb formatted; ValueError (before building it) if it would be longer than room."""
    spec_flags = "".join(f for f in v.flags if f in "-+ 0#")
    align = "<" if "-" in spec_flags else ""
    zero = "0" if "0" in spec_flags and not align else ""
    pad = align or ">"  # text is padded on the left, as Go does (Python's default is right)
    sign = "+" if "+" in spec_flags else (" " if " " in spec_flags else "")
    width = str(v.width) if v.width else ""
    prec = f".{v.prec}" if v.prec is not None else ""
    if v.verb in "sv":
        if v.verb == "v" and isinstance(value, float) and v.prec is not None:
            return _one(Verb(v.flags, v.width, v.prec, "g"), value, room)
        text = (
            _printed(value)
            if v.verb == "v" and mgmt
            else value
            if isinstance(value, str)
            else go_str(value)
        )
        if v.prec is not None:
            text = text[: v.prec]
        _fits(v, len(text), room)
        return f"{text:{pad}{width}}"
    if v.verb == "q":
        quoted = go_quote(str(value))
        _fits(v, len(quoted), room)
        return f"{quoted:{pad}{width}}"
    if v.verb == "t":
        _fits(v, 5, room)
        return f"{go_str(bool(value)):{pad}{width}}"
    if v.verb in "dobxXc":
        code = {"d": "d", "o": "o", "b": "b", "x": "x", "X": "X", "c": "c"}[v.verb]
        if v.verb in "xX" and isinstance(value, str):
            _fits(v, 2 * len(value.encode()), room)
            text = value.encode().hex()
            return text.upper() if v.verb == "X" else text
        _fits(v, len(f"{int(value):{sign}{code}}"), room)
        return f"{int(value):{align}{sign}{zero}{width}{code}}"
    if v.verb in "fFeEgG":
        code = v.verb.lower() if v.verb == "F" else v.verb
        # at most the integer part's digits, the point, the precision's digits, an exponent
        _fits(v, len(f"{float(value):{sign}.0f}") + (v.prec or 6) + 8, room)
        if not math.isfinite(value):  # Go: +Inf, -Inf, NaN whatever the verb
            return f"{go_float(float(value)):{pad}{width}}"
        if mgmt and v.verb == "f" and not (v.flags or v.width or prec):
            return mcl_float(float(value))  # mgmt's printf: FloatValue.String()
        if not prec and v.verb in "gG":
            text = go_float(float(value))
            return f"{text.upper() if v.verb == 'G' else text:{pad}{width}}"
        if not prec:
            prec = ".6"
        text = f"{float(value):{align}{sign}{zero}{width}{prec}{code}}"
        if v.verb in "eE":
            text = re.sub(r"([eE][-+])(\d)$", r"\g<1>0\2", text)
        return text
    raise FuncError(f"unknown verb %{v.verb}")


# time layouts ---------------------------------------------------------------------------------

# Go reference-time tokens, longest first, and how to render each from a struct_time.
_MONTHS = "January February March April May June July August September October November December"
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
_LAYOUT: list[tuple[str, Callable[[time.struct_time, float], str]]] = [
    ("January", lambda t, f: _MONTHS.split()[t.tm_mon - 1]),
    ("Monday", lambda t, f: _DAYS.split()[t.tm_wday]),
    ("2006", lambda t, f: f"{t.tm_year:04d}"),
    ("-07:00", lambda t, f: _tz(t, ":")),
    ("-0700", lambda t, f: _tz(t, "")),
    ("Z07:00", lambda t, f: "Z" if t.tm_gmtoff == 0 else _tz(t, ":")),
    ("Jan", lambda t, f: _MONTHS.split()[t.tm_mon - 1][:3]),
    ("Mon", lambda t, f: _DAYS.split()[t.tm_wday][:3]),
    ("MST", lambda t, f: t.tm_zone or "UTC"),
    (".000000000", lambda t, f: f".{int(f * 1e9):09d}"),
    (".000000", lambda t, f: f".{int(f * 1e6):06d}"),
    (".000", lambda t, f: f".{int(f * 1e3):03d}"),
    ("002", lambda t, f: f"{t.tm_yday:03d}"),
    ("01", lambda t, f: f"{t.tm_mon:02d}"),
    ("02", lambda t, f: f"{t.tm_mday:02d}"),
    ("_2", lambda t, f: f"{t.tm_mday:2d}"),
    ("15", lambda t, f: f"{t.tm_hour:02d}"),
    ("03", lambda t, f: f"{(t.tm_hour % 12) or 12:02d}"),
    ("04", lambda t, f: f"{t.tm_min:02d}"),
    ("05", lambda t, f: f"{t.tm_sec:02d}"),
    ("06", lambda t, f: f"{t.tm_year % 100:02d}"),
    ("PM", lambda t, f: "PM" if t.tm_hour >= 12 else "AM"),
    ("pm", lambda t, f: "pm" if t.tm_hour >= 12 else "am"),
    ("1", lambda t, f: str(t.tm_mon)),
    ("2", lambda t, f: str(t.tm_mday)),
    ("3", lambda t, f: str((t.tm_hour % 12) or 12)),
    ("4", lambda t, f: str(t.tm_min)),
    ("5", lambda t, f: str(t.tm_sec)),
]


def _tz(t: time.struct_time, sep: str) -> str:
    off = t.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    off = abs(off)
    return f"{sign}{off // 3600:02d}{sep}{off % 3600 // 60:02d}"


def go_time_format(unix: float, layout: str) -> str:
    """Format unix seconds (local time) with a Go layout such as "2006-01-02 15:04:05"."""
    t = time.localtime(unix)
    frac = unix - int(unix)
    out: list[str] = []
    i = 0
    while i < len(layout):
        for token, render in _LAYOUT:
            if layout.startswith(token, i):
                out.append(render(t, frac))
                i += len(token)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)


def go_time_string(unix: int) -> str:
    """Go's time.Unix(t, 0).String(): "2006-01-02 15:04:05 -0700 MST" (local time)."""
    return go_time_format(unix, "2006-01-02 15:04:05 -0700 MST")
