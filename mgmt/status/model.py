"""What the status page and `mgmt status` show, kept up to date from the engine's events.

Per resource: its state (pending, applying, converged, differs, retrying, failed), its last
error and its last change; for a pending one, the dependencies it waits for and their states.
A bounded stream of recent events: each change a resource made (the line it logged: what
changed and why), with the repair latency from the watch event that caused it, and each
failure (latency: mgmt.status.latency). Per kind: counts and latency percentiles. Subscribers
(the page's server-sent events) get every update as it happens; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import watcher
from engine.engine import DEAD, FAILED, NEW, OK, PENDING, RETRYING, RUNNING
from engine.events import (
    CheckApplied,
    GraphSwapped,
    ReversalsChanged,
    VertexChanged,
    VertexFailed,
)
from engine.graph import Edge, Key, fmt_key
from engine.params import knows_secrets, redact_known
from engine.slices import sliced
from mgmt.listing import named, resource_count
from mgmt.status.latency import RepairClock

if TYPE_CHECKING:
    from engine.engine import Engine, Vertex

log = logging.getLogger("main")

EVENTS = 200  # recent events kept
EventParts = tuple[float, Key, str, str, float | None]  # StatusModel.events: see _event_dict
LATENCIES = 1000  # latencies kept per kind, for the percentiles
QUEUE = 1000  # updates a slow subscriber may lag behind before it is dropped
RUN = 5000  # keys sorted at once by StatusModel.encoded (~2-5 ms of the loop)

# differs: checked in noop mode (--noop, or its meta), found not in the desired state and left
# so (the log's "would change"): settled, not converged.
STATES = ("pending", "applying", "converged", "differs", "retrying", "failed")
SETTLED = ("converged", "differs")  # what a dependency is in once its dependents may run
# Failing: its last check or watch failed (a retry due or not): `mgmt status` exits 1 and its
# SINCE is when it began failing (the first failure of the streak, not its last retry).
FAILING = ("retrying", "failed")


# A vertex's status as a state (a stopping one shows its last outcome: see _changed).
_STATES = {
    NEW: "pending",
    PENDING: "pending",
    RUNNING: "applying",
    OK: "converged",
    RETRYING: "retrying",
    FAILED: "failed",
    DEAD: "failed",
}


_INSTANCES = "fs.inotify.max_user_instances"
_WATCHES = "fs.inotify.max_user_watches"


def _instances_hint(err: OSError) -> str:
    """What to raise when no inotify instance could be made (`err`, the hub's): the limit, its
    value now and one to set (engine.inotify.limit_hint), else the kernel's reason."""
    from engine import inotify

    hint = inotify.limit_hint("inotify_init1", err.errno or 0).removeprefix("; ")
    return hint or str(err.strerror)


@dataclass(slots=True)
class Info:
    """What the model knows of one resource beyond its vertex."""

    state: str = "pending"
    # When it entered `state`; for `retrying` and `failed`, when its failures began (the first
    # of the streak: a resource failing since 11:37 reads so at 11:43, not since its last retry)
    since: float = field(default_factory=time.time)
    failing_since: float = 0.0  # when its last check or watch that failed first did (0: none)
    error: str = ""
    last_change: str = ""
    last_change_at: float = 0.0


class StatusModel:
    """Observes an engine (see the module docstring). `close()` unsubscribes."""

    def __init__(self, engine: Engine, hostname: str) -> None:
        self.engine = engine
        self.hostname = hostname
        self.started = time.time()
        self.info: dict[Key, Info] = {}
        # Each as its parts (time, key, what, message, latency), made a dict when read
        # (_event_dict): one per file a first run creates, most never read.
        self.events: deque[EventParts] = deque(maxlen=EVENTS)
        self.latencies: dict[str, deque[float]] = {}
        self.converged_since: float | None = None
        self.clock = RepairClock()
        self.graph_version = 0  # bumped at each swap (the page redraws the picture)
        # What is wrong with the program ("": nothing): the host does not run what it was
        # asked to (agent.GraphSource.problem, a refused graph file). Program-level: set on
        # the program's events, never per resource.
        self.program_error = ""
        # The deploy this host runs, when it runs the cluster's deploys (None otherwise):
        # {"running": id (0: none yet), "warning": UNSIGNED, UNVERIFIED or "", "refused": a
        # deploy newer than the running one it refused (0: none), "error": why}. A refused
        # deploy is a failure, as a program error is: the host does not run what was pushed.
        self.deploy: dict[str, Any] | None = None
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._watchers: list[Callable[[], None]] = []  # on_change callbacks
        self.hosts: list[dict[str, Any]] = []  # every host of the cluster (mgmt.status.cluster)
        # Why those rows may be stale ("": they are not): the cluster has no quorum.
        self.cluster_note = ""
        # Why this host's etcd member cannot start ("": it runs, or runs none): its summary's
        # error when no resource has failed (mgmt.status.cluster.summary).
        self.member_error = ""
        self._changes = 0  # bumped at every change: the encoded snapshot is kept until then
        self._encoded: tuple[tuple[int, int, int], bytes] = ((-1, 0, 0), b"")
        self._unsubscribes: list[Callable[[], None]] = [
            engine.listeners.subscribe(VertexChanged, self._changed),
            engine.listeners.subscribe(CheckApplied, self._applied),
            engine.listeners.subscribe(VertexFailed, self._failed),
            engine.listeners.subscribe(GraphSwapped, self._swapped),
            engine.listeners.subscribe(
                ReversalsChanged,
                lambda _event: self._publish({"type": "reversals", "reversals": self.reversals()}),
            ),
        ]
        self._handler = _ChangeLog(self)
        logging.getLogger("engine").addHandler(self._handler)
        # The resources the kernel's inotify limit leaves unwatched (engine.watcher.unwatched):
        # their drift goes unseen until their next check. Failing, for `mgmt status`.
        self.unwatched: set[Key] = set()
        self.unwatched_limit = ""  # the limit that does it (the sysctl's name)
        self._unwatched_said = ""  # the last summary logged
        watcher.on_unwatched.append(self._unwatched_changed)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            watcher.on_unwatched.remove(self._unwatched_changed)
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        logging.getLogger("engine").removeHandler(self._handler)

    # what the engine tells -------------------------------------------------------------------

    def _changed(self, event: VertexChanged) -> None:
        """A vertex's state, from its status (a stopping one shows its last outcome)."""
        vertex = event.vertex
        info = self.info.get(vertex.key)
        if info is None:
            info = self.info[vertex.key] = Info()
        state = _STATES.get(vertex.status) or _STATES[vertex.outcome]
        if state == "converged" and vertex.changed_last and vertex.would_change:
            state = "differs"
        if state != info.state:
            failing = state in FAILING and info.failing_since
            info.state, info.since = state, info.failing_since if failing else time.time()
            if self._subscribers:
                self._publish({"type": "vertex", **self._vertex(vertex.key, info)})
            elif self._watchers:  # nobody reads the update: not built (3 a resource a run)
                self._touched()
            else:  # (what _touched() does then, without its call)
                self._changes += 1

    def _applied(self, event: CheckApplied) -> None:
        self._changes += 1
        vertex = event.vertex
        info = self._info(vertex.key)
        latency = self.clock.latency(event)
        # Its state is "applying" still: its outcome comes next (VertexChanged), with the error.
        if event.error is not None:
            info.error = _redacted(vertex, str(event.error))
            info.failing_since = info.failing_since or time.time()
            self._event(vertex, "error", info.error, None)
            return
        if vertex.outcome is not DEAD:  # else its watch failed for good meanwhile: that error
            info.error, info.failing_since = "", 0.0  # stays (a later good check cleared it)
        if latency is not None:
            kind = self.latencies.get(vertex.key[0])  # the resource's kind, no property call
            if kind is None:  # not setdefault(): a deque made per change, mostly thrown away
                kind = self.latencies[vertex.key[0]] = deque(maxlen=LATENCIES)
            kind.append(latency)
            self._event(vertex, "repaired", info.last_change or "changed", latency)

    def _failed(self, event: VertexFailed) -> None:
        """A watch or init() failed: its error and an event, as a failed check_apply's (a
        server that cannot bind showed `failed` with no error, no event)."""
        self._changes += 1
        info = self._info(event.vertex.key)
        info.error = _redacted(event.vertex, f"{event.where} failed: {event.error}")
        info.failing_since = info.failing_since or time.time()
        self._event(event.vertex, "error", info.error, None)

    def _swapped(self, event: GraphSwapped) -> None:
        if event.replaced is None:  # a full swap: what left (not a walk of the graph)
            self.clock.forget(event.gone)
        for key in event.removed | event.gone:
            self.info.pop(key, None)
        self.graph_version += 1
        self._publish({"type": "graph", "version": self.graph_version})
        # Each vertex of the new graph has told its state already (VertexChanged: the engine
        # tells those it kept, and a started one tells its own), before GraphSwapped.

    def _unwatched_changed(self) -> None:
        """The paths the kernel refused to watch changed: which resources they leave blind,
        said in the log (how many, the first ones) when that changed."""
        vertices = self.engine.vertices
        blind, refused = watcher.unwatched()
        now = {o for o in blind if isinstance(o, tuple) and o in vertices}
        none = watcher.no_instance()
        self.unwatched_limit = _INSTANCES if none is not None else _WATCHES if now else ""
        if now and none is not None:  # (said with its reason, once per change: not "watches")
            ids = [fmt_key(k) for k in sorted(now)]
            said = (
                f"no inotify instance left: {resource_count(len(now))} not watched until the "
                f"agent restarts, their drift unseen until they are checked again (`mgmt "
                f"status` marks them): {named(ids)}; {_instances_hint(none)}"
            )
        elif now:
            ids = [fmt_key(k) for k in sorted(now)]
            said = (
                f"out of inotify watches: {resource_count(len(now))} not watched, their drift "
                f"unseen until they are checked again (`mgmt status` marks them): {named(ids)}"
            )
        elif refused:
            said = (
                f"out of inotify watches: {refused:,} paths refused, each resource still "
                "watched (by its directory's watch)"
            )
        else:
            said = "every resource is watched again" if self._unwatched_said else ""
        if said != self._unwatched_said:
            log.log(logging.ERROR if now else logging.WARNING, "%s", said)
            self._unwatched_said = said
        if now != self.unwatched:
            self.unwatched = now
            self._publish({"type": "unwatched", "count": len(now)})

    def logged(self, key: Key, message: str) -> None:
        """A resource logged a change (what changed and why): kept as its last change."""
        info = self._info(key)
        info.last_change, info.last_change_at = redact_known(message), time.time()
        self._changes += 1

    def set_hosts(self, hosts: list[dict[str, Any]]) -> None:
        """Every host's row (mgmt.deploy.status.HostStatus, with its `state`), when clustered."""
        hosts = [_redacted_texts(host) for host in hosts]
        if hosts != self.hosts:
            self.hosts = hosts
            self._publish({"type": "hosts", "hosts": hosts})

    def set_cluster_note(self, note: str) -> None:
        """Say (on the page, in `mgmt status`) that the cluster has no quorum ("": it has)."""
        note = redact_known(note)
        if note != self.cluster_note:
            self.cluster_note = note
            self._publish({"type": "cluster", "note": note})

    def set_member_error(self, error: str) -> None:
        error = redact_known(error)
        if error != self.member_error:
            self.member_error = error
            self._touched()

    def set_program_error(self, error: str) -> None:
        error = redact_known(error)
        if error != self.program_error:
            self.program_error = error
            self._publish({"type": "program", "error": error})

    def set_deploy(self, deploy: dict[str, Any]) -> None:
        deploy = _redacted_texts(deploy)
        if deploy != self.deploy:
            self.deploy = deploy
            self._publish({"type": "deploy", "deploy": deploy})

    def set_converged(self, converged: bool) -> None:
        self.converged_since = time.time() if converged else None
        self._publish({"type": "converged", "converged": converged, "since": self.converged_since})

    # helpers -------------------------------------------------------------------------------

    def _info(self, key: Key) -> Info:
        info = self.info.get(key)
        if info is None:
            info = self.info[key] = Info()
        return info

    def _event(self, vertex: Vertex, what: str, message: str, latency: float | None) -> None:
        event = (time.time(), vertex.key, what, message, latency)
        self.events.append(event)
        if self._subscribers:
            self._publish({"type": "event", **_event_dict(event)})
        else:  # nobody reads the update: not built (one per file a first run creates)
            self._touched()

    def recent_events(self) -> list[dict[str, Any]]:
        """The recent events, oldest first, as the page and `mgmt status` read them."""
        return [_event_dict(event) for event in self.events]

    def _vertex(self, key: Key, info: Info) -> dict[str, Any]:
        vertex = {
            "id": fmt_key(key),
            "kind": key[0],
            "name": key[1],
            "state": info.state,
            "since": info.since,
            "error": info.error,
            "last_change": info.last_change,
        }
        if info.state == "pending":
            vertex["waits"] = self.waits(key)
        if self.unwatched and key in self.unwatched:
            vertex["unwatched"] = True
        running = self.engine.vertices.get(key)
        if running is not None and (healing := running.healing) and healing.timer is not None:
            vertex["next_check"] = healing.at  # failed, checked again on its own (engine.heal)
        if running is not None and info.state == "retrying":
            vertex.update(self._next_try(running))
        if running is not None and running.stats.churn:  # changed behind its back (engine.churn)
            vertex["churn"] = running.stats.churn
        return vertex

    def _next_try(self, vertex: Vertex) -> dict[str, float | int]:
        """A retrying resource's next attempt: when (`next_try`, a Unix time: now and what is
        left of the engine's wait, on the monotonic clock it keeps), and how many attempts are
        left after the failed one (`tries_left`, the log's `(2 left)`; -1: `retry: -1`, for
        ever). Before 2026-12-07 only the log said either; that day's first `next_try` was the
        last failure's wall-clock time and the meta delay: a suspend, a clock's step, a failure
        outside check_apply (a receive's, a reversal's) showed it in the past."""
        meta = vertex.res.meta
        doc: dict[str, float | int] = {}
        if (left := self.engine.retry_in(vertex.key)) is not None:
            doc["next_try"] = time.time() + left
        count = self.engine.retries.get(vertex.key, 0)
        doc["tries_left"] = -1 if meta.retry == -1 else max(0, meta.retry - count + 1)
        return doc

    def waits(self, key: Key) -> list[dict[str, str]]:
        """What a pending resource waits for: its dependencies not in their desired state
        (pending, applying, retrying or failed), each with its state."""
        preds = self.engine.graph.pred.get(key)
        if not preds:
            return []
        waits = []
        for pred in sorted(preds):
            info = self.info.get(pred)
            state = info.state if info is not None else "pending"
            if state not in SETTLED and pred in self.engine.vertices:
                waits.append({"id": fmt_key(pred), "state": state})
        return waits

    # readers -------------------------------------------------------------------------------

    def reversals(self) -> list[dict[str, str]]:
        """The reversals (meta reverse) that failed, of resources no longer in the graph: each
        `retrying` (its next attempt is due) or `failed` (kept for the next run), its error."""
        pending = self.engine.reverser.pending
        return [
            {
                "id": fmt_key(key),
                "state": "failed" if pending[key].due is None else "retrying",
                "error": redact_known(pending[key].error),  # the engine's: no resource's
            }
            for key in sorted(pending)
            if not self.engine.graph_has(key)
        ]

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-able data (`GET /api/status`, `mgmt status --json`), at once:
        `encoded()` makes its JSON without holding the loop."""
        tally = _Tally()
        vertices = [tally.add(self._vertex(k, self._info(k))) for k in sorted(self.engine.vertices)]
        return {
            **self._head(tally),
            "vertices": vertices,
            "edges": [_edge_dict(s, d, e) for s, d, e in self.engine.graph.edges()],
        }

    def _head(self, tally: _Tally) -> dict[str, Any]:
        """The snapshot but its vertices and edges, given their `tally`."""
        for kind, stats in tally.kinds.items():
            stats.update(percentiles(self.latencies.get(kind, ())))
        return {
            "host": self.hostname,
            "started": self.started,
            "converged": self.converged_since is not None,
            "converged_since": self.converged_since,
            "program_error": self.program_error,
            "reversals": self.reversals(),
            "deploy": self.deploy,
            "counts": tally.counts,
            "kinds": tally.kinds,
            "events": self.recent_events(),
            "graph_version": self.graph_version,
            "hosts": self.hosts,
            "cluster_note": self.cluster_note,
            "unwatched": len(self.unwatched),
            "unwatched_limit": self.unwatched_limit,
        }

    def _snapshot_key(self) -> tuple[int, int, int]:
        return (self._changes, id(self.engine.vertices), id(self.engine.graph))

    def snapshot_json(self) -> bytes:
        """snapshot() as JSON, encoded once per change however many clients ask: a 1,000
        resource snapshot takes tens of milliseconds of the event loop to build."""
        key = self._snapshot_key()
        if self._encoded[0] != key:
            import json  # here: a cron run serves no client (~5 M instructions of its start)

            self._encoded = (key, json.dumps(self.snapshot()).encode())
        return self._encoded[1]

    async def encoded(self) -> bytes:
        """snapshot_json() made in slices (engine.slices), the loop getting a turn between
        them: at 100,000 resources the snapshot took ~0.5-2 s of the loop at once (no drift
        repaired meanwhile). The vertices are those of the moment each slice is made (one
        removed meanwhile is left out), sorted in runs merged as they are encoded."""
        key = self._snapshot_key()
        if self._encoded[0] == key:
            return self._encoded[1]
        import json

        vertices, keys = self.engine.vertices, list(self.engine.vertices)
        runs = []
        for start in range(0, len(keys), RUN):
            runs.append(sorted(keys[start : start + RUN]))
            await asyncio.sleep(0)
        tally = _Tally()
        rows: list[bytes] = []  # each slice's, encoded: the whole is joined once, at the end
        edges: list[bytes] = []
        async for some in sliced(heapq.merge(*runs)):
            here = [k for k in some if k in vertices]
            if got := [tally.add(self._vertex(k, self._info(k))) for k in here]:
                rows.append(json.dumps(got)[1:-1].encode())
            succ = self.engine.graph.succ
            if got := [_edge_dict(k, d, e) for k in here for d, e in succ.get(k, {}).items()]:
                edges.append(json.dumps(got)[1:-1].encode())
        head = json.dumps(self._head(tally))[:-1].encode()  # without its "}"
        parts = [head, b', "vertices": [', *_commas(rows), b'], "edges": [', *_commas(edges)]
        self._encoded = (key, b"".join([*parts, b"]}"]))
        return self._encoded[1]

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` (on the loop, not blocking) after every update; returns the
        unsubscribe."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def _publish(self, update: dict[str, Any]) -> None:
        self._touched()
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:  # a reader that stopped reading: dropped (it reconnects)
                self._subscribers.discard(queue)

    def _touched(self) -> None:
        """Something changed: the encoded snapshot is stale, the on_change callbacks run."""
        self._changes += 1
        if self._watchers:  # none, mostly: no copy made (a few calls a resource in a run)
            for callback in list(self._watchers):
                callback()

    def subscribed(self, queue: asyncio.Queue[dict[str, Any]]) -> bool:
        return queue in self._subscribers

    @property
    def changes(self) -> int:
        """Bumped at every change (what a reader's cache of the model is kept until)."""
        return self._changes


def _redacted(vertex: Vertex, text: str) -> str:
    """An error's text with the secrets its resource received as "***" (ResourceLogger.redact),
    and every other the process knows (engine.params.hide_secret): the page is every local
    user's."""
    return redact_known(vertex.handle.logger.redact(text))


def _redacted_texts(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with the secrets the process knows as "***" in each of its texts (a deploy's
    refusal, a host's last error)."""
    if not knows_secrets():
        return row
    return {key: redact_known(v) if isinstance(v, str) else v for key, v in row.items()}


def _event_dict(event: EventParts) -> dict[str, Any]:
    """An event as the page and `mgmt status` read it."""
    created, key, what, message, latency = event
    return {
        "time": created,
        "id": fmt_key(key),
        "kind": key[0],
        "what": what,
        "message": message,
        "latency_ms": None if latency is None else round(latency * 1000, 3),
    }


class _Tally:
    """The snapshot's counts of vertices by state, and its kinds, as its rows are made."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(STATES, 0)
        self.kinds: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.counts[row["state"]] += 1
        self.kinds.setdefault(row["kind"], {"count": 0})["count"] += 1
        return row


def _commas(items: list[bytes]) -> list[bytes]:
    """`items` with b", " between them (to be joined with the rest at once)."""
    out = [b", "] * (2 * len(items) - 1) if items else []
    out[::2] = items
    return out


def _edge_dict(src: Key, dst: Key, edge: Edge) -> dict[str, Any]:
    return {"from": fmt_key(src), "to": fmt_key(dst), "notify": edge.notify}


def percentiles(values: Any) -> dict[str, float | None]:
    """p50, p90, p99 of latencies in seconds, as milliseconds (None without samples)."""
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}

    def at(q: float) -> float:
        return round(float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) * 1000, 3)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99)}


class _ChangeLog(logging.Handler):
    """The lines resources log at INFO and above: what they changed, and why (not what a
    server was asked: `ResourceLogger.traffic`)."""

    def __init__(self, model: StatusModel) -> None:
        super().__init__(logging.INFO)
        self.model = model

    def emit(self, record: logging.LogRecord) -> None:
        kind = getattr(record, "res_kind", None)
        if kind is None or getattr(record, "traffic", False):  # a request served: not a change
            return
        name = str(getattr(record, "res_name", ""))
        try:
            text = record.getMessage()
        except Exception:  # a bad format: the stderr handler says so, the resource goes on
            return
        message = text.removeprefix(f"{kind}[{name}]: ")
        self.model.logged((str(kind), name), message)

    def takes_lines(self) -> bool:
        """engine.handle.LineSink: emit_line is handle()'s work with this class."""
        return type(self) is _ChangeLog and not self.filters

    def emit_line(self, logger: str, created: float, kind: str, name: str, message: str) -> None:
        """A resource's INFO line, as emit() takes the record of it (under handle()'s lock)."""
        with self.lock:  # type: ignore[union-attr]  # createLock() made it
            self.model.logged((kind, name), message)
