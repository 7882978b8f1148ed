"""A drift's repair of a resource that has converged before goes ahead of the first checks
still queued (a first run's, a swap's: engine.slots' urgent lane), and they all still run.

A real engine, the real file kind on tmp_path, real inotify; one check slot, so that the first
run's checks queue behind each other as thousands do behind `check_limit()` slots.
"""

from __future__ import annotations

from pathlib import Path

from engine.engine import Engine
from engine.events import CheckApplied
from engine.graph import Graph
from resources.file import FileRes
from tests.engine.conftest import settle

N = 2000


async def test_a_drift_is_repaired_ahead_of_the_first_checks_still_queued(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    graph = Graph("files")
    for i in range(N):
        graph.add(FileRes(name=f"f{i}", path=f"{out}/f{i}", content=f"number {i}\n"))
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
