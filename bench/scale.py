"""Scale: N file resources in one daemon: time to first convergence, peak RSS, CPU used
while idle in two windows of 10 s after convergence (target ~0: event-driven, no polling),
and the stop: SIGTERM to exit, wall and CPU (the process's CPU from the signal to its end).

Since 2026-12-06 a daemon makes spares of small files once converged (resources/_lib/
spare.py: at most 2,048, ~0.5 s of CPU at 10,000 files, once): the first window holds that
work (the spares the agent holds at its end are counted: its O_TMPFILE descriptors), the
second what the agent uses idle after it.

    .venv/bin/python bench/scale.py [--sizes 1000 10000] [--idle 10] [--base DIR]
        [--rounds N] [--busy N]

`--base DIR` runs another checkout's agent (e.g. a byte-compiled `git archive`) alternately
with this one's, `--rounds` times; `--busy N` runs N busy loops beside each agent.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Parser, checkout, files_graph, run_script, seconds, terminate, whole

TICKS = os.sysconf("SC_CLK_TCK")
BUSY = "while 1: pass"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def unnamed_files(pid: int) -> int:
    """The files `pid` holds that have no name (O_TMPFILE: the file resource's spares)."""
    count = 0
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        count += target.endswith(" (deleted)") and "/#" in target
    return count


def children_cpu() -> float:
    """The CPU of every child waited for so far (the agent's, once it has ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(count: int, idle: float, tree: Path, busy: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-scale-"))
    graph = work / "graph.yaml"
    graph.write_text(files_graph(work / "files", count))
    loops: list[asyncio.subprocess.Process] = []
    proc = None
    try:
        for _ in range(busy):
            loops.append(await asyncio.create_subprocess_exec(sys.executable, "-c", BUSY))
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "yaml", str(graph)],
            stderr=asyncio.subprocess.PIPE,
            cwd=tree,  # `python -m mgmt` imports the mgmt of its directory
        )
        assert proc.stderr is not None
        async with asyncio.timeout(600):
            async for raw in proc.stderr:
                if b"converged: all" in raw:
                    break
        converged = time.perf_counter() - start
        reader = asyncio.create_task(proc.stderr.read())  # keep the pipe drained
        before = cpu_seconds(proc.pid)
        await asyncio.sleep(idle)  # a window of no change: what the agent uses in it
        first_cpu = cpu_seconds(proc.pid) - before
        spares = await asyncio.to_thread(unnamed_files, proc.pid)
        await asyncio.sleep(idle)  # and in the next one
        idle_cpu = cpu_seconds(proc.pid) - before - first_cpu
        rss = peak_rss_mib(proc.pid)
        waited = children_cpu()
        at_signal = cpu_seconds(proc.pid)
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        stop = time.perf_counter() - start
        stop_cpu = children_cpu() - waited - at_signal  # to a tick (1/TICKS s)
        await reader
        return (
            f"first convergence {converged:.2f}s  peak RSS {rss:.0f} MiB  "
            f"CPU {first_cpu:.3f}s in the first {idle:g}s after it ({spares} spares made), "
            f"idle CPU {idle_cpu:.3f}s over the next {idle:g}s "
            f"({100 * idle_cpu / (idle or 1):.2f}%)  "
            f"stop {stop:.2f}s (CPU {stop_cpu:.2f}s)"
        )
    finally:
        await terminate([*([proc] if proc else []), *loops])
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    parser = Parser()
    parser.add_argument("--sizes", type=whole(1), nargs="+", default=[1000, 10000])
    parser.add_argument("--idle", type=seconds, default=10.0)
    parser.add_argument("--base", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--rounds", type=whole(1), default=1)
    parser.add_argument("--busy", type=whole(0), default=0, help="busy loops beside each agent")
    args = parser.parse_args()
    trees = [("this", ROOT)]
    if args.base is not None:
        trees.append(("BASE", checkout(args.base, "--base")))
        print(f"BASE: {trees[1][1]}")
    for count in args.sizes:
        for _ in range(args.rounds):
            for name, tree in trees:  # interleaved: the machine's load moves
                figures = await one(count, args.idle, tree, args.busy)
                load = os.getloadavg()[0]
                print(f"N={count:6d} {name}: {figures}  (load {load:.1f})", flush=True)


if __name__ == "__main__":
    run_script(main)
