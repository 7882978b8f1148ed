"""The one filesystem watcher every resource uses: inotify via asyncinotify, no polling.

`PathWatcher(paths)` reports every change to each path (created, deleted, written, chmod/chown,
moved), also when a missing parent directory appears later: it watches the deepest existing
ancestor and moves its watches down as the path comes into existence. With `recurse=True`,
everything below a directory path counts too. Symlinks are never followed.

    async with PathWatcher([path]) as watcher:
        await handle.event()          # startup event, after the watches exist
        async for _ in watcher:
            await handle.event()
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType

from asyncinotify import Event, Inotify, Mask

# Changes to a directory's entries, and to the entries themselves (reported on the directory).
DIR_MASK = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.DONT_FOLLOW
    | Mask.ONLYDIR
)
# Changes to a watched file itself.
FILE_MASK = (
    Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.DONT_FOLLOW
)
# Events after which the set of watches may have to change.
STRUCTURAL = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.IGNORED
    | Mask.Q_OVERFLOW
)

ALL = "*"  # every entry of a watched directory is relevant


class PathWatcher:
    """Watch paths for any change (see module docstring)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, recurse: bool = False) -> None:
        self.paths = [Path(os.path.abspath(p)) for p in paths]
        self.recurse = recurse
        self._inotify: Inotify | None = None
        # watched directory or file -> names of entries that matter (ALL for every entry)
        self._wanted: dict[Path, set[str]] = {}

    async def __aenter__(self) -> PathWatcher:
        self._inotify = Inotify()
        self._sync()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    async def __aiter__(self) -> AsyncIterator[None]:
        """Yield once per relevant change, until cancelled."""
        if self._inotify is None:
            raise RuntimeError("PathWatcher used outside 'async with'")
        inotify = self._inotify
        while True:
            event = await inotify.get()
            relevant = self._relevant(event)
            if event.mask & STRUCTURAL:
                self._sync()
            if relevant:
                yield None

    def _relevant(self, event: Event) -> bool:
        if event.mask & Mask.Q_OVERFLOW:
            return True
        if event.watch is None:
            return False
        names = self._wanted.get(Path(os.fsdecode(event.watch.path)))
        if names is None:
            return False
        if event.mask & (Mask.DELETE_SELF | Mask.MOVE_SELF):
            return True
        if event.mask & Mask.IGNORED:
            return False
        if ALL in names:
            return True
        return event.name is not None and os.fsdecode(event.name) in names

    def _desired(self) -> dict[Path, tuple[Mask, set[str]]]:
        want: dict[Path, tuple[Mask, set[str]]] = {}

        def add(path: Path, mask: Mask, names: set[str]) -> None:
            old_mask, old_names = want.get(path, (Mask(0), set()))
            want[path] = (old_mask | mask, old_names | names)

        for path in self.paths:
            # The deepest existing ancestor watches for the next component to appear.
            child = path
            for parent in path.parents:
                if parent.is_dir():
                    add(parent, DIR_MASK, {child.name})
                    break
                child = parent
            if not os.path.lexists(path):
                continue
            if path.is_dir() and not path.is_symlink():
                add(path, DIR_MASK, {ALL})
                if self.recurse:
                    for root, dirs, _files in os.walk(path):
                        for name in dirs:
                            sub = Path(root, name)
                            if not sub.is_symlink():
                                add(sub, DIR_MASK, {ALL})
            elif not path.is_symlink():
                add(path, FILE_MASK, {ALL})
        return want

    def _sync(self) -> None:
        """Add and remove watches so that they match what the paths look like now."""
        inotify = self._inotify
        if inotify is None:
            return
        want = self._desired()
        current = {Path(os.fsdecode(w.path)): w for w in inotify.watches}
        for path, watch in current.items():
            if path not in want:
                try:
                    inotify.rm_watch(watch)
                except OSError:
                    pass  # already gone with its inode
        for path, (mask, _names) in want.items():
            if path in current and current[path].mask == mask:
                continue
            try:
                inotify.add_watch(path, mask)
            except OSError:
                continue  # vanished meanwhile: the parent's watch reports it
        self._wanted = {path: names for path, (_m, names) in want.items()}
