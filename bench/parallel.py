"""Parallelism: a diamond of `exec sleep` (a -> b, c -> d) plus an independent branch e.

Prints the engine's wall time (first command start to last command end) and the whole process
time, each divided by the critical path (a + max(b, c) + d). Target: <= 1.05.

    .venv/bin/python bench/parallel.py [--step 1.0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import run_script, timed_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", type=float, default=1.0, help="seconds each command sleeps")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-parallel-"))
    try:
        lines = ["graph: diamond", "resources:", "  exec:"]
        sleeps = {
            "a": args.step,
            "b": args.step,
            "c": args.step,
            "d": args.step,
            "e": 2 * args.step,
        }
        for name, secs in sleeps.items():
            script = (
                f"date +%s.%N > {work}/{name}.start; sleep {secs}; date +%s.%N > {work}/{name}.end"
            )
            lines += [f"    - name: {name}", "      shell: /bin/sh", f'      cmd: "{script}"']
        lines.append("edges:")
        for src, dst in ("ab", "ac", "bd", "cd"):
            lines.append(
                f"  - {{name: {src}{dst}, from: {{kind: exec, name: {src}}}, "
                f"to: {{kind: exec, name: {dst}}}}}"
            )
        graph = work / "graph.yaml"
        graph.write_text("\n".join(lines) + "\n")
        start = time.time()
        wall = timed_run(["run", "--converged-timeout=0", "--tmp-prefix", "--no-watch", str(graph)])
        starts = [float((work / f"{n}.start").read_text()) for n in sleeps]
        ends = [float((work / f"{n}.end").read_text()) for n in sleeps]
        critical = 3 * args.step
        serial = sum(sleeps.values())
        engine = max(ends) - min(starts)
        print(f"critical path {critical:.2f}s, serial sum {serial:.2f}s")
        print(
            f"engine (first start -> last end): {engine:.3f}s  ratio {engine / critical:.3f}  (target <= 1.05)"
        )
        print(
            f"whole process: {wall:.3f}s  ratio {wall / critical:.3f}  (startup {min(starts) - start:.3f}s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_script(main)
