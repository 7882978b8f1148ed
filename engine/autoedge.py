"""Automatic edges: a resource depends on the resources that provide what it needs.

Each Edgeable resource says what it is (`uids()`) and what it needs (`autoedges()`: requests,
each a list of alternative UIDs, most preferred first). For every request, the first alternative
provided by another resource in the graph becomes an edge provider -> resource, unless that edge
would close a cycle (then it is skipped with a debug line). `meta: {autoedge: false}` opts a
resource out, on both sides.
"""

from __future__ import annotations

import logging

from engine.graph import Edge, Graph, Key, fmt_key, key_of
from engine.resource import UID, Edgeable

log = logging.getLogger("engine")

AUTO = Edge(name="autoedge")


def add_autoedges(graph: Graph) -> int:
    """Add the automatic edges to `graph` in place; returns how many were added."""
    providers: dict[UID, Key] = {}
    wanting: list[tuple[Key, Edgeable]] = []
    for res in graph:
        if not res.meta.autoedge or not isinstance(res, Edgeable):
            continue
        for uid in res.uids():
            providers.setdefault(uid, key_of(res))
        wanting.append((key_of(res), res))
    added = 0
    for key, edgeable in wanting:
        for request in edgeable.autoedges():
            provider = next((providers[u] for u in request if providers.get(u, key) != key), None)
            if provider is None or key in graph.succ[provider]:
                continue
            if graph.has_path(key, provider):
                log.debug(
                    "autoedge %s -> %s skipped: it would make a cycle",
                    fmt_key(provider),
                    fmt_key(key),
                )
                continue
            graph.connect(provider, key, AUTO)
            added += 1
    return added
