"""Churn: a resource that something else keeps changing behind our back, told once.

A file that another process (another agent, a script, a package's cron job) keeps writing is
repaired at each of its events, forever, and nothing says so but each repair's change line.
When a resource of a kind that holds a state (`Resource.DRIFTS`: file, line, sysctl, kv...)
repairs drift REPAIRS times within WINDOW seconds, one warning says what is known; then its
repairs are counted (`VertexStats.churn`, shown by `mgmt status`). A burst that starts again
after WINDOW seconds of quiet is told again. mgmt has nothing like it.

A repair here is a change made with apply, after the resource had been applied once, on an
event of its own watch: not one asked for by a refresh (a notify edge), nor by values it
received (send/recv), nor its first application (a new resource or a graph swap's). Under
noop (`--noop`, `meta: noop`) a change found so, and not made, counts the same: it is said as
found, not repaired.

The graph may be what keeps changing it: a command one of its resources runs (an exec's
`ifcmd`, `cmd`...: `Commands`) that writes a file another resource manages. When three in four
of those REPAIRS events came while the same command ran (or within SLACK seconds of its
end), the warning names that command. A kind of actions (exec: it has no state to repair) is told
only when its own command made them (an `ifcmd` that writes one of its `watchfiles`: it runs
again at each of its runs, for ever): its watch's events are what it is for, another exec's
command's too (one generates what the next watches: a pipeline).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import TYPE_CHECKING

from engine.events import CheckApplied

if TYPE_CHECKING:
    from engine.engine import Vertex
    from engine.events import Listeners
    from engine.graph import Key

REPAIRS = 20  # repairs of drift within WINDOW seconds that mean another writer
WINDOW = 60.0
SLACK = 0.5  # seconds after a command's end in which an event may still be its doing
COMMANDS = "engine.churn:commands"  # the engine's Commands, in its Shared (handle.shared)


class Commands:
    """The commands an engine's resources run, and when (exec's: `started` as one starts, its
    result called as it ends): which one may have caused an event (`during`)."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, float]] = {}  # token: (who, started)
        self._ended: deque[tuple[str, float, float]] = deque(maxlen=16)  # (who, started, ended)
        self._tokens = itertools.count()

    def started(self, who: str) -> int:
        """`who` (e.g. "exec[x]'s ifcmd") starts a command: a token for `ended`."""
        token = next(self._tokens)
        self._running[token] = (who, time.monotonic())
        return token

    def ended(self, token: int) -> None:
        started = self._running.pop(token, None)
        if started is not None:
            self._ended.append((*started, time.monotonic()))

    def during(self, when: float) -> str | None:
        """The command that ran at `when` (time.monotonic()), or had ended less than SLACK
        seconds before it; None if none did, or more than one (nothing to tell)."""
        found = {who for who, started in self._running.values() if started <= when}
        found.update(who for who, started, ended in self._ended if started <= when <= ended + SLACK)
        return found.pop() if len(found) == 1 else None


class Churn:
    """Watches every check_apply of an engine (its CheckApplied listener) for churn."""

    def __init__(self, listeners: Listeners) -> None:
        self.unsubscribe = listeners.subscribe(CheckApplied, self._applied)
        self._causes: dict[Key, deque[str | None]] = {}  # per vertex, of its last repairs

    def _applied(self, event: CheckApplied) -> None:
        vertex = event.vertex
        stats = vertex.stats
        events, stats.events_checked = stats.events_checked, stats.events
        if event.changed is None or not vertex.ts:
            return  # a failure, or its first application
        if events == stats.events or vertex.refresh_pending or any(vertex.received.values()):
            return  # not drift its watch saw: a refresh, a received value, a retry
        drifts = vertex.res.DRIFTS
        if drifts and not event.changed:
            return  # found as it should be
        cause = vertex.handle.shared.get(COMMANDS, Commands).during(stats.last_event)
        if not drifts and (cause is None or not cause.startswith(f"{vertex.res}'s ")):
            return  # a kind of actions (exec) run by its watch (another's command too, one
            # exec generating what the next watches, a pipeline): what it is for
        causes = self._causes.get(vertex.key)
        if causes is None:
            causes = self._causes[vertex.key] = deque(maxlen=REPAIRS)
        _repaired(vertex, time.monotonic(), causes, cause, event.apply)


def _repaired(
    vertex: Vertex, now: float, causes: deque[str | None], cause: str | None, apply: bool
) -> None:
    stats = vertex.stats
    repairs = stats.repairs
    if repairs is None:  # (a new vertex: what its key's former vertex left is not its own)
        repairs = stats.repairs = deque(maxlen=REPAIRS)
        causes.clear()
    elif repairs and now - repairs[-1] > WINDOW:  # left alone for a while: a new burst
        repairs.clear()
        causes.clear()
        stats.churn_told = False
    repairs.append(now)
    causes.append(cause)
    if stats.churn_told:
        stats.churn += 1
    elif len(repairs) == REPAIRS and now - repairs[0] <= WINDOW:
        stats.churn_told = True
        stats.churn += REPAIRS
        vertex.handle.logger.warning("%s", _told(vertex, max(now - repairs[0], 1.0), causes, apply))


def _told(vertex: Vertex, took: float, causes: deque[str | None], apply: bool) -> str:
    """What the warning says: who (when known), how many times, what was done."""
    who = max(set(causes), key=causes.count)  # most of them (a first one may predate it)
    if who is not None and causes.count(who) * 4 < len(causes) * 3:
        who = None
    if not vertex.res.DRIFTS:  # (counted only on its own command's changes)
        own = f"{vertex.res}'s "
        who = f"its own {who[len(own) :]}" if who and who.startswith(own) else "its own command"
        return (
            f"run again {REPAIRS} times in the last {took:.0f} s, each time on a change made "
            f"while {who} ran: that command changes what this resource watches (it re-triggers "
            "itself for ever: fix the graph); counted in mgmt status"
        )
    done = "repaired each time" if apply else "not repaired: noop"
    if who is not None:
        return (
            f"changed behind our back {REPAIRS} times in the last {took:.0f} s, each time while "
            f"{who} ran: that command likely writes what this resource manages (the graph "
            f"fights itself: fix the graph); {done}, counted in mgmt status"
        )
    return (
        f"changed behind our back {REPAIRS} times in the last {took:.0f} s: another process "
        f"keeps writing it (another agent, a script?); {done}, counted in mgmt status"
    )
