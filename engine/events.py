"""What the engine tells its listeners, and the one way to subscribe.

Listeners (the converger, metrics, tests, benchmarks) observe the engine; they are not part of
scheduling. A *refresh* is something else: what a `notify` edge sends to a Refreshable vertex.

    unsubscribe = engine.listeners.subscribe(VertexChanged, lambda event: ...)

Every event is a small frozen dataclass; a listener is called synchronously, on the loop, for the
events of the type it subscribed to, and must not block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from engine.engine import Vertex


@dataclass(frozen=True, slots=True)
class VertexChanged:
    """A vertex changed status or was poked (it has work pending)."""

    vertex: Vertex


@dataclass(frozen=True, slots=True)
class CheckApplied:
    """A check_apply ended: `changed` is None when it failed with `error`."""

    vertex: Vertex
    apply: bool
    changed: bool | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class GraphSwapped:
    """A graph was applied (the first one too): counts of vertices kept, stopped and started."""

    kept: int
    stopped: int
    started: int


Event = VertexChanged | CheckApplied | GraphSwapped
E = TypeVar("E", VertexChanged, CheckApplied, GraphSwapped)


class Listeners:
    """Listeners by event type. `subscribe()` returns the unsubscribe callable."""

    def __init__(self) -> None:
        self._by_type: dict[type[Any], list[Callable[[Any], None]]] = {}

    def subscribe(self, event_type: type[E], listener: Callable[[E], None]) -> Callable[[], None]:
        listeners = self._by_type.setdefault(event_type, [])
        listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):  # unsubscribing twice is harmless
                listeners.remove(listener)

        return unsubscribe

    def wants(self, event_type: type[Any]) -> bool:
        """Whether anyone listens to `event_type` (lets a hot path skip building the event)."""
        return bool(self._by_type.get(event_type))

    def emit(self, event: Event) -> None:
        for listener in list(self._by_type.get(type(event), ())):
            listener(event)
