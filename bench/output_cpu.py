"""The language's graph stream's part of a one-value change of an N-resource output, in one
process, timed in CPU: `bench/swap.py --output-cpu` runs this in each tree it compares.

An output of N file statements (`runtime.ResSpec`, as a `for` over iter.range declares them)
is built once (`source.Output.build`, in full); then, `COUNT` times, the middle one is
replaced by a new statement (its content changed: what the runtime hands back after a value
read by one iteration changed, the others the very objects of the last output) and the output
built again. Printed: the p50 CPU of making the output tuple, of `Output.build`, and of the
`engine.graph.derive` in it; and how many were derived (not built in full).

    python bench/output_cpu.py TREE N COUNT
"""

from __future__ import annotations

import statistics
import sys
import time

from yaml_cpu import timed


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
    main(int(sys.argv[2]), int(sys.argv[3]))
