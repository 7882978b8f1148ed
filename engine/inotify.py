"""Linux inotify for asyncio, on the process's own libc through ctypes (no thread, no polling).

`Inotify(on_events)` opens a non-blocking inotify instance and registers its descriptor with
the running loop's reader: whenever the kernel has events, the loop reads them all and calls
`on_events(events)` with the batch, in order. Watch descriptors are plain ints.

This replaces asyncinotify: it looked libc up with `ctypes.util.find_library`, which costs
about 10 ms at every start of the agent (a cron run's budget is 250 ms in all); libc is
already loaded in the process, so `PyDLL(None)` finds the three functions at no cost.

The queue is read by libc's read() with the GIL held (engine/libc.py): the descriptor is
non-blocking, so the call cannot wait; `os.read` released the GIL and then waited ~0.1 ms to
get it back from the writing threads of a first run, twice per file.

`Inotify(on_events, private=wants)`: an event of an entry with a writer's private name (see
`is_private`) is dropped while it is parsed, before any object is made for it, unless
`wants(wd)` says that watch has a reader for such names. engine.safefs writes a file as an
unnamed `O_TMPFILE` inode, which the kernel names "#<inode number>" in the events of its
writes, and links it in under a ".mgmt.<hex>" temp name that it then renames: 5 of the 6
events that each file written in a watched directory costs (60,000 events in a 10,000-file
first run), which no path watcher asks for.

Closing an instance that has had watches makes the kernel wait for a grace period of its own
(7-23 ms measured here, whatever the number of watches; none without watches): `Inotify.close`
leaves that to a thread. At the end of the `mgmt` command a thread would not do: the process's
exit waits for its threads, that one included (~10-17 ms of every cron run, its parent waiting
for it). Once `leave_to_exit()` was called (the agent's final stop), `Inotify.close` gives a
copy of the instance's descriptor to a process that ends when this one does (`cat`, its input
a pipe that this process's exit closes; engine/holder.py starts it, ~0.2 ms, the GIL released
meanwhile), then closes its own, at once: the kernel tears the instance down in that one's
exit, which nobody waits for. (Until 2026-12-06 a thread did that hand-over; with the GIL
released around the spawn, the process could exit before that thread had started it.)
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import os
import struct
import time
from _thread import start_new_thread
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from engine import holder, libc

log = logging.getLogger("engine")

# <sys/inotify.h>
ACCESS = 0x00000001
MODIFY = 0x00000002
ATTRIB = 0x00000004
CLOSE_WRITE = 0x00000008
CLOSE_NOWRITE = 0x00000010
OPEN = 0x00000020
MOVED_FROM = 0x00000040
MOVED_TO = 0x00000080
CREATE = 0x00000100
DELETE = 0x00000200
DELETE_SELF = 0x00000400
MOVE_SELF = 0x00000800
UNMOUNT = 0x00002000
Q_OVERFLOW = 0x00004000
IGNORED = 0x00008000
ONLYDIR = 0x01000000
DONT_FOLLOW = 0x02000000
ISDIR = 0x40000000

_NONBLOCK = os.O_NONBLOCK
_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
_READ_SIZE = 64 * 1024
_READ_SIZE_T = ctypes.c_size_t(_READ_SIZE)  # as libc.read takes it
_READS_PER_CALL = 16  # at most 1 MiB of events per callback, so the loop stays responsive


class Event(NamedTuple):
    # The watch descriptor (-1 for Q_OVERFLOW).
    wd: int
    mask: int
    cookie: int
    # The entry's name, for an event on a directory's entry; None for the watched path itself.
    name: bytes | None


class _Libc:
    """The three inotify calls, with errno, the GIL held (engine/libc.py: a watch is added
    on the event loop, also while the writing threads of a first run hold the GIL)."""

    def __init__(self) -> None:
        libc = ctypes.PyDLL(None, use_errno=True)
        self.init1 = libc.inotify_init1
        self.init1.argtypes = [ctypes.c_int]
        # (int, const char *, uint32_t), without argtypes (one call per file: see engine/libc.py);
        # every mask the watcher uses fits a C int.
        self.add_watch = libc.inotify_add_watch
        self.rm_watch = libc.inotify_rm_watch
        self.rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


@functools.cache
def _calls() -> _Libc:
    return _Libc()


# errno of a call -> the kernel limit it means, with the value to suggest (docs/operations.md).
LIMITS = {
    ("inotify_add_watch", errno.ENOSPC): ("fs.inotify.max_user_watches", 524288),
    ("inotify_init1", errno.EMFILE): ("fs.inotify.max_user_instances", 1024),
}


# limit_hint's last answers: (what, code) -> (when, hint). Out of watches, every watch added
# is refused, each with its hint: two reads of /proc each (a first run of 2,000 files refused
# ~115,000 times spent 8.3 of its 15 s reading them).
_HINTS: dict[tuple[str, int], tuple[float, str]] = {}
HINT_FOR = 1.0  # seconds a hint is given again without reading the limits again


def limit_hint(what: str, code: int) -> str:
    """What to do when `what` failed with `code` because of a kernel limit ("" otherwise); the
    limits it names are read again HINT_FOR seconds after the last time."""
    if (what, code) not in LIMITS:
        return ""
    now = time.monotonic()
    last = _HINTS.get((what, code))
    if last is not None and now - last[0] < HINT_FOR:
        return last[1]
    hint = _limit_hint(what, code)
    _HINTS[(what, code)] = (now, hint)
    return hint


def _limit_hint(what: str, code: int) -> str:
    name, suggested = LIMITS[(what, code)]
    now = _sysctl(name)
    if now is None:
        return f"; the limit is the sysctl {name}: raise it (sysctl -w {name}={suggested})"
    # The same limit of the user namespace the agent runs in (a rootless container's): the
    # lower one is the one hit, and only that namespace's owner can raise it.
    nsname = NAMESPACED[name]
    there = _sysctl(nsname)
    if there is not None and there < now:
        return (
            f"; this user namespace's limit {nsname} is {there:,} (the host's {name}: "
            f"{now:,}): raise it where the namespace is made, e.g. to the host's "
            f"(sysctl -w {nsname}={now})"
        )
    return (
        f"; the kernel limit {name} is {now:,} (per user): raise it, e.g. "
        f"sysctl -w {name}={max(suggested, 2 * now)} (and in /etc/sysctl.d/ to keep it)"
    )


# A limit's sysctl -> the same limit of the user namespace (user_namespaces(7)).
NAMESPACED = {
    "fs.inotify.max_user_watches": "user.max_inotify_watches",
    "fs.inotify.max_user_instances": "user.max_inotify_instances",
}


def _sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text())
    except (OSError, ValueError):
        return None


def _error(what: str, path: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}{limit_hint(what, code)}", path)


def _close_last(fd: int, then: Callable[[], None] | None) -> None:
    """Close an instance's last descriptor: the kernel tears the instance down meanwhile;
    then call `then`, if given."""
    try:
        os.close(fd)
    except OSError as err:  # nothing a thread of its own could do about it but say it
        log.warning("closing an inotify instance: %s", err)
    if then is not None:
        then()


class _Exit:
    """The process is ending (`leave_to_exit`), the processes `hold_until_exit` started, and
    the descriptors waiting to ride with the next one (`ride`)."""

    def __init__(self) -> None:
        self.ending = False
        self.holders: list[holder.Holder] = []  # kept until the exit (they end with it)
        self.riding: dict[int, str] = {}  # a descriptor -> what it is


_EXIT = _Exit()
# What `hold_until_exit` starts: it reads its input until this process's exit closes the pipe.
HOLDER = ("/bin/cat", "/usr/bin/cat")


def leave_to_exit() -> None:
    """The process is ending: an instance closed from now on is handed over to a process that
    ends with this one (`hold_until_exit`) before its close."""
    _EXIT.ending = True


def ride(fd: int, what: str) -> None:
    """`fd` (`what`) goes to the next process `hold_until_exit` starts, beside that one's own
    descriptor: a cron run's prefix lock rides with its inotify instance, given up at the
    final stop, one process started for both (each start waits for the child's exec: beside
    busy cores, for a core). Its owner takes it back (`alight`) before it closes it."""
    _EXIT.riding[fd] = what


def alight(fd: int) -> bool:
    """`fd` no longer rides (`ride`): whether it still did, no holder having taken it (its
    owner then hands it over itself, or closes it)."""
    return _EXIT.riding.pop(fd, None) is not None


def hold_until_exit(fd: int, what: str) -> bool:
    """Give a copy of `fd` to a process that ends when this one does (HOLDER, reading a pipe
    that this process's exit closes), with those riding (`ride`): what the kernel does at the
    last close of what each refers to then happens in that process's exit, which nobody waits
    for. False if none could start (it says so at debug level; the riders still ride). The
    caller still closes its own `fd`."""
    program = next((path for path in HOLDER if os.access(path, os.X_OK)), None)
    if program is None:
        return False
    riding = [rider for rider in _EXIT.riding if rider != fd]
    try:  # (engine.holder: started without holding the GIL, no other descriptor given)
        _EXIT.holders.append(holder.start(program, [fd, *riding]))
    except OSError as err:
        log.debug("no process to hand %s over to: %s", what, err)
        return False
    for rider in riding:
        log.debug("%s handed over with %s", _EXIT.riding.pop(rider), what)
    return True


# The first characters of private names: an O_TMPFILE inode's ("#<inode>") and engine.safefs's
# temp names (its TEMP_PREFIX, ".mgmt.<hex>").
PRIVATE = ("#", ".mgmt.")
_FIRST = frozenset(ord(prefix[0]) for prefix in PRIVATE)
_WHOLE = frozenset(ord(prefix) for prefix in PRIVATE if len(prefix) == 1)  # "#": no more to test
_PRIVATE = tuple(prefix.encode() for prefix in PRIVATE)
_new_event = tuple.__new__  # Event(...) without its Python __new__'s frame (~1.5 K instructions)


def is_private(name: str) -> bool:
    """Whether `name` is one a writer uses for a file before it is in place (PRIVATE)."""
    return name.startswith(PRIVATE)


def parse(data: bytes, private: Callable[[int], bool] | None = None) -> list[Event]:
    """The events in one read() of an inotify descriptor; with `private`, those of entries
    with a private name only where `private(wd)` (see the module doc). (A file's write makes
    ~4 events, 3 of them its O_TMPFILE's: each step here is counted.)"""
    events: list[Event] = []
    offset, end, size = 0, len(data), _HEADER.size
    unpack = _HEADER.unpack_from
    readers: dict[int, bool] = {}  # private(wd), asked once per watch (a write makes ~3 events)
    while offset + size <= end:
        wd, mask, cookie, length = unpack(data, offset)
        offset += size
        if not length:
            events.append(_new_event(Event, (wd, mask, cookie, None)))
            continue
        first = data[offset]
        if (
            first in _FIRST
            and private is not None
            and (first in _WHOLE or data.startswith(_PRIVATE, offset))
        ):
            read = readers.get(wd)
            if read is None:
                read = readers[wd] = private(wd)
            if not read:
                offset += length
                continue
        name = data[offset : offset + length].rstrip(b"\0") or None
        offset += length
        events.append(_new_event(Event, (wd, mask, cookie, name)))
    return events


class Blind:
    """In place of an Inotify when none could be made (the kernel's limit of instances per
    user, `fs.inotify.max_user_instances`): it watches nothing, and says why at each try."""

    fd: int | None = None

    def __init__(self, error: OSError) -> None:
        self.error = error

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        raise OSError(self.error.errno, self.error.strerror, os.fspath(path))

    def rm_watch(self, wd: int) -> None:
        """Nothing is watched: nothing to remove."""

    def close(self, then: Callable[[], None] | None = None) -> None:
        if then is not None:
            then()

    def drain(self) -> None:
        """Nothing is watched: no event."""

    def pause(self) -> None:
        """Nothing is read: nothing to pause."""

    def resume(self) -> None:
        """Nothing is read: nothing to resume."""


class Inotify:
    """One inotify instance whose events are handed to `on_events` (see the module doc)."""

    def __init__(
        self,
        on_events: Callable[[list[Event]], None],
        private: Callable[[int], bool] | None = None,
    ) -> None:
        self._calls = _calls()
        fd = self._calls.init1(_NONBLOCK | _CLOEXEC)
        if fd < 0:
            raise _error("inotify_init1")
        self.fd: int | None = fd
        self._buffer = ctypes.create_string_buffer(_READ_SIZE)
        # What a read put there, copied out by a slice of this view (ctypes.string_at's call:
        # ~4.7 K instructions, the slice's ~1.2 K; once per read that finds events).
        self._view = memoryview(self._buffer)
        self._on_events = on_events
        self._private = private
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch `path` (replacing the mask of an existing watch on the same inode)."""
        assert self.fd is not None, "inotify is closed"
        name = libc.fsencode(path) if isinstance(path, str) else os.fsencode(path)
        wd: int = self._calls.add_watch(self.fd, name, mask)
        if wd < 0:
            raise _error("inotify_add_watch", os.fspath(path))
        return wd

    def rm_watch(self, wd: int) -> None:
        assert self.fd is not None, "inotify is closed"
        if self._calls.rm_watch(self.fd, wd) < 0:
            raise _error("inotify_rm_watch")

    def close(self, then: Callable[[], None] | None = None) -> None:
        """Stop reading and close: the kernel drops every watch at once (`then` is called
        once it has: from another thread; once the process is ending, from this one).

        The kernel's teardown of an instance that has watches waits for a grace period of
        its own (7-23 ms measured here, one watch or a hundred): the descriptor is closed now,
        and the instance's last reference (a duplicate) by a thread of its own, started without
        waiting for it to run, so neither the loop nor the rest of a cron run's exit waits.
        Once the process is ending (`leave_to_exit`), the descriptor is first handed to a
        process that ends with this one (`hold_until_exit`, the module doc), here: this close
        is then not the last, and the process's exit does not wait for a thread to start it."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        self._loop.remove_reader(fd)
        if _EXIT.ending and hold_until_exit(fd, "an inotify instance"):
            _close_last(fd, then)  # (not the last reference: the holder has one)
            return
        try:
            last = os.dup(fd)
        except OSError:  # no descriptor left for it: close it here, waiting
            _close_last(fd, then)
            return
        os.close(fd)
        try:
            start_new_thread(_close_last, (last, then))
        except RuntimeError:  # no thread can start
            _close_last(last, then)

    def pause(self) -> None:
        """Stop reading when the descriptor becomes readable: events wait in the kernel's
        queue for a `drain()`, or for `resume()`."""
        if self.fd is not None:
            self._loop.remove_reader(self.fd)

    def resume(self) -> None:
        """Read again when the descriptor is readable (at once, if events wait)."""
        if self.fd is not None:
            self._loop.add_reader(self.fd, self._readable)

    def drain(self) -> None:
        """Read and hand over every event queued so far, now (the loop's reader does the
        same when the descriptor becomes readable: `_readable`, the same function)."""
        events: list[Event] = []
        for _ in range(_READS_PER_CALL):  # the reader fires again while more is queued
            if self.fd is None:
                break
            size = libc.read(self.fd, self._buffer, _READ_SIZE_T)
            if size < 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                if code != errno.EAGAIN:  # not expected from inotify: treat it as lost events
                    err = os.strerror(code)
                    log.error("reading inotify failed: %s; re-scanning every watch", err)
                    events.append(Event(-1, Q_OVERFLOW, 0, None))
                break
            events += parse(self._view[:size].tobytes(), self._private)
        if events:
            self._on_events(events)

    _readable = drain  # the loop's reader (one Python call less per check's drain)
