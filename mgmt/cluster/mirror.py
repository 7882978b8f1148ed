"""A local copy of every key under an etcd prefix, kept up to date by a watch's events.

A collector used to read every exported record again (one round trip to etcd, and every
record decoded) on each change; the watch event already holds the change. `Mirror` applies the
events, and is read in full only when it may have missed some (before the first read, and
after the watch ended, e.g. at a failover, until it is created again):

    mirror = Mirror()
    await client.subscribe(prefix, signal, prefix=True, events=mirror.apply)  # held: mirror.held
    if not mirror.synced:
        generation = mirror.generation
        mirror.load(await client.scan(prefix), generation)
    mirror.values  # key -> (value, mod revision)

Ordering: every change carries its revision. A full read reflects every change up to the
revision of its first page (`Scan.first`), so events at or below it are dropped; a key keeps
the value of its newest revision, whether that came from the read or from an event (deletions
are remembered by revision until a read covers them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from mgmt.cluster.client import Scan

DELETE = rpc.Event.DELETE


class Mirror:
    """See the module doc."""

    def __init__(self) -> None:
        self.values: dict[bytes, tuple[bytes, int]] = {}
        self._deleted: dict[bytes, int] = {}  # key -> revision of its deletion, above the floor
        self._floor = 0  # every change up to this revision is in `values`
        self._synced = False
        self.generation = 0  # counts the watch (re)creations: changes may be missed at each
        self.held = 0  # watches feeding it: without one it is never up to date

    @property
    def synced(self) -> bool:
        """True if `values` is what the store holds, as of the last event received."""
        return self._synced and self.held > 0

    def apply(self, events: Sequence[Any] | None) -> None:
        """A watch's events (None: the watch was created again, changes may have been missed)."""
        if events is None:
            self._synced = False
            self.generation += 1
            return
        for event in events:
            kv = event.kv
            value = None if event.type == DELETE else bytes(kv.value)
            self.change(bytes(kv.key), value, int(kv.mod_revision))

    def change(self, key: bytes, value: bytes | None, revision: int) -> None:
        """`key` was set to `value` (None: deleted) at `revision`: from a watch event, or from a
        write of our own that succeeded (its event follows, and is then already known)."""
        if revision <= max(self._floor, self._revision(key)):
            return  # already known (from a read, our own write, or another watch of the prefix)
        if value is None:
            self.values.pop(key, None)
            self._deleted[key] = revision
        else:
            self.values[key] = (value, revision)
            self._deleted.pop(key, None)

    def load(self, scan: Scan, generation: int) -> None:
        """A full read, started when `self.generation` was `generation`."""
        values = dict(scan.items)
        for key, (value, revision) in self.values.items():
            if revision > scan.first and revision > values.get(key, (b"", 0))[1]:
                values[key] = (value, revision)  # an event newer than the page that read it
        for key, revision in self._deleted.items():
            if revision > scan.first and revision > values.get(key, (b"", 0))[1]:
                values.pop(key, None)
        self.values = values
        self._floor = max(self._floor, scan.first)
        self._deleted = {k: r for k, r in self._deleted.items() if r > self._floor}
        # A watch created again during the read may have missed changes the read did not see.
        self._synced = generation == self.generation

    def _revision(self, key: bytes) -> int:
        value = self.values.get(key)
        return value[1] if value is not None else self._deleted.get(key, 0)
