"""The status model on a real engine running a real file resource."""

from __future__ import annotations

import json
from pathlib import Path

from engine.engine import Engine
from engine.graph import Graph
from mgmt.status.model import StatusModel
from resources.file import FileRes
from tests.engine.conftest import settle


async def test_the_encoded_snapshot_is_shared_until_something_changes(tmp_path: Path) -> None:
    """Every client of /api/status and /api/events gets the same bytes, encoded once per change
    (encoding a large graph's snapshot per request let a local user stall drift repair)."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    try:
        graph = Graph("g")
        graph.add(FileRes(name="f", path=f"{tmp_path}/f", content="x"))
        await engine.apply(graph)
        await settle(engine)
        first = model.snapshot_json()
        assert model.snapshot_json() is first
        assert json.loads(first) == json.loads(json.dumps(model.snapshot()))
        (tmp_path / "f").unlink()
        await settle(engine, (tmp_path / "f").exists)
        await settle(engine)
        after = model.snapshot_json()
        assert after is not first
        assert json.loads(after)["events"][-1]["what"] == "repaired"
    finally:
        model.close()
        await engine.stop(graceful=False)
