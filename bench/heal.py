"""Heal: N file resources on a full file system (a tmpfs filled to its last block, ENOSPC), in
one daemon: the CPU it uses while they fail (the checks on its own, engine.heal: 1 s after the
failures, then doubling), and once the space is freed, how long until every one is repaired
without an event or a reload. An agent without the heal (BASE) stays failed: its figure is
`not in Ns`. Needs root (mount).

    .venv/bin/python bench/heal.py [--count 10000] [--window 40] [--base DIR] [--rounds N]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Parser, checkout, files_graph, run_script, seconds, terminate, whole
from scale import cpu_seconds

RECOVER_WAIT = 60.0  # seconds to wait for every repair once the space is freed


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)


async def one(count: int, window: float, tree: Path) -> str:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-heal-"))
    mnt = work / "m"
    mnt.mkdir()
    size = count * 8 // 1024 + 8  # MiB: a page per file (twice over: spares), and room
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}m,nr_inodes={count * 4}", "tmpfs", str(mnt)]
    await asyncio.to_thread(subprocess.run, mount, check=True, timeout=30)
    proc = None
    try:
        (mnt / "fill").mkdir()
        fill(mnt / "fill" / "big")
        graph = work / "graph.yaml"
        graph.write_text(files_graph(mnt / "files", count))
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "mgmt", "run", "--tmp-prefix", "yaml", str(graph)],
            stderr=asyncio.subprocess.PIPE,
            cwd=tree,
        )
        assert proc.stderr is not None
        failed = recovered = 0
        async with asyncio.timeout(600):
            while failed < count:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError("the agent ended before its files failed")
                failed += b"]: failed: " in line
        before = cpu_seconds(proc.pid)
        lines: list[bytes] = []
        news = asyncio.Event()
        reader = asyncio.create_task(_read(proc.stderr, lines, news))
        await asyncio.sleep(window)  # failing: what the agent uses meanwhile
        failing_cpu = cpu_seconds(proc.pid) - before
        said = sum(b"failed" in line for line in lines)
        os.unlink(mnt / "fill" / "big")
        start = time.perf_counter()
        took = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECOVER_WAIT):
                while True:
                    recovered = sum(b"]: recovered" in line for line in lines)
                    if recovered >= count:
                        took = time.perf_counter() - start
                        break
                    news.clear()
                    await news.wait()
        reader.cancel()
        healed = (
            f"all repaired {took:.1f}s after"
            if took
            else f"{recovered} repaired in {RECOVER_WAIT:g}s after"
        )
        return (
            f"CPU {failing_cpu:.2f}s in {window:g}s while failing ({said} more lines), "
            f"{healed} the space was freed"
        )
    finally:
        await terminate([proc] if proc else [])
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mnt)], check=False, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


async def _read(stream: asyncio.StreamReader, lines: list[bytes], news: asyncio.Event) -> None:
    async for line in stream:
        lines.append(line)
        news.set()


async def main() -> None:
    parser = Parser()
    parser.add_argument("--count", type=whole(1), default=10000)
    parser.add_argument("--window", type=seconds, default=40.0)
    parser.add_argument("--base", type=Path, help="another checkout, measured alternately")
    parser.add_argument("--rounds", type=whole(1), default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (it mounts a tmpfs)")
    trees = [("this", ROOT)]
    if args.base is not None:
        trees.append(("BASE", checkout(args.base, "--base")))
        print(f"BASE: {trees[1][1]}")
    for _ in range(args.rounds):
        for name, tree in trees:
            figures = await one(args.count, args.window, tree)
            load = os.getloadavg()[0]
            print(f"N={args.count:6d} {name}: {figures}  (load {load:.1f})", flush=True)


if __name__ == "__main__":
    run_script(main)
