"""gofmt: a short format string is parsed once, however often it is used (a `for` over many
items formats with the same one for each, on every change)."""

from __future__ import annotations

import pytest

from mgmt.lang import gofmt


def test_a_short_format_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    gofmt._cached_parts.cache_clear()
    parsed: list[str] = []
    original = gofmt._parse

    def counting(fmt: str) -> tuple[str | gofmt.Verb, ...]:
        parsed.append(fmt)
        return original(fmt)

    monkeypatch.setattr(gofmt, "_parse", counting)
    assert [gofmt.sprintf("/srv/f%d", (n,)) for n in range(100)][-1] == "/srv/f99"
    assert parsed == ["/srv/f%d"]
    long = "x" * gofmt.CACHED_FORMAT + "%d"  # a long one is not kept
    gofmt.sprintf(long, (1,))
    gofmt.sprintf(long, (2,))
    assert parsed.count(long) == 2
    with pytest.raises(ValueError, match="unknown verb"):  # errors are not kept either
        gofmt.sprintf("%y", ())
    assert gofmt.parse_format("a%sb") == ["a", gofmt.Verb("", None, None, "s"), "b"]
