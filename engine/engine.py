"""The executor: a worker task per vertex while it has work, a watch task for a kind that
watches with one, graph swaps without restarts.

Semantics (mgmt's):
- A vertex processes only after its watch sent the startup event, and only when every
  predecessor has processed successfully since the vertex's own last run (timestamps). If one
  has not, the vertex pokes it ("back-poke") and waits to be poked back. A run asked for by
  back-pokes only that changes nothing pokes back only those who asked (a diamond livelocked
  when it poked every successor).
- A watch event marks the vertex's state unknown; a poke from upstream does not. Processing a
  vertex whose state is known good (and that has no pending refresh) skips check_apply.
- After a successful process the vertex pokes its successors; a real change (check_apply
  returned False) also marks Refreshable targets of `notify` edges for refresh. A failure pokes
  nobody: it blocks the vertex's descendants and nothing else.
- A failure is retried `meta.retry` times (-1: forever) every `meta.delay` ms; then the vertex
  is failed until its next event, which buys it one more attempt. A failure whose cause may
  pass without an event (a full disk, a read-only remount: engine.heal) is also checked again
  on its own, on a backoff, until it passes.

A vertex's life is `Status`, moved along TRANSITIONS only (docs/engine.md, "A vertex's state").
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import itertools
import logging
import math
import resource
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import collector, watcher
from engine.autoedge import (
    AutoIndex,
    Owners,
    autoedge_steps,
    both_write,
    by_kind_steps,
    overwritten,
    owners_steps,
)
from engine.autogroup import autogroup, groupable_steps
from engine.churn import Churn
from engine.errors import EngineStopped, GraphError, ResourceError, interfered
from engine.events import (
    CheckApplied,
    GraphSwapped,
    Listeners,
    ReversalsChanged,
    VertexChanged,
    VertexFailed,
)
from engine.flag import Flag
from engine.graph import Edge, Graph, Key, fmt_key, key_of
from engine.handle import Handle, Shared
from engine.local import LocalValues
from engine.meta import sema_size
from engine.params import is_secret
from engine.ratelimit import TokenBucket
from engine.resource import (
    UID,
    Groupable,
    Listening,
    Received,
    Refreshable,
    Resource,
    Reversible,
    members,
    receive,
    same,
    same_group,
    twin,
)
from engine.reverse import Reverser, ReverseStore
from engine.slices import sliced, stepped
from engine.slots import Slots
from engine.steps import Steps, chunks, finish
from engine.stopgate import Gate, Stopped, Work
from engine.tasks import running_loop

if TYPE_CHECKING:
    from engine import heal
    from engine.program import ProgramRef
    from engine.smallswap import Small
    from engine.world import World

log = logging.getLogger("engine")


class Status(enum.Enum):
    """Where a vertex is in its life; the allowed moves are in TRANSITIONS."""

    __hash__ = object.__hash__  # by identity, in C: Enum's own hashes the name, in Python

    NEW = "new"  # created, init() not run yet
    PENDING = "pending"  # waiting for its startup event or for its predecessors
    RUNNING = "running"  # inside check_apply
    OK = "ok"  # its last process succeeded
    RETRYING = "retrying"  # failed, a retry is scheduled
    FAILED = "failed"  # failed and out of retries, until its next event
    DEAD = "dead"  # init() or its watch failed for good: failed until replaced or revived
    STOPPING = "stopping"  # stop() called: no new process starts, a running one may finish
    STOPPED = "stopped"  # its tasks ended and it was cleaned up


# The members as module constants, for the hot paths: in Python 3.11 a read of `Status.OK`
# goes through EnumType's __getattr__ slot (a bound method made and called, ~850 instructions
# against ~50 for a global), and a vertex's run and stop read ~50 of them.
NEW, PENDING, RUNNING = Status.NEW, Status.PENDING, Status.RUNNING
OK, RETRYING, FAILED, DEAD = Status.OK, Status.RETRYING, Status.FAILED, Status.DEAD
STOPPING, STOPPED = Status.STOPPING, Status.STOPPED

_RUN = frozenset({PENDING, RUNNING, OK, RETRYING, FAILED})
_OUTCOMES = frozenset({OK, RETRYING, FAILED, DEAD})
_INERT = frozenset({DEAD, STOPPING, STOPPED})  # a poke does nothing
NAMED = 3  # resources the stop's summary names (interrupted ones), then "and N more"
# status -> the statuses it may move to. Anything else is a bug (TransitionError).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    NEW: frozenset({PENDING, DEAD, STOPPING}),
    PENDING: _RUN | {DEAD, STOPPING},
    RUNNING: _OUTCOMES | {STOPPING},
    OK: _RUN | {DEAD, STOPPING},
    RETRYING: _RUN | {DEAD, STOPPING},
    FAILED: _RUN | {DEAD, STOPPING},
    DEAD: frozenset({PENDING, STOPPING}),  # PENDING: revived (SIGHUP: Engine.retry_failed)
    STOPPING: frozenset({STOPPED}),
    STOPPED: frozenset(),
}


class TransitionError(RuntimeError):
    """A vertex was asked to move between two statuses TRANSITIONS does not allow: a bug."""


# A failure repeated the same way (retrying for ever, a failed resource polled) is said once,
# then counted: a line with the count at most once this many seconds (Vertex._say_failure).
REPEAT_EVERY = 60.0
REWATCH_MIN, REWATCH_MAX = 0.05, 10.0  # seconds between restarts of a failing watch (doubling)


class Healing:
    """The checks on its own of a vertex failed with an error that may pass (engine.heal): the
    next one's timer, when it is due (wall clock, for `mgmt status`), the wait before it."""

    __slots__ = ("at", "checking", "group", "key", "timer", "wait", "why")

    def __init__(self, why: str) -> None:
        from engine import heal  # (a failure's module: a run whose resources pass never reads it)

        self.why = why  # what may pass (heal.PASSING): `the disk is full`
        self.key: tuple[str, int] | None = None  # its heal.Group's (heal.group_of), if any
        self.group: heal.Group | None = None
        self.wait = heal.HEAL_MIN
        self.at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.checking = False  # the check under way is this one's (not an event's)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class VertexStats:
    """A vertex's counters (what happened so far, not what state it is in). A class with
    slots, not a dataclass: one per vertex, made in a third of the instructions."""

    __slots__ = (
        "churn",
        "churn_told",
        "events",
        "events_checked",
        "last_event",
        "refreshes",
        "refreshes_seen",
        "repairs",
        "watch_starts",
    )

    def __init__(self) -> None:
        self.events = 0  # watch events (an event during check_apply voids its result)
        self.refreshes = 0  # refreshes received along notify edges...
        self.refreshes_seen = 0  # ... of which check_apply has seen this many
        self.watch_starts = 0  # times watch() was entered (proves that swaps keep it running)
        self.last_event = time.monotonic()  # monotonic time of the last event
        # Churn (engine.churn): `events` at the last check_apply, the times of the last repairs
        # of drift, whether their burst was told, and the repairs counted since.
        self.events_checked = 0
        self.repairs: deque[float] | None = None
        self.churn_told = False
        self.churn = 0

    def __repr__(self) -> str:
        return f"VertexStats(events={self.events}, watch_starts={self.watch_starts})"


class Vertex:
    """A running resource: its handle, its tasks (a worker while work is pending; a watch,
    unless it listens: Listening) and its scheduling state.

    Its state is `status` (moved only by `_set_status`, along TRANSITIONS; read-only elsewhere,
    a slot rather than a property: each listener reads it at each change), `outcome` (the
    result of its last process, kept while it stops), `ts` and `state_ok` (for scheduling),
    `stats` (counters), `started` (the startup event came), `busy` (in init() or processing:
    `wait_idle()`) and two flags (engine.flag: asyncio events, lighter): `ready` (init() ended,
    or it stopped) and `dirty` (a poke is pending).
    """

    __slots__ = (
        "_asked",
        "_idle",
        "_inited",
        "_unlisten",
        "_watch_task",
        "_work_task",
        "backpokers",
        "bucket",
        "busy",
        "changed_event",
        "changed_last",
        "dirty",
        "engine",
        "error",
        "forward",
        "handle",
        "healing",
        "key",
        "outcome",
        "poll_tick",
        "pristine",
        "ready",
        "received",
        "res",
        "sent",
        "started",
        "state_ok",
        "stats",
        "status",
        "ts",
        "work",
    )  # attributes in slots: read ~100 times per vertex and process, faster than a dict's

    def __init__(self, engine: Engine, res: Resource) -> None:
        self.engine = engine
        self.res = res
        self.key: Key = key_of(res)
        # As first given (before received values change params), for cmp() at the next swap.
        self.pristine = twin(res)
        if isinstance(res, Groupable) and isinstance(self.pristine, Groupable):
            self.pristine.grouped = [twin(g) for g in res.grouped]
        self.sent: dict[str, Any] = {}  # values published with handle.send()
        self.received: dict[str, bool] = {}  # params set by the last _receive: changed?
        self.status = NEW
        self.outcome = PENDING  # OK, RETRYING, FAILED or DEAD once it has processed
        self.ts = 0  # logical time of the last successful process (0 = never)
        self.state_ok = False  # mgmt's isStateOK: no event since the last good check_apply
        self.error: BaseException | None = None
        self.healing: Healing | None = None  # failed, checked again on its own (engine.heal)
        self.changed_last = False  # the last check_apply reported a change
        self.work: Work | None = None  # the running check_apply's (stopgate): refused if we stop
        # The work pending or running came from poll ticks only (a tick, or a poke from a tick
        # upstream that changed nothing): not activity for the converger unless it changes
        # something (mgmt resets its timer only then).
        self.poll_tick = False
        # Why the pending work was asked for: `forward` (an event, an upstream poke, a retry,
        # a refresh, a swap) or only back-pokes, from the successors in `backpokers` (and the
        # answers to our own back-pokes).
        self.forward = False
        self.backpokers: set[Vertex] = set()
        self._asked: tuple[bool, set[Vertex]] = (False, set())  # those of the run under way
        self.stats = VertexStats()
        self.dirty = Flag()
        self.started = False  # the startup event came: the worker may process (not an Event:
        # the worker waits for `dirty` alone, which the startup event sets too)
        # In init() or processing (a graceful stop waits until it is not: wait_idle()); the
        # event is made only for such a wait, and dropped when it ends.
        self.busy = False
        self._idle: asyncio.Event | None = None
        # meta limit: its token bucket (none without a limit: no coroutine per process)
        limited = not math.isinf(res.meta.limit)
        self.bucket = TokenBucket(res.meta.limit, res.meta.burst) if limited else None
        self.handle = Handle(
            kind=res.kind,
            name=res.name,
            hostname=engine.hostname,
            prefix=engine.prefix,  # var_dir: PREFIX/var/KIND/NAME, made when first asked for
            on_event=self._on_event,
            get_refresh=lambda: self.refresh_pending,
            on_send=self.sent.update,
            get_received=lambda: dict(self.received),
            world=engine.world,
            local=engine.local,
            shared=engine.shared,
            peers=lambda: list(engine.graph.vertices.values()),  # the graph of the moment
            program=engine.program,
        )
        self._work_task: asyncio.Task[None] | None = None  # start()'s
        self._watch_task: asyncio.Task[None] | None = None  # once init() succeeded...
        self._unlisten: Callable[[], None] | None = None  # ...or this, without a task (_listen)
        self._inited = False  # init() succeeded: cleanup() is owed
        self.ready = Flag()  # init() has ended (or the vertex stopped): see start()
        self.changed_event = VertexChanged(self)  # what Engine.changed tells (one, immutable)

    def __repr__(self) -> str:
        return f"<Vertex {fmt_key(self.key)} {self.status.value}>"

    @property
    def would_change(self) -> bool:
        """Its last check_apply, in noop mode (--noop or its meta), found a change it did not
        make: not left undone, nor in the desired state. Never so outside noop mode: there a
        change found is made (an event since, its own or not, leaves it to be checked)."""
        return (
            self.changed_last
            and (self.engine.noop or self.res.meta.noop)
            and not self.state_ok
            and self.ts > 0
            and not self.failed
        )

    @property
    def failed(self) -> bool:
        """Failed: out of retries (until its next event), or DEAD. Once it stops: whether its
        last process had failed so."""
        status = self.status
        if status is STOPPING or status is STOPPED:
            status = self.outcome
        return status is FAILED or status is DEAD

    @property
    def stopping(self) -> bool:
        return self.status in (STOPPING, STOPPED)

    @property
    def refresh_pending(self) -> bool:
        return self.stats.refreshes > self.stats.refreshes_seen

    def refresh(self) -> None:
        """A refresh along a notify edge: the next check_apply sees handle.refresh() == True."""
        self.stats.refreshes += 1
        self.poke()

    @property
    def name(self) -> str:
        return fmt_key(self.key)

    @property
    def shown(self) -> str:
        """The name in summaries: a vertex of grouped resources names them all, `pkg[sl,hello]`
        (its lines are logged under the first one's name)."""
        grouped = self.res.grouped if isinstance(self.res, Groupable) else ()
        if not grouped:
            return self.name
        return fmt_key((self.key[0], ",".join([self.key[1], *(r.name for r in grouped)])))

    # lifecycle -------------------------------------------------------------------------

    @property
    def _tasks(self) -> list[asyncio.Task[None]]:
        """Its tasks still running: its worker's, its watch's (none once it has stopped)."""
        return [t for t in (self._work_task, self._watch_task) if t is not None and not t.done()]

    def start(self) -> None:
        """Start the vertex's task: it init()s the resource, starts its watch task, then
        processes (`_work`). `ready` is set once init() has ended (or the vertex stopped)."""
        self._work_task = running_loop().create_task(self._run())

    async def _run(self, first: bool = True) -> None:
        """The worker's task: the `first` inits the resource and waits for its startup
        event; each processes what is pending, then ends (`_work`, `_wake`). An error that
        escapes it (a bug) is logged here, not by a done callback: a callback per vertex
        (TaskSet's) was one more step of the loop each."""
        try:
            if first and self.res.meta.hidden:  # ordered like any vertex, never applied
                self.started = True
                self.state_ok = True
                self._set_status(PENDING)
                self.ready.set()
                self.poke()
            elif first:
                if not await self._init():
                    return
                if not self.dirty.is_set():
                    # Its first run waits in this task for the startup event (a task more per
                    # vertex cost ~1/40 of a noop vertex's run); any later one starts its own.
                    await self.dirty.wait()
            await self._work()
        except Exception as err:
            log.error("%s: task work failed: %s", self.name, err, exc_info=err)

    def _wake(self) -> None:
        """Work is pending (`dirty` set): a worker's task runs it, if none runs now. Not before
        the startup event (the worker has nothing to do until then: it pokes again)."""
        task = self._work_task
        if (task is None or task.done()) and self.started:
            self._work_task = running_loop().create_task(self._run(first=False))

    def _working(self) -> bool:
        """Its worker's task runs (init(), a process, a retry's wait, or it is about to)."""
        task = self._work_task
        return task is not None and not task.done()

    def _spawn_watch(self, failures: int = 0) -> None:
        """Start its watch task (an error that escapes it is logged: `_watch_ended`)."""
        task = running_loop().create_task(self._watch(failures))
        task.add_done_callback(self._watch_ended)
        self._watch_task = task

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("%s: task watch failed: %s", self.name, err, exc_info=err)

    async def _init(self) -> bool:
        """init() the resource (a graceful stop waits for it as for a check_apply), then start
        its watch; False when init() failed or the vertex is stopping (stop() cleans up)."""
        self.busy = True
        try:
            try:
                res = self.res
                if type(res).init is Resource.init:  # its whole work, without its coroutine
                    res._handle = self.handle
                else:
                    await res.init(self.handle)
            except Exception as err:
                self._fail_permanently(err, "init")
                return False
            finally:
                self.busy = False  # (_not_busy(), without its call when nobody waits)
                if self._idle is not None:
                    self._not_busy()
            self._inited = True
            engine = self.engine
            if engine._first_pass is not None:  # (engine.progressed(), without its call)
                engine._first_progress = time.monotonic()
            if self.status is STOPPING or self.status is STOPPED:
                return False
            self._set_status(PENDING)
            if not self._listen():
                self._spawn_watch()
            return True
        finally:
            self.ready.set()

    def revive(self) -> None:
        """A DEAD vertex tries again (an operator's reload): its watch restarts, or its init()
        runs again if that is what failed; it is DEAD again if it fails again."""
        if self.status is not DEAD:
            return
        self.outcome = PENDING
        self.error = None
        self.engine.retries[self.key] = 0
        if not self._inited:  # init() failed: its task ended, run it again
            self.ready.clear()
            self.start()
            return
        self._set_status(PENDING)
        if not self._listen():
            self._spawn_watch()

    def _listen(self) -> bool:
        """Watch without a task (a Listening kind, or one with nothing to watch), and send the
        startup event; False when the resource watches with a watch() task instead."""
        res = self.res
        poll = res.meta.poll
        if poll < 0 or (
            poll == 0 and type(res).watch is Resource.watch and not isinstance(res, Listening)
        ):
            # Nothing to watch (noop, print...: the default watch() sends the startup event,
            # then waits until cancelled; `poll: -1` the same): no task, which cost a noop
            # vertex ~1/5 of its run (made, stepped twice, cancelled at the stop). The startup
            # event comes as the first step of that task would have: in the same place in the
            # loop's queue, so a graph's first checks keep their order. (A Listening kind that
            # keeps the default watch() still listens: its watch() is only the fallback.)
            self._unlisten = _unwatched
            self.stats.watch_starts += 1
            running_loop().call_soon(self._startup)
            return True
        if not isinstance(res, Listening) or poll != 0:
            return False
        late = self.engine._late
        if late is not None:
            # A one-shot run before its first change (Engine.watch_late): no watch yet, the
            # startup event as a watch's would come.
            late.append(self)
            self._unlisten = _not_yet
        elif not self._listen_now():
            return False
        # The startup event, in the loop's next step, as a watch task's first step sends it
        # (one callback for the vertices started in one step: a graph of files and kinds with
        # a task starts their first checks in another order than a graph of one kind).
        self.engine.start_later(self)
        return True

    def _listen_now(self) -> bool:
        """The Listening kind's watch put in place (no startup event); False when it must
        watch with a watch() task instead."""
        owner = watcher.OWNER.set(self.key)  # its watchers name it (watcher.unwatched())
        try:
            res = self.res
            assert isinstance(res, Listening)
            unlisten = res.listen(self._on_event, self._listen_failed)
        except Exception:
            return False  # its watch() task tries again: it fails or restarts as any watch
        finally:
            watcher.OWNER.reset(owner)
        if unlisten is None:
            return False
        self._unlisten = unlisten
        self.stats.watch_starts += 1
        return True

    def watch_now(self, again: bool) -> None:
        """A late vertex (Engine.watch_late) puts its watch in place; `again`: its state is
        unknown from now on (as at a watch's startup event), so it is checked again."""
        self._unlisten = None
        if not self._listen_now():
            self._spawn_watch()  # its startup event: checked again
            return
        if again:
            self._on_event()
        else:  # no check follows: what its watch left for one, it looks up now
            res = self.res
            assert isinstance(res, Listening)
            res.unchecked()

    def _checking(self) -> bool:
        """Inside its check_apply now (not waiting for a slot, nor done)."""
        work = self.work
        return self.status is RUNNING and work is not None and not work.over

    def _startup(self) -> None:
        if self._unlisten is not None:  # not stopped (nor failed) meanwhile
            self._on_event()

    def _listen_failed(self, err: Exception) -> None:
        """A watch without a task failed: as one in a task (_watch), which it becomes."""
        self._stop_listening()
        if self.stopping or not self._rewatch(err, 1):
            return
        self._spawn_watch(failures=1)

    def _rewatch(self, err: Exception, failures: int) -> bool:
        """Whether a watch that failed (for the `failures`th time) starts again: meta retry
        times (-1: forever), as mgmt's Worker restarts a failed Watch; else the vertex is DEAD
        (until a swap replaces it: meta rewatch, Engine.apply)."""
        retry = self.res.meta.retry
        if retry != -1 and failures > retry:
            self._fail_permanently(err, "watch")
            return False
        left = "forever" if retry == -1 else f"{retry - failures + 1} left"
        self.handle.logger.warning("watch failed, restarting (%s): %s", left, err)
        self.engine.listeners.emit(VertexFailed(self, err, "watch", hard=False))
        return True

    def _stop_listening(self) -> None:
        unlisten, self._unlisten = self._unlisten, None
        if unlisten is not None:
            unlisten()

    def _not_busy(self) -> None:
        self.busy = False
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    async def wait_idle(self) -> None:
        """Until the vertex is not busy (in init() nor processing) once."""
        if self.busy:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    async def stop(self, graceful: bool = True) -> None:
        """Stop watching; with graceful, let a running init() or check_apply finish; then
        cleanup (see stop_all, which stops many at once).

        Called again (a forced stop after a graceful one was cancelled), it finishes the job.
        """
        await stop_all([self], graceful)

    def _stopping(self) -> None:
        """Stop's first step: no new process starts, the watch is cancelled."""
        if self.status is not STOPPING:
            self._set_status(STOPPING)
        if self.work is not None:  # a check_apply whose work has not begun never begins it
            self.work.stop()
        self.handle.request_stop()  # work in progress that can end early does (exec: `sig`)
        if self.healing is not None:
            self._stop_healing()
        self._stop_listening()
        if self._watch_task is not None:
            self._watch_task.cancel()

    def _end_tasks(self, ended: list[asyncio.Task[None]]) -> None:
        """Stop's second step: its tasks end (cancelled, and added to `ended`): a watch, a
        worker in a retry's sleep or waiting for a slot. A vertex with no work pending has no
        worker (`_work`): the most of a graph once converged has nothing to end."""
        work, watch = self._work_task, self._watch_task
        if work is not None and not work.done():
            work.cancel()
            ended.append(work)
        if watch is not None and not watch.done():
            watch.cancel()
            ended.append(watch)

    async def _stopped(self) -> None:
        """Stop's last step, once its tasks have ended: cleanup (if init() succeeded), once."""
        if self._needs_cleanup():
            self._inited = False
            await self._cleanup()
        self._ended()

    def _ended(self) -> None:
        """_stopped() without the cleanup, for a vertex with none to wait for (no coroutine:
        see _needs_cleanup)."""
        self._inited = False
        self._watch_task = None
        self._set_status(STOPPED)
        self.ready.set()  # an apply() waiting for a vertex stopped before its task ran

    def release(self) -> None:
        """Once a swap has stopped this vertex and dropped it: break its reference cycles
        (its handle's callbacks and its event point back at it), so that reference counting
        frees it now. Else only a full collection did: 32 objects per vertex, frozen in the
        CLI's agent (engine/heap.py) until one walked the whole heap, 1-2 s of the loop at
        20,000 resources. Nothing tells about it afterwards (it is STOPPED: inert)."""
        self.handle.detach()
        del self.changed_event

    def _needs_cleanup(self) -> bool:
        """Whether _stopped() may have to wait for something (a resource's own cleanup())."""
        return self._inited and (
            type(self.res).cleanup is not Resource.cleanup or self.handle.has_cleanups()
        )

    async def _cleanup(self) -> None:
        try:
            await self.res.cleanup()
        except Exception:
            self.handle.logger.exception("cleanup failed")
        await self.handle.run_cleanups()

    def poke(self, tick: bool = False, by: Vertex | None = None, answer: bool = False) -> None:
        """Ask the worker to process (from upstream, a retry, a poll `tick`, a back-poke `by` a
        successor waiting for it, or the `answer` of a predecessor we back-poked).

        Work pending for poll ticks only is marked `poll_tick`; any other poke clears it.
        """
        if self.status in _INERT:
            return
        if by is not None:
            if self.busy and self.status is not NEW:
                # The run under way answers it (it ends with a newer ts): run again, a noop
                # check would say its `would ...` twice (a slow grouped pkg; tester7's notes).
                self._asked[1].add(by)
                return
            self.backpokers.add(by)
        elif not answer:
            self.forward = True
        if self.dirty.is_set():
            if not tick and self.poll_tick:
                self.poll_tick = False
                self.engine.changed(self)
            self._wake()  # (poked before its startup event: its worker starts now)
            return
        if tick and not self.poll_tick and self.status is RUNNING:
            tick = False  # a real change is being processed: this tick does not relabel it
        relabelled = tick is not self.poll_tick
        self.poll_tick = tick
        self.dirty.set()
        self._wake()
        # Pending work is news only to a vertex that is OK (it is no longer settled) or that
        # changed its label: any other status says all already (the startup event of each
        # vertex of a first run told nobody anything).
        if relabelled or self.status is OK:
            self.engine.changed(self)

    # tasks -------------------------------------------------------------------------------

    def _on_event(self, tick: bool = False) -> None:
        self.stats.last_event = time.monotonic()
        self.stats.events += 1
        self.state_ok = False
        if not self.started:
            self.started = True
            self.engine.progressed()
        self.poke(tick)

    async def _watch(self, failures: int = 0) -> None:
        """Run the resource's watch (or poll) until cancelled; a failure restarts it (see
        _rewatch) after meta delay ms, at least REWATCH_MIN s, doubling up to REWATCH_MAX while
        it keeps failing. `failures`: a watch without a task failed (_listen_failed)."""
        meta = self.res.meta
        backoff = REWATCH_MIN
        watcher.OWNER.set(self.key)  # in this task's context: its watchers name it
        if failures:
            await asyncio.sleep(max(meta.delay / 1000, backoff))
            backoff = min(backoff * 2, REWATCH_MAX)
        while True:
            self.stats.watch_starts += 1
            started = time.monotonic()
            try:
                if meta.poll > 0:
                    await self._poll(meta.poll)
                elif meta.poll < 0:  # once: the startup event, then nothing until stopped
                    await self.handle.event()
                    await asyncio.Future()
                else:
                    await self.res.watch()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                if not self._rewatch(err, failures):
                    return
                if time.monotonic() - started > REWATCH_MAX:
                    backoff = REWATCH_MIN  # it had been running fine: a fresh failure
                await asyncio.sleep(max(meta.delay / 1000, backoff))
                backoff = min(backoff * 2, REWATCH_MAX)

    async def _poll(self, interval: int) -> None:
        await self.handle.event()  # the startup event
        while True:
            await asyncio.sleep(interval)
            # A tick is activity for the converger only if its check_apply changes something
            # (as in mgmt, which resets its timer only then).
            self._on_event(tick=True)

    async def _work(self) -> None:
        """Process while work is pending, then end: the next poke starts a new task (`_wake`).
        A worker parked between two pokes (the most of a graph once converged) was a task and
        its coroutine kept per vertex (~2.6 KB), its park and wake-up a loop step and a future
        each, and the stop woke each one only to end it."""
        dirty = self.dirty
        while dirty.is_set():
            dirty.clear()
            if self.status in _INERT:
                if self.status is not DEAD:
                    return  # stopping
                self.engine.changed(self)  # poked before its watch failed for good: not dirty
                continue
            if not self.started:
                continue  # poked before its startup event, which pokes it again
            if self.bucket is not None:
                await self.bucket.acquire()
            # (No call for a vertex without predecessors: most of a graph of files.)
            stale = (
                self.engine.stale_predecessors(self) if self.engine.graph.pred.get(self.key) else ()
            )
            if stale:
                for vertex in stale:
                    if vertex.status not in (FAILED, RETRYING, DEAD):
                        vertex.poke(self.poll_tick, by=self)  # a failed one retries on its own
                self._set_status(PENDING)
                continue
            self._asked = (self.forward, self.backpokers)  # a poke from now on asks anew
            self.forward, self.backpokers = False, set()
            self.busy = True
            try:
                retry_in = await self._process()
            except Exception as err:  # outside check_apply (receive, reversal): still ours
                retry_in = self._failed(err)
            finally:
                if self.status is FAILED and not self.forward:
                    # Back-pokes (and their answers) that came while it ran ask nothing of a
                    # vertex failed for good: it waits for an event (an exec with retry 0
                    # that a successor back-poked as it ran ran twice).
                    self.dirty.clear()
                    self.backpokers = set()
                if not self.dirty.is_set():
                    self.poll_tick = False  # else it describes the work that is pending now
                self._not_busy()
            if retry_in is not None:
                await self.engine.retry_delay(self.key, retry_in)
                self.poke()

    # processing --------------------------------------------------------------------------

    async def _receive(self) -> None:
        """Copy values sent along incoming send/recv edges into params; a change voids state_ok.

        A sent value may be a function (e.g. file's content, read only when someone receives it).
        """
        self.received = {}
        new: dict[str, Received] = {}
        for sender, edge in self.engine.predecessors_with_edges(self):
            for send, recv in edge.sendrecv:
                if send not in sender.sent:
                    continue
                value = sender.sent[send]
                if callable(value):
                    value = await asyncio.to_thread(value)
                changed = getattr(self.res, recv) != value
                self.received[recv] = changed or self.received.get(recv, False)
                if changed:
                    secret = is_secret(type(sender.res).SENDS.get(send))
                    new[recv] = Received(value, f"{sender.name}.{send}", secret)
        if new:
            for got in new.values():
                if got.secret and isinstance(got.value, str):
                    self.handle.logger.hide(got.value)
            receive(self.res, new)  # checked and validated as the graph's own values
            self.state_ok = False
            for recv, got in new.items():
                self.handle.logger.info("received %s from %s", recv, got.origin)

    async def _process(self) -> float | None:
        """One check_apply (unless the state is known good); returns a retry delay or None."""
        meta = self.res.meta
        if meta.hidden:
            self.stats.refreshes_seen = self.stats.refreshes
            self._succeeded(changed=False)
            return None
        if self.engine.graph.pred.get(self.key):
            await self._receive()
        elif self.received:  # no predecessor: nothing received (and no coroutine to await)
            self.received = {}
        if self.state_ok and not self.refresh_pending:
            self._succeeded(changed=False)
            return None
        apply = not (self.engine.noop or meta.noop)
        if apply and meta.reverse:
            await self.engine.prepare_reversal(self)  # nothing is changed if it cannot be kept
        refreshes_before = self.stats.refreshes
        self._set_status(RUNNING)
        try:
            # A check of a vertex that has converged before (a drift's repair) goes ahead of
            # first checks (a first run's, a swap's): in the slots and the I/O threads' queue.
            async with self.engine.slot(meta.sema, urgent=self.ts != 0):
                if self.status is STOPPING or self.engine.gate.closed:
                    return None  # stopping while we waited for a slot: run nothing new
                # An event while we waited for the slot is older than the check: it sees it.
                events_before = self.stats.events
                with Work(self.engine.gate, self.ts != 0) as self.work:  # executor jobs: refused
                    if meta.timeout:  # once stopping
                        async with asyncio.timeout(meta.timeout / 1000):  # ms, as mgmt
                            result: Any = await self.res.check_apply(apply)
                    else:  # no Timeout context: ~5 us per check
                        result = await self.res.check_apply(apply)
            if not isinstance(result, bool):
                raise ResourceError(f"check_apply returned {result!r}, expected a bool")
        except asyncio.CancelledError:
            raise
        except Stopped:
            return None  # the engine stopped before its work began: not applied, no error
        except TimeoutError:
            return self._check_failed(apply, ResourceError(self._timed_out()))
        except Exception as err:
            return self._check_failed(apply, err)
        changed = not result
        if self._unlisten is _not_yet or (changed and apply and self.engine._late is not None):
            self._late_checked(changed and apply)  # (a one-shot run: Engine.watch_late)
        if listeners := self.engine._on_check:  # (Engine.check_applied(), without its call)
            applied = CheckApplied(self, apply, changed, None)
            for listener in list(listeners):
                listener(applied)
        if apply and meta.reverse:
            await self.engine.save_reversal(self)  # until it is stored (a failure retries)
        self.stats.refreshes_seen = refreshes_before  # one that came in meanwhile is pending
        # Known good, unless an event arrived meanwhile: then the next pass must check again.
        self.state_ok = (result or apply) and self.stats.events == events_before
        if changed and self.engine.graph.succ.get(self.key):  # no list built for none
            self._notify(apply)
        if log.isEnabledFor(logging.DEBUG):  # else not even its name is formatted
            log.debug("%s: check_apply(apply=%s) -> %s", self.name, apply, result)
        self._succeeded(changed)
        return None

    def _timed_out(self) -> str:
        """The failure of a check cut short by its meta timeout, with what it waited on where
        the resource knows (file: a file system that does not answer)."""
        why = f"check_apply timed out after {self.res.meta.timeout} ms (meta timeout)"
        waiting = getattr(self.res, "waiting_on", None)
        if waiting is not None and (what := waiting()):
            why = f"{why}: {what}"
        return why

    def _check_failed(self, apply: bool, err: BaseException) -> float | None:
        self.engine.check_applied(self, apply, None, err)
        if apply:  # it may have changed something: a one-shot run watches from now on
            self.engine.watch_late()
        if self._unlisten is _not_yet and self.engine._late is None and not self.stopping:
            _drained()
            self.watch_now(again=False)  # it checked as the first change came: its retry
        return self._failed(err)

    def _late_checked(self, changed: bool) -> None:
        """In a one-shot run (Engine.watch_late), a check that `changed` something (applied),
        or that ran unwatched."""
        engine = self.engine
        if changed and engine._late is not None:
            engine.watch_late()  # the first change: watched from now on (this one too)
        if self._unlisten is _not_yet and engine._late is None and not self.stopping:
            # It checked, unwatched, as the first change came (another's): it watches now,
            # and one that found its state good looks again, watched, if something may have
            # changed before the switch (what it found may predate that); one that changed
            # it knows it. Its own changes' events, queued already, are not its watch's.
            _drained()
            self.watch_now(again=not changed and engine._unsure)

    def _notify(self, apply: bool) -> None:
        """A change: the Refreshable targets of its `notify` edges are refreshed. A noop
        check's would-change refreshes nothing (mgmt's: no activity under noop), it says what
        it would refresh: a refresh under noop ran a noop exec's guard again at each of its
        predecessor's checks, and a guard that writes that predecessor's file, for ever."""
        for target, edge in self.engine.successors(self):
            if edge.notify and isinstance(target.res, Refreshable):
                if apply:
                    target.refresh()
                else:
                    self.handle.logger.info("would refresh %s", target.name)

    def _succeeded(self, changed: bool) -> None:
        if self.outcome is DEAD:
            return  # its watch failed for good: it stays failed, nothing downstream runs
        self.ts = next(self.engine._clock)  # (Engine.tick())
        self.changed_last = changed
        if self.handle.logger.repeats is not None:  # its lines are said again (ResourceLogger)
            self.handle.logger.repeats = None
        if self.outcome in (RETRYING, FAILED):
            self.handle.logger.info("recovered")
        if self.healing is not None:
            self._stop_healing(passed=True)
        if self.res.meta.retryreset:  # else the retries are spent for good (mgmt's)
            self.engine.retries.pop(self.key, None)
        self.error = None
        quiet = self.poll_tick and not changed  # a tick that changed nothing stays a tick
        # A run asked for by back-pokes only (and their answers) that changed nothing is news to
        # those who asked alone, and only an answer: the other successors have run since our
        # last run already. (Poking them all ran them again, and on a diamond the far vertex,
        # run before the near one, back-pokes us again: a livelock.)
        forward, askers = self._asked
        everyone = forward or changed
        successors = self.engine.successors(self) if self.engine.graph.succ.get(self.key) else ()
        for target, _edge in successors:
            # Before our own status: the converger sees them dirty first.
            if everyone:
                target.poke(quiet)
            elif target in askers:
                target.poke(quiet, answer=True)
        self._set_outcome(OK)

    def _failed(self, err: BaseException) -> float | None:
        if self.outcome is DEAD:
            return None
        if interfered(err):  # another changed what it was changing: an event its watch may miss
            self._on_event()
        meta = self.res.meta
        count = self.engine.retries.get(self.key, 0) + 1
        self.engine.retries[self.key] = count
        previous, self.error = self.error, err
        # again: it was failing already, with the same text or not (a timestamp, a temporary
        # path in a command's stderr: each differed, and each was said: tester15)
        again = self.outcome in (RETRYING, FAILED)
        if again and str(previous) != str(err):
            self.handle.logger.differed = True
        delay = meta.delay / 1000
        if meta.retry != -1 and count <= meta.retry:
            # Each failed attempt, one line (as mgmt logs each retry): its error, what is left.
            left = f"{meta.retry - count + 1} left"
            self.handle.logger.warning("failed, retrying in %gs (%s): %s", delay, left, err)
        elif meta.retry == -1:  # for ever: said once, then counted while it keeps failing
            self._say_failure(f"failed, retrying in {delay:g}s (forever)", err, again)
        else:  # out of retries; run again by an event, a poll or a heal, it may fail again
            self._failed_for_now(err, again and self.outcome is FAILED)
            self._set_outcome(FAILED)
            return None
        self._set_outcome(RETRYING)
        return delay

    def _failed_for_now(self, err: BaseException, again: bool) -> None:
        """Out of retries: said (`again`: it was failed already), and, when its error may pass
        by itself (engine.heal), checked again on its own later: HEAL_MIN s after the first
        such failure, twice as long after each of those checks that fails again, at most
        HEAL_MAX. The first is said with when; the checks that fail again at DEBUG only."""
        from engine import heal

        healing = self.healing
        poll = self.res.meta.poll
        why = heal.passes(err) if poll <= 0 or poll > heal.HEAL_MAX else None
        if why is None:  # nothing says it may pass (or its poll checks it soon enough)
            if healing is not None:
                self._stop_healing()
            self._say_failure("failed", err, again, logging.ERROR)
            return
        if healing is None:
            self.healing = healing = Healing(why)
            self._join_group(healing, err)
            self._say_failure("failed", err, False, logging.ERROR, heal.told())
        elif healing.checking:  # its own check failed: not said again (the first line said it)
            healing.why, healing.wait = why, heal.next_wait(healing.wait)
            healing.cancel()
            self.handle.logger.debug("failed again, checking again in %gs: %s", healing.wait, err)
        else:  # an event's check, while it was failed: its own check stays as it was due
            healing.why = why
            self._say_failure("failed", err, again, logging.ERROR)
        healing.checking = False
        if healing.timer is None:
            healing.at = time.time() + healing.wait
            healing.timer = running_loop().call_later(healing.wait, self._heal_now)

    def _heal_now(self) -> None:
        """A heal's check is due (_failed_for_now): a tick's poke (not activity for the
        converger unless it changes something). A vertex no longer failed (an event's check
        runs) is left to that check's end."""
        from engine import heal

        healing = self.healing
        if healing is None:
            return
        healing.timer = None
        if self.status is not FAILED:
            return
        group = healing.group
        if group is not None:
            now = time.monotonic()
            if now - group.probed_at < healing.wait or (
                group.last is self and len(group.members) > 1
            ):  # another checked for the group, or its turn was the last: skipped
                healing.wait = heal.next_wait(healing.wait)
                healing.at = time.time() + healing.wait
                healing.timer = running_loop().call_later(healing.wait, self._heal_now)
                return
            group.probed_at, group.last = now, self
        healing.checking = True
        self.poke(tick=True)

    def _join_group(self, healing: Healing, err: BaseException) -> None:
        """Its failure's heal.Group, joined (made if it is the first)."""
        from engine import heal

        path = getattr(self.res, "path", None) or self.res.name
        key = heal.group_of(healing.why, err, path if isinstance(path, str) else None)
        if key is None:
            return
        groups = self.engine.heal_groups
        group = groups.get(key)
        if group is None:
            groups[key] = group = heal.Group()
        group.members.add(self)
        healing.key, healing.group = key, group

    def _stop_healing(self, passed: bool = False) -> None:
        """No longer healing; `passed`: its check succeeded, so every other member of its group
        is checked at once (their cause has passed too, most likely)."""
        healing = self.healing
        if healing is None:
            return
        healing.cancel()
        self.healing = None
        group = healing.group
        if group is None:
            return
        group.members.discard(self)
        if group.last is self:
            group.last = None
        if not group.members:
            if self.engine.heal_groups.get(healing.key) is group:  # type: ignore[arg-type]
                del self.engine.heal_groups[healing.key]  # type: ignore[arg-type]
            return
        if passed:
            for other in list(group.members):
                if other.healing is not None and other.healing.timer is not None:
                    other.healing.cancel()
                    if other.status is FAILED:
                        other.healing.checking = True
                        other.poke(tick=True)

    def _say_failure(
        self,
        what: str,
        err: BaseException,
        again: bool,
        level: int = logging.WARNING,
        then: str = "",
    ) -> None:
        """`what: err` for a failure that may repeat for ever (tester11: 2,400 lines a second
        of `retry: -1, delay: 0`): the same failure again is said at DEBUG and counted, and
        once a REPEAT_EVERY seconds in one line with the count; from the first failure on,
        the resource's own INFO lines are said once while it keeps failing (ResourceLogger).
        Timing stays mgmt's (a fixed `delay` between attempts): only the log is bounded."""
        logger = self.handle.logger
        if logger.repeats is None:
            logger.repeats = set()
        now = time.monotonic()
        if not again:
            logger.again, logger.said_at, logger.differed = 0, now, False
            logger.log(level, "%s: %s%s", what, err, then)
        elif now - logger.said_at >= REPEAT_EVERY:
            times = logger.again + 1
            took = now - logger.said_at
            if logger.differed:  # not "the same": each said at DEBUG, the last one here
                line = "%s: again %d more times in %.0fs, the last: %s"
                logger.log(level, line, what, times, took, err)
            else:
                line = "%s: %s (the same %d more times in %.0fs)"
                logger.log(level, line, what, err, times, took)
            logger.again, logger.said_at, logger.differed = 0, now, False
        else:
            logger.again += 1
            logger.debug("%s again: %s", what, err)

    def _fail_permanently(self, err: BaseException, where: str) -> None:
        self.error = err
        self._stop_healing()
        self.handle.logger.error("%s failed: %s", where, err)
        self.engine.listeners.emit(VertexFailed(self, err, where, hard=True))
        self._set_outcome(DEAD)

    def _set_outcome(self, outcome: Status) -> None:
        """Record how the last process ended; the status follows unless the vertex is stopping
        (then the outcome is kept for the exit report, and nothing more is scheduled)."""
        self.outcome = outcome
        self.engine.processed(self, outcome is not OK)
        self._set_status(outcome)

    def _set_status(self, status: Status) -> None:
        """Move to `status` along TRANSITIONS and tell the listeners (also when unchanged: a
        status set again means the vertex was re-evaluated)."""
        old = self.status
        if status is not old:
            if status not in TRANSITIONS[old]:
                if old in (STOPPING, STOPPED) and status is not NEW:
                    return  # a process that ends while stopping: recorded in `outcome` only
                raise TransitionError(f"{self.name}: {old.value} -> {status.value} is not allowed")
            self.status = status
        listeners = self.engine._on_vertex  # (Engine.changed(self), without its call: 5 a run)
        if listeners:
            event = self.changed_event
            for listener in list(listeners):
                listener(event)


def _unwatched() -> None:
    """What stops the watch of a vertex with nothing to watch (Vertex._listen): nothing."""


def _not_yet() -> None:
    """What stops the watch of a late vertex (Engine.watch_late) not yet watching: nothing."""


def _drained() -> None:
    """The events the running loop's inotify instance has queued are dispatched now, to the
    watchers there are: a late vertex that watches once its check has changed something
    (Engine.watch_late) does not take those of its own changes for another's (the others'
    watches, in place since the switch, had them queued)."""
    hub = watcher.Hub.running()
    if hub is not None:
        hub.inotify.drain()


def _few(names: list[str], count: int | None = None) -> str:
    """At most NAMED of `names`, then how many more of `count` (all of `names` by default):
    the stop's summary lines, the swap's."""
    count = len(names) if count is None else count
    more = f" and {count - NAMED} more" if count > NAMED else ""
    return ", ".join(names[:NAMED]) + more


def _swapped_line(
    counts: tuple[int, int, int],
    changes: Iterable[tuple[str, Collection[Key]]],
    edges: tuple[Collection[Ends], Collection[Ends]],
) -> str:
    """The swap's log line: its counts (kept, stopped, started), then what changed, each named
    up to NAMED times ("and N more"): `changes` (what, keys), edges added (+) and removed (-)."""
    parts = [
        f"{what} {_few([fmt_key(k) for k in itertools.islice(keys, NAMED + 1)], len(keys))}"
        for what, keys in changes
        if keys
    ]
    added, removed = edges
    if added and removed:  # an edge of a changed vertex made again is rewired, not new nor gone
        both = set(added) & set(removed)
        if both:
            edges = ([e for e in added if e not in both], [e for e in removed if e not in both])
    for sign, ends in zip("+-", edges, strict=True):
        if ends:
            named = [f"{fmt_key(a)} -> {fmt_key(b)}" for a, b in itertools.islice(ends, NAMED + 1)]
            parts.append(f"edges {sign}{len(ends)} ({_few(named, len(ends))})")
    line = "graph swap: %d kept, %d stopped, %d started" % counts  # noqa: UP031
    return f"{line}: {'; '.join(parts)}" if parts else line


def _full_swap_line_steps(
    counts: tuple[int, int, int],
    gone: list[Key],
    added: list[Vertex],
    old: dict[Key, Vertex],
    raws: tuple[_Raw | None, _Raw],
) -> Steps[str]:
    """_swapped_line of a full swap, in steps (engine.steps): what it `added` is new or
    changed (in `old`), and the edges are those of the given graphs (`raws`: the last, this
    one), compared (O(edges), as the swap is O(N))."""
    new_keys = [v.key for v in added if v.key not in old]
    changed = [v.key for v in added if v.key in old]
    last, raw = raws
    edges: tuple[list[Ends], list[Ends]] = ([], [])
    if last is not None:
        edges = yield from _edges_changed_steps(last.succ, raw.succ)
    return _swapped_line(
        counts, (("removed", gone), ("added", new_keys), ("changed", changed)), edges
    )


def _edges_changed_steps(
    old: dict[Key, dict[Key, Edge]], new: dict[Key, dict[Key, Edge]]
) -> Steps[tuple[list[Ends], list[Ends]]]:
    """The edges in `new` and not `old` (successor maps of two given graphs), and the reverse,
    in steps (engine.steps)."""
    found: tuple[list[Ends], list[Ends]] = ([], [])
    for one, other, out in ((new, old, found[0]), (old, new, found[1])):
        for chunk in chunks(one.items()):
            yield
            for a, dsts in chunk:
                if dsts:
                    there = other.get(a, {})
                    out.extend((a, b) for b in dsts if b not in there)
    return found


def _lost_steps(
    kept: Iterable[Key], last: dict[Key, dict[Key, Edge]], now: dict[Key, dict[Key, Edge]]
) -> Steps[list[Key]]:
    """The `kept` vertices that lost a predecessor from the `last` predecessor maps to `now`
    (a full swap: one waiting for it is released), in steps (engine.steps)."""
    lost: list[Key] = []
    for chunk in chunks(kept):
        yield
        for key in chunk:
            if (was := last.get(key)) and not was.keys() <= now[key].keys():
                lost.append(key)
    return lost


def _marked_steps(vertices: dict[Key, Vertex]) -> Steps[tuple[set[Key], set[Key]]]:
    """The vertices with meta rewatch, and those with meta noop, in steps (engine.steps)."""
    rewatchers: set[Key] = set()
    noops: set[Key] = set()
    for chunk in chunks(vertices.items()):
        yield
        for key, vertex in chunk:
            meta = vertex.res.meta
            if meta.rewatch:
                rewatchers.add(key)
            if meta.noop:
                noops.add(key)
    return rewatchers, noops


async def stop_all(vertices: list[Vertex], graceful: bool = True) -> None:
    """Stop `vertices` together (Vertex.stop): each stops watching; with graceful, their
    running init()s and check_applies finish; their tasks end; then each is cleaned up. One
    wait for all their tasks, and a task of its own only for a cleanup that may wait (at
    10,000 files, a task per vertex stopped cost 10,000 tasks more). Each step in slices
    (engine/slices.py): the loop serves the rest between them."""
    vertices = [v for v in vertices if v.status is not STOPPED]
    async for some_vertices in sliced(vertices):
        for vertex in some_vertices:
            vertex._stopping()
    if graceful:
        for vertex in vertices:
            if vertex.busy:
                await vertex.wait_idle()
    tasks: list[asyncio.Task[None]] = []
    async for some_vertices in sliced(vertices):
        for vertex in some_vertices:
            vertex._end_tasks(tasks)
    if tasks:
        # Their cancellations run in the order they were asked: once the last has ended,
        # every other has taken its step, and most have ended too (a gather of them all
        # ran a callback of its own per task: 20,000 at a 10,000-file stop).
        await asyncio.wait([tasks[-1]])
        await asyncio.gather(*(t for t in tasks if not t.done()), return_exceptions=True)
    waits = []
    async for some_vertices in sliced(vertices):
        for vertex in some_vertices:
            if vertex._needs_cleanup():
                if vertex.status is not STOPPED:
                    waits.append(asyncio.ensure_future(vertex._stopped()))
            elif vertex.status is not STOPPED:
                vertex._ended()  # nothing to wait for: no task, nor coroutine, needed
    await asyncio.gather(*waits)


async def _kinds(started: list[Vertex], stopped: list[Vertex]) -> tuple[tuple[str, int], ...]:
    """How many resources of each kind (grouped ones included) `started` hold, less those
    `stopped` held (as first given: autogroup may have set the group of a resource given
    again since), for the kinds whose count changed; in slices (engine/slices.py)."""
    counts: Counter[str] = Counter()
    for vertices, sign in ((started, 1), (stopped, -1)):
        async for some in sliced(vertices):
            for vertex in some:
                counts[vertex.pristine.kind] += sign
                for member in members(vertex.pristine):
                    counts[member.kind] += sign
    return tuple((kind, count) for kind, count in counts.items() if count)


async def _start(vertices: list[Vertex]) -> None:
    """Start `vertices` (in slices: engine/slices.py) and wait until each has run init() (or
    stopped)."""
    async for some_vertices in sliced(vertices):
        for vertex in some_vertices:
            vertex.start()
    for vertex in vertices:
        if not vertex.ready.is_set():  # at most a few waits: the others are ready by then
            await vertex.ready.wait()


def _release(vertices: Iterable[Vertex]) -> None:
    """Poke the vertices that lost a predecessor in a swap and wait (PENDING): one waiting for
    it runs now (mgmt: a removed edge no longer holds its target back)."""
    for vertex in vertices:
        if vertex.status is PENDING:
            vertex.poke()


# First checks (of vertices that never succeeded) at once while the loop is busy (engine.slots'
# window): few enough that what they ready on the loop at once leaves its turns short for a
# drift's repair; 64 cost a 1,000-file first run ~12% more CPU than no window (more, smaller
# batches of replies and turns), 128 ~4% (docs/benchmarks.md, "2026-12-05, late").
FIRST_CHECKS = 128


def check_limit() -> int:
    """How many check_applies may run at once: a quarter of the descriptors the process may
    open. A check may hold descriptors (a file's directory) while it waits for an I/O thread:
    100,000 file resources checked at once used up 20,000 descriptors (EMFILE, then retries)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(16, soft // 4)


@dataclass(frozen=True)
class _GcState:
    """What the engine did to the garbage collector."""

    paused: bool  # the engine disabled the collector
    frozen: bool  # the engine froze what lived after the first pass


_NO_GC_STATE = _GcState(paused=False, frozen=False)
# The collector's pause during a first pass ends once no vertex took a first step (its start,
# its startup event, its first outcome: a few per vertex, so a poll does not count) for this
# long, whatever still runs (an exec whose command never ends must not keep it off for the life
# of the daemon). Measured from the last such step, not from the start: a first pass of 50,000
# files lasts minutes, and collections from the 30th second on took 16 of its 69 s of user CPU.
FIRST_PASS_GC_BOUND = 30.0


# (base, keys): a graph is `base` with only the resources of `keys` replaced, added or removed,
# and only edges between two of `keys` connected or disconnected (Engine.apply).
Since = tuple[Graph, frozenset[Key]]
Ends = tuple[Key, Key]
RELOAD_GAP = 1.0  # seconds after a failure before a reload may run its retry (retry_delay)


class _RetryWait:
    """A retry waiting for its meta delay (Engine.retry_delay): `cut` is set by a reload, `at`
    is when it runs (time.monotonic()), `soonest` the earliest a reload may make it."""

    __slots__ = ("at", "cut", "soonest")

    def __init__(self, cut: asyncio.Future[None], now: float, delay: float) -> None:
        self.cut = cut
        self.at = now + delay
        self.soonest = now + min(delay, RELOAD_GAP)


SMALL = 64  # vertices added or removed that Engine.apply looks for without `since`


@dataclass(frozen=True)
class _Raw:
    """The last graph given to Engine.apply (as given: before prepare() added to a copy). Its
    maps are read through it: a front-end that derives its next graph from it changes them in
    place, and the graph's maps then read as they were (engine.derive.derive)."""

    graph: Graph
    name: str

    @property
    def vertices(self) -> dict[Key, Resource]:
        return self.graph.vertices

    @property
    def succ(self) -> dict[Key, dict[Key, Edge]]:
        return self.graph.succ

    @property
    def pred(self) -> dict[Key, dict[Key, Edge]]:
        return self.graph.pred


def _same_edges(graph: Graph, last: _Raw, keys: Iterable[Key]) -> bool:
    """Whether `graph` has the edges of `last` given, the vertices `keys` (added or removed)
    having none."""
    if any(
        graph.succ.get(k) or graph.pred.get(k) or last.succ.get(k) or last.pred.get(k) for k in keys
    ):
        return False
    succ = dict(last.succ)
    for key in keys:
        if key in succ:
            del succ[key]
        else:
            succ[key] = {}
    return graph.succ == succ


def verify(graph: Graph, found: Owners | None = None) -> Owners:
    """What a graph must be before it runs, whatever made it: no cycle, no two resources
    managing the same thing (`engine.autoedge.owners`, returned; `found`: the providers that
    add_autoedges found), one size per semaphore. GraphError if not. `prepare()` runs it after
    the automatic edges and groups."""
    return finish(verify_steps(graph, found))


def verify_steps(
    graph: Graph, found: Owners | None = None, sizes: dict[str, int] | None = None
) -> Steps[Owners]:
    """verify() in steps (engine.steps); `sizes` is given each semaphore's size."""
    yield from graph.check_steps()
    found = yield from owners_steps(graph, found)
    for path, writer, editor in overwritten(graph):
        raise GraphError(both_write(path, writer, editor))
    yield
    first: dict[str, tuple[int, Resource]] = {}
    for chunk in chunks(graph):
        yield
        for res in chunk:
            if not res.meta.sema:
                continue  # most resources: no generator
            for name, size in (sema_size(entry) for entry in res.meta.sema):
                was, by = first.setdefault(name, (size, res))
                if was != size:
                    raise GraphError(
                        f"semaphore {name!r} has size {was} in {by} but {size} in {res}"
                    )
    if sizes is not None:
        sizes.update((name, size) for name, (size, _res) in first.items())
    return found


class Engine:
    """Runs a Graph; `apply(graph)` starts the first graph and swaps in every later one."""

    def __init__(
        self,
        *,
        hostname: str,
        prefix: Path,
        noop: bool = False,
        sema: int = 0,
        world: World | None = None,
        autoedges: bool = True,
        autogroup: bool = True,
        max_checks: int = 0,
        local: LocalValues | None = None,
        program: ProgramRef | None = None,
        late_watches: bool = False,
    ) -> None:
        """`late_watches`: a one-shot run (`--converged-timeout=0`): the Listening kinds
        watch from the run's first change on (`watch_late`), not from their start."""
        self.hostname = hostname
        self.program = program  # the running program's files, for resources (engine.program)
        self.autoedges = autoedges
        self.autogroup = autogroup
        self.reversals = ReverseStore(prefix)
        self.listeners = Listeners()  # the converger, metrics, tests: see engine/events.py
        # Undoes what left the graph (meta reverse), retries and counts its failures.
        self.reverser = Reverser(self.reversals, self.listeners, self.graph_has, noop)
        # Live listener lists for the hot path (pokes, check_applies): no event built for nobody.
        self._on_vertex = self.listeners.of(VertexChanged)
        self._on_check = self.listeners.of(CheckApplied)
        Churn(self.listeners)  # a resource something else keeps changing: told (engine.churn)
        self.prefix = prefix
        self.noop = noop
        self.world = world
        # values shared with the language (engine.local): the agent's, made before the program
        self.local = local if local is not None else LocalValues(prefix)
        self.shared = Shared()  # the resources' shared clients, closed by stop()
        self.graph = Graph()
        self.vertices: dict[Key, Vertex] = {}
        # Failures counted against meta retry, by kind+name: a swap that changes the resource
        # keeps its count unless its meta reset (mgmt's MetaState); dropped when it leaves.
        self.retries: dict[Key, int] = {}
        # The retries waiting for their meta delay, each cut short by an operator's reload
        # (retry_failed): there only while one waits (a failure's, never a run's hot path).
        self._retry_waits: dict[Key, _RetryWait] = {}
        self.heal_groups: dict[tuple[str, int], heal.Group] = {}  # (Vertex._join_group)
        self._semas: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._global_sema = Slots(sema) if sema > 0 else None
        # check_applies at once (0: from the descriptor limit, see check_limit()); first checks
        # through a window of FIRST_CHECKS (engine.slots).
        self._checks = Slots(max_checks or check_limit(), FIRST_CHECKS)
        self.gate = Gate()  # closed by stop(): check_applies not begun then never begin
        self._clock = itertools.count(1)
        self._startups: list[Vertex] = []  # listening vertices owed their startup event
        # A one-shot run's Listening vertices not watching yet (`watch_late`); None once they
        # watch, or in a run that watches from the start.
        self._late: list[Vertex] | None = [] if late_watches else None
        if late_watches:  # a check begins a change (Handle.changing); under --noop, only a
            # command that may change anything (exec's guards) says so: no would-change does
            self.shared.changing = self._changing
        if late_watches and not noop:  # a reversal done or failed is a change too
            self.listeners.subscribe(ReversalsChanged, self._reversed)
        # Whether something may have changed before the switch (watch_late), unseen.
        self._unsure = True
        self._raw: _Raw | None = None  # the last graph as given, before prepare()
        self._first_pass: set[Key] | None = (
            None  # the started vertices yet to process (_track_pass)
        )
        self._rewatchers: set[Key] = set()  # vertices with meta rewatch
        self._noops: set[Key] = set()  # vertices with meta noop (`would_change`)
        self._gc = _NO_GC_STATE  # what _pause_gc() changed, for _gc_resume()
        self._gc_bound: asyncio.TimerHandle | None = None  # ends the pause (FIRST_PASS_GC_BOUND)
        self._first_progress = 0.0  # loop time of the first pass's last first outcome
        # The automatic edges' UIDs of the last graph as given (made by prepare(), then kept
        # up to date by small swaps).
        self._autoindex: AutoIndex | None = None
        # Who manages each UID of the last prepared graph, per kind (engine.autoedge.by_kind;
        # made by prepare(), then kept up to date by small swaps: `smallswap._reclaim`).
        self._owners: dict[tuple[str, UID], Key] | None = None
        # Who provides each UID to automatic edges (the first, in graph order; also what the
        # others manage), as prepare() found it, small swaps adding what they add: read only
        # for a UID one resource provides, and checked then (`smallswap._asking`). None: not known.
        self._providers: Owners | None = None
        # The last prepared graph has a resource autogroup could group: a path between two
        # may decide whether it does, so no edge changes without preparing again.
        self._groupable = False
        # Each semaphore's size in the last prepared graph (verify()'s; kept by small swaps;
        # None: made again from the running graph when asked, `smallswap._sema_fits`).
        self._sema_sizes: dict[str, int] | None = None
        # The resources of the last graph as given that autogroup may group, in its order
        # (prepare()'s; kept by small swaps; None: not known, `smallswap._regrouped`).
        self._candidates: dict[Key, Groupable] | None = None
        self._swapping = asyncio.Lock()  # held by a swap (apply)
        self._closing = False  # stop() was called: no graph is applied from then on
        # The resources of a graph a swap accepted and has not put in place yet (stop()'s
        # summary: a stop then leaves it unapplied, which the vertices there are do not show).
        self._incoming = 0

    def tick(self) -> int:
        return next(self._clock)

    def graph_has(self, key: Key) -> bool:
        """Whether the running graph has the resource `key`."""
        return key in self.vertices

    def start_later(self, vertex: Vertex) -> None:
        """Send `vertex`'s startup event in the loop's next step (one callback for all the
        vertices started in this one)."""
        if not self._startups:
            asyncio.get_running_loop().call_soon(self._send_startups)
        self._startups.append(vertex)

    def _send_startups(self) -> None:
        startups, self._startups = self._startups, []
        for vertex in startups:
            vertex._startup()

    def _changing(self, handle: Handle) -> None:
        self.watch_late(before=handle)

    def _reversed(self, _event: ReversalsChanged) -> None:
        if self._late is not None and (self.reverser.changes or self.reverser.pending):
            self.watch_late()

    def watch_late(self, before: Handle | None = None) -> None:
        """A one-shot run's first change: every late vertex (a Listening kind started before
        it, Vertex._listen) puts its watch in place; every vertex started from now on watches
        from its start (docs/engine.md, "A one-shot run's watches"). The switch comes as the
        check of the resource of handle `before` begins to change something (Handle.changing:
        nothing has changed yet), or once a change is over (a check_apply with apply that
        changed something or failed, a reversal done or failed). After a change, or when other
        checks were under way (they may have changed something unseen), each
        vertex checked before the switch is checked again, watched: the change may have been
        to what it found good. All in this step of the loop: no vertex is left settled and
        unwatched for the converger to count."""
        late, self._late = self._late, None
        self.shared.changing = None
        if not late:
            return
        if before is not None:
            self._unsure = any(
                v._checking() and v.handle is not before for v in self.vertices.values()
            )
        log.debug("first change: %d resources watched from now on", len(late))
        for vertex in late:
            if vertex._unlisten is not _not_yet:
                continue  # stopped meanwhile
            if vertex._checking():
                # Inside its check, unwatched: it watches once that ends (_late_checked;
                # a watch now would take its own write for another's change).
                continue
            # One checked before (what it found may predate the change): checked again, as
            # after a watch's startup event. One waiting for its check is checked watched.
            again = self._unsure and vertex.ts > 0 and vertex.status is not RUNNING
            vertex.watch_now(again=again)

    def changed(self, vertex: Vertex) -> None:
        """Tell the listeners that `vertex` (re)set its status or was poked (see poke())."""
        if self._on_vertex:
            event = vertex.changed_event
            for listener in list(self._on_vertex):
                listener(event)

    def check_applied(
        self, vertex: Vertex, apply: bool, changed: bool | None, error: BaseException | None
    ) -> None:
        """Tell the listeners how a check_apply ended."""
        if self._on_check:
            event = CheckApplied(vertex, apply, changed, error)
            for listener in list(self._on_check):
                listener(event)

    # graph queries used by the workers ------------------------------------------------

    def predecessors(self, vertex: Vertex) -> list[Vertex]:
        preds = self.graph.pred.get(vertex.key, {})
        return [self.vertices[k] for k in preds if k in self.vertices]

    def predecessors_with_edges(self, vertex: Vertex) -> list[tuple[Vertex, Edge]]:
        preds = self.graph.pred.get(vertex.key, {})
        return [(self.vertices[k], e) for k, e in preds.items() if k in self.vertices]

    def successors(self, vertex: Vertex) -> list[tuple[Vertex, Edge]]:
        succs = self.graph.succ.get(vertex.key, {})
        return [(self.vertices[k], e) for k, e in succs.items() if k in self.vertices]

    def stale_predecessors(self, vertex: Vertex) -> list[Vertex]:
        """Predecessors that have not processed successfully since `vertex` last did."""
        if not self.graph.pred.get(vertex.key):
            return []
        return [p for p in self.predecessors(vertex) if p.ts <= vertex.ts]

    def blocked(self, vertex: Vertex) -> bool:
        """Some ancestor of `vertex` is failed, so it cannot run."""
        if vertex.key not in self.graph.pred:
            return False
        return any(
            self.vertices[k].failed for k in self.graph.ancestors(vertex.key) if k in self.vertices
        )

    def slot(
        self, names: list[str], urgent: bool = False
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """What a check_apply holds: `locks` for a vertex with named semaphores or with the
        global semaphore (--sema), else just a check_apply slot (no exit stack: one per
        process). `urgent`: taken ahead of the others waiting (engine.slots)."""
        if names or self._global_sema is not None:
            return self.locks(names, urgent)
        return self._checks.urgent() if urgent else self._checks

    @contextlib.asynccontextmanager
    async def locks(self, names: list[str], urgent: bool = False) -> AsyncIterator[None]:
        """Hold the global semaphore (--sema) and the named ones, in a fixed order, then a
        check_apply slot (innermost: a vertex waiting for a named semaphore holds no slot).
        `urgent`: the global semaphore and the slot are taken ahead of the others waiting (a
        named semaphore is first come, first served)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._global_sema is not None:
                sema = self._global_sema
                await stack.enter_async_context(sema.urgent() if urgent else sema)
            for key in sorted(sema_size(entry) for entry in names):
                # Keyed by name and size, as mgmt keys them (`name:size`): a swap that gives
                # a semaphore another size (all its holders: verify() refuses two) makes a
                # new one, whose size holds from then on (those holding the old one release
                # it); before 2026-12-06 the first size seen held for the engine's life.
                sem = self._semas.get(key)
                if sem is None:
                    sem = self._semas[key] = asyncio.Semaphore(key[1])
                await stack.enter_async_context(sem)
            await stack.enter_async_context(self._checks.urgent() if urgent else self._checks)
            yield

    # graph lifecycle ----------------------------------------------------------------------

    def prepare(self, graph: Graph) -> None:
        """Add automatic edges and merge groups (in place), then check cycles and semaphores."""
        finish(self.prepare_steps(graph))

    def prepare_steps(self, graph: Graph) -> Steps[None]:
        """prepare() in steps (engine.steps): a full swap runs them on the loop, a turn given
        between them (`_swap`). `graph` is the swap's own copy: nothing else changes it."""
        index = AutoIndex() if self.autoedges else None
        self._autoindex = None
        self._owners = None
        self._providers = None
        self._sema_sizes = None
        self._candidates = None
        found: Owners | None = None
        if index is not None:
            found = Owners()
            # GraphError if two resources manage one thing
            yield from autoedge_steps(graph, index, found)
        groupable = False
        candidates: list[Groupable] = []
        before: list[tuple[Groupable, list[Resource]]] = []
        if self.autogroup:
            candidates = yield from groupable_steps(graph)
            if candidates:  # (at once: it sets the groups of resources that may be running)
                before = [(res, res.grouped) for res in candidates]
                autogroup(graph, candidates)
                groupable = True
        try:
            sizes: dict[str, int] = {}
            found = yield from verify_steps(graph, found, sizes)
            self._owners = yield from by_kind_steps(found)
        except BaseException:  # refused (or the swap cancelled): running groups as they were
            for res, grouped in before:
                res.grouped = grouped
            raise
        self._autoindex = index
        self._sema_sizes = sizes
        self._candidates = {key_of(res): res for res in candidates} if self.autogroup else {}
        self._providers = found if index is not None else None
        self._groupable = groupable

    async def apply(
        self,
        graph: Graph,
        since: Since | None = None,
        accepted: Callable[[], None] | None = None,
    ) -> None:
        """Run `graph`: unchanged vertices keep running, removed stop, new ones start.

        `graph` is left as given (the engine prepares and runs a copy, `self.graph`); its
        caller must not change it afterwards, but give a new graph. A resource object given
        again (the front-ends hand back the very objects of unchanged resources) is kept on an
        identity check; any other is compared with cmp(). When the new graph has the same
        vertices and edges as the last one and differs only in resources whose automatic edges,
        group and semaphores are unchanged, the swap costs O(change): the prepared graph is
        reused and only those vertices are replaced (`_small_swap`). `since` (base, keys) says
        that `graph` is `base`, the graph given last, with only the resources of `keys` replaced
        (the caller vouches for it): then not even the kept resources are looked at.
        `accepted` is called once the graph is checked, before anything of it runs (not when
        a GraphError refuses it). A whole graph is prepared in steps, the loop given turns
        between them (`prepare_steps`); one swap runs at a time: another asked for meanwhile
        waits for it.
        """
        async with self._swapping:  # one swap at a time (its preparation gives turns)
            self._refuse_if_stopping()
            self._gc_resume()
            self._pause_gc()
            self._incoming = len(graph.vertices)
            try:
                await self._swap(graph, since, accepted)
            except BaseException as err:
                self._gc_resume()
                if self._incoming and isinstance(err, (asyncio.CancelledError, EngineStopped)):
                    self._unapplied()
                raise
            finally:
                self._incoming = 0

    def _unapplied(self) -> None:
        """A swap cut short by the stop (its task cancelled, or the engine stopping) before
        its graph was put in place: said, as the stop's summary says what it left undone of
        the running graph (opsuser, 2026-12-06: `graph file changed: swapping in the new
        graph`, then a clean exit, and nothing said the new graph was not applied)."""
        log.info(
            "stopped during a graph swap: the new graph (%d resource%s) was not put in place; "
            "the next run applies it",
            *(self._incoming, "s" * (self._incoming != 1)),
        )

    def _refuse_if_stopping(self) -> None:
        """A graph is not applied once stop() was called: stop() stops the vertices there
        are; one started after it would run on (its watch, its retries) in a stopped engine."""
        if self._closing:
            raise EngineStopped("the engine is stopping: the graph is not applied")

    async def _swap(
        self, graph: Graph, since: Since | None, accepted: Callable[[], None] | None
    ) -> None:
        """apply()'s work, the collector paused (`_pause_gc`)."""
        # meta rewatch (mgmt's): a vertex failed for good is replaced, changed or not.
        rewatch = {k for k in self._rewatchers if self.vertices[k].failed}
        small = None if rewatch else self._small_swap(graph, since)
        if small is not None:
            if accepted is not None:
                accepted()
            await self._swap_replaced(graph, small)
            return
        raw = _Raw(graph, graph.name)
        # Prepared on the loop in steps, a turn given between them: the running graph runs on
        # meanwhile (a drift is repaired); the copy is the swap's own, and the given graph is
        # not changed while it is applied (Engine.apply's caller).
        graph = await stepped(graph.copy_steps())
        await stepped(self.prepare_steps(graph))
        self._refuse_if_stopping()  # stopped while it prepared: the running graph stays
        if accepted is not None:
            accepted()
        old = self.vertices
        kept, removed = await self._kept(graph)
        await self._realize(removed)
        await stop_all(removed)
        gone = [v.key for v in removed if v.key not in graph.vertices]
        if not old:
            gone = [k for k in self.reversals.stored() if k not in graph.vertices]
        await self.reverser.undo(gone, {v.key: v.res for v in removed}, self.graph)
        vertices: dict[Key, Vertex] = {}
        added: list[Vertex] = []
        async for some_new in sliced(list(graph.vertices.items())):
            for key, res in some_new:
                if key in kept:
                    vertices[key] = old[key]
                    graph.vertices[key] = old[key].res  # the running (initialized) instance
                else:
                    vertices[key] = Vertex(self, res)
                    added.append(vertices[key])
        gone_keys = [v.key for v in removed if v.key not in graph.vertices]
        self._forget_retries(gone_keys, added)
        # Kept vertices that lost a predecessor: one waiting for it is released.
        released = await stepped(_lost_steps(kept, self.graph.pred, graph.pred))
        rewatchers, noops = await stepped(_marked_steps(vertices))
        line = ""
        if old:
            counts = (len(kept), len(removed), len(added))
            raws = (self._raw, raw)
            line = await stepped(_full_swap_line_steps(counts, gone_keys, added, old, raws))
        # Nothing awaited from here on until the new graph runs: it changes at once.
        self.graph = graph
        self.vertices = vertices
        self._raw = raw
        self._rewatchers, self._noops, self._incoming = rewatchers, noops, 0  # (in place)
        if line:
            log.info("%s", line)
        self._track_pass(added, first=not old)
        await _start(added)
        # a started vertex told its status itself (10,000 events less at first)
        async for some_kept in sliced(kept):
            for key in some_kept:
                self.changed(vertices[key])
        _release(vertices[key] for key in released)
        async for some_removed in sliced(removed):
            for vertex in some_removed:
                vertex.release()
        self.listeners.emit(
            GraphSwapped(
                len(kept),
                len(removed),
                len(added),
                gone=frozenset(gone_keys),
                counted=await _kinds(added, removed),
            )
        )

    async def _kept(self, graph: Graph) -> tuple[set[Key], list[Vertex]]:
        """The running vertices that a full swap to the prepared `graph` keeps, and the others
        (those of meta rewatch failed for good are replaced, changed or not)."""
        rewatch = {k for k in self._rewatchers if self.vertices[k].failed}
        kept: set[Key] = set()
        removed: list[Vertex] = []
        async for some_old in sliced(list(self.vertices.items())):
            for k, v in some_old:
                if (
                    k in graph.vertices
                    and k not in rewatch
                    # The same object given again: its params are as given, but autogroup has
                    # just set its group afresh (a member may have come or gone).
                    and (
                        (graph.vertices[k] is v.res and same_group(v.pristine, v.res))
                        or same(v.pristine, graph.vertices[k])
                    )
                ):
                    kept.add(k)
                else:
                    removed.append(v)
        return kept, removed

    async def _realize(self, leaving: list[Vertex]) -> None:
        """Meta realize (mgmt's): before a swap stops the vertices it removes or replaces
        (`leaving`), each with realize runs once since its last event or poke, its predecessors
        first (they still run: a swap pauses nothing here); not when it failed, a failure
        blocks it, or the engine stops. Re-checked at each vertex's change of status."""
        keys = {v.key for v in leaving if v.res.meta.realize}
        if not keys:
            return
        for key in list(keys):  # and what must run before it (mgmt's realizeWaitSet)
            keys |= self.graph.ancestors(key)
        waiting = [self.vertices[key] for key in keys if key in self.vertices]
        wake = Flag()
        unsubscribe = self.listeners.subscribe(VertexChanged, lambda _event: wake.set())
        try:
            while not all(self._realized(v) for v in waiting):
                wake.clear()
                await wake.wait()
        finally:
            unsubscribe()

    def _realized(self, vertex: Vertex) -> bool:
        """Nothing owed by `vertex` that a swap should wait for (meta realize): it ran since
        its last event or poke and waits for the next (no worker runs), or it cannot run."""
        status = vertex.status
        if self.gate.closed or status in (FAILED, DEAD, STOPPING, STOPPED):
            return True
        if status is OK and vertex.started and not vertex._working():
            return not vertex.dirty.is_set()
        return self.blocked(vertex)

    def _forget_retries(self, gone: Iterable[Key], started: list[Vertex]) -> None:
        """The retry counts of resources that left the graph (`gone`) are dropped; those of
        the `started` vertices (new or changed) are kept, unless their meta reset says not."""
        retries = self.retries
        if not retries:
            return
        for key in gone:
            retries.pop(key, None)
        for vertex in started:
            if vertex.res.meta.reset:
                retries.pop(vertex.key, None)

    def would_change(self) -> list[Vertex]:
        """The vertices that would change (Vertex.would_change): in O(vertices in noop mode,
        by --noop or their meta), not O(graph) (said at every convergence, after each swap)."""
        vertices = self.vertices
        maybe = vertices.values() if self.noop else (vertices[k] for k in self._noops)
        return [v for v in maybe if v.would_change]

    def retry_failed(self) -> tuple[int, int, int]:
        """An operator's reload (SIGHUP): each DEAD vertex is revived (its watch or init()
        runs again), each FAILED one (out of retries), and each failed reversal, is checked
        once more, and each retry waiting for its meta delay runs now, or RELOAD_GAP s after
        its failure if that is later (retry_delay; before 2026-12-07 it waited on: `retry: -1,
        delay: 600000` fixed by hand and reloaded was checked ten minutes later: user3); how
        many of each (the reversals counted with the failed)."""
        dead = [v for v in self.vertices.values() if v.status is DEAD]
        failed = [v for v in self.vertices.values() if v.status is FAILED]
        for vertex in dead:
            vertex.revive()
        for vertex in failed:
            vertex.poke()
        now = time.monotonic()
        waits = [wait for wait in self._retry_waits.values() if not wait.cut.done()]
        for wait in waits:
            wait.at = max(wait.soonest, now)
            wait.cut.set_result(None)
        return len(dead), len(failed) + self.reverser.retry_failed(), len(waits)

    async def retry_delay(self, key: Key, delay: float) -> None:
        """Wait `delay` s for the retry of the vertex `key` (its meta delay), or until an
        operator's reload asks for it now (retry_failed), but not sooner than RELOAD_GAP s
        after the failure: a storm of reloads retries a failing resource once a second at
        most, not at each reload (each cut the wait of the retry the last one had run)."""
        now = time.monotonic()
        wait = _RetryWait(asyncio.get_running_loop().create_future(), now, delay)
        self._retry_waits[key] = wait
        try:
            await asyncio.wait([wait.cut], timeout=delay)
            if wait.cut.done() and (early := wait.at - time.monotonic()) > 0:
                await asyncio.sleep(early)  # a reload right after the failure
        finally:
            if self._retry_waits.get(key) is wait:
                del self._retry_waits[key]

    def retry_in(self, key: Key) -> float | None:
        """In how many seconds the retry of the vertex `key` runs, or None: no retry waits
        (none due, or one running now). On the monotonic clock its wait keeps: a wall-clock
        step or a suspend (which the monotonic clock does not count) moves it not."""
        wait = self._retry_waits.get(key)
        return None if wait is None else max(0.0, wait.at - time.monotonic())

    # the cycle collector during the first run -----------------------------------------------

    def _pause_gc(self) -> None:
        """A swap makes many long-lived objects and almost no cyclic garbage, but each full
        collection walked every object (at 10,000 files, 17 full passes took 10 of a first
        run's 17 s of CPU; a swap of 20,000 resources for 20,000 others spent 16 of its 22 s
        in six full passes that found nothing, its first one over a heap just thawed). So the
        collector pauses for the swap, then (`_track_pass`) until each vertex it started has
        processed once (or one failed, or the graph is swapped or stopped); then what lives is
        frozen (gc.freeze: later passes skip it) until the next swap or stop, which may make
        some of it garbage."""
        if gc.isenabled():
            gc.disable()
            self._gc = _GcState(paused=True, frozen=False)

    def _track_pass(self, started: list[Vertex], first: bool) -> None:
        """The pause (`_pause_gc`) lasts until `started` have processed once, when they are
        the first graph's or more than SMALL; else it ends now."""
        if not self._gc.paused:
            return
        if not started or (not first and len(started) <= SMALL):
            self._gc_resume()
            return
        self._first_pass = {v.key for v in started}
        self._first_progress = time.monotonic()
        self._gc_bound = asyncio.get_running_loop().call_later(
            FIRST_PASS_GC_BOUND, self._first_pass_stalled
        )

    def processed(self, vertex: Vertex, failed: bool) -> None:
        """`vertex` has an outcome: the first pass may be over (see _pause_gc)."""
        pending = self._first_pass
        if pending is None:
            return
        if vertex.key in pending:
            pending.discard(vertex.key)
            self._first_progress = time.monotonic()
        if failed or not pending:
            self._end_first_pass()

    def progressed(self) -> None:
        """A vertex took a first step (started, or got its startup event): the first pass is
        not stalled (see FIRST_PASS_GC_BOUND)."""
        if self._first_pass is not None:
            self._first_progress = time.monotonic()

    def _first_pass_stalled(self) -> None:
        """The bound's timer: end the pause if no vertex took a first step (start, startup
        event, first outcome) for FIRST_PASS_GC_BOUND seconds, else look again when that would
        be so (one timer, not one per step)."""
        loop = asyncio.get_running_loop()
        left = self._first_progress + FIRST_PASS_GC_BOUND - time.monotonic()
        if left > 0 and self._first_pass is not None:
            self._gc_bound = loop.call_later(left, self._first_pass_stalled)
        else:
            self._end_first_pass()

    def _end_first_pass(self) -> None:
        if self._first_pass is None:
            return
        self._first_pass = None
        if self._gc_bound is not None:
            self._gc_bound.cancel()
        gc.freeze()
        gc.enable()
        self._gc = _GcState(paused=False, frozen=True)

    def _gc_resume(self, thaw: bool = True) -> None:
        """The collector as it was before the first run; with `thaw` False (the engine stops:
        the process is ending) what is frozen stays so, else the next full pass would walk
        it all once more only to delay the exit (1.5-2 s at 10,000 files); a first pass that
        stops midway is frozen too (else the next allocation walked its young objects, 0.3 s)."""
        self._first_pass = None
        if self._gc_bound is not None:
            self._gc_bound.cancel()
        state, self._gc = self._gc, _NO_GC_STATE
        if state.paused:
            if not thaw:
                gc.freeze()
            gc.enable()
        if state.frozen and thaw:
            gc.unfreeze()

    def _small_swap(self, graph: Graph, since: Since | None) -> Small | None:
        """The vertices to replace, add and remove when `graph` differs from the last one only
        in resources that can be swapped in place (same kind, automatic edges, group,
        semaphores), or added or removed alone (no edge, group or semaphore); None when the
        whole graph must be prepared again. One identity check per kept resource."""
        last = self._raw
        if last is None or graph is last.graph or graph.name != last.name:
            return None  # the first graph, or one given again (it may have been changed)
        given = last.vertices
        if since is not None and since[0] is last.graph:
            keys: Collection[Key] = since[1]
        elif graph.vertices.keys() != given.keys():
            keys = graph.vertices.keys() ^ given.keys()
            if len(keys) > SMALL or not _same_edges(graph, last, keys):
                return None
            keys = [*keys, *(k for k, r in graph.vertices.items() if given.get(k, r) is not r)]
        elif graph.succ != last.succ:
            return None
        else:
            keys = [k for k, r in graph.vertices.items() if r is not given[k]]
        if len(keys) > SMALL and len(keys) > len(given) // 4:
            return None  # a large part of the graph: preparing it all costs no more
        from engine import smallswap  # a later graph's: not a cron run's

        return smallswap.small_swap(self, graph, keys, given, last)

    async def _swap_replaced(self, given: Graph, small: Small) -> None:
        """The O(change) swap: the last prepared graph with the vertices of `small` replaced,
        added and removed, and its edges rewired, in place (no copy of the graph's maps), at
        once (between two awaits) once the new vertices are made."""
        from engine import smallswap  # (imported by _small_swap)

        replace = small.replace
        removed = [self.vertices[key] for key in [*replace, *small.remove]]
        await self._realize(removed)
        await stop_all(removed)
        gone = {key: self.vertices[key].res for key in small.remove}
        await self.reverser.undo(list(gone), gone, self.graph)
        for lead, grouped in small.regroup.items():  # (its old vertex stopped)
            lead_res = replace[lead]
            assert isinstance(lead_res, Groupable)
            lead_res.grouped = grouped
        added: list[Vertex] = []
        async for some_new in sliced([*replace.items(), *small.add.items()]):
            added.extend(Vertex(self, res) for _key, res in some_new)
        # Nothing awaited from here on: the graph changes at once.
        self._incoming = 0
        smallswap.reshape(self.graph, small)
        graph = Graph(given.name)  # a new object (the agent tells swaps apart by identity)
        graph.vertices, graph.succ, graph.pred = (
            self.graph.vertices,
            self.graph.succ,
            self.graph.pred,
        )
        vertices, index = self.vertices, self._autoindex
        for key in small.remove:
            del graph.vertices[key], vertices[key]
            self._rewatchers.discard(key)
            self._noops.discard(key)
            if index is not None:
                index.count(gone[key], -1)
        for vertex in added:
            key, meta = vertex.key, vertex.res.meta
            graph.vertices[key] = vertex.res
            vertices[key] = vertex
            for marked, on in ((self._rewatchers, meta.rewatch), (self._noops, meta.noop)):
                if on:
                    marked.add(key)
                else:
                    marked.discard(key)
        self._forget_retries(small.remove, added)
        smallswap.provided(self, added)
        smallswap.counted(self, small)
        self.graph = graph
        self._raw = _Raw(given, given.name)
        kept = len(vertices) - len(added)
        changes = (("removed", small.remove), ("added", small.add), ("changed", replace))
        edges = (small.connect, small.disconnect)
        log.info("%s", _swapped_line((kept, len(removed), len(added)), changes, edges))
        self._track_pass(added, first=False)
        await _start(added)
        async for some_added in sliced(added):
            for vertex in some_added:
                self.changed(vertex)
        _release(vertices[key] for key in small.release)
        async for some_removed in sliced(removed):
            for vertex in some_removed:
                vertex.release()
        self.listeners.emit(
            GraphSwapped(
                kept,
                len(removed),
                len(added),
                frozenset(replace) | frozenset(small.add),
                frozenset(small.add),
                frozenset(small.remove),
                small.rewired,
                frozenset(small.joined),
                frozenset(small.left),
            )
        )

    # reversal ------------------------------------------------------------------------------

    async def prepare_reversal(self, vertex: Vertex) -> None:
        """Before a resource's first change: make sure its reversal record can be written."""
        if isinstance(vertex.res, Reversible) and not self.reversals.has(vertex.key):
            await asyncio.to_thread(self.reversals.prepare, vertex.key)

    async def save_reversal(self, vertex: Vertex) -> None:
        """Keep how to undo a resource's first change (meta reverse), under the prefix."""
        res = vertex.res
        if not isinstance(res, Reversible) or self.reversals.has(vertex.key):
            return
        data = res.reversal()
        await asyncio.to_thread(self.reversals.save, vertex.key, res.params(), data, res.meta)

    def _undone_why(self, undone: list[Vertex], retrying: set[Key]) -> str:
        """What the stop cut short, for its summary (" (...)"), or "": the check_applies the
        gate refused, the resources whose running work was interrupted (exec), and those that
        were waiting to retry after a failure (`retrying`, as the stop found them), by name."""
        why = []
        if refused := self.gate.refused:
            why.append(
                f"{refused} check_{'apply' if refused == 1 else 'applies'} stopped before "
                f"{'its' if refused == 1 else 'their'} work began"
            )
        names = sorted(v.shown for v in undone if v.work is not None and v.work.interrupted)
        again = sorted(v.shown for v in undone if v.key in retrying)
        for listed, what in ((names, "interrupted"), (again, "retrying after a failure")):
            if listed:
                why.append(f"{_few(listed)} {what}")
        return f" ({'; '.join(why)})" if why else ""

    def undone(self) -> list[Vertex]:
        """The vertices neither in their desired state, nor failed, nor found differing in
        noop mode: what a stop leaves for the next run."""
        return [v for v in self.vertices.values() if not (v.state_ok or v.failed or v.would_change)]

    async def stop(self, graceful: bool = True) -> None:
        """Stop every vertex (graceful: running check_applies finish first; one whose work
        has not begun never begins it: engine/stopgate.py). A swap still preparing then
        applies nothing (EngineStopped)."""
        self._closing = True
        self._gc_resume(thaw=False)
        retrying = {key for key, v in self.vertices.items() if v.status is RETRYING}
        with watcher.shutting_down(), collector.paused(), self.gate.closing():
            await stop_all(list(self.vertices.values()), graceful)
        undone = self.undone()
        if undone:
            log.info(
                "stopped: %d of %d resource%s left undone%s; the next run applies them",
                *(len(undone), len(self.vertices), "s" * (len(self.vertices) != 1)),
                self._undone_why(undone, retrying),
            )
        if due := [fmt_key(key) for key in self.reverser.due()]:  # a retry the stop cancels
            log.info(
                "stopped: the reversal of %s is retried at the next start (%s kept)",
                *(_few(due), "its record is" if len(due) == 1 else "their records are"),
            )
        await self.reverser.aclose()
        await self.shared.aclose()
