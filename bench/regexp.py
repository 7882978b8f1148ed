"""In-process CPU time of mcl's regexp.match (the builtin's own function, as the runtime calls
it): a pattern compiled once and matched many times (a hostname, a word in a 10 kB text),
1,000 distinct patterns each compiled once, and `(a+)+$` and `(a+)+c` on N a's then a b,
whose time with a backtracking engine doubles with each a (RE2: one pass over the text, or
none: it reads an end-anchored pattern from the end). A size over
--backtrack-limit is skipped for a tree whose patterns backtrack (it would take minutes).

CPU time of this process (time.process_time()), the minimum and median of --runs. For another
checkout, put it first on the path:

    .venv/bin/python bench/regexp.py [--runs 5] [--sizes 16,20,22,100000]
    PYTHONPATH=DIR .venv/bin/python bench/regexp.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, Parser, run_script, whole

sys.path.append(str(ROOT))  # after PYTHONPATH: `PYTHONPATH=DIR` measures DIR
from mgmt.lang import funcs


def cpu(step: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.process_time()
        step()
        out.append(time.process_time() - start)
    return out


def sizes(text: str) -> list[int]:
    return [whole(1)(part) for part in text.split(",")]


def main() -> None:
    parser = Parser(prog="regexp.py")
    parser.add_argument("--runs", type=whole(1), default=5)
    parser.add_argument("--sizes", type=sizes, default=[16, 20, 22, 100_000, 1_000_000])
    parser.add_argument("--backtrack-limit", type=whole(1), default=22)
    args = parser.parse_args()
    builtin = funcs.lookup("regexp", "match")
    assert builtin is not None and builtin.impl is not None
    match = builtin.impl
    text = ("lorem ipsum dolor sit amet " * 400)[:10_000]
    linear = _linear(match)

    def hosts() -> None:
        for _ in range(10_000):
            match(r"^db\d+\.example\.com$", "db12.example.com")

    def words() -> None:
        for _ in range(100):
            match(r"\b(error|warning|fatal)\b", text)

    def distinct() -> None:
        base = time.monotonic_ns()  # patterns this run has not compiled (nor cached)
        for index in range(1000):
            match(rf"^host-{base}-{index}\.example$", "host-1.example")

    steps: dict[str, Callable[[], object]] = {
        "a hostname pattern, 10,000 calls": hosts,
        "a word in a 10 kB text, 100 calls": words,
        "1,000 distinct patterns, once each": distinct,
    }
    for n in args.sizes:
        if not linear and n > args.backtrack_limit:
            continue
        subject = "a" * n + "b"
        for pattern in ("(a+)+$", "(a+)+c"):  # the end anchored (RE2 reads from it), or not
            steps[f"{pattern} on {n:,} a's and a b"] = lambda p=pattern, s=subject: match(p, s)
    where = Path(funcs.__file__).resolve().parents[2]
    engine = "RE2" if linear else "Python's re (backtracking)"
    print(f"regexp.match, {where}, {engine}, load {os.getloadavg()[0]:.1f}, CPU:")
    for label, step in steps.items():
        got = cpu(step, args.runs)
        print(
            f"  {label:38s} min {min(got) * 1000:9.2f} ms  "
            f"median {statistics.median(got) * 1000:9.2f} ms"
        )
    if not linear:
        print(f"  (sizes over {args.backtrack_limit} skipped: each a doubles the time)")


def _linear(match: Callable[..., object]) -> bool:
    """Whether the tree's regexp.match runs RE2 (loaded by its first pattern)."""
    match("x", "x")
    return "re2" in sys.modules


if __name__ == "__main__":
    run_script(main)
