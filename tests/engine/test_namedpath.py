"""engine.namedpath's watch of a program's (or graph file's) paths, on the real filesystem:
when the files are read again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.namedpath import NamedPaths


class Follower:
    """NamedPaths following in a task; `read()` waits for the next ready() and gives what `path`
    held then."""

    def __init__(self, named: NamedPaths, path: Path) -> None:
        self.named, self.path = named, path
        self.reads: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(named.follow(self._ready))

    def _ready(self) -> None:
        try:
            self.reads.put_nowait(self.path.read_text())
        except FileNotFoundError:
            self.reads.put_nowait(None)

    async def read(self) -> str | None:
        async with asyncio.timeout(10):
            text = await self.reads.get()
        self.named.changes.clear()  # the changes read
        return text

    async def change(self) -> None:
        """Wait until the watch has seen the next change (and decided when to read)."""
        async with asyncio.timeout(10):
            await self.named.changes.wait()
        self.named.changes.clear()


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Follower, Path, Path]]:
    main, other = tmp_path / "main.mcl", tmp_path / "other.mcl"
    main.write_text("whole\n")
    other.write_text("o\n")
    async with NamedPaths([main, other], settle=0.1) as named:  # as mgmt.lang.source's
        follower = Follower(named, main)
        yield follower, main, other
        follower.task.cancel()
        await asyncio.gather(follower.task, return_exceptions=True)


async def test_a_file_created_by_an_open_is_read_once_its_writer_closes_it(
    two: tuple[Follower, Path, Path],
) -> None:
    """`rm main.mcl; cp main.bak main.mcl` (or a writer that opens, waits, writes): the file
    is empty from the open on. It is read at its writer's close, not at its creation (an
    empty program swapped in stopped every resource and reversed the reversible ones), even
    while another watched file is written and closed meanwhile."""
    follower, main, other = two
    main.unlink()
    assert await follower.read() is None  # a removal is read (a program error: it is missing)
    with main.open("w") as writer:  # created: empty until written
        await follower.change()
        assert follower.named.held
        other.write_text("o2\n")  # another file, whole: the read still waits for this writer
        await follower.change()
        assert follower.named.held
        writer.write("whole\n")
        writer.flush()
        await follower.change()
        assert follower.named.held
    assert await follower.read() == "whole\n"
    assert not follower.named.held and follower.reads.empty()


async def test_a_symlink_or_directory_created_is_no_writer(
    two: tuple[Follower, Path, Path], tmp_path: Path
) -> None:
    """A link made at a missing name (`ln -s`, `ln -sf`), or a directory, has no writer to
    wait for: it is read at once (after the program watch's short settle of a burst)."""
    follower, main, _other = two
    (tmp_path / "target.mcl").write_text("linked\n")
    main.unlink()
    assert await follower.read() is None
    os.symlink("target.mcl", main)
    await follower.change()
    assert not follower.named.held
    assert await follower.read() == "linked\n"


async def test_a_burst_of_changes_is_read_once(
    two: tuple[Follower, Path, Path],
) -> None:
    """A module directory re-created file by file, a script's commands: a program's watch
    reads what they leave once, not once per file."""
    follower, main, other = two
    for text in ("a\n", "b\n", "c\n"):
        other.write_text(text)
        main.write_text(text)
    assert await follower.read() == "c\n"
    other.write_text("d\n")
    assert await follower.read() == "c\n"  # the next change's read: none in between


async def test_a_hard_link_made_at_the_name_is_no_writer(
    two: tuple[Follower, Path, Path], tmp_path: Path
) -> None:
    """`ln new.mcl main.mcl` at a missing name: a creation no open made (no close follows).
    With another link it is whole: read at once (after the settle), not after WRITER_WAIT. A
    file created by an open is still waited for, linked elsewhere or not (the test above)."""
    follower, main, _other = two
    (tmp_path / "new.mcl").write_text("linked\n")
    main.unlink()
    assert await follower.read() is None
    os.link(tmp_path / "new.mcl", main)
    await follower.change()
    assert not follower.named.held
    assert await follower.read() == "linked\n"
