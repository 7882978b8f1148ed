"""One-resource changes of an N-file graph in one process, timed in CPU (the machine's load
left out): `bench/swap.py --cpu` runs this in each tree it compares.

An engine with what the agent hangs on it (the converger, the status model, metrics, the
heap's freezer) runs N file resources; then each change is derived from the last graph as the
front-ends do (`engine.derive.derive`, applied with its `since`): an edit, an add, a remove, a
rename, an edge added and removed, `--count` rounds. Printed per change: the CPU of
`Engine.apply` (p50 and max), and the longest step of the loop in CPU (time.thread_time
between two turns of a callback rescheduled each step) from the apply to 1 s after the graph
converged again; then the status snapshot's (`StatusModel.encoded`, or the JSON made at once
by a tree without it).

    python bench/swap_cpu.py TREE N COUNT
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


class Steps:
    """The longest step of the loop, in the CPU time of its thread, since `reset()`."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.longest = 0.0
        self.last = time.thread_time()
        self.handle = self.loop.call_soon(self.tick)

    def tick(self) -> None:
        now = time.thread_time()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        self.handle = self.loop.call_soon(self.tick)

    def reset(self) -> None:
        self.longest, self.last = 0.0, time.thread_time()


async def snapshot(model: Any, probe: Steps, count: int) -> None:
    """The status snapshot's CPU, and the loop's longest step meanwhile."""
    model._changes += 1  # a fresh snapshot
    probe.reset()
    start = time.process_time()
    encoded = getattr(model, "encoded", None)
    if encoded is not None:
        await encoded()
    else:  # a tree without it: made at once
        model.snapshot_json()
    took = time.process_time() - start
    await asyncio.sleep(0)  # the probe's turn: its step ended with the snapshot's
    print(
        f"N={count:6d}, status snapshot: CPU {ms(took)}, "
        f"the loop's longest step {ms(probe.longest)} CPU"
    )


def files(work: Path, count: int) -> Any:
    """A graph of `count` file resources under `work`/files."""
    from engine.graph import Graph
    from resources.file import FileRes

    graph = Graph("big")
    for i in range(count):
        graph.add(FileRes(name=f"f{i}", path=f"{work}/files/f{i}", content=f"file {i}\n"))
    return graph


async def converged(engine: Any, graph: Any, converger: Any, heap: Any) -> Any:
    """`graph` applied and converged, what lives then frozen (the agent's FrozenHeap)."""
    await engine.apply(graph)
    await settled(converger, heap, 0)
    return graph


async def settled(converger: Any, heap: Any, pause: float) -> None:
    """Until the graph has converged, what lives then frozen (the agent's FrozenHeap), and
    `pause` s more."""
    await converger.converged.wait()
    heap.converged()
    await asyncio.sleep(pause)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main(count: int, rounds: int) -> None:
    import resources  # noqa: F401  (the kinds)

    try:
        from engine.derive import Change, derive
    except ImportError:  # a tree before 2026-12-06's seventh session (BASE): engine.graph's
        from engine.graph import Change, derive  # type: ignore[attr-defined,no-redef]
    from engine.engine import Engine
    from engine.graph import Edge
    from engine.heap import FrozenHeap
    from mgmt.converger import Converger
    from mgmt.metrics import Metrics
    from mgmt.status.model import StatusModel
    from resources.file import FileRes

    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-swap-cpu-"))
    try:
        engine = Engine(hostname="bench", prefix=work / "prefix")
        converger, model = Converger(engine, 0.05), StatusModel(engine, "bench")
        metrics = Metrics(engine)
        metrics.start()
        heap = FrozenHeap(engine)
        graph = await converged(engine, files(work, count), converger, heap)
        mid = count // 2
        key, prev = ("file", f"f{mid}"), ("file", f"f{mid - 1}")
        added, renamed = ("file", "added"), ("file", "renamed")

        def file(name: str, path: str, content: str) -> Any:
            return FileRes(name=name, path=f"{work}/files/{path}", content=content)

        cpu: dict[str, list[float]] = {}
        steps: dict[str, float] = {}
        probe = Steps()
        for i in range(rounds):
            changes = [
                ("edit", Change(put={key: file(key[1], f"f{mid}", f"edit {i}\n")})),
                ("add", Change(put={added: file("added", "added", f"added {i}\n")})),
                ("remove", Change(remove={added})),
                ("rename", Change(remove={key}, put={renamed: file("renamed", f"f{mid}", "r\n")})),
                ("rename", Change(remove={renamed}, put={key: file(key[1], f"f{mid}", "b\n")})),
                ("edge+", Change(connect=[(prev, key, Edge())])),
                ("edge-", Change(disconnect=[(prev, key)])),
            ]
            for kind, change in changes:
                derived = derive(graph, change)
                probe.reset()
                start = time.process_time()
                await engine.apply(derived.graph, (derived.base, derived.touched))
                cpu.setdefault(kind, []).append(time.process_time() - start)
                graph = derived.graph
                await settled(converger, heap, 1)
                steps[kind] = max(steps.get(kind, 0.0), probe.longest)
        for kind, values in cpu.items():
            values.sort()
            print(
                f"N={count:6d}, {kind:6s} x{len(values)}: apply CPU p50 {ms(values[len(values) // 2])}"
                f" max {ms(values[-1])}, the loop's longest step {ms(steps[kind])} CPU"
            )
        await snapshot(model, probe, count)
        probe.handle.cancel()
        await engine.stop(graceful=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the files and the prefix: never left behind


def child(main: Callable[[int, int], Coroutine[Any, Any, None]]) -> None:
    """A script of one tree's figures, run as `TREE N COUNT`: `main(N, COUNT)` with TREE's
    engine and mgmt (first on the path)."""
    sys.path.insert(0, sys.argv[1])
    asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))


if __name__ == "__main__":
    child(main)
