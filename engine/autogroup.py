"""Automatic grouping: compatible Groupable resources with no path between them become one vertex.

Compatible is the leader's `group_cmp`: usually resources of its own kind (pkg), or of a kind
nested in its own (virt:network takes in virt:network:host and virt:network:range).

The first resource of a group stays in the graph and collects the others in its `grouped` list;
their edges move to it. Merging two vertices with no path between them cannot create a cycle.
`meta: {autogroup: false}` opts a resource out.
"""

from __future__ import annotations

import logging

from engine.graph import Graph, Key, fmt_key, key_of
from engine.resource import Groupable
from engine.steps import Steps, chunks, finish

log = logging.getLogger("engine")


def autogroup(graph: Graph, candidates: list[Groupable] | None = None) -> int:
    """Merge groupable resources of `graph` in place; returns how many were merged away.
    `candidates`: `groupable(graph)`, when known."""
    merged = 0
    candidates = groupable(graph) if candidates is None else list(candidates)
    # A kind may take in another (mgmt's hierarchical grouping: virt:network:host into
    # virt:network): the outer kinds (fewer ':') lead, so they come first.
    candidates.sort(key=lambda r: r.kind.count(":"))
    for res in candidates:
        res.grouped = []  # the same objects may be grouped again (a re-apply)
    leaders: list[Groupable] = []
    for res in candidates:
        key = key_of(res)
        for leader in leaders:
            lead = key_of(leader)
            if not leader.group_cmp(res):
                continue
            if graph.has_path(lead, key) or graph.has_path(key, lead):
                continue
            _merge(graph, lead, key)
            leader.grouped.append(res)
            log.debug("grouped %s into %s", fmt_key(key), fmt_key(lead))
            merged += 1
            break
        else:
            leaders.append(res)
    return merged


def groupable(graph: Graph) -> list[Groupable]:
    """The resources of `graph` that autogroup may group, in graph order."""
    return finish(groupable_steps(graph))


def groupable_steps(graph: Graph) -> Steps[list[Groupable]]:
    """groupable() in steps (engine.steps)."""
    found: list[Groupable] = []
    for chunk in chunks(graph):
        yield
        for res in chunk:
            if res.meta.autogroup and isinstance(res, Groupable):
                found.append(res)
    return found


def _merge(graph: Graph, into: Key, other: Key) -> None:
    """Move every edge of `other` to `into` and drop `other` from the graph."""
    for src, edge in graph.pred.pop(other).items():
        del graph.succ[src][other]
        graph.connect(src, into, edge)
    for dst, edge in graph.succ.pop(other).items():
        del graph.pred[dst][other]
        graph.connect(into, dst, edge)
    del graph.vertices[other]
