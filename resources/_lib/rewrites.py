"""A file that several resources rewrite in turn (each undoing the other's change): named.

Every kind that rewrites a file other resources may write too reports each rewrite here
(`wrote`): `line` (and what edits through resources/_lib/lines.py), `ssh:authorized_key`, `host`, `augeas`, `json:edit`,
`sysctl` and `file`. A module of its own, light: a plain `file` run imports nothing more
(tests/mgmt/test_startup.py).
"""

from __future__ import annotations

import os
import time

from engine.handle import Handle

# A file rewritten this many times in a minute, each time by another resource than the last,
# is fought over: a warning names the two (once a minute at most).
FIGHT_WRITES = 10
FIGHT_WINDOW = 60.0


class _Writes:
    """Who rewrote one shared file last, and the hand-overs between resources in the window."""

    def __init__(self) -> None:
        self.last = ""
        self.times: list[float] = []
        self.warned = -FIGHT_WINDOW


def wrote(handle: Handle, path: str) -> None:
    """`handle`'s resource has just rewritten `path` (under its file_lock): when the file keeps
    changing hands (another resource undoes each change, as `exists` and `absent` of one line
    would), warn naming both, once a minute: they fight forever, each write fsync'd. What a
    graph says twice is refused at load (engine.autoedge's duplicates); this finds the rest
    (two kinds, or two keys that overlap)."""
    who = f"{handle.kind}[{handle.name}]"
    writes = handle.shared.get(f"{__name__}:writes:{os.path.normpath(path)}", _Writes)
    now = time.monotonic()
    if writes.last and writes.last != who:
        writes.times = [t for t in writes.times if now - t < FIGHT_WINDOW] + [now]
        if len(writes.times) >= FIGHT_WRITES and now - writes.warned >= FIGHT_WINDOW:
            writes.warned = now
            handle.logger.warning(
                "%s was rewritten %d times in the last minute, in turn by %s and %s: they undo "
                "each other's changes (keep one, or make them agree)",
                path, len(writes.times), who, writes.last,
            )  # fmt: skip
    writes.last = who
