"""Where reversal data lives: one JSON file per resource under `<prefix>/reverse/<kind>/`.

Each record holds the resource's kind, name and params (so that it can be rebuilt after an
agent restart) and the data its `reversal()` returned before its first change. It may hold a
file's previous contents: the directories are 0700 and the records 0600 (looser ones are
tightened). A record's file name is the quoted resource name, or `#<sha256>.json` when that
would be too long for the file system; `prepare()` makes sure, before the resource changes
anything, that the record can be written.

`Reverser` undoes the resources that left the graph, in the reverse of the order they ran in
(a file before its directory), and retries one that fails as meta retry and delay say (kept in
its record), then counts it as failed (`failed()`) until a retry succeeds: the next run's, or one
asked for by a reload (SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import safefs
from engine.autoedge import add_autoedges
from engine.errors import GraphError, ResourceError
from engine.events import Listeners, ReversalsChanged
from engine.graph import Graph, Key, fmt_key
from engine.meta import Meta
from engine.params import build
from engine.resource import Resource, Reversible, lookup
from engine.slices import sliced
from engine.tasks import TaskSet

log = logging.getLogger("engine")

PATH_MAX = 4096  # longest path Linux takes, terminating NUL included


class ReverseStore:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.root = prefix / "reverse"

    def _path(self, key: Key) -> Path:
        kind, name = key
        return self.root / kind / safefs.fit_name(urllib.parse.quote(name, safe=""), ".json")

    def prepare(self, key: Key) -> Path:
        """The record's path, its private directory made: called before anything is applied."""
        path = self._path(key)
        if len(os.fsencode(path)) >= PATH_MAX:
            raise ResourceError(f"reversal record path too long ({path}): use a shorter prefix")
        safefs.private_dir(path.parent, root=self.prefix)
        return path

    def has(self, key: Key) -> bool:
        return self._path(key).exists()

    def save(self, key: Key, params: dict[str, Any], data: Any, meta: Meta) -> None:
        """Write the record atomically (new inode + fsync + rename), mode 0600. It keeps the
        meta params its reversal follows (retry, delay): an agent restart rebuilds it."""
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        kept = {"retry": meta.retry, "delay": meta.delay}
        record = {"kind": key[0], "name": key[1], "params": params, "meta": kept, "data": data}
        safefs.write_file(str(self.prepare(key)), json.dumps(record).encode(), 0o600)

    def load(self, key: Key) -> dict[str, Any]:
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        return json.loads(self._path(key).read_text())  # type: ignore[no-any-return]

    def delete(self, key: Key) -> None:
        self._path(key).unlink(missing_ok=True)

    def stored(self) -> list[Key]:
        """Every resource with a stored reversal (the directories made private on the way)."""

        if not self.root.is_dir():
            return []
        found = []
        for kind_dir in self.root.iterdir():
            if not kind_dir.is_dir():
                continue
            try:
                safefs.private_dir(kind_dir, root=self.prefix)
            except (OSError, ResourceError) as err:
                log.error("reversal records in %s are not used: %s", kind_dir, err)
                continue
            for path in kind_dir.glob("*.json"):
                if path.name.startswith("#"):  # a hashed name: the record knows the real one
                    import json  # here: a cron run needs no json (~5 M instructions of its start)

                    name = json.loads(path.read_text())["name"]
                else:
                    name = urllib.parse.unquote(path.stem)
                found.append((kind_dir.name, name))
        return found


@dataclass
class Pending:
    """A reversal that failed: the meta it follows (retry, delay), its last error, the
    attempts so far, and when the next one is due (loop time), or None: out of retries."""

    meta: Meta
    error: str
    tries: int
    due: float | None


class Reverser:
    """Undoes resources that left the graph (see the module docstring). `present(key)`: the key
    is in the running graph again (a failed reversal of it is then dropped: its record is kept
    for when it leaves again). With `noop`, it says what it would undo and keeps the records."""

    def __init__(
        self,
        store: ReverseStore,
        listeners: Listeners,
        present: Callable[[Key], bool],
        noop: bool = False,
    ) -> None:
        self.store = store
        self.noop = noop
        self.pending: dict[Key, Pending] = {}
        self.changes = 0  # reversals done (with noop: that would be), a run's changes too
        self._listeners = listeners
        self._present = present
        self._lock = asyncio.Lock()  # one undo at a time: a swap's, or a retry's
        self._tasks = TaskSet("reversal")
        self._retrier: asyncio.Task[None] | None = None

    def retrying(self) -> bool:
        """Whether a failed reversal waits for its next attempt (not converged meanwhile)."""
        return any(p.due is not None for p in self.pending.values())

    def due(self) -> list[Key]:
        """The failed reversals waiting for their next attempt (of keys not in the graph)."""
        return sorted(
            k for k, p in self.pending.items() if p.due is not None and not self._present(k)
        )

    def failed(self) -> dict[Key, str]:
        """The reversals that failed and are out of retries, with their last error."""
        return {
            k: p.error for k, p in self.pending.items() if p.due is None and not self._present(k)
        }

    async def undo(
        self, keys: list[Key], running: dict[Key, Resource], last: Graph, *, retry: bool = False
    ) -> None:
        """Undo `keys` (those with a record), children first (`undo_order`, with the edges of
        `last`, the graph they ran in); `running`: their instances, if they ran (else each is
        rebuilt from its record). `retry`: an attempt of failed ones (else the keys have just
        left the graph: their attempts are counted afresh)."""
        if not keys:
            return
        async with self._lock:
            touched = False
            found: dict[Key, tuple[Reversible, Any]] = {}
            async for some_keys in sliced(keys):
                for key in some_keys:
                    if not retry:
                        touched |= self.pending.pop(key, None) is not None
                    ran = running.get(key)
                    if ran is not None and not isinstance(ran, Reversible):
                        continue  # a kind that never keeps a record: no look on disk
                    if not self.store.has(key):
                        continue
                    touched = True
                    try:
                        record = await asyncio.to_thread(self.store.load, key)
                        res = running.get(key) or _rebuild(key, record)
                        if not isinstance(res, Reversible):
                            raise ResourceError(f"{fmt_key(key)} cannot be reversed")
                    except Exception as err:
                        self._failed(key, None, err)
                        continue
                    found[key] = (res, record["data"])
            resources: dict[Key, Resource] = {key: res for key, (res, _data) in found.items()}
            for key in undo_order(resources, last):
                res, data = found[key]
                if self.noop:
                    log.info("%s: would reverse (it left the graph; noop)", fmt_key(key))
                    self.changes += 1
                    continue
                try:
                    await res.reverse(data)
                except Exception as err:
                    self._failed(key, res.meta, err)
                    continue
                self.store.delete(key)
                self.pending.pop(key, None)
                self.changes += 1
                log.info("%s: reversed (it left the graph)", fmt_key(key))
        if touched:
            self._changed()

    def _failed(self, key: Key, meta: Meta | None, err: Exception) -> None:
        """A reversal failed: retried as its meta says (`meta` None: its record could not be
        read, the last known meta), or failed until the next run or a reload."""
        last = self.pending.get(key)
        meta = meta or (last.meta if last is not None else Meta())
        tries = (last.tries if last is not None else 0) + 1
        due = None
        if meta.retry == -1 or tries <= meta.retry:
            left = "forever" if meta.retry == -1 else f"{meta.retry - tries + 1} left"
            log.warning(
                "%s: reversal failed, retrying in %gs (%s): %s",
                *(fmt_key(key), meta.delay / 1000, left, err),
            )
            due = asyncio.get_running_loop().time() + meta.delay / 1000
        else:
            log.error("%s: reversal failed (kept for the next run): %s", fmt_key(key), err)
        self.pending[key] = Pending(meta, str(err), tries, due)

    def retry_failed(self) -> int:
        """An operator's reload (SIGHUP): each failed reversal is tried once more; how many."""
        now = asyncio.get_running_loop().time()
        failed = [self.pending[key] for key in self.failed()]
        for pending in failed:
            pending.due = now
        if failed:
            self._changed()
        return len(failed)

    def _changed(self) -> None:
        """Tell the listeners, and start the retries if some are due and none runs."""
        if self._retrier is None and self.retrying():
            self._retrier = self._tasks.spawn(self._retry(), "reversal retries")
        self._listeners.emit(ReversalsChanged())

    async def _retry(self) -> None:
        """Each failed reversal again when it is due (rebuilt from its record), until none is;
        one whose key is back in the graph is dropped (its record kept)."""
        loop = asyncio.get_running_loop()
        try:
            while due := [p.due for p in self.pending.values() if p.due is not None]:
                await asyncio.sleep(max(0.0, min(due) - loop.time()))
                now = loop.time()
                keys = [k for k, p in self.pending.items() if p.due is not None and p.due <= now]
                back = [k for k in keys if self._present(k)]
                for key in back:
                    del self.pending[key]
                if back:
                    self._listeners.emit(ReversalsChanged())
                await self.undo([k for k in keys if k in self.pending], {}, Graph(), retry=True)
        finally:
            self._retrier = None

    async def aclose(self) -> None:
        """Stop the retries (a failed reversal is kept for the next run: Engine.stop says so)."""
        await self._tasks.close()


def _rebuild(key: Key, record: dict[str, Any]) -> Resource:
    """The resource of a record (after an agent restart, or a retry), with its meta retry and
    delay (a record of an older version has none: the defaults)."""
    cls = lookup(key[0])
    if cls is None:
        raise ResourceError(f"unknown kind {key[0]!r}")
    return build(cls, {"name": key[1], "meta": record.get("meta", {}), **record["params"]})


def undo_order(resources: dict[Key, Resource], last: Graph) -> list[Key]:
    """The keys of `resources` in the reverse of an order they may run in: the edges of `last`
    between them and their automatic edges (a file in a directory runs after it, so its
    reversal runs before the directory's: the directory is then empty). Without those edges
    (or with a cycle among them), as given."""
    graph = Graph("reversals")
    for key, res in resources.items():
        graph.vertices[key], graph.succ[key], graph.pred[key] = res, {}, {}
    for key in resources:
        for dst, edge in last.succ.get(key, {}).items():
            if dst in resources:
                graph.connect(key, dst, edge)
    with contextlib.suppress(GraphError):  # two of them manage one path: no automatic edges
        add_autoedges(graph)
    try:
        return graph.topological()[::-1]
    except GraphError:
        return list(resources)
