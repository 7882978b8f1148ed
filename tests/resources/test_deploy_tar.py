"""deploy:tar: the idempotency timeline on a real file, with its inotify watch and the
program's change events (engine.program)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from engine.program import Program, ProgramRef
from resources.deploy_tar import DeployTarRes, archive, entries
from tests.conftest import RecordingHandle

PROGRAM = Program(
    "lang",
    "main.mcl",
    {"main.mcl": b'print "x" {}\n', "files/motd": b"hi\n", "a.txt": b"a", "files/d/e": b"e"},
    "deploy 3",
)

Start = Callable[[DeployTarRes, ProgramRef | None], Awaitable[RecordingHandle]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """init() the resource with a handle carrying `ref`, and run its watch."""
    tasks: list[tuple[asyncio.Task[None], DeployTarRes, RecordingHandle]] = []

    async def run(res: DeployTarRes, ref: ProgramRef | None) -> RecordingHandle:
        res.validate()
        handle = RecordingHandle(res, tmp_path / "var")
        handle.program = ref
        await res.init(handle)
        task = asyncio.create_task(res.watch())
        tasks.append((task, res, handle))
        await handle.next_event()
        return handle

    yield run
    for task, res, handle in tasks:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await res.cleanup()
        await handle.run_cleanups()


def members(data: bytes) -> list[tuple[str, int, int, int, str]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.mtime, m.uid, m.mode, m.uname) for m in tar.getmembers()]


def test_the_archive_is_deterministic_in_walkdir_order() -> None:
    data = archive(PROGRAM)
    assert data == archive(Program("lang", "main.mcl", dict(reversed(PROGRAM.files.items())), "x"))
    assert [m[0] for m in members(data)] == [
        "a.txt",
        "files",  # tarfile shows a directory without its '/'
        "files/d",
        "files/d/e",
        "files/motd",
        "main.mcl",
    ]
    assert {m[1:] for m in members(data)} == {(0, 0, 0o644, ""), (0, 0, 0o755, "")}
    assert [name for name, _ in entries({"a.txt": b"", "a/b": b""})] == ["a/", "a/b", "a.txt"]
    assert archive(PROGRAM, 8) != data  # the format is part of the content
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        extracted = tar.extractfile("files/motd")
        assert extracted is not None and extracted.read() == b"hi\n"


async def test_timeline(start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "p.tar"
    ref = ProgramRef(lambda: PROGRAM)
    res = DeployTarRes(name=str(out))
    handle = await start(res, ref)
    assert await res.check_apply(False) is False  # noop: reports, writes nothing
    assert not out.exists()
    assert f"would archive deploy 3 (4 files) into {out} (it is missing)" in caplog.text
    assert await res.check_apply(True) is False
    assert out.read_bytes() == archive(PROGRAM)
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    await handle.next_event()  # our own write, seen by the watch
    assert await res.check_apply(True) is True  # a re-run writes nothing
    inode = out.stat().st_ino
    assert await res.check_apply(True) is True and out.stat().st_ino == inode
    out.chmod(0o600)  # a file resource may manage its mode: kept on rewrites
    out.write_bytes(b"garbage")  # drift: repaired
    await handle.next_event()
    assert await res.check_apply(False) is False
    assert out.read_bytes() == b"garbage"
    assert await res.check_apply(True) is False
    assert out.read_bytes() == archive(PROGRAM)
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    assert await res.check_apply(True) is True


async def test_a_new_program_is_an_event_and_a_new_archive(start: Start, tmp_path: Path) -> None:
    out = tmp_path / "p.tar"
    current = [PROGRAM]
    ref = ProgramRef(lambda: current[0])
    res = DeployTarRes(name="archive", path=str(out), format=2)
    handle = await start(res, ref)
    assert await res.check_apply(True) is False
    await handle.next_event()
    assert await res.check_apply(True) is True
    current[0] = Program("yaml", "g.yaml", {"g.yaml": b"resources: []\n"}, "deploy 4")
    assert await asyncio.to_thread(ref.reload) is True
    ref.notify()  # what the agent does after a graph whose program differs
    await handle.next_event()
    assert await res.check_apply(True) is False
    assert [m[0] for m in members(out.read_bytes())] == ["g.yaml"]
    assert await asyncio.to_thread(ref.reload) is False  # the same program: nothing to tell


async def test_refusals(start: Start, tmp_path: Path) -> None:
    res = DeployTarRes(name=str(tmp_path / "none.tar"))
    await start(res, ProgramRef(lambda: None))
    with pytest.raises(ResourceError, match="runs no program to archive"):
        await res.check_apply(True)
    link = tmp_path / "link.tar"
    os.symlink(tmp_path / "target", link)
    res = DeployTarRes(name=str(link))
    await start(res, ProgramRef(lambda: PROGRAM))
    with pytest.raises(ResourceError, match="not a regular file"):
        await res.check_apply(True)
    assert not (tmp_path / "target").exists()  # never followed
    res = DeployTarRes(name=str(tmp_path / "nodir" / "p.tar"))
    await start(res, ProgramRef(lambda: PROGRAM))
    with pytest.raises(ResourceError, match="does not exist"):
        await res.check_apply(True)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "relative.tar"}, "name"),
        ({"name": "/x/dir/"}, "name"),
        ({"name": "x", "path": "rel"}, "path"),
        ({"name": "/x.tar", "format": 3}, "format"),
    ],
)
def test_validation(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        DeployTarRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


async def test_another_users_file_lends_no_mode(start: Start, tmp_path: Path) -> None:
    """In a directory others may create files in (sticky, like /tmp), another user's file at
    the path (setuid, world-writable) is replaced by a new 0600 archive, not one with its mode;
    our own keeps its permission bits only."""
    share = tmp_path / "share"
    share.mkdir()
    share.chmod(0o1777)
    out = share / "p.tar"
    out.write_bytes(b"theirs")
    os.chown(out, 65534, 65534)
    out.chmod(0o6777)
    res = DeployTarRes(name=str(out))
    await start(res, ProgramRef(lambda: PROGRAM))
    assert await res.check_apply(True) is False
    st = out.stat()
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (os.geteuid(), oct(0o600))
    assert out.read_bytes() == archive(PROGRAM)
    out.chmod(0o4640)
    out.write_bytes(b"drift")
    assert await res.check_apply(True) is False
    assert oct(out.stat().st_mode & 0o7777) == oct(0o640)


async def test_a_symlink_at_the_path_is_refused_even_to_the_right_content(
    start: Start, tmp_path: Path
) -> None:
    """Another user's link (in a sticky directory) to a copy of the right archive, which they
    may change later: not "nothing to do", refused as the write refuses it."""
    share = tmp_path / "share"
    share.mkdir()
    share.chmod(0o1777)
    copy = tmp_path / "theirs.tar"
    copy.write_bytes(archive(PROGRAM))
    out = share / "p.tar"
    out.symlink_to(copy)
    os.chown(out, 65534, 65534, follow_symlinks=False)
    res = DeployTarRes(name=str(out))
    await start(res, ProgramRef(lambda: PROGRAM))
    with pytest.raises(ResourceError, match="exists and is not a regular file"):
        await res.check_apply(True)
    assert out.is_symlink()
