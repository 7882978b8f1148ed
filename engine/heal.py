"""Failures that pass by themselves: which errors name a condition whose end no event tells of,
and how often a resource failed so is checked again (docs/engine.md, "Failures that pass by
themselves").

A full disk freed, a quota raised, a file system remounted read-write, `chattr -i`: the kernel
sends no inotify event when any of these passes, so a resource out of its meta retries would
stay failed until a reload. One failed with such an error is checked again HEAL_MIN seconds
later, then twice as long after each check that fails again, at most HEAL_MAX apart
(Vertex._heal_later), until a check succeeds, its error becomes one that does not pass, or the
vertex stops (a swap that replaces or removes it, the agent's end).
"""

from __future__ import annotations

import errno
import os
import select
from typing import TYPE_CHECKING

from engine.errors import Interfered
from engine.mountwatch import MOUNTINFO, mount_point, read_table

if TYPE_CHECKING:
    from engine.engine import Vertex

HEAL_MIN = 1.0  # seconds to the first check on its own after a failure that may pass
HEAL_MAX = 300.0  # seconds between two such checks at most (the doubling stops there)

# errno -> why it may pass without anyone touching the graph (what frees it).
PASSING: dict[int, str] = {
    errno.ENOSPC: "the disk is full",  # space freed (rm, a log rotated, a snapshot dropped)
    errno.EDQUOT: "over quota",  # files removed, the quota raised (setquota: no event)
    errno.EROFS: "read-only file system",  # mount -o remount,rw; fsck then rw after errors
    errno.ETXTBSY: "the file is running",  # the program that ran it ends
    errno.EBUSY: "busy",  # a mount point, a device or a lock released
    errno.EAGAIN: "temporarily unavailable",  # a lock or a resource limit released
    errno.ENOMEM: "out of memory",  # memory freed
    errno.EMFILE: "out of file descriptors",  # another task closes its files
    errno.ENFILE: "the system is out of open files",  # as EMFILE, host-wide
}
# EPERM as root: an immutable or append-only file (chattr +i/+a; `chattr -i` sends no event),
# a read-only bind mount's file. Not as another user: there it is mostly an owner or a mode the
# agent may not set (the graph asks what it cannot do), which no time passing changes.
IMMUTABLE = "immutable or append-only (chattr +i/+a)"
# Not here: EACCES (a mode, an owner: the graph's own or another's choice, which an event
# tells of when it changes), EINVAL, ENOENT, ENOTDIR, EEXIST, ELOOP (what the graph asks
# cannot be done as it stands), EIO (a failing disk: a repair is a person's work).


def passes(err: BaseException | None) -> str | None:
    """Why `err` may pass by itself (`read-only file system`), or None: the first OSError in its
    chain (`raise ... from`, then the error it was raised during, a few links deep) decides, by
    its errno. Never for another's change that cut a write short (errors.Interfered, whatever
    errno it carries: an `rm -rf` racing a repair, EPERM for an O_TMPFILE in a removed
    directory): the engine checks that again at once."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, Interfered):
            return None
        if isinstance(err, OSError):
            if err.errno in PASSING:
                return PASSING[err.errno]
            if err.errno == errno.EPERM and os.geteuid() == 0:
                return IMMUTABLE
            return None  # the first errno decides: a chained one is what it was caused by
        err = err.__cause__ or err.__context__
        seen += 1
    return None


# Causes that are a file system's (every failure of one on the same st_dev passes together) or
# the host's (None: one for the whole agent); the others (an immutable file, a running program,
# a busy lock) are each file's own, each checked by itself.
SHARED_BY_DEVICE = frozenset((PASSING[errno.ENOSPC], PASSING[errno.EDQUOT], PASSING[errno.EROFS]))
SHARED_BY_HOST = frozenset((PASSING[errno.ENOMEM], PASSING[errno.EMFILE], PASSING[errno.ENFILE]))


def group_of(why: str, err: BaseException | None, path: str | None) -> tuple[str, int] | None:
    """The group a failure that may pass belongs to (Group), or None: its own. By file system,
    the device of the mount the path it failed on is under (the error's own filename first,
    else `path`: `device_of`); by host for a shortage of memory or descriptors."""
    if why in SHARED_BY_HOST:
        return (why, -1)
    if why not in SHARED_BY_DEVICE:
        return None
    name = getattr(err, "filename", None)
    name = name if isinstance(name, str) and name.startswith("/") else path
    if not name or not name.startswith("/"):
        return None
    device = _TABLE.device_of(name)
    return None if device is None else (why, device)


class _Table:
    """The mount table as mount points, longest first, each with its device (mountinfo's
    major:minor): which file system a path is on, found on the event loop without touching
    any file system. Before, the nearest existing directory of the path was stat'ed there:
    a hung NFS server (a hard mount) stalled the whole agent at the failure of one file on
    it. Read again only when the kernel says it changed (its POLLPRI, polled without waiting:
    engine.mountwatch), so 10,000 files failing at once read it once. The path is taken as
    written: one reached through a symlink into another file system is grouped by the mount
    of its spelling (a group is only who checks for whom: bench/heal.py)."""

    def __init__(self) -> None:
        self._poll: select.poll | None = None
        self._fd = -1
        self._points: list[tuple[str, int]] = []

    def device_of(self, path: str) -> int | None:
        """The device of the mount `path` is under (None without a mount table: no /proc)."""
        points = self._current()
        path = os.path.normpath(path)
        if path.startswith("//"):  # (kept by normpath, as POSIX lets it: the same as one)
            path = path[1:]
        for point, device in points:
            if path == point or path.startswith(point if point == "/" else point + "/"):
                return device
        return None

    def _current(self) -> list[tuple[str, int]]:
        if self._poll is None:
            try:
                self._fd = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return []
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLPRI)
            self._poll.poll(0)  # (its mark reset: the next POLLPRI is a change after this read)
            self._points = _points(read_table())
        elif self._poll.poll(0):
            self._points = _points(read_table())
        return self._points


def _points(table: dict[bytes, bytes]) -> list[tuple[str, int]]:
    """Mount points and their devices, longest first (the innermost mount of a path first);
    of a point mounted over, the last mounted (the one visible: mountinfo lists it later)."""
    found: dict[str, int] = {}
    for line in table.values():
        fields = line.split(b" ", 5)
        if len(fields) < 5:
            continue
        major, _colon, minor = fields[2].partition(b":")
        if major.isdigit() and minor.isdigit():
            found[mount_point(line)] = os.makedev(int(major), int(minor))
    return sorted(found.items(), key=lambda item: len(item[0]), reverse=True)


_TABLE = _Table()


class Group:
    """Failures of one cause on one file system (group_of): checked on its own by one member per
    step, not each (bench/heal.py: 10,000 files on a full disk checked each at each step used
    a third of a core). A member whose own check falls due while another's of the group was
    done less than its wait ago, or whose own was the group's last, skips it (and waits longer,
    as if it failed again); the first check that succeeds has every other member checked at
    once."""

    __slots__ = ("last", "members", "probed_at")

    def __init__(self) -> None:
        self.members: set[Vertex] = set()
        self.probed_at = float("-inf")  # monotonic time of the group's last check on its own
        # Who did it: not again while others wait (its timer, set from that check, falls due
        # first each time: one that cannot pass would check for the group for ever).
        self.last: Vertex | None = None


def told() -> str:
    """What the line of such a failure adds: ` (checking again in 1s, then less often, at
    most every 5 min: it may pass by itself)`."""
    most = f"{HEAL_MAX / 60:g} min" if HEAL_MAX >= 60 else f"{HEAL_MAX:g}s"
    return f" (checking again in {HEAL_MIN:g}s, then less often, at most every {most}: it may pass)"


def next_wait(wait: float) -> float:
    """The wait after one of `wait` that ended in the same failure: twice as long, at most
    HEAL_MAX."""
    return min(wait * 2, HEAL_MAX)
