"""engine/inotify.py on the real kernel: events in order with their names, errors, overflow."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
import threading
from pathlib import Path

import pytest

from engine import inotify, safefs
from engine.inotify import Event, Inotify, parse
from engine.watcher import PathWatcher


class Collected:
    """An Inotify whose batches are gathered; `await until(pred)` waits for a matching event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches = 0
        self._arrived = asyncio.Event()
        self.ino = Inotify(self._on)

    def _on(self, events: list[Event]) -> None:
        self.events += events
        self.batches += 1
        self._arrived.set()

    async def until(self, pred: object, timeout: float = 5) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if pred(event):  # type: ignore[operator]
                        return event
                self._arrived.clear()
                await self._arrived.wait()


def test_parse_reads_every_event_of_a_buffer() -> None:
    def raw(wd: int, mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name)) if name else b""
        return struct.pack("iIII", wd, mask, 0, len(padded)) + padded

    data = raw(1, inotify.CREATE, b"a") + raw(2, inotify.DELETE_SELF, b"") + raw(-1, 0x4000, b"")
    assert parse(data) == [
        Event(1, inotify.CREATE, 0, b"a"),
        Event(2, inotify.DELETE_SELF, 0, None),
        Event(-1, inotify.Q_OVERFLOW, 0, None),
    ]
    assert parse(b"") == []


def test_parse_drops_private_names_where_nobody_reads_them() -> None:
    """An O_TMPFILE's "#<inode>" and safefs's ".mgmt.<hex>" temp names: dropped while parsed,
    unless their watch has a reader; any other name is kept, "#" or "." inside it too."""

    def raw(wd: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16)
        return struct.pack("iIII", wd, inotify.MODIFY, 0, len(padded)) + padded

    names = [b"#12", b".mgmt.0a1b2c3d4e5f", b"f", b".hidden", b"a#b", b"#12"]
    data = b"".join(raw(1 if i < 5 else 2, name) for i, name in enumerate(names))
    got = parse(data, private=lambda wd: wd == 2)
    assert [(e.wd, e.name) for e in got] == [
        (1, b"f"),
        (1, b".hidden"),
        (1, b"a#b"),
        (2, b"#12"),
    ]
    assert [e.name for e in parse(data)] == names
    assert inotify.is_private(safefs.TEMP_PREFIX + "0a1b2c3d4e5f")


async def test_events_arrive_in_order_with_names(tmp_path: Path) -> None:
    got = Collected()
    try:
        wd = got.ino.add_watch(tmp_path, inotify.CREATE | inotify.DELETE | inotify.MOVED_TO)
        (tmp_path / "one").write_text("1")
        (tmp_path / "one").rename(tmp_path / "two")
        (tmp_path / "two").unlink()
        await got.until(lambda e: e.mask & inotify.DELETE)
        assert [(e.wd, e.mask, e.name) for e in got.events] == [
            (wd, inotify.CREATE, b"one"),
            (wd, inotify.MOVED_TO, b"two"),
            (wd, inotify.DELETE, b"two"),
        ]
        # Watching the same inode again returns the same descriptor; removing it says IGNORED.
        assert got.ino.add_watch(tmp_path, inotify.CREATE) == wd
        got.ino.rm_watch(wd)
        await got.until(lambda e: e.mask & inotify.IGNORED)
    finally:
        got.ino.close()


async def test_the_queue_is_read_holding_the_gil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drain reads every queued event, in order, by libc's read() with the GIL held: not by
    os.read, which releases the GIL and then waits for the writing threads to give it back
    (about 0.1 ms per read of a first run's event loop at 10,000 files). An empty queue is
    no error."""

    def forbidden(*args: object) -> bytes:
        raise AssertionError("os.read releases the GIL")

    monkeypatch.setattr(inotify.os, "read", forbidden)
    got = Collected()
    try:
        got.ino.add_watch(tmp_path, inotify.CREATE)
        got.ino.drain()
        assert got.events == []
        names = [f"f{i:03d}-{'x' * 200}".encode() for i in range(400)]  # more than one read
        for name in names:
            (tmp_path / name.decode()).touch()
        got.ino.drain()
        assert [e.name for e in got.events] == names
    finally:
        got.ino.close()


async def test_errors_name_the_path_and_close_is_final(tmp_path: Path) -> None:
    got = Collected()
    missing = tmp_path / "missing"
    with pytest.raises(OSError) as info:
        got.ino.add_watch(missing, inotify.CREATE)
    assert info.value.errno == errno.ENOENT and info.value.filename == str(missing)
    with pytest.raises(OSError) as info:
        got.ino.rm_watch(12345)
    assert info.value.errno == errno.EINVAL
    got.ino.add_watch(tmp_path, inotify.CREATE)
    fd = got.ino.fd
    got.ino.close()
    got.ino.close()  # twice is harmless
    assert got.ino.fd is None and fd is not None
    with pytest.raises(OSError):
        os.fstat(fd)  # the descriptor is really closed
    assert got.events == []


def queue_limit() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


async def test_a_queue_overflow_reaches_every_watcher(tmp_path: Path) -> None:
    """More events than the kernel queues (16384 by default) while the loop is busy: the
    overflow event makes every watcher re-scan and report a change."""
    path = tmp_path / "watched"
    path.write_text("x")
    async with PathWatcher([path]) as watcher:
        changes = asyncio.Event()

        async def consume() -> None:
            async for _ in watcher:
                changes.set()

        task = asyncio.create_task(consume())
        try:
            limit = queue_limit()
            noise = tmp_path / "noise"
            noise.mkdir()
            async with PathWatcher([noise], recurse=True):
                # Blocking on purpose: the loop must not read while the queue fills up.
                for i in range(limit // 2 + 10):
                    (noise / str(i)).touch()
                    (noise / str(i)).unlink()
                async with asyncio.timeout(10):
                    await changes.wait()  # `watched` itself never changed: the overflow did it
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _inotify_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                found.add(int(name))
        except FileNotFoundError:
            pass
    return found


async def test_close_leaves_the_kernels_teardown_to_a_thread(tmp_path: Path) -> None:
    """An instance with watches is torn down after a grace period of the kernel's (7-23 ms,
    one watch or many): its descriptor is closed at once, and its last reference (a duplicate)
    by another thread, not on the loop; once that is done, nothing is left open."""
    done = threading.Event()
    threads: list[int] = []

    def then() -> None:
        threads.append(threading.get_ident())
        done.set()

    got = Collected()
    fd = got.ino.fd
    assert fd is not None
    before = _inotify_fds() - {fd}
    got.ino.add_watch(tmp_path, inotify.CREATE)
    got.ino.close(then)
    assert fd not in _inotify_fds() and got.ino.fd is None
    assert await asyncio.to_thread(done.wait, 30)
    assert len(threads) == 1 and threads[0] != threading.get_ident()
    assert _inotify_fds() <= before  # (an earlier test's may have closed meanwhile)


async def test_at_the_exit_the_teardown_is_handed_to_a_process_ending_with_ours(
    tmp_path: Path,
) -> None:
    """Once the process is ending (`leave_to_exit`), the thread that closes an instance's last
    descriptor first gives it to a process of its own (`cat`), which holds it until its input,
    a pipe of this process's, is closed (at this one's exit), then ends: the kernel's teardown
    is in that process's exit, not this one's."""
    done = threading.Event()
    got = Collected()
    fd = got.ino.fd
    assert fd is not None
    before = _inotify_fds() - {fd}
    got.ino.add_watch(tmp_path, inotify.CREATE)
    inotify.leave_to_exit()
    try:
        got.ino.close(done.set)
    finally:
        inotify._EXIT.ending = False  # (this test's process does not end here)
    assert await asyncio.to_thread(done.wait, 30)
    assert _inotify_fds() <= before
    holder = inotify._EXIT.holders.pop()
    try:
        assert "anon_inode:inotify" in _fd_targets(holder.pid)
    finally:
        holder.release()  # what this process's exit does
        assert await asyncio.to_thread(holder.wait, 30) == 0


def _fd_targets(pid: int) -> list[str]:
    """What the process's descriptors name. One may close between the listing and its read:
    the holder's dynamic loader opens and closes its libraries on descriptors of its own."""
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


async def test_a_descriptor_riding_goes_to_the_instances_holder_with_it(tmp_path: Path) -> None:
    """A descriptor that rides (`ride`: a cron run's prefix lock) goes to the process the
    instance is handed to at the exit, one process for both; its owner finds it taken
    (`alight` is False) and only closes its own copy."""
    done = threading.Event()
    got = Collected()
    got.ino.add_watch(tmp_path, inotify.CREATE)
    rider = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    inotify.ride(rider, "a test's lock")
    inotify.leave_to_exit()
    try:
        got.ino.close(done.set)
    finally:
        inotify._EXIT.ending = False  # (this test's process does not end here)
        taken = not inotify.alight(rider)
        os.close(rider)
    assert await asyncio.to_thread(done.wait, 30)
    assert taken
    holder = inotify._EXIT.holders.pop()
    try:
        targets = _fd_targets(holder.pid)
        assert "anon_inode:inotify" in targets and str(tmp_path / "lock") in targets
    finally:
        holder.release()  # what this process's exit does
        assert await asyncio.to_thread(holder.wait, 30) == 0
