"""The converger: the graph is converged once every vertex has been settled for `timeout` s.

A vertex is settled when its last process succeeded and no event is pending, when it is failed
(out of retries), or when it is blocked behind a failed ancestor. A `meta: poll` tick is not
activity: the vertex stays settled through it, and the timer restarts only if its check_apply
changed something (as in mgmt). Event-driven: the timer is (re)armed on each transition, there
is no polling loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.engine import FAILED, OK, PENDING, RETRYING, RUNNING, Engine, Vertex
from engine.events import CheckApplied, GraphSwapped, ReversalsChanged, VertexChanged
from engine.graph import Key

log = logging.getLogger("main")


class Converger:
    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self.converged = asyncio.Event()
        self.diverged = asyncio.Event()  # the opposite of converged, to await either way
        self.diverged.set()
        # Every vertex settled now, the timeout not yet run out: the graph has converged; it
        # stays so (`converged`) once settled for `timeout` s.
        self.settled = asyncio.Event()
        self._unsettled: set[Key] = set()
        self._failed: set[Key] = set()
        # Retrying: failed, a retry due (counted in `_unsettled`), or once was since the last
        # `retrying()`, which prunes it: for STATUS=, which named none of them (`0 failed`
        # while one retried for ever). A swap drops the keys it removed: with no STATUS= (not
        # under systemd) nothing reads it, and it kept every key that ever retried.
        self._retrying: set[Key] = set()
        # Set when a vertex fails or recovers: a failure keeps the graph settled (converged),
        # so without it a watch that fails for good after convergence went unsaid.
        self.failures = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        # Called as vertices settle, fail or change (the agent's STATUS= under systemd alone).
        self.on_progress: Callable[[], None] | None = None
        # Called at each convergence, also one that follows a divergence too short for a task
        # awaiting `diverged` to see it cleared (a swap that started vertices already right).
        self.on_converged: Callable[[], None] | None = None
        # Futures done at the next divergence (next_divergence): made before their waiter
        # awaits, so a divergence that is over (converged again) before it runs is not missed.
        self._divergence_waiters: list[asyncio.Future[None]] = []
        self._unsubscribes: list[Callable[[], None]] = [
            engine.listeners.subscribe(VertexChanged, self._changed),
            engine.listeners.subscribe(CheckApplied, self._check_applied),
            engine.listeners.subscribe(GraphSwapped, self._swapped),
            engine.listeners.subscribe(GraphSwapped, self._started),  # after _swapped
            # a failed reversal waiting for its retry is activity, as a retrying vertex is
            engine.listeners.subscribe(ReversalsChanged, lambda _event: self._rearm()),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        if self._timer:
            self._timer.cancel()

    def stopping(self) -> None:
        """The engine is about to stop every vertex (the agent's end): not converged from now
        on, as the first vertex stopping would have said, and no vertex followed any longer
        (a 20,000-file stop told it 40,000 status changes, ~1/6 of the stop's CPU)."""
        self.close()
        if self.engine.vertices:  # an empty graph stays as it is (no vertex would stop)
            self._unsettled.update(self.engine.vertices)
            self._diverge()

    def failed(self) -> list[Vertex]:
        vertices = self.engine.vertices
        return [vertices[k] for k in self._failed if k in vertices]

    def blocked(self) -> list[Vertex]:
        """The vertices that cannot run because an ancestor failed (none without a failure)."""
        if not self._failed:
            return []
        return [
            v
            for v in self.engine.vertices.values()
            if not v.failed and v.status is PENDING and self.engine.blocked(v)
        ]

    def counts(self) -> tuple[int, int]:
        """(unsettled, failed) vertices, in O(1) (`unsettled()` sorts and describes each)."""
        return len(self._unsettled), len(self._failed)

    def retrying(self) -> list[Vertex]:
        """The vertices whose last attempt failed and that have a retry due (or running). The
        set is pruned here, not as each vertex recovers: no cost on a run's hot path."""
        vertices, now = self.engine.vertices, []
        for key in list(self._retrying):
            vertex = vertices.get(key)
            if vertex is not None and (vertex.status is RETRYING or vertex.outcome is RETRYING):
                now.append(vertex)
            else:
                self._retrying.discard(key)
        return now

    def unsettled(self) -> list[tuple[Vertex, str]]:
        """The vertices that are not settled, each with why (its status, and its last error)."""
        result = []
        for key in sorted(self._unsettled):
            vertex = self.engine.vertices.get(key)
            if vertex is None:
                continue
            why = vertex.status.value
            if vertex.status is OK and vertex.dirty.is_set():
                why = "an event is pending"
            elif vertex.status is PENDING and vertex.ts == 0:
                why = "pending, never applied" if vertex.started else "waiting to start"
            if vertex.error is not None:
                why += f": {vertex.error}"
            result.append((vertex, why))
        return result

    def recompute(self) -> None:
        """Re-evaluate every vertex (after a graph swap, or when a vertex fails or recovers)."""
        vertices = self.engine.vertices
        self._failed = {k for k, v in vertices.items() if v.failed}
        self._unsettled = {k for k, v in vertices.items() if not self._settled(v)}
        self._retrying = {k for k, v in vertices.items() if v.status is RETRYING}
        self._rearm()

    def _swapped(self, event: GraphSwapped) -> None:
        """After a swap: re-evaluate the vertices it replaced or added (a small swap that
        stopped no failed vertex and changed no edge while one is failed), else every vertex;
        after a full swap, forget those it stopped for good."""
        if not (event.kept or event.stopped):
            # The first graph (no vertex before it; the converger follows its engine from
            # before any graph): each vertex told its state as it started (VertexChanged), and
            # nothing else was known: nothing to re-evaluate (1,000 vertices: 1% of a run).
            self._rearm()
            return
        replaced = event.replaced
        if replaced is None:
            # A full swap told each vertex it kept once the new graph was in place (its edges
            # decide which ones a failure blocks: Engine._swap) and each it started told its
            # own: what is left is the keys of the vertices it stopped (a vertex replaced whose
            # new one has not failed blocks nothing: Engine.blocked). Re-evaluating
            # every vertex took ~0.25 us each in the swap's last step (5 ms at 20,000).
            vertices = self.engine.vertices
            self._unsettled = {k for k in self._unsettled if k in vertices}
            self._failed = {k for k in self._failed if (v := vertices.get(k)) and v.failed}
            self._retrying = {k for k in self._retrying if k in vertices}
            self._rearm()
            return
        if not self._failed.isdisjoint(replaced | event.removed) or (
            event.rewired and self._failed
        ):
            self.recompute()
            return
        self._unsettled.difference_update(event.removed)
        self._retrying.difference_update(event.removed)
        for key in replaced:
            vertex = self.engine.vertices[key]
            if vertex.status is RETRYING:  # (told before the swap: not followed then)
                self._retrying.add(key)
            if vertex.failed:
                self.recompute()  # it blocks its descendants
                return
            if self._settled(vertex):
                self._unsettled.discard(key)
            else:
                self._unsettled.add(key)
        self._rearm()

    def _settled(self, vertex: Vertex) -> bool:
        return vertex.failed or self._settled_alive(vertex)

    def _settled_alive(self, vertex: Vertex) -> bool:
        """_settled() of a vertex that is not failed."""
        if vertex.status is OK and not vertex.dirty.is_set():
            return True
        if vertex.poll_tick and vertex.outcome is OK and not vertex.stopping:
            return True  # a poll tick (or what it pokes) is not activity until it changes
        return vertex.status is PENDING and bool(self._failed) and self.engine.blocked(vertex)

    def _changed(self, event: VertexChanged) -> None:
        vertex = event.vertex
        key = vertex.key
        if (
            vertex.status is RUNNING
            and key in self._unsettled
            and not vertex.poll_tick
            and key not in self._failed
        ):  # a check began, not a tick's: unsettled before and after (once a vertex a run)
            return
        if self.engine.vertices.get(key) is not vertex:
            return  # a vertex being stopped by a swap; recompute() follows the swap
        status = vertex.status  # not failed while pending, running or OK: no property call
        if status is OK or status is RUNNING or status is PENDING:
            failed = False
        else:
            failed = vertex.failed
            if status is RETRYING:  # once per failed attempt (retrying() prunes the set)
                self._retrying.add(key)
                if self.on_progress is not None:  # unsettled before and after: said here
                    self.on_progress()
        if not failed and vertex.poll_tick and vertex.outcome is FAILED and key in self._failed:
            failed = True  # a failed vertex's tick (a poll's, a heal's): failed until it is not
        if failed != (key in self._failed):
            self._failure_changed(key, failed)
            return
        # Re-armed only when the set becomes empty or stops being so: while another vertex is
        # unsettled, _rearm() has already cancelled the timer and cleared the flags (each change
        # of the set is followed by a _rearm()). 2 of a vertex's 3 changes in a run.
        unsettled = self._unsettled
        if failed:
            settled = True
        elif status is OK:
            settled = not vertex.dirty.is_set() or self._settled_alive(vertex)
        elif vertex.poll_tick or (status is PENDING and self._failed):
            settled = self._settled_alive(vertex)
        else:  # (what _settled_alive() says of it, without its call: most of a first run)
            settled = False
        if settled:
            unsettled.discard(key)
            if unsettled:
                return
        elif key not in unsettled:
            unsettled.add(key)
            if len(unsettled) > 1:
                return
        else:
            return  # unsettled before and after: nothing to re-arm (most of a first run)
        self._rearm()

    def _failure_changed(self, key: Key, failed: bool) -> None:
        """A vertex failed (or recovered): it blocks (or unblocks) its descendants, and only
        them. Re-evaluating every vertex at each failure made a run where thousands fail (a
        read-only or full disk) quadratic: 20,000 failing files had not ended after 5 min."""
        if failed:
            self._failed.add(key)
        else:
            self._failed.discard(key)
        self.failures.set()
        vertices, unsettled = self.engine.vertices, self._unsettled
        for k in (key, *self.engine.graph.descendants(key)):
            vertex = vertices.get(k)
            if vertex is None:
                continue
            if self._settled(vertex):
                unsettled.discard(k)
            else:
                unsettled.add(k)
        self._rearm()

    def _check_applied(self, event: CheckApplied) -> None:
        """A change restarts the timer, even one found by a poll tick. A tick in noop mode that
        would change something again is not activity: the change cannot happen."""
        vertex = event.vertex
        if not event.changed or (vertex.poll_tick and not event.apply):
            return
        if self.engine.vertices.get(vertex.key) is not vertex:
            return
        if self._unsettled and self._timer is None and self.diverged.is_set():
            # Diverged (`converged` clear), no timer armed, `settled` clear: what _restart()
            # would do is done, and the counts STATUS= shows did not change (a first run's
            # every write; _rearm() arms the timer once the last vertex settles).
            return
        self._restart()

    def _started(self, event: GraphSwapped) -> None:
        """A swap that started vertices (added or replaced ones) restarts the converged
        timeout, as mgmt's converger does (each new resource registers unconverged): the
        converged state, and its `since`, are the new graph's, even when none of them had
        anything to change (tester15: `converged since` stayed the old graph's)."""
        if event.started and (event.kept or event.stopped):  # not the first graph
            self._restart()

    def _restart(self) -> None:
        """Diverge now, and converge again once settled for the timeout."""
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._diverge()
        self._rearm()

    def next_divergence(self) -> asyncio.Future[None]:
        """A future done at the next divergence, or when it is already diverged: whoever
        awaits `diverged` while converged misses one that is over before its task runs (a
        swap whose new vertices were right: `diverged` set, then cleared)."""
        future = asyncio.get_running_loop().create_future()
        if self.diverged.is_set():
            future.set_result(None)
        else:
            waiters = self._divergence_waiters
            waiters[:] = [w for w in waiters if not w.done()]  # (cancelled ones: gone)
            waiters.append(future)
        return future

    def _diverge(self) -> None:
        self.converged.clear()
        self.diverged.set()
        waiters, self._divergence_waiters = self._divergence_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _rearm(self) -> None:
        if self.on_progress is not None:
            self.on_progress()
        if self._unsettled or self.engine.reverser.retrying():
            if self._timer:
                self._timer.cancel()
                self._timer = None
            self.settled.clear()
            if self.converged.is_set() or not self.diverged.is_set():  # once per divergence
                self._diverge()
            return
        self.settled.set()
        if self._timer is None and not self.converged.is_set():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._unsettled and not self.engine.reverser.retrying():
            self.converged.set()
            self.diverged.clear()
            if self.on_converged is not None:
                self.on_converged()
