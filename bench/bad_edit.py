"""A bad edit of ONE resource in the middle of an N-resource graph file while the daemon runs:
the time from the graph file's rename to the agent's refusal (its `keeping the running graph`
line, after the error's), for each kind of mistake; then the good file is written back and the
agent's `back to the running graph` line awaited before the next edit (an order, no sleep).

- key: an unknown key (`pth:` for `path:`);
- type: a value of the wrong type (`mode: [1]`);
- syntax: a YAML syntax error (`content: a: b`);
- edge: an edge to a resource that is not in the graph (the file's `edges` list);
- dup: a resource renamed to the name another has (involves two resources: a full parse tells
  it, in both trees; a reference);
- good: for comparison, a good edit (that resource's content) timed to the agent's `graph swap:`
  line (its engine's swap done), then the file written back (awaited: the next swap line).

Since 2026-12-06 (issue 16) the first four are refused from the edited items alone (O(change));
before, every refusal was a full parse of the file. `--base DIR` runs another checkout's agent
beside this one's on the same graph (each its own files): the edits alternate between the two,
this tree's first then BASE's, round after round. Each line gives p50, spread and the load.

    .venv/bin/python bench/bad_edit.py [--sizes 10000 100000] [--count 5] [--base DIR]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    MGMT,
    Parser,
    base_launcher,
    checkout,
    files_graph,
    one_file,
    run_script,
    terminate,
    whole,
)

REFUSED = b"keeping the running graph"
BACK = b"graph file is back to the running graph"
SWAP = b"graph swap:"


def edits(count: int, files: Path) -> dict[str, Callable[[str], str]]:
    """Each kind of bad edit of the graph of `count` files, as a change of its text."""
    mid = count // 2
    old = one_file(f"f{mid}", files / f"f{mid}", f"file number {mid}\n")
    return {
        "key": lambda t: t.replace(old, old.replace("      path:", "      pth:")),
        "type": lambda t: t.replace(old, old + "      mode: [1]\n"),
        "syntax": lambda t: t.replace(old, old.replace('content: "', 'content: a: "')),
        "edge": lambda t: t.replace("name: f1}}", "name: nope}}"),
        "dup": lambda t: t.replace(old, old.replace(f"name: f{mid}\n", f"name: f{mid + 1}\n")),
        "good": lambda t: t.replace(old, old.replace(f"number {mid}", "edited")),
    }


class Agent:
    """`mgmt run` on its own graph file; the lines that matter here, counted as they come."""

    def __init__(self, name: str, mgmt: list[str], work: Path, count: int) -> None:
        self.name, self.mgmt, self.work = name, mgmt, work
        self.graph, self.files = work / "graph.yaml", work / "files"
        edge = "edges:\n  - {name: e, from: {kind: file, name: f0}, to: {kind: file, name: f1}}\n"
        self.good = files_graph(self.files, count) + edge
        self.bad = {kind: edit(self.good) for kind, edit in edits(count, self.files).items()}
        self.seen: dict[bytes, int] = {b"converged: all": 0, REFUSED: 0, BACK: 0, SWAP: 0}
        self.changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.graph.write_text(self.good)
        self.proc = await asyncio.create_subprocess_exec(
            *self.mgmt,
            "run",
            "--prefix",
            str(self.work / "prefix"),
            "yaml",
            str(self.graph),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            for text in self.seen:
                if text in raw:
                    self.seen[text] += 1
                    self.changed.set()

    async def until(self, text: bytes, count: int, timeout: float = 1800) -> None:
        async with asyncio.timeout(timeout):
            while self.seen[text] < count:
                self.changed.clear()
                await self.changed.wait()

    async def refusal(self, kind: str) -> float:
        """Seconds from the bad file's rename to the refusal (a good one's: to its swap); then
        the good file back."""
        said, back = (SWAP, SWAP) if kind == "good" else (REFUSED, BACK)
        count = self.seen[said]
        start = time.perf_counter()
        await asyncio.to_thread(write_atomically, self.graph, self.bad[kind])
        await self.until(said, count + 1, timeout=600)
        took = time.perf_counter() - start
        count = self.seen[back]
        await asyncio.to_thread(write_atomically, self.graph, self.good)
        await self.until(back, count + 1, timeout=600)
        return took


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


async def size(count: int, rounds: int, trees: list[tuple[str, list[str]]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-bad-edit-"))
    agents = [Agent(name, mgmt, work / name, count) for name, mgmt in trees]
    try:
        async with asyncio.TaskGroup() as group:
            readers = []
            for agent in agents:
                agent.work.mkdir()
                await agent.start()
                readers.append(group.create_task(agent.read()))
                await agent.until(b"converged: all", 1)  # one first run at a time
            took: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for kind in agents[0].bad:
                    for agent in agents:  # interleaved: this tree's, then BASE's
                        took.setdefault((kind, agent.name), []).append(await agent.refusal(kind))
            for reader in readers:
                reader.cancel()
    finally:
        await terminate([agent.proc for agent in agents if agent.proc is not None])
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    for (kind, name), values in took.items():
        ms = sorted(v * 1000 for v in values)
        print(
            f"N={count:6d} {name:4s} {kind:6s} x{len(ms)}: p50 {statistics.median(ms):8.1f} ms"
            f"  (min {ms[0]:.1f}, max {ms[-1]:.1f})  load {load:.1f}",
            flush=True,
        )


async def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=whole(2), nargs="+", default=[10000, 100000])
    parser.add_argument("--count", type=whole(1), default=5, help="rounds of the edits")
    parser.add_argument("--base", type=Path, help="another checkout, run beside this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-bad-edit-") as where:
        trees = [("this", MGMT)]
        if args.base is not None:
            base = checkout(args.base, "--base")
            trees.append(("BASE", base_launcher(base, Path(where) / "mgmt-base")))
            print(f"BASE: {base}", file=sys.stderr)
        for count in args.sizes:
            await size(count, args.count, trees)


if __name__ == "__main__":
    run_script(main)
