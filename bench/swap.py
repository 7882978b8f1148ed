"""Graph swap: edit ONE resource of an N-resource graph file while the daemon runs; time from
the graph file's rename until the edited resource's file has its new content (inotify).

The cost should grow with the size of the change, not with N (target: <= 50 ms for N=10,000).

    .venv/bin/python bench/swap.py [--sizes 1000 10000] [--count 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import MGMT, ROOT, files_graph, fmt_ms, percentiles

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher


def has(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except OSError:
        return False


async def until(watcher: PathWatcher, path: Path, content: str) -> None:
    async with asyncio.timeout(120):
        if has(path, content):
            return
        async for _ in watcher:
            if has(path, content):
                return


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


async def one(count: int, edits: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-"))
    graph, files = work / "graph.yaml", work / "files"
    base = files_graph(files, count)
    graph.write_text(base)
    target = files / f"f{count // 2}"
    old_line = f'"file number {count // 2}\\n"'
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "yaml", str(graph), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(600):
            async for raw in proc.stderr:
                if b"converged: all" in raw:
                    break
        reader = asyncio.create_task(proc.stderr.read())  # keep the pipe drained
        samples = []
        async with PathWatcher([target]) as watcher:
            for i in range(edits):
                content = f"edit {i}\n" if i % 2 == 0 else f"file number {count // 2}\n"
                text = base.replace(old_line, '"' + content.replace("\n", "\\n") + '"')
                start = time.perf_counter()
                await asyncio.to_thread(write_atomically, graph, text)
                await until(watcher, target, content)
                samples.append(time.perf_counter() - start)
        print(
            f"N={count:6d}, edit one resource x{edits}: {fmt_ms(percentiles(samples))}"
            f"  (load {os.getloadavg()[0]:.1f}; target <= 50 ms at N=10,000)"
        )
        reader.cancel()
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    for count in args.sizes:
        await one(count, args.count)


if __name__ == "__main__":
    asyncio.run(main())
