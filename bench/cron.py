"""Cron mode: `mgmt run --converged-timeout=0` of 100 file resources, whole-process wall time.

Cold = the files are absent (100 writes); no-op = they are all in place already.
Target: <= 0.25 s (ten times faster than the fastest peer tool measured here, salt-call).

    .venv/bin/python bench/cron.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from common import files_graph, timed_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-cron-"))
    try:
        graph = work / "graph.yaml"
        out = work / "files"
        graph.write_text(files_graph(out, args.count))
        run = ["run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", "yaml", str(graph)]
        timed_run(["--version"])  # warm the page cache
        startup = [timed_run(["--version"]) for _ in range(args.runs)]
        cold, noop = [], []
        for _ in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            cold.append(timed_run(run))
            noop.append(timed_run(run))
        print(f"cron run of {args.count} files, {args.runs} runs each (whole process):")
        print(
            f"  interpreter + CLI start (mgmt --version): median {statistics.median(startup):.3f}s"
        )
        for label, samples in (("cold", cold), ("no-op", noop)):
            print(
                f"  {label:6s} median {statistics.median(samples):.3f}s  "
                f"min {min(samples):.3f}s  max {max(samples):.3f}s  (target <= 0.250s)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
