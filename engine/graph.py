"""The resource graph: a DAG of resources with (optionally notifying) edges.

A small adjacency-dict model rather than networkx: importing networkx costs ~190 ms here, most
of a cron run's budget, and the engine needs only neighbours, a topological order and a named
cycle. The test suite checks these algorithms against networkx.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import GraphError, ValidationError
from engine.params import to_plain
from engine.resource import Resource
from engine.steps import STRIDE, Steps, chunks, finish

Key = tuple[str, str]  # (kind, name)
COPIED = 8 * STRIDE  # neighbour maps copied in one step (Graph.copy_steps): ~0.1 us each


def key_of(res: Resource) -> Key:
    return (res.kind, res.name)


def fmt_key(key: Key) -> str:
    """`kind[name]`, a password in a URL name masked (`remote[ssh://root:***@host/]`): such a
    name is refused, and its refusal must not show it."""
    name = key[1]
    if "@" in name:  # (a regexp only then: every summary line names resources)
        name = _URL_PASSWORD.sub(r"\1***@", name)
    return f"{key[0]}[{name}]"


_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]+@")


def cycle_text(cycle: list[Key], place: Callable[[Key, Key], str | None] | None = None) -> str:
    """A cycle ([a, b, ..., a]) as every front-end's error names it: `cycle: a -> b -> a`, then
    where each of its edges was made (`place(src, dst)`: `file:line:col`), where known."""
    text = "cycle: " + " -> ".join(fmt_key(k) for k in cycle)
    if place is None:
        return text
    places = [p for p in (place(a, b) for a, b in itertools.pairwise(cycle)) if p]
    return f"{text} (edges at {', '.join(places)})" if places else text


def merge_duplicate(first: Resource, second: Resource) -> Resource:
    """The one vertex for two declarations of the same kind and name (mgmt's rules): identical
    ones are one resource (`first`); compatible ones are merged by the kind's `merge` hook (two
    `pkg` with `installed` and `newest` give `newest`); anything else is a GraphError saying
    what differs. The one place where duplicates are decided, for every front-end.
    """
    if first.cmp(second):
        return first
    if type(first) is not type(second) or first.name != second.name:
        raise GraphError(f"{first} and {second} are not the same resource")
    if to_plain(first.meta) != to_plain(second.meta):
        raise GraphError(f"incompatible duplicate resource {first}: meta params differ")
    try:
        merged = first.merge(second)
        merged.validate()
    except ValidationError as err:
        raise GraphError(f"incompatible duplicate resource {first}: {err}") from None
    return merged


@dataclass(frozen=True)
class Edge:
    """An edge's properties: what the engine does along it."""

    # The edge's name in the graph file (informational).
    name: str = ""
    # A real change upstream refreshes the downstream resource. Default false.
    notify: bool = False
    # Values sent along the edge: (sender's value name, receiver's param name) pairs.
    sendrecv: tuple[tuple[str, str], ...] = ()


def both(old: Edge | None, edge: Edge) -> Edge:
    """The one edge for `old` and `edge` between the same pair: it notifies if either does."""
    if old is None:
        return edge
    pairs = old.sendrecv + tuple(p for p in edge.sendrecv if p not in old.sendrecv)
    return Edge(old.name or edge.name, old.notify or edge.notify, pairs)


class Graph:
    """Vertices keyed by (kind, name); edges from -> to mean "to runs after from"."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.vertices: dict[Key, Resource] = {}
        self.succ: dict[Key, dict[Key, Edge]] = {}
        self.pred: dict[Key, dict[Key, Edge]] = {}

    def __len__(self) -> int:
        return len(self.vertices)

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.vertices.values())

    def __contains__(self, key: object) -> bool:
        return key in self.vertices

    def add(self, res: Resource) -> None:
        key = key_of(res)
        if key in self.vertices:
            raise GraphError(f"duplicate resource {fmt_key(key)}")
        self.vertices[key] = res
        self.succ[key] = {}
        self.pred[key] = {}

    def add_or_merge(self, res: Resource) -> Resource:
        """Add `res`, or merge it into the vertex of the same kind and name
        (`merge_duplicate`: GraphError if they are incompatible); the vertex now in the graph."""
        key = key_of(res)
        first = self.vertices.get(key)
        if first is None:  # add()'s work, the key known absent (a graph file's every resource)
            self.vertices[key] = res
            self.succ[key] = {}
            self.pred[key] = {}
            return res
        merged = merge_duplicate(first, res)
        self.vertices[key] = merged
        return merged

    def connect(self, src: Key, dst: Key, edge: Edge | None = None) -> None:
        for key in (src, dst):
            if key not in self.vertices:
                raise GraphError(f"edge refers to missing resource {fmt_key(key)}")
        if src == dst:
            raise GraphError(f"edge from {fmt_key(src)} to itself")
        edge = both(self.succ[src].get(dst), edge or Edge())
        self.succ[src][dst] = edge
        self.pred[dst][src] = edge

    def edges(self) -> Iterator[tuple[Key, Key, Edge]]:
        for src, targets in self.succ.items():
            for dst, edge in targets.items():
                yield src, dst, edge

    def copy(self) -> Graph:
        """A copy of the structure (the same resources): changing one leaves the other alone."""
        out = Graph(self.name)
        out.vertices = dict(self.vertices)
        out.succ = {k: dict(v) for k, v in self.succ.items()}
        out.pred = {k: dict(v) for k, v in self.pred.items()}
        return out

    def copy_steps(self) -> Steps[Graph]:
        """copy() in steps (engine.steps); the graph must not change meanwhile."""
        out = Graph(self.name)
        out.vertices = dict(self.vertices)  # (C speed: ~1 ms at 20,000)
        yield
        for name in ("succ", "pred"):
            mine: dict[Key, dict[Key, Edge]] = getattr(self, name)
            copied: dict[Key, dict[Key, Edge]] = {}
            for chunk in chunks(mine.items(), COPIED):
                yield
                for key, ends in chunk:
                    copied[key] = dict(ends)
            setattr(out, name, copied)
        return out

    def find_cycle(self) -> list[Key] | None:
        """One cycle as [a, b, ..., a], or None if the graph is a DAG (iterative DFS)."""
        return finish(self.cycle_steps())

    def cycle_steps(self) -> Steps[list[Key] | None]:
        """find_cycle() in steps (engine.steps); the graph must not change meanwhile."""
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(self.vertices, white)
        succ = self.succ
        seen = 0
        for roots in chunks(self.vertices):
            yield
            for root in roots:
                if color[root] != white or not succ[root]:
                    continue  # seen, or no edge out: on no cycle (most vertices: no DFS)
                path: list[Key] = [root]
                stack: list[Iterator[Key]] = [iter(self.succ[root])]
                color[root] = grey
                while stack:
                    seen += 1
                    if not seen % STRIDE:
                        yield
                    nxt = next(stack[-1], None)
                    if nxt is None:
                        color[path.pop()] = black
                        stack.pop()
                    elif color[nxt] == grey:
                        return [*path[path.index(nxt) :], nxt]
                    elif color[nxt] == white:
                        color[nxt] = grey
                        path.append(nxt)
                        stack.append(iter(self.succ[nxt]))
        return None

    def check(self) -> None:
        """Raise GraphError naming the cycle if there is one."""
        finish(self.check_steps())

    def check_steps(self) -> Steps[None]:
        """check() in steps (engine.steps)."""
        cycle = yield from self.cycle_steps()
        if cycle:
            raise GraphError(cycle_text(cycle))

    def topological(self) -> list[Key]:
        """Vertices in an order where every edge points forward (Kahn); GraphError on a cycle."""
        indegree = {k: len(p) for k, p in self.pred.items()}
        ready = [k for k, n in indegree.items() if n == 0]
        order: list[Key] = []
        while ready:
            key = ready.pop()
            order.append(key)
            for nxt in self.succ[key]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    ready.append(nxt)
        if len(order) != len(self.vertices):
            self.check()
        return order

    def has_path(self, src: Key, dst: Key) -> bool:
        return self.path(src, dst) is not None

    def path(self, src: Key, dst: Key) -> list[Key] | None:
        """A path of edges [src, ..., dst], or None (depth first: O(what src reaches))."""
        parent: dict[Key, Key | None] = {src: None}
        todo = [src]
        while todo:
            key = todo.pop()
            if key == dst:
                out = [key]
                while (up := parent[out[-1]]) is not None:
                    out.append(up)
                return out[::-1]
            for nxt in self.succ[key]:
                if nxt not in parent:
                    parent[nxt] = key
                    todo.append(nxt)
        return None

    def ancestors(self, key: Key) -> set[Key]:
        return _reach(self.pred, key)

    def descendants(self, key: Key) -> set[Key]:
        return _reach(self.succ, key)

    def to_dot(self) -> str:
        """The graph in Graphviz dot format (notify edges are bold)."""
        lines = [f'digraph "{_dot(self.name or "mgmt")}" {{']
        lines += [f'  "{_dot(fmt_key(k))}";' for k in self.vertices]
        for src, dst, edge in self.edges():
            labels = ["notify"] if edge.notify else []
            labels += [f"{s} -> {r}" for s, r in edge.sendrecv]
            style = f' [style=bold, label="{_dot(", ".join(labels))}"]' if labels else ""
            lines.append(f'  "{_dot(fmt_key(src))}" -> "{_dot(fmt_key(dst))}"{style};')
        lines.append("}")
        return "\n".join(lines) + "\n"


@dataclass
class Change:
    """What a front-end changes in the graph it gave last (`derive`): vertices put (added, or
    replaced by another resource of the same kind and name) and removed, edges connected and
    disconnected (a removed vertex's edges must be among those)."""

    put: dict[Key, Resource] = field(default_factory=dict)
    remove: set[Key] = field(default_factory=set)
    connect: list[tuple[Key, Key, Edge]] = field(default_factory=list)
    disconnect: list[tuple[Key, Key]] = field(default_factory=list)


@dataclass(frozen=True)
class Derived:
    """A graph derived from `base` (`derive`), and what changed: `keys`, the vertices whose
    resource is another object (or that came or left); `edges`, whether any edge did;
    `touched`, `keys` and the ends of every edge connected or disconnected (Engine.apply's
    `since`: the only vertices whose resource or edges differ from base's)."""

    graph: Graph
    base: Graph
    keys: frozenset[Key]
    edges: bool
    touched: frozenset[Key]


def _reach(edges: dict[Key, dict[Key, Edge]], key: Key) -> set[Key]:
    """The keys reachable from `key` along `edges` (succ or pred), `key` itself not included
    unless on a cycle."""
    seen: set[Key] = set()
    todo = list(edges.get(key, ()))
    while todo:
        cur = todo.pop()
        if cur not in seen:
            seen.add(cur)
            todo.extend(edges.get(cur, ()))
    return seen


def rewired(new: Graph, old: Graph, keys: Iterable[Key]) -> Change:
    """The edges to connect and disconnect in `old` to have those of `new`, looking only at
    the edges of `keys` (the ends of every edge that differs must be among them): O(their
    degree). An edge that changed is disconnected and connected again."""
    change = Change()
    keys = keys if isinstance(keys, (set, frozenset)) else set(keys)
    for key in keys:
        for now, was, out in (
            (new.succ.get(key) or {}, old.succ.get(key) or {}, True),
            (new.pred.get(key) or {}, old.pred.get(key) or {}, False),
        ):
            if now is was or now == was:
                continue
            for other in now.keys() | was.keys():
                edge, before = now.get(other), was.get(other)
                if edge == before or (not out and other in keys):
                    continue  # alike, or seen from its source (also among `keys`)
                src, dst = (key, other) if out else (other, key)
                if before is not None:
                    change.disconnect.append((src, dst))
                if edge is not None:
                    change.connect.append((src, dst, edge))
    return change


_GONE: Any = object()  # (in a _Past's diff: a key its version lacks)


class _Past(dict[Any, Any]):
    """A map of a graph that `derive` made another from in place: what it held then, read
    through the newer version's map (`newer`'s attribute `field`: the live dict, or another
    _Past) and the entries the change replaced (`diff`: each one's value before, or _GONE).
    A lookup is O(the changes since); what walks the whole map (iteration, len, ==, a copy)
    builds it once, O(N): old versions are read by key (the engine's and the cluster's swaps
    of `since`), walked only by rare paths (a full swap's log line, a refused graph's next
    derive). Read-only: a graph once given is not changed."""

    __slots__ = ("_built", "_diff", "_field", "_newer")

    def __init__(self, newer: Graph, field: str, diff: dict[Any, Any]) -> None:
        super().__init__()
        self._newer, self._field, self._diff = newer, field, diff
        self._built: dict[Any, Any] | None = None

    def _find(self, key: Any) -> Any:
        node = self
        while True:
            value = node._diff.get(key, node)
            if value is not node:
                return value
            newer = getattr(node._newer, node._field)
            if type(newer) is not _Past:
                return newer.get(key, _GONE)
            node = newer

    def _whole(self) -> dict[Any, Any]:
        if self._built is None:
            diffs = [self._diff]
            newer = getattr(self._newer, self._field)
            while type(newer) is _Past and newer._built is None:
                diffs.append(newer._diff)
                newer = getattr(newer._newer, newer._field)
            done = newer._built if type(newer) is _Past else newer
            assert done is not None
            built = dict(done)
            for diff in reversed(diffs):  # newest first
                for key, value in diff.items():
                    if value is _GONE:
                        built.pop(key, None)
                    else:
                        built[key] = value
            self._built = built
        return self._built

    def __getitem__(self, key: Any) -> Any:
        value = self._find(key)
        if value is _GONE:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._find(key)
        return default if value is _GONE else value

    def __contains__(self, key: object) -> bool:
        return self._find(key) is not _GONE

    def __iter__(self) -> Iterator[Any]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def __eq__(self, other: object) -> bool:
        return self._whole() == other

    def __ne__(self, other: object) -> bool:
        return self._whole() != other

    def __repr__(self) -> str:
        return repr(self._whole())

    def keys(self) -> Any:
        return self._whole().keys()

    def values(self) -> Any:
        return self._whole().values()

    def items(self) -> Any:
        return self._whole().items()

    def copy(self) -> dict[Any, Any]:
        return self._whole().copy()

    def _read_only(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("an older version of a graph is read-only")

    __setitem__ = __delitem__ = pop = popitem = setdefault = update = clear = _read_only
    __ior__ = _read_only

    __hash__ = None


_MAPS = ("vertices", "succ", "pred")


def derive(base: Graph, change: Change) -> Derived:
    """`base` with `change` made, in O(change): the new graph takes base's maps and changes
    them in place (the neighbour maps of the vertices whose edges change are copied first),
    and base's maps become views of what they held (`_Past`: the new maps and the entries
    the change replaced), so base still reads as it was (nobody changes a graph once given;
    the engine's and the cluster's swaps read the old values of the changed keys). A base
    that is such an older version already (a refused graph's predecessor, derived from again)
    is copied first: O(N), on that rare path. GraphError for an edge to a missing vertex or to
    itself, a removed vertex with an edge left, or a cycle, which only the connected edges are
    searched for (a path back from each: the graph was a DAG); base is then as it was. The one
    way the front-ends (graph files, programs) make their next graph from their last one; the
    engine swaps it in O(change) too given Derived.touched (Engine.apply's `since`). Not
    thread-safe: a graph being derived from is not read meanwhile (the agent's reread holds
    its apply lock).
    """
    graph = Graph(base.name)
    live = all(type(getattr(base, name)) is dict for name in _MAPS)
    for name in _MAPS:
        now = getattr(base, name)
        setattr(graph, name, now if live else now.copy())
    diffs: tuple[dict[Key, Any], ...] = ({}, {}, {})
    try:
        keys = _change(graph, change, diffs)
    except BaseException:
        for name, diff in zip(_MAPS, diffs, strict=True):
            target = getattr(graph, name)
            for key, value in diff.items():
                if value is _GONE:
                    target.pop(key, None)
                else:
                    target[key] = value
        raise
    if live:
        for name, diff in zip(_MAPS, diffs, strict=True):
            setattr(base, name, _Past(graph, name, diff))
    ends = {key for src, dst, _edge in change.connect for key in (src, dst)}
    ends.update(key for pair in change.disconnect for key in pair)
    return Derived(
        graph,
        base,
        frozenset(keys),
        bool(change.connect or change.disconnect),
        frozenset(keys | ends),
    )


def _change(graph: Graph, change: Change, diffs: tuple[dict[Key, Any], ...]) -> set[Key]:
    """derive's change of `graph`'s maps in place, each entry's value before kept in `diffs`
    (vertices, succ, pred) at its first change; the keys whose resource changed."""
    vertices, succ, pred = graph.vertices, graph.succ, graph.pred
    was_vertex, was_succ, was_pred = diffs

    def keep(key: Key) -> None:
        if key not in was_succ:
            was_succ[key] = succ.get(key, _GONE)
            was_pred[key] = pred.get(key, _GONE)

    def own(key: Key) -> None:  # its neighbour maps: copies of its own
        if key not in was_succ:
            keep(key)
            succ[key], pred[key] = dict(succ[key]), dict(pred[key])

    keys: set[Key] = set()
    for src, dst in change.disconnect:
        if dst not in succ.get(src, {}):
            raise GraphError(f"no edge {fmt_key(src)} -> {fmt_key(dst)} to remove")
        own(src)
        own(dst)
        del succ[src][dst], pred[dst][src]
    for key in change.remove:
        if key not in vertices:
            raise GraphError(f"no resource {fmt_key(key)} to remove")
        if succ[key] or pred[key]:
            raise GraphError(f"{fmt_key(key)} is removed with its edges left")
        was_vertex.setdefault(key, vertices[key])
        keep(key)
        del vertices[key], succ[key], pred[key]
        keys.add(key)
    for key, res in change.put.items():
        if key_of(res) != key:
            raise GraphError(f"{res} put as {fmt_key(key)}")
        if key not in vertices:
            keep(key)
            succ[key], pred[key] = {}, {}
        if (old := vertices.get(key, _GONE)) is not res:
            was_vertex.setdefault(key, old)
            vertices[key] = res
            keys.add(key)
    for src, dst, edge in change.connect:
        if src in vertices and dst in vertices and src != dst:
            own(src)
            own(dst)
            back = graph.path(dst, src)
            if back is not None:
                raise GraphError("cycle: " + " -> ".join(fmt_key(k) for k in [src, *back]))
        graph.connect(src, dst, edge)  # GraphError for a missing end, or to itself
    return keys


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
