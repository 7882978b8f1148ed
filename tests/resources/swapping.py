"""What the tests of a shared server's members (http:server:file, :ui, :proxy, tftp:file,
dhcp:host, dhcp:range) use to ask the server during a real swap of a real engine, at the moment
that matters: a swap that replaces a member stops it (its cleanup() runs) before its
successor's init(). `at_successor_init` asks the server then, as the successor's init() begins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from engine.engine import Engine
from engine.graph import Graph
from engine.resource import Resource
from tests.engine.conftest import settle

T = TypeVar("T")
R = TypeVar("R", bound=Resource)


def graph_of(*resources: object) -> Graph:
    graph = Graph("t")
    for res in resources:
        graph.add(res)  # type: ignore[arg-type]
    return graph


async def swap(engine: Engine, *resources: object) -> None:
    """Swap the engine to a graph of `resources`, and wait until it has settled."""
    await engine.apply(graph_of(*resources))
    await settle(engine)


def at_successor_init(
    monkeypatch: pytest.MonkeyPatch,
    kind: type[R],
    successor: Callable[[R], bool],
    ask: Callable[[], Awaitable[T]],
) -> list[T]:
    """The list that gets what `ask()` returns when the init() of a resource of class `kind`
    that `successor(res)` picks begins (its predecessor in the swap stopped already)."""
    asked: list[T] = []
    real_init = kind.init

    async def init(self: R, handle: Any) -> None:
        if successor(self):
            asked.append(await ask())
        await real_init(self, handle)

    monkeypatch.setattr(kind, "init", init)
    return asked
