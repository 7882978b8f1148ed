from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.events import VertexChanged
from engine.graph import Edge, Graph
from engine.meta import Meta
from tests.engine import probe


@pytest.fixture(autouse=True)
def _fresh_probes() -> None:
    probe.STATE.clear()


def make_graph(
    names: str | list[str],
    edges: list[tuple[str, str]] = (),  # type: ignore[assignment]
    notify: bool = False,
    **params: dict[str, object],
) -> Graph:
    """Probes named by `names` (a string of one-letter names, or a list), edges between them."""
    graph = Graph("test")
    for name in names:
        kwargs = dict(params.get(name, {}))
        meta = kwargs.pop("meta", None)
        graph.add(probe.ProbeRes(name=name, meta=meta or Meta(), **kwargs))  # type: ignore[arg-type]
    for src, dst in edges:
        graph.connect(("probe", src), ("probe", dst), Edge(notify=notify))
    return graph


@pytest.fixture
def collector() -> Iterator[None]:
    """The cycle collector on and nothing frozen for the test, as it was afterwards."""
    was = gc.isenabled()
    gc.enable()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = Engine(hostname="test", prefix=tmp_path)
    yield eng
    await eng.stop(graceful=False)


async def settle(eng: Engine, pred: Callable[[], bool] | None = None, timeout: float = 10) -> None:
    """Wait (bounded) until `pred()` holds, re-checked on every engine notification.

    Default: every vertex is OK or failed (FAILED, DEAD), or blocked behind a failed one.
    """

    def default() -> bool:
        return all(
            ((v.status is Status.OK or v.failed) and not v.dirty.is_set()) or eng.blocked(v)
            for v in eng.vertices.values()
        )

    check = pred or default
    changed = asyncio.Event()
    unsubscribe = eng.listeners.subscribe(VertexChanged, lambda _event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()
