"""A drift's repair of a resource that has converged before goes ahead of the first checks
still queued (a first run's, a swap's: engine.slots' urgent lane, and its window of first
checks), and they all still run; first checks that wait for each other all run at once,
beyond the window.

A real engine, the real file and exec kinds on tmp_path, real inotify, real commands; one
check slot in the first test, so that the first run's checks queue behind each other as
thousands do behind `check_limit()` slots; the engine's own slots in the others.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.engine import FIRST_CHECKS, Engine, Status
from engine.events import CheckApplied, VertexChanged
from engine.graph import Graph
from resources.exec import ExecRes
from resources.file import FileRes
from tests.engine.conftest import settle

N = 2000


def files(out: Path, count: int) -> Graph:
    graph = Graph("files")
    for i in range(count):
        graph.add(FileRes(name=f"f{i}", path=f"{out}/f{i}", content=f"number {i}\n"))
    return graph


async def test_a_drift_is_repaired_ahead_of_the_first_checks_still_queued(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    graph = files(out, N)
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", max_checks=1)
    checked: list[str] = []
    engine.listeners.subscribe(CheckApplied, lambda e: checked.append(e.vertex.res.name))
    try:
        await engine.apply(graph)
        await settle(engine, lambda: bool(checked))
        first = checked[0]
        (out / first).unlink()  # drift of a file the run has already made
        await settle(engine, lambda: checked.count(first) == 2, timeout=60)
        repaired_at = len(checked)
        await settle(engine, timeout=120)
        assert (out / first).read_text() == f"number {first[1:]}\n"
        assert sorted(set(checked)) == sorted(f"f{i}" for i in range(N))  # all run
        # Repaired while most of the first run was still queued (before: after all of it).
        assert repaired_at < N // 2, (repaired_at, len(checked))
    finally:
        await engine.stop(graceful=False)


async def test_a_drift_during_a_first_run_is_repaired_before_it_ends(tmp_path: Path) -> None:
    """The engine's own slots (its window of first checks): a file made early in a first run
    of a few thousand, deleted once made, is made again while most of the run is to come."""
    out = tmp_path / "out"
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    checked: list[str] = []
    engine.listeners.subscribe(CheckApplied, lambda e: checked.append(e.vertex.res.name))
    try:
        await engine.apply(files(out, N))
        await settle(engine, lambda: bool(checked))
        first = checked[0]
        (out / first).unlink()
        await settle(engine, lambda: checked.count(first) == 2, timeout=60)
        repaired_at = len(checked)
        await settle(engine, timeout=120)
        assert (out / first).read_text() == f"number {first[1:]}\n"
        assert sorted(set(checked)) == sorted(f"f{i}" for i in range(N))
        assert repaired_at < N // 2, (repaired_at, len(checked))
    finally:
        await engine.stop(graceful=False)


async def test_a_drift_during_a_big_swap_is_taken_up_before_it_ends(tmp_path: Path) -> None:
    """A swap from N/2 files to N (the other N/2 on disk already): a kept file deleted as the
    swap's first checks begin is taken up (the vertex RUNNING: its check begins, its slot
    free) while most of them are to come, and made again.

    Counted where the repair's check begins: from the drift to there the loop turns a fixed
    number of times (the inotify event read, the vertex's watch, its work: 3 here), and each
    turn starts one slice of the swap's new vertices, at most twice the last
    (engine/slices.py): the count is set by turns, and a slower or loaded machine only makes
    the slices smaller (112 checks here, quiet or beside two busy loops). Not counted any more:
    the repair's own write and fsync in an I/O thread, during which the loop runs on (that is
    the point) and the first checks with it: how many fit in it was the disk's and the
    machine's speed (610 of 500 allowed once at load ~5, up to 241 here)."""
    out = tmp_path / "out"
    out.mkdir()
    for i in range(N):
        (out / f"f{i}").write_text(f"number {i}\n")
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    checked: list[str] = []
    engine.listeners.subscribe(CheckApplied, lambda e: checked.append(e.vertex.res.name))
    began: list[int] = []  # the checks run when the repair's began (after the drift)
    drifted = False

    def repair_began(event: VertexChanged) -> None:
        vertex = event.vertex
        if drifted and not began and vertex.res.name == "f0" and vertex.status is Status.RUNNING:
            began.append(len(checked) - before)

    engine.listeners.subscribe(VertexChanged, repair_began)
    try:
        await engine.apply(files(out, N // 2))
        await settle(engine, timeout=120)
        before = len(checked)
        swap = asyncio.create_task(engine.apply(files(out, N)))
        await settle(engine, lambda: len(checked) > before, timeout=60)
        (out / "f0").unlink()  # kept by the swap, converged before it
        drifted = True
        await settle(engine, lambda: "f0" in checked[before:], timeout=60)
        await swap
        await settle(engine, timeout=120)
        assert (out / "f0").read_text() == "number 0\n"
        assert sorted(set(checked[before:])) == sorted(["f0", *(f"f{i}" for i in range(N // 2, N))])
        assert began and began[0] < N // 4, (began, len(checked) - before)
    finally:
        await engine.stop(graceful=False)


async def test_first_checks_that_wait_for_each_other_run_beyond_the_window(
    tmp_path: Path,
) -> None:
    """More commands than the window lets in, each of which ends only once all have begun (as
    slow checks hold their slots: commands, the network): the window grows, all converge."""
    count = FIRST_CHECKS + 4
    began = tmp_path / "began"
    began.mkdir()
    graph = Graph("waiting")
    for i in range(count):
        wait = (
            f"touch {began}/{i}; until [ $(ls {began} | wc -l) -ge {count} ]; do sleep 0.05; done"
        )
        graph.add(ExecRes(name=f"e{i}", shell="/bin/sh", cmd=wait))
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    try:
        await engine.apply(graph)
        await settle(engine, timeout=120)
        assert all(v.status is Status.OK for v in engine.vertices.values())
        assert len(list(began.iterdir())) == count
    finally:
        await engine.stop(graceful=False)
