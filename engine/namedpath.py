"""Watching what a path NAMES, through symlinks: the agent's graph file, a program's files, a
Puppet manifest, as the operator gives them (`/srv/site/current/g.yaml`, `current` a link to
`releases/42`, re-pointed by each release).

engine.watcher follows no symlink (a managed path never is). A file the agent READS on the
operator's word is read through its links, so it is watched through them too: `watch_list`
names every symlink met while resolving each path (each watched as itself: re-pointing it is a
change) and the file it leads to. `NamedPaths.follow` calls `ready()` as
engine.watcher.follow_writes does (a whole file written or created, a rename onto it, a link
re-pointed), per file: each path has a watcher of its own, so a file whose writer has it open
holds the read back whatever is written beside it; a program's watch also reads a burst of
changes once (`settle`). After a change of where a path leads, it watches the new chain first
(and calls `relinked()`, for a reader that would otherwise take the same files for unchanged).
`watch(paths)` changes the paths watched in place (a program's modules as last compiled).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Iterable

from engine.watcher import PathWatcher, ReadTimer, writer_may_hold

MAX_LINKS = 40  # as the kernel's ELOOP


def watch_list(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Each path's symlinks on the way (each as itself) and where it leads (a missing part: the
    path from there, as written), in order, without repeats."""
    found: list[str] = []
    for path in paths:
        for one in _chain(os.path.abspath(os.fspath(path))):
            if one not in found:
                found.append(one)
    return found


def _chain(path: str) -> list[str]:
    found: list[str] = []
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current, links = "/", 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = os.path.dirname(current)  # current is a real directory: its parent
            continue
        step = os.path.join(current, part)
        try:
            info = os.lstat(step)
        except OSError:  # missing (or not ours to see): watched as written from here
            found.append(os.path.join(step, *parts))
            return found
        if not stat.S_ISLNK(info.st_mode):
            current = step
            continue
        links += 1
        found.append(step)
        if links > MAX_LINKS:
            return found
        try:
            target = os.readlink(step)
        except OSError:
            return found
        if target.startswith("/"):
            current = "/"
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    found.append(current)
    return found


class NamedPaths:
    """A watch of what `paths` name through their symlinks (see the module docstring); open it
    (`async with`) before reading them, then `follow`. Each path of the chain has a watcher of
    its own, so that a writer is waited for per file: a file being written (created by an open,
    or written in place) holds the read back until its writer closes it, whatever happens to
    the others meanwhile; a symlink or a hard link made at a missing name is no writer
    (`ln -s`, `ln`: engine.watcher.writer_may_hold)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], settle: float = 0.0) -> None:
        # Made absolute now: a relative path read later needs the working directory, which
        # may be gone by then (a checkout removed under a running agent: each re-watch raised
        # FileNotFoundError from getcwd, a traceback, and the watch ended).
        self.paths = [os.path.abspath(p) for p in paths]
        self.settle = settle  # read a burst of changes once, this long after its last
        self.chain: list[str] = []
        self._watchers: dict[str, PathWatcher] = {}
        self._timer: ReadTimer | None = None
        self.changes = asyncio.Event()  # set at each change seen (tests wait on it)
        self._failed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> NamedPaths:
        try:
            self._rewatch()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def watch(self, paths: Iterable[str | os.PathLike[str]]) -> bool:
        """Watch `paths` from now on (the watches of those kept stay, with their writers);
        True if any path is watched that was not: it may have changed before its watch, so
        the caller reads it again."""
        before = set(self.chain)
        self.paths = [os.path.abspath(p) for p in paths]
        self._rewatch()
        return not before.issuperset(self.chain)

    def _rewatch(self) -> None:
        self.chain = watch_list(self.paths)
        for path in self._watchers.keys() - set(self.chain):
            self._watchers.pop(path).close()
        for path in self.chain:
            if path not in self._watchers:
                watcher = PathWatcher([path], on_change=self._changed, on_error=self._error)
                watcher.open()
                self._watchers[path] = watcher

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        watchers, self._watchers = self._watchers, {}
        for watcher in watchers.values():
            watcher.close()

    async def follow(
        self, ready: Callable[[], None], relinked: Callable[[], None] | None = None
    ) -> None:
        """Call `ready()` each time what the paths name is worth reading again (until
        cancelled; engine.watcher.follow_writes' rule, per file); `relinked()` first when a
        change moved where they lead (the new chain is watched before it is read)."""

        def read() -> None:
            for watcher in self._watchers.values():
                watcher.writing = watcher.created = False  # closed, or waited long enough
            chain = self.chain
            try:
                self._rewatch()
            except Exception as err:  # (no watch on it, e.g. out of inotify watches)
                self._error(err)
                return
            if relinked is not None and self.chain != chain:
                relinked()
            ready()

        self._timer = ReadTimer(read, settle=self.settle)
        self._failed = asyncio.get_running_loop().create_future()
        try:
            await self._failed  # the watch's own error, if it fails, goes up from here
        finally:
            self._timer.cancel()
            self._timer = None

    @property
    def held(self) -> bool:
        """The last change came while a writer had one of the files open: the read waits."""
        return self._timer is not None and self._timer.held

    def _changed(self) -> None:
        self.changes.set()
        if self._timer is not None:
            self._timer.changed(any(writer_may_hold(p, w) for p, w in self._watchers.items()))

    def _error(self, err: Exception) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(err)
