"""Graph swaps in O(change) for the kinds of change that prepared the whole graph until
2026-12-06 (issue 16, helper prepall): a file moved with automatic edges off, or opted out of
them; a resource with semaphores added, removed or given others; a Groupable resource that
autogroup does not group (autogroup off, or its meta autogroup off). Counted by the engine's
own account (prepare() called or not, the swap's GraphSwapped), never timed; each result
checked against a full prepare() of the same graph.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from engine.derive import Change, derive
from engine.engine import Engine, same
from engine.errors import GraphError
from engine.events import GraphSwapped
from engine.graph import Edge, Graph, key_of
from engine.meta import Meta
from engine.resource import members
from resources.file import FileRes
from tests.engine.conftest import settle
from tests.engine.probe import GroupProbe, ProbeRes
from tests.engine.test_small_swap import changed_keys, count_calls, prepared_edges

N = 100


async def started(
    engine: Engine, graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[object], list[GraphSwapped]]:
    """`graph` applied and settled; then the prepares counted, the swaps told."""
    await engine.apply(graph)
    await settle(engine)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    return count_calls(monkeypatch, engine, "prepare_steps"), swaps


async def swapped(engine: Engine, base: Graph, change: Change) -> Graph:
    """`base` with `change` applied as a front-end gives it (with `since`), and settled."""
    out = derive(base, change)
    await engine.apply(out.graph, (base, out.touched))
    await settle(engine)
    return out.graph


def as_prepared(engine: Engine, graph: Graph, tmp_path: Path) -> None:
    """The running graph has the vertices and edges of a full prepare() of `graph`."""
    full = graph.copy()
    Engine(
        hostname="test",
        prefix=tmp_path / "prefix",
        autoedges=engine.autoedges,
        autogroup=engine.autogroup,
    ).prepare(full)
    assert engine.graph.vertices.keys() == full.vertices.keys()
    assert prepared_edges(engine.graph) == prepared_edges(full)


def in_dir(tmp_path: Path, count: int) -> Graph:
    """`count` files in `out/`, and a directory resource managing `out/sub/`."""
    graph = Graph("files")
    for i in range(count):
        graph.add(FileRes(name=f"f{i}", path=str(tmp_path / "out" / f"f{i}"), content=f"{i}\n"))
    graph.add(FileRes(name="sub", path=f"{tmp_path}/out/sub/", state="exists"))
    return graph


@pytest.mark.parametrize("autoedges", [False, True])
async def test_a_file_moved_is_swapped_alone_with_automatic_edges_off_or_opted_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autoedges: bool
) -> None:
    """With automatic edges off (`autoedges=False`) a file whose path changes was swapped by
    preparing the whole graph (no index of the automatic edges to ask); so was one that opted
    out of them (meta autoedge false). Now only what it manages changes: its old path freed,
    its new one claimed, a clash refused with nothing changed, all without prepare()."""
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", autoedges=autoedges)
    try:
        first = in_dir(tmp_path, N)
        key = ("file", "f5")
        meta = Meta(autoedge=False)
        first.vertices[key] = FileRes(name="f5", path=str(tmp_path / "out" / "f5"), meta=meta)
        prepares, swaps = await started(engine, first, monkeypatch)
        before = dict(engine.vertices)
        inside = str(tmp_path / "out" / "sub" / "f5")
        second = await swapped(
            engine,
            first,
            Change(put={key: FileRes(name="f5", path=inside, content="in\n", meta=meta)}),
        )
        assert not prepares and swaps[-1].replaced == {key} and not swaps[-1].rewired
        assert (tmp_path / "out" / "sub" / "f5").read_text() == "in\n"
        assert all(engine.vertices[k] is v for k, v in before.items() if k != key)
        as_prepared(engine, second, tmp_path)
        onto = FileRes(name="f5", path=str(tmp_path / "out" / "f7"), content="x\n", meta=meta)
        running = dict(engine.vertices)
        with pytest.raises(GraphError, match="both manage"):
            await swapped(engine, second, Change(put={key: onto}))
        assert not prepares and engine.vertices == running
        assert (tmp_path / "out" / "f7").read_text() == "7\n"
        back = FileRes(name="f5", path=str(tmp_path / "out" / "f5"), content="back\n", meta=meta)
        third = await swapped(engine, second, Change(put={key: back}))
        assert not prepares and (tmp_path / "out" / "f5").read_text() == "back\n"
        as_prepared(engine, third, tmp_path)
        if not autoedges:  # any file moves alone then, even into the managed directory
            moved = FileRes(name="f6", path=str(tmp_path / "out" / "sub" / "f6"), content="6\n")
            fourth = await swapped(engine, third, Change(put={("file", "f6"): moved}))
            assert not prepares and swaps[-1].replaced == {("file", "f6")}
            as_prepared(engine, fourth, tmp_path)
    finally:
        await engine.stop(graceful=False)


def with_semas(count: int) -> Graph:
    graph = Graph("test")
    for i in range(count):
        sema = ["s:2"] if i % 10 == 0 else []
        graph.add(ProbeRes(name=f"p{i}", meta=Meta(sema=sema)))
    return graph


async def test_resources_with_semaphores_are_added_removed_and_changed_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource with a semaphore (meta sema) added, removed, or given another semaphore
    prepared the whole graph (verify() checks one size per semaphore). Now the sizes are kept
    and each change is checked against them in O(its semaphores); one of another size still
    goes to prepare(), which refuses it as before, the running graph unchanged."""
    first = with_semas(N)
    prepares, swaps = await started(engine, first, monkeypatch)
    new = ("probe", "n")
    second = await swapped(
        engine, first, Change(put={new: ProbeRes(name="n", meta=Meta(sema=["s:2", "t:3"]))})
    )
    assert not prepares and swaps[-1].added == {new}
    changed = ProbeRes(name="p1", meta=Meta(sema=["t:3"]))
    third = await swapped(engine, second, Change(put={("probe", "p1"): changed}))
    assert not prepares and swaps[-1].replaced == {("probe", "p1")}
    assert engine.vertices[("probe", "p1")].res.meta.sema == ["t:3"]
    fourth = await swapped(engine, third, Change(remove={new, ("probe", "p0")}))
    assert not prepares and swaps[-1].removed == {new, ("probe", "p0")}

    # Its last resource gone, a semaphore may come back with another size: prepare() says so.
    holders = {k for k, r in fourth.vertices.items() if "t:3" in r.meta.sema}
    fifth = await swapped(engine, fourth, Change(remove=holders))
    assert not prepares
    other = ProbeRes(name="w", meta=Meta(sema=["t:4"]))
    sixth = await swapped(engine, fifth, Change(put={("probe", "w"): other}))
    assert len(prepares) == 1 and engine.vertices[("probe", "w")].res.meta.sema == ["t:4"]
    again = ProbeRes(name="w2", meta=Meta(sema=["t:4"]))
    seventh = await swapped(engine, sixth, Change(put={("probe", "w2"): again}))
    assert len(prepares) == 1 and swaps[-1].added == {("probe", "w2")}

    running = dict(engine.vertices)
    wrong = ProbeRes(name="x", meta=Meta(sema=["t:5"]))
    with pytest.raises(GraphError, match=r"semaphore 't' has size 4 in .* but 5"):
        await swapped(engine, seventh, Change(put={("probe", "x"): wrong}))
    assert len(prepares) == 2 and engine.vertices == running
    resized = ProbeRes(name="p10", meta=Meta(sema=["s:5"]))
    with pytest.raises(GraphError, match="semaphore 's' has size"):
        await swapped(engine, seventh, Change(put={("probe", "p10"): resized}))
    assert len(prepares) == 3 and engine.vertices == running
    # After a refusal the sizes are the running graph's again: a right one is swapped alone.
    right = ProbeRes(name="y", meta=Meta(sema=["s:2"]))
    await swapped(engine, seventh, Change(put={("probe", "y"): right}))
    assert len(prepares) == 3 and swaps[-1].added == {("probe", "y")}


def groupable(count: int, **meta: Any) -> Graph:
    graph = Graph("test")
    for i in range(count):
        graph.add(GroupProbe(name=f"g{i}", tag=str(i % 3), meta=Meta(**meta)))
    return graph


@pytest.mark.parametrize("autogroup", [False, True])
async def test_groupable_resources_that_autogroup_leaves_alone_are_swapped_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autogroup: bool
) -> None:
    """A resource of a Groupable kind (pkg) edited, added or removed prepared the whole graph
    even with autogroup off (`autogroup=False`) or its own meta autogroup off. Now it is
    swapped alone; one that autogroup may group still goes to prepare()."""
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", autogroup=autogroup)
    try:
        off = {} if not autogroup else {"autogroup": False}
        first = groupable(N, **off)
        prepares, swaps = await started(engine, first, monkeypatch)
        assert all(not v.res.grouped for v in engine.vertices.values())
        key = ("gprobe", "g4")
        second = await swapped(
            engine, first, Change(put={key: GroupProbe(name="g4", tag="x", meta=Meta(**off))})
        )
        assert not prepares and swaps[-1].replaced == {key}
        new = ("gprobe", "n")
        third = await swapped(
            engine, second, Change(put={new: GroupProbe(name="n", tag="1", meta=Meta(**off))})
        )
        assert not prepares and swaps[-1].added == {new}
        fourth = await swapped(engine, third, Change(remove={new, ("gprobe", "g5")}))
        assert not prepares and swaps[-1].removed == {new, ("gprobe", "g5")}
        as_prepared(engine, fourth, tmp_path)
        if autogroup:  # two that may be grouped: prepare() groups them
            pair = {("gprobe", m): GroupProbe(name=m, tag="1") for m in ("m1", "m2")}
            await swapped(engine, fourth, Change(put=pair))
            assert len(prepares) == 1 and ("gprobe", "m2") not in engine.vertices
    finally:
        await engine.stop(graceful=False)


def prepared_alike(graph: Graph, engine: Engine, prefix: Path) -> Graph:
    """A full prepare() of `graph` by an engine set as `engine`, on copies of its resources
    (autogroup sets the groups of those it prepares, and the running ones are `graph`'s)."""
    full = Graph(graph.name)
    full.vertices = {key: copy.copy(res) for key, res in graph.vertices.items()}
    full.succ = {key: dict(edges) for key, edges in graph.succ.items()}
    full.pred = {key: dict(edges) for key, edges in graph.pred.items()}
    alike = Engine(
        hostname="test", prefix=prefix, autoedges=engine.autoedges, autogroup=engine.autogroup
    )
    alike.prepare(full)
    return full


def groups(graph: Graph) -> dict[Any, list[Any]]:
    return {key: sorted(key_of(m) for m in members(res)) for key, res in graph.vertices.items()}


@pytest.mark.parametrize("seed", range(60))
async def test_random_swaps_of_the_new_kinds_run_the_graph_a_full_prepare_would(  # noqa: PLR0915
    tmp_path: Path, seed: int
) -> None:
    """Differential: files (moved between directories, some opted out of automatic edges)
    and groupable probes (some that autogroup may group), with semaphores of agreeing and
    disagreeing sizes, added, removed and changed a few at a time, edges too, with automatic
    edges and autogroup each on or off: after each swap the engine runs the vertices, edges
    and groups of a full prepare() of the same graph, or refused it as prepare() does, the
    running graph unchanged."""
    rng = random.Random(seed)
    engine = Engine(
        hostname="test",
        prefix=tmp_path / "prefix",
        autoedges=seed % 2 == 0,
        autogroup=seed % 4 < 2,
    )
    dirs = ["", "a/", "a/b/"]

    def meta() -> Meta:
        sema = rng.sample(["s:1", "s:2", "t:2"], rng.choice([0, 0, 0, 1, 2]))
        if len({entry[0] for entry in sema}) < len(sema):
            sema = sema[:1]
        return Meta(sema=sema, autoedge=rng.random() > 0.2, autogroup=rng.random() < 0.7)

    def res(name: str) -> Any:
        if rng.random() < 0.3:
            return GroupProbe(name=name, tag=rng.choice("xy"), meta=meta())
        where = tmp_path / "out" / rng.choice(dirs)
        if rng.random() < 0.2:
            return FileRes(name=name, path=f"{where}/", state="exists", meta=meta())
        return FileRes(name=name, path=str(where / name), content="x\n", meta=meta())

    last = Graph("g")
    for i in range(8):
        last.add(res(f"n{i}"))
    try:
        await engine.apply(last)  # (refused: the test's first graph is made again)
    except GraphError:
        last = Graph("g")
        await engine.apply(last)
    try:
        for step in range(12):
            new = last.copy()
            for _ in range(rng.randint(1, 3)):
                op = rng.random()
                if op < 0.15 and len(new) > 2:  # an edge connected or disconnected
                    src, dst = rng.sample(list(new.vertices), 2)
                    new.succ[src], new.pred[dst] = dict(new.succ[src]), dict(new.pred[dst])
                    if dst in new.succ[src]:
                        del new.succ[src][dst], new.pred[dst][src]
                    elif not new.has_path(dst, src):
                        new.connect(src, dst, Edge())
                elif op < 0.45 or len(new) < 3:
                    made = res(f"s{step}-{rng.randrange(1000)}")
                    if key_of(made) not in new:
                        new.add(made)
                elif op < 0.65:
                    key = rng.choice(list(new.vertices))
                    del new.vertices[key], new.succ[key], new.pred[key]
                    for other in new.vertices:
                        if key in new.succ[other]:
                            new.succ[other] = {k: e for k, e in new.succ[other].items() if k != key}
                        if key in new.pred[other]:
                            new.pred[other] = {k: e for k, e in new.pred[other].items() if k != key}
                else:
                    key = rng.choice(list(new.vertices))
                    old = new.vertices[key]
                    if isinstance(old, GroupProbe):  # its group's or another
                        change: dict[str, Any] = {"change": not old.change}
                        if rng.random() < 0.3:
                            change = {"tag": rng.choice("xyz")}
                    elif old.content is None:
                        change = {"path": f"{tmp_path / 'out' / rng.choice(dirs)}/"}
                    else:
                        change = {"path": str(tmp_path / "out" / rng.choice(dirs) / key[1])}
                    if rng.random() < 0.3:
                        change["meta"] = meta()
                    new.vertices[key] = dataclasses.replace(old, **change)
            changed = changed_keys(last, new)
            try:
                full: Graph | None = prepared_alike(new, engine, tmp_path / "prefix")
            except GraphError:
                full = None
            running = dict(engine.vertices)
            since = (last, changed) if rng.random() < 0.5 else None
            try:
                await engine.apply(new, since=since)
            except GraphError:
                assert full is None, (seed, step)
                assert engine.vertices == running, (seed, step)
                continue
            assert full is not None, (seed, step)
            assert engine.graph.vertices.keys() == full.vertices.keys(), (seed, step)
            assert prepared_edges(engine.graph) == prepared_edges(full), (seed, step)
            assert groups(engine.graph) == groups(full), (seed, step)
            for key, made in full.vertices.items():  # params, meta and groups' members
                assert same(engine.graph.vertices[key], made), (seed, step)
                assert same(engine.vertices[key].res, made), (seed, step)
            last = new
    finally:
        await engine.stop(graceful=False)


async def test_a_grouped_resource_changed_in_its_group_replaces_the_groups_vertex_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource that autogroup grouped (a pkg in one apt transaction with others) changed
    in what does not decide its group prepared the whole graph. Now, when it groups with every
    other candidate as it did, the group's vertex alone is replaced, with it among its
    members; one that changes its group still goes to prepare()."""
    first = Graph("test")
    for i in range(N):
        first.add(ProbeRes(name=f"p{i}"))
    for i in range(4):
        first.add(GroupProbe(name=f"g{i}", tag="a"))
    lead, member = ("gprobe", "g0"), ("gprobe", "g2")
    prepares, swaps = await started(engine, first, monkeypatch)
    assert [key_of(m) for m in engine.vertices[lead].res.grouped] == [
        ("gprobe", f"g{i}") for i in (1, 2, 3)
    ]
    before = dict(engine.vertices)
    second = await swapped(
        engine, first, Change(put={member: GroupProbe(name="g2", tag="a", change=True)})
    )
    assert not prepares and swaps[-1].replaced == {lead}
    grouped = engine.vertices[lead].res.grouped
    assert [key_of(m) for m in grouped] == [("gprobe", f"g{i}") for i in (1, 2, 3)]
    assert grouped[1] is second.vertices[member]
    assert all(engine.vertices[k] is v for k, v in before.items() if k != lead)
    as_prepared(engine, second, tmp_path)
    third = await swapped(
        engine, second, Change(put={lead: GroupProbe(name="g0", tag="a", change=True)})
    )
    assert not prepares and swaps[-1].replaced == {lead}
    assert engine.vertices[lead].res is third.vertices[lead]
    assert engine.vertices[lead].res.grouped == grouped
    as_prepared(engine, third, tmp_path)
    # Out of its group (another tag): prepare() groups the graph again.
    fourth = await swapped(engine, third, Change(put={member: GroupProbe(name="g2", tag="b")}))
    assert len(prepares) == 1 and member in engine.vertices
    as_prepared(engine, fourth, tmp_path)


async def test_a_file_moved_keeps_the_edge_from_a_grouped_resource(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that depends on a grouped resource (a config file after its pkg, grouped with
    other pkgs) has that edge from the group's vertex (autogroup moved it there). Moved (its
    path changed), the file was swapped alone and that edge dropped as if automatic: the
    file could be written before its package was installed. prepare() decides now."""
    first = in_dir(tmp_path, 3)
    first.add(GroupProbe(name="a", tag="t"))
    first.add(GroupProbe(name="b", tag="t"))
    first.connect(("gprobe", "b"), ("file", "f1"))
    await engine.apply(first)
    await settle(engine)
    assert engine.graph.pred[("file", "f1")] == {("gprobe", "a"): Edge()}
    moved = FileRes(name="f1", path=str(tmp_path / "out" / "g1"), content="1\n")
    second = await swapped(engine, first, Change(put={("file", "f1"): moved}))
    assert ("gprobe", "a") in engine.graph.pred[("file", "f1")]
    as_prepared(engine, second, tmp_path)


async def test_edges_off_the_paths_between_groupable_resources_change_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One resource that autogroup may group (a pkg) in the graph made every change of an
    edge prepare the whole graph: a file added in a managed directory (its automatic edge),
    an edge between two files. Now an edge that no path between two groupable resources can
    take (it ends at a vertex with nothing after it, or starts at one with nothing before)
    changes alone; one that may join or part two of them still goes to prepare()."""
    first = in_dir(tmp_path, N)
    for name in ("g0", "g1", "g2"):
        first.add(GroupProbe(name=name, tag="t"))
    f3, f4, g0, g1 = ("file", "f3"), ("file", "f4"), ("gprobe", "g0"), ("gprobe", "g1")
    first.connect(g0, f3)
    first.connect(f3, g1)  # g0 -> f3 -> g1: those two are not grouped
    prepares, swaps = await started(engine, first, monkeypatch)
    assert g1 in engine.vertices and [key_of(m) for m in engine.vertices[g0].res.grouped] == [
        ("gprobe", "g2")
    ]
    inside = ("file", "in")
    made = FileRes(name="in", path=f"{tmp_path}/out/sub/in", content="in\n")
    second = await swapped(engine, first, Change(put={inside: made}))
    assert not prepares and swaps[-1].added == {inside} and swaps[-1].rewired == {("file", "sub")}
    third = await swapped(engine, second, Change(connect=[(f4, inside, Edge())]))
    assert not prepares and engine.graph.pred[inside].keys() == {("file", "sub"), f4}
    fourth = await swapped(engine, third, Change(remove={inside}, disconnect=[(f4, inside)]))
    assert not prepares and swaps[-1].removed == {inside}
    as_prepared(engine, fourth, tmp_path)
    # The path between g0 and g1 cut: prepare() groups them.
    fifth = await swapped(engine, fourth, Change(disconnect=[(f3, g1)]))
    assert len(prepares) == 1 and g1 not in engine.vertices
    as_prepared(engine, fifth, tmp_path)


async def test_a_groupable_resource_added_to_a_group_or_removed_from_it_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pkg added beside grouped pkgs (or removed) prepared the whole graph. Now one added
    last, with no edge, that joins the first group autogroup would put it in, or a member
    with no edge removed, replaces that group's vertex alone; one with an edge still goes to
    prepare()."""
    first = Graph("test")
    for i in range(N):
        first.add(ProbeRes(name=f"p{i}"))
    for i in range(3):
        first.add(GroupProbe(name=f"g{i}", tag="a"))
    first.add(GroupProbe(name="other", tag="b"))
    lead, new = ("gprobe", "g0"), ("gprobe", "n")
    prepares, swaps = await started(engine, first, monkeypatch)
    before = dict(engine.vertices)
    second = await swapped(engine, first, Change(put={new: GroupProbe(name="n", tag="a")}))
    assert not prepares and swaps[-1].replaced == {lead} and new not in engine.vertices
    assert [key_of(m) for m in engine.vertices[lead].res.grouped] == [
        ("gprobe", "g1"),
        ("gprobe", "g2"),
        new,
    ]
    assert all(engine.vertices[k] is v for k, v in before.items() if k != lead)
    as_prepared(engine, second, tmp_path)
    third = await swapped(engine, second, Change(remove={("gprobe", "g1")}))
    assert not prepares and swaps[-1].replaced == {lead}
    assert [key_of(m) for m in engine.vertices[lead].res.grouped] == [("gprobe", "g2"), new]
    as_prepared(engine, third, tmp_path)
    # One with an edge (its group's edges would change): prepare() groups it.
    edged = GroupProbe(name="e", tag="a")
    fourth = await swapped(
        engine,
        third,
        Change(put={("gprobe", "e"): edged}, connect=[(("probe", "p1"), ("gprobe", "e"), Edge())]),
    )
    assert len(prepares) == 1 and ("gprobe", "e") not in engine.vertices
    as_prepared(engine, fourth, tmp_path)


async def test_the_metrics_count_a_resource_that_joins_or_leaves_a_group(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mgmt_resources` counts grouped resources too: one that joins a group or leaves it in
    a small swap (no vertex of its own) is counted in and out, as a full swap counts it."""
    from mgmt.metrics import Metrics

    metrics = Metrics(engine)
    metrics.start()
    try:
        first = Graph("test")
        for i in range(3):
            first.add(GroupProbe(name=f"g{i}", tag="a"))
        prepares, swaps = await started(engine, first, monkeypatch)

        def count() -> float | None:
            return metrics.registry.get_sample_value("mgmt_resources", {"kind": "gprobe"})

        assert count() == 3
        second = await swapped(
            engine, first, Change(put={("gprobe", "n"): GroupProbe(name="n", tag="a")})
        )
        assert not prepares and swaps[-1].joined == {("gprobe", "n")} and count() == 4
        await swapped(
            engine,
            second,
            Change(
                remove={
                    ("gprobe", "g1"),
                }
            ),
        )
        assert not prepares and swaps[-1].left == {("gprobe", "g1")} and count() == 3
    finally:
        metrics.stop()


async def test_the_first_groupable_resource_of_a_graph_is_added_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pkg added to a graph of files (none to group it with) prepared the whole
    graph. Now one that groups with no other resource, with no edge, is added alone, and the
    next one like it joins its group alone; from then on an edge where it may matter goes
    to prepare()."""
    first = in_dir(tmp_path, N)
    prepares, swaps = await started(engine, first, monkeypatch)
    one, two = ("gprobe", "one"), ("gprobe", "two")
    second = await swapped(engine, first, Change(put={one: GroupProbe(name="one", tag="t")}))
    assert not prepares and swaps[-1].added == {one}
    third = await swapped(engine, second, Change(put={two: GroupProbe(name="two", tag="t")}))
    assert not prepares and swaps[-1].joined == {two} and swaps[-1].replaced == {one}
    as_prepared(engine, third, tmp_path)
    f1, f2 = ("file", "f1"), ("file", "f2")
    fourth = await swapped(
        engine, third, Change(connect=[(f1, f2, Edge()), (("gprobe", "two"), f1, Edge())])
    )
    assert len(prepares) == 1
    as_prepared(engine, fourth, tmp_path)
