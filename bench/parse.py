"""In-process CPU time of the YAML front-end and the engine's preparation for a graph file of N
file resources (files_graph()): parse() (as a cron run does, and incremental, as the daemon
does), the automatic edges, groups and cycle check of Engine.prepare(), and reparse() of an
edit of one resource and of an edit in the `edges` list (one edge added, then removed).

CPU time of this process (time.process_time(), so a busy machine's waits do not count), the
cycle collector paused as the agent pauses it; the minimum and median of --runs are printed.
For another checkout, put it first on the path:

    .venv/bin/python bench/parse.py [--count 10000] [--runs 5]
    PYTHONPATH=DIR .venv/bin/python bench/parse.py
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, files_graph, run_script

sys.path.append(str(ROOT))  # after PYTHONPATH: `PYTHONPATH=DIR` measures DIR
import resources  # noqa: F401  # registers the kinds' loader
from engine.autoedge import AutoIndex, add_autoedges
from engine.autogroup import autogroup
from mgmt import yamlgraph

try:
    from mgmt import yamlreparse as reparsing

    incremental_parse = reparsing.incremental_parse
except ImportError:  # a tree before 2026-12-06's seventh session: yamlgraph's
    reparsing = yamlgraph  # type: ignore[misc]

    def incremental_parse(text: str | bytes, filename: str = "<graph>") -> yamlgraph.Loaded:
        return yamlgraph.parse(text, filename, incremental=True)  # type: ignore[call-arg]


def cpu(step: Callable[[], object], runs: int) -> list[float]:
    """CPU seconds of `step`, `runs` times, the collector paused."""
    out = []
    for _ in range(runs):
        gc.disable()
        start = time.process_time()
        step()
        out.append(time.process_time() - start)
        gc.enable()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    edge = "edges:\n  - {name: e, from: {kind: file, name: f0}, to: {kind: file, name: f1}}\n"
    text = (files_graph(Path("/tmp/mgmt-bench-parse"), args.count) + edge).encode()
    mid = args.count // 2
    edited = text.replace(f'"file number {mid}\\n"'.encode(), b'"edited\\n"')
    more = f"  - {{from: {{kind: file, name: f{mid - 1}}}, to: {{kind: file, name: f{mid}}}}}\n"
    wired = text + more.encode()
    last = incremental_parse(text, "g.yaml")

    def prepare() -> None:
        graph = last.graph.copy()
        add_autoedges(graph, AutoIndex())
        autogroup(graph)
        graph.check()

    def reparse(one: bytes, two: bytes) -> Callable[[], object]:
        def step() -> None:  # there and back, from what the last parse kept
            reparsing.reparse(two, "g.yaml", reparsing.reparse(one, "g.yaml", last))

        return step

    steps: dict[str, Callable[[], object]] = {
        "parse (cron)": lambda: yamlgraph.parse(text, "g.yaml"),
        "parse (incremental)": lambda: incremental_parse(text, "g.yaml"),
        "prepare (autoedges, groups, check)": prepare,
        "reparse: one resource edited, x2": reparse(edited, text),
        "reparse: one edge added, removed": reparse(wired, text),
    }
    where = Path(yamlgraph.__file__).resolve().parents[1]
    print(f"{args.count} file resources, {where}, load {os.getloadavg()[0]:.1f}, CPU:")
    for label, step in steps.items():
        got = cpu(step, args.runs)
        print(
            f"  {label:36s} min {min(got) * 1000:8.1f} ms  median {statistics.median(got) * 1000:8.1f} ms"
        )


if __name__ == "__main__":
    run_script(main)
