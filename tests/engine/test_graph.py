"""The graph model, checked against networkx as an oracle."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import GraphError
from engine.graph import Change, Edge, Graph, derive, merge_duplicate
from resources.noop import NoopRes
from resources.pkg import PkgRes
from tests.engine.conftest import make_graph

edges_strategy = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 7)).filter(lambda e: e[0] != e[1]), max_size=20
)


def build(edges: list[tuple[int, int]]) -> tuple[Graph, nx.DiGraph]:
    names = [chr(ord("a") + i) for i in range(8)]
    graph = make_graph(names)
    oracle = nx.DiGraph()
    oracle.add_nodes_from(("probe", n) for n in names)
    for src, dst in edges:
        graph.connect(("probe", names[src]), ("probe", names[dst]), Edge())
        oracle.add_edge(("probe", names[src]), ("probe", names[dst]))
    return graph, oracle


@settings(max_examples=200, deadline=None)
@given(edges_strategy)
def test_cycle_detection_and_order_match_networkx(edges: list[tuple[int, int]]) -> None:
    graph, oracle = build(edges)
    cycle = graph.find_cycle()
    assert (cycle is None) == nx.is_directed_acyclic_graph(oracle)
    if cycle is None:
        order = graph.topological()
        position = {k: i for i, k in enumerate(order)}
        assert all(position[a] < position[b] for a, b in oracle.edges)
        for a in oracle.nodes:
            assert graph.ancestors(a) == nx.ancestors(oracle, a)
    else:
        assert cycle[0] == cycle[-1]
        assert all(oracle.has_edge(a, b) for a, b in itertools.pairwise(cycle))
        with pytest.raises(GraphError, match="cycle: probe"):
            graph.topological()


def test_cycle_is_named() -> None:
    graph = make_graph("abc", [("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(GraphError) as err:
        graph.check()
    assert "probe[a] -> probe[b] -> probe[c] -> probe[a]" in str(err.value)


def test_duplicates_and_missing_vertices_are_errors() -> None:
    graph = make_graph("a")
    with pytest.raises(GraphError, match="duplicate"):
        graph.add(next(iter(make_graph("a"))))
    with pytest.raises(GraphError, match="missing resource probe\\[zz\\]"):
        graph.connect(("probe", "a"), ("probe", "zz"))


def test_dot_output() -> None:
    graph = make_graph("ab", [("a", "b")], notify=True)
    dot = graph.to_dot()
    assert '"probe[a]" -> "probe[b]" [style=bold, label="notify"];' in dot


def test_add_or_merge_follows_mgmt_duplicate_rules() -> None:
    graph = Graph()
    first = PkgRes(name="cowsay", state="installed")
    assert graph.add_or_merge(first) is first
    assert graph.add_or_merge(PkgRes(name="cowsay", state="installed")) is first  # identical
    merged = graph.add_or_merge(PkgRes(name="cowsay", state="newest"))
    assert isinstance(merged, PkgRes) and merged.state == "newest"
    assert graph.vertices[("pkg", "cowsay")] is merged
    with pytest.raises(GraphError, match=r"incompatible duplicate resource pkg\[cowsay\]: state"):
        graph.add_or_merge(PkgRes(name="cowsay", state="uninstalled"))
    with pytest.raises(GraphError, match=r"state: '1\.0' vs 'newest'"):
        merge_duplicate(PkgRes(name="cowsay", state="1.0"), merged)
    assert len(graph) == 1


def test_kinds_without_a_merge_hook_merge_nothing() -> None:
    a, b = NoopRes(name="n", comment="x"), NoopRes(name="n", comment="y")
    with pytest.raises(GraphError, match="comment: differs: 'x' vs 'y'"):
        merge_duplicate(a, b)


@settings(max_examples=200, deadline=None)
@given(edges_strategy, edges_strategy, st.sets(st.integers(0, 7), max_size=3))
def test_derive_agrees_with_a_graph_built_anew(
    before: list[tuple[int, int]], after: list[tuple[int, int]], dropped: set[int]
) -> None:
    """derive(base, change) is the graph built from scratch with the change, or the same
    GraphError for a cycle (checked on the added edges only), and leaves base as it was."""
    names = [chr(ord("a") + i) for i in range(8)]
    keys = [("probe", n) for n in names]
    base = make_graph(names)
    for src, dst in dict.fromkeys(before):
        if not base.has_path(keys[dst], keys[src]):
            base.connect(keys[src], keys[dst], Edge())
    snapshot = (dict(base.vertices), {k: dict(v) for k, v in base.succ.items()})
    old = {(s, d) for s, targets in base.succ.items() for d in targets}
    new = {(keys[s], keys[d]) for s, d in after if s not in dropped and d not in dropped}
    gone = {keys[i] for i in dropped}
    fresh = make_graph(names)  # the put resources: new objects for the dropped ones' peers
    change = Change(
        put={k: fresh.vertices[k] for k in keys[:2] if k not in gone},
        remove=gone,
        connect=[(s, d, Edge()) for s, d in sorted(new - old)],
        disconnect=sorted(old - new),
    )
    anew = Graph()
    for key in keys:
        if key not in gone:
            anew.add(change.put.get(key, base.vertices[key]))
    for src, dst in sorted(new):
        anew.connect(src, dst, Edge())
    try:
        derived = derive(base, change)
    except GraphError as err:
        assert str(err).startswith("cycle: ")
        assert anew.find_cycle() is not None
    else:
        assert anew.find_cycle() is None
        assert derived.graph.vertices == anew.vertices
        assert derived.graph.succ == anew.succ and derived.graph.pred == anew.pred
        assert derived.keys == gone | {k for k in change.put if k not in gone}
        assert derived.edges == bool(new ^ old)
    assert (base.vertices, {k: dict(v) for k, v in base.succ.items()}) == snapshot


def test_derive_refuses_a_removed_vertex_with_edges_and_a_missing_end() -> None:
    base = make_graph(["a", "b"])
    base.connect(("probe", "a"), ("probe", "b"), Edge())
    with pytest.raises(GraphError, match=r"probe\[a\] is removed with its edges left"):
        derive(base, Change(remove={("probe", "a")}))
    with pytest.raises(GraphError, match=r"missing resource probe\[c\]"):
        derive(base, Change(connect=[(("probe", "a"), ("probe", "c"), Edge())]))
    with pytest.raises(GraphError, match=r"cycle: probe\[b\] -> probe\[a\] -> probe\[b\]"):
        derive(base, Change(connect=[(("probe", "b"), ("probe", "a"), Edge())]))
