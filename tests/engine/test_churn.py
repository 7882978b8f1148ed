"""Churn (engine.churn) in a real engine on a real file: drift repaired again and again is told
once, then counted; a resource's first application, and a kind of actions, are not drift."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from engine import churn
from engine.engine import Engine
from engine.graph import Graph
from resources.exec import ExecRes
from resources.file import FileRes
from tests.engine.conftest import settle


async def test_repairs_of_drift_are_told_once_a_burst_then_counted(
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(churn, "REPAIRS", 3)
    path = tmp_path / "f"
    graph = Graph("g")
    graph.add(FileRes(name="f", path=str(path), content="ours\n"))
    graph.add(ExecRes(name="e", cmd="true", watchcmd="echo a; echo b; echo c; echo d"))
    await engine.apply(graph)
    await settle(engine, path.exists)
    vertex = engine.vertices[("file", "f")]
    assert vertex.stats.churn == 0  # its first application is not a repair
    for n in range(4):  # drift by another process, repaired each time
        path.write_text(f"theirs {n}\n")
        await settle(engine, lambda: path.read_text() == "ours\n")
        await settle(engine)
    told = [r.getMessage() for r in caplog.records if "behind our back" in r.getMessage()]
    assert told == [told[0]] and told[0].startswith("file[f]: changed behind our back 3 times")
    assert vertex.stats.churn == 4  # the 3 told, then one more
    assert engine.vertices[("exec", "e")].stats.churn == 0  # its runs are actions
    # After WINDOW seconds of quiet, a new burst is told again.
    later = vertex.stats.repairs[-1] + churn.WINDOW + 1  # type: ignore[index]
    for n in range(3):
        churn._repaired(vertex, later + n, deque(), None, True)
    told = [r.getMessage() for r in caplog.records if "behind our back" in r.getMessage()]
    assert len(told) == 2 and vertex.stats.churn == 7
