"""Repair latency: from the event that caused a repair to the end of the check_apply that made it.

The cause of a vertex's check_apply is its own watch event (`stats.last_event`) or, for a
refresh along a `notify` edge, the cause of the upstream change that sent the refresh: an exec
that restarts a service after its configuration file drifted repairs that drift, and its own
last event may be hours old (measuring from it gave refresh-driven repairs a latency of the
agent's uptime). Causes travel along notify chains (file -> exec -> svc).

One `RepairClock` per observer (the status model, the metrics), fed every CheckApplied.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from engine.events import CheckApplied
from engine.graph import Key
from engine.resource import Refreshable


class RepairClock:
    def __init__(self) -> None:
        self._refresh_cause: dict[Key, float] = {}  # monotonic time, per refreshed vertex

    def latency(self, event: CheckApplied) -> float | None:
        """Seconds from the cause to now, for a check_apply that changed something with apply;
        None otherwise. Call it once per CheckApplied, in order (it keeps refresh causes)."""
        if event.error is not None:
            return None  # retried: the refresh (and its cause) is still pending
        vertex = event.vertex
        if not event.changed:  # the usual case: no latency, only a refresh's cause to forget
            if vertex.refresh_pending:
                self._refresh_cause.pop(vertex.key, None)
            return None
        cause = self._cause(event)
        # The engine refreshes the notify targets next, apply or not.
        engine = vertex.engine
        successors = engine.successors(vertex) if engine.graph.succ.get(vertex.key) else ()
        for target, edge in successors:
            if edge.notify and isinstance(target.res, Refreshable):
                known = self._refresh_cause.get(target.key, cause)
                self._refresh_cause[target.key] = min(known, cause)
        if not event.apply:
            return None
        return time.monotonic() - cause

    def _cause(self, event: CheckApplied) -> float:
        vertex = event.vertex
        # At CheckApplied the engine has not yet marked the refresh seen, nor the state good.
        refreshed = vertex.refresh_pending
        cause = self._refresh_cause.pop(vertex.key, None) if refreshed else None
        if cause is None:
            return vertex.stats.last_event
        if not vertex.state_ok:  # its own event is unhandled too: the older of the two
            return min(cause, vertex.stats.last_event)
        return cause

    def forget(self, gone: Iterable[Key]) -> None:
        """Forget the vertices no longer in the graph (after a swap: `GraphSwapped.gone`)."""
        for key in gone:
            self._refresh_cause.pop(key, None)
