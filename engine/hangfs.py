"""Which paths are on a file system that can stop answering: a network or FUSE file system
(NFS, CIFS, a FUSE daemon, 9p, Ceph...) whose server, gone away, leaves every open, read or
stat of a path on it waiting in the kernel, never returned (the thread in D state). A resource
touching such a path does it in a thread of its own, never on the event loop
(docs/resources/file.md, "A file system that does not answer").

Known by the mount table (/proc/self/mountinfo: each mount point's type) and the path's local
names (an lstat each, for the symlinks on the way: kind_of), never by a call on a name of
such a file system, which could be the one that hangs. The table is read again once it
changed (engine.libc's poll of it, shared with libc.fs_type: libc.changes).
"""

from __future__ import annotations

import os
import stat
import time

from engine import libc

# File systems served by something that can stop answering (a server, a daemon).
HANGS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "afs",
        "fuse",
        "fuseblk",
        "virtiofs",
        "gfs2",
        "ocfs2",
        "orangefs",
        "beegfs",
        "gpfs",
    }
)
# What a mountinfo line of a HANGS type holds ("... - nfs4 ...", "... - fuse.sshfs ..."): a
# table without any is not parsed (a prefix may match more: then it is, to be sure).
_NEEDLES = tuple(b" - " + kind.encode() for kind in sorted(HANGS))
MOUNTINFO = "/proc/self/mountinfo"
RECHECK = 0.5  # seconds: how often at most the mount table's change is asked for
# Mount point -> type (empty if none is of a HANGS type); None until read (again).
_points: list[dict[str, str] | None] = [None]
_read_at = [-1]  # libc.changes when the table was read
_asked = [-RECHECK]  # when the table's change was last asked for (time.monotonic)


def hangs(kind: str) -> bool:
    """Whether a file system of this type ("nfs4", "fuse.sshfs") can stop answering."""
    return kind in HANGS or kind.startswith("fuse.")


def kind_of(path: str) -> str | None:
    """The type of the file system that can stop answering which `path` (absolute) is on, by
    its innermost mount point; None if it is on none (the usual case: no such mount at all,
    then nothing is asked). Symlinks on the way (the path's own too) are followed where they
    are on a local file system: a local link into an NFS mount is on it (judged by the path's
    spelling alone, such a path was checked on the loop, which its server's silence froze).
    Nothing on a file system that can stop answering is looked at: its mount point is seen in
    the table before."""
    points = _table()
    if not points:
        return None
    return _walk(os.path.normpath(path), points)


LINKS_MOST = 40  # symlinks followed at most on the way to a path (the kernel's own bound)


def _walk(path: str, points: dict[str, str]) -> str | None:
    """kind_of's walk from the root, one name at a time: a mount point's type by the table
    (the innermost so far decides), a local name by its lstat (a symlink: its target's names
    are walked instead); None where a name is missing or cannot be looked at (nothing below
    it is mounted), or after LINKS_MOST links."""
    kind = points.get("/")
    if kind is not None and hangs(kind):
        return _spelled(path, points)
    done, rest, links = "/", [n for n in path.split("/") if n][::-1], 0
    while rest:
        name = rest.pop()
        if name == ".":
            continue
        if name == "..":
            done = os.path.dirname(done)
            continue
        here = os.path.join(done, name)
        kind = points.get(here)
        if kind is not None and hangs(kind):  # not looked at: the rest by its spelling
            return _spelled(os.path.join(here, *reversed(rest)), points)
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return None
        if not stat.S_ISLNK(mode):
            done = here
            continue
        links += 1
        if links > LINKS_MOST:
            return None
        try:
            target = os.readlink(here)
        except OSError:
            return None
        rest.extend(n for n in reversed(target.split("/")) if n)
        if target.startswith("/"):
            done = "/"
    return None


def _spelled(path: str, points: dict[str, str]) -> str | None:
    """The type by `path`'s innermost mount point as it is spelled (normalized; a local
    mount below one that can stop answering is local)."""
    path = os.path.normpath(path)
    while True:
        kind = points.get(path)
        if kind is not None:
            return kind if hangs(kind) else None
        if path == "/":
            return None
        path = os.path.dirname(path)


def _table() -> dict[str, str]:
    """The table as last read; asked again whether it changed at most every RECHECK s (a
    check of each of 100 files asking the kernel each time: +0.2% of a no-op run)."""
    now = time.monotonic()
    if now - _asked[0] < RECHECK and (points := _points[0]) is not None:
        return points
    with libc.mounts_read:
        _asked[0] = now
        if libc.table_changed():
            libc.forget_types()
        points = _points[0]
        if points is None or _read_at[0] != libc.changes[0]:  # (fs_type may have been told)
            _read_at[0] = libc.changes[0]
            points = _points[0] = _read()
    return points


def _read() -> dict[str, str]:
    """Each mount point's type, from the mount table ("id parent major:minor root point
    options ... - type source options"; a point mounted over: the last); empty if none is of a
    type that can stop answering (the usual case: found by one scan of the bytes)."""
    points: dict[str, str] = {}
    try:
        with open(MOUNTINFO, "rb") as table:
            data = table.read()
    except OSError:
        return points
    if not any(needle in data for needle in _NEEDLES):
        return points
    from engine.mountwatch import unescape  # (a host with such a mount only)

    for line in data.splitlines():
        fields, _dash, rest = line.partition(b" - ")
        parts = fields.split(b" ", 5)
        if len(parts) < 5 or not rest:
            continue
        points[unescape(parts[4])] = os.fsdecode(rest.split(b" ", 1)[0])
    return points if any(hangs(kind) for kind in points.values()) else {}
