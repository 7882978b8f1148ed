"""Autoedges on a 10,000-file tree: time to add the automatic edges (target: well under 1 s).

.venv/bin/python bench/autoedges.py [--dirs 100 --files 99]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import run_script

import resources
from engine.engine import Engine
from engine.graph import Graph
from resources.file import FileRes


def tree(dirs: int, files: int) -> Graph:
    graph = Graph("tree")
    graph.add(FileRes(name="root", path="/srv/tree/"))
    for i in range(dirs):
        graph.add(FileRes(name=f"d{i}", path=f"/srv/tree/d{i}/"))
        for j in range(files):
            graph.add(FileRes(name=f"f{i}-{j}", path=f"/srv/tree/d{i}/f{j}", content="x"))
    return graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--files", type=int, default=99)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    resources.load_all()
    engine = Engine(hostname="bench", prefix=Path("/nonexistent"))
    times, edges = [], 0
    for _ in range(args.runs):
        graph = tree(args.dirs, args.files)
        start = time.perf_counter()
        engine.prepare(graph)
        times.append(time.perf_counter() - start)
        edges = sum(len(p) for p in graph.pred.values())
    size = 1 + args.dirs * (args.files + 1)
    print(
        f"autoedges for {size} files ({edges} edges): median {statistics.median(times):.3f}s "
        f"min {min(times):.3f}s  (target well under 1 s)"
    )


if __name__ == "__main__":
    run_script(main)
