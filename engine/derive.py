"""A front-end's next graph derived from the last one in O(change) (`derive`, from a `Change`),
and the edges to rewire between two graphs (`rewired`): an edit's and a later graph's (a
graph file's re-parse, a program's or the cluster's next graph, the engine's small swap), not
a cron run's, which has one graph (docs/benchmarks.md, "startown").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import GraphError
from engine.graph import Edge, Graph, Key, fmt_key, key_of
from engine.resource import Resource


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
