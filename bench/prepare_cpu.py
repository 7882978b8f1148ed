"""A small change that needs the whole graph prepared again, in one process: `bench/swap.py
--prepare-cpu` runs this in each tree it compares.

An engine with the agent's converger and heap freezer runs N file resources; then, `--count`
rounds, the path of one of them is changed and changed back (derived from the last graph as
the front-ends do, applied with its `since`): what a resource manages changes, so its
automatic edges may, and the swap prepares the whole graph again (`Engine.prepare`: the
automatic edges, groups and checks of all N). Printed first: `Engine.prepare` of a copy of
the N, at once, in the CPU of the loop's thread (5 times). The graph has a directory resource
too (`files/sub/`, empty): a file added in it and removed again (`add`, `remove`) asks for an
automatic edge from it, which a full swap made by preparing the whole graph again, and the
engine now makes alone (issue 16, 2026-12-06). Then per change: the CPU from the apply to
the graph's acceptance (`accepted`: the preparation), the apply's CPU, and the loop's longest
step in CPU (bench/swap_cpu.py's probe) during the apply, and from the apply to the graph
converged again.

    python bench/prepare_cpu.py TREE N COUNT
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from swap_cpu import Steps, child, converged, files, ms, settled


async def main(count: int, rounds: int) -> None:
    import resources  # noqa: F401  (the kinds)
    from engine.engine import Engine
    from engine.graph import derive
    from engine.heap import FrozenHeap
    from mgmt.converger import Converger
    from resources.file import FileRes

    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-prepare-cpu-"))
    try:
        engine = Engine(hostname="bench", prefix=work / "prefix")
        converger, heap = Converger(engine, 0.05), FrozenHeap(engine)  # the agent's
        given = files(work, count)
        given.add(FileRes(name="sub", path=f"{work}/files/sub/", state="exists"))
        graph = await converged(engine, given, converger, heap)
        alone = []
        for _ in range(5):  # Engine.prepare of a copy, at once: the preparation's own CPU
            copy = graph.copy()
            start = time.thread_time()
            engine.prepare(copy)
            alone.append(time.thread_time() - start)
        alone.sort()
        print(f"N={count:6d}, Engine.prepare at once x5: CPU p50 {ms(alone[2])} min {ms(alone[0])}")
        mid = count // 2
        prepared: dict[str, list[float]] = {}
        applied: dict[str, list[float]] = {}
        steps: dict[str, float] = {}
        during: dict[str, float] = {}
        probe = Steps()
        for i in range(rounds):
            for kind, change in changes(work, mid, i):
                derived = derive(graph, change)
                accepted: list[float] = []
                probe.reset()
                start = time.process_time()
                await engine.apply(
                    derived.graph,
                    (derived.base, derived.touched),
                    lambda: accepted.append(time.process_time()),  # noqa: B023  (called here)
                )
                applied.setdefault(kind, []).append(time.process_time() - start)
                await asyncio.sleep(0)  # the probe's turn: its step ended with the apply's
                during[kind] = max(during.get(kind, 0.0), probe.longest)
                prepared.setdefault(kind, []).append(accepted[0] - start)
                graph = derived.graph
                await settled(converger, heap, 0.5)
                steps[kind] = max(steps.get(kind, 0.0), probe.longest)
        for kind, values in applied.items():
            values.sort()
            before = sorted(prepared[kind])
            print(
                f"N={count:6d}, {kind:6s} x{len(values)}: prepared in CPU p50 "
                f"{ms(before[len(before) // 2])}, apply CPU p50 {ms(values[len(values) // 2])} "
                f"max {ms(values[-1])}, the loop's longest step {ms(during[kind])} CPU in "
                f"the apply, {ms(steps[kind])} until converged"
            )
        probe.handle.cancel()
        await engine.stop(graceful=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the files and the prefix: never left behind


def changes(work: Path, mid: int, i: int) -> list[tuple[str, Any]]:
    """Round `i`'s changes: file `mid`'s path changed and back, a file added in `sub` and
    removed again."""
    from engine.graph import Change
    from resources.file import FileRes

    key, inside = ("file", f"f{mid}"), ("file", "inside")
    moved = FileRes(name=key[1], path=f"{work}/files/moved", content=f"moved {i}\n")
    back = FileRes(name=key[1], path=f"{work}/files/f{mid}", content=f"back {i}\n")
    new = FileRes(name=inside[1], path=f"{work}/files/sub/new", content=f"in {i}\n")
    return [
        ("move", Change(put={key: moved})),
        ("back", Change(put={key: back})),
        ("add", Change(put={inside: new})),
        ("remove", Change(remove={inside})),
    ]


if __name__ == "__main__":
    child(main)
