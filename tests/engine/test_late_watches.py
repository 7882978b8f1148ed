"""A one-shot run's watches (Engine(late_watches=True), docs/engine.md): the file kind
(Listening) watches from the run's first change on, not from its start.

A real engine, the real file kind on tmp_path, real inotify (whether the loop has an inotify
instance at all: `Hub.running()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.events import CheckApplied
from engine.graph import Edge, Graph
from engine.meta import Meta
from engine.resource import Resource, register
from engine.watcher import Hub
from mgmt.converger import Converger
from resources.file import FileRes
from tests.engine.conftest import settle


def files(out: Path, names: list[str], **metas: Meta) -> Graph:
    graph = Graph("files")
    for name in names:
        meta = metas.get(name, Meta())
        graph.add(FileRes(name=name, path=f"{out}/{name}", content=f"want {name}\n", meta=meta))
    return graph


def right(out: Path, *names: str) -> None:
    out.mkdir(exist_ok=True)
    for name in names:
        (out / name).write_text(f"want {name}\n")


@pytest.fixture
async def late(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", late_watches=True)
    yield engine
    await engine.stop(graceful=False)


def checks(engine: Engine) -> dict[str, int]:
    """How many times each vertex is checked from now on (a live count)."""
    counted: dict[str, int] = {}

    def count(event: CheckApplied) -> None:
        counted[event.vertex.key[1]] = counted.get(event.vertex.key[1], 0) + 1

    engine.listeners.subscribe(CheckApplied, count)
    return counted


def watching(engine: Engine) -> dict[str, int]:
    return {key[1]: v.stats.watch_starts for key, v in engine.vertices.items()}


async def test_a_run_that_changes_nothing_watches_nothing(late: Engine, tmp_path: Path) -> None:
    """Every file right: each is checked once, none watches, and the loop has no inotify
    instance."""
    out = tmp_path / "out"
    right(out, "a", "b", "c")
    counted = checks(late)
    await late.apply(files(out, ["a", "b", "c"]))
    await settle(late)
    assert counted == {"a": 1, "b": 1, "c": 1}
    assert watching(late) == {"a": 0, "b": 0, "c": 0}
    assert Hub.running() is None


async def test_the_first_change_watches_every_file_before_it_is_made(
    late: Engine, tmp_path: Path
) -> None:
    """One file missing among right ones: its check says it is about to write it
    (Handle.changing), so every file watches from before that write, nothing having changed
    before: none is checked again; a later drift of one of them is repaired."""
    out = tmp_path / "out"
    right(out, "a", "b", "c")
    counted = checks(late)
    await late.apply(files(out, ["a", "b", "c", "d"]))
    await settle(late)
    assert (out / "d").read_text() == "want d\n"
    assert watching(late) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert Hub.running() is not None
    assert counted == {"a": 1, "b": 1, "c": 1, "d": 1}
    (out / "a").write_text("drift\n")
    await settle(late, lambda: (out / "a").read_text() == "want a\n")


@register("lateprobe")
@dataclass(kw_only=True, eq=False)
class LateProbe(Resource):
    """A kind that changes a file without saying so before (no apply_steps, no
    Handle.changing), as some kinds' own code does: it writes `text` into `path` once."""

    # The file it writes (once). Default: none (nothing to do).
    path: str = ""
    # What it writes there. Default: empty.
    text: str = ""

    async def check_apply(self, apply: bool) -> bool:
        return await asyncio.to_thread(self._write_once, apply)

    def _write_once(self, apply: bool) -> bool:
        if not self.path or getattr(self, "_wrote", False):
            return True
        if apply:
            Path(self.path).write_text(self.text)
            self._wrote = True
        return False


async def test_a_change_said_once_made_checks_again_those_found_good(
    late: Engine, tmp_path: Path
) -> None:
    """A kind that does not say it is about to change something (LateProbe): its change is
    known once made, so every file watches from then on and each one found good before is
    checked again, watched (the change may have been to it: here, to `a`, repaired)."""
    out = tmp_path / "out"
    right(out, "a", "b")
    graph = files(out, ["a", "b"])
    graph.add(LateProbe(name="x", path=f"{out}/a", text="other\n"))
    for name in ("a", "b"):
        graph.connect(("file", name), ("lateprobe", "x"), Edge())
    counted = checks(late)
    await late.apply(graph)
    await settle(late)
    assert (out / "a").read_text() == "want a\n"
    assert watching(late) == {"a": 1, "b": 1, "x": 1}  # x: a watch task, as always
    assert counted == {"a": 2, "b": 2, "x": 1}  # x: poked again, its state known good


async def test_a_failed_apply_is_a_first_change(late: Engine, tmp_path: Path) -> None:
    """A file that cannot be written (its parent is a regular file) fails: it may have
    changed something, so every file watches from then on (the failing one too: its retry
    waits for its delay, watched)."""
    out = tmp_path / "out"
    right(out, "a")
    (out / "blocker").write_text("a file, not a directory\n")
    graph = files(out, ["a"])
    graph.add(FileRes(name="bad", path=f"{out}/blocker/f", content="x\n", meta=Meta(retry=0)))
    await late.apply(graph)
    await settle(late)
    assert late.vertices[("file", "bad")].status is Status.FAILED
    assert watching(late) == {"a": 1, "bad": 1}


async def test_a_noop_run_never_watches(tmp_path: Path) -> None:
    """--noop: nothing is changed, so nothing switches the run to watched."""
    out = tmp_path / "out"
    right(out, "a")
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", noop=True, late_watches=True)
    try:
        await engine.apply(files(out, ["a", "missing"]))
        await settle(engine)
        assert [v.name for v in engine.would_change()] == ["file[missing]"]
        assert watching(engine) == {"a": 0, "missing": 0}
        assert Hub.running() is None
    finally:
        await engine.stop(graceful=False)


async def test_a_run_that_watches_from_its_start(tmp_path: Path) -> None:
    """The default (a daemon, or a run with a converged timeout): every file watches from its
    start, a run that changes nothing included."""
    out = tmp_path / "out"
    right(out, "a", "b")
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    try:
        await engine.apply(files(out, ["a", "b"]))
        await settle(engine)
        assert watching(engine) == {"a": 1, "b": 1}
        assert Hub.running() is not None
    finally:
        await engine.stop(graceful=False)


async def test_a_swap_before_the_first_change(late: Engine, tmp_path: Path) -> None:
    """A graph swapped in before the first change (an edit of the graph file): the kept
    vertices stay late, the one it removed is never watched, the new one's write is the
    first change: all that run watch from then on."""
    out = tmp_path / "out"
    right(out, "a", "b")
    await late.apply(files(out, ["a", "b"]))
    await settle(late)
    removed = late.vertices[("file", "b")]
    await late.apply(files(out, ["a", "c"]))
    await settle(late)
    assert (out / "c").read_text() == "want c\n"
    assert watching(late) == {"a": 1, "c": 1}
    assert removed.status is Status.STOPPED
    assert removed.stats.watch_starts == 0
    # After the switch, a new vertex watches from its start.
    await late.apply(files(out, ["a", "c", "d"]))
    await settle(late)
    assert watching(late) == {"a": 1, "c": 1, "d": 1}


async def test_poll_and_hidden_are_as_in_any_run(late: Engine, tmp_path: Path) -> None:
    """meta poll: polled from the start (a task), as always; hidden: never watched."""
    out = tmp_path / "out"
    right(out, "polled", "hidden", "plain")
    graph = files(
        out, ["polled", "hidden", "plain"], polled=Meta(poll=60), hidden=Meta(hidden=True)
    )
    await late.apply(graph)
    await settle(late)
    assert watching(late) == {"polled": 1, "hidden": 0, "plain": 0}
    assert Hub.running() is None


async def test_a_first_run_checks_each_file_once(late: Engine, tmp_path: Path) -> None:
    """Every file missing: the first write switches the run to watched while the others'
    checks are under way; each of those watches once its check has written its file (its
    own write is not another's change), so each is checked once, as in a run watched from
    its start."""
    out = tmp_path / "out"
    names = [f"f{i}" for i in range(40)]
    counted = checks(late)
    await late.apply(files(out, names))
    await settle(late)
    assert counted == dict.fromkeys(names, 1)
    assert watching(late) == dict.fromkeys(names, 1)
    assert all((out / name).read_text() == f"want {name}\n" for name in names)


async def test_a_file_watched_by_a_task_is_unsettled_until_checked_again(
    late: Engine, tmp_path: Path
) -> None:
    """A directory with `purge` (no fixed paths: it watches with a task) found good, then a
    kind that does not say it is about to change something puts a stray file in it: at the
    switch its watch task starts, and its startup event comes in that task's first step. The
    run must not be converged before it: at the first convergence (where a one-shot run
    exits) the directory has been checked again and the stray file purged."""
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    graph = Graph("purge")
    graph.add(FileRes(name="d", path=f"{out}/d/", state="exists", recurse=True, purge=True))
    graph.add(LateProbe(name="x", path=f"{out}/d/stray", text="stray\n"))
    graph.connect(("file", "d"), ("lateprobe", "x"), Edge())
    counted = checks(late)
    converger = Converger(late, timeout=0)
    at_convergence: list[tuple[int, bool]] = []
    converger.on_converged = lambda: at_convergence.append(
        (counted.get("d", 0), (out / "d" / "stray").exists())
    )
    try:
        await late.apply(graph)
        async with asyncio.timeout(30):  # a bound on a hang
            await converger.converged.wait()
    finally:
        converger.close()
    checked, stray = at_convergence[0]
    assert checked >= 2 and not stray, at_convergence
