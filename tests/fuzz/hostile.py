"""Hostile graph-file inputs shared by the unit, end-to-end and fuzz tests."""

from __future__ import annotations

# 408 bytes that expand to 9**9 strings ("billion laughs"): took 36 s and 3.4 GB to check.
LAUGHS = "graph: bomb\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
# Beyond any float ("1e309"), and past Python's 4,300-digit int() limit.
BIG = "1" + "0" * 309
HUGE = "1" * 5000
