"""file: the checks of one step of the loop share their parent directory (where.StepDirs):
walked to once, never through a symlink, closed once no check holds it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from engine import safefs, watcher
from engine.errors import ResourceError
from resources.file import FileRes

NOBODY = 65534


def open_fds() -> set[tuple[str, str]]:
    """This process's descriptors and what each is open on. Compared as "no new one left
    open" (<=): others may close meanwhile (an earlier test's, closed by a thread or the
    collector: a count fell by 7 in CI)."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # (closed meanwhile, or listdir's own)
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return fds


async def next_step() -> None:
    """The shared directories' flush has run: it is a callback the step's first check queued
    (call_soon), so one queued now runs after it (the loop runs its callbacks in order)."""
    loop = asyncio.get_running_loop()
    flushed = loop.create_future()
    loop.call_soon(flushed.set_result, None)
    await flushed


@pytest.fixture
def write_begun(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set as an own write's context opens (a file's write in flight: `Hub.own_writes`); the
    context still does its work (a signal, not a fake)."""
    begun = asyncio.Event()
    enter = watcher._Expecting.__enter__

    def entered(self: Any) -> Any:
        try:
            return enter(self)
        finally:
            begun.set()

    monkeypatch.setattr(watcher._Expecting, "__enter__", entered)
    return begun


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories safefs.walk was asked for (it still walks: a count, not a fake)."""
    asked: list[str] = []
    walk = safefs.walk

    def counted(path: str, **kwargs: Any) -> tuple[int, list[str]]:
        asked.append(path)
        return walk(path, **kwargs)

    monkeypatch.setattr(safefs, "walk", counted)
    return asked


async def files(run_resource: Any, directory: Path, count: int) -> list[FileRes]:
    made = []
    for i in range(count):
        res = FileRes(name=f"f{i}", path=f"{directory}/f{i}", content=f"number {i}\n")
        await run_resource(res, watch=False)
        made.append(res)
    return made


async def test_a_steps_checks_walk_to_their_directory_once(
    tmp_path: Path, run_resource: Any, walks: list[str]
) -> None:
    made = await files(run_resource, tmp_path, 20)
    for res in made:
        (tmp_path / res.name).write_text(f"number {res.name[1:]}\n")
    await next_step()
    before = open_fds()
    walks.clear()
    # gathered: their checks run in one step, none of them waits (all in place: no-ops)
    assert await asyncio.gather(*(res.check_apply(True) for res in made)) == [True] * 20
    assert walks == [str(tmp_path)]
    await next_step()
    assert open_fds() <= before  # closed with the step
    assert await asyncio.gather(*(res.check_apply(True) for res in made)) == [True] * 20
    assert walks == [str(tmp_path)] * 2  # the next step walks again


async def test_writes_keep_the_sharedectory_open_past_its_step(
    tmp_path: Path, run_resource: Any
) -> None:
    """A check that writes awaits its steps (in an I/O thread): the directory its step shared
    stays open until the last check holding it is done, then is closed."""
    made = await files(run_resource, tmp_path, 20)
    await next_step()
    before = open_fds()
    assert await asyncio.gather(*(res.check_apply(True) for res in made)) == [False] * 20
    for i in range(20):
        assert (tmp_path / f"f{i}").read_text() == f"number {i}\n"
    await next_step()
    assert open_fds() <= before
    assert await asyncio.gather(*(res.check_apply(True) for res in made)) == [True] * 20


async def test_a_directory_replaced_by_a_link_within_the_step_is_not_followed(
    tmp_path: Path, shared: Path, run_resource: Any, walks: list[str]
) -> None:
    """Another user renames the directory away and plants a link to a victim in its place,
    between two checks of one step: the second acts in the directory the step opened (as a
    check holding its own would), never through the link; the next step refuses the link."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f1").write_text("victim\n")
    directory = shared / "sub"
    directory.mkdir()
    first, second = await files(run_resource, directory, 2)
    (directory / "f0").write_text("number 0\n")
    await next_step()
    walks.clear()
    assert await first.check_apply(True) is True  # in place: no wait, the step goes on
    os.rename(directory, shared / "moved")
    directory.symlink_to(victim)
    os.lchown(directory, NOBODY, NOBODY)
    assert await second.check_apply(True) is False  # written (in a thread: a wait)
    assert walks == [str(directory)]  # one walk: the step's
    assert (victim / "f1").read_text() == "victim\n"
    assert (shared / "moved" / "f1").read_text() == "number 1\n"
    await next_step()
    with pytest.raises(ResourceError, match=f"refusing to follow the symlink {directory} "):
        await second.check_apply(True)
    assert sorted(os.listdir(victim)) == ["f1"]
    assert (victim / "f1").read_text() == "victim\n"


async def test_a_replacement_read_by_a_later_check_of_the_step_is_not_lost(
    tmp_path: Path,
    shared: Path,
    run_resource: Any,
    walks: list[str],
    write_begun: asyncio.Event,
) -> None:
    """While an own write is in flight each check reads the event queue itself
    (Hub.read_for_check): another user's replacement of the directory, after the step's
    walk, read by the second check, must not be taken as seen by a check that looks in the
    directory walked to before it (the old one, renamed away): it writes its file in the new
    directory, or a check of it follows (an event)."""
    directory = shared / "sub"
    directory.mkdir()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    first = FileRes(name="f0", path=f"{directory}/f0", content="number 0\n")
    second = FileRes(name="f1", path=f"{directory}/f1", content="number 1\n")
    writer = FileRes(name="w", path=f"{other_dir}/w", content="x" * (1 << 20))
    running = [await run_resource(res) for res in (first, second, writer)]
    for res in (first, second, writer):
        assert await res.check_apply(True) is False
    (other_dir / "w").write_text("drifted\n")
    await next_step()
    for each in running:
        each.handle.rearm()
    hub = second._watcher._hub
    write_begun.clear()  # (the writes above set it)
    repair = asyncio.create_task(writer.check_apply(True))  # an own write in flight
    async with asyncio.timeout(30):  # a bound on a hang: until its rename's context is open
        await write_begun.wait()
    assert hub.own_writes
    walks.clear()
    assert await first.check_apply(True) is True  # in place: no wait, the step goes on
    os.rename(directory, shared / "moved")
    directory.mkdir()  # another user's new directory in its place
    assert await second.check_apply(True) in (True, False)
    if not (directory / "f1").exists():  # not written in the new one: a check must follow
        await running[1].handle.next_event(timeout=10)
    await repair
