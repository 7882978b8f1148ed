"""The one filesystem watcher every resource uses: inotify (engine.inotify), no polling.

`PathWatcher(paths)` reports every change to each path (created, deleted, written, chmod/chown,
moved), also when a missing parent directory appears later: it watches the deepest existing
ancestor and moves its watches down as the path comes into existence. With `recurse=True`,
everything below a directory path counts too; without it, a directory path's own entries do
(created, deleted, written...), unless `entries=False`: then only the directory itself (its mode,
owner, move or deletion), as for a directory resource. Symlinks are never followed. An ancestor above
the watched directories moved or removed (their watches went along with it, unseen) is seen
too: each such directory has a watch of its own move and deletion (Hub.guarded).

    async with PathWatcher([path]) as watcher:
        await handle.event()          # startup event, after the watches exist
        async for _ in watcher:
            await handle.event()

Without a task: `PathWatcher(paths, on_change=f, on_error=g)`, `open()` and `close()`; each
change calls `f()` from a callback of the loop, in a later step than the event (as a task waiting
for the next change would wake: a check that settles meanwhile subsumes it); a failed re-sync
calls `g(err)`. The file resource watches so (engine.resource.Listening).

All watchers of an event loop share ONE inotify instance, its `Hub` (the kernel allows only 128
instances per user by default), read by the event loop itself; events are dispatched by (watched
path, entry name), so ten thousand files in one directory cost O(1) per event, not O(N).

The hub's lifetime is that of its watchers, and nothing else holds it: the first watcher entered
on a loop opens it, and the last one to close closes its inotify fd (the next one opens a fresh
hub). So the engine's resources, the agent's graph-file watch and the language's program watch
share one fd without any of them owning it, and nobody has to create or close it.

A check that observes the paths itself may say so (mgmt re-checks after every event, and so
do we, except for the kinds of events a check is known to subsume):
- `settle()`, just before a check observes the paths: every event the kernel has queued so
  far is dispatched, and what this watcher has pending is subsumed by the check about to run
  (its watches are brought up to date, no wake is left). An event queued before the check
  started cannot describe anything the check will not see.
- `settle()` again after the check's own changes, then a second look: the events of its own
  chmod, chown or write (the kernel queues them in the syscall) are subsumed by that look
  if it finds the paths as wanted, else the check calls `changed()`. Reported, they made a
  second check of every repair, and the converger could call the graph converged with the
  event queued but unread (the agent's summary was taken as the vertex went dirty again).
- `expecting(path)` around the check's own rename onto `path` (or link of a new file at it),
  done by `Rename.run` in the writing thread: that rename's one MOVED_TO (the link's CREATE)
  is not reported (the check knows what it wrote); any other event is, also a second one.
  On leaving, the queue is drained again (the kernel queued the event during the rename), so
  no expectation outlives the write; not when a drain meanwhile (another check's) consumed it
  (a first run's replies: two of three such drains read nothing, ~7 K instructions each).
  The writing thread says what watches the paths need right after its rename, the path
  taken as the regular file it just put there (no look: anything put there since is a second
  event, reported): the re-sync that follows needs no stat on the event loop (where, during
  a first run, each waited ~0.1-0.2 ms for the directory and the GIL that the writing
  threads hold), nor in the thread.
- `PathWatcher(paths, checked=True)`: the check looks the first path up itself, right after
  `settle()`, and tells `observed(kind)` what it found. Where the hub already watches that
  path's directory, the watcher does not look it up too (at its start, on a re-sync, in
  settle()): the directory's watch, in place before the check looks, reports any change
  after it, and the path's own watch (a file's inode) is added from what the check found.
Without these, a first run checked each file three times: once to write it, once for its
parent directory appearing (queued before the check, read after it) and once for its rename.
A file whose check waits for the engine's slot (10,000 files, 5,000 slots) gets the directory's
appearance through this watcher before its check starts: the engine does not count such an
event against the check (docs/engine.md, known-good state).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import ClassVar, TypeVar

from engine import inotify, libc
from engine.flag import Flag
from engine.inotify import Blind, Event, Inotify

log = logging.getLogger("engine")

# Changes to a directory's entries, and to the entries themselves (reported on the directory).
DIR_MASK = (
    inotify.CREATE
    | inotify.DELETE
    | inotify.MOVED_FROM
    | inotify.MOVED_TO
    | inotify.MODIFY
    | inotify.ATTRIB
    | inotify.CLOSE_WRITE
    | inotify.DELETE_SELF
    | inotify.MOVE_SELF
    | inotify.DONT_FOLLOW
    | inotify.ONLYDIR
)
# Changes to a watched file itself.
FILE_MASK = (
    inotify.MODIFY
    | inotify.ATTRIB
    | inotify.CLOSE_WRITE
    | inotify.DELETE_SELF
    | inotify.MOVE_SELF
    | inotify.DONT_FOLLOW
)
# Events after which the set of watches may have to change.
STRUCTURAL = (
    inotify.CREATE
    | inotify.DELETE
    | inotify.MOVED_FROM
    | inotify.MOVED_TO
    | inotify.DELETE_SELF
    | inotify.MOVE_SELF
    | inotify.IGNORED
    | inotify.Q_OVERFLOW
)
# A file created (not a directory): made by an open, whose writer may not have written yet.
CREATED_FILE = inotify.CREATE | inotify.ISDIR
# An own write putting its file in place: a rename onto the path, or a link of a new file at it.
PLACED = inotify.MOVED_TO | inotify.CREATE
SELF_EVENTS = inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.IGNORED
# A directory above a watched one: its own move or deletion only, no entry events (Hub._guard).
GUARD_MASK = inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.DONT_FOLLOW
# The parent of a watched directory: also its entries' deletion. A directory's DELETE_SELF comes
# only once nothing holds it (an open descriptor, a process's cwd, a file made with O_TMPFILE in
# it: the file resource's spare): `rm -rf` of a directory a shell is in went unseen. Its parent's
# DELETE of its name is not held back (Hub._dispatch).
PARENT_MASK = GUARD_MASK | inotify.DELETE
GONE = inotify.DELETE_SELF | inotify.MOVE_SELF
IGNORED = inotify.IGNORED
DIRECTORY = inotify.ONLYDIR  # set in DIR_MASK only
OVERFLOW = inotify.Q_OVERFLOW

# While own writes are in flight beside others (Hub.hold_reads): the longest an event waits
# in the kernel's queue before the loop reads it.
READ_EVERY = 0.005
UNSEEN = -1  # PathWatcher.observed(): the check did not get to look (not a file type)
ALL = "*"  # every entry of a watched directory (or every event of a watched file) matters
# No entry of a watched directory matters, only the directory itself (its own events come
# without a name, and reach every watcher of the path; no entry's name is empty).
ITSELF = ""
EVERY = frozenset((ALL,))

Desired = dict[str, tuple[int, frozenset[str]]]  # absolute path -> (mask, entry names)
T = TypeVar("T")

# Whose watchers are made here: the engine sets its vertex's key around a resource's listen()
# and in its watch task, so that `unwatched()` can name the resources the kernel's watch limit
# left unwatched (None: the agent's own watches, the graph file's).
OWNER: contextvars.ContextVar[object] = contextvars.ContextVar("watch owner", default=None)
# How long after a change to the refused paths the `on_unwatched` callbacks are called
# (mgmt.status.model: a summary in the log, `mgmt status`, the page): a first run that runs out
# of watches is refused thousands, one after another; they are told together.
UNWATCHED_SUMMARY = 2.0
on_unwatched: list[Callable[[], None]] = []


def _absolute(path: str | os.PathLike[str]) -> str:
    """os.path.abspath(path), at one call for an absolute path (a watch per file resource),
    and none for one already normal (a file resource's path: normpath's own)."""
    if path.__class__ is not str:
        path = os.fspath(path)
    if not path.startswith("/"):
        return os.path.abspath(path)
    if "//" in path or "/." in path or (path.endswith("/") and path != "/"):
        return os.path.normpath(path)
    return path  # nothing normpath would change: no "//", ".", ".." nor a trailing "/"


def _split(path: str) -> tuple[str, str]:
    """os.path.split() of an absolute path, without its two calls (a watch per file)."""
    i = path.rfind("/") + 1
    head, tail = path[:i], path[i:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


class PathWatcher:
    """Watch paths for any change (see module docstring)."""

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        recurse: bool = False,
        checked: bool = False,
        entries: bool = True,
        on_change: Callable[[], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.paths = [_absolute(p) for p in paths]  # str: cheaper than Path to hash
        self.recurse = recurse
        # Without recurse, whether a change to a watched directory's entries counts (False:
        # only the directory itself, its mode, owner, move or deletion: a directory resource
        # of 1,000 files was checked ~4 times for each file's repair, poking all 1,000).
        self.entries = entries or recurse
        self.owner = OWNER.get()  # the resource it watches for (see `unwatched()`)
        # A check looks the first path up after every change reported, between settle() and
        # observed(): the watcher leaves that lookup to it (see settle()).
        self.checked = checked
        # The first path's (directory, name), split once (each sync and own write uses it).
        self._split = _split(self.paths[0]) if self.paths else ("", "")
        self._hub: Hub | None = None
        self._registered: Desired = {}
        self._wake = Flag()
        self._pending = False  # an event to report (a wake that settle() did not subsume)
        self._resync = False
        self._expected: dict[tuple[str, str], int] = {}  # own renames: (dir, name) -> count
        self._owed: str | None = None  # a path settle() left for the check to look up
        # The last event was a write (or a truncation) not yet followed by its writer's close:
        # what the paths hold may be half of what is being written.
        self.writing = False
        self.created = False  # ... and it was the creation of a file (`writer_may_hold`)
        # Without a task (see listen()): what a report calls, from a callback of the loop.
        self._on_change = on_change
        self._on_error = on_error
        self._report_due = False  # a report is scheduled (Hub.report_later): bursts coalesce
        self._held = False  # a check is changing the paths: reports wait (changing())

    async def __aenter__(self) -> PathWatcher:
        self.open()
        return self

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Put the watches in place (what `async with` does on entering; `close()` undoes).
        `loop`: the running loop, if the caller knows it (Hub.acquire)."""
        self._hub = Hub.acquire(self, loop)
        try:
            if self._sync(first=True):
                self._resync = True  # what it looked up may have changed before the watch
                self._resync_now()
        except BaseException:
            self.close()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.release(self, self._registered)
            self._registered = {}

    async def __aiter__(self) -> AsyncIterator[None]:
        """Yield once per relevant change (bursts may coalesce), until cancelled."""
        if self._hub is None:
            raise RuntimeError("PathWatcher used outside 'async with'")
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending or self._held:
                continue  # a check settled it meanwhile, or holds it (changing())
            self._pending = False
            self._resync_now()
            yield None

    def deliver(self, structural: bool, mask: int = 0) -> None:
        """Called by the hub for every relevant event (`mask`: its inotify mask)."""
        if structural:
            # A file made by an open (`cp`, `open('w')` at a missing name) is empty until its
            # writer writes: its close comes as for a write in place.
            self.writing = self.created = mask & CREATED_FILE == inotify.CREATE
        elif mask & inotify.CLOSE_WRITE:
            self.writing = self.created = False
        elif mask & inotify.MODIFY:
            self.writing, self.created = True, False
        self._resync = self._resync or structural
        self._pending = True
        self._kick()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """A check changes the paths inside, then settle()s and looks again: what happens
        meanwhile is reported only on leaving, unless settle() set it aside (a report while
        its own write ran in a thread made a second check of the repair)."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            if self._pending:
                self._kick()

    def changed(self) -> None:
        """Report a change, as an event would: a check that looked again after its own
        changes (settle()) found the paths not as it wants them."""
        self._pending = True
        self._kick()

    def _kick(self) -> None:
        """Report what is pending: wake the task iterating, or schedule `on_change`."""
        if self._on_change is None:
            self._wake.set()
        elif not self._report_due and self._hub is not None:
            # Reported in a later step, as a task waiting for _wake would be: a check that
            # settles before then subsumes it.
            self._report_due = True
            self._hub.report_later(self)

    def _report(self) -> None:
        """A change, for a watcher without a task (`on_change`): __aiter__'s step."""
        self._report_due = False
        if not self._pending or self._hub is None or self._held:
            return  # a check settled it meanwhile (or holds it), or the watcher is closed
        self._pending = False
        assert self._on_change is not None and self._on_error is not None
        try:
            self._resync_now()
        except Exception as err:
            self._on_error(err)
            return
        self._on_change()

    def _resync_now(self, seen: Desired | None = None, look: bool = False) -> None:
        """Bring the watches up to date after a structural event; `seen`: what the paths
        looked like since that event (observed by a writing thread, see Rename); `look`: at
        every path (see _sync)."""
        if self._resync:
            self._resync = False
            # Re-scan while a sync puts a watch on a directory the hub did not watch: what
            # was created in it before the watch would otherwise go unseen, and so would the
            # path. A new watch on a file or a watched directory needs no second look: a change
            # of its entry meanwhile is reported by its directory's watch, already in place.
            for _ in range(64):
                if not self._sync(seen=seen, look=look):
                    break
                seen = None

    def settle(self, before: bool = False) -> bool:
        """A check is about to observe the paths: what is pending is subsumed by it (see the
        module doc); True if something was. Also after the check's own changes (a chmod, a
        chown, a write whose old inode's watch sees it unlinked): their events are set
        aside, and a check that gets True looks again, calling `changed()` if the paths are
        not as it wants them (an event not its own: any later one is reported as usual).
        `before`: the check has not changed anything yet; the queue read by another check's
        settle() in this step of the loop serves (Hub.read_for_check), not its own changes'.

        A `checked` watcher's check looks its first path up right after this, and tells
        `observed()` what it found: where the hub already watches that path's directory, the
        watcher does not look it up too, neither here nor when it starts or re-syncs after a
        report (which the check follows). Its directory's watch is in place before the check
        looks, so a change after that is reported; only the path's own watch (a regular
        file's inode: a write through another hard link) waits for the check. In a first run,
        each such lookup of a new name on the event loop waited for the directory's lock and
        for the GIL that the writing threads hold (10,000 files: 5.7 s of the loop's time
        under cProfile, for lookups that the check made again)."""
        hub = self._hub
        if hub is None:
            return False
        if before:
            hub.read_for_check()
        else:
            hub.inotify.drain()
        if not self._pending:
            return False
        self._pending = False
        self._wake.clear()
        self._resync_now()
        return True

    def owes(self) -> bool:
        """Whether the watcher left a lookup of its first path to the check (settle())."""
        return self._owed is not None

    def observed(self, kind: int | None = UNSEEN) -> None:
        """What the check of a `checked` watcher found at its first path, right after
        settle(): the file type bits (stat.S_IFMT), None if absent, UNSEEN if the check did
        not get to look (then the watcher looks). No-op when the watcher deferred nothing."""
        path, self._owed = self._owed, None
        if path is None or self._hub is None:
            return
        if kind is None or kind == stat.S_IFLNK:
            return  # its directory's watch, in place, is all it needs
        if kind != stat.S_IFREG:  # a directory (its entries too), or not seen: look
            self._resync = True
            self._resync_now(look=True)
            return
        had = self._registered.get(path)
        if had is None:  # the usual case: the deferred sync registered only its directory
            self._registered = {**self._registered, path: (FILE_MASK, EVERY)}
            self._hub.register_file(self, path)
            return
        mask, names = had[0] | FILE_MASK, had[1] | EVERY
        self._registered = {**self._registered, path: (mask, names)}
        self._hub.register_path(self, path, mask, names)

    def expecting(self, path: str, beside: bool = False) -> _Expecting:
        """The caller renames onto `path` (or links a new file at it) inside, by `Rename.run`
        (in its thread): that one MOVED_TO (or CREATE) is not reported (see the module doc).
        `beside`: other own writes are in flight (a first run's): the hub's queue is read
        at the writes' ends, not at each event, while they are (Hub.hold_reads)."""
        return _Expecting(self, path, beside)

    def consume(self, path: str, name: str) -> bool:
        """Whether a MOVED_TO (or CREATE) of `name` in `path` is an expected own rename (or
        link: then it is not reported; the watches are re-synced when the rename is done)."""
        key = (path, name)
        count = self._expected.get(key, 0)
        if not count:
            return False
        self._expected[key] = count - 1
        self._resync = True
        return True

    def _sync(self, first: bool = False, seen: Desired | None = None, look: bool = False) -> bool:
        """Register the watches that match what the paths look like now; True if it put a
        watch on a directory that the hub did not watch: what was looked up there before may
        have changed before the watch was in place, unseen (a directory made and a file renamed
        into it meanwhile), so look again. In a directory the hub watched already, a change
        after the lookup is queued by the kernel and read by the loop after this registration.

        The first sync takes a directory the hub watches for another watcher as existing,
        without a stat (a thousand files of one directory: one stat each, not two). It is as
        fresh as a stat: had the directory gone, the event saying so reaches this watcher too
        (its names are registered there), and a re-sync stats everything. So is a path that
        another watcher's first look found missing below such a directory (Hub.absent), until
        the hub reads its next event. `seen`: the watches as a writing thread found them
        needed (Rename), no stat here. A `checked` watcher may leave its first path's own
        lookup to the check (settle()), unless told to `look`."""
        hub = self._hub
        if hub is None:
            return False
        owed = None
        fresh: bool | None = None
        if seen is not None:
            desired = seen
        elif self.checked and not look:
            path = self.paths[0]
            parent, name = self._split
            if len(self.paths) == 1 and parent != path:
                if hub.watches_dir(parent):
                    # What _desired gives, at no call: one path in a directory the hub
                    # watches (each file of a directory but the first), deferred to the check.
                    desired, owed, fresh = {parent: (DIR_MASK, frozenset((name,)))}, path, False
                elif (above := hub.absent.get(parent)) is not None and hub.watches_dir(above):
                    # The same, below a directory that another watcher's first look found
                    # missing (Hub.absent): a first run's files of a directory not made yet
                    # (_desired's call and its loop: ~19 K instructions a file).
                    missing = frozenset((os.path.basename(parent),))
                    desired, fresh = {above: (DIR_MASK, missing)}, False
                else:  # nothing to defer (_desired would ask the same)
                    desired = self._desired(hub.watches_dir, absent=hub.absent)
            else:
                deferred: list[str] = []
                desired = self._desired(hub.watches_dir, defer=(path, deferred), absent=hub.absent)
                owed = path if deferred else None
        elif first:
            desired = self._desired(hub.watches_dir, absent=hub.absent)
        else:
            desired = self._desired()
        self._owed = owed
        new_dirs: list[str] = []
        if fresh is None:  # a loop, not any() of a generator: ~2 K instructions less a sync
            for path, (mask, _) in desired.items():
                if mask & DIRECTORY and not hub.watches_dir(path):
                    new_dirs.append(path)
            fresh = bool(new_dirs)
        hub.register(self, desired, self._registered)
        self._registered = desired
        if fresh and (hub.refused or isinstance(hub.inotify, Blind)):
            # A directory watch the kernel refused (out of watches, or no inotify instance at
            # all) put nothing in place: no look again for it (each re-sync was refused again,
            # 64 times: a first run of 10,000 files out of watches took 84 s, not 4.5, and
            # without an instance 225 s).
            blind = isinstance(hub.inotify, Blind)
            fresh = not blind and any(path not in hub.refused for path in new_dirs)
        return fresh

    def _desired(
        self,
        known: Callable[[str], bool] | None = None,
        defer: tuple[str, list[str]] | None = None,
        look: Callable[[str, bool], int | None] | None = None,
        absent: dict[str, str] | None = None,
    ) -> Desired:
        """The watches the paths need now; `known(dir)` may say a directory exists. `defer`:
        (a path, a list): that path is not looked up if `known` says its directory exists
        (only its directory is watched; then the path is appended to the list). `look`: how
        a path's type is found (`_kind`). `absent` (with `known`): Hub.absent, which says
        an ancestor is missing without a look, and learns what this one finds missing."""
        want: dict[str, tuple[int, set[str]]] = {}
        type_of = look or _kind

        def add(path: str, mask: int, name: str) -> None:
            had = want.get(path)
            if had is None:
                want[path] = (mask, {name})
            else:
                had[1].add(name)
                want[path] = (had[0] | mask, had[1])

        for path in self.paths:
            if defer is not None and path == defer[0] and known is not None:
                parent = os.path.dirname(path)
                if parent != path and known(parent):
                    add(parent, DIR_MASK, os.path.basename(path))
                    defer[1].append(path)
                    continue
            # The deepest existing ancestor watches for the next component to appear; when
            # the path itself exists, that is its parent (no need to stat it: one stat less
            # per path and sync, on the event loop, while the threads write beside it).
            child, parent = path, os.path.dirname(path)
            if absent and known and (watched := absent.get(parent)) is not None and known(watched):
                add(watched, DIR_MASK, os.path.basename(parent))  # below one known missing
                continue
            kind = type_of(path, False)
            missing = False  # child (an ancestor of path) was found missing
            while parent != child:  # up to "/" (or "//", which POSIX keeps)
                if kind is not None or (known is not None and known(parent)):
                    if missing and absent is not None:
                        absent[child] = parent
                    add(parent, DIR_MASK, os.path.basename(child))
                    break
                if (
                    absent
                    and known
                    and (watched := absent.get(parent)) is not None
                    and known(watched)
                ):
                    missing = True
                else:
                    found = type_of(parent, False)
                    if found == stat.S_IFLNK:
                        found = _through_link(parent)
                    if found == stat.S_IFDIR:
                        add(parent, DIR_MASK, os.path.basename(child))
                        break
                    missing = found is None
                child, parent = parent, os.path.dirname(parent)
            if kind is None or kind == stat.S_IFLNK:
                continue
            if kind == stat.S_IFDIR:
                add(path, DIR_MASK, ALL if self.entries else ITSELF)
                if self.recurse:
                    for root, dirs, _files in os.walk(path):
                        for name in dirs:
                            sub = os.path.join(root, name)
                            if not os.path.islink(sub):
                                add(sub, DIR_MASK, ALL)
            else:
                add(path, FILE_MASK, ALL)
        return {path: (mask, frozenset(names)) for path, (mask, names) in want.items()}

    def _placed(self, path: str, look: Callable[[str, bool], int | None] | None) -> Desired:
        """The watches the paths need right after an own write put a regular file at `path`
        (Rename.run), as _desired would find them, without looking at `path`: anything put
        there since is another event of its directory's watch (a second one, reported: see
        expecting), or, where that directory was not watched yet, looked at by the re-sync
        that puts its watch in place (_resync_now). `look`: how the other paths are looked at."""
        if len(self.paths) == 1 and path == self.paths[0]:  # the usual case: no look at all
            parent, name = self._split
            if parent != path:
                return {parent: (DIR_MASK, frozenset((name,))), path: (FILE_MASK, EVERY)}
        other = look or _kind

        def kind(target: str, follow: bool) -> int | None:
            return stat.S_IFREG if target == path and not follow else other(target, follow)

        return self._desired(look=kind)


class Rename:
    """An own rename onto a watched path (PathWatcher.expecting): `run(write)`, in the
    writing thread, renames and then says what watches the paths need, so the re-sync that
    follows the rename needs no stat on the event loop."""

    def __init__(self, watcher: PathWatcher, path: str) -> None:
        self._watcher = watcher
        self._path = path  # the expected path, as the watcher spells it (absolute, normalized)
        self.renamed = False  # `write` returned: its rename's event is queued
        self.seen: Desired | None = None  # the watches the paths needed right after it

    def run(self, write: Callable[[], T], local: bool = False) -> T:
        """Call `write`, which puts a regular file at the expected path (a rename onto it, or
        a link of a new file), then say what the watcher's paths need (PathWatcher._placed):
        that path is taken as the regular file just put there, without a look; the others
        are looked at from here, with the GIL held if `local` (the path's directory is on a
        local file system: libc.file_type)."""
        result = write()
        self.renamed = True
        try:  # (not contextlib.suppress: its object and calls, ~2 K instructions a file)
            self.seen = self._watcher._placed(self._path, libc.file_type if local else None)
        except OSError:
            self.seen = None  # the loop's re-sync stats again, and reports it
        return result


class _Expecting:
    """PathWatcher.expecting()'s context: a class (a generator's context manager cost ~6.5 K
    instructions more per file a first run creates, on the event loop)."""

    __slots__ = ("beside", "hub", "key", "rename", "watcher")

    def __init__(self, watcher: PathWatcher, path: str, beside: bool = False) -> None:
        mine = watcher.paths and path == watcher.paths[0]  # the usual case: no call
        target = path if mine else _absolute(path)
        self.watcher, self.rename, self.hub = watcher, Rename(watcher, target), watcher._hub
        self.key = watcher._split if mine else os.path.split(target)
        self.beside = beside

    def __enter__(self) -> Rename:
        hub = self.hub
        if hub is not None:
            expected = self.watcher._expected
            expected[self.key] = expected.get(self.key, 0) + 1
            hub.own_writes += 1
            if self.beside:
                hub.hold_reads()
        return self.rename

    def __exit__(self, *exc: object) -> None:
        hub, watcher, key, rename = self.hub, self.watcher, self.key, self.rename
        if hub is None:
            return
        try:
            if (
                rename.renamed
                and watcher._expected.get(key)  # not consumed yet (a drain meanwhile read it)
                and watcher._hub is hub
                and hub.inotify.fd is not None
            ):
                hub.inotify.drain()  # the rename's event is queued by now: consume it
        finally:
            hub.own_writes -= 1
            if self.beside:
                hub.release_reads()
        count = watcher._expected.pop(key, 0) - 1
        if count > 0:
            watcher._expected[key] = count
        if not watcher._pending:
            # A consumed rename may need a watch on the new inode.
            watcher._resync_now(rename.seen)
        elif self.beside:
            # Other events read only now (reads held): the re-sync that the watcher's report
            # would have made during the write (the parents it made, watched), made now; the
            # report follows as it would have.
            watcher._resync_now()


def _through_link(link: str) -> int | None:
    """What the watch of a path below the symlink `link` (an ancestor's name) finds there: the
    type of its target when safefs would follow the link (root's or the agent's own, in a
    directory only they can write: `/var/run -> /run`), else S_IFLNK, a name that is no
    directory, watched in its own directory as a file in the way would be: the writes refuse
    such a link (safefs.safe_link), and a watch through it into the other user's directory
    saw nothing of the link's removal or change, so the refused file stayed failed until a
    reload (found 2026-12-06, opsuser). Judged as the writes judge it, each link on the way
    to the target (safefs.walk): a safe link to another user's link was followed whole
    (review, 2026-12-06)."""
    from engine import safefs  # rare: a link among a path's parents

    try:
        fd, missing = safefs.walk(link)
    except safefs.UnsafePathError:
        return stat.S_IFLNK
    except NotADirectoryError:
        return stat.S_IFLNK  # a link to a file (or a file put there since the first look)
    except OSError:  # ELOOP (too many links), EACCES...: as _kind, a name that is not there
        return None
    os.close(fd)
    return None if missing else stat.S_IFDIR


def _kind(path: str, follow: bool) -> int | None:
    """The file type bits of path (stat.S_IFDIR...), or None if it does not exist (or a link
    on the way loops: the watch used to fail, and the file below stayed failed after the loop
    went, until a reload: review, 2026-12-06).

    Not with the GIL held (engine/libc.py): a name not in the kernel's cache is looked up
    under its directory's lock, which a rename or create beside it holds, for as long as
    that waits for the journal: the writing threads would stop with it. (A writing thread
    looks at a watcher's other paths with it held, its names in the kernel's cache:
    Rename.run.)"""
    try:
        return stat.S_IFMT(os.stat(path, follow_symlinks=follow).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:  # a link in a loop on the way: no path there, as missing
            return None
        raise


class Hub:
    """The one inotify instance of an event loop, shared by every PathWatcher on it.

    Lifetime, the whole rule: `acquire()` (a watcher's `__aenter__`) opens the running loop's hub
    if it has none; `release()` (a watcher's `aclose()`) by its last watcher closes the inotify
    fd and forgets the hub. The registry `_open` holds only hubs with an open watcher; a watcher
    never closed keeps its hub open, as it keeps its own watches (its owner's leak, not ours).
    """

    _open: ClassVar[dict[asyncio.AbstractEventLoop, Hub]] = {}

    @classmethod
    def acquire(cls, watcher: PathWatcher, loop: asyncio.AbstractEventLoop | None = None) -> Hub:
        """The running loop's hub, opened if no watcher has it open; `watcher` now holds it.
        `loop`: the running loop, if the caller knows it (Python 3.11's get_running_loop
        makes a getpid system call: one per file of a run, resources/file listen())."""
        if loop is None:
            loop = asyncio.get_running_loop()
        hub = cls._open.get(loop)
        if hub is None:
            hub = cls._open[loop] = cls(loop)
        elif watcher in hub.released:  # closed during a stop, opened again: forgotten first
            hub._forget(watcher, hub.released.pop(watcher), {})
        hub.subscribers.add(watcher)
        if isinstance(hub.inotify, Blind):  # no instance: every watcher is blind
            hub._unwatched_changed()
        return hub

    @classmethod
    def running(cls) -> Hub | None:
        """The running loop's hub, None while no watcher is open on it."""
        return cls._open.get(asyncio.get_running_loop())

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inotify: Inotify | Blind
        try:
            self.inotify = Inotify(self._on_events, private=self.wants_private)
        except OSError as err:  # no instance left (the kernel's limit): applied, not watched
            log.error(
                "%s: no change is seen until the agent restarts (each resource is applied, "
                "not watched)",
                err.strerror,
            )
            self.inotify = Blind(err)
        self.subscribers: set[PathWatcher] = set()
        # path -> entry name (or ALL) -> watchers; path -> watcher -> mask it needs
        self.by_name: dict[str, dict[str, set[PathWatcher]]] = {}
        self.masks: dict[str, dict[PathWatcher, int]] = {}
        # path -> how many of its entry names are ALL or private (inotify.is_private): where
        # the events of a writer's temp files have a reader (engine/inotify.py drops others).
        self.private: dict[str, int] = {}
        self.kernel_mask: dict[str, int] = {}
        self.path_wd: dict[str, int] = {}
        self.wd_paths: dict[int, set[str]] = {}
        # Watched paths whose inode moved away or was deleted (their watch is on what was
        # there): not known to be directories until watched again.
        self.moved: set[str] = set()
        # Everything is stopping (`shutting_down`): watches are left to close(), which drops
        # them all at once (removing them one by one costs ~0.1 ms each in the kernel), and
        # the watchers released meanwhile are forgotten at the stop's end, only if the hub is
        # still open then (forgetting each one's paths: ~0.1 s of a 20,000-file stop).
        self.closing = False
        self.released: dict[PathWatcher, Desired] = {}
        self._due: list[PathWatcher] = []  # watchers whose report_later() is pending
        # Paths found missing by a watcher's first look (PathWatcher._desired), each with
        # the watched directory it would appear in: a later watcher of a path below takes
        # them as missing without a look (a first run's thousand files of a directory not
        # made yet: two failed stats each on the loop, ~11 K instructions). Any event read
        # forgets them all: one that could say a path appeared is still unread while they
        # are used, and reaches the watcher that used them (its names are registered there).
        self.absent: dict[str, str] = {}
        # The kernel's watch limit was hit, or no instance could be made (reported once).
        self.out_of_watches = isinstance(self.inotify, Blind)
        # Paths whose watch the kernel's limit refused (ENOSPC), until watched or no longer
        # needed; the resources left unwatched by them: `unwatched()`, summarised in the log.
        self.refused: set[str] = set()
        self._summary: asyncio.TimerHandle | None = None
        # Directories above a watched directory, each with how many watched directories are
        # below it (those counted: `guarding`). Each has a watch of its own move and deletion
        # (GUARD_MASK, or a watcher's own mask where it is registered too): `mv /srv/site
        # /srv/old` moves a watched /srv/site/www along, and no watch below says so; the
        # guard's event makes every watcher below re-sync (_gone_below).
        self.guarded: dict[str, int] = {}
        self.guarding: set[str] = set()
        # The directories holding a watched directory, each with how many (PARENT_MASK).
        self.parents: dict[str, int] = {}
        # Own writes in flight beside others (hold_reads): meanwhile the loop reads the queue
        # at each one's end and every READ_EVERY seconds, not at each event.
        self.holding = 0
        self._read_timer: asyncio.TimerHandle | None = None
        # A check's first settle() read the queue in this step of the loop (`read_for_check`):
        # the next checks of the step take that read as theirs, while no own write is in
        # flight (`own_writes`: the `expecting()` contexts open).
        self._read_this_step = False
        self.own_writes = 0
        # The mount table (engine.mountwatch): a mount over a watched directory, or a remount,
        # says nothing to the watches; while the hub is open, its changes are (_mounts_changed).
        from engine.mountwatch import MountWatch  # (a run with no hub never reads it)

        self.mounts = MountWatch.open(loop, self._mounts_changed)

    def hold_reads(self) -> None:
        """An own write begins in a thread beside others (a first run's creations): until
        the last one ends (`release_reads`), the loop does not read the queue whenever it
        becomes readable, but at each write's end (its own event's drain: `_Expecting`), at
        each check's `settle()`, and every READ_EVERY seconds. The writing threads' links,
        chmods and closes queued an event each, and each woke the loop, which then waited
        for the GIL behind them: ~450 wake-ups of a 1,000-file first run, for events that the
        next write's end read anyway (docs/benchmarks.md, perfkern)."""
        self.holding += 1
        if self.holding == 1:
            self.inotify.pause()
            self._read_timer = self.loop.call_later(READ_EVERY, self._read_held)

    def release_reads(self) -> None:
        """An own write that `hold_reads` counted has ended (its event drained)."""
        self.holding -= 1
        if self.holding == 0:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            self.inotify.resume()

    def read_for_check(self) -> None:
        """Read the queue before a check looks (its first settle()), once per step of the
        loop while no own write is in flight: the checks that the step runs after the first
        find what it read dispatched (their watchers' pending changes set), and an event
        queued since is someone else's, reported as any later one (a check of it follows:
        the same as one queued right after a read of its own). A no-op run's thousand checks
        ran in ~10 steps, each reading the queue (a system call finding nothing, ~5 K
        instructions). While own writes are in flight, each check reads: their events (a
        directory they made, that other files' watchers wait for) are subsumed by the checks
        that follow, not reported to each (a second check of each file of a first run)."""
        if self._read_this_step and not self.own_writes:
            return
        self._read_this_step = True
        self.loop.call_soon(self._next_step)
        self.inotify.drain()

    def _next_step(self) -> None:
        self._read_this_step = False

    def _read_held(self) -> None:
        """While reads are held: what is queued, read now (an event waits READ_EVERY at most)."""
        self._read_timer = self.loop.call_later(READ_EVERY, self._read_held)
        self.inotify.drain()

    def watches_dir(self, path: str) -> bool:
        """Whether a directory watch is in place on `path` (no IGNORED read for it since)."""
        return (
            path in self.path_wd
            and bool(self.kernel_mask.get(path, 0) & DIRECTORY)
            and path not in self.moved
        )

    def wants_private(self, wd: int) -> bool:
        """Whether an event of an entry with a private name on watch `wd` may have a reader."""
        paths = self.wd_paths.get(wd)
        if paths is not None:
            for path in paths:  # a loop, not any() of a generator: once per write's events
                if path in self.private:
                    return True
        return False

    def register(self, watcher: PathWatcher, desired: Desired, old: Desired) -> None:
        """`watcher` needs the watches `desired` instead of `old`: only what changed is
        forgotten and registered (a first run's write keeps its directory's watch as it was,
        and adds its file's)."""
        if not old:  # a first sync
            for path, (mask, names) in desired.items():
                self.register_path(watcher, path, mask, names)
            return
        self._forget(watcher, old, desired)
        for path, want in desired.items():
            mask = want[0]
            if (
                mask & DIRECTORY
                and old.get(path) == want
                and self.kernel_mask.get(path, 0) & mask == mask
                and path in self.path_wd
                and path not in self.moved
            ):
                continue  # registered as it is, its watch in place (see register_path)
            self.register_path(watcher, path, mask, want[1])

    def register_path(
        self, watcher: PathWatcher, path: str, mask: int, names: frozenset[str]
    ) -> None:
        """`watcher` needs `path` watched with `mask`, for the entries `names` (added to what
        it had there)."""
        index = self._index(path)
        for name in names:
            self._named(path, index, name, watcher)
        self._needs(path, watcher, mask)
        kernel = self.kernel_mask.get(path)
        if (
            mask & DIRECTORY
            and kernel is not None
            and kernel | mask == kernel
            and path in self.path_wd
            and path not in self.moved
        ):
            return  # a watched directory keeps its inode until it moves or goes
        self._add_kernel_watch(path)

    def register_file(self, watcher: PathWatcher, path: str) -> None:
        """register_path(watcher, path, FILE_MASK, EVERY) for a path that `watcher` had not
        registered (PathWatcher.observed: a checked regular file), without its loop over the
        names nor its check of a directory's watch (the parts both take are shared). The kernel watch is added by name (IN_DONT_FOLLOW) right after
        the check's lstat, before its open and read: the inode watched is the one read unless
        the name was replaced in between, and that replacement is an event of the directory's
        watch, in place before the lstat (PathWatcher._sync), so it is reported, and its
        re-sync watches the new inode."""
        self._named(path, self._index(path), ALL, watcher)
        self._needs(path, watcher, FILE_MASK)
        self._add_kernel_watch(path)

    def _index(self, path: str) -> dict[str, set[PathWatcher]]:
        """The watchers of `path`'s entries, by name (made empty if need be)."""
        index = self.by_name.get(path)
        if index is None:
            index = self.by_name[path] = {}
        return index

    def _named(
        self, path: str, index: dict[str, set[PathWatcher]], name: str, watcher: PathWatcher
    ) -> None:
        """`watcher` reads the events of entry `name` of `path` (`index`: its by_name); a
        name first read that is ALL or private counts in `private`."""
        watchers = index.get(name)
        if watchers is None:
            index[name] = {watcher}
            if name == ALL or inotify.is_private(name):
                self.private[path] = self.private.get(path, 0) + 1
        else:
            watchers.add(watcher)

    def _needs(self, path: str, watcher: PathWatcher, mask: int) -> None:
        """`watcher` needs `path` watched with `mask` (replacing what it needed there)."""
        needs = self.masks.get(path)
        if needs is None:
            self.masks[path] = {watcher: mask}
        else:
            needs[watcher] = mask

    def release(self, watcher: PathWatcher, old: Desired) -> None:
        """`watcher` lets go of its watches and of the hub; the last one closes the fd (and
        with it every watch: nothing is forgotten one by one)."""
        self.subscribers.discard(watcher)
        if not self.subscribers:
            if self._open.get(self.loop) is self:
                del self._open[self.loop]
            self.released.clear()
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            if self.mounts is not None:
                self.mounts.close()
            self.inotify.close()
        elif self.closing:
            self.released[watcher] = old
        else:
            self._forget(watcher, old, {})

    def forget_released(self) -> None:
        """The stop ended and the hub is still open: forget the watchers it released."""
        released, self.released = self.released, {}
        for watcher, old in released.items():
            self._forget(watcher, old, {})

    def _forget(self, watcher: PathWatcher, old: Desired, keep: Desired) -> None:
        for path, had in old.items():
            kept = keep.get(path)
            if kept == had:
                continue
            for name in had[1] if kept is None else had[1] - kept[1]:
                watchers = self.by_name.get(path, {}).get(name)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self.by_name[path][name]
                        if name == ALL or inotify.is_private(name):
                            self._unread_private(path)
            if kept is None:
                self.masks.get(path, {}).pop(watcher, None)
                if not self.masks.get(path):
                    self._drop_kernel_watch(path)

    def _unread_private(self, path: str) -> None:
        count = self.private.get(path, 0) - 1
        if count > 0:
            self.private[path] = count
        else:
            self.private.pop(path, None)

    def _add_kernel_watch(self, path: str) -> None:
        mask = 0
        for needed in self.masks[path].values():
            mask |= needed
        try:
            wd = self._add_watch(path, mask)  # re-adding catches a new inode
        except OSError as err:
            if err.errno == errno.ENOSPC:
                if not self.out_of_watches:  # said once per hub; then summaries of how many
                    self.out_of_watches = True
                    log.error("%s: %s: changes there go unseen", path, err.strerror)
                self.refused.add(path)
                self._unwatched_changed()
            return  # else it vanished meanwhile: the parent's watch reports it
        if self.refused and path in self.refused:
            self.refused.discard(path)
            self._unwatched_changed()
        self._map(path, wd, mask)
        if mask & DIRECTORY:
            self._guard_above(path)

    def _map(self, path: str, wd: int, mask: int) -> None:
        """`path`'s kernel watch is now `wd`, with `mask`."""
        self.kernel_mask[path] = mask
        self.moved.discard(path)
        old = self.path_wd.get(path)
        if old is not None and old != wd:
            self._unmap(old, path)
        self.path_wd[path] = wd
        self.wd_paths.setdefault(wd, set()).add(path)

    def _guard_above(self, path: str) -> None:
        """Each directory above `path` (a watched directory; "/" never moves) has a watch of
        its own move and deletion (see `guarded`): counted once per watched directory, put
        back where one moved or went."""
        new = path not in self.guarding
        child, parent = path, os.path.dirname(path)
        if new:
            self.guarding.add(path)
            self.parents[parent] = self.parents.get(parent, 0) + 1
            if parent == "/" and parent not in self.masks:
                self._guard(parent)  # "/" never moves, but its entries go
        while parent not in (child, "/"):
            count = self.guarded.get(parent, 0)
            if new:
                self.guarded[parent] = count + 1
            if parent not in self.masks and (
                not count
                or parent in self.moved
                or parent not in self.path_wd
                or (new and child == path and self.parents[parent] == 1)  # now a parent
            ):
                self._guard(parent)  # (a registered path's own mask has PARENT_MASK's events)
            child, parent = parent, os.path.dirname(parent)

    def _guard(self, path: str) -> bool:
        """Watch `path`'s own move and deletion only (and its entries' deletion if it holds a
        watched directory); False if it cannot be watched."""
        mask = PARENT_MASK if path in self.parents else GUARD_MASK
        try:
            wd = self.inotify.add_watch(path, mask)
        except OSError:
            return False  # gone (a watch below reports it), or out of watches (said elsewhere)
        self._map(path, wd, mask)
        return True

    def _unguard_above(self, path: str) -> None:
        """`path` is no longer a watched directory: the guards above it count it no more, and
        one that guards nothing now is dropped (unless a watcher registered its path)."""
        self.guarding.discard(path)
        child, parent = path, os.path.dirname(path)
        count = self.parents.get(parent, 0) - 1
        if count > 0:
            self.parents[parent] = count
        else:  # its watch keeps PARENT_MASK: the deletions it reports are not dispatched
            self.parents.pop(parent, None)
            if parent == "/" and parent not in self.masks:
                self._forget_watch(parent)
        while parent not in (child, "/"):
            count = self.guarded.get(parent, 0) - 1
            if count > 0:
                self.guarded[parent] = count
            else:
                self.guarded.pop(parent, None)
                if parent not in self.masks:
                    self._forget_watch(parent)
            child, parent = parent, os.path.dirname(parent)

    def _gone_below(self, top: str, mask: int, itself: bool = False) -> None:
        """The guarded directory `top` moved or went: so did every watched path below it
        (their watches went along, unseen). Their watchers re-sync; `itself`: `top` too (a
        watched directory whose deletion its parent reported)."""
        prefix = top + "/" if top != "/" else top
        below = [path for path in self.masks if path.startswith(prefix) or path == top]
        if not itself and top in below:
            below.remove(top)
        self.moved.update(below)
        self.moved.update(path for path in self.guarded if path.startswith(prefix))
        self._suspect_above(top)
        targets: set[PathWatcher] = set()
        for path in below:
            targets.update(self.masks[path])
        for watcher in targets:
            watcher.deliver(True, mask)

    def _mounts_changed(self, points: set[str]) -> None:
        """A file system was mounted, taken off or remounted at each of `points`: the watched
        paths at or below one (their watches are on the inodes the mount hid or uncovered) are
        taken as moved, and their watchers re-sync and report a change, as for a directory
        moved above them (a check follows: a file system remounted read-write heals at once,
        a file in a new mount is seen and made). Paths elsewhere are not touched."""
        for top in sorted(points):
            # Something is watched at or below `top` when `top` is watched, or guarded (it is
            # above a watched directory, and a watched file's directory is watched): no scan
            # of the watched paths for a mount elsewhere (a container's, on a busy host).
            if top in self.masks or top in self.guarded or (top == "/" and self.masks):
                log.debug("mount table changed at %s: watching again below it", top)
                self._gone_below(top, 0, itself=True)

    def _suspect_above(self, top: str) -> None:
        """`top` went: the guards above it (watches no watcher registered) may be going with
        it, unseen (an `rm -rf` of one of them). A guard's removal is told by its own
        DELETE_SELF only, which waits until nothing holds it, and a directory below it held
        (a shell's cwd, a spare's O_TMPFILE file) holds it too; its parent, a guard too, does
        not report its entries' deletion. Taken as moved, each is watched again (its current
        inode) when a directory below is (_guard_above). Before, one removed and made again
        while held kept its watch on the removed inode: the next `rm -rf` of the new tree
        went unseen, and the file below was not repaired until the holder let go (found
        2026-12-06: tests/e2e/test_cli.py, a shell in the file's directory)."""
        child, parent = top, os.path.dirname(top)
        while parent not in (child, "/"):
            if parent in self.path_wd and parent not in self.masks:
                self.moved.add(parent)
            child, parent = parent, os.path.dirname(parent)

    def _add_watch(self, path: str, mask: int) -> int:
        try:
            return self.inotify.add_watch(path, mask)
        except OSError as err:
            if err.errno != errno.ENOTDIR or not mask & DIRECTORY:
                raise
        # A directory reached through a symlink (a parent such as /var/run -> /run: safefs
        # follows a safe one, and _desired takes it for a directory): the directory it points
        # to is where the path's entry is, so that is what is watched. Not the link itself:
        # the link changing is seen only by a watch on its own directory, if any.
        return self.inotify.add_watch(path, mask & ~inotify.DONT_FOLLOW)

    def _drop_kernel_watch(self, path: str) -> None:
        self.absent.clear()  # what was seen missing below it may appear unseen from now on
        if path in self.guarding:
            self._unguard_above(path)
        self.masks.pop(path, None)
        self.by_name.pop(path, None)
        self.private.pop(path, None)
        if (
            (path in self.guarded or path in self.parents)
            and path not in self.moved
            and path in self.path_wd
            and self._guard(path)  # still above a watched directory: its own events kept
        ):
            return
        self._forget_watch(path)

    def _forget_watch(self, path: str) -> None:
        if self.refused and path in self.refused:  # no longer needed
            self.refused.discard(path)
            self._unwatched_changed()
        self.moved.discard(path)
        self.kernel_mask.pop(path, None)
        wd = self.path_wd.pop(path, None)
        if wd is not None:
            self._unmap(wd, path)

    def _unmap(self, wd: int, path: str) -> None:
        paths = self.wd_paths.get(wd)
        if paths is None:
            return
        paths.discard(path)
        if not paths:
            del self.wd_paths[wd]
            if not self.closing:
                with contextlib.suppress(OSError):  # already gone with its inode
                    self.inotify.rm_watch(wd)

    def unwatched(self) -> dict[object, list[str]]:
        """The resources (`PathWatcher.owner`) that a path the kernel refused to watch leaves
        blind, each with those paths: a refused directory (its entries' changes go unseen), or
        a refused file whose directory is not watched for it (where it is, that watch sees the
        file's writes, chmods and deletion: not counted). Without an inotify instance, every
        watcher's first path."""
        blind: dict[object, list[str]] = {}
        if isinstance(self.inotify, Blind):
            for watcher in self.subscribers:
                blind.setdefault(watcher.owner, []).extend(watcher.paths[:1])
            return blind
        for path in sorted(self.refused):
            parent, name = os.path.split(path)
            seen = self.by_name.get(parent, {}) if self.watches_dir(parent) else {}
            named, every = seen.get(name, ()), seen.get(ALL, ())
            for watcher, mask in self.masks.get(path, {}).items():
                if mask & DIRECTORY or (watcher not in named and watcher not in every):
                    blind.setdefault(watcher.owner, []).append(path)
        return blind

    def _unwatched_changed(self) -> None:
        """The refused paths changed: `on_unwatched` is told UNWATCHED_SUMMARY s later (what
        changes meanwhile is told with it)."""
        if self._summary is None:
            self._summary = self.loop.call_later(UNWATCHED_SUMMARY, self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        for callback in list(on_unwatched):
            callback()

    def report_later(self, watcher: PathWatcher) -> None:
        """Call `watcher._report()` in a later step of the loop. The reports due meanwhile
        share one callback, in order: a directory appearing below a thousand watchers (a first
        run's) made a thousand callbacks (~7 K instructions each, beyond the report)."""
        self._due.append(watcher)
        if len(self._due) == 1:
            self.loop.call_soon(self._report_all)

    def _report_all(self) -> None:
        due, self._due = self._due, []
        done = 0
        try:
            for watcher in due:
                done += 1
                try:
                    watcher._report()
                except Exception:
                    log.exception("a watcher's report failed")
        finally:
            if done < len(due):  # stopped by a BaseException: the rest in a later step
                for watcher in due[done:]:
                    self.report_later(watcher)

    def _on_events(self, events: list[Event]) -> None:
        for event in events:
            try:
                self._dispatch(event)
            except Exception:
                log.exception("inotify dispatch failed")

    def _dispatch(self, event: Event) -> None:
        if self.absent:
            self.absent.clear()
        mask = event.mask
        structural = bool(mask & STRUCTURAL)
        if mask & OVERFLOW:
            for watcher in list(self.subscribers):
                watcher.deliver(True)
            return
        wd = event.wd
        paths = list(self.wd_paths.get(wd, ()))
        if mask & SELF_EVENTS:
            self.moved.update(paths)
        if mask & IGNORED:
            for path in paths:
                if self.path_wd.get(path) == wd:
                    del self.path_wd[path]
            self.wd_paths.pop(wd, None)
        if mask & GONE and self.guarded:
            for path in paths:
                if path in self.guarded:
                    self._gone_below(path, mask)
        if mask & inotify.DELETE and event.name is not None:
            # Not only a directory's deletion (DELETE | ISDIR): a watched directory may be a
            # symlink's name (`/var/run`, a link planted there: its target is watched), whose
            # deletion says no ISDIR and no watch of the target sees (opsuser, 2026-12-06).
            for path in paths:
                if path in self.parents:  # a watched directory's DELETE_SELF may never come
                    child = os.path.join(path, libc.fsdecode(event.name))
                    if child in self.guarding:
                        self._gone_below(child, mask, itself=True)
        for path in paths:
            index = self.by_name.get(path)
            if not index:
                continue
            targets: Iterable[PathWatcher]
            if mask & SELF_EVENTS or event.name is None:
                targets = set().union(*index.values())
            else:  # (no empty sets made, no comprehension: an own write's event is one of these)
                name = libc.fsdecode(event.name)
                named, every = index.get(name), index.get(ALL)
                if named is None:
                    if every is None:
                        continue
                    named, every = every, None
                targets = list(named) if every is None else named | every
                if mask & PLACED:
                    kept = []
                    for watcher in targets:
                        if not (watcher._expected and watcher.consume(path, name)):
                            kept.append(watcher)
                    targets = kept
            for watcher in targets:
                watcher.deliver(structural, mask)


def no_instance() -> OSError | None:
    """Why the running loop's hub has no inotify instance (the kernel refused one: the limit
    of instances per user, fs.inotify.max_user_instances), None when it has one."""
    hub = Hub.running()
    return hub.inotify.error if hub is not None and isinstance(hub.inotify, Blind) else None


def unwatched() -> tuple[dict[object, list[str]], int]:
    """The running loop's resources that the kernel's watch limit leaves unwatched (Hub.unwatched),
    and how many paths it refused (some may be covered by their directory's watch)."""
    hub = Hub.running()
    return (hub.unwatched(), len(hub.refused)) if hub is not None else ({}, 0)


@contextlib.contextmanager
def shutting_down() -> Iterator[None]:
    """Every watcher of this loop is being closed: watches are not removed one by one meanwhile
    (close() drops them all at once). Any watcher still open afterwards works as before."""
    hub = Hub.running()
    if hub is None:
        yield
        return
    hub.closing = True
    try:
        yield
    finally:
        hub.closing = False
        hub.forget_released()


# Seconds after the last write to a file that it is read though its writer has not closed it
# (`follow_writes`).
WRITER_WAIT = 2.0


class ReadTimer:
    """When to read files again (follow_writes' rule): `changed(writing)` at each change;
    `ready()` is called at once, or once no change came for `settle` s (a reader of many files,
    a program's: a burst of changes, `cp -r`, a script's commands, is read once), or for `wait`
    s while a writer has a file open (`writing`: it may have written half of it). A timer,
    reset at each change."""

    def __init__(
        self, ready: Callable[[], None], wait: float = WRITER_WAIT, settle: float = 0.0
    ) -> None:
        self.ready, self.wait, self.settle = ready, wait, settle
        self.held = False  # the last change came while a writer had a file open (tests read it)
        self._late: asyncio.TimerHandle | None = None

    def changed(self, writing: bool) -> None:
        self.cancel()
        self.held = writing
        if not writing and self.settle <= 0:
            self.ready()
            return
        delay = self.wait if writing else self.settle
        self._late = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._late = None
        self.ready()

    def cancel(self) -> None:
        if self._late is not None:
            self._late.cancel()
            self._late = None


def writer_may_hold(path: str, watcher: PathWatcher) -> bool:
    """Whether a writer may still have `path` open, half written, by `watcher`'s last event:
    a write not yet closed, or a file created by an open. A name made for what is already
    whole is none, and no close follows it: a symlink made there (`ln -s`), or a hard link
    (`ln`: a file created with more than one link, no open made it)."""
    if not watcher.writing:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return True  # gone: the read says so, after the wait as before
    if stat.S_ISLNK(info.st_mode):
        return False
    return not (watcher.created and stat.S_ISREG(info.st_mode) and info.st_nlink > 1)


async def follow_writes(
    watcher: PathWatcher, ready: Callable[[], None], wait: float = WRITER_WAIT
) -> None:
    """Call `ready()` each time what `watcher` watches is worth reading again: once its writer
    is done with it, not at each write, which may have put half of it there (a truncate
    first: an empty file). A file renamed into place, removed or renamed away is done; one
    written in place (`cat > FILE`, scp, an editor saving in place) or created by an open
    (`cp` onto a missing name) is done at its writer's close, or `wait` s after its last
    write if the writer keeps it open (a hard link made at a missing name, which no close
    follows, too, unless it has another link: `writer_may_hold`). For readers of whole
    files: the language's os.readfile (the agent's graph file, a program's files:
    engine.namedpath, the same rule per file)."""
    timer = ReadTimer(ready, wait)
    try:
        async for _ in watcher:
            timer.changed(writer_may_hold(watcher.paths[0], watcher))
    finally:
        timer.cancel()
