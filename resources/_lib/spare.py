"""A spare copy of a small file, written and fsynced ahead, so that a repair only links it in.

A repair of drift (a managed file deleted or overwritten) used to write a new file and wait
for its fsync before the rename: on ext4 that fsync is a journal commit, which also writes
what other processes have pending, and took 1-80 ms beside other work, now and then hundreds
(issue 16, docs/benchmarks.md). Durability is kept by doing that fsync *before* the drift: once
a resource has repaired its file, it keeps one complete, fsynced, unnamed copy of the wanted
content (`safefs.unnamed_at`: O_TMPFILE, its final owner and mode) in the file's directory,
made in a worker thread after the repair; the next repair links it in under a temp name and
renames it over the path (`safefs.link_at`): no fsync on the way, and after a crash the path
holds the old or the new content, as before.

Only after a repair (a file that drifted once is the one likely to drift again; a first run of
100,000 files makes none), only for content up to `SIZE_MAX`, and at most `COUNT_MAX` spares
in the process at once (each holds a descriptor and an inode). A spare is used only for the
very directory (as it was: its group and mode too, which give a new file its group when
setgid), content, mode, owner and group it was made for; else the repair writes as
before and the spare is dropped. A repair that comes while the spare is still being written
waits for it: that fsync started earlier than a new one would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

from engine import safefs

SIZE_MAX = 1 << 16  # bytes of content at most for a spare
COUNT_MAX = 256  # spares held by the process at once


@dataclass(frozen=True)
class Want:
    """What a write would make: the directory (device, inode, and its group and mode, which
    a new file's group follows: setgid), content, mode, owner, group."""

    dir: tuple[int, int, int, int]
    data: bytes
    mode: int
    uid: int
    gid: int


class Spare:
    """One resource's spare copy of its file (see module docstring)."""

    _held: int = 0  # spares of the process (ready or being made)

    def __init__(self) -> None:
        self._want: Want | None = None
        self._job: asyncio.Future[int | None] | None = None

    @staticmethod
    def want(dir_fd: int, data: bytes, mode: int, uid: int, gid: int) -> Want | None:
        """What a write into dir_fd would make, if a spare can stand for it."""
        if len(data) > SIZE_MAX:
            return None
        st = os.fstat(dir_fd)
        return Want((st.st_dev, st.st_ino, st.st_gid, st.st_mode), data, mode, uid, gid)

    async def take(self, want: Want) -> int | None:
        """The spare's descriptor if it was made for `want` (the caller links it in, then
        closes it), else None; either way the spare is used up."""
        job, made = self._job, self._want
        if job is None:
            return None
        self._job = self._want = None
        try:
            fd = await _result(job)
        finally:
            Spare._held -= 1
        if fd is not None and made != want:
            os.close(fd)
            return None
        return fd

    def prepare(self, dir_fd: int, want: Want) -> None:
        """Start making a spare for `want` in dir_fd (a worker thread; dir_fd is duplicated),
        unless one is held or the process holds COUNT_MAX."""
        if self._job is not None or Spare._held >= COUNT_MAX:
            return
        fd = os.dup(dir_fd)

        def make() -> int | None:
            with safefs.closing(fd):
                return safefs.unnamed_at(fd, want.data, mode=want.mode, uid=want.uid, gid=want.gid)

        Spare._held += 1
        self._want = want
        self._job = asyncio.get_running_loop().run_in_executor(None, make)

    async def close(self) -> None:
        """Drop the spare (waiting for one being made)."""
        job, self._job, self._want = self._job, None, None
        if job is None:
            return
        Spare._held -= 1
        with contextlib.suppress(Exception):
            fd = await _result(job)
            if fd is not None:
                os.close(fd)


async def _result(job: asyncio.Future[int | None]) -> int | None:
    """The job's descriptor; None if making it failed (the repair then writes as before).
    Cancelled meanwhile, the job still ends (it holds descriptors) and its file is freed."""
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(_close_result)
        raise
    except OSError:
        return None


def _close_result(job: asyncio.Future[int | None]) -> None:
    if not job.cancelled() and job.exception() is None and (fd := job.result()) is not None:
        os.close(fd)
