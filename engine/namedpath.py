"""Watching what a path NAMES, through symlinks: the agent's graph file, a program's files, a
Puppet manifest, as the operator gives them (`/srv/site/current/g.yaml`, `current` a link to
`releases/42`, re-pointed by each release).

engine.watcher follows no symlink (a managed path never is). A file the agent READS on the
operator's word is read through its links, so it is watched through them too: `watch_list`
names every symlink met while resolving each path (each watched as itself: re-pointing it is a
change) and the file it leads to. `NamedPaths.follow` calls `ready()` as
engine.watcher.follow_writes does (a whole file written, a rename onto it, a link re-pointed),
and after an event that changed where a path leads, it watches the new chain first (and calls
`relinked()`, for a reader that would otherwise take the same files for unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import stat
from collections.abc import Callable, Iterable

from engine.watcher import PathWatcher, follow_writes

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
    (`async with`) before reading them, then `follow`."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.paths = [os.fspath(p) for p in paths]
        self.chain: list[str] = []
        self._watcher: PathWatcher | None = None

    async def __aenter__(self) -> NamedPaths:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> None:
        self.chain = watch_list(self.paths)
        watcher = PathWatcher(self.chain)
        watcher.open()
        self._watcher = watcher

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None

    async def follow(
        self, ready: Callable[[], None], relinked: Callable[[], None] | None = None
    ) -> None:
        """Call `ready()` each time what the paths name is worth reading again (until
        cancelled); `relinked()` first when an event changed where they lead."""
        while True:
            moved = asyncio.Event()
            assert self._watcher is not None
            changed = functools.partial(self._changed, ready, moved)
            task = asyncio.ensure_future(follow_writes(self._watcher, changed))
            waiting = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for one in (task, waiting):
                    one.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await one  # the watch's own error, if it failed, goes up from here
            await self.aclose()
            self._open()
            if relinked is not None:
                relinked()
            ready()

    def _changed(self, ready: Callable[[], None], moved: asyncio.Event) -> None:
        if watch_list(self.paths) != self.chain:
            moved.set()  # watch the new chain before it is read
        else:
            ready()
