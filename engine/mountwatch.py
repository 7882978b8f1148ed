"""The mount table's changes, which no inotify watch sees: a file system mounted over a watched
directory (or taken off it), one remounted read-only or read-write.

The kernel makes /proc/self/mountinfo pollable: its poll says POLLPRI|POLLERR once the table
of the reader's mount namespace changed since the file's last poll (and POLLIN always, which is
why it is not given to the loop's own selector: that would wake it at every step). So it is
registered, for POLLPRI alone, in an epoll instance of its own, whose fd the loop reads: one
wake-up per change of the table, nothing while none comes. The table is read then only (and
once at the start), and what differs from the last reading is told as the mount points whose
line changed: mounted, unmounted, remounted (options), or moved (docs/engine.md, "Watching
files").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from collections.abc import Callable

log = logging.getLogger("engine")

MOUNTINFO = "/proc/self/mountinfo"
OCTAL = frozenset(b"01234567")


def unescape(field: bytes) -> str:
    """A mountinfo field as a path: its octal escapes (`\\040` for a space; tab, newline and
    backslash too) decoded, its bytes as the file system's (os.fsdecode)."""
    if b"\\" not in field:
        return os.fsdecode(field)
    parts = field.split(b"\\")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 3 and all(c in OCTAL for c in part[:3]):
            out.append(bytes((int(part[:3], 8),)) + part[3:])
        else:
            out.append(b"\\" + part)
    return os.fsdecode(b"".join(out))


def read_table(path: str = MOUNTINFO) -> dict[bytes, bytes]:
    """Mount id -> its whole line (mount point, options, source: any of them changing is a
    change of that mount). Bytes, split once: nothing decoded but what changed."""
    with open(path, "rb") as lines:
        return {line.split(b" ", 1)[0]: line for line in lines.read().splitlines()}


def mount_point(line: bytes) -> str:
    """The mount point of a mountinfo line (its fifth field, unescaped)."""
    return unescape(line.split(b" ", 5)[4])


def changed_points(old: dict[bytes, bytes], new: dict[bytes, bytes]) -> set[str]:
    """The mount points whose mount came, went or changed between two readings."""
    points = set()
    for mount_id, line in new.items():
        if old.get(mount_id) != line:
            points.add(mount_point(line))
    for mount_id, line in old.items():
        if mount_id not in new:
            points.add(mount_point(line))
    return points


class MountWatch:
    """Tells `on_change(points)` from a callback of `loop` each time the mount table changes
    (see the module docstring); `close()` stops. Where the kernel has no such file (no /proc),
    it watches nothing: `MountWatch.open()` returns None."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_change: Callable[[set[str]], None]
    ) -> None:
        self.loop = loop
        self.on_change = on_change
        self.fd = os.open(MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.epoll = select.epoll()
            self.epoll.register(self.fd, select.EPOLLPRI)
            self.table = read_table()
            loop.add_reader(self.epoll.fileno(), self._ready)
        except BaseException:
            self._close_fds()
            raise

    @classmethod
    def open(
        cls, loop: asyncio.AbstractEventLoop, on_change: Callable[[set[str]], None]
    ) -> MountWatch | None:
        try:
            return cls(loop, on_change)
        except (OSError, NotImplementedError) as err:  # no /proc, or a loop without readers
            log.debug("mount table not watched: %s", err)
            return None

    def _ready(self) -> None:
        """The table changed: the poll (which resets the file's own mark), then one reading,
        compared with the last one."""
        self.epoll.poll(0)
        try:
            table = read_table()
        except OSError as err:
            log.debug("mount table not read: %s", err)
            return
        points = changed_points(self.table, table)
        self.table = table
        if points:
            self.on_change(points)

    def close(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError):  # the loop closed first
            self.loop.remove_reader(self.epoll.fileno())
        self._close_fds()

    def _close_fds(self) -> None:
        if hasattr(self, "epoll"):
            self.epoll.close()
        os.close(self.fd)
