"""Cron mode: `mgmt run --converged-timeout=0` of N file resources, whole process: wall time
and CPU time (user + system of the child; on this shared machine the wall time mostly says how
long the process waited for a core).

Cold = the files are absent (N fsynced writes); no-op = they are all in place already.
Between runs the last run's files are moved aside, not deleted (all are deleted at the end);
`--delete-between` deletes them right before each cold run instead, as this script did before
2026-12-04: see `common.make_absent` for why that costs a new file ~O(N) more system CPU here.
`--base DIR` runs another checkout interleaved with this one, run by run, and prints the
ratios. DIR is started as this tree is (`common.base_launcher`: a copy of this tree's
`.venv/bin/mgmt` launcher pointing at DIR, with DIR's own .venv Python if it has one, else this
one's: e.g. a byte-compiled `git archive` of another commit), so both sides pay the same
start-up path (`python -m mgmt` would also run `site` and runpy: ~6 M instructions a start).

    .venv/bin/python bench/cron.py [--runs 10] [--count 100] [--base /work/main]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    MGMT,
    ROOT,
    base_launcher,
    checkout,
    files_graph,
    make_absent,
    run_child,
    run_script,
)


def timed(argv: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall, CPU, system CPU) seconds of one whole process (exit code must be 0)."""
    before, start = os.times(), time.perf_counter()
    run_child(argv, cwd)
    wall, after = time.perf_counter() - start, os.times()
    cpu = after.children_user + after.children_system
    system = after.children_system - before.children_system
    return wall, cpu - before.children_user - before.children_system, system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--base", type=Path, help="another checkout to compare, interleaved")
    parser.add_argument(
        "--delete-between",
        action="store_true",
        help="delete the last run's files right before each cold run (see above), not move them",
    )
    args = parser.parse_args()
    if args.base is not None:
        args.base = checkout(args.base, "--base")
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-cron-"))
    sides = {"this": (MGMT, ROOT)}
    if args.base is not None:
        sides["base"] = (base_launcher(args.base, work / "base-mgmt"), args.base)
    try:
        graph = work / "graph.yaml"
        out = work / "files"
        graph.write_text(files_graph(out, args.count))
        run = ["run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", "yaml", str(graph)]
        aside = work / "aside"
        samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for side, (mgmt, cwd) in sides.items():
            timed([*mgmt, "--version"], cwd)  # warm the page cache
            samples[(side, "start")] = []
        for _ in range(args.runs):
            for side, (mgmt, cwd) in sides.items():  # interleaved: this, base, this, base...
                samples[(side, "start")].append(timed([*mgmt, "--version"], cwd))
                make_absent(out, aside, args.delete_between)
                samples.setdefault((side, "cold"), []).append(timed([*mgmt, *run], cwd))
                samples.setdefault((side, "no-op"), []).append(timed([*mgmt, *run], cwd))
        load = os.getloadavg()[0]
        how = "deleted" if args.delete_between else "moved aside"
        print(
            f"cron run of {args.count} files, {args.runs} runs each, load {load:.1f} (the last"
            f" run's files {how} before each cold run):"
        )
        medians: dict[tuple[str, str], tuple[float, float]] = {}
        for (side, label), got in samples.items():
            wall = statistics.median(w for w, _, _ in got)
            cpu = statistics.median(c for _, c, _ in got)
            system = statistics.median(s for _, _, s in got)
            medians[(side, label)] = (wall, cpu)
            print(
                f"  {side:4s} {label:5s} wall median {wall:.3f}s min {min(w for w, _, _ in got):.3f}s"
                f"   CPU median {cpu:.3f}s min {min(c for _, c, _ in got):.3f}s"
                f" (system {system:.3f}s)"
                + ("   (start = mgmt --version)" if label == "start" else "")
            )
        if "base" in sides:
            for label in ("start", "cold", "no-op"):
                (tw, tc), (bw, bc) = medians[("this", label)], medians[("base", label)]
                print(f"  this/base {label:5s} wall {tw / bw:.2f}  CPU {tc / max(bc, 1e-9):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
