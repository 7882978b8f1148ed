"""Filesystem operations that follow no symlink they should not: descriptor-based, race-free.

A path is opened from "/" one component at a time (`openat` with `O_NOFOLLOW | O_DIRECTORY`),
and every change is made relative to the open parent directory (`mkdirat`, `renameat`,
`unlinkat`, `fchownat` without following) or on the open inode itself (`fchmod`, `fchown`). A
symlink swapped in between a check and a change is therefore never followed, at any level.

A symlink among the *parent* directories is followed only when it is safe, the rule sudo and
ssh apply to paths: the link is owned by root or by the agent's own user, and so is the
directory holding it, which nobody else can write. `/var/run -> /run` or `/lib -> usr/lib`
qualify; a link planted by another user (in /tmp, say) does not: the walk fails with
`UnsafePathError` naming it. The last component is never followed here; callers decide.

Writes are atomic: the content goes into an unnamed `O_TMPFILE` inode (mode at most 0600 and
never wider than the final mode), which gets its owner and final mode, is fsynced, then linked
under a temp name (`.mgmt.<12 hex>`) and renamed over the target. A crash leaves no named temp
file, except in the window between the link and the rename; `stale_temps()` finds such
leftovers (and those of older versions, which used named temp files throughout) so that a
later run removes them. `unnamed_at` makes such a complete, fsynced inode ahead of time and
`link_at` puts it in place later (resources/_lib/spare.py: a repair without an fsync to wait for).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import ctypes
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from engine import libc
from engine.errors import Interfered, ResourceError

log = logging.getLogger("engine")

TEMP_PREFIX = ".mgmt."  # temp files of atomic writes start with this
# Our temp names: 12 hex digits (older versions: mkstemp's 8 characters of [a-z0-9_]).
TEMP_NAME = re.compile(r"\.mgmt\.[a-z0-9_]{8,12}")
NAME_MAX = 255  # longest file name (bytes) the usual Linux file systems take
MAX_LINKS = 40  # symlinks followed in one walk before giving up (the kernel's own limit)
STARTED_NS = time.time_ns()  # a temp file older than this process is not one of its writes

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMPFILE = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PROC_FD = "/proc/self/fd"
_HAS_PROC = os.path.isdir(_PROC_FD)  # O_TMPFILE is linked in through /proc/self/fd
_in_flight: set[str] = set()  # temp names this process is writing right now
_in_flight_lock = threading.Lock()


class UnsafePathError(ResourceError):
    """A symlink in a path is not one the safe-path rule lets us follow."""


# walking ------------------------------------------------------------------------------------


def components(path: str) -> list[str]:
    """The names in an absolute path ("/a//b/" -> ["a", "b"])."""
    return [part for part in path.split("/") if part and part != "."]


def walk(
    path: str,
    *,
    create: int | None = None,
    start: tuple[int, str] | None = None,
    check: Callable[[int, str], None] | None = None,
) -> tuple[int, list[str]]:
    """Descend to the directory `path` without following unsafe symlinks.

    Returns an O_PATH descriptor of the deepest directory reached and the components still
    missing below it (empty: the descriptor is `path` itself). With `create` (a mode), missing
    directories are made, each with exactly that mode whatever the umask. A relative path
    starts at `start` (a directory descriptor and its path, for messages). The caller closes
    the descriptor. Raises NotADirectoryError if a component is not a directory,
    UnsafePathError for a symlink the safe-path rule refuses. `check(fd, path)` is called on
    every directory on the way (e.g. `trusted_dir`), "/" included.
    """
    if start is None and not path.startswith("/"):  # as open() takes it: from the cwd
        path = os.path.join(os.getcwd(), path)
    if start is None or path.startswith("/"):
        fd = _open_no_symlinks(path) if check is None else None  # usually one system call
        if fd is not None:
            return fd, []
        fd, walked = os.open("/", _DIR), ["/"]
    else:
        fd, walked = os.dup(start[0]), [start[1]]
    parts, links = deque(components(path)), 0
    try:
        if check is not None:
            check(fd, os.path.join(*walked))
        while parts:
            name = parts.popleft()
            try:
                new = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    return fd, [name, *parts]
                new = _make_dir(fd, name, create)
            except OSError as err:
                if err.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                target = safe_link(fd, name, os.path.join(*walked, name))
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", path) from None
                parts.extendleft(reversed(components(target)))
                if target.startswith("/"):
                    os.close(fd)
                    fd, walked = os.open("/", _DIR), ["/"]
                continue
            os.close(fd)
            fd = new
            walked.append(name)
            if check is not None:
                check(fd, os.path.join(*walked))
    except BaseException:
        os.close(fd)
        raise
    return fd, []


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to (5.6)
_RESOLVE_NO_SYMLINKS = 0x04
_AT_FDCWD = -100
_HOW = _OpenHow(_DIR & ~os.O_NOFOLLOW, 0, _RESOLVE_NO_SYMLINKS)
_HOW_REF = ctypes.byref(_HOW)  # made once: one per call cost an object a directory opened
_READ_HOW = _OpenHow(_READ & ~os.O_NOFOLLOW, 0, _RESOLVE_NO_SYMLINKS)
_READ_HOW_REF = ctypes.byref(_READ_HOW)  # open_trusted's one call when no link is on the way
_syscall = libc.syscall  # the GIL held: a lookup of directories (engine/libc.py)
_openat2_usable = [True]  # cleared when the kernel (or a sandbox) refuses openat2


def _open_no_symlinks(path: str, how: object = _HOW_REF) -> int | None:
    """The directory `path` (with _READ_HOW_REF: the file or directory, to read) opened in one
    openat2 call that follows no symlink at all.

    None when that is not possible (a symlink on the way, a missing component, a kernel or a
    sandbox without openat2): the component-by-component walk then finds out why.
    """
    if not _openat2_usable or "\0" in path:
        return None
    fd: int = _syscall(_SYS_OPENAT2, _AT_FDCWD, libc.fsencode(path), how, 24)
    if fd >= 0:
        return fd
    if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
        _openat2_usable.clear()  # not available here: always walk
    return None


def open_dir(
    path: str, *, create: int | None = None, check: Callable[[int, str], None] | None = None
) -> int:
    """An O_PATH descriptor of the directory `path` (see walk); FileNotFoundError if missing."""
    fd, missing = walk(path, create=create, check=check)
    if missing:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return fd


# A user trusted as root and this process's user are, for one read (`invoker_trusted`).
_invoker: contextvars.ContextVar[int | None] = contextvars.ContextVar("invoker", default=None)


def _others(uid: int) -> bool:
    """Whether `uid` is another user's: not root's, ours, nor the trusted invoker's."""
    return uid not in (0, os.geteuid()) and uid != _invoker.get()


def trusted_invoker() -> int | None:
    """The invoker `invoker_trusted` trusts in this context, if any."""
    return _invoker.get()


def sudo_invoker() -> int | None:
    """The user who ran this command through sudo (SUDO_UID, set by sudo), or None. Only when
    this process is root (real and effective uid 0, as `sudo mgmt ...` runs): root's own
    environment, whoever could set it is root already. A process of another user ignores it:
    anyone running as that user sets its environment (`SUDO_UID=1001 mgmt ...`, or one left
    over from a `sudo -u agent -s` by uid 1001), and uid 1001's files, directories and links
    would then pass as this user's (a CA of theirs trusted: review of the tenth session)."""
    if os.getuid() != 0 or os.geteuid() != 0:
        return None
    given = os.environ.get("SUDO_UID", "")
    return int(given) if given.isdigit() and len(given) < 11 else None


@contextlib.contextmanager
def invoker_trusted(uid: int | None) -> Iterator[None]:
    """Within the block (this thread's context), `uid`'s files, directories and links pass the
    safe-path rule as root's and ours do: for what the invoker of a command names for it to
    read on their behalf (`mgmt deploy --sign-key ~/.ssh/deploy` under sudo), where their
    control gives them nothing they have not got by naming another file."""
    token = _invoker.set(uid)
    try:
        yield
    finally:
        _invoker.reset(token)


def trusted_owner(uid: int) -> bool:
    """Whether a file of `uid` is as ours: root's, this process's user's, or the trusted
    invoker's (`invoker_trusted`)."""
    return not _others(uid)


_ACL_ACCESS = "system.posix_acl_access"
_ACL_BASE = 4 + 3 * 8  # an ACL's header and its 3 entries that the mode bits say


def _extended_acl(where: int | str) -> bool:
    """Whether the inode `where` (a descriptor, O_PATH ones included, or a path whose last
    link is not followed) has an access ACL beyond its mode: its group bits are then the
    ACL's mask, which named users' and groups' entries share. On error: True (closed)."""
    try:
        if isinstance(where, int):
            value = os.getxattr(f"{_PROC_FD}/{where}", _ACL_ACCESS)
        else:
            value = os.getxattr(where, _ACL_ACCESS, follow_symlinks=False)
    except OSError as err:
        return err.errno not in (errno.ENODATA, errno.EOPNOTSUPP)
    return len(value) > _ACL_BASE


def writable_by_others(st: os.stat_result, where: int | str) -> bool:
    """Whether anyone but its owner and root could write the inode `where` (its stat `st`):
    others' write bit, or its group's unless the group is root's (gid 0) with no ACL beyond
    the mode. Root's group is root's (sudo's rule: `sudoers_gid`, 0, may write sudoers): on
    Debian it has no member but root, and adding one is root's act; any other group is a grant
    to users (Debian's `staff`, gid 50: "users may add local modifications to /usr/local
    without root"), whose members NSS cannot always list (LDAP, sssd without enumeration),
    so it counts as others. Nor is gid 0 root's where another user has it (`_root_group_
    roots`: RHEL's and Fedora's `sync`, `shutdown`, `halt` and `operator` have it as their
    primary group). The mgmt-wide rule of who may write what is trusted (every check of
    "writable by others" goes through here)."""
    mode = st.st_mode
    if mode & 0o002:
        return True
    if not mode & 0o020:
        return False
    return st.st_gid != 0 or _extended_acl(where) or not _root_group_roots()


_ROOT_GROUP: list[bool] = []  # [whether gid 0 is root's alone], once asked


def _root_group_roots() -> bool:
    """Whether root's group (gid 0) has no member but root: none named in the group database
    but uid 0's names, and no user but uid 0 with it as their primary group (the passwd
    database, as NSS lists it: local files at least). Asked once per process, and only for a
    group-writable inode of gid 0 (rare: never on the usual 0755/0644 paths)."""
    if not _ROOT_GROUP:
        import grp
        import pwd

        users = pwd.getpwall()
        roots = {user.pw_name for user in users if user.pw_uid == 0}
        try:
            named = set(grp.getgrgid(0).gr_mem)
        except KeyError:
            named = set()
        primary = any(user.pw_gid == 0 and user.pw_uid != 0 for user in users)
        _ROOT_GROUP.append(named <= roots and not primary)
    return _ROOT_GROUP[0]


def controlled_by_others(st: os.stat_result, where: int | str, *, sticky_ok: bool) -> str:
    """Why a directory is controlled by another user ("" if only root or this agent's user
    control it): the safe-path rule of sudo and ssh, group-writable by root's group included
    (`writable_by_others`). `where`: its descriptor or path (for its ACL). With sticky_ok, a
    sticky directory owned by root (/tmp) passes: nobody else can rename or remove what is
    ours in it."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, os.geteuid()) and _others(st.st_uid):
        return f"is owned by uid {st.st_uid}"
    if (
        mode & 0o022  # (the usual 0755: nothing more to look at)
        and not (sticky_ok and mode & stat.S_ISVTX and st.st_uid == 0)
        and writable_by_others(st, where)
    ):
        return f"can be written by others (mode {mode:04o})"
    return ""


def safe_link(dir_fd: int, name: str, shown: str) -> str:
    """The target of the symlink `name` in dir_fd, if the safe-path rule allows following it.

    The rule: the link is owned by root or the agent's own user, and so is the directory
    holding it, which nobody else can write. Otherwise UnsafePathError, naming the link and
    who controls it. NotADirectoryError if `name` is not a symlink.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", shown)
    target = os.readlink(name, dir_fd=dir_fd)
    why = ""
    if st.st_uid not in (0, os.geteuid()) and _others(st.st_uid):
        why = f"it is owned by uid {st.st_uid}"
    elif held := controlled_by_others(os.fstat(dir_fd), dir_fd, sticky_ok=False):
        why = f"its directory {os.path.dirname(shown) or '.'} {held}"
    if why:
        raise UnsafePathError(
            f"refusing to follow the symlink {shown} (-> {target}): {why}; only links owned by "
            "root (or this agent's user), in directories only they can write, are followed"
        )
    return target


def open_trusted(path: str) -> int:
    """A read descriptor of `path` (a file or a directory), following a symlink, at any level
    and the last component included, only under the safe-path rule (`safe_link`).

    What the agent reads on the operator's behalf (a file's `source`, its `fragments`, a
    gzip's `input`...) is read this way: a link another user planted, or one in a directory
    another user can write (`/tmp`), is refused (UnsafePathError naming it), so they cannot
    make root copy a file only root may read. Relative links resolve from the directory
    holding them, `..` physically (as the kernel does); a relative `path` from the current
    directory, as open() takes it (before the ninth session's review it was taken from "/":
    `mgmt deploy --sign-key key` read /key, or said it was missing). FileNotFoundError if
    missing.
    """
    if not path.startswith("/"):
        path = os.path.join(os.getcwd(), path)
    if (fd := _open_no_symlinks(path, _READ_HOW_REF)) is not None:
        return fd  # no link on the way: one system call
    here: tuple[int, str] | None = None  # the directory holding the last link (and its path)
    links = 0
    try:
        while True:
            parts = components(path)
            name = parts.pop() if parts else "."
            head = "/".join(parts)
            if here is None or path.startswith("/"):
                fd, missing = walk("/" + head)
                shown = "/" + head
            else:  # a relative link's target: from the directory holding the link
                fd, missing = walk(head, start=here)
                shown = os.path.join(here[1], head) if head else here[1]
            if here is not None:
                os.close(here[0])
            here = (fd, shown)
            if missing:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            try:
                return os.open(name, _READ, dir_fd=fd)
            except OSError as err:
                if err.errno != errno.ELOOP:
                    raise
            path = safe_link(fd, name, os.path.join(shown, name))
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, "too many symlinks", path)
    finally:
        if here is not None:
            os.close(here[0])


def _descend(dir_fd: int, names: Iterable[str], step: Callable[[int, str], int]) -> int:
    """The fd reached from dir_fd by `step(fd, name)` for each name (each fd on the way closed;
    dir_fd itself kept)."""
    fd = os.dup(dir_fd)
    try:
        for name in names:
            new = step(fd, name)
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd


def sub_dir(dir_fd: int, rel: tuple[str, ...]) -> int:
    """An O_PATH descriptor of dir_fd/rel..., following no symlink at all (ELOOP/ENOTDIR)."""
    return _descend(dir_fd, rel, lambda fd, name: os.open(name, _DIR, dir_fd=fd))


@contextlib.contextmanager
def closing(fd: int) -> Iterator[int]:
    """Close fd when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


# inspecting ---------------------------------------------------------------------------------


def path_at(dir_fd: int, name: str) -> str:
    """A path of dir_fd/name that the kernel resolves through the descriptor (/proc)."""
    return f"{_PROC_FD}/{dir_fd}/{name}"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """The lstat of dir_fd/name (None: missing)."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def scan(dir_fd: int, name: str | None = None, prefix: str = "") -> dict[str, os.stat_result]:
    """Every entry of the directory dir_fd (or dir_fd/name) whose name starts with `prefix`,
    with its lstat; one gone before its lstat (a sibling's temp file renamed meanwhile) is
    left out. (The others are not lstat'd: a directory of 1,000 managed files looked for
    leftover temps made 1,000 lstats.)"""
    fd = os.open(name or ".", _READ | os.O_DIRECTORY, dir_fd=dir_fd)
    found: dict[str, os.stat_result] = {}
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if not entry.name.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found[entry.name] = entry.stat(follow_symlinks=False)
    finally:
        os.close(fd)
    return found


def open_read(dir_fd: int, name: str) -> int:
    """A read descriptor of the regular file dir_fd/name (a symlink there is not followed)."""
    fd = os.open(name, _READ, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", name)
    return fd


def open_subdir(dir_fd: int, name: str) -> int:
    """A read descriptor of the directory dir_fd/name (for `scan` and `open_read` in it); a
    symlink there is not followed (ELOOP), anything but a directory is ENOTDIR."""
    return os.open(name, _READ | os.O_DIRECTORY, dir_fd=dir_fd)


def open_regular(path: str) -> int:
    """A read descriptor of the regular file `path` (symlinks followed only under the
    safe-path rule: `open_trusted`); OSError EINVAL for anything else. A FIFO is never waited
    on: opening one to read waits for a writer, forever, in a thread that no cancel ends."""
    fd = open_trusted(path)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def read_at(dir_fd: int, name: str, limit: int) -> bytes | None:
    """Up to `limit` bytes of a regular file; None if it is bigger."""
    with closing(open_read(dir_fd, name)) as fd:
        return read_limited(fd, limit)


def read_limited(fd: int, limit: int) -> bytes | None:
    """The bytes of the open regular file fd (from its start), None if it has more than
    `limit`: its size is asked first, so a sparse 100 GB file is refused without being read
    (and a file growing meanwhile is cut off at limit + 1 bytes, never read whole)."""
    if os.fstat(fd).st_size > limit:
        return None
    chunks, size = [], 0
    while size <= limit and (chunk := os.pread(fd, min(1 << 20, limit + 1 - size), size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file `path`, read for the operator (`open_regular`: a symlink
    followed only under the safe-path rule, a FIFO or device refused, never waited on).
    OSError EFBIG if it has more than `limit` bytes; UnsafePathError for a refused link."""
    with closing(open_regular(path)) as fd:
        data = read_limited(fd, limit)
    if data is None:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes (the limit)", path)
    return data


def fit_name(name: str, suffix: str = "") -> str:
    """`name + suffix` as one file name: hashed ("#<sha256>") when too long or not a plain name."""
    whole = name + suffix
    if len(os.fsencode(whole)) <= NAME_MAX and "/" not in name and name not in ("", ".", ".."):
        return whole
    return "#" + hashlib.sha256(os.fsencode(name)).hexdigest() + suffix


# changing -----------------------------------------------------------------------------------


class Inode:
    """An entry opened without following a link, to fchmod/fchown it on the open descriptor.

    `expect` (a stat from the plan) must still describe it: if the entry was replaced since,
    ResourceError (a retry plans again). Without read permission (an agent that is not root),
    the descriptor is O_PATH and the changes go through /proc/self/fd.
    """

    def __init__(self, dir_fd: int, name: str, expect: os.stat_result | None = None) -> None:
        self.path_only = False
        try:
            self.fd = os.open(name, _READ, dir_fd=dir_fd)
        except PermissionError:
            self.fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            self.path_only = True
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ResourceError(f"{name} became a symlink meanwhile: not followed") from None
            raise
        self.st = st = os.fstat(self.fd)
        if stat.S_ISLNK(st.st_mode) or (
            expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino)
        ):
            os.close(self.fd)
            raise ResourceError(f"{name} was replaced meanwhile: not changed, will check again")

    def __enter__(self) -> Inode:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def chown(self, uid: int, gid: int) -> None:
        if uid == -1 and gid == -1:
            return
        if self.path_only:
            os.chown(f"{_PROC_FD}/{self.fd}", uid, gid)
        else:
            os.fchown(self.fd, uid, gid)

    def chmod(self, mode: int) -> None:
        if self.path_only:
            os.chmod(f"{_PROC_FD}/{self.fd}", mode)
        else:
            os.fchmod(self.fd, mode)


def set_attrs(
    dir_fd: int,
    name: str,
    *,
    uid: int = -1,
    gid: int = -1,
    mode: int | None = None,
    expect: os.stat_result | None = None,
    shown: str | None = None,
) -> None:
    """chown (-1: unchanged) then chmod (None: unchanged) dir_fd/name (`shown` in messages),
    never through a link.

    A file with other hard links, in a directory another user controls, is refused
    (UnsafePathError): they may have linked someone else's file there (the kernel's
    protected_hardlinks lets them link any file they may read and write), and its chown would
    give it to them. Before (2026-12-05, tester13), `owner: t13a` of t13a's
    `~/report`, a hard link to t13b's group-writable file, made that file t13a's.
    """
    with Inode(dir_fd, name, expect) as inode:
        st = inode.st
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            why = controlled_by_others(os.fstat(dir_fd), dir_fd, sticky_ok=False)
            if why:
                raise UnsafePathError(
                    f"{shown or name} has {st.st_nlink} hard links and its directory {why}: "
                    "refusing "
                    "to change its owner or mode (another user may have linked someone "
                    "else's file here): remove the other link"
                )
        inode.chown(uid, gid)  # first: chown may clear setuid bits
        if mode is not None:
            inode.chmod(mode)


def make_dir(dir_fd: int, name: str, mode: int, uid: int = -1, gid: int = -1) -> None:
    """mkdirat with exactly this owner and mode (umask-proof, no window with looser bits)."""
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    try:
        set_attrs(dir_fd, name, uid=uid, gid=gid, mode=mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=dir_fd)
        raise


def _make_dir(dir_fd: int, name: str, mode: int) -> int:
    """make_dir, or use the directory a sibling resource made meanwhile: its O_PATH fd."""
    with contextlib.suppress(FileExistsError):
        make_dir(dir_fd, name, mode)
    return os.open(name, _DIR, dir_fd=dir_fd)  # ENOTDIR if a link took its place


def make_dirs(dir_fd: int, missing: list[str], mode: int) -> int:
    """Create the missing directories below dir_fd (each with exactly `mode`); the last's fd."""
    return _descend(dir_fd, missing, lambda fd, name: _make_dir(fd, name, mode))


@contextlib.contextmanager
def _temp(dir_fd: int) -> Iterator[str]:
    """A fresh temp name in dir_fd, known as ours while in use; removed if left behind."""
    name = TEMP_PREFIX + libc.random_bytes(6).hex()  # secrets.token_hex(6), the GIL held
    with _in_flight_lock:
        _in_flight.add(name)
    try:
        yield name
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        if isinstance(err, FileNotFoundError) and not isinstance(err, Interfered):
            # Our temp name, or the directory, was removed by another meanwhile (an `rm -rf`
            # listed it): told apart, so that the resource is checked again (errors.Interfered).
            raise Interfered(err.errno, err.strerror, err.filename, None, err.filename2) from err
        raise
    finally:
        with _in_flight_lock:
            _in_flight.discard(name)


_WRITE_BUFFER = 1 << 16
# What a new file gets: bytes (written as they are, no buffer to allocate: ~8 us less per file),
# or a function that writes it through a buffered file object (a copy, a download).
Fill = bytes | Callable[[BinaryIO], object]


def _unnamed(dir_fd: int, mode: int) -> int | None:
    """A new unnamed file (O_TMPFILE) in dir_fd, with mode `mode & 0600` (never wider than the
    final mode nor than 0600); None where the file system makes no unnamed files."""
    if not _HAS_PROC:
        return None
    try:
        return os.open(".", _TMPFILE, mode & 0o600, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def write_at(
    dir_fd: int,
    name: str,
    fill: Fill,
    *,
    mode: int,
    uid: int = -1,
    gid: int = -1,
    new: bool = False,
    local: bool | None = None,
) -> None:
    """Atomically replace dir_fd/name: fill a new inode, set owner and mode, fsync, then link it
    under a temp name renamed over `name`. A small file's quick calls keep the GIL on a local
    file system (engine/libc.py; `local`: whether dir_fd is on one, if the caller knows):
    only its open and its fsync, which wait for the disk, release it. `new`: the name was
    just found absent; the complete unnamed file is then linked at it directly (no temp name,
    no rename: each a search of the directory, linear on ext4 without dir_index), unless it
    appeared meanwhile."""
    small = isinstance(fill, bytes) and len(fill) <= QUICK_WRITE
    if small and local is None:
        local = libc.local_fs(dir_fd)
    calls = _HOLDING if small and local else _RELEASING
    fd = _unnamed(dir_fd, mode)
    if fd is None:  # named from the start, complete before the rename
        with _temp(dir_fd) as tmp:
            fd = os.open(tmp, _CREATE, mode & 0o600, dir_fd=dir_fd)
            try:
                _complete(fd, fill, mode, uid, gid, calls=calls)
            finally:
                calls.close(fd)
            calls.rename(dir_fd, tmp, dir_fd, name)
        return
    try:
        _complete(fd, fill, mode, uid, gid, calls=calls)
        _name(calls, fd, dir_fd, name, new)
    finally:
        calls.close(fd)
    # No directory fsync: the data is on disk before the rename, so after a crash the path
    # holds the old or the new content, never a mix; a lost rename is re-applied next run.


def _name(calls: _Calls, fd: int, dir_fd: int, name: str, new: bool) -> None:
    """Give the complete unnamed file fd (its final owner and mode, fsynced) its name: linked
    at it directly if `new` and the name is still free, else under a temp name renamed over."""
    if new and _link_new(calls, fd, dir_fd, name):
        return
    with _temp(dir_fd) as tmp:
        calls.link(f"{_PROC_FD}/{fd}", dir_fd, tmp)
        calls.rename(dir_fd, tmp, dir_fd, name)


def unnamed_filled(
    dir_fd: int, data: bytes, *, mode: int, uid: int, gid: int, local: bool
) -> int | None:
    """The first part of write_at(new=True) for a writer that writes several files before it
    fsyncs them (their fsyncs one after another, after all the writes: faster here, see
    docs/benchmarks.md, perfbatch): a new unnamed file in dir_fd with `data`, its owner and mode, NOT
    fsynced; None where the file system makes no unnamed files. `named_new` completes it."""
    fd = _unnamed(dir_fd, mode)
    if fd is None:
        return None
    try:
        _fill(fd, data, mode, uid, gid, calls=_calls(data, local))
    except BaseException:
        os.close(fd)
        raise
    return fd


def named_new(
    dir_fd: int, name: str, fd: int, *, data: bytes, local: bool, new: bool = True
) -> None:
    """The second part (see unnamed_filled): fsync fd, then give it `name` (just found free;
    `new` False: an existing file there, replaced, its old inode held until `take_kept`:
    see _kept); fd is closed. Inside its group's `named_together`, its fsync was done there:
    its outcome is taken (a failed fsync raised as OSError, as here), then it is named here."""
    calls = _calls(data, local)
    try:
        done = _fsynced_already(fd)
        if done is None:  # alone
            os.fsync(fd)
        elif done:
            raise OSError(done, os.strerror(done))  # as os.fsync's
        if not new:
            _keep(dir_fd, name, local)
        _name(calls, fd, dir_fd, name, new)
    finally:
        calls.close(fd)


# The old inodes a burst of replacing writes renamed over (named_new, new=False), each held
# open (O_PATH) until `take_kept`: the rename does not free it then. ext4 without a journal
# makes every inode allocation pass over the inodes freed in the last minute (one buffer
# lookup each, fs/ext4/ialloc.c recently_deleted), and frees an inode's blocks with a
# synchronous discard where mounted `discard`: a burst of N updates that freed as it went
# made its own later allocations O(N) each (docs/benchmarks.md, "Updating 1,000 files").
# Beyond keep_most(), the oldest is let go at once.
_kept: collections.deque[int] = collections.deque()
_kept_lock = threading.Lock()
KEEP_MOST = 4096
_keep_most: list[int] = []


def keep_most() -> int:
    """How many old inodes are held at most: KEEP_MOST, or a quarter of the descriptors this
    process may open if that is fewer (as many again serve the checks: engine.check_limit)."""
    if not _keep_most:
        import resource  # (not at every start-up: only a burst of updates asks)

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        _keep_most.append(
            KEEP_MOST if soft == resource.RLIM_INFINITY else min(KEEP_MOST, soft // 4)
        )
    return _keep_most[0]


def _keep(dir_fd: int, name: str, local: bool) -> None:
    """Hold dir_fd/name's inode (not followed: a link is held as itself) until take_kept;
    nothing held if it is gone already. `local`: dir_fd is on a local file system, where the
    lookup keeps the GIL (libc.open_path)."""
    try:
        if local:
            fd = libc.open_path(dir_fd, name)
        else:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return
    with _kept_lock:
        _kept.append(fd)
        spill = _kept.popleft() if len(_kept) > keep_most() else None
    if spill is not None:
        os.close(spill)


def kept() -> bool:
    """Whether old inodes are held (see _kept)."""
    return bool(_kept)


def take_kept(size: int) -> list[list[int]]:
    """The held old inodes' descriptors, taken, in lists of `size` (for `close_all` in as
    many threads: each close frees an inode, waiting for its discard)."""
    with _kept_lock:
        fds = list(_kept)
        _kept.clear()
    return [fds[i : i + size] for i in range(0, len(fds), size)]


def close_all(fds: list[int]) -> None:
    """Close each of `fds`."""
    for fd in fds:
        os.close(fd)


# The outcomes of this thread's group (named_together), for named_new: fd -> its fsync's errno.
_named_group = threading.local()


@contextlib.contextmanager
def named_together(ring: object, files: list[tuple[int, int, str | None]]) -> Iterator[None]:
    """Fsync the complete unnamed files (fd, dir_fd, name) (see unnamed_filled), the write-out
    of all their data begun first, then every fsync, before any is named: through `ring` (an
    engine.uring.Ring: their fsyncs in flight together, uring.fsync_all), or, `ring` None (or
    failing: that is no file's error), here one after another (`write_out`, then `os.fsync`
    each). Inside, each file's `named_new` takes its fsync's outcome in place of its own
    fsync, and names it (or raises its failure); it still closes fd. A group fsynced and named file by file, each link
    dirtying again the inode table block (16 inodes) that the next file's fsync then wrote:
    a 100-file first run made ~100 synchronous metadata writes, ~14 this way
    (docs/benchmarks.md, "A first run's write-out")."""
    fds = [fd for fd, _dir, _name in files]
    done: list[int] | None = None
    if ring is not None:
        from engine import uring  # only where a ring was made: not at every start-up

        assert isinstance(ring, uring.Ring)
        done = uring.fsync_all(ring, fds)  # None: the ring failed (a transient EAGAIN...)
    if done is None:  # no ring, or it failed: here, one after another
        write_out(fds)
        done = []
        for fd in fds:
            try:
                os.fsync(fd)
            except OSError as err:
                done.append(err.errno or errno.EIO)
            else:
                done.append(0)
    _named_group.outcomes = dict(zip(fds, done, strict=True))
    try:
        yield
    finally:
        _named_group.outcomes = None


_SYNC_FILE_RANGE_WRITE = 2
# libc's sync_file_range through ctypes.CDLL (the GIL released around each call), made once
_released: list[Callable[..., int]] = []


def write_out(fds: list[int]) -> None:
    """Begin the write-out of each file's dirty data (sync_file_range(SYNC_FILE_RANGE_WRITE):
    not waited for), in this thread, the GIL released around each call (it may wait for the
    disk: an allocation's metadata, a full request queue). Before a group's fsyncs: ext4
    allocates the files' blocks now (delayed allocation), not in each fsync (see
    uring.Ring.write_out). A failure is ignored: the fsync that follows writes the data
    itself, and reports its own."""
    if not _released:
        libc_released = ctypes.CDLL(None, use_errno=True)
        call = libc_released.sync_file_range
        call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        call.restype = ctypes.c_int
        _released.append(call)
    sync_file_range = _released[0]
    for fd in fds:
        sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _fsynced_already(fd: int) -> int | None:
    """Inside named_together: fd's fsync's errno there (0: done; taken: asked once); else
    None."""
    outcomes: dict[int, int] | None = getattr(_named_group, "outcomes", None)
    if not outcomes:
        return None
    return outcomes.pop(fd, None)


def _calls(data: bytes, local: bool) -> _Calls:
    return _HOLDING if local and len(data) <= QUICK_WRITE else _RELEASING


def _link_new(calls: _Calls, fd: int, dir_fd: int, name: str) -> bool:
    """Link the complete unnamed file fd at dir_fd/name; False if the name exists."""
    try:
        calls.link(f"{_PROC_FD}/{fd}", dir_fd, name)
    except FileExistsError:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Calls:
    """The quick calls of a write: through `os` (the GIL released around each), or through
    engine/libc.py (held: a copy of at most QUICK_WRITE bytes, a chmod, a link, a rename, the
    close of a file already fsynced). A plain class of two instances, not a NamedTuple (whose
    class cost every start ~0.8 M instructions, 0.4% of a cron run's: typing's and
    collections' builders)."""

    __slots__ = ("close", "fchmod", "link", "rename", "write_all")

    def __init__(
        self,
        write_all: Callable[[int, bytes], None],
        fchmod: Callable[[int, int], None],
        link: Callable[[str, int, str], None],  # (path, dst_dir_fd, dst), symlinks followed
        rename: Callable[[int, str, int, str], None],  # (src_dir_fd, src, dst_dir_fd, dst)
        close: Callable[[int], None],
    ) -> None:
        self.write_all = write_all
        self.fchmod = fchmod
        self.link = link
        self.rename = rename
        self.close = close


_RELEASING = _Calls(
    _write_all,
    os.fchmod,
    lambda src, dir_fd, dst: os.link(src, dst, dst_dir_fd=dir_fd, follow_symlinks=True),
    lambda src_fd, src, dst_fd, dst: os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd),
    os.close,
)
_HOLDING = _Calls(libc.write_all, libc.fchmod, libc.link, libc.rename, libc.close)
# Contents up to this size are written by write_at with the GIL held around the quick calls.
QUICK_WRITE = 1 << 16


def _complete(
    fd: int, fill: Fill, mode: int, uid: int, gid: int, *, calls: _Calls = _RELEASING
) -> None:
    """Fill the new file open as fd, give it its owner and mode, and fsync it."""
    _fill(fd, fill, mode, uid, gid, calls=calls)
    os.fsync(fd)


def _fill(fd: int, fill: Fill, mode: int, uid: int, gid: int, *, calls: _Calls) -> None:
    """Fill the new file open as fd, and give it its owner and mode."""
    if isinstance(fill, bytes):
        calls.write_all(fd, fill)
    else:
        # An explicit buffer size: else open() asks whether fd is a terminal (an ioctl per file).
        with open(fd, "wb", buffering=_WRITE_BUFFER, closefd=False) as out:
            fill(out)
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)
    calls.fchmod(fd, mode)  # after chown, which clears setuid bits


def unnamed_at(dir_fd: int, fill: Fill, *, mode: int, uid: int = -1, gid: int = -1) -> int | None:
    """A complete new file in dir_fd that has no name yet (O_TMPFILE): filled, with its owner
    and mode, fsynced; its descriptor, for `link_at` to put it in place later (the fsync is
    then already done), or None where the file system makes no unnamed files. Closing the
    descriptor unused frees it."""
    fd = _unnamed(dir_fd, mode)
    if fd is None:
        return None
    try:
        _complete(fd, fill, mode, uid, gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_at(dir_fd: int, name: str, fd: int, *, new: bool = False, local: bool = False) -> None:
    """Atomically replace dir_fd/name by the complete unnamed file `fd` (see unnamed_at): a
    link under a temp name, renamed over name; `new` (the name was just found absent): linked
    at name directly, unless it appeared meanwhile (a repair of a deleted file: one journal
    operation and one event for the watchers of the directory instead of three). `local`
    (dir_fd is on a local file system): the link and the rename keep the GIL (engine/libc.py).
    fd stays open (the caller closes it)."""
    calls = _HOLDING if local else _RELEASING
    _name(calls, fd, dir_fd, name, new)


def write_file(path: str, data: bytes, mode: int, *, parents: int = 0o755) -> None:
    """Atomically write `data` to path (missing parents made with mode `parents`)."""
    with closing(open_dir(os.path.dirname(path), create=parents)) as dir_fd:
        write_at(dir_fd, os.path.basename(path), data, mode=mode)


def symlink_at(dir_fd: int, name: str, target: str, uid: int, gid: int) -> None:
    """Atomically make dir_fd/name a symlink to target (a temp link renamed over it)."""
    with _temp(dir_fd) as tmp:
        os.symlink(target, tmp, dir_fd=dir_fd)
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def remove_at(dir_fd: int, name: str, *, recursive: bool = True) -> None:
    """Remove dir_fd/name: a link itself (never its target), a file, a directory tree.

    Without `recursive` a directory must be empty. Trees go through shutil.rmtree with dir_fd,
    which works on descriptors and does not follow symlinks below either.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
    elif recursive:
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.rmdir(name, dir_fd=dir_fd)


# leftovers of crashed writes ----------------------------------------------------------------


def is_stale_temp(name: str, st: os.stat_result) -> bool:
    """A temp file (or link) of an atomic write that a crashed or killed run left behind.

    Ours by name (`.mgmt.` and 8-12 characters of [a-z0-9_]), a file or a symlink, not being
    written by this process, and older than this process (so not another live write of ours).
    """
    if not TEMP_NAME.fullmatch(name) or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return False
    with _in_flight_lock:
        if name in _in_flight:
            return False
    return st.st_mtime_ns < STARTED_NS


def stale_temps(dir_fd: int) -> list[str]:
    """The names of stale temp files in the directory dir_fd."""
    found = scan(dir_fd, prefix=TEMP_PREFIX)
    return sorted(name for name, st in found.items() if is_stale_temp(name, st))


# private state directories ------------------------------------------------------------------


def trusted_dir(fd: int, shown: str) -> None:
    """Refuse (UnsafePathError) a directory above private state that another user controls.

    The safe-path rule (sudo's, ssh's): owned by root or this agent's user, and writable by
    nobody else, except a sticky directory owned by root (/tmp: nobody else can rename or
    remove what is ours in it). A directory owned by uid 65534 above the prefix could have
    any CA or key swapped in below it.
    """
    why = controlled_by_others(os.fstat(fd), fd, sticky_ok=True)
    if not why:
        return
    raise UnsafePathError(
        f"{shown} {why}: refusing to trust what is below it (every directory above the agent's "
        "state or trusted keys must be owned by root or this agent's user, writable only by them)"
    )


def others_control(path: str) -> str:
    """Why another user could change what the file or directory `path` holds ("" if only root
    or this agent's user can): it, or a directory above it, owned by another user or writable
    by others (a sticky directory owned by root, /tmp, passes above it, as in `trusted_dir`), or
    a symlink on the way that the safe-path rule refuses. A missing path: "" (nothing to say).
    What the agent is given to run (a graph file, a program) is checked so: mgmt trusts it as
    root does."""

    def check(fd: int, shown: str) -> None:
        if why := controlled_by_others(os.fstat(fd), fd, sticky_ok=True):
            raise UnsafePathError(f"{shown} {why}")

    path = os.path.abspath(path)
    try:
        with closing(open_dir(os.path.dirname(path), check=check)):
            pass
        with closing(open_trusted(path)) as fd:
            why = controlled_by_others(os.fstat(fd), fd, sticky_ok=False)
    except UnsafePathError as err:
        return str(err)
    except OSError:
        return ""  # missing or unreadable: reading it says so
    return f"{path} {why}" if why else ""


def others_control_tree(path: str) -> str:
    """`others_control(path)`, then the same of everything below the directory `path`: an
    entry owned by another user, one others may write, or a symlink whose way `others_control`
    refuses; a linked directory is walked too (once: a loop of links or of bind mounts ends).
    For trees whose files become what root runs (Puppet's --modulepath, --puppet-environment,
    setup's virtualenv). A sticky directory passes above `path`, never below it: /tmp's rule
    (nobody else can rename or remove what is ours) keeps our names, but anyone may add one,
    and a new name in a tree is new code (a manifest Puppet autoloads, a `.pth` file, Hiera
    data a hierarchy names); before the ninth session's review a 1777 directory of root's
    in a module passed. Iterative (os.walk of Python 3.11 recurses: a tree ~1,000 deep raised
    RecursionError). The first reason found; "" if none. One lstat per entry: start-up only."""
    if why := others_control(path):
        return why
    seen: set[tuple[int, int]] = set()
    todo: list[str] = [os.path.abspath(path)]
    linked: list[str] = []  # linked directories after the tree's own: what is in both is
    while todo or linked:  # named by its own path (a virtualenv's lib/, not its lib64/)
        top = todo.pop() if todo else linked.pop()
        try:
            here = os.stat(top)  # a link's target: the link was checked when it was found
            if not stat.S_ISDIR(here.st_mode) or (here.st_dev, here.st_ino) in seen:
                continue  # a file, or walked already (a link back up, two links to one)
            seen.add((here.st_dev, here.st_ino))
            with os.scandir(top) as found:
                entries = list(found)
        except OSError:
            continue  # gone, or unreadable: Puppet (or Python) as this user cannot read it either
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                why = others_control(entry.path)
            elif why := controlled_by_others(st, entry.path, sticky_ok=False):
                why = f"{entry.path} {why}"
            if why:
                return why
            if stat.S_ISDIR(st.st_mode):
                todo.append(entry.path)
            elif stat.S_ISLNK(st.st_mode):
                linked.append(entry.path)
    return ""


def check_private(path: Path, *, parent: bool = False) -> None:
    """What `private_dir(path)` would refuse, creating nothing: a directory above it that
    another user controls (`trusted_dir`), or `path` itself owned by another user or not a
    directory, or writable by others. Missing parts are fine (they will be made 0700), but
    with `parent` the directory above `path` must be there (the agent's prefix: one on a file
    system not mounted yet, or a typo, is not made on the disk below): FileNotFoundError
    naming the first missing directory. UnsafePathError."""
    path = through_links(path)
    fd, missing = walk(str(path.parent), check=trusted_dir)
    with closing(fd):
        st = None if missing else lstat_at(fd, path.name)
        shared = st is not None and writable_by_others(st, path_at(fd, path.name))
    if missing and parent:
        first = Path(os.path.abspath(path.parent))
        if list(first.parts[-len(missing) :]) == missing:  # else via a link: the parent named
            first = first.parents[len(missing) - 1] / missing[0]
        raise FileNotFoundError(
            errno.ENOENT,
            "No such file or directory (the prefix is made, not its parents)",
            str(first),
        )
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a directory (a symlink or a file)")
    _own(st, path)
    if shared:  # others could swap what is in it (private_dir would tighten it)
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafePathError(
            f"{path} can be written by others (mode {mode:04o}): use a directory of its own, "
            f"such as {path / 'mgmt'}"
        )


def private_dir(path: Path, *, root: Path | None = None) -> Path:
    """Make sure path (and every directory from `root` down to it) is private: 0700, ours.

    Missing ones are created 0700. An existing one that others may read is tightened to 0700,
    and that is logged; the files directly in the ones below `root` (mgmt's own) are tightened
    to 0600 too, but never those in `root` itself (the operator's choice of directory, which
    0700 already closes). One owned by another user or writable by others (a shared directory
    such as /tmp) is refused (ResourceError) and left as it is, and so is `root` below a
    directory another user controls (`trusted_dir`). Missing parents above `root` are made 0700.
    """
    root = root or path
    rel = path.relative_to(root).parts
    root = through_links(root)
    fd = open_dir(str(root.parent), create=0o700, check=trusted_dir)
    try:
        for index, name in enumerate((root.name, *rel)):
            shown = root.joinpath(*rel[:index]) if index else root
            with contextlib.suppress(FileExistsError):
                make_dir(fd, name, 0o700)
            new = os.open(name, _READ | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
            _tighten(fd, shown, inside=bool(index))
    finally:
        os.close(fd)
    return path


def through_links(path: Path) -> Path:
    """`path` (named by its own name: `_named`), or where the symlink it is leads, when the
    safe-path rule lets it be followed (`safe_link`: a link of root's or ours, in a directory
    only they can write: a relocated `/var/lib/mgmt -> /srv/mgmt`, as mgmt follows it), links
    to links too (MAX_LINKS). Before 2026-12-07 a private directory that was a symlink was
    refused even so ("not a directory (a symlink or a file)"), while links above it were
    followed. A link another user could have planted is still refused (UnsafePathError)."""
    for _ in range(MAX_LINKS):
        _named(path)
        try:  # the usual case first, one system call: no link there (a link above is walk's)
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                return path
        except OSError:
            return path  # (missing, or not reachable: what follows says so)
        fd, missing = walk(str(path.parent), check=trusted_dir)
        with closing(fd):
            st = None if missing else lstat_at(fd, path.name)
            if st is None or not stat.S_ISLNK(st.st_mode):
                return path
            target = safe_link(fd, path.name, str(path))
        path = Path(os.path.normpath(os.path.join(path.parent, target)))
    raise OSError(errno.ELOOP, "too many symlinks", str(path))


def _named(path: Path) -> None:
    """A private directory is named by its own name: `/`, `.` or `X/..` would make it the
    directory above (`--prefix /tmp/..` made `/` 0700)."""
    if path.name in ("", ".", ".."):
        raise UnsafePathError(f"{path}: name the directory itself (not /, . or one ending in ..)")


def _own(st: os.stat_result, shown: Path) -> None:
    if st.st_uid != os.geteuid():
        raise UnsafePathError(
            f"{shown} is owned by uid {st.st_uid}, not by this agent (uid {os.geteuid()}): "
            "refusing to keep state there"
        )


def _tighten(fd: int, shown: Path, *, inside: bool) -> None:
    st = os.fstat(fd)
    _own(st, shown)
    if not st.st_mode & 0o077:
        return
    # Shared (others keep files there): leave it be.
    if st.st_mode & stat.S_ISVTX or writable_by_others(st, fd):
        raise UnsafePathError(
            f"{shown} is a shared directory (mode {stat.S_IMODE(st.st_mode):04o}): refusing to "
            f"keep state there or to change its mode; use a directory of its own, such as "
            f"{shown / 'mgmt'}"
        )
    os.fchmod(fd, 0o700)
    loose = (n for n, s in scan(fd).items() if stat.S_ISREG(s.st_mode) and s.st_mode & 0o077)
    files = list(loose) if inside else []
    for name in files:
        set_attrs(fd, name, mode=0o600)
    log.warning(
        "%s was mode %04o: tightened to 0700 (and %d files in it to 0600); it holds state "
        "such as previous file contents",
        shown,
        stat.S_IMODE(st.st_mode),
        len(files),
    )
