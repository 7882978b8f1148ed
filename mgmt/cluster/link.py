"""What the agent sees of the cluster: start/stop, the World, exports and collected resources.

- `graph_for(loaded)` publishes the graph's exported (`@@`) resources as this host's set and
  returns the graph to run: the local graph plus every exported resource (from any host, this
  one included) that a `collect` entry matches and whose `meta.export` lets this host have it.
- A watch on `/_mgmt/exported/` re-reads the records on every change and, when the collected set
  differs from the one running, asks the agent to swap graphs (`on_change`); the engine then
  restarts only the vertices that changed.
- A change costs O(change), not O(local graph): `merge(loaded)` builds the new graph from the
  one it built last (engine.derive.derive), replacing only the collected resources that
  changed (and the local resources and edges `loaded.since` names), and says so with a `since`
  for Engine.apply. It merges in full when
  that cannot be vouched for: the first time, a local graph not derived from the last one, a
  changed key both local and collected (a clash), or edges to collected resources (`pending`).
- Publishing is desired state: if this host's records are changed or lost in the cluster, they
  are written again; a cluster that cannot be reached is retried in the background, never
  holding up the local graph.
- The exported records this host may collect are kept in the prefix (`KEPT_FILE`, written at
  most every `KEEP_EVERY` s after a change): an agent that starts while the cluster does not
  answer collects those (its program's `collect.res` reads them too) until it answers, so a
  reboot during an outage runs the graph it ran before, not a program error or a graph
  without its collected resources (whose `Meta:reverse` would have undone them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine import safefs
from engine.derive import derive, rewired
from engine.errors import GraphError, ValidationError, WorldError
from engine.graph import Graph, Key, fmt_key
from engine.resource import Resource
from engine.tasks import TaskSet
from engine.world import Changes, Exported
from mgmt.cluster.cluster import Cluster
from mgmt.cluster.options import Options
from mgmt.collectscope import refusal, selects, shown, writer

if TYPE_CHECKING:
    from engine.engine import Since
    from mgmt.collectscope import Collect
    from mgmt.yamlgraph import Loaded

log = logging.getLogger("cluster")

PUBLISH_WAIT = 2.0  # seconds a graph swap waits for its exports to be published
KEPT_FILE = "cluster-exported.json"  # in the prefix: the exports this host may collect, last read
KEEP_EVERY = 5.0  # seconds between two writes of KEPT_FILE at most
KEPT_MAX = 256 << 20  # bytes: a larger KEPT_FILE is not read


class ClusterLink:
    """See the module doc."""

    def __init__(self, options: Options, prefix: Path, on_change: Callable[[], None]) -> None:
        self.options = options
        self.host = options.hostname
        self.cluster = Cluster(options, prefix)
        self.world = self.cluster.world
        self.prefix = prefix
        self._keep = asyncio.Event()  # the records changed: keep them in the prefix
        self._stale = False  # the records are the kept ones: the cluster has not answered yet
        self.on_change = on_change
        self.records: list[Exported] = []  # every host's exports, as last read
        self._wanted: list[Exported] = []  # this host's exports
        # Per exported resource object (by id, the object kept to check it): its record.
        self._records_made: dict[int, tuple[Resource, Exported]] = {}
        self._published: list[Exported] | None = None
        self._exporting: list[Exported] | None = None  # being written now (by the publisher)
        self._attempts = 0  # export attempts made by the publisher (the only writer)
        self._export_error = ""  # why the last attempt failed ("": it did not)
        self._exported = asyncio.Condition()  # notified after every attempt
        self._collect: list[Collect] = []
        self._running: list[Exported] = []  # the collected records in the graph
        # The last _collected_signed(): its inputs (records, collect entries, own exports) and
        # its result.
        self._last_collected: (
            tuple[
                list[Exported],
                list[Collect],
                list[Exported],
                list[tuple[Exported, Resource]],
                list[Exported],
            ]
            | None
        ) = None
        self._changes: Changes | None = None
        self._publish = asyncio.Event()
        self._tasks = TaskSet("cluster link", log)
        self._warned: set[tuple[str, str]] = set()
        # What each collected resource was built from, and the resource: an unchanged record
        # gives the very same object again, which the engine keeps on an identity check.
        self._built: dict[tuple[str, str], tuple[Exported, Collect, Resource]] = {}
        self._refused: set[tuple[str, str]] = set()  # (record key, why) already logged
        # Per record object (by id, the object kept to check it): the collect entry chosen for
        # it and why it was refused, decided under the entries `_decided_for`.
        self._decisions: dict[int, tuple[Exported, Collect | None, str]] = {}
        self._decided_for: list[Collect] = []
        self._edge_notes: dict[tuple[Key, Key], str] = {}
        self._lock = asyncio.Lock()  # a graph being built vs the collector comparing with it
        # The last merge: the local graph, the collected resources added to it, the result.
        self._merged: tuple[Graph, dict[Key, Resource], Graph] | None = None

    async def start(self) -> None:
        await self.cluster.start()
        self._changes = self.world.res_watch()
        await self._changes.__aenter__()
        read = False
        if self.cluster.client.connected.is_set():
            with contextlib.suppress(WorldError):
                await self._read()
                read = True
        if not read:
            await self._read_kept()
        self._tasks.spawn(self._collector(), "collect")
        self._tasks.spawn(self._publisher(), "export")
        self._tasks.spawn(self._keeper(), "keep exports")

    async def stop(self, graceful: bool = True) -> None:
        """Stop collecting and exporting; graceful: withdraw exports and leave (Cluster.stop)."""
        await self._tasks.close()
        if self._keep.is_set():  # a change not kept yet (KEEP_EVERY): before the process ends
            with contextlib.suppress(OSError):
                await asyncio.to_thread(write_kept, self.prefix / KEPT_FILE, self._visible())
        changes, self._changes = self._changes, None  # (a forced stop runs this again)
        if changes is not None:
            await changes.__aexit__(None, None, None)
        await self.cluster.stop(graceful)

    def kill_member(self) -> None:
        """SIGKILL this host's etcd now, if it runs (Cluster.kill_member)."""
        self.cluster.kill_member()

    # graphs -------------------------------------------------------------------------------

    async def graph_for(self, loaded: Loaded) -> Graph:
        """Publish `loaded`'s exports; the local graph plus what it collects."""
        return (await self.merge(loaded))[0]

    async def merge(self, loaded: Loaded) -> tuple[Graph, Since | None]:
        """`graph_for`, and what the graph is since the last one (see the module doc)."""
        async with self._lock:
            return await self._graph_for(loaded)

    async def _graph_for(self, loaded: Loaded) -> tuple[Graph, Since | None]:
        self._collect = list(loaded.collect)
        self._wanted = self._records_of(loaded)
        if self._wanted != self._published:
            before = self._attempts
            self._publish.set()
            if self.cluster.client.connected.is_set():
                await self._wait_published(self._wanted, before)
        collected, self._running = self._collected_signed()
        by_key = {(res.kind, res.name): res for _, res in collected}
        small = self._merge_small(loaded, by_key)
        if small is not None:
            return small
        graph = self._merge_full(loaded, dict(by_key))
        self._merged = (loaded.graph, by_key, graph) if not loaded.pending else None
        return graph, None

    def _records_of(self, loaded: Loaded) -> list[Exported]:
        """This host's records of `loaded`'s exported resources: the record made last time for
        a resource object given again (the front-ends hand back the very objects of unchanged
        resources), so an edit costs a record per changed resource, not one per export. One
        the engine also runs here (a language resource both exported and applied) is made
        again each time, as before: the engine may have changed it (a received value)."""
        last, made = self._records_made, {}
        applied = loaded.graph.vertices
        records = []
        for res in loaded.exported:
            hit = last.get(id(res))
            if hit is None or hit[0] is not res or applied.get((res.kind, res.name)) is res:
                hit = (res, Exported.of(self.host, res))
            made[id(res)] = hit
            records.append(hit[1])
        self._records_made = made
        return records

    def collected_changes(self, running: Graph) -> list[str]:
        """The collected resources of the last merge that `running` lacks or holds otherwise
        (new or changed ones), each with the host that exported it: what a swap of them that
        failed names."""
        built = sorted(self._built.items())
        return [
            f"{fmt_key(key)} from {shown(record.host)}"
            for key, (record, _, res) in built
            if running.vertices.get(key) is not res
        ]

    def _merge_small(
        self, loaded: Loaded, by_key: dict[Key, Resource]
    ) -> tuple[Graph, Since] | None:
        """The merged graph built from the last one in O(change), or None (merge in full)."""
        if self._merged is None or loaded.pending:
            return None
        base, collected, last = self._merged
        local = loaded.graph
        if local is base:
            local_keys: frozenset[Key] = frozenset()
        elif loaded.since is not None and loaded.since[0] is base:
            local_keys = loaded.since[1]
        else:
            return None
        changed = {
            k for k in collected.keys() | by_key.keys() if collected.get(k) is not by_key.get(k)
        }
        # A key both local and collected (before or after) is a clash: the full merge decides.
        if any(k in local.vertices or k in base.vertices for k in changed) or any(
            k in by_key or k in collected for k in local_keys
        ):
            return None
        # The local graph's changes (its edges' too) and the collected ones, made in `last`.
        change = rewired(local, base, local_keys)
        for key in changed | local_keys:
            res = by_key[key] if key in by_key else local.vertices.get(key)
            if res is None:
                change.remove.add(key)
            else:
                change.put[key] = res
        try:
            derived = derive(last, change)
        except GraphError:
            return None  # the full merge says what is wrong
        self._merged = (local, by_key, derived.graph)
        return derived.graph, (last, derived.touched)

    def _merge_full(self, loaded: Loaded, by_key: dict[Key, Resource]) -> Graph:
        """The local graph plus the collected resources `by_key` (which it consumes)."""
        # A local resource that is hidden (exported, not applied here) gives way to the same
        # resource collected; any other local one wins.
        graph = Graph(loaded.graph.name)
        for res in loaded.graph:
            key = (res.kind, res.name)
            if key in by_key and not res.meta.hidden:
                self._warn_once(key, "collected resource %s clashes with a local one: kept local")
                del by_key[key]
            graph.add(by_key.pop(key, res))
        for src, dst, edge in loaded.graph.edges():
            graph.connect(src, dst, edge)
        for res in by_key.values():
            graph.add(res)
        for src, dst, edge in loaded.pending:  # edges to or from collected resources
            what = f"edge {fmt_key(src)} -> {fmt_key(dst)}"
            if src not in graph or dst not in graph:
                missing = fmt_key(dst if src in graph else src)
                self._note_once((src, dst), f"{what} waits for {missing} to be collected")
                continue  # the edge follows when it is
            if graph.has_path(dst, src):
                self._note_once((src, dst), f"{what} skipped: it would make a cycle", warn=True)
                continue
            graph.connect(src, dst, edge)
            self._edge_notes.pop((src, dst), None)
        return graph

    def _collected_signed(self) -> tuple[list[tuple[Exported, Resource]], list[Exported]]:
        """`_collected()` and its signature; computed again only when the records (a new
        list at each read), the collect entries or this host's exports differ from the last
        call's: a watch event's comparison and the swap it starts share one."""
        inputs = (self.records, self._collect, self._wanted)
        last = self._last_collected
        if last is not None and last[0] is inputs[0] and last[1:3] == inputs[1:]:
            return last[3], last[4]
        collected = self._collected()
        signature = self._signature(collected)
        self._last_collected = (*inputs, collected, signature)
        return collected, signature

    def _collected(self) -> list[tuple[Exported, Resource]]:
        out: dict[tuple[str, str], tuple[Exported, Resource]] = {}
        # This host's own records come from its graph, not from the last read: while exports
        # cannot be published (a partition), the cluster's copy of them is stale.
        others = [r for r in self.records if r.host != self.host]
        records = sorted(others + self._wanted, key=lambda r: r.key)
        if self._decided_for != self._collect:  # other entries: every record decided again
            self._decided_for, self._decisions = list(self._collect), {}
        decisions: dict[int, tuple[Exported, Collect | None, str]] = {}
        for record in records:
            decided = self._decisions.get(id(record))
            if decided is None or decided[0] is not record:
                decided = (record, *self._decide(record))
            decisions[id(record)] = decided
            _, chosen, refused = decided
            key = (record.kind, record.name)
            if chosen is None:
                if refused:
                    self._refuse(record, refused)
                continue
            if key in out:
                first = out[key][0]
                if (first.params, first.meta) != (record.params, record.meta):
                    self._warn_once(
                        key,
                        f"%s is exported differently by {first.host} and {record.host}: "
                        f"kept {first.host}'s",
                    )
                continue
            try:
                out[key] = (record, self._build(record, chosen))
            except ValidationError as err:
                who = writer(record.host, self.options.identities)
                self._warn_once(key, f"cannot collect %s written by {who}: {err}")
        self._built = {k: v for k, v in self._built.items() if k in out}
        self._decisions = decisions
        self._warn_unmatched(records, {id(d[1]) for d in decisions.values()})
        return list(out.values())

    def _warn_unmatched(self, records: list[Exported], chosen: set[int]) -> None:
        """Say once per graph-file collect entry that its pattern matches none of the exports
        of its kind there are: mgmt's `pattern` means another thing (the directory collected
        files are written into, every export collected), so its graphs collect nothing here.
        An entry that brings a record in (`chosen`, by id) is not looked at again."""
        for collect in self._collect:
            entry = ("collect", f"{collect.kind}:{collect.pattern}")
            if collect.name is not None or not collect.pattern or id(collect) in chosen:
                continue
            if entry in self._warned:
                continue
            kind = [r for r in records if r.kind == collect.kind]
            if kind and not any(selects(collect, r) for r in kind):
                self._warned.add(entry)
                log.warning(
                    "collect %s pattern %r matches none of the %d exported %s resources (e.g. "
                    "%r): here the pattern selects the exports whose name (a file's path) is "
                    "under it; in mgmt it is the directory every collected file is written "
                    "into (docs/clustering.md)",
                    *(collect.kind, collect.pattern, len(kind), collect.kind, kind[0].name),
                )

    def _decide(self, record: Exported) -> tuple[Collect | None, str]:
        """The collect entry that brings `record` in (None: none), and why it is refused ("":
        it is not, or no entry asks for it). The same record object (a key is decoded once
        per revision) is decided once while the entries stay the same (`_decisions`)."""
        if not record.visible_to(self.host):
            return None, ""
        asking = [c for c in self._collect if selects(c, record)]
        # This host's own exports come from its own graph, as trusted as the graph is.
        own = record.host == self.host
        chosen = next((c for c in asking if own or refusal(c, record) is None), None)
        if chosen is None and asking:
            return None, str(refusal(asking[0], record))
        return chosen, ""

    def _build(self, record: Exported, chosen: Collect) -> Resource:
        """The resource of `record` as `chosen` collects it: the one built last time if both
        are unchanged (so a collect event costs O(change) in the swap)."""
        key = (record.kind, record.name)
        last = self._built.get(key)
        if last is not None:
            old, collect, res = last
            same = old is record or (old.host, old.params, old.meta) == (
                record.host,
                record.params,
                record.meta,
            )
            if same and (collect is chosen or collect == chosen):
                return res
        res = record.build(chosen.params, chosen.meta)
        self._built[key] = (record, chosen, res)
        return res

    def _refuse(self, record: Exported, why: str) -> None:
        """A record that would take this host outside what it collects: never applied."""
        note = (record.key, why)
        if note not in self._refused:
            self._refused.add(note)
            who = writer(record.host, self.options.identities)
            key = shown(record.key)
            log.warning("refused exported record %s written by %s: %s", key, who, why)

    @staticmethod
    def _signature(collected: list[tuple[Exported, Resource]]) -> list[Exported]:
        """The collected records, in key order. An unchanged record is the very object of the
        last read (EtcdWorld.res_list decodes a key once per revision): comparing two
        signatures costs an identity check per unchanged record, not a JSON encoding each."""
        return [record for record, _ in collected]

    def _warn_once(self, key: tuple[str, str], message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("" + message, fmt_key(key))

    def _note_once(self, edge: tuple[Key, Key], message: str, warn: bool = False) -> None:
        """Say something about a pending edge once (until the edge's situation changes)."""
        if self._edge_notes.get(edge) != message:
            self._edge_notes[edge] = message
            log.log(logging.WARNING if warn else logging.INFO, "%s", message)

    # background ---------------------------------------------------------------------------

    async def _read(self) -> None:
        self.records = await self.world.res_list()
        if self._stale and self.world.last_known is None:
            self._stale = False
            log.info("the cluster answers: collecting its exported resources, not the kept ones")
        if not self._stale:
            self._keep.set()

    async def _read_kept(self) -> None:
        """The cluster does not answer: collect the records kept at the last run (if any)
        until it does; `collect.res` reads them too (`EtcdWorld.last_known`)."""
        path = self.prefix / KEPT_FILE
        try:
            kept = await asyncio.to_thread(read_kept, path)
        except (OSError, ValueError, WorldError) as err:
            log.warning("the cluster does not answer, and %s cannot be read: %s", path, err)
            return
        if kept is None:
            return
        saved, records = kept
        self.records, self.world.last_known, self._stale = records, records, True
        log.warning(
            "the cluster does not answer: collecting the %d exported resources it held at %s "
            "(kept in %s) until it answers",
            len(records),
            saved,
            path,
        )

    def _visible(self) -> list[Exported]:
        return [r for r in self.records if r.visible_to(self.host)]

    async def _keeper(self) -> None:
        """Keep the records this host may collect in the prefix, after each change that
        altered them, at most every KEEP_EVERY s (a write is O(records))."""
        kept: list[Exported] | None = None
        path = self.prefix / KEPT_FILE
        while True:
            await self._keep.wait()
            self._keep.clear()
            records = self._visible()
            if records != kept:
                try:
                    await asyncio.to_thread(write_kept, path, records)
                    kept = records
                except OSError as err:
                    log.warning("cannot keep the exported resources in %s: %s", path, err)
            await asyncio.sleep(KEEP_EVERY)

    async def _export(self) -> None:
        wanted = self._exporting = list(self._wanted)
        try:
            await self.world.res_export(wanted)
        finally:
            self._exporting = None
        self._published = wanted

    async def _wait_published(self, wanted: list[Exported], before: int) -> None:
        """Wait (at most PUBLISH_WAIT s) until the publisher wrote `wanted` or failed to.
        Waiting never cancels the write itself: a request to a member that hangs must run
        into its own deadline, which makes the client fail over to another member (cancelled
        at PUBLISH_WAIT instead, it was retried on the same member: twice the delay)."""

        def settled() -> bool:
            failed = self._attempts > before and bool(self._export_error)
            return self._published == wanted or failed

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PUBLISH_WAIT), self._exported:
                await self._exported.wait_for(settled)
        if self._published != wanted:
            log.warning("exports not published yet: %s", self._export_error or "timeout")

    async def _collector(self) -> None:
        assert self._changes is not None
        async for _ in self._changes:
            try:
                await self._read()
            except WorldError as err:
                log.debug("collect: %s", err)
                continue
            if self._lost():
                self._publish.set()  # ours were changed or lost: write them again
            async with self._lock:
                if self._collected_signed()[1] != self._running:
                    self.on_change()

    def _lost(self) -> bool:
        """Whether this host's records, as last read, are neither what it published nor what
        it is writing now. The watch event of our own transaction often comes before its
        answer: it is no loss (once taken for one, it cost a second export per change)."""
        if self._published is None:
            return False
        mine = {r.key: r for r in self.records if r.host == self.host}
        return all(
            mine != {r.key: r for r in records}
            for records in (self._published, self._exporting)
            if records is not None
        )

    async def _publisher(self) -> None:
        delay = 0.05
        while True:
            await self._publish.wait()
            self._publish.clear()
            try:
                await self._export()
                await self._read()
                delay, error = 0.05, ""
            except WorldError as err:
                error = str(err)
            async with self._exported:
                self._attempts += 1
                self._export_error = error
                self._exported.notify_all()
            if error:
                log.debug("export: %s", error)
                await self.cluster.client.connected.wait()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._publish.set()


def write_kept(path: Path, records: list[Exported]) -> None:
    """Write `records` to `path` (atomically, durably, 0600; blocking)."""
    data = {
        "saved": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "records": [[r.key, r.to_json()] for r in records],
    }
    safefs.write_file(str(path), json.dumps(data).encode(), 0o600, parents=0o700)


def read_kept(path: Path) -> tuple[str, list[Exported]] | None:
    """When the records of `path` were kept, and the records (None: no such file; blocking;
    ValueError or WorldError if it is not one `write_kept` wrote; no link is followed)."""
    try:
        dir_fd = safefs.open_dir(str(path.parent))
    except FileNotFoundError:
        return None
    with safefs.closing(dir_fd):
        try:
            data = safefs.read_at(dir_fd, path.name, KEPT_MAX)
        except FileNotFoundError:
            return None
    if data is None:
        raise ValueError(f"larger than {KEPT_MAX} bytes")
    kept = json.loads(data)
    if not isinstance(kept, dict) or not isinstance(kept.get("records"), list):
        raise ValueError("not a list of exported records")
    records = [Exported.from_key(str(key), str(value)) for key, value in kept["records"]]
    return str(kept.get("saved", "?")), records
