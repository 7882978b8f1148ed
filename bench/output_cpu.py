"""The language's graph stream's part of a one-value change of an N-resource output, in one
process, timed in CPU: `bench/swap.py --output-cpu` runs this in each tree it compares.

An output of N file statements (`runtime.ResSpec`, as a `for` over iter.range declares them)
is built once (`source.Output.build`, in full); then, `COUNT` times, the middle one is
replaced by a new statement (its content changed: what the runtime hands back after a value
read by one iteration changed, the others the very objects of the last output) and the output
built again. Printed: the p50 CPU of making the output tuple, of `Output.build`, and of the
`engine.derive.derive` in it; and how many were derived (not built in full).

With `bad`, the middle statement's value is made wrong instead (`mode: abc`), then right again:
the p50 CPU of the `Output.build` that raises its FuncError (since 2026-12-06 told from that
statement alone; before, every statement was built again to say it).

    python bench/output_cpu.py TREE N COUNT [bad]
"""

from __future__ import annotations

import statistics
import sys
import time

from yaml_cpu import timed


def bad_values(count: int, rounds: int) -> None:
    """The CPU of Output.build of an output whose middle statement's value is wrong."""
    import resources  # noqa: F401  (the kinds)
    from mgmt.lang import source
    from mgmt.lang.errors import FuncError
    from mgmt.lang.runtime import ResSpec

    def declared(n: int, params: tuple[tuple[str, str], ...]) -> ResSpec:
        return ResSpec("file", f"/tmp/mgmt-bench/f{n}", params, (), None)

    items = [declared(n, (("content", f"file {n}"),)) for n in range(count)]
    output = source.Output("bench")
    output.build(tuple(items))
    spent: list[float] = []
    for _ in range(rounds):
        items[count // 2] = declared(count // 2, (("content", "x"), ("mode", "abc")))
        now = tuple(items)
        start = time.process_time()
        try:
            output.build(now)
        except FuncError:
            spent.append(time.process_time() - start)
        items[count // 2] = declared(count // 2, (("content", f"file {count // 2}"),))
        output.build(tuple(items))
    assert len(spent) == rounds, "the bad value was not refused"
    print(
        f"N={count:6d}, a bad value x{rounds}: CPU p50 ms: Output.build (refused) "
        f"{statistics.median(spent) * 1000:7.2f}  (min {min(spent) * 1000:.2f}, "
        f"max {max(spent) * 1000:.2f})"
    )


def main(count: int, rounds: int) -> None:
    import resources  # noqa: F401  (the kinds)
    from mgmt.lang import source
    from mgmt.lang.runtime import ResSpec

    def declared(n: int, content: str) -> ResSpec:
        return ResSpec("file", f"/tmp/mgmt-bench/f{n}", (("content", content),), (), None)

    spent: list[float] = []
    source.derive = timed(spent, source.derive)  # type: ignore[attr-defined]
    items = [declared(n, f"file {n}") for n in range(count)]
    output = source.Output("bench")
    output.build(tuple(items))
    made, built = [], []
    for i in range(rounds):
        items[count // 2] = declared(count // 2, f"edit {i}")
        spent.append(0.0)
        start = time.process_time()
        now = tuple(items)
        middle = time.process_time()
        output.build(now)
        made.append(middle - start)
        built.append(time.process_time() - middle)

    def p50(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:6.2f}"

    print(
        f"N={count:6d}, one value x{rounds}: CPU p50 ms: the output tuple {p50(made)}  "
        f"Output.build {p50(built)}  derive {p50(spent)}  ({output.derived} derived)"
    )


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])  # the tree measured: its engine and mgmt
    if sys.argv[4:] == ["bad"]:
        bad_values(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(int(sys.argv[2]), int(sys.argv[3]))
