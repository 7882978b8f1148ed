"""Collected resources in O(change) (issue 16): an unchanged record gives the very resource
object built last time (kept by the engine on an identity check), a changed one a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.graph import Graph
from engine.world import Exported
from mgmt.cluster.link import ClusterLink
from mgmt.collectscope import Collect
from mgmt.yamlgraph import Loaded
from resources.file import FileRes
from tests.mgmt.cluster.helpers import options


async def test_unchanged_records_give_the_same_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link.records = [
        Exported.of("db1", FileRes(name=f"/srv/shared/f{i}", content=f"{i}\n")) for i in range(20)
    ]
    loaded = Loaded(Graph("local"), collect=[Collect("file", "/srv/shared/")])
    link._published = []  # nothing to publish: keep the cluster out of it
    first = await link.graph_for(loaded)
    built: list[str] = []
    original = Exported.build

    def counting(self: Exported, *args: object, **kwargs: object) -> object:
        built.append(self.name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Exported, "build", counting)
    link.records = [  # as read again from etcd: new record objects, one changed
        Exported.of("db1", FileRes(name=f"/srv/shared/f{i}", content="x\n" if i == 3 else f"{i}\n"))
        for i in range(20)
    ]
    second = await link.graph_for(loaded)
    assert built == ["/srv/shared/f3"]
    for key, res in first.vertices.items():
        assert (second.vertices[key] is res) == (key != ("file", "/srv/shared/f3"))
    await link.cluster.client.close()
