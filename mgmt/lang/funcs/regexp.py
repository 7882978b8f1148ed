"""import "regexp": regular expressions in Go's syntax (RE2), matched in linear time.

mgmt's regexp.match is Go's `regexp.MatchString`: RE2's syntax, and a match whose time grows
with the text, never exponentially with the pattern. Here too a program's pattern is compiled
by RE2 (the google-re2 package), never by Python's backtracking `re`: `(a+)+$` on a long line
of a's and a `b` held the GIL for minutes, and with it every resource, the status page and the
cluster. RE2's answers are Go's where Python's differ: `$` is the end of the text (Python's
also matches before a final newline), `\\d`, `\\w`, `\\s` and `\\b` are ASCII, `\\z` is the end
of the text and `\\Z` is refused.

What Go refuses is an error, as in mgmt: backreferences, lookarounds, possessive and
atomic groups, repeat counts over 1000, `\\C` (RE2 accepts it; Go does not), a pattern too
large for RE2's memory bound. A pattern that is a constant (a literal, or a variable bound to
one) is compiled when the program is checked: a bad one is a compile error at the pattern, so
nothing is applied; any other pattern is compiled when applied (a run-time error of the call).

RE2 is imported where a pattern is first compiled, not at start-up.
"""

from __future__ import annotations

import functools
from typing import Any

from mgmt.lang import ast
from mgmt.lang.funcs.registry import Typer, define, fail

# At most this many characters of a pattern (or of RE2's message, which quotes it) in an error.
_SHOWN = 80

# RE2's messages for what Perl has and RE2 lacks, with what to write instead.
_HINTS = (
    ("invalid perl operator: (?=", "lookarounds are not RE2"),
    ("invalid perl operator: (?!", "lookarounds are not RE2"),
    ("invalid perl operator: (?<=", "lookarounds are not RE2"),
    ("invalid perl operator: (?<!", "lookarounds are not RE2"),
    ("invalid escape sequence: \\Z", "RE2's end of the text is \\z"),
    ("bad repetition operator: ++", "possessive repeats are not RE2"),
    ("bad repetition operator: *+", "possessive repeats are not RE2"),
    ("bad repetition operator: ?+", "possessive repeats are not RE2"),
)


_BACKREFERENCE = "invalid escape sequence: \\"  # then one digit, 1 to 9
_DIGITS = frozenset("123456789")


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _go_refuses(pattern: str) -> str | None:
    """What Go's parser refuses and RE2's accepts (`\\C`, one byte of any character), else None."""
    at = pattern.find("\\")
    while 0 <= at < len(pattern) - 1:
        escaped = pattern[at + 1]
        if escaped == "C":
            return "invalid escape sequence: \\C (one byte: not in Go's syntax)"
        if escaped == "Q":  # literal text up to \E (or the end)
            end = pattern.find("\\E", at + 2)
            if end < 0:
                return None
            at = end
        at = pattern.find("\\", at + 2)
    return None


def _problem(err: Exception) -> str:
    message = err.args[0] if err.args else str(err)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    message = str(message)
    if message.startswith(_BACKREFERENCE) and message[len(_BACKREFERENCE) :] in _DIGITS:
        return f"{_shown(message)} (backreferences are not RE2)"
    for start, hint in _HINTS:
        if message.startswith(start):
            return f"{_shown(message)} ({hint})"
    return _shown(message)


@functools.lru_cache(maxsize=128)  # as google-re2's own cache: RE2 bounds each at 8 MiB
def compiled(pattern: str) -> Any:
    """`pattern` compiled by RE2 to answer whether it matches (no groups kept: RE2's fastest
    engine); ValueError saying what is wrong, of a pattern Go's regexp would refuse."""
    refused = _go_refuses(pattern)
    if refused is not None:
        raise ValueError(refused)
    try:
        encoded = pattern.encode()
    except UnicodeEncodeError:
        raise ValueError("invalid UTF-8") from None
    import re2  # RE2 (google-re2): here, not at start-up

    options = re2.Options()
    options.log_errors = False  # (its own lines on stderr, with the whole pattern)
    options.never_capture = True
    try:
        return re2.compile(encoded, options)
    except re2.error as err:
        raise ValueError(_problem(err)) from None


def check(pattern: str) -> str | None:
    """Why `pattern` is not a pattern Go's regexp compiles, else None."""
    try:
        compiled(pattern)
    except ValueError as err:
        return f"bad pattern {_shown(pattern)!r}: {err}"
    return None


def _text(s: str) -> bytes:
    """`s` in UTF-8; a lone surrogate (JSON's "\\ud800") is U+FFFD, as Go reads a byte that is
    not UTF-8."""
    try:
        return s.encode()
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s).encode()


def match(pattern: str, s: str) -> bool:
    """Whether `pattern` matches somewhere in `s` (Go's MatchString: not anchored)."""
    try:
        regexp = compiled(pattern)
    except ValueError as err:
        raise fail(f"bad pattern {_shown(pattern)!r}: {err}") from None
    return regexp.search(_text(s)) is not None


def _check_match(typer: Typer, e: ast.Call) -> None:
    """A constant pattern, compiled now: a bad one is an error at the pattern."""
    pattern = ast.constant(e.args[0])
    if pattern is not None and isinstance(pattern.value, str):
        problem = check(pattern.value)
        if problem is not None:
            typer.problem(e.args[0].pos, f"{e.func or 'regexp.match'}: {problem}")


define(
    "regexp.match",
    "func(str, str) bool",
    check=_check_match,
    impl=match,
    doc="whether the pattern (Go's RE2 syntax) matches somewhere in the string",
)
