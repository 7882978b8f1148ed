"""Graph swaps in O(change) (issue 16): counted structurally, never timed.

A swap that replaces a few resources of an unchanged shape reuses the prepared graph (prepare()
is not called), keeps every other vertex (the same Vertex, its watch still running) and
compares kept resources by identity only (their cmp() is not called); with `since` it does not
even look at them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from engine.autoedge import AUTO, managed
from engine.derive import Change, derive
from engine.engine import Engine, Status, check_limit
from engine.errors import GraphError
from engine.events import CheckApplied, GraphSwapped
from engine.graph import Edge, Graph
from engine.meta import Meta
from resources.file import FileRes
from tests.engine.conftest import make_graph, settle
from tests.engine.probe import ProbeRes, state

N = 200


def files(tmp_path: Path, contents: dict[str, str]) -> Graph:
    """A chain-free graph of file resources (autoedges to their common directory's absence)."""
    graph = Graph("files")
    for name, content in contents.items():
        graph.add(FileRes(name=name, path=str(tmp_path / "out" / name), content=content))
    return graph


class Walked(dict[Any, Any]):
    """A dict that counts the walks over it."""

    walks = 0

    def items(self) -> Any:
        self.walks += 1
        return super().items()

    def keys(self) -> Any:
        self.walks += 1
        return super().keys()

    def values(self) -> Any:
        self.walks += 1
        return super().values()


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[object]:
    calls: list[object] = []
    original = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


async def test_one_changed_resource_replaces_one_vertex_only(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"p{i}" for i in range(N)]
    first = make_graph(names, edges=[("p0", "p1")])
    await engine.apply(first)
    await settle(engine)
    before = dict(engine.vertices)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    cmps = count_calls(monkeypatch, ProbeRes, "cmp")

    second = Graph("test")
    second.vertices = dict(first.vertices)
    second.succ, second.pred = dict(first.succ), dict(first.pred)
    second.vertices[("probe", "p7")] = ProbeRes(name="p7", tag="edited")
    await engine.apply(second)
    await settle(engine)

    assert not prepares  # the prepared graph was reused
    assert len(cmps) == 1  # the changed one; the others on identity alone
    assert swaps == [GraphSwapped(N - 1, 1, 1, frozenset({("probe", "p7")}))]
    for key, vertex in before.items():
        assert (engine.vertices[key] is vertex) == (key != ("probe", "p7"))
    assert engine.vertices[("probe", "p7")].res.tag == "edited"
    assert state("p7").watch_starts == 2 and state("p6").watch_starts == 1
    assert engine.graph.succ[("probe", "p0")] == {("probe", "p1"): Edge()}
    assert first.vertices[("probe", "p7")].tag == ""  # the given graphs are left alone


async def test_since_names_the_changes_so_kept_resources_are_not_looked_at(
    engine: Engine,
) -> None:
    first = make_graph([f"p{i}" for i in range(N)])
    await engine.apply(first)
    await settle(engine)
    second = Graph("test")
    second.vertices = Walked(first.vertices)
    second.succ, second.pred = first.succ, first.pred
    second.vertices[("probe", "p3")] = ProbeRes(name="p3", tag="x")
    await engine.apply(second, since=(first, frozenset({("probe", "p3")})))
    await settle(engine)
    assert second.vertices.walks == 0  # not one look at the kept resources
    assert engine.vertices[("probe", "p3")].res.tag == "x"
    # A `since` that does not name the last graph is ignored: the swap compares instead.
    third = make_graph([f"p{i}" for i in range(N)])
    await engine.apply(third, since=(first, frozenset()))
    await settle(engine)
    assert engine.vertices[("probe", "p3")].res.tag == ""


async def test_shape_changes_prepare_the_whole_graph(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = files(tmp_path, {"a": "1\n", "b": "2\n"})
    await engine.apply(graph)
    await settle(engine)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")

    content = files(tmp_path, {"a": "1\n", "b": "3\n"})  # same path: same automatic edges
    content.vertices[("file", "a")] = graph.vertices[("file", "a")]
    await engine.apply(content)
    await settle(engine)
    assert not prepares
    assert (tmp_path / "out" / "b").read_text() == "3\n"

    moved = Graph("files")  # b's path changes: its automatic edges may (it only asks for
    moved.add(content.vertices[("file", "a")])  # them, and nothing provides them: swapped
    moved.add(FileRes(name="b", path=str(tmp_path / "elsewhere"), content="3\n"))  # alone)
    await engine.apply(moved)
    await settle(engine)
    assert not prepares and (tmp_path / "elsewhere").read_text() == "3\n"

    added = moved.copy()  # a new vertex that b's automatic edges would reach
    added.add(FileRes(name="dir", path=str(tmp_path) + "/", state="exists"))
    await engine.apply(added)
    await settle(engine)
    assert len(prepares) == 1 and ("file", "b") in engine.graph.succ[("file", "dir")]


async def test_a_vertex_added_or_removed_alone_is_swapped_alone(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = files(tmp_path, {f"f{i}": f"{i}\n" for i in range(N)})
    first.connect(("file", "f0"), ("file", "f1"))
    await engine.apply(first)
    await settle(engine)
    before = dict(engine.vertices)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")

    second = first.copy()  # one added, one removed (a rename), without `since`
    del second.vertices[("file", "f7")], second.succ[("file", "f7")], second.pred[("file", "f7")]
    second.add(FileRes(name="g7", path=str(tmp_path / "out" / "g7"), content="g\n"))
    await engine.apply(second)
    await settle(engine)
    assert not prepares
    assert swaps == [
        GraphSwapped(
            N - 1,
            1,
            1,
            frozenset({("file", "g7")}),
            frozenset({("file", "g7")}),
            frozenset({("file", "f7")}),
        )
    ]
    assert (tmp_path / "out" / "g7").read_text() == "g\n"
    assert ("file", "f7") not in engine.vertices and ("file", "f7") not in engine.graph.succ
    for key, vertex in before.items():
        assert key == ("file", "f7") or engine.vertices[key] is vertex

    third = second.copy()  # with `since`: the added one only looked at
    third.add(FileRes(name="h", path=str(tmp_path / "out" / "h"), content="h\n"))
    await engine.apply(third, since=(second, frozenset({("file", "h")})))
    await settle(engine)
    assert not prepares and (tmp_path / "out" / "h").read_text() == "h\n"

    fourth = third.copy()  # removing an edge's end changes the shape
    del fourth.vertices[("file", "f1")], fourth.succ[("file", "f1")], fourth.pred[("file", "f1")]
    del fourth.succ[("file", "f0")][("file", "f1")]
    await engine.apply(fourth)
    await settle(engine)
    assert len(prepares) == 1 and ("file", "f1") not in engine.vertices


async def test_two_resources_managing_one_path_are_refused_and_a_rename_is_not(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two file resources of one path would undo each other's changes forever: the graph is
    refused before anything runs, on a full prepare and on a small swap (the running graph
    kept); a rename (removed and added with the same path) is still a small swap."""
    out = tmp_path / "out"
    clash = files(tmp_path, {"a": "x\n"})
    clash.add(FileRes(name="b", path=str(out / "a"), content="y\n"))
    with pytest.raises(GraphError, match=r"file\[b\] and file\[a\] both manage file .*/out/a:"):
        await engine.apply(clash)
    assert not engine.vertices and not out.exists()

    first = files(tmp_path, {f"f{i}": f"{i}\n" for i in range(N)})
    await engine.apply(first)
    await settle(engine)
    before = dict(engine.vertices)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    second = first.copy()  # f7's path under another name, beside f7
    second.add(FileRes(name="g7", path=str(out / "f7"), content="g\n"))
    with pytest.raises(GraphError, match=r"file\[g7\] and file\[f7\] both manage file"):
        await engine.apply(second)
    await settle(engine)
    assert engine.vertices == before and (out / "f7").read_text() == "7\n"
    assert not prepares  # refused in O(change) from the running graph's owners, no prepare()
    moved = first.copy()  # f9 given f8's path: refused too, without a prepare()
    moved.vertices[("file", "f9")] = FileRes(name="f9", path=str(out / "f8"), content="9\n")
    with pytest.raises(GraphError, match=r"file\[f9\] and file\[f8\] both manage file"):
        await engine.apply(moved)
    assert not prepares and engine.vertices == before

    third = first.copy()  # f7 renamed g7, the same path: no clash, and still O(change)
    del third.vertices[("file", "f7")], third.succ[("file", "f7")], third.pred[("file", "f7")]
    third.add(FileRes(name="g7", path=str(out / "f7"), content="g\n"))
    await engine.apply(third)
    await settle(engine)
    assert not prepares and (out / "f7").read_text() == "g\n"
    fourth = third.copy()  # f8's path given to a new resource while f8 stays: refused again
    fourth.add(FileRes(name="h8", path=str(out / "f8"), content="h\n"))
    with pytest.raises(GraphError, match=r"file\[h8\] and file\[f8\] both manage file"):
        await engine.apply(fourth)
    assert not prepares
    fifth = third.copy()  # and a path freed by the rename is free: f7's old name takes a new one
    fifth.add(FileRes(name="f7", path=str(out / "new7"), content="n\n"))
    await engine.apply(fifth)
    await settle(engine)
    assert (out / "new7").read_text() == "n\n" and (out / "f7").read_text() == "g\n"


async def test_the_same_graph_object_given_again_is_compared_in_full(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = make_graph("ab")
    await engine.apply(graph)
    await settle(engine)
    graph.add(ProbeRes(name="c"))  # changed in place (not allowed, but it must not be missed)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    await engine.apply(graph)
    await settle(engine)
    assert len(prepares) == 1 and ("probe", "c") in engine.vertices


async def test_check_applies_at_once_are_bounded(tmp_path: Path) -> None:
    """A check may hold descriptors while it waits for an I/O thread: at most `max_checks` run
    at once (100,000 file resources at once used up the process's descriptors)."""
    engine = Engine(hostname="test", prefix=tmp_path, max_checks=3)
    gate = asyncio.Event()
    names = [f"p{i}" for i in range(10)]
    for name in names:
        state(name).gate = gate
    try:
        await engine.apply(make_graph(names))
        # RUNNING is set before the slot is taken: without a bound, all ten would be inside.
        await settle(
            engine, lambda: all(v.status is Status.RUNNING for v in engine.vertices.values())
        )
        assert sum(state(n).active for n in names) == 3
        gate.set()
        await settle(engine)
        assert all(len(state(n).calls) == 1 for n in names)
    finally:
        await engine.stop(graceful=False)
    assert check_limit() >= 16


async def in_managed_directory(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Graph, dict[Any, Any], list[object], list[GraphSwapped]]:
    """N files in out/ and a directory resource of d/, run: (the graph, its vertices, the
    prepares counted from now, the swaps told from now)."""
    first = files(tmp_path, {f"f{i}": f"{i}\n" for i in range(N)})
    first.add(FileRes(name="dir", path=str(tmp_path / "d") + "/", state="exists"))
    await engine.apply(first)
    await settle(engine)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    return first, dict(engine.vertices), count_calls(monkeypatch, engine, "prepare_steps"), swaps


async def test_a_file_added_in_a_managed_directory_gets_its_edge_in_o_change(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a file added in (or removed from) a directory resource's directory asks for
    that directory only, which one running resource provides: the automatic edge is made or
    dropped by the small swap (no prepare() of the whole graph), as prepare() would; every
    other vertex is kept. A resource that others ask for still prepares the whole graph; a
    clash is refused."""
    first, before, prepares, swaps = await in_managed_directory(engine, tmp_path, monkeypatch)
    d, new = ("file", "dir"), ("file", "new")
    second = first.copy()
    second.add(FileRes(name="new", path=str(tmp_path / "d" / "new"), content="in d\n"))
    await engine.apply(second)
    await settle(engine)
    assert not prepares and swaps[-1].added == {new} and swaps[-1].rewired == {d}
    assert engine.graph.succ[d] == {new: AUTO} and engine.graph.pred[new] == {d: AUTO}
    assert all(engine.vertices[k] is v for k, v in before.items())
    assert (tmp_path / "d" / "new").read_text() == "in d\n"
    full = second.copy()
    Engine(hostname="test", prefix=tmp_path / "prefix").prepare(full)
    assert prepared_edges(engine.graph) == prepared_edges(full)

    third, since = derived(second, Change(remove={new}))  # removed again, with `since`
    await engine.apply(third, since)
    await settle(engine)
    assert not prepares and swaps[-1].removed == {new}
    assert not engine.graph.succ[d] and new not in engine.graph.pred
    assert all(engine.vertices[k] is v for k, v in before.items())

    clash = third.copy()  # two files of one path in it: refused, nothing changed
    clash.add(FileRes(name="a", path=str(tmp_path / "d" / "x"), content="1\n"))
    clash.add(FileRes(name="b", path=str(tmp_path / "d" / "x"), content="2\n"))
    with pytest.raises(GraphError, match="both manage"):
        await engine.apply(clash)
    assert engine.vertices == before and not engine.graph.succ[d]
    assert not (tmp_path / "d" / "x").exists()

    twice = third.copy()  # a directory added with a file asking for it: prepared
    twice.add(FileRes(name="sub", path=str(tmp_path / "d" / "sub") + "/", state="exists"))
    twice.add(FileRes(name="deep", path=str(tmp_path / "d" / "sub" / "x"), content="x\n"))
    await engine.apply(twice)
    await settle(engine)
    assert len(prepares) == 1
    assert engine.graph.succ[("file", "sub")] == {("file", "deep"): AUTO}
    assert (tmp_path / "d" / "sub" / "x").read_text() == "x\n"


async def test_a_file_moved_into_a_managed_directory_gets_its_edge_in_o_change(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a file whose path changes, into a directory resource's directory and out
    again, is replaced by the small swap with its automatic edge made and dropped (its old
    path freed, its new one claimed); moved onto another file's path, it is refused."""
    first, before, prepares, swaps = await in_managed_directory(engine, tmp_path, monkeypatch)
    d, f1 = ("file", "dir"), ("file", "f1")
    into = FileRes(name="f1", path=str(tmp_path / "d" / "f1"), content="m\n")
    moved, since = derived(first, Change(put={f1: into}))  # as a front-end's edit gives it
    await engine.apply(moved, since)
    await settle(engine)
    assert not prepares and swaps[-1].replaced == {f1} and swaps[-1].rewired == {d}
    assert engine.graph.succ[d] == {f1: AUTO} and engine.graph.pred[f1] == {d: AUTO}
    assert (tmp_path / "d" / "f1").read_text() == "m\n"
    assert all(engine.vertices[k] is v for k, v in before.items() if k != f1)

    back, since = derived(moved, Change(put={f1: first.vertices[f1]}))  # and back out
    await engine.apply(back, since)
    await settle(engine)
    assert not prepares and not engine.graph.succ[d] and not engine.graph.pred[f1]
    full = back.copy()
    Engine(hostname="test", prefix=tmp_path / "prefix").prepare(full)
    assert prepared_edges(engine.graph) == prepared_edges(full)

    onto = back.copy()  # moved onto f2's path: refused, nothing changed
    onto.vertices[f1] = FileRes(name="f1", path=str(tmp_path / "out" / "f2"), content="x\n")
    running = dict(engine.vertices)
    with pytest.raises(GraphError, match="both manage"):
        await engine.apply(onto)
    assert engine.vertices == running and (tmp_path / "out" / "f2").read_text() == "2\n"
    assert engine.graph.vertices[f1] is running[f1].res and not prepares

    elsewhere = back.copy()  # ... and then elsewhere: the claims the refusal saw are gone
    elsewhere.vertices[f1] = FileRes(name="f1", path=str(tmp_path / "d" / "g"), content="g\n")
    await engine.apply(elsewhere)
    await settle(engine)
    assert not prepares and engine.graph.succ[d] == {f1: AUTO}
    assert (tmp_path / "d" / "g").read_text() == "g\n"


async def test_two_added_at_once_get_the_automatic_edge_between_them(
    engine: Engine, tmp_path: Path
) -> None:
    """Each added resource is alone in the last graph, but not beside the other: a directory
    and a file in it, added in one swap, are prepared (the file waits for its directory)."""
    first = files(tmp_path, {"a": "1\n"})
    await engine.apply(first)
    await settle(engine)
    second = first.copy()
    second.add(FileRes(name="dir", path=str(tmp_path / "new") + "/", state="exists"))
    second.add(FileRes(name="in", path=str(tmp_path / "new" / "in"), content="x\n"))
    await engine.apply(second)
    await settle(engine)
    assert ("file", "in") in engine.graph.succ[("file", "dir")]

    third = first.copy()  # the same with `since`, as reparse() gives it
    third.add(FileRes(name="dir2", path=str(tmp_path / "new2") + "/", state="exists"))
    third.add(FileRes(name="in2", path=str(tmp_path / "new2" / "in"), content="x\n"))
    await engine.apply(first)
    await settle(engine)
    await engine.apply(third, since=(first, frozenset({("file", "dir2"), ("file", "in2")})))
    await settle(engine)
    assert ("file", "in2") in engine.graph.succ[("file", "dir2")]


async def test_an_exec_added_beside_the_package_of_its_program_gets_its_edge(
    engine: Engine,
) -> None:
    """A package's files are provided lazily (read from dpkg only when asked), so an exec
    added beside an installed package is not alone: it is prepared, and waits for it."""
    from resources.exec import ExecRes
    from resources.pkg import PkgRes

    noop = Meta(noop=True)
    first = Graph("pkg")
    first.add(PkgRes(name="inotify-tools", meta=noop))  # installed by scripts/apt-packages.txt
    await engine.apply(first)
    await settle(engine)
    second = first.copy()
    second.add(ExecRes(name="watch", cmd="/usr/bin/inotifywait --help", meta=noop))
    await engine.apply(second)
    await settle(engine)
    assert engine.graph.succ[("pkg", "inotify-tools")] == {("exec", "watch"): AUTO}


def changed_keys(last: Graph, new: Graph) -> frozenset[Any]:
    """The keys whose resource (by identity) or edges differ between two graphs: what a
    caller gives `Engine.apply` as `since`."""
    both = new.vertices.keys() | last.vertices.keys()
    return frozenset(
        k
        for k in both
        if new.vertices.get(k) is not last.vertices.get(k)
        or new.succ.get(k) != last.succ.get(k)
        or new.pred.get(k) != last.pred.get(k)
    )


def prepared_edges(graph: Graph) -> list[tuple[Any, Any, Edge]]:
    return sorted(graph.edges(), key=repr)


def clashes(graph: Graph, res: FileRes) -> bool:
    """Whether `res` manages a path that a resource of `graph` manages."""
    return any(managed(other) == managed(res) for other in graph)


async def refused(engine: Engine, graph: Graph, res: FileRes) -> bool:
    """Whether `graph` with `res` added clashes (two resources managing one path): then the
    engine refuses it (and keeps running what it ran)."""
    if not clashes(graph, res):
        return False
    clash = graph.copy()
    clash.add(res)
    with pytest.raises(GraphError, match="both manage"):
        await engine.apply(clash)
    return True


@pytest.mark.parametrize("seed", range(40))
async def test_random_small_swaps_run_the_graph_a_full_prepare_would(
    tmp_path: Path, seed: int
) -> None:
    """Differential: files added, removed and replaced (one to three at a time, with and
    without `since`; a file replaced may move to another directory) in directories whose
    files get automatic edges to them; after each swap the running graph has the vertices and
    edges a full prepare() of the same graph has."""
    rng = random.Random(seed)
    dirs = ["", "a/", "a/b/", "c/"]

    def res(name: str) -> FileRes:
        where = tmp_path / "out" / rng.choice(dirs)
        if rng.random() < 0.3:
            return FileRes(name=name, path=f"{where}/", state="exists")
        meta = Meta(autoedge=rng.random() > 0.2)
        return FileRes(name=name, path=str(where / name), content="x\n", meta=meta)

    last = Graph("g")
    for i in range(6):
        if not clashes(last, made := res(f"n{i}")):
            last.add(made)
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    try:
        await engine.apply(last)
        for step in range(10):
            new = last.copy()
            for _ in range(rng.randint(1, 3)):
                keys = [k for k in new.vertices if not new.succ[k] and not new.pred[k]]
                if rng.random() < 0.3 and len(new) > 2:  # an edge connected or disconnected
                    src, dst = rng.sample(list(new.vertices), 2)
                    new.succ[src], new.pred[dst] = dict(new.succ[src]), dict(new.pred[dst])
                    if dst in new.succ[src]:
                        del new.succ[src][dst], new.pred[dst][src]
                    elif not new.has_path(dst, src):
                        new.connect(src, dst, Edge(notify=rng.random() < 0.5))
                elif rng.random() < 0.5 or len(keys) < 3:
                    name = f"s{step}-{rng.randrange(1000)}"
                    if ("file", name) in new:
                        continue
                    if not await refused(engine, new, made := res(name)):
                        new.add(made)
                elif rng.random() < 0.5:
                    key = rng.choice(keys)
                    del new.vertices[key], new.succ[key], new.pred[key]
                else:
                    key = rng.choice(list(new.vertices))
                    old = new.vertices[key]
                    assert isinstance(old, FileRes)
                    content = None if old.content is None else f"{step}\n"
                    path = old.path
                    if content is not None and rng.random() < 0.5:  # moved (its edges may)
                        path = str(tmp_path / "out" / rng.choice(dirs) / key[1])
                    new.vertices[key] = dataclasses.replace(old, content=content, path=path)
            changed = changed_keys(last, new)
            await engine.apply(new, since=(last, changed) if rng.random() < 0.5 else None)
            full = new.copy()
            Engine(hostname="test", prefix=tmp_path / "prefix").prepare(full)
            assert engine.graph.vertices.keys() == full.vertices.keys(), (seed, step)
            assert prepared_edges(engine.graph) == prepared_edges(full), (seed, step)
            last = new
    finally:
        await engine.stop(graceful=False)


# edges (issue 16): a changed edge is swapped in O(change) too -------------------------------


def derived(base: Graph, change: Change) -> tuple[Graph, tuple[Graph, frozenset[Any]]]:
    """The graph a front-end gives after `change`, with its `since` (as reparse() and the
    language's Output give them)."""
    out = derive(base, change)
    return out.graph, (base, out.touched)


async def test_an_edge_connected_or_disconnected_is_swapped_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_graph([f"p{i}" for i in range(N)], edges=[("p0", "p1")])
    await engine.apply(first)
    await settle(engine)
    before = dict(engine.vertices)
    swaps: list[GraphSwapped] = []
    engine.listeners.subscribe(GraphSwapped, swaps.append)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    p0, p1, p5, p9 = (("probe", f"p{i}") for i in (0, 1, 5, 9))

    second, since = derived(
        first, Change(connect=[(p5, p9, Edge(notify=True))], disconnect=[(p0, p1)])
    )
    await engine.apply(second, since)
    await settle(engine)
    assert not prepares and engine.vertices == before  # every vertex kept, nothing restarted
    assert engine.graph.succ[p5] == {p9: Edge(notify=True)} and not engine.graph.succ[p0]
    assert engine.graph.pred[p9] == {p5: Edge(notify=True)} and not engine.graph.pred[p1]
    assert swaps[-1].rewired == {p0, p1, p5, p9} and swaps[-1].replaced == frozenset()
    assert first.succ[p0] == {p1: Edge()} and not first.succ[p5]  # given graphs left alone

    # A vertex added with its edge, and the notify edge used: p5's change refreshes p9.
    third, since = derived(
        second,
        Change(
            put={("probe", "n"): ProbeRes(name="n"), p5: ProbeRes(name="p5", change=True)},
            connect=[(("probe", "n"), p5, Edge())],
        ),
    )
    await engine.apply(third, since)
    await settle(engine)
    assert not prepares and engine.graph.succ[("probe", "n")] == {p5: Edge()}
    assert state("p9").calls[-1] == (True, True)  # refreshed along the new notify edge

    # A cycle is prepare()'s to report: the last graph keeps running.
    cyclic = third.copy()
    cyclic.connect(p9, ("probe", "n"))
    with pytest.raises(GraphError, match="cycle"):
        await engine.apply(cyclic, (third, frozenset({p9, ("probe", "n")})))
    assert len(prepares) == 1 and ("probe", "n") in engine.graph.pred[p5]


async def test_an_edge_that_prepare_would_change_prepares_the_whole_graph(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A given edge from a directory to a file in it is also the automatic one: removing it
    leaves the automatic edge, which only prepare() knows of."""
    graph = files(tmp_path, {"a": "1\n"})
    graph.add(FileRes(name="dir", path=str(tmp_path / "out") + "/", state="exists"))
    await engine.apply(graph)
    await settle(engine)
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    d, a = ("file", "dir"), ("file", "a")
    assert engine.graph.succ[d] == {a: AUTO}
    given, since = derived(graph, Change(connect=[(d, a, Edge(notify=True))]))
    await engine.apply(given, since)
    assert not prepares and engine.graph.succ[d] == {a: Edge(notify=True)}  # it replaces AUTO
    await engine.apply(*derived(given, Change(disconnect=[(d, a)])))
    assert len(prepares) == 1 and engine.graph.succ[d] == {a: AUTO}


@pytest.mark.parametrize("small", [True, False])
async def test_a_new_dependency_holds_a_vertex_back_a_removed_one_releases_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, small: bool
) -> None:
    """mgmt's semantics across swaps, small or full: a vertex given a predecessor that has
    not processed since it last did waits for it; one that loses it stops waiting."""
    prepares = count_calls(monkeypatch, engine, "prepare_steps")
    first = make_graph("ab")
    await engine.apply(first)
    await settle(engine)
    a, b = engine.vertices[("probe", "a")], engine.vertices[("probe", "b")]
    b._on_event()  # b has run after a: a must run again before b may
    await settle(engine)
    gate = state("a").gate = asyncio.Event()
    a._on_event()
    await settle(engine, lambda: a.status is Status.RUNNING)

    def given(graph: Graph, change: Change) -> tuple[Graph, Any]:
        new, since = derived(graph, change)
        return new, since if small else None

    second, since = given(first, Change(connect=[(a.key, b.key, Edge())]))
    await engine.apply(second, since)
    calls = len(state("b").calls)
    b._on_event()
    await settle(engine, lambda: b.status is Status.PENDING and not b.dirty.is_set())
    assert len(state("b").calls) == calls  # waits for a (which is still running)
    third, since = given(second, Change(disconnect=[(a.key, b.key)]))
    await engine.apply(third, since)
    await settle(engine, lambda: len(state("b").calls) == calls + 1 and b.status is Status.OK)
    assert a.status is Status.RUNNING  # released while a still runs
    gate.set()
    await settle(engine)
    assert len(prepares) == (1 if small else 3)


@pytest.mark.parametrize("seed", range(30))
async def test_random_edge_swaps_apply_what_a_full_swap_applies(  # noqa: PLR0915
    tmp_path: Path, seed: int
) -> None:
    """Differential, on real files: the same graphs (files in directories, with automatic
    edges; edges and resources coming and going) given to one engine with `since` (small
    swaps) and to another as new graphs (full swaps, compared by cmp): after each swap both
    run the same prepared graph, applied the same changes and left the same files."""
    rng = random.Random(seed)
    dirs = ["", "a/", "a/b/"]
    spec: dict[str, tuple[str, bool, bool, str]] = {}  # name -> dir, is a dir, autoedge, content
    edges: dict[tuple[str, str], bool] = {}  # (from, to) -> notify

    def new_spec() -> tuple[str, bool, bool, str]:
        where, is_dir = rng.choice(dirs), rng.random() < 0.25
        if is_dir and any(spec[n][:2] == (where, True) for n in spec):
            is_dir = False  # one resource per directory (two would be refused: both manage it)
        return where, is_dir, rng.random() > 0.5, f"{rng.random()}\n"

    def build(root: Path, name: str) -> FileRes:
        where, is_dir, autoedge, content = spec[name]
        base = root / "out" / where
        if is_dir:
            return FileRes(name=name, path=f"{base}/", state="exists")
        meta = Meta(autoedge=autoedge)
        return FileRes(name=name, path=str(base / name), content=content, meta=meta)

    def full_graph(root: Path) -> Graph:
        graph = Graph("g")
        for name in spec:
            graph.add(build(root, name))
        for (src, dst), notify in edges.items():
            graph.connect(("file", src), ("file", dst), Edge(notify=notify))
        return graph

    def path_from(graph: Graph, src: str, dst: str) -> bool:
        return graph.has_path(("file", src), ("file", dst))

    for i in range(6):
        spec[f"n{i}"] = new_spec()
    roots = tmp_path / "small", tmp_path / "full"
    engines = [Engine(hostname="test", prefix=root / "prefix") for root in roots]
    applied: list[list[tuple[Any, ...]]] = [[], []]
    for engine, log in zip(engines, applied, strict=True):
        engine.listeners.subscribe(
            CheckApplied, lambda e, log=log: e.changed and log.append(e.vertex.key)
        )
    try:
        last = full_graph(roots[0])
        for engine, root in zip(engines, roots, strict=True):
            await engine.apply(full_graph(root) if root != roots[0] else last)
            await settle(engine)
        for step in range(10):
            for _ in range(rng.randint(1, 3)):
                names = list(spec)
                op = rng.random()
                if op < 0.2 or len(names) < 3:
                    name = f"s{step}-{rng.randrange(1000)}"
                    spec[name] = new_spec()
                elif op < 0.35:
                    name = rng.choice(names)
                    del spec[name]
                    for ends in [e for e in edges if name in e]:
                        del edges[ends]
                elif op < 0.55:
                    name = rng.choice(names)
                    spec[name] = (*spec[name][:3], f"{step}\n")
                elif op < 0.8:
                    src, dst = rng.sample(names, 2)
                    if not path_from(full_graph(roots[0]), dst, src):
                        edges[src, dst] = rng.random() < 0.5
                elif edges:
                    del edges[rng.choice(list(edges))]
            fresh = full_graph(roots[0])
            # The small engine's graph: the last one's resources where unchanged (as the
            # front-ends give them), and `since` naming what changed.
            given = Graph("g")
            for key, res in fresh.vertices.items():
                old = last.vertices.get(key)
                given.vertices[key] = old if old is not None and old.cmp(res) else res
            given.succ, given.pred = fresh.succ, fresh.pred
            both = given.vertices.keys() | last.vertices.keys()
            touched = {k for k in both if given.vertices.get(k) is not last.vertices.get(k)}
            touched |= {k for k in both if given.succ.get(k) != last.succ.get(k)}
            touched |= {k for k in both if given.pred.get(k) != last.pred.get(k)}
            before = [len(log) for log in applied]
            await engines[0].apply(given, (last, frozenset(touched)))
            await engines[1].apply(full_graph(roots[1]))
            for engine in engines:
                await settle(engine)
            last = given
            small, full = (engines[k].graph for k in (0, 1))
            assert prepared_edges(small) == prepared_edges(full), (seed, step)
            steps = [sorted(log[n:]) for log, n in zip(applied, before, strict=True)]
            assert steps[0] == steps[1], (seed, step)
            assert tree(roots[0] / "out") == tree(roots[1] / "out"), (seed, step)
    finally:
        for engine in engines:
            await engine.stop(graceful=False)


def tree(root: Path) -> dict[str, str | None]:
    """The files under `root` (relative path -> content; None for a directory)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_text()
        for p in sorted(root.rglob("*"))
    }


async def test_a_small_swap_changes_the_running_maps_in_place(engine: Engine) -> None:
    """Kept vertices cost nothing: the engine's maps (its vertices, the prepared graph's
    resources and edges) are changed in place, not copied, whatever the change; a change
    refused as a cycle leaves them as they were."""
    first = make_graph([f"p{i}" for i in range(N)], edges=[("p0", "p1")])
    await engine.apply(first)
    await settle(engine)
    maps = (engine.vertices, engine.graph.vertices, engine.graph.succ, engine.graph.pred)
    p0, p1, p5, p9 = (("probe", f"p{i}") for i in (0, 1, 5, 9))
    new = ("probe", "new")
    changes = [
        Change(put={p5: ProbeRes(name="p5", tag="x")}),
        Change(put={new: ProbeRes(name="new")}, connect=[(new, p9, Edge())]),
        Change(disconnect=[(p0, p1)], connect=[(p5, p9, Edge(notify=True))]),
        Change(disconnect=[(new, p9)], remove={new}),
    ]
    graph = first
    for change in changes:
        graph, since = derived(graph, change)
        await engine.apply(graph, since)
        await settle(engine)
        now = (engine.vertices, engine.graph.vertices, engine.graph.succ, engine.graph.pred)
        assert all(a is b for a, b in zip(now, maps, strict=True))
    assert engine.graph.succ == {k: dict(v) for k, v in graph.succ.items()}
    assert engine.graph.pred == {k: dict(v) for k, v in graph.pred.items()}
    assert engine.vertices.keys() == graph.vertices.keys() and new not in engine.graph.vertices
    assert engine.vertices[p5].res.tag == "x"

    before = {k: dict(v) for k, v in engine.graph.succ.items()}
    cyclic = graph.copy()
    cyclic.connect(p9, p5)
    with pytest.raises(GraphError, match="cycle"):
        await engine.apply(cyclic, (graph, frozenset({p9, p5})))
    assert {k: dict(v) for k, v in engine.graph.succ.items()} == before


async def test_the_swap_line_names_what_was_removed_added_changed_and_the_edges(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tester17 F3: at 100,000 resources the counts alone do not say which resource left, or
    that an edge was added: the line names up to NAMED of each, then "and N more"; a small swap
    and a full one alike."""
    caplog.set_level("INFO", logger="engine")
    first = files(tmp_path, {f"f{i}": f"{i}\n" for i in range(N)})
    await engine.apply(first)
    await settle(engine)

    def swap_line() -> str:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("graph swap")]
        caplog.clear()
        return lines[-1]

    second = first.copy()  # small swaps: a removal, an addition, a change, an edge
    del second.vertices[("file", "f2")], second.succ[("file", "f2")], second.pred[("file", "f2")]
    await engine.apply(second)
    assert swap_line() == f"graph swap: {N - 1} kept, 1 stopped, 0 started: removed file[f2]"
    third = second.copy()
    third.add(FileRes(name="g1", path=str(tmp_path / "out" / "g1"), content="g\n"))
    await engine.apply(third)
    assert swap_line() == f"graph swap: {N - 1} kept, 0 stopped, 1 started: added file[g1]"
    fourth = third.copy()
    fourth.vertices[("file", "f3")] = FileRes(
        name="f3", path=str(tmp_path / "out" / "f3"), content="x\n"
    )
    await engine.apply(fourth)
    assert swap_line() == f"graph swap: {N - 1} kept, 1 stopped, 1 started: changed file[f3]"
    fifth = fourth.copy()
    fifth.connect(("file", "f4"), ("file", "f5"), Edge())
    await engine.apply(fifth)
    assert (
        swap_line()
        == f"graph swap: {N} kept, 0 stopped, 0 started: edges +1 (file[f4] -> file[f5])"
    )
    # A file moved within a managed directory: its automatic edge from the directory is
    # rewired, neither added nor removed (opsuser, 2026-12-06: the line said `edges +1
    # (file[out] -> file[f5]); edges -1 (file[out] -> file[f5])`).
    directory = fifth.copy()
    directory.add(FileRes(name="out", path=f"{tmp_path / 'out'}/"))
    await engine.apply(directory)
    assert swap_line() == f"graph swap: {N} kept, 0 stopped, 1 started: added file[out]"
    moved = directory.copy()
    moved.vertices[("file", "f5")] = FileRes(name="f5", path=str(tmp_path / "out" / "f5b"))
    await engine.apply(moved)
    assert swap_line() == f"graph swap: {N} kept, 1 stopped, 1 started: changed file[f5]"
    # A full swap (most of the graph replaced): named up to three, then how many more.
    sixth = files(tmp_path, {f"f{i}": f"new {i}\n" for i in range(N)})
    await engine.apply(sixth)
    assert swap_line() == (
        f"graph swap: 0 kept, {N + 1} stopped, {N} started: removed file[g1], file[out]; "
        "added file[f2]; changed file[f0], "
        f"file[f1], file[f3] and {N - 4} more; edges -1 (file[f4] -> file[f5])"
    )
    await settle(engine)
