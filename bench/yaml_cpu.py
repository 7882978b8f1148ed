"""The graph file front-end's part of a one-resource change of an N-resource graph file, in
one process, timed in CPU (the machine's load left out): `bench/swap.py --yaml-cpu` runs this
in each tree it compares.

The graph file of bench/swap.py (files_graph and an `edges` list) is loaded as the agent loads
it (`yamlgraph.load_file` with yamlreparse's `incremental_parse`); then each change of bench/swap.py's rounds is
written to it and taken as the agent's re-read takes it: the file read (`read_limited`), then
`agent._parsed` (what tells an edit from a touch, then `yamlreparse.reparse`), of which
`reparse`, of which `engine.derive.derive` (counted where yamlreparse calls it). Printed per
change: the p50 CPU of each stage, and how many of the reparses were not incremental.

    python bench/yaml_cpu.py TREE N COUNT
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import files_graph, one_changes

EDGES = "edges:\n  - {name: e, from: {kind: file, name: f0}, to: {kind: file, name: f1}}\n"


def timed(spent: list[float], call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, adding the CPU of each call to spent[-1]."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            spent[-1] += time.process_time() - start

    return wrapper


def main(count: int, rounds: int) -> None:
    import resources  # noqa: F401  (the kinds)
    from mgmt import agent, yamlgraph

    try:
        from mgmt import yamlreparse as reparsing
    except ImportError:  # a tree before 2026-12-06's seventh session (BASE): yamlgraph's
        reparsing = yamlgraph  # type: ignore[misc]

    stages = ("read", "agent._parsed", "reparse", "derive")
    spent: dict[str, list[float]] = {stage: [] for stage in ("reparse", "derive")}
    reparsing.derive = timed(spent["derive"], reparsing.derive)  # type: ignore[attr-defined]
    # The agent's (imported at its first edit from yamlreparse; an older tree's at its import)
    owner = agent if hasattr(agent, "reparse") else reparsing
    owner.reparse = timed(spent["reparse"], owner.reparse)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-yaml-cpu-") as work:
        path, files = Path(work) / "graph.yaml", Path(work) / "files"
        base = files_graph(files, count) + EDGES
        path.write_text(base)
        if reparsing is yamlgraph:  # (an older tree's)
            last = yamlgraph.load_file(path, incremental=True)  # type: ignore[call-arg]
        else:
            last = yamlgraph.load_file(path, parsing=reparsing.incremental_parse)
        figures: dict[str, dict[str, list[float]]] = {}
        full = 0
        for i in range(rounds):
            for kind, text, _shown, _content in one_changes(i, count, files, base):
                path.write_text(text)
                for stage in ("reparse", "derive"):
                    spent[stage].append(0.0)
                start = time.process_time()
                data = yamlgraph.read_limited(path)
                read = time.process_time()
                got = agent._parsed(data, path, (last.digest, ""), last)
                done = time.process_time()
                assert got.loaded is not None, got.error
                full += got.loaded.since is None
                got.loaded.digest = got.digest
                last = got.loaded
                seen = figures.setdefault(kind, {stage: [] for stage in stages})
                seen["read"].append(read - start)
                seen["agent._parsed"].append(done - read)
                seen["reparse"].append(spent["reparse"][-1])
                seen["derive"].append(spent["derive"][-1])
    for kind, seen in figures.items():
        parts = "  ".join(
            f"{stage} {statistics.median(values) * 1000:6.2f}" for stage, values in seen.items()
        )
        print(f"N={count:6d}, {kind:6s} x{len(seen['read'])}: CPU p50 ms: {parts}")
    print(f"N={count:6d}: {full} of {rounds * 8} changes parsed in full")


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])  # the tree measured: its engine and mgmt
    main(int(sys.argv[2]), int(sys.argv[3]))
