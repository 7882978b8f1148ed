"""A diamond (an edge beside a longer path to the same vertex) settles after graph swaps.

The scheduler's timestamps once livelocked on it: the far vertex, poked by its near
predecessor, back-poked the other one, whose run poked both again, and the far vertex ran
before the near one every time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.graph import Edge, Graph
from resources.file import FileRes
from tests.engine.conftest import settle

HANG = 20  # seconds: only a bound against a hang (a settled diamond takes milliseconds)


def diamond(root: Path, contents: dict[str, str], long_path: int) -> Graph:
    """Files a -> c directly and a -> b1 -> ... -> bN -> c (N = `long_path`)."""
    graph = Graph("g")
    names = ["a", *(f"b{i}" for i in range(1, long_path + 1)), "c"]
    for name in names:
        path = root / "out" / name
        graph.add(FileRes(name=name, path=str(path), content=contents.get(name, "")))
    for src, dst in [*itertools.pairwise(names), ("a", "c")]:
        graph.connect(("file", src), ("file", dst), Edge())
    return graph


@pytest.mark.parametrize("long_path", [1, 3])
@pytest.mark.parametrize("small", [True, False])
async def test_a_diamond_settles_after_a_swap_replaces_a_vertex_on_its_long_side(
    tmp_path: Path, long_path: int, small: bool
) -> None:
    """A vertex on the long side replaced (its content changed): it runs after the one it
    depends on, and the far vertex after both sides, then everything is still (a settle that
    never comes is the livelock)."""
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    try:
        first = diamond(tmp_path, {}, long_path)
        await engine.apply(first)
        await settle(engine, timeout=HANG)
        for step in range(3):
            contents = {"b1": f"{step}\n"}
            given = diamond(tmp_path, contents, long_path)
            await engine.apply(given, (first, frozenset({("file", "b1")})) if small else None)
            await settle(engine, timeout=HANG)
            assert (tmp_path / "out" / "b1").read_text() == f"{step}\n"
            # The far vertex last ran after both sides. (Not every vertex after its
            # predecessors: the top's last run may be the one the far vertex asked for alone.)
            far = engine.vertices["file", "c"]
            for pred in engine.predecessors(far):
                assert pred.ts < far.ts, pred
            first = given
    finally:
        await engine.stop(graceful=False)
