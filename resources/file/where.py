"""Where file's changes happen: descriptors, never paths (see the package docstring), and the
filesystem helpers the checks, copies and reversals share."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import functools
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine import libc, safefs
from engine.errors import Interfered, MgmtError, ResourceError
from resources._lib.plan import Step, describe
from resources._lib.plan import in_thread as _in_thread

CHUNK = 1 << 20  # read/copy block size
DIR_BASE = 0o755  # a new directory's bits (also for created parent directories)
INLINE_LIMIT = 1 << 16  # files up to this size are compared inline, bigger in a thread

Entry = tuple[str, ...]  # something below the managed path, by its names; TOP: the path itself
TOP: Entry = ()
Src = tuple[int, Entry]  # something below a source directory: the open source, and names

_clean_dirs: set[tuple[int, int, int]] = set()  # directories found free of leftovers (libc.file_id)
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def attr_steps(
    where: Where,
    entry: Entry,
    label: str,
    st: os.stat_result | None,
    *,
    mode: int | None,
    uid: int,
    gid: int,
) -> list[Step]:
    """chown/chmod steps for what differs on an existing inode (mode None or id -1: unmanaged)."""
    if st is None:
        return []
    steps = []
    if uid not in (-1, st.st_uid):
        from resources._lib.ids import user_name  # an owner's (resources/file/__init__.py)

        change = f"{label}{user_name(st.st_uid)} -> {user_name(uid)}"
        chown = functools.partial(where.attrs, entry, st, uid=uid)
        steps.append(Step(f"chown {change}", f"owner {change}", chown))
    if gid not in (-1, st.st_gid):
        from resources._lib.ids import group_name

        change = f"{label}{group_name(st.st_gid)} -> {group_name(gid)}"
        chgrp = functools.partial(where.attrs, entry, st, gid=gid)
        steps.append(Step(f"chgrp {change}", f"group {change}", chgrp))
    old = stat.S_IMODE(st.st_mode)
    if mode is not None and old != mode:  # after chown, which may clear setuid bits
        change = f"{label}{old:04o} -> {mode:04o}"
        chmod = functools.partial(where.attrs, entry, st, mode=mode)
        steps.append(Step(f"chmod {change}", f"mode {change}", chmod))
    return steps


def setid_kept(bits: int, have: tuple[int, int], want: tuple[int, int]) -> int:
    """`bits` (taken from an inode owned by `have`, a uid and gid) for an inode owned by `want`:
    without the set-user-ID bit unless the owner stays the same, and without the set-group-ID
    bit unless the group does (as cp and chown(2) drop them). A user's own 4755 file copied
    to, or chowned to, root would otherwise run as root (docs/security.md, "Set-ID bits")."""
    if have[0] != want[0]:
        bits &= ~stat.S_ISUID
    if have[1] != want[1]:
        bits &= ~stat.S_ISGID
    return bits


def owner_after(
    uid: int, gid: int, st: os.stat_result | None, new_gid: int | None = None
) -> tuple[int, int]:
    """The uid and gid an inode has after a change with ids uid, gid (-1: unmanaged): the
    current inode's (st) where unmanaged, else a new one's: the agent's uid, and `new_gid`
    (new_group: a set-group-ID directory's group), by default the agent's gid."""
    if uid == -1:
        uid = st.st_uid if st is not None else os.geteuid()
    if gid == -1:
        gid = st.st_gid if st is not None else os.getegid() if new_gid is None else new_gid
    return uid, gid


def new_group(dir_mode: int, dir_gid: int) -> int:
    """The group a new inode gets in a directory of this mode and group when it is given
    none: the directory's when it is set-group-ID (the kernel's rule), else the agent's. Until
    2026-12-05 the set-ID rule took the agent's: a set-group-ID file copied into a
    set-group-ID directory kept its bit on the directory's group, which the source lacked."""
    return dir_gid if dir_mode & stat.S_ISGID else os.getegid()


# where the changes happen: descriptors, never paths ------------------------------------------


def child(entry: Entry, name: str) -> Entry:
    return (*entry, name)


def entry_label(entry: Entry) -> str:
    return "/".join(entry)


class Held:
    """What one check holds open (its Wheres, a source's descriptor), closed at its end,
    newest first: contextlib.ExitStack's part that file uses, at a fifth of its cost (its
    deque, a wrapper and a callback per context, its exit's exception bookkeeping: ~2 us
    of a no-op file's ~85 us). What it holds is closed without the exception that ends the
    check (Where's exit, os.close: neither looks at it); each one is closed even if another
    fails, and the last failure is raised, the earlier ones chained as its context (as
    ExitStack does)."""

    __slots__ = ("_closes",)

    def __init__(self) -> None:
        self._closes: list[Callable[[], object]] = []

    def __enter__(self) -> Held:
        return self

    def enter_context(self, where: Where) -> Where:
        """`where` (entered already: its __enter__ is itself) is closed at the end."""
        self._closes.append(where.__exit__)
        return where

    def callback(self, close: Callable[[int], object], fd: int) -> None:
        """close(fd) at the end."""
        self._closes.append(functools.partial(close, fd))

    def on_exit(self, release: Callable[[], object]) -> None:
        """release() at the end (StepDirs: a shared directory let go)."""
        self._closes.append(release)

    def __exit__(self, *exc: object) -> None:
        closes = self._closes
        while closes:
            close = closes.pop()
            try:
                close()
            except BaseException:
                self.__exit__()  # the others are closed too
                raise


def _split(path: str) -> tuple[str, str]:
    """os.path.split's (its three calls a check, here none): the head without its trailing
    slashes, unless it is only slashes; and the name."""
    cut = path.rfind("/") + 1
    parent = path[:cut]
    if parent and parent.strip("/"):
        parent = parent.rstrip("/")
    return parent, path[cut:]


@dataclass(frozen=True)
class MakeDir(Step):
    """A step that creates `directory` (a missing parent, or the resource's own): what
    `--noop` says one resource would create (FileRes._said_once)."""

    directory: str = ""


class Where:
    """The managed path's parent directory, held open for one check_apply.

    It is reached by `safefs.walk` (no unsafe symlink followed on the way); `missing` lists
    the parent directories still to create. Every step acts through descriptors relative to
    it, never by path, so a symlink swapped in after the check is not followed. An Entry
    addresses the path itself (TOP) or something below it (a tree copy), whose directories
    are opened one by one without following any symlink.
    """

    def __init__(
        self, path: str, *, start: tuple[int, str] | None = None, shown: str | None = None
    ) -> None:
        # os.path.split's (its three calls a check, here none): the head without its
        # trailing slashes, unless it is only slashes
        parent, self.name = _split(path)
        self.path = shown or path  # for messages
        self.fd, self.missing = safefs.walk(parent or ".", start=start)
        self._ident: tuple[int, int, int] | None = None  # libc.file_id(fd), once asked
        self._local: bool | None = None  # local(), once asked
        self._new_owner: tuple[int, int] | None = None  # new_owner(), once asked

    def ident(self) -> tuple[int, int, int]:
        """What identifies the directory open as `fd` (libc.file_id, asked once: with the
        GIL held, see temp_steps)."""
        ident = self._ident
        if ident is None:
            ident = self._ident = libc.file_id(self.fd)
        return ident

    def local(self) -> bool:
        """Whether the directory open as `fd` is on a local file system (libc.local_fs; asked
        once: the parent directories make_parent makes are on the same one)."""
        local = self._local
        if local is None:
            local = self._local = libc.local_dev(self.ident())
        return local

    def new_owner(self) -> tuple[int, int]:
        """The uid and gid a new file made in the directory gets: this process's, or the
        directory's group where it is set-group-ID (asked once)."""
        owner = self._new_owner
        if owner is None:
            st = os.fstat(self.fd)
            gid = st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()
            owner = self._new_owner = (os.geteuid(), gid)
        return owner

    def __enter__(self) -> Where:
        return self

    def beside(self, path: str) -> Where:
        """A Where of `path`, another name in this directory (no parent of it missing), on
        this one's descriptor: valid while this one is open, and never closed itself."""
        other = object.__new__(Where)
        name = path[path.rfind("/") + 1 :]  # os.path.basename's, without its two calls
        other.name, other.path, other.fd, other.missing = name, path, self.fd, []
        other._ident, other._local, other._new_owner = self._ident, self._local, self._new_owner
        return other

    def __exit__(self, *exc: object) -> None:
        libc.close_path(self.fd)  # O_PATH (safefs.walk): the GIL held, nothing to wait for

    def follow(self) -> Where:
        """Where the symlink at the path points, if the safe-path rule allows following it.

        The link itself must pass the rule (see safefs.safe_link), and every link on the way
        to its target is walked by it too: a link another user controls is never followed.
        """
        with self._at(TOP) as (fd, name):
            target = safefs.safe_link(fd, name, self.path)
        name = os.path.basename(target.rstrip("/"))
        if name in ("", ".", ".."):
            raise ResourceError(f"symlink {self.path} -> {target!r} names no file to manage")
        here = os.path.dirname(self.path)
        shown = os.path.normpath(os.path.join(here, target))
        return Where(target.rstrip("/"), start=(self.fd, here), shown=shown)

    @contextlib.contextmanager
    def _at(self, entry: Entry) -> Iterator[tuple[int, str]]:
        """The directory descriptor holding entry, and its name there."""
        if self.missing:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.path)
        if not entry:
            yield self.fd, self.name
            return
        with safefs.closing(safefs.sub_dir(self.fd, (self.name, *entry[:-1]))) as fd:
            yield fd, entry[-1]

    # reading

    def new_group(self) -> int:
        """The group a new inode at the path gets when it is given none (new_group); its
        missing parents, made with exact modes here, are not set-group-ID."""
        if self.missing:
            return os.getegid()
        st = os.fstat(self.fd)
        return new_group(st.st_mode, st.st_gid)

    def lstat(self, entry: Entry) -> os.stat_result | None:
        if self.missing:
            return None
        if not entry:  # the usual case, without the context manager's cost
            return safefs.lstat_at(self.fd, self.name)
        with self._at(entry) as (fd, name):
            return safefs.lstat_at(fd, name)

    def found(self) -> os.stat_result | None:
        """lstat(TOP), with the GIL held on a local file system (libc.lstat: only in a
        writing I/O thread)."""
        if self.missing:
            return None
        if self.local():
            return libc.lstat(self.fd, self.name)
        return safefs.lstat_at(self.fd, self.name)

    @contextlib.contextmanager
    def at_fd(self, entry: Entry) -> Iterator[int]:
        """entry open read-only (a file or a directory; a symlink is not followed)."""
        with self._at(entry) as (dir_fd, name):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            with safefs.closing(os.open(name, flags, dir_fd=dir_fd)) as fd:
                yield fd

    def readlink(self, entry: Entry) -> str:
        with self._at(entry) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def read(self, entry: Entry, limit: int) -> bytes | None:
        """Up to `limit` bytes of a regular file (None: bigger)."""
        with self._at(entry) as (fd, name):
            return safefs.read_at(fd, name, limit)

    def scan(self, entry: Entry) -> dict[str, os.stat_result]:
        with self._at(entry) as (fd, name):
            return safefs.scan(fd, name)

    def same(self, entry: Entry, want: bytes | int, size: int) -> bool:
        if entry:
            with self._at(entry) as (fd, name):
                have = safefs.open_read(fd, name)
        else:  # the usual case, without the context manager's cost
            have = safefs.open_read(self.fd, self.name)
        try:
            return same_content(have, want, size)
        finally:
            os.close(have)

    def observe(self) -> dict[str, Any]:
        """What is at the path now, as JSON data a reversal can restore."""
        if self.missing:
            return {"existed": False}
        return _prior(self.fd, self.name)

    # changing

    def explain(self, err: BaseException) -> str:
        """A change's failure as the user reads it (plan.describe), or that the directory the
        change was made in was removed meanwhile (an rm -rf racing with a repair: the kernel
        then answers EPERM or ENOENT about names of ours)."""
        if not self.vanished():
            return describe(err)
        here = os.path.dirname(self.path)
        for _ in self.missing:
            here = os.path.dirname(here)
        return f"directory {here} vanished while writing"

    def vanished(self) -> bool:
        """Whether the directory open as `fd` was removed (by another: an `rm -rf`)."""
        try:
            return os.fstat(self.fd).st_nlink == 0
        except OSError:
            return False

    def _cut_short(self, err: OSError) -> None:
        """Raise errors.Interfered from `err`, a change's failure, if the directory it was made
        in was removed meanwhile: an `rm -rf` racing with the repair (the kernel answers EPERM
        to an O_TMPFILE open there, ENOENT to a name made there). No event may say so (the
        removal may have been read before: docs/engine.md, "A write cut short by another's
        removal"): the engine checks the resource again at once, as after an event. Else
        nothing: the caller raises `err`."""
        if not isinstance(err, Interfered) and self.vanished():
            raise Interfered(err.errno, err.strerror, err.filename, None, err.filename2) from err

    def cut_short(self, err: OSError) -> OSError:
        """`err`, or the errors.Interfered `_cut_short` raises from it: what a caller that
        reports the failure as its own error chains it to (`raise ResourceError(...) from
        where.cut_short(err)`), so that the engine still sees another's removal in it (the
        first writes of a group: FileRes._fill_in, _placed)."""
        try:
            self._cut_short(err)
        except Interfered as cut:
            return cut
        return err

    def parent_steps(self) -> list[Step]:
        """Creating the missing parent directories, outermost first."""
        if not self.missing:
            return []
        shown, parent = [], os.path.dirname(self.path)
        for _ in self.missing:
            shown.append(parent)
            parent = os.path.dirname(parent)
        return [
            MakeDir(
                f"create parent directory {p}",
                f"created parent directory {p}",
                self.make_parent,
                directory=p,
            )
            for p in reversed(shown)
        ]

    def make_parent(self) -> None:
        """Create the next missing parent directory (mode 0755, whatever the umask)."""
        try:
            fd = safefs.make_dirs(self.fd, self.missing[:1], DIR_BASE)
        except OSError as err:
            self._cut_short(err)
            raise
        os.close(self.fd)
        self.fd, self.missing, self._ident = fd, self.missing[1:], None

    def temp_steps(self) -> list[Step]:
        """Removing temp files that crashed writes left next to the path (once per directory)."""
        if self.missing:
            return []
        here_id = self.ident()  # the GIL held: a check runs on the event loop
        if here_id in _clean_dirs:
            return []
        stale = safefs.stale_temps(self.fd)
        if not stale:
            _clean_dirs.add(here_id)
        here = os.path.dirname(self.path)
        return [
            Step(
                f"remove leftover temp file {os.path.join(here, name)}",
                f"removed leftover temp file {os.path.join(here, name)}",
                functools.partial(self._unlink_temp, name),
            )
            for name in stale
        ]

    def _unlink_temp(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # a sibling resource removed it first
            os.unlink(name, dir_fd=self.fd)

    def write(
        self, entry: Entry, fill: safefs.Fill, mode: int, uid: int, gid: int, *, new: bool = False
    ) -> None:
        """Atomically replace entry (safefs.write_at; `new`: it was just found absent)."""
        try:
            if not entry and not self.missing:  # the usual case, without the context manager's
                local = self.local() if isinstance(fill, bytes) else None
                safefs.write_at(
                    self.fd, self.name, fill, mode=mode, uid=uid, gid=gid, new=new, local=local
                )
                return
            with self._at(entry) as (fd, name):
                safefs.write_at(fd, name, fill, mode=mode, uid=uid, gid=gid, new=new)
        except OSError as err:
            self._cut_short(err)
            raise

    def hold(self, entry: Entry) -> int | None:
        """An O_PATH descriptor of entry's inode, not followed (a link is held as itself), or
        None if it is not there: a rename over it does not free it then (see `link`)."""
        try:
            with self._at(entry) as (fd, name):
                if self.local():
                    return libc.open_path(fd, name)
                return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None

    def link(self, entry: Entry, fd: int, *, new: bool = False) -> None:
        """Put the complete unnamed file fd in place (safefs.link_at; `new`: the name was
        found absent)."""
        try:
            with self._at(entry) as (dir_fd, name):
                safefs.link_at(dir_fd, name, fd, new=new, local=self.local())
        except OSError as err:
            self._cut_short(err)
            raise

    def copy(
        self, entry: Entry, src: Src, mode: int, uid: int, gid: int, *, seen: os.stat_result
    ) -> None:
        """Copy the source tree's entry src (its root and names), planned from its lstat
        `seen`, to entry. Set-ID bits only go with the inode they were planned from: another
        one swapped in there since (by whoever controls the source tree) gets none."""
        root, rel = src
        with (
            safefs.closing(safefs.sub_dir(root, rel[:-1])) as src_dir,
            safefs.closing(safefs.open_read(src_dir, rel[-1])) as src_fd,
        ):
            if mode & (stat.S_ISUID | stat.S_ISGID):
                now = os.fstat(src_fd)
                planned = (seen.st_dev, seen.st_ino, seen.st_mode, seen.st_uid, seen.st_gid)
                if (now.st_dev, now.st_ino, now.st_mode, now.st_uid, now.st_gid) != planned:
                    mode &= ~(stat.S_ISUID | stat.S_ISGID)
            self.write(entry, filler(src_fd), mode, uid, gid)

    def make_dir(self, entry: Entry, mode: int, uid: int, gid: int) -> None:
        with self._at(entry) as (fd, name):
            safefs.make_dir(fd, name, mode, uid, gid)

    def symlink(self, entry: Entry, target: str, uid: int, gid: int) -> None:
        with self._at(entry) as (fd, name):
            safefs.symlink_at(fd, name, target, uid, gid)

    def remove(self, entry: Entry, recursive: bool = True) -> None:
        with self._at(entry) as (fd, name):
            safefs.remove_at(fd, name, recursive=recursive)

    def attrs(
        self,
        entry: Entry,
        expect: os.stat_result,
        *,
        uid: int = -1,
        gid: int = -1,
        mode: int | None = None,
    ) -> None:
        """chown/chmod entry on its open descriptor (a symlink: chown the link itself)."""
        with self._at(entry) as (fd, name):
            if stat.S_ISLNK(expect.st_mode):
                os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
            else:
                shown = self.path if entry == TOP else os.path.join(self.path, *entry)
                safefs.set_attrs(fd, name, uid=uid, gid=gid, mode=mode, expect=expect, shown=shown)


class SharedDir:
    """The directory that a worker's group of first writes shares (FileRes._create_in_thread,
    engine.stopgate.Replies): walked to and identified once for the group, not once a file.
    A context manager: it closes the directory."""

    def __init__(self) -> None:
        self._where: Where | None = None
        self._refused = False  # the walk failed: each write walks alone, and says why

    def __enter__(self) -> SharedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._where is not None:
            self._where.__exit__()

    def at(self, path: str) -> Where | None:
        """`path`'s Where in the shared directory; None where its write goes alone: the walk
        failed, or the directory is missing (then the next write walks again: the first
        makes it)."""
        where = self._where
        if where is None or where.missing:
            if self._refused:
                return None
            if where is not None:
                where.__exit__()
                self._where = None
            try:
                where = Where(path)
            except (OSError, MgmtError):
                self._refused = True
                return None
            self._where = where
            if where.missing:
                return None
            where.local()  # asked once for all (the identity with it)
            where.new_owner()  # (an update's: FileRes._replace_found)
        return where.beside(path)


class _Opened:
    """A directory StepDirs opened, and how many checks hold it now."""

    __slots__ = ("retired", "users", "where")

    def __init__(self, where: Where) -> None:
        self.where, self.users, self.retired = where, 0, False

    def release(self) -> None:
        self.users -= 1
        if self.retired and not self.users:
            self.where.__exit__()


class StepDirs:
    """The parent directories that the checks of one step of the event loop share: a
    directory of a thousand managed files is walked to (its openat2, RESOLVE_NO_SYMLINKS)
    and identified (statx, for the leftover-temp scan's `_clean_dirs`) once a step, not once
    a file, and closed once (a no-op run's thousand checks ran in 4 steps).

    Why a step: what a check sees of the directory is then what a check that opened it
    itself anywhere in that step would see: the descriptor came from the same one-call walk
    that follows no symlink at all, a moment before, with the same race as a check that holds
    its own (a directory renamed or replaced after the open: the check acts in the one it
    opened, never through a symlink; where it is watched, the watch reports the rename and a
    check follows, as for an event queued right after the step's read of the queue,
    Hub.read_for_check; a check that reads a change of its own paths after the step's walk,
    as each one does while own writes are in flight, walks alone: FileRes._plan's `fresh`). The
    next step walks again (the flush is queued by the step's first walk: what was queued
    before it, at the next step's start, still takes the directory; no wait for I/O comes
    between). One engine's (its Shared), on its loop's thread only: an I/O
    thread's check walks alone (its group of first writes shares SharedDir instead).

    A directory stays open while a check that took it holds it (its Held), past its step:
    a check that writes awaits its steps; it is closed by the last one to let go. Where a
    parent is missing (the check makes it: `make_parent` replaces its descriptor) the
    Where is the check's own, as before."""

    __slots__ = ("_flush_due", "_loop", "_open")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # asked once (a getpid each ask)
        self._open: dict[str, _Opened] = {}
        self._flush_due = False

    def at(self, path: str, held: Held) -> Where:
        """`path`'s Where (an absolute, normalized path), held by `held` until its end."""
        cut = path.rfind("/")
        parent = path[:cut]  # the key: one string, one directory (not the root's files)
        opened = self._open.get(parent)
        if opened is None:
            where = Where(path)
            if where.missing or not parent.startswith("/"):
                return held.enter_context(where)  # the check's own
            try:
                where.ident()  # asked for every check of a file (Where.temp_steps)
            except BaseException:
                where.__exit__()
                raise
            opened = self._open[parent] = _Opened(where)
            if not self._flush_due:
                self._flush_due = True
                loop = self._loop
                if loop is None:
                    loop = self._loop = asyncio.get_running_loop()
                loop.call_soon(self._flush)
        shared = opened.where
        other = object.__new__(Where)
        other.name, other.path, other.fd, other.missing = path[cut + 1 :], path, shared.fd, []
        other._ident, other._local, other._new_owner = shared._ident, shared._local, None
        opened.users += 1
        held.on_exit(opened.release)
        return other

    def _flush(self) -> None:
        """The step ended: the next one walks again; what no check holds is closed now."""
        self._flush_due = False
        opened, self._open = self._open, {}
        for each in opened.values():
            each.retired = True
            if not each.users:
                each.where.__exit__()

    async def aclose(self) -> None:
        """The engine stops (its Shared): what is still open and not held, closed."""
        self._flush()


# filesystem helpers --------------------------------------------------------------------------


def kind_of(st: os.stat_result) -> str:
    """A human name for the type of an inode."""
    return _KINDS.get(stat.S_IFMT(st.st_mode), "device")


def same_content(fd: int, want: bytes | int, size: int) -> bool:
    """True if the first `size` bytes of the file open as fd are `want`: bytes, or what the
    file open as `want` holds (both have that size: the caller compared their stats).
    Bytes of that size, smaller than CHUNK (a file of `content`): one read, of a byte more,
    compared whole, so the file also ends where `want` does (one grown since its lstat differs)."""
    if size < CHUNK and isinstance(want, bytes) and len(want) == size:
        return os.pread(fd, size + 1, 0) == want
    offset = 0
    while offset < size:
        count = min(CHUNK, size - offset)  # no bigger buffer than needed: it costs a malloc
        chunk = os.pread(fd, count, offset)
        if isinstance(want, bytes):
            expected = want[offset : offset + count]
        else:
            expected = os.pread(want, count, offset)
        if len(chunk) != count or chunk != expected:
            return False
        offset += count
    return True


async def same(where: Where, st: os.stat_result, want: bytes | int, size: int) -> bool:
    if st.st_size != size:
        return False
    if size <= INLINE_LIMIT:
        return where.same(TOP, want, size)
    return await _in_thread(functools.partial(where.same, TOP, want, size))


def filler(data: bytes | int | None) -> safefs.Fill:
    """What makes a new file's content: bytes, what the file open as an int holds, or nothing."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    source = data

    def fill(out: BinaryIO) -> None:
        offset = 0
        while chunk := os.pread(source, CHUNK, offset):
            out.write(chunk)
            offset += len(chunk)

    return fill


# reversal helpers ----------------------------------------------------------------------------

REVERSE_LIMIT = 1 << 20  # prior content up to 1 MiB is kept for a reversal


def read_small(path: str) -> str | None:
    """The content of a regular file up to REVERSE_LIMIT bytes (sent along send/recv edges)."""
    try:
        with Where(path) as where:
            data = where.read(TOP, REVERSE_LIMIT)
    except (OSError, MgmtError):
        return None
    return data.decode(errors="replace") if data is not None else None


def _prior(dir_fd: int, name: str) -> dict[str, Any]:
    st = safefs.lstat_at(dir_fd, name)
    if st is None:
        return {"existed": False}
    prior: dict[str, Any] = {
        "existed": True,
        "kind": kind_of(st),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    if stat.S_ISREG(st.st_mode) and st.st_size <= REVERSE_LIMIT:
        data = safefs.read_at(dir_fd, name, REVERSE_LIMIT)
        if data is not None:
            prior["content"] = base64.b64encode(data).decode()
    return prior
