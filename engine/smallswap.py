"""A swap in O(change) (docs/engine.md): whether a later graph differs from the last one only in
a few resources replaced in place, added or removed alone, which `Engine._swap_replaced` then
swaps into the running graph without preparing it all again (`small_swap`: the vertices, in a
`Small`). `Engine.apply` imports it for a graph after the first: a run that ends at its first
convergence never does (docs/benchmarks.md, "startown": ~450 lines and a dataclass a cron run
no longer loads). Each function takes the `Engine` it works for; nothing here imports
engine.engine at run time (its types only).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.autoedge import (
    AUTO,
    MARKERS,
    AutoIndex,
    both_manage,
    managed,
    may_edge,
    owned_by_kind,
)
from engine.derive import rewired
from engine.errors import GraphError
from engine.graph import Edge, Graph, Key, key_of
from engine.meta import sema_size
from engine.resource import (
    LAZY_PROVIDERS,
    UID,
    Edgeable,
    Groupable,
    Resource,
    members,
    same,
    twin,
)

if TYPE_CHECKING:
    from engine.engine import Ends, Engine, Vertex, _Raw


def _before(graph: Graph, one: Key, other: Key) -> bool:
    """Whether `one` comes before `other` in `graph` (O(n): for an error's message only)."""
    return next(k for k in graph.vertices if k in (one, other)) == one


@dataclass
class Small:
    """A swap in O(change): the vertices replaced, added and removed, nothing else changed."""

    replace: dict[Key, Resource] = field(default_factory=dict)
    add: dict[Key, Resource] = field(default_factory=dict)
    remove: list[Key] = field(default_factory=list)
    # The given graph's edges to connect and disconnect in the prepared one (_reshaped), and
    # the kept vertices whose edges change (`rewired`), of which `release` lose a predecessor.
    connect: dict[Ends, Edge] = field(default_factory=dict)
    disconnect: set[Ends] = field(default_factory=set)
    rewired: frozenset[Key] = frozenset()
    release: frozenset[Key] = frozenset()
    # The automatic edges of those added, removed or moved (`_asking`): from each
    # provider. `moved`: those of `replace` whose UIDs or requests change (their old version's
    # are counted out of the index, the new one's in: undone if the swap is not small).
    auto: dict[Ends, Edge] = field(default_factory=dict)
    unauto: set[Ends] = field(default_factory=set)
    moved: dict[Key, tuple[Resource, Resource]] = field(default_factory=dict)
    # The sizes of the semaphores of those added or replaced (`_sema_fits`).
    semas: dict[str, int] = field(default_factory=dict)
    # A grouped resource replaced in its group (`_regrouped`): the group's vertex
    # (in `replace`) given its members, and the resource that autogroup may group now.
    regroup: dict[Key, list[Resource]] = field(default_factory=dict)
    candidate: dict[Key, Groupable] = field(default_factory=dict)
    # A resource that joins a group or leaves it (`_joins`, `_leaves`), no vertex.
    joined: dict[Key, Resource] = field(default_factory=dict)
    left: dict[Key, Resource] = field(default_factory=dict)


def reshape(graph: Graph, small: Small) -> Callable[[], None] | None:
    """`small`'s vertices added and removed and edges connected and disconnected in `graph`'s
    edge maps, in place, in O(change): the neighbour maps changed are copies (whoever holds
    the last ones keeps them as they were). Returns what undoes it, or None (undone already)
    when a removed vertex keeps an edge the given graph did not have (grouped, or automatic)."""
    succ, pred = graph.succ, graph.pred
    was: dict[Key, tuple[dict[Key, Edge], dict[Key, Edge]] | None] = {}

    def own(key: Key) -> None:
        if key not in was:
            was[key] = (succ[key], pred[key])
            succ[key], pred[key] = dict(succ[key]), dict(pred[key])

    def undo() -> None:
        for key, maps in was.items():
            if maps is None:
                del succ[key], pred[key]
            else:
                succ[key], pred[key] = maps

    for src, dst in small.disconnect:
        own(src)
        own(dst)
        del succ[src][dst], pred[dst][src]
    for key in small.remove:
        own(key)
        if succ[key] or pred[key]:
            undo()
            return None
        del succ[key], pred[key]
    for key in small.add:
        was.setdefault(key, None)
        succ[key], pred[key] = {}, {}
    for (src, dst), edge in small.connect.items():
        own(src)
        own(dst)
        # The given edge replaces an automatic one alike: prepare() would not add that.
        succ[src][dst] = pred[dst][src] = edge
    return undo


def small_swap(
    engine: Engine, graph: Graph, keys: Collection[Key], given: dict[Key, Resource], last: _Raw
) -> Small | None:
    """`Engine._small_swap`'s vertices to replace, add and remove: `keys`, those of `graph`
    that differ from `given` (the vertices of `last`, the last graph given); None when the
    whole graph must be prepared again (nothing changed then)."""
    small = Small()
    if not _classify(engine, graph, keys, given, small) or (
        (small.add or small.remove or small.moved) and not _reclaim(engine, small, given)
    ):
        # A full prepare() decides; but a clash it would refuse is refused here at once
        # (at 100,000 files, prepare() took 7-9 s to say so), nothing changed.
        index = engine._autoindex
        if index is not None:
            for res in small.add.values():
                index.count(res, -1)
            for old, new in small.moved.values():
                index.count(new, -1)
                index.count(old, 1)
        _refuse_clash(engine, graph, keys)
        return None
    edges = rewired(graph, last.graph, keys)
    connect = {(src, dst): edge for src, dst, edge in edges.connect}
    for (src, dst), edge in small.auto.items():
        if dst not in graph.succ.get(src, {}):  # (a given edge alike: prepare() adds none)
            connect[(src, dst)] = edge
    return _reshaped(engine, graph, small, connect, set(edges.disconnect))


def _classify(
    engine: Engine, graph: Graph, keys: Collection[Key], given: dict[Key, Resource], small: Small
) -> bool:
    """Put in `small` `_small_swap`'s vertices of `keys` to replace, add and remove; False
    when one of them needs the whole graph prepared again."""
    for key in keys:
        res = graph.vertices.get(key)
        vertex = engine.vertices.get(key)
        if key not in given:
            if res is None or key in engine.vertices or not _sema_fits(engine, res, small):
                return False
            if _grouping(engine, res):  # into a group, the only change
                if len(keys) != 1 or not _joins(engine, graph, key, res, small):
                    return False
                continue
            if not _alone(engine, graph, key, res, False):
                asked = _asking(engine, key, res, False)
                if asked is None:
                    return False
                small.auto.update(((provider, key), AUTO) for provider in asked)
            small.add[key] = res
            if engine._autoindex is not None:  # the next one added must be alone beside it
                engine._autoindex.count(res, 1)  # (a fallback's prepare() drops the index,
                # and _small_swap undoes these counts when it gives up)
        elif res is None:
            if vertex is None:  # out of a group, the only change
                if len(keys) != 1 or not _leaves(engine, graph, key, given[key], small):
                    return False
                continue
            if not _alone(engine, engine.graph, key, given[key], True):
                if _asking(engine, key, given[key], True) is None:
                    return False
                if not _unauto(engine, key, small):
                    return False
            small.remove.append(key)
        elif not _sema_fits(engine, res, small):
            return False  # verify() decides
        elif vertex is None or _grouping(engine, res, vertex.pristine):
            if not _regrouped(engine, graph, key, given[key], res, small):
                return False  # grouped into another vertex, or its groups may change
        elif same(vertex.pristine, res):
            continue
        elif not _in_place(engine, vertex, res) and not _moved(engine, key, vertex, res, small):
            return False  # the graph's shape may change
        else:
            small.replace[key] = res
    gone = set(small.remove)  # an automatic edge from a vertex removed: prepare() decides
    return not any(provider in gone for provider, _key in small.auto)


def _reshaped(
    engine: Engine, graph: Graph, small: Small, connect: dict[Ends, Edge], disconnect: set[Ends]
) -> Small | None:
    """`small` with the edges of `graph` to `connect` and `disconnect` in the prepared
    graph (made by the swap, `_reshape`); None when that could change an automatic edge or
    a group, or makes a cycle (a full prepare() then decides)."""
    if (connect or disconnect) and not _rewirable(engine, graph, disconnect):
        return None  # (the automatic edges dropped, `unauto`, are prepare()'s alike)
    disconnect |= small.unauto
    small.connect, small.disconnect = connect, disconnect
    if not (small.add or small.remove or connect or disconnect):
        return small
    vertices = engine.graph.vertices
    ends = {key for pair in [*connect, *disconnect] for key in pair}
    if any(k not in small.add and (k not in vertices or members(vertices[k])) for k in ends):
        return None  # an edge of a group (autogroup moved its members' edges to it)
    grouping = engine.autogroup and engine._groupable
    if grouping and not _off_paths(engine, disconnect, {}):  # (the paths of the running graph)
        return None
    undo = reshape(engine.graph, small)  # tried, then undone: nothing else runs meanwhile
    if undo is None:
        return None
    try:
        if any(engine.graph.path(dst, src) is not None for src, dst in connect):
            return None  # a cycle, or one that prepare() avoids by skipping an automatic edge
        if grouping and not _off_paths(engine, connect, small.add):  # (the new graph's)
            return None
    finally:
        undo()
    new = {*small.replace, *small.add, *small.remove}
    small.rewired = frozenset(k for k in ends if k in engine.vertices and k not in new)
    small.release = frozenset(d for _s, d in disconnect if d in small.rewired)
    return small


def _rewirable(engine: Engine, graph: Graph, disconnect: set[Ends]) -> bool:
    """Whether edges of the given graph may change with no automatic edge changing: no
    disconnected edge that prepare() would then add as an automatic one (or an automatic
    edge it skipped for a cycle that may be added now). Groups: `_off_paths`."""
    if not engine.autoedges or not disconnect:
        return True
    index = engine._autoindex
    if index is None or index.skipped != 0:
        return False
    for src, dst in disconnect:
        provider, wanter = graph.vertices.get(src), graph.vertices.get(dst)
        if provider is not None and wanter is not None and may_edge(provider, wanter):
            return False
    return True


def _off_paths(engine: Engine, edges: Iterable[Ends], added: dict[Key, Resource]) -> bool:
    """Whether none of `edges` is on a path between two vertices of the prepared graph
    that autogroup may group (it groups two only when no path joins them, so then no
    group changes): each ends at a vertex with no edge out of it, or starts at one with
    no edge into it, that autogroup leaves alone (a file added in a managed directory,
    with an edge from it and none on; `added`: those not in it yet). In O(the edges)."""
    succ, pred, vertices = engine.graph.succ, engine.graph.pred, engine.graph.vertices

    def alone(key: Key, edges: dict[Key, dict[Key, Edge]]) -> bool:
        res = vertices[key] if key in vertices else added[key]
        return not edges[key] and not members(res) and not _grouping(engine, res)

    return all(alone(dst, succ) or alone(src, pred) for src, dst in edges)


def _alone(engine: Engine, graph: Graph, key: Key, res: Resource, present: bool) -> bool:
    """Whether `res` (of `key`) is in `graph` (present) or may be added to it without
    any group, nor changing another vertex's automatic edges (its given edges are
    `_reshaped`'s; its semaphores `_sema_fits`')."""
    if present and members(engine.vertices[key].res):
        return False
    if _grouping(engine, res):
        return False
    return _auto_alone(engine, res, present)


def _asking(engine: Engine, key: Key, res: Resource, present: bool) -> list[Key] | None:
    """The providers of the automatic edges of `res` (of `key`), when it takes part in
    them only by asking, each request answered by the one running resource that provides
    it (no marker, no lazy provider, no edge that prepare() skipped for a cycle), nothing
    asking for what it provides: the edges prepare() would give it, and no other edge of
    the graph changes when it is added (or removed: `present`). None when that cannot be
    told so (prepare() decides); a cycle is `_reshaped`'s to find."""
    index, providers = engine._autoindex, engine._providers
    if index is None or providers is None or index.skipped != 0 or index.lazy:
        return None
    if not res.meta.autoedge or not isinstance(res, Edgeable) or _grouping(engine, res):
        return None
    if (present and members(engine.vertices[key].res)) or type(res) in LAZY_PROVIDERS:
        return None
    provides = set(res.uids())
    if any(index.wants.get(uid, 0) for uid in provides):
        return None  # (`res` asks for none of them: below)
    asked: list[Key] = []
    for request in res.autoedges():
        for uid in request:
            count = index.provides.get(uid, 0)
            if uid in provides or uid.kind in MARKERS or count > 1:
                return None
            if count:
                provider = providers.get(uid)
                if provider in (None, key) or not _provides(engine, provider, uid):
                    return None
                asked.append(provider)
                break
    return asked


def _unauto(engine: Engine, key: Key, small: Small) -> bool:
    """The automatic edges to `key` in the prepared graph put in `small.unauto` (those
    the given graph has too are `rewired`'s); False when one that the given graph has
    not may be a given edge of a resource grouped into its start (autogroup moved it
    there: only prepare() tells them apart)."""
    given = engine._raw.pred.get(key, {}) if engine._raw is not None else {}
    auto = [other for other in engine.graph.pred[key] if other not in given]
    if any(members(engine.graph.vertices[other]) for other in auto):
        return False
    small.unauto.update((other, key) for other in auto)
    return True


def _moved(engine: Engine, key: Key, vertex: Vertex, res: Resource, small: Small) -> bool:
    """Whether `res` may replace `vertex`, whose UIDs or requests it changes (a file's
    path), as its removal and then its addition would be swapped (`_alone`, or else
    `_asking`, both), its automatic edges put in `small` and the index counting it instead
    (undone by `_small_swap` if it gives up). With automatic edges off, what it manages
    is all that changes (`_reclaim`'s)."""
    old = vertex.pristine
    if type(res) is not type(old) or members(vertex.res) or _grouping(engine, res, old):
        return False
    if not engine.autoedges:
        small.moved[key] = (old, res)
        return True
    if not _alone(engine, engine.graph, key, old, True) and _asking(engine, key, old, True) is None:
        return False
    if not _unauto(engine, key, small):
        return False
    index = engine._autoindex
    assert index is not None  # made by _alone
    index.count(old, -1)
    asked = (
        [] if _alone(engine, engine.graph, key, res, False) else _asking(engine, key, res, False)
    )
    if asked is None:
        index.count(old, 1)
        return False
    index.count(res, 1)
    small.auto.update(((provider, key), AUTO) for provider in asked)
    small.moved[key] = (old, res)
    return True


def _grouping(engine: Engine, *resources: Resource) -> bool:
    """Whether autogroup may group one of `resources` (its kind Groupable, its meta
    autogroup on): prepare() decides where it goes."""
    return engine.autogroup and any(
        res.meta.autogroup and isinstance(res, Groupable) for res in resources
    )


def _sema_fits(engine: Engine, res: Resource, small: Small) -> bool:
    """Whether the semaphores of `res`, added or replacing another, have the sizes that
    the running graph and the others of `small` give them (a new one: its own), as
    verify() asks, in O(its semaphores); counted in `small.semas`. A semaphore whose
    resources have all left may keep its size here: prepare() then decides."""
    if not res.meta.sema:
        return True
    sizes = engine._sema_sizes
    if sizes is None:  # prepare() refused the last graph: the running one's (verified)
        sizes = engine._sema_sizes = {}
        for running in engine.graph.vertices.values():
            sizes.update(sema_size(entry) for entry in running.meta.sema)
    for name, size in (sema_size(entry) for entry in res.meta.sema):
        if small.semas.setdefault(name, sizes.get(name, size)) != size:
            return False
    return True


def provided(engine: Engine, added: list[Vertex]) -> None:
    """`_providers` told what the vertices a small swap `added` are the only ones to
    provide (an entry left by a vertex removed since is checked, and found stale, when
    read: `_provides`)."""
    providers, index = engine._providers, engine._autoindex
    if providers is None or index is None:
        return
    for vertex in added:
        res = vertex.res
        if res.meta.autoedge and isinstance(res, Edgeable):
            for uid in res.uids():
                if index.provides.get(uid) == 1:
                    providers[uid] = vertex.key


def _provides(engine: Engine, key: Key, uid: UID) -> bool:
    """Whether the running resource `key` provides `uid` to automatic edges."""
    vertex = engine.vertices.get(key)
    if vertex is None:
        return False
    res = engine.graph.vertices[key]
    return res.meta.autoedge and isinstance(res, Edgeable) and uid in res.uids()


def _in_place(engine: Engine, vertex: Vertex, res: Resource) -> bool:
    """Whether `res` may replace `vertex` without preparing the graph again: the same
    kind, semaphores, and what it manages (`managed`) and asks for automatically."""
    old = vertex.pristine
    if type(res) is not type(old) or members(vertex.res) or _grouping(engine, res, old):
        return False
    return _same_auto_edges(engine, old, res)


def _same_auto_edges(engine: Engine, old: Resource, res: Resource) -> bool:
    """Whether `res` manages (`managed`) and asks for automatically what `old` does."""
    if res.meta.autoedge != old.meta.autoedge:
        return False
    if managed(res) != managed(old):
        return False
    if engine.autoedges and res.meta.autoedge and isinstance(res, Edgeable):
        assert isinstance(old, Edgeable)
        return res.autoedges() == old.autoedges()
    return True


def _regrouped(  # noqa: PLR0917 (the method it was)
    engine: Engine, graph: Graph, key: Key, old: Resource, res: Resource, small: Small
) -> bool:
    """Whether `res` may replace `old` (of `key`) where autogroup put it, the vertex of
    its group replaced (`small.regroup`): autogroup would group the graph as it did, when
    nothing else changes but this one (one per swap; its edges, automatic ones too,
    unchanged: `_rewirable` refuses a change of edges while anything may be grouped) and
    it groups with each other candidate both ways as `old` did. In O(the candidates):
    autogroup compares them all."""
    candidates = engine._candidates
    if candidates is None or small.candidate or not engine.autogroup:
        return False
    if not (isinstance(res, Groupable) and isinstance(old, Groupable)) or type(res) is not type(
        old
    ):
        return False
    if not (res.meta.autogroup and old.meta.autogroup and _same_auto_edges(engine, old, res)):
        return False
    if key not in candidates:
        return False
    for other_key, other in candidates.items():
        if other_key != key and (
            res.group_cmp(other) != old.group_cmp(other)
            or other.group_cmp(res) != other.group_cmp(old)
        ):
            return False
    lead = key if key in engine.vertices else _leader(engine, key)
    if lead is None:
        return False
    vertex = engine.vertices[lead]
    grouped = [res if key_of(m) == key else m for m in members(vertex.res)]
    new = res if lead == key else graph.vertices.get(lead)
    if new is None:
        return False
    lead_twin = twin(new)
    assert isinstance(lead_twin, Groupable)
    lead_twin.grouped = grouped
    small.candidate[key] = res
    if same(vertex.pristine, lead_twin):
        return True  # the same group: its vertex kept
    small.regroup[lead] = grouped
    small.replace[lead] = new
    return True


def _joins(engine: Engine, graph: Graph, key: Key, res: Resource, small: Small) -> bool:
    """Whether `res` (of `key`), added with no edge, given or automatic, joins a group as
    autogroup would put it (added last in `graph`: with the first group, in autogroup's
    order, that takes it; nothing else then changes: it leads none), that group's vertex
    replaced (`small.regroup`), or groups with no other (a vertex of its own: the first
    pkg of a graph). In O(the candidates)."""
    candidates = engine._candidates
    if candidates is None or small.candidate or not isinstance(res, Groupable):
        return False
    if graph.succ.get(key) or graph.pred.get(key) or not _auto_alone(engine, res, False):
        return False
    if all(not res.group_cmp(c) and not c.group_cmp(res) for c in candidates.values()):
        small.add[key] = small.candidate[key] = res
        if engine._autoindex is not None:  # (as _classify counts one added)
            engine._autoindex.count(res, 1)
        return True
    if next(reversed(graph.vertices)) != key:
        return False  # (last: the candidates after it in autogroup's order are deeper)
    depth = res.kind.count(":")
    order = sorted(candidates.items(), key=lambda item: item[1].kind.count(":"))
    lead = next(
        (
            k
            for k, other in order
            if other.kind.count(":") <= depth and k in engine.vertices and other.group_cmp(res)
        ),
        None,
    )
    new = graph.vertices.get(lead) if lead is not None else None
    if lead is None or new is None:
        return False  # it would lead a group: prepare() decides
    grouped = members(engine.vertices[lead].res)
    before = [m for m in grouped if m.kind.count(":") <= depth]
    small.regroup[lead] = [*before, res, *grouped[len(before) :]]
    small.replace[lead] = new
    small.candidate[key] = res
    small.joined[key] = res
    return True


def _leaves(engine: Engine, graph: Graph, key: Key, old: Resource, small: Small) -> bool:
    """Whether `old` (of `key`), a member of a group with no edge, given or automatic, may
    leave it with nothing else changing (its edges were its group's: it had none), that
    group's vertex replaced (`small.regroup`)."""
    candidates, last = engine._candidates, engine._raw
    if candidates is None or last is None or key not in candidates or small.candidate:
        return False
    if not isinstance(old, Groupable):
        return False
    if last.succ.get(key) or last.pred.get(key) or not _auto_alone(engine, old, True):
        return False
    lead = _leader(engine, key)
    new = graph.vertices.get(lead) if lead is not None else None
    if lead is None or new is None:
        return False
    small.regroup[lead] = [m for m in members(engine.vertices[lead].res) if key_of(m) != key]
    small.replace[lead] = new
    small.candidate[key] = old
    small.left[key] = old
    return True


def _auto_alone(engine: Engine, res: Resource, present: bool) -> bool:
    """Whether `res` takes part in no automatic edge (`AutoIndex.alone`)."""
    if not engine.autoedges:
        return True
    if engine._autoindex is None:
        assert engine._raw is not None
        engine._autoindex = AutoIndex(engine._raw.vertices.values())
    return engine._autoindex.alone(res, present)


def _leader(engine: Engine, key: Key) -> Key | None:
    """The vertex whose group has `key` (O(the candidates and their groups))."""
    for lead in engine._candidates or ():
        vertex = engine.vertices.get(lead)
        if vertex is not None and any(key_of(m) == key for m in members(vertex.res)):
            return lead
    return None


def _reclaim(engine: Engine, small: Small, given: dict[Key, Resource]) -> bool:
    """Whether what `small` adds manages nothing another vertex manages once what it
    removes is gone (a rename of a file resource frees its path first), nor what it moves
    (a file resource's new path, its old one freed); `_owners` is then so (a fallback's
    prepare() makes it again). Made by prepare() from what it found: made here from the
    graph, it took the first add after a full swap ~1 s at 100,000 files."""
    adds = [*small.add.items(), *((key, new) for key, (_old, new) in small.moved.items())]
    claims = [((key[0], uid), key) for key, res in adds for uid in managed(res)]
    if _claimed(engine, claims, {*small.remove, *small.moved}) is not None:
        return False  # nothing changed: _refuse_clash names them
    found = engine._owners
    assert found is not None  # made by _claimed
    olds = [
        *((k, given[k]) for k in small.remove),
        *((k, o) for k, (o, _n) in small.moved.items()),
    ]
    for key, old in olds:
        for uid in managed(old):
            if found.get((key[0], uid)) == key:
                del found[(key[0], uid)]
    found.update(claims)
    return True


def _claimed(
    engine: Engine, claims: list[tuple[tuple[str, UID], Key]], freed: set[Key]
) -> tuple[UID, Key, Key] | None:
    """The first of `claims` ((kind, UID), key) that a resource of that kind manages
    already, in the running graph (`_owners`, but for those `freed`) or in an earlier
    claim: (UID, the other, the claimant); None if none is."""
    if engine._owners is None:  # prepare() refused the last graph: the running one's
        engine._owners = owned_by_kind(engine.graph)  # (verified when it was prepared)
    found = engine._owners
    mine: dict[tuple[str, UID], Key] = {}
    for kind_uid, key in claims:
        other = mine.get(kind_uid)
        if other is None and (owner := found.get(kind_uid)) not in freed:
            other = owner
        if other is not None and other != key:
            return kind_uid[1], other, key
        mine[kind_uid] = key
    return None


def _refuse_clash(engine: Engine, graph: Graph, keys: Collection[Key]) -> None:
    """GraphError (as prepare() says it) when a resource of `keys` in `graph` manages what
    another of its kind manages (a file's path): found in O(change) from the running
    graph's `_owners`, where prepare() takes seconds at 100,000 resources. Not when
    autogroup may group resources (a group's members are not in `_owners`)."""
    if engine.autogroup and engine._groupable:
        return
    claims = [
        ((key[0], uid), key)
        for key in keys
        if (res := graph.vertices.get(key)) is not None
        for uid in managed(res)
        if uid.kind not in MARKERS
    ]
    clash = _claimed(engine, claims, {*keys})
    if clash is None:
        return
    uid, other, key = clash
    first, second = (other, key) if _before(graph, other, key) else (key, other)
    raise GraphError(both_manage(uid, first, second))


def counted(engine: Engine, small: Small) -> None:
    """What the small swap changes of the engine's tallies of the graph given, beside its
    vertices: the sizes of its semaphores, the automatic edges' index (those that joined
    or left a group), autogroup's candidates."""
    if engine._sema_sizes is not None:
        engine._sema_sizes.update(small.semas)
    index = engine._autoindex
    if index is not None:
        for res in small.joined.values():
            index.count(res, 1)
        for res in small.left.values():
            index.count(res, -1)
    if small.candidate:  # (a resource autogroup may group is in the graph)
        engine._groupable = True
    if engine._candidates is not None:
        engine._candidates.update(small.candidate)
        for key in small.left:
            del engine._candidates[key]
