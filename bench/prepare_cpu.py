"""Small changes that needed the whole graph prepared again, in one process: `bench/swap.py
--prepare-cpu` runs this in each tree it compares.

An engine with the agent's converger and heap freezer runs N file resources and a directory
resource (`files/sub/`, empty), in three setups, one after the other: `files` (as the agent
runs them), `groups` (with four resources that autogroup groups into one vertex, as it groups
pkg resources: a noop kind made Groupable here, `grouping()`; a real pkg would run apt), and
`no-autoedges` (the engine's automatic edges off, `mgmt run --no-autoedges`). Then, `--count`
rounds, each setup's changes (`changes()`), derived from the last graph as the front-ends do
and applied with their `since`: a file's path changed and back, a file added in `sub` (an
automatic edge from it) and removed; a file with a semaphore (meta sema) added, another given
one, both taken back; in `groups`, a grouped resource edited, one added that joins the group
and removed again. Until 2026-12-06 each of those but the first four prepared the whole graph
again (`Engine.prepare`: the automatic edges, groups and checks of all N); the move and the
add and remove too with a group in the graph or the automatic edges off. Printed first:
`Engine.prepare` of a copy of the N, at once, in the CPU of the loop's thread (5 times). Then
per setup and change: the CPU from the apply to the graph's acceptance (`accepted`: the
preparation), the apply's CPU, and the loop's longest step in CPU (bench/swap_cpu.py's probe)
during the apply, and from the apply to the graph converged again.

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

    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-prepare-cpu-"))
    try:
        for setup in SETUPS:
            await measure(work, count, rounds, setup)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the files and the prefix: never left behind


# Each setup: its name, the engine's automatic edges, and whether the graph has a group of
# resources that autogroup groups (as it groups pkg resources: `grouping()`'s).
SETUPS = [("files", True, False), ("groups", True, True), ("no-autoedges", False, False)]
GROUPED = 4


GROUP_KIND = "benchgroup"
_GROUPING: list[Any] = []


def grouping() -> Any:
    """A noop kind that autogroup groups, all its resources in one vertex, as it groups pkg
    resources (a real pkg would run apt): registered at the first call."""
    if not _GROUPING:
        from dataclasses import dataclass

        from engine.resource import Groupable, Resource, register
        from resources.noop import NoopRes

        @register(GROUP_KIND)
        @dataclass(kw_only=True, eq=False)
        class GroupedNoop(Groupable, NoopRes):
            def group_cmp(self, other: Resource) -> bool:
                return isinstance(other, GroupedNoop)

        _GROUPING.append(GroupedNoop)
    return _GROUPING[0]


async def measure(work: Path, count: int, rounds: int, setup: tuple[str, bool, bool]) -> None:
    """One engine of N files (and the setup's extras) converged, then `rounds` rounds of the
    setup's changes, each timed."""
    try:
        from engine.derive import derive
    except ImportError:  # a tree before 2026-12-06's seventh session (BASE): engine.graph's
        from engine.graph import derive  # type: ignore[attr-defined,no-redef]
    from engine.engine import Engine
    from engine.heap import FrozenHeap
    from mgmt.converger import Converger
    from resources.file import FileRes

    name, autoedges, grouped = setup
    engine = Engine(hostname="bench", prefix=work / "prefix", autoedges=autoedges)
    converger, heap = Converger(engine, 0.05), FrozenHeap(engine)  # the agent's
    given = files(work, count)
    given.add(FileRes(name="sub", path=f"{work}/files/sub/", state="exists"))
    if grouped:
        for i in range(GROUPED):
            given.add(grouping()(name=f"t{i}"))
    graph = await converged(engine, given, converger, heap)
    if name == "files":
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
        for kind, change in changes(work, name, mid, i):
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
            f"N={count:6d}, {name}: {kind:7s} x{len(values)}: prepared in CPU p50 "
            f"{ms(before[len(before) // 2])}, apply CPU p50 {ms(values[len(values) // 2])} "
            f"max {ms(values[-1])}, the loop's longest step {ms(during[kind])} CPU in "
            f"the apply, {ms(steps[kind])} until converged"
        )
    probe.handle.cancel()
    await engine.stop(graceful=False)


def changes(work: Path, setup: str, mid: int, i: int) -> list[tuple[str, Any]]:
    """Round `i`'s changes of `setup`. files: file `mid`'s path changed and back, a file
    added in `sub` and removed again, a file with a semaphore (meta sema) added, another
    given one, both removed. groups (a group of `grouping()`'s resources in the graph, as pkg
    resources are grouped): the file added in `sub` and removed, a grouped resource edited,
    one added to the group and removed. no-autoedges: the path changed and back."""
    try:
        from engine.derive import Change
    except ImportError:  # a tree before 2026-12-06's seventh session (BASE): engine.graph's
        from engine.graph import Change  # type: ignore[attr-defined,no-redef]
    from engine.meta import Meta
    from resources.file import FileRes

    key, inside = ("file", f"f{mid}"), ("file", "inside")
    moved = FileRes(name=key[1], path=f"{work}/files/moved", content=f"moved {i}\n")
    back = FileRes(name=key[1], path=f"{work}/files/f{mid}", content=f"back {i}\n")
    new = FileRes(name=inside[1], path=f"{work}/files/sub/new", content=f"in {i}\n")
    move = [("move", Change(put={key: moved})), ("back", Change(put={key: back}))]
    add = [("add", Change(put={inside: new})), ("remove", Change(remove={inside}))]
    if setup == "no-autoedges":
        return move
    if setup == "groups":
        member, extra = (GROUP_KIND, "t2"), (GROUP_KIND, "extra")
        edited, joins = grouping()(name="t2", comment=f"edit {i}"), grouping()(name="extra")
        return [
            *add,
            ("grp-edit", Change(put={member: edited})),
            ("grp-add", Change(put={extra: joins})),
            ("grp-rm", Change(remove={extra})),
        ]
    sema = Meta(sema=["bench:2"])
    held = ("file", "held")
    holder = FileRes(name="held", path=f"{work}/files/held", content=f"h {i}\n", meta=sema)
    other = ("file", f"f{mid + 1}")
    given = FileRes(name=other[1], path=f"{work}/files/{other[1]}", content="s\n", meta=sema)
    again = FileRes(name=other[1], path=f"{work}/files/{other[1]}", content=f"file {mid + 1}\n")
    return [
        *move,
        *add,
        ("sema-add", Change(put={held: holder})),
        ("sema-set", Change(put={other: given})),
        ("sema-rm", Change(remove={held}, put={other: again})),
    ]


if __name__ == "__main__":
    child(main)
