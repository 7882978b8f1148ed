"""Scale: N file resources in one daemon: time to first convergence, peak RSS, and CPU used
while idle for 10 s after convergence (target ~0: event-driven, no polling).

    .venv/bin/python bench/scale.py [--sizes 1000 10000] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import MGMT, files_graph, run_script, terminate

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(count: int, idle: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-scale-"))
    graph = work / "graph.yaml"
    graph.write_text(files_graph(work / "files", count))
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "yaml", str(graph), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(600):
            async for raw in proc.stderr:
                if b"converged: all" in raw:
                    break
        converged = time.perf_counter() - start
        reader = asyncio.create_task(proc.stderr.read())  # keep the pipe drained
        before = cpu_seconds(proc.pid)
        await asyncio.sleep(idle)
        idle_cpu = cpu_seconds(proc.pid) - before
        print(
            f"N={count:6d}: first convergence {converged:.2f}s  peak RSS {peak_rss_mib(proc.pid):.0f} MiB  "
            f"idle CPU {idle_cpu:.3f}s over {idle:.0f}s ({100 * idle_cpu / idle:.2f}%)"
        )
        reader.cancel()
    finally:
        await terminate([proc])
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    for count in args.sizes:
        await one(count, args.idle)


if __name__ == "__main__":
    run_script(main)
