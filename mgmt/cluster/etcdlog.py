"""etcd's log: a file in the prefix that etcd writes and the agent follows, so that etcd never
waits on its agent.

etcd wrote its log to a pipe the agent read. An agent that hangs (SIGSTOP, a long pause, a
wedged loop) stops reading; once the pipe's 64 KiB are full, etcd blocks in its next log write,
and every goroutine that logs after it (zap writes under a lock): a leader blocked so is an
outage caused by one hung agent. A reader thread would not help (SIGSTOP stops every thread of
the agent, a pause of the interpreter holds them), nor would a non-blocking pipe (Go's runtime
waits on EAGAIN until the pipe drains: the write still blocks its goroutine). A write to a
file never waits on its reader.

- `<prefix>/etcd.log` (0600, in the private prefix) is etcd's stderr, made anew at each start
  of etcd (the previous one kept as `etcd.log.1`): its JSON log (`--log-outputs stderr`) and
  what the Go runtime writes when it dies (a panic and its stack), in order.
- The agent reads what is new whenever inotify says the file was written (a timer, every
  POLL s, where no inotify instance can be had), whole lines (one cut by a read waits for
  its end), at most CHUNK bytes before the event loop runs again.
- Bounded: what the agent has read, but the last KEEP bytes, is freed in STEP pieces
  (fallocate's PUNCH_HOLE): the file keeps its length, its start reads as zero bytes, and it
  holds on disk what the agent read last (KEEP) and what it has not read yet. `tail` reads
  it, `grep -a` too. A file system that cannot punch holes: the file grows until etcd's next
  start (said once).
- While the agent hangs, etcd goes on writing: the file grows at etcd's log rate (a few KB a
  minute at info level, more under load), and the agent reads it all when it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine import inotify

log = logging.getLogger("cluster")

CHUNK = 64 * 1024  # bytes read before the event loop runs again
KEEP = 4 * 1024 * 1024  # bytes read that stay on disk (the file's last lines, for the operator)
STEP = 1024 * 1024  # bytes freed at a time
MAX_LINE = 64 * 1024  # a "line" this long without its newline is taken as it is
POLL = 0.25  # seconds between reads when no inotify instance can be had
# The name of the task `follow` waits for etcd's next write in (one at a time, made again as
# etcd writes): named, so that a check of what a client or a stop left (tests) can tell it.
FOLLOWING = "etcd log: next write"
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (<linux/falloc.h>)
_NO_PUNCH: set[Path] = set()  # the log files said to be unable to punch holes (said once)


@functools.cache
def _fallocate() -> Any:
    """libc's fallocate with 64-bit offsets (`fallocate64`: on a 32-bit host `fallocate`'s are
    32-bit, and 64-bit ones given to it would punch nothing useful)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = getattr(libc, "fallocate64", None) or libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate


def _punch(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of `length` bytes at `offset` (OSError if it cannot)."""
    if _fallocate()(fd, _PUNCH_HOLE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def path_of(data_dir: Path) -> Path:
    """The log file of the etcd whose data dir is `data_dir`: `<prefix>/etcd.log`."""
    return data_dir.with_name(data_dir.name + ".log")


class EtcdLog:
    """One etcd process's log file (see the module doc): `create()` before the spawn (its
    descriptor is etcd's stderr), then `follow()` until the process exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1  # the agent's descriptor (read, and punch: it needs write access)
        self.offset = 0  # bytes read
        self.freed = 0  # bytes punched from the start
        self._partial = b""  # the start of a line whose end was not written yet
        self._changed = asyncio.Event()

    def create(self) -> int:
        """Keep the previous file as `.1`, make a new one: a descriptor for etcd's stderr
        (O_APPEND; the caller closes it once etcd has it). OSError if it cannot."""
        old = self.path.with_name(self.path.name + ".1")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, old)  # (a symbolic link is moved, never followed)
        flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        etcd = os.open(self.path, flags | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            mine, read = os.fstat(etcd), os.fstat(self.fd)
            if (mine.st_dev, mine.st_ino) != (read.st_dev, read.st_ino):  # (a private dir)
                raise OSError(errno.EEXIST, "replaced as it was opened", str(self.path))
        except OSError:
            os.close(etcd)
            self.close()
            raise
        return etcd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    async def follow(self, exited: Awaitable[object], on_line: Callable[[str], None]) -> None:
        """Hand each line etcd writes to `on_line`, until `exited` is done and what etcd
        wrote until then is read (its last line too, if it has no newline)."""
        watcher = self._watch()
        end = asyncio.ensure_future(exited)
        changed = asyncio.create_task(self._changed.wait(), name=FOLLOWING)
        try:
            while not end.done():
                self._changed.clear()
                await self._read(on_line)
                if changed.done():
                    changed = asyncio.create_task(self._changed.wait(), name=FOLLOWING)
                await asyncio.wait(
                    [end, changed],
                    timeout=POLL if watcher is None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            await self._read(on_line)
            if self._partial:
                on_line(self._partial.decode(errors="replace").strip())
                self._partial = b""
        finally:
            changed.cancel()
            end.cancel()
            await asyncio.gather(changed, end, return_exceptions=True)
            if watcher is not None:
                watcher.close()

    def _watch(self) -> inotify.Inotify | None:
        """An inotify instance that wakes `follow` when the file is written (None: none)."""
        try:
            watcher = inotify.Inotify(lambda events: self._changed.set())
        except OSError as err:
            log.debug("no inotify instance for etcd's log (%s): read every %ss", err, POLL)
            return None
        try:
            watcher.add_watch(self.path, inotify.MODIFY | inotify.DONT_FOLLOW)
        except OSError as err:
            log.debug("cannot watch etcd's log (%s): read every %ss", err, POLL)
            watcher.close()
            return None
        return watcher

    async def _read(self, on_line: Callable[[str], None]) -> None:
        """Read what is new, CHUNK bytes at a time (the event loop runs between two)."""
        while True:
            chunk = os.pread(self.fd, CHUNK, self.offset)
            if not chunk:
                return
            self.offset += len(chunk)
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            if len(self._partial) >= MAX_LINE:
                lines.append(self._partial)
                self._partial = b""
            for line in lines:
                on_line(line.decode(errors="replace").strip())
            self._free()
            if len(chunk) < CHUNK:
                return
            await asyncio.sleep(0)  # (a yield to the loop: a long backlog is read in steps)

    def _free(self) -> None:
        """Punch what was read, but the last KEEP bytes, in STEP pieces (see the module doc)."""
        upto = (self.offset - KEEP) // STEP * STEP
        if upto <= self.freed or self.freed < 0:
            return
        try:
            _punch(self.fd, self.freed, upto - self.freed)
        except OSError as err:
            self.freed = -1  # not again for this file
            if self.path not in _NO_PUNCH:
                _NO_PUNCH.add(self.path)
                log.warning(
                    "cannot free what was read of etcd's log %s (%s): it grows until etcd restarts",
                    self.path,
                    err.strerror,
                )
            return
        self.freed = upto
