"""Graph swap: change ONE resource of an N-resource graph file while the daemon runs, and time
from the graph file's rename until the change is done:

- edit: a resource's content changes -> its file has the new content (inotify);
- add: a resource is inserted in the middle of the list -> its file exists with its content;
- remove: that resource is removed again -> the daemon logged the swap (a file that leaves the
  graph stays on disk, so only the log tells);
- rename: a resource's name and path change -> the new file has its content (and back:
  the daemon logged the swap).
- edge+ / edge-: an edge between two resources is added to the graph file's `edges` list, then
  removed -> the daemon logged the swap (the file already has an edge, so the list is there).

Edits go there and back too (the second restores the original content).

With --lang, the same N files come from a program (a `for` over iter.range(N)) instead, and one
of them depends on a file the program reads (os.readfile): the time is from that file's change
to the resource's file on disk, through the function graph, a new graph of N resources, and the
swap (the language's graph stream). Every other change also adds an edge to that resource (an
`if` on the value: `edge+`), and the next one removes it (`edge-`).

The cost should grow with the size of the change, not with N (target: <= 50 ms for N=10,000).
Each figure is printed with the load average (the machine is shared: compare in one run).

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
from collections.abc import Awaitable, Callable
from pathlib import Path

from common import MGMT, ROOT, files_graph, fmt_ms, percentiles, run_script

sys.path.insert(0, str(ROOT))
from engine.watcher import PathWatcher

Done = Callable[[int], Awaitable[None]]  # given the swaps logged before the change


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


def block(name: str, path: Path, content: str) -> str:
    """One file resource as files_graph() writes them."""
    escaped = content.replace("\n", "\\n")
    return f'    - name: {name}\n      path: {path}\n      content: "{escaped}"\n'


class Daemon:
    """`mgmt run` on a graph file; its log lines counted as they come (stderr drained)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.swaps = 0
        self.swapped = asyncio.Event()
        self.converged = asyncio.Event()

    async def read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            if b"converged: all" in raw:
                self.converged.set()
            if b"graph swap:" in raw:
                self.swaps += 1
                self.swapped.set()

    async def next_swap(self, seen: int) -> None:
        async with asyncio.timeout(120):
            while self.swaps <= seen:
                self.swapped.clear()
                await self.swapped.wait()


async def one(count: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-"))
    graph, files = work / "graph.yaml", work / "files"
    mid = count // 2
    edges = "edges:\n  - {name: e, from: {kind: file, name: f0}, to: {kind: file, name: f1}}\n"
    base = files_graph(files, count) + edges
    graph.write_text(base)
    edge = f"  - {{from: {{kind: file, name: f{mid - 1}}}, to: {{kind: file, name: f{mid}}}}}\n"
    target, old = files / f"f{mid}", block(f"f{mid}", files / f"f{mid}", f"file number {mid}\n")
    added, renamed = files / "added", files / "renamed"
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "yaml", str(graph), stderr=asyncio.subprocess.PIPE
    )
    daemon = Daemon(proc)
    samples: dict[str, list[float]] = {
        kind: [] for kind in ("edit", "add", "remove", "rename", "edge+", "edge-")
    }
    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(daemon.read())
            async with asyncio.timeout(600):
                await daemon.converged.wait()
            async with PathWatcher([target, added, renamed]) as watcher:

                async def step(kind: str, text: str, done: Done) -> None:
                    seen = daemon.swaps
                    start = time.perf_counter()
                    await asyncio.to_thread(write_atomically, graph, text)
                    await done(seen)
                    samples[kind].append(time.perf_counter() - start)
                    await daemon.next_swap(seen)  # settled before the next step

                def on_disk(path: Path, content: str) -> Done:
                    return lambda _seen: until(watcher, path, content)

                original = f"file number {mid}\n"
                for i in range(rounds):
                    edited = base.replace(old, block(f"f{mid}", target, f"edit {i}\n"))
                    await step("edit", edited, on_disk(target, f"edit {i}\n"))
                    await step("edit", base, on_disk(target, original))
                    plus = base.replace(old, old + block("added", added, f"added {i}\n"))
                    await step("add", plus, on_disk(added, f"added {i}\n"))
                    await step("remove", base, daemon.next_swap)
                    moved = base.replace(old, block(f"r{mid}", renamed, f"renamed {i}\n"))
                    await step("rename", moved, on_disk(renamed, f"renamed {i}\n"))
                    await step("rename", base, daemon.next_swap)  # f{mid} is on disk already
                    await step("edge+", base + edge, daemon.next_swap)
                    await step("edge-", base, daemon.next_swap)
            reader.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for kind, values in samples.items():
        print(
            f"N={count:6d}, {kind:6s} one resource x{len(values)}: {fmt_ms(percentiles(values))}"
            f"  (load {os.getloadavg()[0]:.1f})"
        )


PROGRAM = """
import "fmt"
import "iter"
import "os"
$value = os.readfile("{input}")
for $i, $n in iter.range({count}) {{
	file fmt.printf("{files}/f%d", $n) {{
		content => if $n == {mid} {{ "seen ${{value}}" }} else {{ fmt.printf("file %d", $n) }},
	}}
}}
noop "anchor" {{}}
if len($value) > 5 {{
	Noop["anchor"] -> File["{files}/f{mid}"]
}}
"""
# The values written, round i: a value change only, one that adds the edge, one that removes it.
STEPS = (("value", "{i}"), ("edge+", "edge-{i}"), ("edge-", "{i}-"))


async def lang(count: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-"))
    files, source, program = work / "files", work / "input", work / "main.mcl"
    source.write_text("0")
    mid = count // 2
    target = files / f"f{mid}"
    program.write_text(PROGRAM.format(input=source, count=count, files=files, mid=mid))
    proc = await asyncio.create_subprocess_exec(
        *MGMT, "run", "--tmp-prefix", "lang", str(program), stderr=asyncio.subprocess.PIPE
    )
    daemon = Daemon(proc)
    samples: dict[str, list[float]] = {kind: [] for kind, _ in STEPS}
    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(daemon.read())
            async with asyncio.timeout(600):
                await daemon.converged.wait()
            async with PathWatcher([target]) as watcher:
                for i in range(1, rounds + 1):
                    for kind, pattern in STEPS:
                        value = pattern.format(i=i)
                        seen = daemon.swaps
                        start = time.perf_counter()
                        await asyncio.to_thread(write_atomically, source, value)
                        await until(watcher, target, f"seen {value}")
                        samples[kind].append(time.perf_counter() - start)
                        await daemon.next_swap(seen)
            reader.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    for kind, values in samples.items():
        print(
            f"N={count:6d}, lang {kind:6s} x{len(values)}: {fmt_ms(percentiles(values))}"
            f"  (load {os.getloadavg()[0]:.1f})"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--count", type=int, default=20, help="rounds of the four changes")
    parser.add_argument("--lang", action="store_true", help="from a program instead")
    args = parser.parse_args()
    for count in args.sizes:
        await (lang if args.lang else one)(count, args.count)


if __name__ == "__main__":
    run_script(main)
