"""The converger: the graph is converged once every vertex has been settled for `timeout` s.

A vertex is settled when its last process succeeded and no event is pending, when it is failed
(out of retries), or when it is blocked behind a failed ancestor. Event-driven: the timer is
(re)armed on each transition, there is no polling loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.engine import Engine, Status, Vertex
from engine.events import GraphSwapped, VertexChanged
from engine.graph import Key

log = logging.getLogger("main")


class Converger:
    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self.converged = asyncio.Event()
        self.diverged = asyncio.Event()  # the opposite of converged, to await either way
        self.diverged.set()
        self._unsettled: set[Key] = set()
        self._failed: set[Key] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._unsubscribes: list[Callable[[], None]] = [
            engine.listeners.subscribe(VertexChanged, self._changed),
            engine.listeners.subscribe(GraphSwapped, lambda _event: self.recompute()),
        ]

    def close(self) -> None:
        for unsubscribe in self._unsubscribes:
            unsubscribe()
        if self._timer:
            self._timer.cancel()

    def failed(self) -> list[Vertex]:
        return [v for k, v in self.engine.vertices.items() if k in self._failed]

    def recompute(self) -> None:
        """Re-evaluate every vertex (after a graph swap, or when a vertex fails or recovers)."""
        vertices = self.engine.vertices
        self._failed = {k for k, v in vertices.items() if v.failed}
        self._unsettled = {k for k, v in vertices.items() if not self._settled(v)}
        self._rearm()

    def _settled(self, vertex: Vertex) -> bool:
        if vertex.failed:
            return True
        if vertex.status is Status.OK and not vertex.dirty.is_set():
            return True
        return (
            vertex.status is Status.PENDING and bool(self._failed) and self.engine.blocked(vertex)
        )

    def _changed(self, event: VertexChanged) -> None:
        vertex = event.vertex
        if self.engine.vertices.get(vertex.key) is not vertex:
            return  # a vertex being stopped by a swap; recompute() follows the swap
        if vertex.failed != (vertex.key in self._failed):
            self.recompute()  # a failure blocks (or a recovery unblocks) a whole subgraph
            return
        if self._settled(vertex):
            self._unsettled.discard(vertex.key)
        else:
            self._unsettled.add(vertex.key)
        self._rearm()

    def _rearm(self) -> None:
        if self._unsettled:
            if self._timer:
                self._timer.cancel()
                self._timer = None
            self.converged.clear()
            self.diverged.set()
        elif self._timer is None and not self.converged.is_set():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timeout, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._unsettled:
            self.converged.set()
            self.diverged.clear()
