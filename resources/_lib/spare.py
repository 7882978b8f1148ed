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

After a repair (a file that drifted once is the one likely to drift again), and in a daemon
before the first drift too (`Spare.ahead`, run by engine.handle.Ahead in the agent's idle time
once the graph has converged: before, a file's first repair wrote and fsynced, the slowest of
all; a run that exits at convergence makes none); only for content up to `SIZE_MAX`; at most
`COUNT_MAX` spares made after repairs in the process at once, and beside them at most
`ahead_most()` made ahead, `AHEAD_BYTES` of them on disk (each holds a descriptor and an
inode; a file past that budget gets its spare after its first repair, as before). A spare is used only for the
very directory (as it was: its group and mode too, which give a new file its group when
setgid), content, mode, owner and group it was made for; else the repair writes as
before and the spare is dropped. A repair that comes while the spare is still being written
waits for it: that fsync started earlier than a new one would.

Its open file keeps the mount it is in busy (`umount` says "target is busy"; inotify's
watches do not, and mgmt in Go holds nothing open between its checks): none is made on a
file system whose fsync waits for no disk (NO_GAIN: tmpfs, ramfs, where it saves nothing),
and those made through a mount that leaves the table (`umount -l`, which leaves the file
system alive while a file in it is open) are let go at once (`_Mounts`: the mount table's
watch, engine.mountwatch, while a spare holds a file). A plain `umount` of a disk's file
system still finds them (docs/operations.md).

Where the kernel has io_uring (engine/uring.py), the spare is made on the event loop and only
its fsync leaves it: the O_TMPFILE file is opened, filled and given its mode there (a few
system calls that wait for no disk), its fsync submitted to a ring of the loop's
(`_Fsyncs`), which the kernel's own workers run. No thread of ours wakes for it, and none
takes the GIL: made in a worker thread, each repair woke it, it took the GIL ~6 times
around its system calls, and its reply woke the loop again; beside two busy loops, a repair
that came meanwhile waited behind it for the GIL and for a core (issue 16, docs/benchmarks.md,
"Drift repair beside busy loops"). The completion is read from the ring's memory when the
next repair asks for the spare (no system call); only a repair that finds its fsync still
running has the loop watch the ring's descriptor until it is done. Without io_uring
(`MGMT_IO_URING=0`, an older kernel), the spare is made in a worker thread, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from engine import libc, safefs, uring

SIZE_MAX = 1 << 16  # bytes of content at most for a spare
COUNT_MAX = 256  # spares made after a repair held by the process at once
AHEAD_MAX = 2048  # spares made ahead (before a file's first drift) held at once, at most...
AHEAD_FD_SHARE = 8  # ... and an eighth of the descriptors the process may open
AHEAD_BYTES = 8 << 20  # their size on disk at most (each rounded up to BLOCK)
AHEAD_FLIGHT = 16  # their fsyncs in flight at once
BLOCK = 4096  # what a small file takes on disk at least (ext4's block)
RING_ENTRIES = 64  # fsyncs of spares in a loop's ring at once (more: made in threads)
DEPTH_MAX = 4  # spares one resource keeps at most (a file drifting faster than an fsync)
# File systems whose fsync waits for no disk: a spare saves a repair nothing there, and its
# open file would only hold the mount busy (`umount` says "target is busy").
NO_GAIN = frozenset({"tmpfs", "ramfs"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Want:
    """What a write would make: the directory (device, inode, and its group and mode, which
    a new file's group follows: setgid), content, mode, owner, group."""

    dir: tuple[int, int, int, int]
    data: bytes
    mode: int
    uid: int
    gid: int
    # The mount the directory was reached through (libc.mount_id; 0: unknown): a link
    # crosses no mount (EXDEV), and a spare is let go once its mount leaves the table.
    mount: int = 0


class Spare:
    """One resource's spare copies of its file (see module docstring): one, or up to
    DEPTH_MAX for a file that drifts faster than an fsync."""

    _held: int = 0  # spares of the process made after a repair (ready or being made)
    _ahead: int = 0  # spares of the process made ahead (ready or being made)
    _ahead_bytes: int = 0  # their size on disk (each rounded up to BLOCK)

    def __init__(self) -> None:
        # Oldest first: what each was made for, its job, and its size on disk if it was made
        # ahead (0: after a repair).
        self._made: list[tuple[Want, asyncio.Future[int | None], int]] = []
        # Spares kept: one more each time a repair found none complete (a drift came before
        # the last one's fsync ended), up to DEPTH_MAX: their fsyncs run side by side.
        self._depth = 1
        self._fsyncs: _Fsyncs | None = None  # the loop's ring their fsyncs go through

    @staticmethod
    def want(dir_fd: int, data: bytes, mode: int, uid: int, gid: int) -> Want | None:
        """What a write into dir_fd would make, if a spare can stand for it. An owner or group
        left as is (-1) is the one a new file gets (this process's, or the directory's group
        where it is set-group-ID): a deleted file's repair (-1) and an overwritten one's (the
        file's own, usually the same) then want the same spare."""
        if len(data) > SIZE_MAX:
            return None
        st = os.fstat(dir_fd)
        if libc.fs_type(os.major(st.st_dev), os.minor(st.st_dev)) in NO_GAIN:
            return None
        if uid == -1:
            uid = os.geteuid()
        if gid == -1:
            gid = _new_gid(st.st_mode, st.st_gid)
        directory = (st.st_dev, st.st_ino, st.st_gid, st.st_mode)
        return Want(directory, data, mode, uid, gid, libc.mount_id(dir_fd))

    @staticmethod
    def in_memory(dir_fd: int, data: bytes) -> bool:
        """Whether a write of `data` into dir_fd waits for no disk (a file system of NO_GAIN,
        content up to SIZE_MAX): the repair that makes no spare there writes on the loop, as
        one links a spare in (a hand-off to a thread and back cost it more than the write)."""
        if len(data) > SIZE_MAX:
            return False
        dev = os.fstat(dir_fd).st_dev
        return libc.fs_type(os.major(dev), os.minor(dev)) in NO_GAIN

    def held(self) -> int:
        """How many spares it holds (ready or being made)."""
        return len(self._made)

    async def ready(self) -> int | None:
        """The oldest spare's descriptor once it is complete (None: none, or making it
        failed); the spare is kept (tests)."""
        if not self._made:
            return None
        job = self._made[0][1]
        if self._fsyncs is not None:
            self._fsyncs.wait_for(job)
        return await _result(job)

    async def take(self, want: Want) -> int | None:
        """A complete spare's descriptor if one was made for `want` (the caller links it in,
        then closes it), else None; the spare taken is used up, and so are those made for
        something else. With none complete yet, the oldest is waited for (its fsync started
        before a new write's would), and the resource keeps one more from then on."""
        if not self._made:
            return None
        if self._fsyncs is not None:
            self._fsyncs.reap()
        index = next((i for i, (_made, job, _size) in enumerate(self._made) if job.done()), 0)
        made, job, size = self._made.pop(index)
        if not job.done():
            self._depth = min(self._depth + 1, DEPTH_MAX)
            if self._fsyncs is not None:
                self._fsyncs.wait_for(job)
        try:
            fd = await _result(job)
        finally:
            _release(size)
        others = [one for one in self._made if one[0] != want]
        for one in others:
            self._made.remove(one)
            self._abandon(one[1], one[2])
        if fd is not None and made != want:
            let_go(fd)  # (its close frees its inode)
            return None
        return fd

    def prepare(self, dir_fd: int, want: Want) -> None:
        """Start making spares for `want` in dir_fd until it holds as many as it keeps (their
        fsyncs through the loop's ring, else each made in a worker thread; dir_fd is not
        kept), while the process holds fewer than COUNT_MAX."""
        loop = asyncio.get_running_loop()
        while len(self._made) < self._depth and Spare._held < COUNT_MAX:
            job = self._start(loop, dir_fd, want)
            if job is None:
                return
            Spare._held += 1
            self._made.append((want, job, 0))

    async def now(self, dir_fd: int, want: Want) -> int | None:
        """A spare for `want` made now and awaited, for a repair that found none complete: the
        file filled on the loop, its fsync through the loop's ring, its completion awaited on
        the ring's descriptor (no thread of ours wakes); its descriptor (the caller links it
        in, then closes it), or None where there is no ring, it is full, or the process holds
        COUNT_MAX spares (the caller writes, in a thread)."""
        loop = asyncio.get_running_loop()
        fsyncs = self._fsyncs or _Fsyncs.of(loop)
        if fsyncs is None or not fsyncs.room() or Spare._held >= COUNT_MAX:
            return None
        job = self._start(loop, dir_fd, want, threads=False)
        if job is None:
            return None
        Spare._held += 1
        try:
            fsyncs.wait_for(job)
            return await _result(job)
        finally:
            Spare._held -= 1

    def ahead(self, dir_fd: int, want: Want) -> asyncio.Future[int | None] | None:
        """Start making one spare for `want` in dir_fd before any drift (engine.handle.Ahead:
        a daemon's idle time), if it holds none and the spares made ahead stay within their
        budget (AHEAD_MAX and a share of the descriptor limit, AHEAD_BYTES); its job, or None
        if none was started. A repair takes it as one made after a repair; the next is made
        after that repair, within COUNT_MAX."""
        size = -(-max(len(want.data), 1) // BLOCK) * BLOCK
        if self._made or Spare._ahead >= ahead_most() or Spare._ahead_bytes + size > AHEAD_BYTES:
            return None
        job = self._start(asyncio.get_running_loop(), dir_fd, want)
        if job is None:
            return None
        Spare._ahead += 1
        Spare._ahead_bytes += size
        self._made.append((want, job, size))
        _flight.append(job)
        return job

    def _start(
        self, loop: asyncio.AbstractEventLoop, dir_fd: int, want: Want, *, threads: bool = True
    ) -> asyncio.Future[int | None] | None:
        """A spare for `want` being made: through the ring, else in a worker thread (unless
        not `threads`); None if none can be."""
        # What a new file gets anyway is not asked for (a chown to the directory's group
        # needs no membership of it then).
        uid = -1 if want.uid == os.geteuid() else want.uid
        gid = -1 if want.gid == _new_gid(want.dir[3], want.dir[2]) else want.gid
        fsyncs = self._fsyncs or _Fsyncs.of(loop)
        if fsyncs is not None and fsyncs.room():
            try:
                fd = safefs.unnamed_filled(
                    dir_fd, want.data, mode=want.mode, uid=uid, gid=gid,
                    local=libc.local_fs(dir_fd),
                )  # fmt: skip
            except OSError:
                return None  # no spare: the next repair writes as before
            if fd is None:
                return None  # no unnamed files on this file system: a thread would make none
            job = fsyncs.start(fd)
            if job is not None:
                if self._fsyncs is None:
                    self._fsyncs = fsyncs
                    fsyncs.users += 1
                _Mounts.hold(loop, self)
                return job
            fsyncs.let_go(fd)  # the ring failed (said once): in a thread from now on
        if not threads:
            return None
        fd = os.dup(dir_fd)

        def make() -> int | None:
            with safefs.closing(fd):
                return safefs.unnamed_at(fd, want.data, mode=want.mode, uid=uid, gid=gid)

        _Mounts.hold(loop, self)
        return loop.run_in_executor(None, make)

    def _abandon(self, job: asyncio.Future[int | None], size: int) -> None:
        """A spare not wanted any more: its file closed now, or once it is made."""
        _release(size)
        if self._fsyncs is not None and job in self._fsyncs:
            self._fsyncs.abandon(job)
        elif job.done():
            _close_result(job)
        else:
            job.add_done_callback(_close_result)

    async def close(self) -> None:
        """Drop the spares: each complete one let go (let_go: its close frees its inode), one
        whose fsync is in the ring once reaped (the ring's request holds the file until it is
        done), one being made in a thread once made, waited for."""
        made, self._made = self._made, []
        fsyncs, self._fsyncs = self._fsyncs, None
        _Mounts.let_go(asyncio.get_running_loop(), self)
        threads = []
        for _want, job, size in made:
            _release(size)
            if fsyncs is not None and job in fsyncs:
                fsyncs.abandon(job)
            elif job.done():
                _close_result(job)
            else:
                threads.append(job)
        ending = None
        if fsyncs is not None:
            fsyncs.users -= 1
            if not fsyncs.users:
                ending = fsyncs.close()
        for job in threads:
            with contextlib.suppress(Exception):
                fd = await _result(job)
                if fd is not None:
                    let_go(fd)
        if ending is not None:
            await asyncio.shield(ending)  # cancelled, the thread still ends the ring

    def mounts(self) -> set[int]:
        """The mounts (their ids) its spares were made through."""
        return {want.mount for want, _job, _size in self._made}


class _Mounts:
    """The spares of one loop that hold a file, and the mount table's watch (engine.mountwatch)
    that lets go of those made through a mount that left the table: a lazy unmount (`umount
    -l`) takes it away at once, but a file open in it keeps the mount, and its file system,
    alive; their files closed, it is freed (its device can be taken away). Made by the loop's
    first spare, ended with its last one's close."""

    _loops: dict[asyncio.AbstractEventLoop, _Mounts] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from engine.mountwatch import MountWatch  # (a daemon's first spare's)

        self.loop = loop
        self.spares: set[Spare] = set()
        self.closing: set[asyncio.Task[None]] = set()
        self.watch = MountWatch.open(loop, self._changed)
        self.ids = set() if self.watch is None else _ids(self.watch.table)

    @classmethod
    def hold(cls, loop: asyncio.AbstractEventLoop, spare: Spare) -> None:
        """`spare` holds (or is making) a file: let go of it if its mount leaves the table."""
        mounts = cls._loops.get(loop)
        if mounts is None:
            mounts = cls._loops[loop] = _Mounts(loop)
        mounts.spares.add(spare)

    @classmethod
    def let_go(cls, loop: asyncio.AbstractEventLoop, spare: Spare) -> None:
        """`spare` holds nothing any more (closed): the watch ends with the loop's last one."""
        mounts = cls._loops.get(loop)
        if mounts is not None:
            mounts.spares.discard(spare)
            mounts._end_if_idle()

    def _changed(self, _points: set[str]) -> None:
        """The table changed: the spares made through a mount that left it are closed
        (Spare.close, in a task of this loop's); the next repair of their files writes, as
        without a spare, and makes the next through the mount the file is in then."""
        assert self.watch is not None
        ids = _ids(self.watch.table)
        gone, self.ids = self.ids - ids, ids
        if not gone:
            return
        for spare in [one for one in self.spares if not one.mounts().isdisjoint(gone)]:
            log.debug("spares let go: the mount they were made through left the table")
            self.spares.discard(spare)
            task = self.loop.create_task(spare.close())
            self.closing.add(task)
            task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self.closing.discard(task)
        self._end_if_idle()

    def _end_if_idle(self) -> None:
        if self.spares or self.closing or _Mounts._loops.get(self.loop) is not self:
            return
        del _Mounts._loops[self.loop]
        if self.watch is not None:
            self.watch.close()


def _ids(table: dict[bytes, bytes]) -> set[int]:
    """The mount ids of a mountinfo table (engine.mountwatch.read_table: its keys)."""
    return {int(key) for key in table if key.isdigit()}


def _new_gid(dir_mode: int, dir_gid: int) -> int:
    """The group a new file in a directory of this mode and group gets (the set-group-ID rule)."""
    return dir_gid if dir_mode & stat.S_ISGID else os.getegid()


def _release(size: int) -> None:
    """A spare is gone (taken, dropped): the budget it counted in (`size`: made ahead) has
    room for another."""
    if size:
        Spare._ahead -= 1
        Spare._ahead_bytes -= size
    else:
        Spare._held -= 1


_ahead_most: list[int] = []
_flight: collections.deque[asyncio.Future[int | None]] = collections.deque()  # made ahead


def spent() -> bool:
    """Whether the budget of spares made ahead is spent (by their count: no file's lookup
    for nothing)."""
    return Spare._ahead >= ahead_most()


def ahead_most() -> int:
    """How many spares are made ahead at most: AHEAD_MAX, or a share of the descriptors the
    process may open if that is fewer (each holds one; the checks may use a quarter,
    engine.check_limit, and the old inodes a burst replaced a quarter, safefs.keep_most)."""
    if not _ahead_most:
        import resource  # (only a daemon's first spare made ahead asks)

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        share = AHEAD_MAX if soft == resource.RLIM_INFINITY else soft // AHEAD_FD_SHARE
        _ahead_most.append(min(AHEAD_MAX, share))
    return _ahead_most[0]


async def flight_room() -> None:
    """Return once fewer than AHEAD_FLIGHT spares made ahead are being made (their fsyncs
    side by side in the ring: a daemon's first convergence of thousands of files does not
    queue thousands of journal commits at once)."""
    while _flight and _flight[0].done():
        _flight.popleft()
    while len(_flight) >= AHEAD_FLIGHT:
        job = _flight.popleft()
        fsyncs = _Fsyncs._loops.get(asyncio.get_running_loop())
        if fsyncs is not None and job in fsyncs:
            fsyncs.wait_for(job)
        await asyncio.wait([job])
        while _flight and _flight[0].done():
            _flight.popleft()


class _Fsyncs:
    """One event loop's io_uring (see the module doc), made by the loop's first spare and
    ended when the last spare using it is closed. In it: the spares' fsyncs (`start`; their
    completions read from the ring's memory by `reap`, the loop watching the ring's
    descriptor only while a repair waits for one: `wait_for`), and the closes let go
    (`let_go`: run by the kernel's worker, hard-linked behind the next fsync, else submitted
    on their own by `_flush`). A failed io_uring_enter ends its use (`_fail`: threads from
    then on); its end (`close`, or `_fail` where no spare uses it) waits in a worker thread
    for the closes still in it."""

    _loops: dict[asyncio.AbstractEventLoop, _Fsyncs] = {}
    _failed = False  # a ring could not be made or one failed: no more are made

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: uring.Ring) -> None:
        self._loop, self._ring = loop, ring
        self._jobs: dict[int, tuple[asyncio.Future[int | None], int]] = {}  # in the ring
        self._next = 0
        self._mine: set[asyncio.Future[int | None]] = set()  # jobs not resolved yet
        self._closes: set[int] = set()  # the tokens of the closes in the ring (let_go)
        self._to_close: list[int] = []  # the descriptors let go, not in the ring yet
        self._flushing = False  # a _flush of the closes let go is due (call_soon)
        self._awaited: set[asyncio.Future[int | None]] = set()  # what the loop watches for
        self._watching = False
        self._broken = False  # an enter failed, or the ring ended: nothing more goes in
        self._ended = False  # the ring is closed, or a thread closes it (_end)
        self._threads: set[asyncio.Future[None]] = set()  # closes let go to threads
        self.users = 0  # spares whose fsyncs go through this ring

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Fsyncs | None:
        """The loop's, made if need be; None without io_uring."""
        fsyncs = cls._loops.get(loop)
        if fsyncs is not None or cls._failed:
            return fsyncs
        if uring.unavailable() is not None:
            cls._failed = True
            return None
        try:
            ring = uring.Ring(RING_ENTRIES)
        except OSError as err:  # out of memory, of descriptors: threads for now
            log.debug("spares without io_uring: %s", err)
            return None
        fsyncs = cls._loops[loop] = _Fsyncs(loop, ring)
        return fsyncs

    def room(self) -> bool:
        """Whether another fsync can go in (each in flight holds a completion slot; none once
        the ring failed)."""
        used = len(self._jobs) + len(self._closes) + len(self._to_close)
        return not self._broken and used < self._ring.entries

    def let_go(self, fd: int) -> None:
        """Close fd in the kernel's worker (never inline at the submission, so whatever its
        close frees is freed there, off the loop): after the next fsync, linked to it (a
        repair makes its next spare right after: the worker that runs that fsync closes fd
        next, no other one woken for it), else on its own once the loop has run what is
        ready. Its completion is read with the fsyncs' (it wakes the loop only while a
        repair waits for one). If the ring cannot take it (full, or it failed), fd is
        closed in a worker thread: off the loop too."""
        if not self.room():
            self._close_in_thread(fd)
            return
        self._to_close.append(fd)
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _close_in_thread(self, fd: int) -> None:
        """Close fd in a worker thread (the ring's end waits for it); here if the executor is
        shut down (the process ends)."""
        job = _in_thread(self._loop, functools.partial(_close, fd))
        if job is None:
            _close(fd)
            return
        self._threads.add(job)
        job.add_done_callback(self._threads.discard)

    def _fail(self, err: OSError) -> None:
        """The ring's io_uring_enter failed: nothing more goes in it, and the process makes
        no other ring (said once; spares are made in threads from now on, and what is let go
        is closed in threads, off the loop). What the kernel has not taken is taken back
        (none of it will run): its closes let go are done in threads, and so are the files
        of its fsyncs' jobs, which end with None (the repair writes). What it took runs, and
        the ring's end waits for its closes. A ring no spare uses (the failure was its
        first fsync's, or a close's let go before any) is ended now (`_end`): none will use
        it, and no spare's close would end it. It stays the loop's, ended: what is let go
        later is closed in threads too."""
        log.debug("spares without io_uring from now on: %s", err)
        self._broken = True
        _Fsyncs._failed = True
        self._flushing = False
        fds, self._to_close = self._to_close, []
        for _opcode, fd, token in self._ring.withdraw():
            if token in self._closes:
                self._closes.discard(token)
                fds.append(fd)
            elif (made := self._jobs.pop(token, None)) is not None:
                job, file = made
                fds.append(file)
                if not job.done():
                    job.set_result(None)
            # (else start's own fsync: its caller closes its file)
        for fd in fds:
            self._close_in_thread(fd)
        self.reap()  # (what the loop watched the ring for may be over)
        if not self.users:
            ending = self._end()
            if ending is not None:  # (awaited by a close, if any; else by the executor's end)
                self._threads.add(ending)
                ending.add_done_callback(self._threads.discard)

    def _put_closes(self) -> None:
        """Put the closes let go (let_go), each hard-linked to the next (run one after the
        other by one worker, whatever each one's outcome), forced to the worker."""
        fds, self._to_close = self._to_close, []
        for i, fd in enumerate(fds):
            self._next += 1
            link = uring.SQE_IO_HARDLINK if i < len(fds) - 1 else 0
            self._ring.put(uring.OP_CLOSE, fd, self._next, flags=uring.SQE_ASYNC | link)
            self._closes.add(self._next)

    def _flush(self) -> None:
        """Put the closes let go (let_go) in the ring and submit them, on their own: the loop
        has run what was ready, and no fsync took them behind it (start) meanwhile."""
        if not self._flushing:  # an fsync took them, or the ring failed or ended meanwhile
            return
        self._flushing = False
        if self._to_close:
            try:
                self._put_closes()
                self._ring.enter(0)
            except OSError as err:
                self._fail(err)

    def start(self, fd: int) -> asyncio.Future[int | None] | None:
        """fsync the complete unnamed file fd in the ring: a future of fd once it is durable
        (None if the fsync failed: fd is closed then); None if the ring failed (_fail: fd is
        still the caller's). The closes let go since the last submission go in hard-linked
        behind it (let_go)."""
        self._next += 1
        token = self._next
        try:
            closes = bool(self._to_close)
            self._ring.put(uring.OP_FSYNC, fd, token, flags=uring.SQE_IO_HARDLINK if closes else 0)
            if closes:
                self._flushing = False
                self._put_closes()
            self._ring.enter(0)
        except OSError as err:
            self._fail(err)
            return None
        job: asyncio.Future[int | None] = self._loop.create_future()
        self._jobs[token] = (job, fd)
        self._mine.add(job)
        job.add_done_callback(self._mine.discard)
        return job

    def __contains__(self, job: object) -> bool:
        """Whether `job` is one of this ring's (in it, or reaped already)."""
        return isinstance(job, asyncio.Future) and job in self._mine

    def wait_for(self, job: asyncio.Future[int | None]) -> None:
        """What the ring completed is read; if `job` is not among it, the loop watches the
        ring's descriptor until it is done (and any other waited for). Not until every fsync
        in the ring is: a file drifting back to back keeps some in flight, and each one's
        completion woke the loop for nothing, a wake-up that waits for a core when both are
        busy (docs/benchmarks.md, "A repair's waits")."""
        self.reap()
        if job.done():
            return
        self._awaited.add(job)
        if not self._watching:
            self._loop.add_reader(self._ring.fd, self.reap)
            self._watching = True

    def abandon(self, job: asyncio.Future[int | None]) -> None:
        """Its spare is dropped: its file is let go now (let_go: its close frees its inode),
        or once reaped if still in the ring."""
        if job.done():
            _close_result(job)
        else:
            job.cancel()  # reap lets its file go

    def reap(self) -> None:
        """Resolve the jobs whose fsyncs the ring completed, and forget the closes let go it
        ran (its memory: no system call); stop watching the ring once nothing is waited for."""
        if self._ended:  # (its memory unmapped, or a thread's)
            return
        for token, res in self._ring.reap():
            if token in self._closes:  # a descriptor let go: closed (failed: gone anyway)
                self._closes.discard(token)
                continue
            job, fd = self._jobs.pop(token, (None, -1))
            if job is None:
                continue
            if res < 0 or job.done():  # the fsync failed (the repair writes), or abandoned
                self.let_go(fd)
                if not job.done():
                    job.set_result(None)
            else:
                job.set_result(fd)
        awaited = self._awaited
        if awaited:
            awaited.difference_update([job for job in awaited if job.done()])
        if self._watching and not awaited:
            self._loop.remove_reader(self._ring.fd)
            self._watching = False

    def close(self) -> asyncio.Future[list[None]] | None:
        """Close the ring (`_end`), no longer the loop's. What to await: the thread's job that
        ends it and the closes let go to threads (_close_in_thread); None if all is done."""
        if _Fsyncs._loops.get(self._loop) is self:
            del _Fsyncs._loops[self._loop]
        ending = self._end()
        waits = [*self._threads, *([] if ending is None else [ending])]
        return asyncio.gather(*waits) if waits else None

    def _end(self) -> asyncio.Future[None] | None:
        """End the ring, once: what is still in it keeps its file until done (the kernel's
        own reference), ours are closed now. The closes let go that the kernel has not run
        yet (each may be hard-linked behind an fsync that waits for the disk, and may itself
        wait for a discard) are waited for in a worker thread, which then closes the ring: not
        by the loop, and not left to the ring's end, which cancels what has not started (their
        descriptors never closed). Until the kernel's worker closes one, its number stays
        ours: the loop cannot reuse it meanwhile. Nothing goes in it after. That thread's job;
        None if the ring is closed here (or was before)."""
        if self._ended:
            return None
        self.reap()
        if self._watching:
            self._loop.remove_reader(self._ring.fd)
            self._watching = False
        self._flushing = False  # (a _flush due finds the ring ended)
        self._ended = True  # (reap reads it no more)
        try:
            if self._to_close:
                self._put_closes()
                self._ring.enter(0)
        except OSError as err:
            self._fail(err)
        self._broken = True
        for job, fd in self._jobs.values():
            os.close(fd)
            if not job.done():
                job.set_result(None)
        self._jobs.clear()
        # From here on only the thread reads the ring (none of the loop's spares uses it).
        ring, closes, self._closes = self._ring, self._closes, set()
        drain = functools.partial(_drain, ring, closes)
        ending = _in_thread(self._loop, drain) if closes else None
        if ending is None:  # nothing to wait for (the ring's close does not block), or the
            drain()  # executor is shut down (the process ends): here, as before
        return ending


def _drain(ring: uring.Ring, closes: set[int]) -> None:
    """Wait until the kernel has run the closes of `closes` (their tokens), then close the
    ring (_Fsyncs.close: in a worker thread, the ring no longer the loop's). Each wait is for
    as many completions as closes are left (each of them ends with one; an fsync's may come
    first): the thread wakes once for them all, not once each (each wake-up takes the GIL)."""
    try:
        while True:
            closes.difference_update(token for token, _res in ring.reap())
            if not closes:
                break
            ring.enter(len(closes))
    except OSError as err:  # (what is left is cancelled by the ring's end: left open)
        log.debug("letting go of descriptors failed: %s", err)
    finally:
        ring.close()


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):  # (a failed close frees fd too)
        os.close(fd)


def _in_thread(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], None]
) -> asyncio.Future[None] | None:
    """fn() in a worker thread of the loop's default executor, outside any check_apply's
    context (the engine's stop gate refuses nothing of it: engine/stopgate.py); None if the
    executor is shut down."""
    try:
        return contextvars.Context().run(loop.run_in_executor, None, fn)
    except RuntimeError:
        return None


def let_go(fd: int) -> None:
    """Close fd, whose close may be the last reference to an inode a repair replaced or that
    was deleted again at once (a file overwritten, a drift right after a repair): its blocks
    are freed then, and ext4 waits for their discard (mounted `discard`) and for their
    writeback, in D state: 2-13 ms beside two busy loops, each wake-up waiting for a core
    (docs/benchmarks.md, "A repair's waits"). Through the loop's ring, closed by the kernel's
    worker, off the loop and off the repair (a ring that cannot take it, full or failed: in a
    worker thread); without io_uring, here."""
    fsyncs = _Fsyncs._loops.get(asyncio.get_running_loop())  # (the spares' ring: one made)
    if fsyncs is None:
        os.close(fd)
    else:
        fsyncs.let_go(fd)


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
    """The file of a spare made and not wanted is let go (let_go: its close frees its inode)."""
    if not job.cancelled() and job.exception() is None and (fd := job.result()) is not None:
        let_go(fd)
