"""etcd's log file as the agent follows it (mgmt/cluster/etcdlog.py): real files and inotify;
the test writes what etcd would (its descriptor is the one etcd gets as stderr)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt.cluster import etcdlog
from mgmt.cluster.etcdlog import EtcdLog


class Follower:
    """`EtcdLog.follow` in a task; its lines in a queue; `exit()` ends it as etcd's exit."""

    def __init__(self, log: EtcdLog) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(log.follow(self.exited, self.lines.put_nowait))

    async def line(self) -> str:
        async with asyncio.timeout(10):
            return await self.lines.get()

    async def exit(self) -> None:
        self.exited.set_result(None)
        async with asyncio.timeout(10):
            await self.task


@contextlib.contextmanager
def created(path: Path) -> Iterator[tuple[EtcdLog, int]]:
    """An etcd log made at `path` (`EtcdLog.create`): (it, etcd's descriptor), both closed at
    the block's end."""
    log = EtcdLog(path)
    etcd = log.create()
    try:
        yield log, etcd
    finally:
        os.close(etcd)
        log.close()


async def test_each_line_as_it_is_written_and_a_cut_one_once_whole(tmp_path: Path) -> None:
    with created(tmp_path / "etcd.log") as (log, etcd):
        follower = Follower(log)
        os.write(etcd, b'{"msg":"one"}\n{"msg":')
        assert await follower.line() == '{"msg":"one"}'
        os.write(etcd, b'"two"}\n')  # (inotify wakes the follower: no poll)
        assert await follower.line() == '{"msg":"two"}'
        os.write(etcd, b"panic: no newline")
        await follower.exit()  # what etcd wrote before its exit is read, its last line too
        assert follower.lines.get_nowait() == "panic: no newline"
        assert follower.lines.empty()


async def test_the_last_file_is_kept_and_a_link_in_its_place_is_not_followed(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not etcd's\n")
    (tmp_path / "etcd.log").symlink_to(target)
    log = EtcdLog(tmp_path / "etcd.log")
    os.close(log.create())
    log.close()
    assert (tmp_path / "etcd.log.1").is_symlink()  # moved aside, as it was
    assert target.read_text() == "not etcd's\n"
    made = (tmp_path / "etcd.log").lstat()
    assert made.st_mode & 0o777 == 0o600 and made.st_size == 0
    again = EtcdLog(tmp_path / "etcd.log")
    os.close(again.create())
    again.close()
    assert not (tmp_path / "etcd.log.1").is_symlink()  # the file of the start before


async def test_what_was_read_is_freed_but_the_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 MiB of lines read: all but the last KEEP bytes (64 KiB here) are holes on disk; the
    file keeps its length, and its end reads as written."""
    monkeypatch.setattr(etcdlog, "KEEP", 64 * 1024)
    monkeypatch.setattr(etcdlog, "STEP", 64 * 1024)
    with created(tmp_path / "etcd.log") as (log, etcd):
        follower = Follower(log)
        line = b'{"level":"debug","msg":"request stats"}'.ljust(1023) + b"\n"
        for _ in range(2048):
            os.write(etcd, line)
        await follower.exit()
        assert follower.lines.qsize() == 2048
    info = (tmp_path / "etcd.log").stat()
    assert info.st_size == 2048 * 1024
    assert info.st_blocks * 512 <= 3 * 64 * 1024, info.st_blocks
    fd = os.open(tmp_path / "etcd.log", os.O_RDONLY)
    try:
        assert os.pread(fd, 1024, 0) == b"\0" * 1024
        assert os.pread(fd, 1024, info.st_size - 1024) == line
    finally:
        os.close(fd)


async def test_a_line_longer_than_max_line_is_handed_on_in_pieces_bad_bytes_replaced(
    tmp_path: Path,
) -> None:
    """A "line" of MAX_LINE bytes without its newline is taken as it is (the memory a line
    holds is bounded), the rest of it is the next; bytes that are not UTF-8 are replaced;
    the line after them is whole."""
    with created(tmp_path / "etcd.log") as (log, etcd):
        follower = Follower(log)
        os.write(etcd, b"x" * (etcdlog.MAX_LINE + 10) + b"\xff\xfe end\n" + b'{"msg":"next"}\n')
        assert await follower.line() == "x" * etcdlog.MAX_LINE
        assert await follower.line() == "x" * 10 + "\ufffd\ufffd end"
        assert await follower.line() == '{"msg":"next"}'
        await follower.exit()
        assert follower.lines.empty()


async def test_a_restart_makes_a_new_file_while_the_last_ones_lines_are_still_read(
    tmp_path: Path,
) -> None:
    """etcd restarted (its supervisor): the next start's file is made while the last one's
    follower still reads (etcd exited, its last lines not read yet): it reads them from the
    file it follows (now etcd.log.1), each once, its last line too; the new follower reads
    the new file's alone."""
    with created(tmp_path / "etcd.log") as (old, first):
        old_follower = Follower(old)
        os.write(first, b'{"msg":"one"}\n')
        assert await old_follower.line() == '{"msg":"one"}'
        os.write(first, b'{"msg":"two"}\npanic: dying')
        with created(tmp_path / "etcd.log") as (new, second):
            new_follower = Follower(new)
            os.write(second, b'{"msg":"again"}\n')
            assert await new_follower.line() == '{"msg":"again"}'
            await old_follower.exit()
            assert old_follower.lines.get_nowait() == '{"msg":"two"}'
            assert old_follower.lines.get_nowait() == "panic: dying"
            assert old_follower.lines.empty()
            await new_follower.exit()
            assert new_follower.lines.empty()
    assert (tmp_path / "etcd.log.1").read_bytes().endswith(b"panic: dying")


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mounted in `tmp_path` (it cannot punch holes); skipped where mounting is not
    allowed."""
    where = tmp_path / "ramfs"
    where.mkdir()
    mount = ["mount", "-t", "ramfs", "-o", "mode=0700", "ramfs", str(where)]
    if shutil.which("mount") is None or subprocess.run(mount, check=False).returncode:
        pytest.skip("cannot mount a ramfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], timeout=10, check=False)


async def test_a_file_system_that_cannot_punch_holes_is_said_once_and_read_on(
    ramfs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a ramfs (no hole punching): one warning, and every line is read all the same."""
    monkeypatch.setattr(etcdlog, "KEEP", 4096)
    monkeypatch.setattr(etcdlog, "STEP", 4096)
    with created(ramfs / "etcd.log") as (log, etcd):
        follower = Follower(log)
        for i in range(200):
            os.write(etcd, b'{"msg":"%d"}' % i + b" " * 100 + b"\n")
        await follower.exit()
        assert follower.lines.qsize() == 200
    said = [r.getMessage() for r in caplog.records if "cannot free" in r.getMessage()]
    assert len(said) == 1 and "it grows until etcd restarts" in said[0], said
