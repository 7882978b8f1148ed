"""The resource graph: a DAG of resources with (optionally notifying) edges.

A small adjacency-dict model rather than networkx: importing networkx costs ~190 ms here, most
of a cron run's budget, and the engine needs only neighbours, a topological order and a named
cycle. The test suite checks these algorithms against networkx.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
