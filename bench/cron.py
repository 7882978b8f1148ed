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

Each line also gives the median of a run's voluntary context switches (all its threads, as
getrusage counts the child's: each a wait for a lock, the GIL, the disk, a thread's reply; a
no-op run of 100 files made 14-52 before 2026-12-06, second session, load-dependent, and 3
since). `--busy N` runs N busy loops beside every run (`common.busy_loops`, as
peers.py's `--busy`).

    .venv/bin/python bench/cron.py [--runs 10] [--count 100] [--base /work/main] [--busy N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    MGMT,
    ROOT,
    base_launcher,
    busy_loops,
    checkout,
    files_graph,
    make_absent,
    run_child,
    run_script,
)

Sample = tuple[float, float, float, int]  # wall, CPU, system CPU (s), voluntary switches


def timed(argv: list[str], cwd: Path) -> Sample:
    """(wall, CPU, system CPU) seconds of one whole process (exit code must be 0), and its
    voluntary context switches."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    run_child(argv, cwd)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, after.ru_stime - before.ru_stime, after.ru_nvcsw - before.ru_nvcsw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--base", type=Path, help="another checkout to compare, interleaved")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes beside it")
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
        samples: dict[tuple[str, str], list[Sample]] = {}
        for side, (mgmt, cwd) in sides.items():
            timed([*mgmt, "--version"], cwd)  # warm the page cache
            samples[(side, "start")] = []
        with busy_loops(args.busy):
            for _ in range(args.runs):
                for side, (mgmt, cwd) in sides.items():  # interleaved: this, base, this...
                    samples[(side, "start")].append(timed([*mgmt, "--version"], cwd))
                    make_absent(out, aside, args.delete_between)
                    samples.setdefault((side, "cold"), []).append(timed([*mgmt, *run], cwd))
                    samples.setdefault((side, "no-op"), []).append(timed([*mgmt, *run], cwd))
            load = os.getloadavg()[0]
        how = "deleted" if args.delete_between else "moved aside"
        beside = f", beside {args.busy} busy loops" if args.busy else ""
        print(
            f"cron run of {args.count} files, {args.runs} runs each, load {load:.1f}{beside} (the"
            f" last run's files {how} before each cold run):"
        )
        medians: dict[tuple[str, str], tuple[float, float]] = {}
        for (side, label), got in samples.items():
            wall = statistics.median(g[0] for g in got)
            cpu = statistics.median(g[1] for g in got)
            system = statistics.median(g[2] for g in got)
            switches = statistics.median(g[3] for g in got)
            medians[(side, label)] = (wall, cpu)
            print(
                f"  {side:4s} {label:5s} wall median {wall:.3f}s min {min(g[0] for g in got):.3f}s"
                f"   CPU median {cpu:.3f}s min {min(g[1] for g in got):.3f}s"
                f" (system {system:.3f}s)   voluntary switches {switches:.0f}"
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
