"""Meta parameters: the engine-level settings every resource has (`meta:` in a graph file).

Names and defaults are mgmt's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from engine.errors import ValidationError
from engine.params import parse_int, show

# The longest wait between retries: a day, in milliseconds. A retry further away is a mistake
# (seconds for milliseconds?), and a cron run waits for it: `delay: 9223372036854775807` logged
# `retrying in 9.22337e+15s` and never ended. (mgmt's Delay is a uint64 of milliseconds.)
MAX_DELAY = 86_400_000
# The longest poll interval, in seconds: mgmt's Poll is an int32 (about 68 years).
MAX_POLL = 2**31 - 1
# What Go's strconv.Atoi takes (a sign, ASCII digits), within 64 bits: mgmt refuses a
# semaphore id it parses (`_bare_number`).
_GO_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(kw_only=True, frozen=True)
class Meta:
    """The engine's settings of one resource (its `meta:` in a graph file)."""

    # Run check_apply with apply=False: report, change nothing. Default false.
    noop: bool = False
    # Retries after a failure before the vertex is failed; -1 retries forever. Default 0.
    retry: int = 0
    # A check_apply that succeeds resets the retry counter (mgmt's: without it the retries are
    # spent for the life of the resource, by kind and name). Default false.
    retryreset: bool = False
    # Milliseconds to wait between retries, at most MAX_DELAY (a day). Default 0.
    delay: int = 0
    # Milliseconds a single check_apply may take before it is a failure (mgmt's unit: a graph
    # written for mgmt means the same here); 0 = no limit. Default 0.
    timeout: int = 0
    # Seconds between polls instead of watching; 0 = use the resource's watch; -1 = neither:
    # the startup event only, the resource is applied once (mgmt's); at most MAX_POLL. Default 0.
    poll: int = 0
    # Events processed per second at most (token bucket); inf = no limit. Default inf.
    limit: float = field(default=math.inf, metadata={"inf": True})
    # Events allowed at once under `limit`; at least 1 when a limit is set (0 would block
    # every event for ever: refused, as mgmt's Validate does). Default 0.
    burst: int = 0
    # A resource replaced by a changed one at a graph swap starts with a fresh retry counter
    # (mgmt's: without it the counter survives the change). Default false.
    reset: bool = False
    # Named counting semaphores held during check_apply: "id" (size 1) or "id:N". Default none.
    sema: list[str] = field(default_factory=list)
    # Restart the watch if it fails instead of failing the vertex. Default false.
    rewatch: bool = False
    # Let the engine add automatic edges for this resource. Default true.
    autoedge: bool = True
    # Let the engine group this resource with compatible ones. Default true.
    autogroup: bool = True
    # Keep the vertex in the graph but never apply it. Default false.
    hidden: bool = False
    # Hosts allowed to collect this exported resource ("*" = all). Default all.
    export: list[str] = field(default_factory=list)
    # Undo the change when the resource leaves the graph. Default false.
    reverse: bool = False
    # Allow a name that starts with `$` (refused otherwise: a variable not interpolated, as
    # mgmt's engine.Validate says). Default false.
    dollar: bool = False
    # A swap that removes or replaces the resource first lets it run once since its last event
    # or poke (and its predecessors before it), unless a failure blocks it (mgmt's). Default
    # false.
    realize: bool = False
    # mgmt's: the check_apply may go on while a graph swap runs. Ours always may: a swap never
    # pauses the vertices it keeps, and waits for a running check of one it removes or
    # replaces, as mgmt's does for an async one. Accepted, changes nothing. Default unset.
    async_: bool | None = field(default=None, metadata={"key": "async"})

    def __post_init__(self) -> None:
        if self.retry < -1:
            raise ValidationError(f"must be -1 (forever) or >= 0, got {self.retry}", "retry")
        for name in ("delay", "timeout", "burst"):
            if getattr(self, name) < 0:
                raise ValidationError(f"must be >= 0, got {getattr(self, name)}", name)
        if self.delay > MAX_DELAY:
            raise ValidationError(
                f"must be at most {MAX_DELAY} ms (a day) between retries, got {self.delay}", "delay"
            )
        if not -1 <= self.poll <= MAX_POLL:
            raise ValidationError(
                f"must be -1 (once), 0 (watch) or from 1 to {MAX_POLL} s, got {self.poll}", "poll"
            )
        if not self.limit > 0:
            raise ValidationError(f"must be > 0 events/s (or inf), got {self.limit}", "limit")
        if self.burst == 0 and self.limit != math.inf:  # mgmt's MetaParams.Validate
            raise ValidationError(
                f"must be >= 1 with a limit ({self.limit:g}/s): 0 lets no event through", "burst"
            )
        names = [sema_size(entry)[0] for entry in self.sema]
        if len(set(names)) != len(names):
            raise ValidationError(f"names a semaphore twice: {show(self.sema)}", "sema")
        if "" in self.export:  # mgmt's MetaParams.Validate
            raise ValidationError(f"an empty host name: {show(self.export)}", "export")
        if self.async_:  # mgmt's MetaParams.Validate
            for other in ("hidden", "export", "realize"):
                if getattr(self, other):
                    raise ValidationError(f"cannot be combined with {other}", "async")


def check_name(name: str, meta: Meta) -> None:
    """A name that starts with `$` is refused unless meta dollar (mgmt's engine.Validate: more
    likely a variable that was not interpolated than a name)."""
    if name.startswith("$") and not meta.dollar:
        raise ValidationError(
            f"starts with $ (a variable not interpolated?); meta dollar: true allows it, "
            f"got {show(name)}",
            "name",
        )


def sema_size(entry: str) -> tuple[str, int]:
    """Parse a semaphore id "name" or "name:N" into (name, N). A bare number ("5": a size
    without its id?) is refused, as mgmt's Validate does."""
    if _bare_number(entry):
        raise ValidationError(f"expected 'id' or 'id:N', got a bare number {show(entry)}", "sema")
    name, sep, size = entry.rpartition(":")
    if not sep:
        name, size = entry, "1"
    try:
        count = parse_int(size, low=1)
    except ValidationError:
        count = 0
    if not name or count < 1:
        raise ValidationError(f"expected 'id' or 'id:N' with N >= 1, got {show(entry)}", "sema")
    return name, count


def _bare_number(entry: str) -> bool:
    """Whether Go's strconv.Atoi parses `entry` (past 64 bits it fails: mgmt takes the entry
    as an id, and so do we)."""
    return _GO_INT.fullmatch(entry) is not None and -(2**63) <= int(entry) < 2**63
