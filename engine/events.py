"""What the engine tells its listeners, and the one way to subscribe.

Listeners (the converger, metrics, tests, benchmarks) observe the engine; they are not part of
scheduling. A *refresh* is something else: what a `notify` edge sends to a Refreshable vertex.

    unsubscribe = engine.listeners.subscribe(VertexChanged, lambda event: ...)

Every event is small and immutable: a frozen dataclass, or a NamedTuple for CheckApplied (one
per check_apply: made in half the instructions). A listener is called synchronously, on the
loop, for the events of the type it subscribed to, and must not block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from engine.engine import Vertex


@dataclass(frozen=True, slots=True)
class VertexChanged:
    """A vertex (re)set its status, or was poked while OK (it has work pending: not settled),
    or a poll tick relabelled its pending work (Vertex.poke)."""

    vertex: Vertex


class CheckApplied(NamedTuple):
    """A check_apply ended: `changed` is None when it failed with `error`."""

    vertex: Vertex
    apply: bool
    changed: bool | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class VertexFailed:
    """A vertex's watch or init() failed (`where`); a check_apply's failure is CheckApplied's.
    `hard`: for good (the vertex is DEAD until revived or replaced), else its watch restarts."""

    vertex: Vertex
    error: BaseException
    where: str
    hard: bool


@dataclass(frozen=True, slots=True)
class GraphSwapped:
    """A graph was applied (the first one too): counts of vertices kept, stopped and started.

    `replaced` names the vertices a small swap replaced or added (nothing else changed but
    `removed`, so a listener may update just those); None for any other swap. `added`: those of
    `replaced` that are new. `rewired`: kept vertices whose edges a small swap changed (a
    failure upstream may now block them, or no longer). `joined` and `left`: the resources a
    small swap added to a group or removed from one (no vertex of their own: their group's is
    in `replaced`). After a full swap (`replaced` None), `gone`: the keys that left the graph,
    and `counted`: how many resources of each kind (grouped ones included) the vertices it
    started hold, less those it stopped: what a listener needs to follow the graph without a
    walk of all its vertices (the converger, the status model, metrics).
    """

    kept: int
    stopped: int
    started: int
    replaced: frozenset[tuple[str, str]] | None = None
    added: frozenset[tuple[str, str]] = frozenset()
    removed: frozenset[tuple[str, str]] = frozenset()
    rewired: frozenset[tuple[str, str]] = frozenset()
    joined: frozenset[tuple[str, str]] = frozenset()
    left: frozenset[tuple[str, str]] = frozenset()
    gone: frozenset[tuple[str, str]] = frozenset()
    counted: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ReversalsChanged:
    """A reversal (meta reverse) was done, failed, or is to be retried: see the engine's
    `reverser` (`retrying()`, `failed()`)."""


Event = VertexChanged | CheckApplied | VertexFailed | GraphSwapped | ReversalsChanged
E = TypeVar("E", VertexChanged, CheckApplied, VertexFailed, GraphSwapped, ReversalsChanged)


class Listeners:
    """Listeners by event type. `subscribe()` returns the unsubscribe callable."""

    def __init__(self) -> None:
        self._by_type: dict[type[Any], list[Callable[[Any], None]]] = {}

    def subscribe(self, event_type: type[E], listener: Callable[[E], None]) -> Callable[[], None]:
        listeners = self.of(event_type)
        listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):  # unsubscribing twice is harmless
                listeners.remove(listener)

        return unsubscribe

    def of(self, event_type: type[E]) -> list[Callable[[E], None]]:
        """The live list of the listeners of `event_type` (for a hot path: empty means nobody
        listens, so the event need not be built)."""
        return self._by_type.setdefault(event_type, [])

    def emit(self, event: Event) -> None:
        for listener in list(self._by_type.get(type(event), ())):
            listener(event)
