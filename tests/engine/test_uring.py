"""engine.uring: a group of new unnamed files fsynced and linked through a real io_uring on this
kernel, real files in tmp_path; the probe's knob (MGMT_IO_URING=0) that makes no ring.

The group path through stopgate.Replies and the file kind, with a ring and without, is in
tests/engine/test_stopgate.py (groups)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from engine import uring


def unavailable_here() -> str | None:
    return uring.unavailable()


pytestmark = pytest.mark.skipif(
    unavailable_here() is not None, reason=f"no io_uring here: {unavailable_here()}"
)


def open_fds() -> int:
    """The process's io_uring descriptors (not all: another test's thread, a file resource's
    spare, may close one of its own meanwhile; seen under two workers, 2026-12-06)."""
    rings = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since it was listed
            rings += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[io_uring]"
    return rings


def unnamed(directory: int, data: bytes) -> int:
    """A new unnamed file in `directory` holding `data`, mode 0640, not fsynced."""
    fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=directory)
    os.write(fd, data)
    os.fchmod(fd, 0o640)
    return fd


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_each_files_fsync_is_its_own_outcome(tmp_path: Path, directory: int) -> None:
    """Three files in one submission: two are fsynced; the middle one's fsync fails (a pipe:
    EINVAL; its write-out fails before it, ignored), its own error; nothing is named (the
    caller names them: safefs.named_new); the ring and every descriptor are closed after (none
    leaks)."""
    before = open_fds()
    ring = uring.Ring(uring.ENTRIES)
    read, write = os.pipe()
    fds = [unnamed(directory, b"zero\n"), write, unnamed(directory, b"two\n")]
    try:
        assert ring.fsync_all(fds) == [0, errno.EINVAL, 0]
        assert [os.fstat(fd).st_nlink for fd in (fds[0], fds[2])] == [0, 0]  # still unnamed
    finally:
        for fd in (*fds, read):
            os.close(fd)
        ring.close()
    assert os.listdir(tmp_path) == []
    assert open_fds() == before


def test_more_files_than_the_ring_holds_go_in_turns(directory: int) -> None:
    ring = uring.Ring(4)  # 4 files a submission
    fds = [unnamed(directory, b"%d\n" % i) for i in range(10)]
    try:
        assert ring.fsync_all(fds) == [0] * 10
    finally:
        for fd in fds:
            os.close(fd)
        ring.close()


FS_IOC_FIEMAP, FIEMAP_EXTENT_DELALLOC = 0xC020660B, 0x4


def delalloc(fd: int) -> bool | None:
    """Whether the file's first extent still waits for its blocks (ext4's delayed allocation);
    None where the file system does not say (no FIEMAP)."""
    request = bytearray(32 + 56)  # struct fiemap and one struct fiemap_extent
    struct.pack_into("=QQIII", request, 0, 0, 2**64 - 1, 0, 0, 1)
    try:
        fcntl.ioctl(fd, FS_IOC_FIEMAP, request)
    except OSError:
        return None
    (mapped,) = struct.unpack_from("=I", request, 20)
    if not mapped:
        return None
    (flags,) = struct.unpack_from("=I", request, 32 + 40)
    return bool(flags & FIEMAP_EXTENT_DELALLOC)


def test_the_write_out_of_every_file_begins_before_any_fsync(directory: int) -> None:
    """fsync_all first begins the write-out of every file's data, in an io_uring_enter of its
    own that waits for them all, and only then submits the fsyncs: here the files' blocks are
    allocated (no longer ext4's delayed allocation) by write_out alone, before any fsync."""
    fds = [unnamed(directory, b"%d\n" % i) for i in range(3)]
    seen: list[list[int]] = []  # the opcodes each enter submitted (none: a wait only)
    filled: list[int] = []

    class Watched(uring.Ring):
        def put(self, opcode: int, fd: int, user_data: int, **fields: int) -> None:
            filled.append(opcode)
            super().put(opcode, fd, user_data, **fields)  # type: ignore[arg-type]

        def enter(self, wait: int) -> None:
            if filled:
                seen.append(filled[:])
                filled.clear()
            super().enter(wait)

    ring = Watched(uring.ENTRIES)
    try:
        if delalloc(fds[0]) is not True:
            pytest.skip("no delayed allocation seen here (not ext4, or no FIEMAP)")
        ring.write_out(fds)
        assert [delalloc(fd) for fd in fds] == [False] * 3
        seen.clear()
        assert ring.fsync_all(fds) == [0] * 3
    finally:
        for fd in fds:
            os.close(fd)
        ring.close()
    assert seen == [[uring.OP_SYNC_FILE_RANGE] * 3, [uring.OP_FSYNC] * 3]


def test_the_knob_makes_no_ring_and_says_why_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """MGMT_IO_URING=0: the probe (once per process) finds no ring to make, says so in one
    debug line, and a Rings hands out none (the sequential path)."""
    caplog.set_level(logging.DEBUG, logger="engine.uring")
    monkeypatch.setenv(uring.ENV, "0")
    monkeypatch.setattr(uring, "_probed", [])
    assert uring.unavailable() == "MGMT_IO_URING=0"
    assert uring.unavailable() == "MGMT_IO_URING=0"
    assert caplog.messages == ["writing without io_uring: MGMT_IO_URING=0"]
    rings = uring.Rings()
    with rings.mine() as ring:
        assert ring is None
    assert rings.open() == 0


def test_rings_are_closed_when_closed_even_one_in_use() -> None:
    """A thread's ring is made once and kept; `close` closes the idle ones, and one in use
    is closed by its thread as it is done with it; none is made after."""
    before = open_fds()
    rings = uring.Rings()
    with rings.mine() as first:
        assert first is not None
    with rings.mine() as again:
        assert again is first
        assert open_fds() == before + 1
        rings.close()
        assert rings.open() == 1  # in use here
    assert rings.open() == 0 and open_fds() == before
    with rings.mine() as none:
        assert none is None


def test_what_an_enter_left_in_the_queue_goes_with_the_next() -> None:
    """An enter that failed after the queue's tail moved (or submitted part of it) leaves
    entries there: the next enter submits them with its own, none is left behind."""
    ring = uring.Ring(8)
    try:
        ring.put(0, -1, 1)  # IORING_OP_NOP
        ring.put(0, -1, 2)
        # as enter() does before an io_uring_enter that fails: the tail moved, none taken
        ring._sq_tail.value = (ring._sq_tail.value + ring._pending) & 0xFFFFFFFF
        ring._pending = 0
        ring.put(0, -1, 3)
        ring.enter(1)  # (a NOP completes as it is submitted: all three, or a wait for ever)
        assert sorted(token for token, _ in ring.reap()) == [1, 2, 3]
        assert ring.free() == ring.entries
    finally:
        ring.close()


def test_what_a_failed_enter_left_in_the_queue_is_taken_back() -> None:
    """After an enter that failed (here its descriptor was another file's for a while: a real
    io_uring_enter failing), withdraw gives back what the kernel did not take, and none of it
    runs: an enter after submits only what was put since."""
    ring = uring.Ring(8)
    saved = os.dup(ring.fd)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        ring.put(0, -1, 1)  # IORING_OP_NOP
        ring.put(uring.OP_CLOSE, null, 2)
        os.dup2(null, ring.fd)
        with pytest.raises(OSError) as failed:
            ring.enter(0)
        assert failed.value.errno == errno.EOPNOTSUPP
        os.dup2(saved, ring.fd)  # the ring again
        assert ring.withdraw() == [(0, -1, 1), (uring.OP_CLOSE, null, 2)]
        assert (ring.withdraw(), ring.free()) == ([], ring.entries)
        ring.put(0, -1, 3)
        ring.enter(1)
        assert [token for token, _ in ring.reap()] == [3]
        os.fstat(null)  # not closed
    finally:
        ring.close()
        os.close(saved)
        os.close(null)


class _FsyncsRefused(uring.Ring):
    """A ring whose descriptor is another file's right after its write-out: its fsyncs'
    io_uring_enter fails for real (EOPNOTSUPP), their entries left in the queue, until
    `restore`."""

    def __init__(self, entries: int) -> None:
        super().__init__(entries)
        self.saved = os.dup(self.fd)
        self.null = os.open(os.devnull, os.O_RDONLY)
        self.refuse = True

    def write_out(self, fds: Sequence[int]) -> None:
        super().write_out(fds)
        if self.refuse:
            os.dup2(self.null, self.fd)

    def restore(self) -> None:
        self.refuse = False
        os.dup2(self.saved, self.fd)

    def close(self) -> None:
        super().close()
        os.close(self.saved)
        os.close(self.null)


def test_a_group_after_a_failed_one_takes_its_own_fsyncs_outcomes(directory: int) -> None:
    """A group whose fsyncs' io_uring_enter failed (fsynced then without the ring, each closed
    by its named_new) leaves nothing to run in the thread's ring: the next group's outcomes
    are its own fsyncs', not those of the failed group's entries (submitted then on numbers
    closed meanwhile, or another file's: EBADF, or a success for a file not fsynced)."""
    ring = _FsyncsRefused(8)
    try:
        failed = [unnamed(directory, b"one\n"), unnamed(directory, b"two\n")]
        assert uring.fsync_all(ring, failed) is None  # (named_together: fsynced without it)
        ring.restore()
        assert ring.free() == ring.entries  # none of it left to run on the numbers closed next
        later = [unnamed(directory, b"three\n")]
        for fd in failed:
            os.close(fd)
        pipes = os.pipe()  # the failed ones' numbers now: their fsyncs would fail (EINVAL)
        try:
            assert uring.fsync_all(ring, later) == [0]
        finally:
            for fd in (*later, *pipes):
                os.close(fd)
        assert ring.free() == ring.entries
    finally:
        ring.close()


class _Stale(uring.Ring):
    """A ring in which a request of an earlier call is still in flight: a read of an empty
    pipe (user_data 0, into no buffer: it ends with EFAULT), which a byte written right after
    the write-out ends, its completion then among the fsyncs'."""

    def __init__(self, entries: int) -> None:
        super().__init__(entries)
        self.read, self.write = os.pipe()

    def write_out(self, fds: Sequence[int]) -> None:
        super().write_out(fds)
        os.write(self.write, b"x")

    def close(self) -> None:
        super().close()
        os.close(self.read)
        os.close(self.write)


def test_a_completion_left_by_an_earlier_call_is_not_a_files_outcome(directory: int) -> None:
    """An fsync's outcome is its own request's: a completion of a request an earlier call left
    in flight (its enter failed after the kernel took it) is none of this call's files'."""
    ring = _Stale(8)
    try:
        ring.put(22, ring.read, 0, addr=0, length=1)  # IORING_OP_READ, not done: an empty pipe
        ring.enter(0)
        assert ring.ready() == 0
        fd = unnamed(directory, b"data\n" * 4096)
        try:
            assert ring.fsync_all([fd]) == [0]
        finally:
            os.close(fd)
    finally:
        ring.close()
