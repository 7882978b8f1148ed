"""Collected resources in O(change) (issue 16): an unchanged record gives the very resource
object built last time (kept by the engine on an identity check), a changed one a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.derive import Change, derive
from engine.engine import SMALL, Engine
from engine.events import GraphSwapped
from engine.graph import Edge, Graph
from engine.world import Exported
from mgmt.cluster.link import ClusterLink
from mgmt.collectscope import Collect
from mgmt.yamlgraph import Loaded
from resources.file import FileRes
from resources.noop import NoopRes
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


def _records(count: int, version: str) -> list[Exported]:
    return [
        Exported.of("db1", FileRes(name=f"/srv/shared/f{i}", content=f"{version} {i}\n"))
        for i in range(count)
    ]


async def test_a_collected_change_swaps_in_o_change(tmp_path: Path) -> None:
    """More collected resources changed than the engine looks for unaided (SMALL): the merge
    says which (`since`), so the engine swaps those alone and keeps every local vertex."""
    changed = SMALL + 6
    local = Graph("local")
    for i in range(500):
        local.add(NoopRes(name=f"n{i}"))
    local.connect(("noop", "n0"), ("noop", "n1"))
    loaded = Loaded(local, collect=[Collect("file", "/srv/shared/")])
    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link._published = []  # nothing to publish: keep the cluster out of it
    link.records = _records(changed, "a")
    engine = Engine(hostname="web1", prefix=tmp_path / "prefix", noop=True)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    try:
        graph, since = await link.merge(loaded)
        assert since is None  # the first merge is a full one
        await engine.apply(graph, since)
        before = dict(engine.vertices)
        link.records = _records(changed, "b")[: changed - 1]  # all changed, the last one gone
        graph, since = await link.merge(loaded)
        assert since is not None and len(since[1]) == changed
        await engine.apply(graph, since)
        swap = swaps[-1]
        shared = {("file", f"/srv/shared/f{i}") for i in range(changed - 1)}
        assert swap.replaced == shared and swap.removed == {("file", f"/srv/shared/f{changed - 1}")}
        assert swap.kept == len(local)
        for key in local.vertices:
            assert engine.vertices[key] is before[key]
        assert ("noop", "n1") in engine.graph.succ[("noop", "n0")]
        # A local edit that does not derive from the last local graph: merged in full.
        again = Loaded(local.copy(), collect=loaded.collect)
        assert (await link.merge(again))[1] is None
    finally:
        await engine.stop()
        await link.cluster.client.close()


async def test_a_clash_is_merged_in_full(tmp_path: Path) -> None:
    """A collected resource of a key the local graph has: the local one wins (full merge)."""
    local = Graph("local")
    local.add(FileRes(name="/srv/shared/f0", content="local\n"))
    loaded = Loaded(local, collect=[Collect("file", "/srv/shared/")])
    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link._published = []
    link.records = _records(1, "a")[1:]
    try:
        await link.merge(loaded)
        link.records = _records(2, "a")
        graph, since = await link.merge(loaded)
        assert since is None
        assert (
            graph.vertices[("file", "/srv/shared/f0")] is local.vertices[("file", "/srv/shared/f0")]
        )
        assert ("file", "/srv/shared/f1") in graph
    finally:
        await link.cluster.client.close()


async def test_a_local_edge_change_is_merged_and_swapped_in_o_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edge the local graph connects and one it disconnects (named by `since`) are made in
    the last merged graph (engine.derive.derive), and the engine swaps just those."""
    local = Graph("local")
    for i in range(50):
        local.add(NoopRes(name=f"n{i}"))
    n0, n1, n2, n3 = (("noop", f"n{i}") for i in range(4))
    local.connect(n0, n1)
    loaded = Loaded(local, collect=[Collect("file", "/srv/shared/")])
    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link._published = []  # nothing to publish: keep the cluster out of it
    link.records = _records(5, "a")
    engine = Engine(hostname="web1", prefix=tmp_path / "prefix", noop=True)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    try:
        graph, since = await link.merge(loaded)
        await engine.apply(graph, since)
        prepares: list[Graph] = []
        monkeypatch.setattr(engine, "prepare", prepares.append)
        derived = derive(
            local, Change(connect=[(n2, n3, Edge(notify=True))], disconnect=[(n0, n1)])
        )
        edited = Loaded(derived.graph, collect=loaded.collect)
        edited.since = (local, derived.touched)
        graph, since = await link.merge(edited)
        assert since is not None and since[1] == {n0, n1, n2, n3}
        assert graph.succ[n2] == {n3: Edge(notify=True)} and not graph.succ[n0]
        assert len(graph) == 55  # the collected resources are still there
        await engine.apply(graph, since)
        assert not prepares and swaps[-1].rewired == {n0, n1, n2, n3}
        assert engine.graph.succ[n2] == {n3: Edge(notify=True)} and not engine.graph.pred[n1]
    finally:
        await engine.stop()
        await link.cluster.client.close()


async def test_comparing_the_collected_set_encodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: every watch event compared the collected set with the running one by the JSON
    of each collected record (O(collected) encodings per event); an unchanged record is the
    same object at each read (decoded once per revision), so identity checks decide."""
    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link._published = []  # nothing to publish: keep the cluster out of it
    loaded = Loaded(Graph("local"), collect=[Collect("file", "/srv/shared/")])
    records = _records(50, "a")
    link.records = list(records)
    await link.graph_for(loaded)
    encoded: list[str] = []
    original = Exported.to_json

    def counting(self: Exported) -> str:
        encoded.append(self.name)
        return original(self)

    monkeypatch.setattr(Exported, "to_json", counting)
    changed = Exported.of("db1", FileRes(name="/srv/shared/f7", content="b\n"))
    link.records = [changed if r.name == changed.name else r for r in records]  # a new read
    graph = await link.graph_for(loaded)
    assert graph.vertices[("file", "/srv/shared/f7")].content == "b\n"  # type: ignore[attr-defined]
    assert encoded == []
    assert any(record is changed for record in link._running)
    await link.cluster.client.close()


async def test_a_collected_change_decides_that_record_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: each watch event went through every record's collect scope (selects, refusal:
    paths normalised, params checked): at 2,000 collected records ~20 ms for one change. A
    record object seen before (res_list gives the same object until its key's revision
    changes) keeps its decision while the collect entries stay the same."""
    from mgmt.cluster import link as link_module

    link = ClusterLink(options("web1"), tmp_path, lambda: None)
    link._published = []  # nothing to publish: keep the cluster out of it
    entries = [Collect("file", "/srv/shared/")]
    records = [*_records(50, "a"), Exported("db1", "file", "/srv/shared/x", {"follow": True})]
    link.records = list(records)
    await link.graph_for(Loaded(Graph("local"), collect=entries))
    selected: list[str] = []
    selects = link_module.selects

    def counting(collect: Collect, record: Exported) -> bool:
        selected.append(record.name)
        return selects(collect, record)

    monkeypatch.setattr(link_module, "selects", counting)
    changed = Exported.of("db1", FileRes(name="/srv/shared/f7", content="b\n"))
    link.records = [changed if r.name == changed.name else r for r in records]
    graph = await link.graph_for(Loaded(Graph("local"), collect=list(entries)))
    assert selected == ["/srv/shared/f7"]
    assert graph.vertices[("file", "/srv/shared/f7")].content == "b\n"  # type: ignore[attr-defined]
    assert ("file", "/srv/shared/x") not in graph.vertices  # still refused (its follow)
    selected.clear()
    narrower = [Collect("file", "/srv/shared/f1")]  # other entries: every record again
    graph = await link.graph_for(Loaded(Graph("local"), collect=narrower))
    assert len(selected) == len(records)
    assert sorted(r.name for r in graph) == [f"/srv/shared/f1{i}" for i in ["", *range(10)]]
    await link.cluster.client.close()
