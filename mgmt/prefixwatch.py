"""Notice the agent's prefix removed or moved under it (`rm -rf`, systemd-tmpfiles ageing a
prefix in /tmp or /var/tmp, an operator's cleanup): `removed(prefix, lock)` returns then.

With the prefix, the agent's lock file goes (one agent per prefix: a second agent would start
there), and its status socket (`mgmt status` finds no agent), and the per-resource state and
reversal records the running resources keep there. The agent stops then (exit 1: the unit
restarts it, and a fresh start makes all of it again) rather than re-make the lock and the
socket alone under resources whose state vanished (docs/operations.md, "One agent per prefix").

One inotify instance, two watches: the lock file (its link count falls to 0 when it is removed:
IN_ATTRIB, the agent's descriptor keeping the inode) and the prefix itself (moved, or removed
once empty). Each event compares the lock file at its path with the one held (device, inode):
a touch or a chmod is no removal. Nothing polls; no event, no cost.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from engine import inotify


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return info.st_dev, info.st_ino


async def removed(prefix: Path, lock: str) -> None:
    """Return once `prefix/lock` is no longer the file it is now (removed, moved, replaced);
    never if it cannot be watched (OSError: nothing is known of it then)."""
    path = prefix / lock
    held = _identity(path)
    gone = asyncio.Event()

    def check(_events: list[inotify.Event]) -> None:
        if _identity(path) != held:
            gone.set()

    try:
        watcher = inotify.Inotify(check)
    except OSError:  # no instance left (fs.inotify.max_user_instances: the hub's error says it)
        await asyncio.Future()  # unwatched; before 2026-12-06 the agent stopped at once (exit 1)
    try:
        watcher.add_watch(path, inotify.ATTRIB | inotify.DELETE_SELF | inotify.MOVE_SELF)
        watcher.add_watch(prefix, inotify.DELETE_SELF | inotify.MOVE_SELF | inotify.ONLYDIR)
        check([])  # removed before the watches were added
        await gone.wait()
    except OSError:
        await asyncio.Future()  # not watchable (inotify's limits): as before, unwatched
    finally:
        watcher.close()
