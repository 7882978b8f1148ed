"""Automatic edges: a resource depends on the resources that provide what it needs.

Each Edgeable resource says what it is (`uids()`) and what it needs (`autoedges()`: requests,
each a list of alternative UIDs, most preferred first). For every request, the first alternative
provided by another resource in the graph becomes an edge provider -> resource, unless that edge
would close a cycle (then it is skipped with a debug line). `meta: {autoedge: false}` opts a
resource out, on both sides.

A kind may provide some UIDs lazily (`Edgeable.LAZY`, `lazy_uids`): a package's files are read
only when the graph has a package and something asking for a path, never for other graphs.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Hashable, Iterable, Iterator
from typing import TypeVar

from engine.errors import GraphError
from engine.graph import Edge, Graph, Key, fmt_key
from engine.resource import LAZY_PROVIDERS, UID, Edgeable, Resource
from engine.steps import Steps, chunks, finish

log = logging.getLogger("engine")

AUTO = Edge(name="autoedge")
COUNTED = 4096  # UIDs counted in one step (AutoIndex.counting)

H = TypeVar("H", bound=Hashable)


def add_autoedges(
    graph: Graph, index: AutoIndex | None = None, providers: Owners | None = None
) -> int:
    """Add the automatic edges to `graph` in place; returns how many were added. `index`, if
    given, counts what each resource provides and asks for (AutoIndex), at no extra call.
    `providers`, if given, gets who provides each UID (`owners` of the resources taking part:
    GraphError if two of one kind provide one: `claim`)."""
    return finish(autoedge_steps(graph, index, providers))


def autoedge_steps(
    graph: Graph, index: AutoIndex | None = None, providers: Owners | None = None
) -> Steps[int]:
    """add_autoedges() in steps (engine.steps: Engine.prepare runs them on the loop, a turn
    given between them); `graph` is changed by them alone meanwhile."""
    providers = Owners() if providers is None else providers
    taking = _Provided()
    yield from taking.steps(graph, providers)
    wanting, lazy, markers = taking.wanting, taking.lazy, taking.markers
    wanted: list[UID] = []  # every UID asked for, counted at the end
    asked: Iterable[tuple[Key, list[list[UID]]]]
    lookup: dict[UID, Key] = providers
    if lazy:  # all the requests first, with those of the lazy kinds
        kinds = frozenset(kind for _key, res in lazy for kind in res.LAZY)
        asked = [(key, [*res.autoedges(), *res.lazy_autoedges(kinds)]) for key, res in wanting]
        found = _lazy_providers(kinds, lazy, asked, providers)
        if found:  # not in `providers`: those are what each resource manages
            lookup = {**providers, **found}
    else:
        asked = ((key, res.autoedges()) for key, res in wanting)
    added = skipped = 0
    succ = graph.succ
    for chunk in chunks(asked):
        yield
        for key, requests in chunk:
            for request in requests:
                wanted += request
                first = _first(lookup, request, key)
                if first is None:
                    continue
                for provider in _also(markers, request, first, key) if markers else (first,):
                    if key in succ[provider]:
                        continue
                    if graph.has_path(key, provider):
                        log.debug(
                            "autoedge %s -> %s skipped: it would make a cycle",
                            fmt_key(provider),
                            fmt_key(key),
                        )
                        skipped += 1
                        continue
                    graph.connect(provider, key, AUTO)
                    added += 1
    if index is not None:
        yield from index.counting(taking.provided, index.provides)
        yield from index.counting(wanted, index.wants)
        index.counted([kind for _key, res in lazy for kind in res.LAZY], index.lazy)
        index.skipped = skipped
    return added


class _Provided:
    """What the resources of a graph taking part in automatic edges provide (add_autoedges'
    first pass)."""

    def __init__(self) -> None:
        self.wanting: list[tuple[Key, Edgeable]] = []  # every resource taking part
        self.lazy: list[tuple[Key, Edgeable]] = []  # those providing some UIDs only when asked
        self.markers: dict[UID, list[Key]] = {}  # a MARKERS UID several provide: all of them
        self.provided: list[UID] = []  # every UID provided

    def steps(self, graph: Graph, providers: Owners) -> Steps[None]:
        """Find them in `graph`, in steps; `providers` gets who provides each UID (`claim`)."""
        lazy_types = LAZY_PROVIDERS
        markers, provided = self.markers, self.provided
        for chunk in chunks(graph.vertices.items()):
            yield
            for key, res in chunk:
                if not res.meta.autoedge or not isinstance(res, Edgeable):
                    continue
                uids = res.uids()
                for uid in uids:
                    owner = providers.setdefault(uid, key)
                    if owner != key:  # rare: another resource manages it too, or a marker
                        if uid.kind in MARKERS:
                            markers.setdefault(uid, [owner]).append(key)
                        else:
                            claim(providers, owner, uid, key)
                provided += uids
                self.wanting.append((key, res))
                if lazy_types and type(res) in lazy_types:
                    self.lazy.append((key, res))


def _lazy_providers(
    kinds: frozenset[str],
    lazy: list[tuple[Key, Edgeable]],
    asked: list[tuple[Key, list[list[UID]]]],
    providers: dict[UID, Key],
) -> dict[UID, Key]:
    """Who provides, lazily, the UIDs of the lazy `kinds` that are asked for and that no
    resource provides as its own (the first one, in graph order, when several do)."""
    wanted = {
        uid
        for _key, requests in asked
        for request in requests
        for uid in request
        if uid.kind in kinds and uid not in providers
    }
    found: dict[UID, Key] = {}
    if wanted:
        for key, res in lazy:
            for uid in res.lazy_uids(wanted):
                found.setdefault(uid, key)
    return found


def managed(res: Resource) -> list[UID]:
    """What `res` manages, as its kind says (Edgeable: its UIDs), whatever its meta autoedge."""
    return res.uids() if isinstance(res, Edgeable) else []


def owners(graph: Graph, found: Owners | None = None) -> Owners:
    """Who manages each UID of `graph` (the first, in graph order, when resources of several
    kinds do); GraphError when two resources of one kind manage the same thing (`claim`).
    `found`: what `add_autoedges` found already (its `providers`: those taking part are not
    asked again)."""
    return finish(owners_steps(graph, found))


def owners_steps(graph: Graph, found: Owners | None = None) -> Steps[Owners]:
    """owners() in steps (engine.steps)."""
    autoedged = found is not None
    found = Owners() if found is None else found
    for chunk in chunks(graph.vertices.items()):
        yield
        for key, res in chunk:
            if autoedged and res.meta.autoedge:
                continue  # counted by add_autoedges, if Edgeable
            for uid in managed(res):
                owner = found.setdefault(uid, key)
                if owner != key:
                    claim(found, owner, uid, key)
    return found


class Owners(dict[UID, Key]):
    """Who manages each UID (the first resource in graph order, whatever its kind: the one
    automatic edges see), and in `kinds`, per (kind, UID), the first resource of each other kind
    managing a UID that a resource of another kind manages first (a `tar` of a path, then a
    `file` of it): with the first, what `owned_by_kind` keeps, for `claim` to see every pair."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: dict[tuple[str, UID], Key] = {}


# Kinds of UID that mark an order, not a thing managed: several resources may provide one (no
# clash), and a request for it gets an edge from each. A kind adds its own when imported.
MARKERS: set[str] = set()


def claim(found: Owners, owner: Key, uid: UID, key: Key) -> None:
    """`key` manages `uid`, which `owner` (`found[uid]`, before it in the graph) manages too:
    GraphError if the first resource of its kind managing it `clash`es with it, whatever kinds
    came between (a `tar` of a path, then two `file` of it). A MARKERS UID is not managed."""
    if uid.kind in MARKERS:
        return
    first = owner if owner[0] == key[0] else found.kinds.setdefault((key[0], uid), key)
    if clash(first, key):
        raise GraphError(both_manage(uid, first, key))


def clash(owner: Key, key: Key) -> bool:
    """Whether `key` managing what `owner` manages is refused: two resources of one kind (two
    files of one path, two svc of one unit) would undo each other's changes forever. mgmt runs
    such a graph (its resources fight); we refuse it, as puppet refuses a duplicate declaration.
    Resources of different kinds may share a UID (mgmt's deploy-tar.mcl: a `deploy:tar` writes
    an archive, a `file` of its path sets its mode): the first provides it to automatic edges."""
    return owner != key and owner[0] == key[0]


def owned_by_kind(graph: Graph) -> dict[tuple[str, UID], Key]:
    """Who manages each UID, per kind of resource: what `clash` compares, kept exactly (an
    `owners` map keeps one resource per UID)."""
    return {(key[0], uid): key for key, res in graph.vertices.items() for uid in managed(res)}


def by_kind(found: Owners) -> dict[tuple[str, UID], Key]:
    """owned_by_kind() of a graph whose `owners` are `found` (it refused no clash), made from
    them in O(UIDs), not by asking each resource again (`uids()`); of a MARKERS UID several
    resources of one kind provide, the first one."""
    return finish(by_kind_steps(found))


def by_kind_steps(found: Owners) -> Steps[dict[tuple[str, UID], Key]]:
    """by_kind() in steps (engine.steps)."""
    out: dict[tuple[str, UID], Key] = {}
    for chunk in chunks(found.items(), COUNTED):
        yield
        for uid, owner in chunk:
            out[(owner[0], uid)] = owner
    out.update(found.kinds)
    return out


def duplicates(graph: Graph) -> Iterator[tuple[UID, Key, Key]]:
    """Each (uid, first, key) where `key` manages what `first`, before it in `graph`, manages
    and `clash` refuses it (per kind, as `owned_by_kind`): for a front-end that can say where
    each was declared (the YAML graph file), before the engine refuses the graph."""
    seen: dict[tuple[str, UID], Key] = {}
    for key, res in graph.vertices.items():
        for uid in managed(res):
            first = seen.setdefault((key[0], uid), key)
            if clash(first, key) and uid.kind not in MARKERS:
                yield uid, first, key


def overwritten(resources: Iterable[Resource]) -> Iterator[tuple[str, Resource, Resource]]:
    """Each (path, writer, editor) where `writer` writes the whole file `path` (a `file`
    resource's content, or its removal) without `editor`'s edit of a part of it (a sysctl's
    line, an authorized key): each write undoes the other's, forever, which `duplicates`
    (UIDs of one kind) cannot see. Refused at load as they are; a content not known before
    the run (a `source`) is left to the run-time warning (resources/_lib/rewrites.py `wrote`).
    Free when no kind of the graph edits files."""
    every = list(resources)
    editors = [res for res in every if res.EDITS_FILES]
    if not editors:
        return
    whole: dict[str, tuple[Resource, str]] = {}
    for res in every:
        written = res.written_file()
        if written is not None and written[1] is not None:  # (not known: said at run time)
            whole.setdefault(written[0], (res, written[1]))
    for editor in editors:
        for path in editor.edited_files():
            writer, text = whole.get(path, (None, ""))
            if writer is not None and not editor.holds_edit(text):
                yield path, writer, editor


def both_write(path: str, writer: Resource, editor: Resource) -> str:
    return (
        f"{editor} edits {path}, whose whole content {writer} writes: each would undo the "
        f"other's change, forever (put the edit in {writer}'s content, or keep one of them)"
    )


def both_manage(uid: UID, first: Key, second: Key) -> str:
    return (
        f"{fmt_key(second)} and {fmt_key(first)} both manage {uid.kind} {uid.key}: each would"
        " undo the other's changes (keep one of them)"
    )


def _first(providers: dict[UID, Key], request: list[UID], key: Key) -> Key | None:
    """The first provider of `request` other than `key` itself, if any."""
    for uid in request:
        provider = providers.get(uid)
        if provider is not None and provider != key:
            return provider
    return None


def _also(markers: dict[UID, list[Key]], request: list[UID], provider: Key, key: Key) -> list[Key]:
    """`provider` (`_first`'s answer to `request`), and when what it provides is a marker that
    others provide too, each of them (but `key`)."""
    for uid in request:
        if uid in markers and provider in markers[uid]:
            return [other for other in markers[uid] if other != key]
    return [provider]


def may_edge(provider: Resource, wanter: Resource) -> bool:
    """Whether `provider` provides something `wanter` asks for (an automatic edge between
    them, if nothing else provides it first): O(their UIDs)."""
    provider_uids, _ = AutoIndex.sides(provider)
    provides = set(provider_uids)
    wants = AutoIndex.sides(wanter)[1]
    if provides and isinstance(provider, Edgeable) and provider.LAZY:
        lazy = provider.LAZY
        wants += lazy_requests(wanter, lazy)
        if any(uid.kind in lazy for uid in wants):
            return True  # what it provides lazily is not listed: it may provide that
    return any(uid in provides for uid in wants)


def lazy_requests(res: Resource, kinds: frozenset[str]) -> list[UID]:
    """The UIDs of lazily provided `kinds` that `res` asks for only beside such a provider."""
    if not res.meta.autoedge or not isinstance(res, Edgeable):
        return []
    return [uid for request in res.lazy_autoedges(kinds) for uid in request]


class AutoIndex:
    """How many resources of a graph provide each UID, and how many ask for it: whether one
    resource added or removed takes part in no automatic edge, in O(its UIDs), not O(graph)."""

    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self.provides: dict[UID, int] = {}
        self.wants: dict[UID, int] = {}
        self.lazy: dict[str, int] = {}  # how many resources provide each LAZY kind
        # Automatic edges add_autoedges() skipped for a cycle (None: unknown, not made by it).
        self.skipped: int | None = None
        for res in resources:
            self.count(res, 1)

    @staticmethod
    def counted(uids: list[H], table: dict[H, int], sign: int = 1) -> None:
        """Count `uids` in (sign 1) or out (-1) of `table`."""
        for uid, times in collections.Counter(uids).items():  # a C loop over uids
            left = table.get(uid, 0) + sign * times
            if left:
                table[uid] = left
            else:
                del table[uid]

    @staticmethod
    def counting(uids: list[H], table: dict[H, int]) -> Steps[None]:
        """counted() of `uids` into `table`, in steps of a few thousand (a count of 40,000
        UIDs at once took ~5 ms)."""
        for start in range(0, len(uids), COUNTED):
            yield
            AutoIndex.counted(uids[start : start + COUNTED], table)

    @staticmethod
    def sides(res: Resource) -> tuple[list[UID], list[UID]]:
        """The UIDs `res` provides and those it asks for (none when it opted out)."""
        if not res.meta.autoedge or not isinstance(res, Edgeable):
            return [], []
        return res.uids(), [uid for request in res.autoedges() for uid in request]

    def count(self, res: Resource, sign: int) -> None:
        """Count `res` in (sign 1) or out (-1) of the graph."""
        provides, wants = self.sides(res)
        self.counted(provides, self.provides, sign)
        self.counted(wants, self.wants, sign)
        if LAZY_PROVIDERS and provides and type(res) in LAZY_PROVIDERS:
            assert isinstance(res, Edgeable)
            self.counted(list(res.LAZY), self.lazy, sign)

    def alone(self, res: Resource, present: bool) -> bool:
        """Whether `res` takes part in no automatic edge of the graph: nothing else provides
        what it asks for, nothing else asks for what it provides. `present`: it is counted."""
        provides, wants = self.sides(res)
        if LAZY_PROVIDERS and provides and type(res) in LAZY_PROVIDERS:
            return False  # what it provides is not listed: it may provide what one asks for
        if self.lazy:  # a lazy provider may provide what it asks for
            kinds = frozenset(self.lazy)
            if any(uid.kind in kinds for uid in wants) or lazy_requests(res, kinds):
                return False
        mine = 1 if present else 0
        own = set(provides)
        return all(self.wants.get(uid, 0) <= mine * wants.count(uid) for uid in provides) and all(
            self.provides.get(uid, 0) <= mine * (uid in own) for uid in wants
        )
