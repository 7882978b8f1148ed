"""`--tmp-prefix`: a fresh private prefix per run, and the leftovers of killed runs removed;
the lock every agent holds on its prefix (`hold_prefix`: one agent per prefix).

A run removes its temporary prefix when it ends, but a run killed with SIGKILL (or by the OOM
killer, or a power cut) cannot. Each temporary prefix therefore holds a lock file, locked
(flock) for as long as its run lives; a later run removes the temporary prefixes of this user
whose lock nobody holds (and an empty one named as this module names them, a minute old: a
run killed between removing its lock and its directory; `_empty_leftover`). Only directories named like ours, owned by this user and private
(mode 0700, as mkdtemp makes them) are candidates, and each is inspected through descriptors
without following a symlink: another local user can create names in /tmp, but cannot make us
remove anything of theirs. A Puppet compile's private directory is one too (mgmt.puppet.compile):
a killed agent's is swept the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from engine.errors import MgmtError
from engine.inotify import alight, ride
from engine.safefs import UnsafePathError, closing, open_dir, trusted_dir

PREFIX = "mgmt-"
LOCK = ".mgmt-run.lock"
# An agent's lock on a prefix of its own: another name, so that a sweep never takes a stopped
# agent's prefix named like ours (`--prefix /tmp/mgmt-test`) for a killed run's leftovers.
AGENT_LOCK = ".mgmt-agent.lock"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TmpPrefix:
    """A private temporary prefix, locked while this run holds it (a context manager)."""

    def __init__(self, parent: Path | None = None, *, swept: bool = True) -> None:
        """`swept`: the prefixes of killed runs beside it are removed now (`removed`: their
        names); else by `sweep()`, later (the agent: `stale()` on its loop, `remove()` of
        those found in a thread, beside the run)."""
        self.path = make_private(parent)
        self.parent = self.path.parent
        try:
            self._lock = _hold_lock(self.path)
        except OSError as err:  # a full $TMPDIR: the directory made, its lock not written
            _unmake(self.path)  # (a sweep never takes a prefix without its lock: left for good)
            if err.filename is None:
                err.filename = str(self.path)
            raise
        self.removed = self.sweep() if swept else []
        self._leaving = False  # `leave_to_exit`: the lock goes to a holder at the latest here

    def sweep(self) -> list[str]:
        """Remove the temporary prefixes beside this one whose run is gone (`sweep`); their
        names. A listing of the parent ($TMPDIR), and a removal of each: blocking."""
        return sweep(self.parent, keep=self.path.name)

    def stale(self) -> list[str]:
        """The temporary prefixes beside this one whose run is gone (`stale`), not removed:
        a listing of the parent ($TMPDIR) and a lock tried on each prefix of this user there
        (0.02 ms with 25 entries in /tmp, 2.2 ms with 10,000, measured here)."""
        return stale(self.parent, keep=self.path.name)

    def remove(self, names: list[str]) -> list[str]:
        """Remove those of `names` (beside this prefix) still stale (`remove_stale`); their
        names. Blocking: a tree each."""
        return remove_stale(self.parent, names)

    async def sweep_killed(self, log: logging.Logger) -> None:
        """The temporary prefixes of killed runs beside this one removed (each said at debug
        level on `log`); one that cannot be is left for a later run, and said so. They are
        looked for here, on the loop (`stale`: 0.02 ms for the 25 entries of this machine's
        /tmp, 2.2 ms for 10,000), and removed in a thread, if any (rare: a tree each). Until
        2026-12-06 the look was in a thread too, in every run: its start, its GIL hand-offs
        with the loop and its join at the exit cost more than the look itself, and each
        hand-off beside busy cores is a wait for a core. (An agent's `--tmp-prefix` run, and
        each Puppet compile: mgmt.puppet.compile.)"""
        from engine.tasks import thread_to_end  # (asyncio: not for a cron run's import)

        try:
            found = self.stale()
            removed = await thread_to_end(self.remove, found) if found else []
        except OSError as err:
            log.debug("no sweep of %s for the prefixes of killed runs: %s", self.parent, err)
            return
        for name in removed:
            log.debug("removed %s, the temporary prefix of a run that was killed", name)

    def leave_to_exit(self) -> None:
        """The process ends with this run (a cron run of the `mgmt` command): a copy of the
        lock's descriptor goes to a process that ends when this one does
        (`engine.inotify.hold_until_exit`): the one the agent starts for its inotify instance
        at its final stop (the lock rides with it: `engine.inotify.ride`). Each start waits
        for the child's exec (the GIL released meanwhile, engine/holder.py: ~0.2 ms; p90 2-6
        ms beside two busy loops, the child's wait for a core): a run that closed no instance
        (a one-shot run that changed nothing watches nothing: docs/engine.md) closes the lock
        itself at `close()`, which costs less than a holder of its own (p50 0.5 ms against
        0.8 quiet and 2.8 beside busy loops; docs/benchmarks.md, 2026-12-06, fifth session,
        busyshare; until 2026-12-06, sixth session, it started one). The last close of the lock file,
        which frees the prefix's directory too (its entry keeps the directory until then),
        is then that process's: on a file system mounted with `discard` (this machine's),
        freeing the directory's block is a discard the close waits for, 0.1-10 ms measured
        at the end of a run. The lock is held until that process ends, by then for a prefix
        already removed. (Until 2026-12-06 a thread of its own started a process for the
        lock alone, through subprocess.Popen, at the run's start: the run waited for that
        thread's GIL and for the child's exec all the same.)"""
        ride(self._lock, "a temporary prefix's lock")
        self._leaving = True

    def close(self) -> None:
        """Remove the prefix and everything in it, then drop the lock."""
        _remove_tree(self.path)
        if self._leaving:
            alight(self._lock)  # no holder took it (no inotify instance): closed here
        os.close(self._lock)

    def __enter__(self) -> TmpPrefix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_tree(path: Path) -> None:
    """`shutil.rmtree(path, ignore_errors=True)`, with shutil only for a directory below: a
    run's prefix mostly holds its lock file alone, and shutil's code (with the zlib it loads)
    is ~2.4 M instructions, ~1% of a cron run with --tmp-prefix. Through the directory's
    descriptor, following no symlink, as rmtree: a symlink is removed, never its target."""
    try:
        fd = os.open(path, _DIR)
    except OSError:  # gone, a symlink, not a directory
        return
    with closing(fd):
        try:
            with os.scandir(fd) as entries:
                below = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except OSError:
            below = []
        # The lock file last, right before the directory: a prefix without its lock is never
        # swept (but an empty one a minute old, EMPTY_AFTER), so a run killed while it removes
        # its prefix leaves a lock for the next run's sweep, not an unlocked tree for good.
        below.sort(key=lambda entry: entry[0] == LOCK)
        for name, is_dir in below:
            if is_dir:  # a kind's or a program's state: not a cron run of plain files'
                import shutil

                shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _parents() -> list[tuple[str, str]]:
    """Where a temporary prefix may be made, in order, each with what named it:
    tempfile.gettempdir()'s candidates ($TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp, the
    working directory)."""
    found = [
        (value, f"${name}") for name in ("TMPDIR", "TEMP", "TMP") if (value := os.environ.get(name))
    ]
    found += [(path, path) for path in ("/tmp", "/var/tmp", "/usr/tmp")]
    try:
        found.append((os.getcwd(), "the working directory"))
    except OSError:
        found.append((os.curdir, "the working directory"))
    return found


def make_private(parent: Path | None = None) -> Path:
    """A new private directory (mode 0700) named PREFIX and 12 random hex digits, in `parent`,
    else in the first of `_parents()` where one can be made: as tempfile.mkdtemp() in
    tempfile.gettempdir() (which tries a file in each), without importing tempfile (with
    random: ~1 ms of every cron run). A directory another user controls, or any above it (the
    safe-path rule, safefs.trusted_dir: $TMPDIR set to another user's directory), is refused
    (UnsafePathError), not passed over: it was asked for."""
    given = os.fspath(parent) if parent is not None else None
    candidates = [(given, given)] if given is not None else _parents()
    for where, named in candidates:
        directory = os.path.abspath(where)
        try:
            dir_fd = open_dir(directory, check=trusted_dir)
        except UnsafePathError as err:
            raise UnsafePathError(
                f"{named}: {err}" if named.startswith("$") else str(err)
            ) from None
        except OSError:
            if parent is not None:
                raise
            continue  # not there, not a directory: the next one
        with closing(dir_fd):
            for _ in range(100):  # a name taken: another (as mkdtemp's names, they rarely are)
                name = PREFIX + os.urandom(6).hex()
                try:
                    os.mkdir(name, 0o700, dir_fd=dir_fd)
                except FileExistsError:
                    continue
                except OSError:
                    if parent is not None:
                        raise
                    break  # not ours to write: the next one
                return Path(directory, name)
    raise FileNotFoundError(
        errno.ENOENT, f"No usable temporary directory found in {[c for c, _ in candidates]}"
    )


def _unmake(path: Path) -> None:
    """Remove `path`, the private directory this run just made, and the lock file it may hold
    (`_hold_lock` failed: nothing else is in it); what cannot be removed is left."""
    with contextlib.suppress(OSError), closing(os.open(path, _DIR)) as dir_fd:
        for name in (f"{LOCK}.new", LOCK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
        os.rmdir(path)


def _hold_lock(path: Path) -> int:
    """Create path/LOCK already locked (no instant where a sweep could take it for stale)."""
    with closing(os.open(path, _DIR)) as dir_fd:
        tmp = f"{LOCK}.new"
        fd = os.open(
            tmp,
            os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        _lock_as_ours(fd)
        os.rename(tmp, LOCK, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return fd


class PrefixBusy(MgmtError):
    """Another agent holds the prefix's lock."""


def hold_prefix(path: Path) -> int:
    """Lock path/AGENT_LOCK (made if missing) for the agent's life, as a temporary prefix is: one
    agent per prefix (its status socket, per-resource state and etcd data are its own). The
    descriptor holds it; the kernel drops it when the agent dies, even by SIGKILL. PrefixBusy
    (naming the other agent's pid, written in the file) if another agent holds it, or if
    `path` is a run's temporary prefix (`_refuse_tmp`). `path` exists and is private already
    (safefs.private_dir)."""
    with closing(os.open(path, _DIR)) as dir_fd:
        _refuse_tmp(path, dir_fd)
        fd = os.open(
            AGENT_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PrefixBusy(f"{path / AGENT_LOCK} is not a regular file")
        _lock_as_ours(fd)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        raise PrefixBusy(
            f"another agent ({who}) runs with --prefix {path}: one agent per prefix (give "
            "each its own --prefix)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_tmp(path: Path, dir_fd: int) -> None:
    """PrefixBusy if `path` (open as `dir_fd`) holds a temporary prefix's LOCK: `mgmt status`
    names those prefixes, and `mgmt run --prefix` given one would share it with its run (its
    state, its status socket, taken and removed under that run), then lose it with everything
    in it when that run stops; a killed run's, the next sweep removes if it is named as
    make_private names them. Until 2026-12-07 only AGENT_LOCK was looked at, which a run with
    --tmp-prefix does not hold: both ran. A killed run's prefix renamed (`mv /tmp/mgmt-...
    /var/lib/mgmt`, to keep its state) is no sweep's: taken, its stale LOCK left as it is."""
    try:
        lock = os.open(LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    with closing(lock):
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)  # dropped at the close
        except BlockingIOError:
            raise PrefixBusy(
                f"{path} is the temporary prefix of a run with --tmp-prefix ({_holder(lock)}), "
                "removed when that run stops: give this agent a --prefix of its own"
            ) from None
    if not path.name.startswith(PREFIX):  # (what a sweep looks at: `stale`)
        return
    raise PrefixBusy(
        f"{path} is the temporary prefix of a run with --tmp-prefix that was killed (the next "
        "such run removes it): give this agent a --prefix of its own"
    )


def _holder(lock: int) -> str:
    """`pid N` as the lock file `lock` says, or `pid unknown`."""
    pid = _pid_in(lock)
    return "pid unknown" if pid is None else f"pid {pid}"


def _pid_in(lock: int) -> str | None:
    """The pid the lock file `lock` holds (its holder wrote it: `_lock_as_ours`), or None."""
    pid = os.pread(lock, 32, 0).decode(errors="replace").strip()
    return pid if pid.isdigit() else None


def _lock_as_ours(fd: int) -> None:
    """flock `fd` (BlockingIOError if held) and write our pid in it (for the one refused)."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def sweep(parent: Path, keep: str = "") -> list[str]:
    """Remove this user's temporary prefixes under parent whose run is gone; their names."""
    return remove_stale(parent, stale(parent, keep))


def stale(parent: Path, keep: str = "") -> list[str]:
    """This user's temporary prefixes under parent whose run is gone (but `keep`)."""
    try:
        parent_fd = os.open(parent, _DIR)
    except OSError:
        return []
    with closing(parent_fd), os.scandir(parent_fd) as entries:
        names = [e.name for e in entries if e.name.startswith(PREFIX) and e.name != keep]
        return [name for name in names if _stale(parent_fd, name)]


def remove_stale(parent: Path, names: list[str]) -> list[str]:
    """Remove those of `names` under parent that are still stale prefixes (each checked again
    as it is removed: a name found stale before may be another's since); their names."""
    removed: list[str] = []
    if not names:
        return removed
    try:
        parent_fd = os.open(parent, _DIR)
    except OSError:
        return removed
    with closing(parent_fd):
        for name in names:
            if _empty_leftover(parent_fd, name):
                with contextlib.suppress(OSError):  # (not empty any more: left)
                    os.rmdir(name, dir_fd=parent_fd)
                    removed.append(name)
            elif _stale(parent_fd, name):
                import shutil  # a killed run's prefix: rare

                shutil.rmtree(name, dir_fd=parent_fd, ignore_errors=True)
                removed.append(name)
    return removed


def running() -> list[tuple[Path, str]]:
    """The temporary prefixes of this user's live runs that serve a status socket, with each
    run's pid as its lock file says it ("?" if it does not), in every directory a prefix may
    be made in (`_parents()`): where `mgmt status` finds an agent run with --tmp-prefix."""
    found: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for where, _ in _parents():
        parent = os.path.realpath(where)
        if parent in seen:
            continue
        seen.add(parent)
        try:
            parent_fd = os.open(parent, _DIR)
        except OSError:
            continue
        with closing(parent_fd), os.scandir(parent_fd) as entries:
            names = sorted(e.name for e in entries if e.name.startswith(PREFIX))
            for name in names:
                pid = _live_pid(parent_fd, name)
                if pid is not None:
                    found.append((Path(parent, name), pid))
    return found


@contextlib.contextmanager
def _our_lock(parent_fd: int, name: str) -> Iterator[tuple[int, int] | None]:
    """(parent/name's descriptor, its lock file's) if it is a prefix of ours (private, this
    user's) with a lock file (a regular one); else None (gone, a symlink, not a directory, not
    ours, no lock file: not made by this code or still being made). Neither is followed
    through a symlink; both are closed at the end of the block."""
    try:
        fd = os.open(name, _DIR, dir_fd=parent_fd)
    except OSError:
        yield None
        return
    with closing(fd):
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            yield None
            return
        try:
            lock = os.open(LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            yield None
            return
        with closing(lock):
            yield (fd, lock) if stat.S_ISREG(os.fstat(lock).st_mode) else None


def _live_pid(parent_fd: int, name: str) -> str | None:
    """The pid in parent/name's lock file if it is a prefix of ours whose run holds its lock
    and serves a status socket there; else None."""
    with _our_lock(parent_fd, name) as found:
        if found is None:
            return None
        fd, lock = found
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: its run is alive
            pid = _pid_in(lock)
        else:
            return None  # its run is gone (closing the descriptor drops our lock)
        try:
            if not stat.S_ISSOCK(os.stat("status.sock", dir_fd=fd, follow_symlinks=False).st_mode):
                return None
        except OSError:
            return None  # a cron run that serves none (yet), or already stopped serving
        return "?" if pid is None else pid


def _stale(parent_fd: int, name: str) -> bool:
    """Whether parent/name is a prefix of ours whose run no longer holds its lock, or one left
    empty (`_empty_leftover`)."""
    with _our_lock(parent_fd, name) as found:
        if found is None:
            return _empty_leftover(parent_fd, name)
        _, lock = found
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # its run is alive
            raise
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_UN)
        return True


# A prefix is empty only between its mkdir and its lock's creation (make_private, _hold_lock:
# microseconds): one named as make_private names them, ours, private and empty for this long
# is a leftover (a run killed between removing its lock and its directory, or an rmdir that
# failed because something wrote in it as it was removed): the sweep takes it (found
# 2026-12-06, ninth session: three such in a day of test runs in /tmp, never swept).
EMPTY_AFTER = 60.0
_HEX = frozenset("0123456789abcdef")


def _empty_leftover(parent_fd: int, name: str) -> bool:
    """Whether parent/name is a directory named PREFIX and 12 hex digits, this user's, mode
    0700, empty, unchanged for EMPTY_AFTER seconds (its removal, an rmdir, fails if anything
    is put in it meanwhile)."""
    tail = name[len(PREFIX) :]
    if len(tail) != 12 or not _HEX.issuperset(tail):
        return False
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return False
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != os.geteuid()
        or stat.S_IMODE(st.st_mode) != 0o700
        or time.time() - st.st_mtime < EMPTY_AFTER  # (its last entry removed then)
    ):
        return False
    try:
        fd = os.open(name, _DIR, dir_fd=parent_fd)
    except OSError:
        return False
    with closing(fd), os.scandir(fd) as entries:
        return next(entries, None) is None
