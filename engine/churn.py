"""Churn: a resource that something else keeps changing behind our back, told once.

A file that another process (another agent, a script, a package's cron job) keeps writing is
repaired at each of its events, forever, and nothing says so but each repair's change line.
When a resource of a kind that holds a state (`Resource.DRIFTS`: file, line, sysctl, kv...)
repairs drift REPAIRS times within WINDOW seconds, one warning says what is known; then its
repairs are counted (`VertexStats.churn`, shown by `mgmt status`). A burst that starts again
after WINDOW seconds of quiet is told again. mgmt has nothing like it.

A repair here is a change made with apply, after the resource had been applied once, on an
event of its own watch: not one asked for by a refresh (a notify edge), nor by values it
received (send/recv), nor its first application (a new resource or a graph swap's).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from engine.events import CheckApplied

if TYPE_CHECKING:
    from engine.engine import Vertex
    from engine.events import Listeners

REPAIRS = 20  # repairs of drift within WINDOW seconds that mean another writer
WINDOW = 60.0


class Churn:
    """Watches every check_apply of an engine (its CheckApplied listener) for churn."""

    def __init__(self, listeners: Listeners) -> None:
        self.unsubscribe = listeners.subscribe(CheckApplied, self._applied)

    def _applied(self, event: CheckApplied) -> None:
        vertex = event.vertex
        stats = vertex.stats
        events, stats.events_checked = stats.events_checked, stats.events
        if not (event.changed and event.apply and vertex.res.DRIFTS and vertex.ts):
            return  # no change, noop, a kind of actions (exec), or its first application
        if events == stats.events or vertex.refresh_pending or any(vertex.received.values()):
            return  # not drift its watch saw: a refresh, a received value, a retry
        _repaired(vertex, time.monotonic())


def _repaired(vertex: Vertex, now: float) -> None:
    stats = vertex.stats
    repairs = stats.repairs
    if repairs is None:
        repairs = stats.repairs = deque(maxlen=REPAIRS)
    elif repairs and now - repairs[-1] > WINDOW:  # left alone for a while: a new burst
        repairs.clear()
        stats.churn_told = False
    repairs.append(now)
    if stats.churn_told:
        stats.churn += 1
    elif len(repairs) == REPAIRS and now - repairs[0] <= WINDOW:
        stats.churn_told = True
        stats.churn += REPAIRS
        vertex.handle.logger.warning(
            "changed behind our back %d times in the last %.0f s: another process keeps "
            "writing it (another agent, a script?); repaired each time, counted in mgmt status",
            REPAIRS,
            max(now - repairs[0], 1.0),
        )
