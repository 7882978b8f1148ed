"""Churn: a resource that something else keeps changing behind our back, told once.

A file that another process (another agent, a script, a package's cron job) keeps writing is
repaired at each of its events, forever, and nothing says so but each repair's change line.
When a resource of a kind that holds a state (`Resource.DRIFTS`: file, line, sysctl, kv...)
repairs drift REPAIRS times within WINDOW seconds, one warning says what is known; then its
repairs are counted (`VertexStats.churn`, shown by `mgmt status`). A burst that starts again
after WINDOW seconds of quiet is told again. mgmt has nothing like it.

Its repairs' lines are summed up while it lasts (`Quieted`): a process rewriting a managed
file in a loop made ~300-1,000 "content updated" lines a second, flooding the journal. The
first QUIET_AFTER repairs within SUMMARY_EVERY seconds are said in full; from the next on,
the lines of the resource's INFO level said during its checks (each repair's change; not its
other lines, its watch's) reach the status model, never the log (mgmt/log.py's handlers leave out a resource in MUTED), and one line every
SUMMARY_EVERY seconds says how many repairs there were (`file[x]: repaired 812 times in the
last 10 s`; one line for all of an engine's resources summed up at once: `Quieting`). An
interval without a repair ends it: the next repair after quiet is said in full again. Warnings and errors are never left out; counts (`mgmt status`, metrics) stay
exact; `--verbose` (DEBUG) says every line, as before.

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

import asyncio
import itertools
import logging
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
QUIET_AFTER = 5  # repairs of one resource said in full within SUMMARY_EVERY s, then summed up
SUMMARY_EVERY = 10.0  # seconds between two summary lines of a resource's repairs
log = logging.getLogger("engine")
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


class Quieted:
    """A resource whose repairs' lines are left out of the log (`MUTED`) and summed up every
    SUMMARY_EVERY seconds by its engine's `Quieting`, while it keeps being repaired (see the
    module doc)."""

    __slots__ = ("apply", "count", "last", "loop", "quieting", "running", "started", "vertex")

    def __init__(self, vertex: Vertex, apply: bool, now: float, quieting: Quieting) -> None:
        self.vertex, self.apply, self.count, self.started, self.last = vertex, apply, 0, now, now
        # A check under way: its lines are a repair's (engine.engine.Status, from its vertex:
        # engine imports this module).
        self.running = type(vertex.status).RUNNING
        self.loop = asyncio.get_running_loop()
        self.quieting = quieting

    def hides(self) -> bool:
        """Whether a line of the resource is left out now (mgmt/log.py asks, at each): only
        a line of its check under way (a repair's: the vertex RUNNING), not another of its
        lines (its watch's, a swap's, said at once: before the ninth session of 2026-12-06
        they were left out too); not once SUMMARY_EVERY s passed without a repair, the
        first repair after quiet (its lines said in full, after the count of those before)."""
        if time.monotonic() - self.last < SUMMARY_EVERY and not self.loop.is_closed():
            # (its loop closed: its engine's run is over, its tick never comes)
            return self.vertex.status is self.running
        self.end()
        return False

    def end(self) -> None:
        """Its lines said again, the repairs not said yet first."""
        if MUTED.get(self.vertex.key) is self:
            del MUTED[self.vertex.key]
            if self.count:
                self._say(time.monotonic())

    def _say(self, now: float) -> None:
        """The count in one line: logged (never left out: a `traffic` line), not kept as the
        resource's last change (its repairs' own line is, in `mgmt status`)."""
        done = _done(self.vertex, self.apply, self.count)
        self.vertex.handle.logger.traffic("%s in the last %.0f s", done, now - self.started)
        self.count, self.started = 0, now


# The resources whose INFO lines the log leaves out for now (mgmt/log.py), by (kind, name).
MUTED: dict[Key, Quieted] = {}
QUIETED = "engine.churn:quieted"  # an engine's Quieting, in its Shared (handle.shared)
NAMED = 3  # resources named in a line summing up several, the most repaired first
# Resources listed each by its fields in that line of a structured log (--log-format json:
# `resources`, the most repaired first; the others counted in `more`): 10,000 fighting at
# once made one line of ~700 KB every SUMMARY_EVERY s, which journald's LineMax (48 KB) cuts
# into pieces that are no JSON. 100: ~7 KB.
LISTED = 100


class Quieting:
    """An engine's resources summed up (`Quieted`), said every SUMMARY_EVERY s: one line for
    all of them (a fight over 1,000 files made 100 lines a second, one per resource every
    10 s: review4, 2026-12-06), the resource's own when it is the only one. At the engine's
    stop (its Shared closed) the repairs not said yet are, and the lines are no longer left
    out (before, the interval a stop cut short was never said: its tick never came)."""

    def __init__(self) -> None:
        self.quieted: dict[Key, Quieted] = {}
        self.joined = 0  # resources summed up since the last line
        self.timer: asyncio.TimerHandle | None = None

    def add(self, quieted: Quieted) -> None:
        """Sum up `quieted`'s repairs from now on: told with the next line if others are."""
        self.quieted[quieted.vertex.key] = quieted
        self.joined += 1
        if self.timer is None:
            self.timer = quieted.loop.call_later(SUMMARY_EVERY, self.tick)

    def tick(self) -> None:
        """An interval is over: its repairs said in one line (the log's, not left out); the
        resources repaired in none of it said again in full."""
        self.timer = None
        now = time.monotonic()
        self._say(now)
        if self.quieted:
            loop = next(iter(self.quieted.values())).loop
            self.timer = loop.call_later(SUMMARY_EVERY, self.tick)

    def _say(self, now: float) -> None:
        live = {k: q for k, q in self.quieted.items() if MUTED.get(k) is q}
        counted = [q for q in live.values() if q.count]
        for key, quieted in list(live.items()):
            if not quieted.count:  # quiet: the next repair is said in full
                quieted.end()
                del live[key]
        self.quieted = live
        if len(counted) == 1:
            counted[0]._say(now)
        elif counted:
            counted.sort(key=lambda q: -q.count)
            verbs = {_verb(q.vertex, q.apply) for q in counted}
            verb = verbs.pop() if len(verbs) == 1 else "changed"
            named = ", ".join(f"{q.vertex.res} {q.count}" for q in counted[:NAMED])
            more = f" and {len(counted) - NAMED} more" if len(counted) > NAMED else ""
            new = f", {self.joined} of them since the last such line" if self.joined else ""
            # Each one's kind, name and count, for a structured log (--log-format json: its
            # `resources`), where the line names only the NAMED most repaired; past LISTED,
            # how many more and their repairs (`more`).
            every = [(q.vertex.res.kind, q.vertex.res.name, q.count) for q in counted[:LISTED]]
            rest = counted[LISTED:]
            log.info(
                "%d resources %s %d times in the last %.0f s, their lines summed up%s: %s%s "
                "(mgmt status counts each; --verbose says each)",
                len(counted), verb, sum(q.count for q in counted),
                max(now - q.started for q in counted), new, named, more,
                extra={"res_counts": every, "res_more": (len(rest), sum(q.count for q in rest))},
            )  # fmt: skip
            for quieted in counted:
                quieted.count, quieted.started = 0, now
        self.joined = 0

    async def aclose(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._say(time.monotonic())
        for quieted in self.quieted.values():
            quieted.end()
        self.quieted = {}


def _verb(vertex: Vertex, apply: bool) -> str:
    if not vertex.res.DRIFTS:
        return "ran again"
    return "repaired" if apply else "found changed (noop)"


def _done(vertex: Vertex, apply: bool, count: int) -> str:
    verb, _, noop = _verb(vertex, apply).partition(" (")
    times = "once" if count == 1 else f"{count} times"
    return f"{verb} {times}" + (f" ({noop}" if noop else "")


def _quiet(vertex: Vertex, now: float, repairs: deque[float], apply: bool) -> None:
    """Count a repair of a resource summed up already; else, its QUIET_AFTER-th within
    SUMMARY_EVERY s, leave its next repairs' lines out (`Quieted`), said in one line."""
    quieted = MUTED.get(vertex.key)
    if quieted is not None:
        quieted.count += 1
        quieted.last = now
        return
    if len(repairs) < QUIET_AFTER or now - repairs[-QUIET_AFTER] > SUMMARY_EVERY:
        return
    logger = vertex.handle.logger
    if logger.isEnabledFor(logging.DEBUG):  # --verbose: every line, as asked
        return
    quieting = vertex.handle.shared.get(QUIETED, Quieting)
    try:
        quieted = Quieted(vertex, apply, now, quieting)
    except RuntimeError:  # no running loop (a test's direct call): nothing to sum up with
        return
    if not any(MUTED.get(key) is one for key, one in quieting.quieted.items()):
        took = now - repairs[-QUIET_AFTER]  # (else: told in the next line, with the others)
        logger.traffic(
            "%s %s: its next repairs are summed up in one line every %.0f s while they go on "
            "(--verbose: each)",
            _done(vertex, apply, QUIET_AFTER),
            f"in {took:.0f} s" if took >= 1 else "in under a second",
            SUMMARY_EVERY,
        )
    MUTED[vertex.key] = quieted
    quieting.add(quieted)


def _repaired(
    vertex: Vertex, now: float, causes: deque[str | None], cause: str | None, apply: bool
) -> None:
    stats = vertex.stats
    repairs = stats.repairs
    if repairs is None:  # (a new vertex: what its key's former vertex left is not its own)
        repairs = stats.repairs = deque(maxlen=max(REPAIRS, QUIET_AFTER))
        causes.clear()
    elif repairs and now - repairs[-1] > WINDOW:  # left alone for a while: a new burst
        repairs.clear()
        causes.clear()
        stats.churn_told = False
    repairs.append(now)
    causes.append(cause)
    _quiet(vertex, now, repairs, apply)
    if stats.churn_told:
        stats.churn += 1
    elif len(repairs) >= REPAIRS and now - repairs[-REPAIRS] <= WINDOW:
        stats.churn_told = True
        stats.churn += REPAIRS
        vertex.handle.logger.warning(
            "%s", _told(vertex, max(now - repairs[-REPAIRS], 1.0), causes, apply)
        )


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
