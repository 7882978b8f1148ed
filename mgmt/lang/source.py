"""The language as a source of graphs for the agent.

`LangSource.open(path, ...)` compiles the program (CompileError before anything runs), starts
its function graph and computes the first graph. Iterating the source yields every later graph
that differs from the last one sent; the agent swaps each into the engine (unchanged vertices
keep running). A run-time error in a function is logged once and the last good graph stays.
The source watches its program's files (unless told not to) and swaps in a new program on edit,
once the writer has closed the file (engine.watcher.follow_writes, as for graph files: a file
rewritten in place is empty, then half written, before it is whole); a program that does not
compile is reported once and the running one stays.

`problem` says what is wrong with the program while something is ("" otherwise): the last edit
does not compile (the previous program runs), or a function fails (the last good graph runs, or
none yet: `otherwise` says what runs then, e.g. a deploy's "deploy 2's graph still runs");
`on_problem` is called with each new one (the agent's status: `mgmt status` fails on it).

A program that imports "world" needs the cluster: the graphs it yields say so (`Loaded.cluster`),
even before it has produced one (an empty graph then, or the last one after an edit), so that
the agent starts the cluster and hands over its World (`attach_world`); the world.* functions
wait for it, and the graph computed once they have their first values is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import collector
from engine.derive import Change, derive
from engine.errors import GraphError, MgmtError, ValidationError
from engine.graph import Edge, Graph, Key, cycle_text, fmt_key, key_of
from engine.limits import max_resources, too_many
from engine.local import LocalValues
from engine.namedpath import NamedPaths
from engine.resource import Resource, lookup, refused_together, together_kinds, validates_together
from engine.tasks import TaskSet, surviving
from mgmt.collectscope import Collect, collects
from mgmt.lang import compile_file
from mgmt.lang.checker import Checked
from mgmt.lang.clock import Clock
from mgmt.lang.errors import (
    CompileError,
    CycleError,
    FuncError,
    GraphLimitError,
    LangError,
    NotReady,
    Pos,
)
from mgmt.lang.funcs import Context
from mgmt.lang.kinds import EXPORT_PREFIX, build_resource
from mgmt.lang.modules import read_again
from mgmt.lang.runtime import CollectSpec, EdgeSpec, ResSpec, Runtime
from mgmt.lang.values import to_plain
from mgmt.listing import first_of
from mgmt.spans import common_ends
from mgmt.yamlgraph import Loaded

if TYPE_CHECKING:
    from engine.world import World

log = logging.getLogger("lang")

# Seconds after the last of a burst of changes to the program's files (a module directory
# written again, `git checkout`, a script's commands) that it is compiled: once, not once per
# file with an error for each state in between.
FILES_SETTLE = 0.1

# How long attach_world waits for the streams' first values (a world read that cannot reach the
# cluster fails sooner: the client gives up after 5 s).
SETTLE_WAIT = 10.0
WAIT_SAID = 3.0  # seconds of _settle after which what the graph waits for is logged


# (kind, name) -> the statement a resource was built from, and the resource.
Built = dict[tuple[str, str], tuple[ResSpec, Resource]]


def build_graph(
    items: tuple[Any, ...], name: str, last: Built | None = None, built: Built | None = None
) -> Loaded:
    """The engine graph for a program's output, with what it exports and collects; FuncError
    (with the statement's position). A resource declared as in `last` (the last graph's
    resources) is that very object again, which the engine keeps on an identity check: a new
    graph costs the swap O(change). `built` receives this graph's resources, for the next.

    A resource with `Meta:export` is exported and also in the local graph (where `Meta:hidden`
    keeps it from being applied); one named `@@name` is exported only, as in graph files.
    """
    loaded = Loaded(Graph(name))
    graph = loaded.graph
    seen: dict[tuple[str, str], ResSpec] = {}
    exports: dict[tuple[str, str], ResSpec] = {}
    limit = max_resources()
    for item in items:
        if isinstance(item, CollectSpec):
            loaded.collect += _collects(item)
            continue
        if not isinstance(item, ResSpec):
            continue
        key = (item.kind, item.name)
        first = seen.get(key)
        if first is not None:
            if (first.params, first.meta) != (item.params, item.meta):
                _merge(loaded, item, first)
            continue
        seen[key] = item
        exported_only = item.name.startswith(EXPORT_PREFIX)
        before = (last or {}).get(key)
        if before is not None and (before[0].params, before[0].meta) == (item.params, item.meta):
            res = before[1]
        else:
            res = _build(
                item, item.name.removeprefix(EXPORT_PREFIX) if exported_only else item.name
            )
        if built is not None:
            built[key] = (item, res)
        if exported_only or res.meta.export:
            other = exports.setdefault((res.kind, res.name), item)
            if other is not item:
                raise FuncError(
                    f"{fmt_key((res.kind, res.name))} is exported twice (also at {other.pos})",
                    item.pos,
                )
            loaded.exported.append(res)
        if not exported_only:
            graph.add(res)
            if len(graph) > limit:
                raise GraphLimitError(f"the program declares {too_many(len(graph))}", item.pos)
    _connect(items, loaded, limit)
    _check(graph, seen, items)
    return loaded


def _connect(items: tuple[Any, ...], loaded: Loaded, limit: int) -> None:
    """build_graph's edges: into the graph, or pending on a collected end (FuncError)."""
    edges = 0
    graph = loaded.graph
    for item in items:
        if not isinstance(item, EdgeSpec):
            continue
        edges += 1
        if edges > limit:
            raise GraphLimitError(f"the program declares {too_many(edges, 'edges')}", item.pos)
        if item.src == item.dst:
            raise FuncError(f"edge from {fmt_key(item.src)} to itself", item.pos)
        edge = Edge("", item.notify, item.sendrecv)
        missing = [end for end in (item.src, item.dst) if end not in graph]
        for end in missing:
            if not collects(loaded.collect, *end):
                raise FuncError(
                    f"edge to {fmt_key(end)}: no such resource in the graph (nor collected)",
                    item.pos,
                )
        if not missing:
            graph.connect(item.src, item.dst, edge)
        elif item.sendrecv:
            raise FuncError("send/recv cannot involve a collected resource (yet)", item.pos)
        else:  # added once the collected resource is in the graph
            loaded.pending.append((item.src, item.dst, edge))


def _check(graph: Graph, seen: dict[Key, ResSpec], items: tuple[Any, ...]) -> None:
    """CycleError for a cycle (at the edge statement that closes it, naming where each of its
    edges was made), or FuncError (at its statement) for the first resource of `graph` that its
    kind refuses together with others of the graph (Resource.validate_together)."""
    cycle = graph.find_cycle()
    if cycle:
        places: dict[tuple[Key, Key], Pos] = {}
        for item in items:
            if isinstance(item, EdgeSpec):
                places.setdefault((item.src, item.dst), item.pos)

        def place(src: Key, dst: Key) -> str | None:
            pos = places.get((src, dst))
            return None if pos is None else str(pos)

        raise CycleError(cycle_text(cycle, place), places.get((cycle[-2], cycle[-1])))
    kinds = together_kinds()  # none unless such a kind was loaded: no pass at all
    together: dict[type[Resource], list[Resource]] = {}
    for (kind, _name), res in graph.vertices.items() if kinds else ():
        if kind in kinds:
            together.setdefault(type(res), []).append(res)
    for res, refusal in refused_together(together):
        raise FuncError(f"{res}: {refusal}", seen[key_of(res)].pos)


class Output:
    """The graphs of a program's output, each made from the last one in O(change).

    The runtime hands back the very objects it declared before, in the same order, for
    whatever did not change (a loop's unchanged iterations, statements not recomputed), so the
    items that left and came are found by identity between the ends the two outputs have in
    common (found at memcmp speed, mgmt.spans: there, an item is the same object or an equal
    one): a value's change costs what lies between the first and the last item it changed, not
    the whole output. Only their vertices and edges are changed in the last graph
    (engine.derive.derive, the path graph files' edits take too), with a cycle check of the
    edges added only. The engine then swaps in O(change) as well (Loaded.since: the resources
    and the ends of the edges that changed). A program whose output has duplicates, exports
    or collects, an error, or a change of most of the output is built in full (build_graph),
    which also says what is wrong.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loaded: Loaded | None = None  # the last graph made
        self.derived = 0  # graphs made from the last one (tests read it)
        self._items: tuple[Any, ...] = ()  # the last output
        self._built: Built = {}  # its resources by key, with the statement of each
        self._edges: dict[tuple[Key, Key], EdgeSpec] = {}  # its edges by their ends
        self._plain = False  # no duplicate, export, collect: the next may be derived

    def build(self, items: tuple[Any, ...]) -> Loaded:
        """The graph of `items` (FuncError, with the statement's position)."""
        loaded = self._derive(items) if self._plain and self.loaded is not None else None
        if loaded is None:
            loaded = self._full(items)
        else:
            self.derived += 1
        self.loaded, self._items = loaded, items
        return loaded

    def _full(self, items: tuple[Any, ...]) -> Loaded:
        built: Built = {}
        loaded = build_graph(items, self.name, self._built, built)
        edges = {(e.src, e.dst): e for e in items if isinstance(e, EdgeSpec)}
        specs = sum(1 for item in items if isinstance(item, ResSpec))
        self._plain = (
            not (loaded.exported or loaded.collect or loaded.pending)
            and specs == len(built)
            and len(edges) == len(items) - specs
        )
        self._built, self._edges = built, edges
        return loaded

    def _derive(self, items: tuple[Any, ...]) -> Loaded | None:
        """The graph of the output `items` made from the last one, or None (build it in
        full)."""
        assert self.loaded is not None
        head, tail = common_ends(self._items, items)
        left = self._items[head : len(self._items) - tail]
        now = items[head : len(items) - tail]
        last, ids = (
            dict(zip(map(id, left), left, strict=True)),
            dict(zip(map(id, now), now, strict=True)),
        )
        gone = [last[i] for i in last.keys() - ids.keys()]
        came = [ids[i] for i in ids.keys() - last.keys()]
        if 2 * (len(gone) + len(came)) > len(items) + 8 or len(items) > max_resources():
            return None  # most of it changed: as fast in full (which also counts the graph)
        change = Change()
        removed: set[Key] = set()
        unlinked: dict[tuple[Key, Key], EdgeSpec] = {}
        for item in gone:
            if isinstance(item, ResSpec):
                removed.add((item.kind, item.name))
            elif isinstance(item, EdgeSpec):
                unlinked[item.src, item.dst] = item
            else:
                return None
        built: Built = {}
        edges: dict[tuple[Key, Key], EdgeSpec] = {}
        alone = sum(isinstance(item, ResSpec) for item in came) == 1
        for item in came:
            if isinstance(item, ResSpec):
                key = (item.kind, item.name)
                if key in built or (key in self._built and key not in removed):
                    return None  # declared twice
                res = self._resource(item, alone)
                if res is None or validates_together(type(res)):
                    return None  # (a kind checked together: build_graph checks them all)
                built[key] = (item, res)
                change.put[key] = res
            elif isinstance(item, EdgeSpec):
                ends = (item.src, item.dst)
                if ends in edges or (ends in self._edges and ends not in unlinked):
                    return None  # declared twice
                edges[ends] = item
                old = unlinked.get(ends)
                if old is not None and (old.notify, old.sendrecv) == (item.notify, item.sendrecv):
                    del unlinked[ends]  # declared again alike: the edge stays
                else:
                    change.connect.append((*ends, Edge("", item.notify, item.sendrecv)))
            else:
                return None
        change.remove = removed - built.keys()
        change.disconnect = list(unlinked)
        try:
            derived = derive(self.loaded.graph, change)
        except GraphError:
            return None  # a missing end, a cycle: build_graph says which, where
        for key in change.remove:
            del self._built[key]
        for ends in unlinked:
            del self._edges[ends]
        self._built.update(built)
        self._edges.update(edges)
        loaded = Loaded(derived.graph)
        loaded.since = (derived.base, derived.touched)
        return loaded

    def _resource(self, item: ResSpec, alone: bool) -> Resource | None:
        """The resource of a statement: the last one if declared alike; None if it is exported
        or wrong (build_graph says why). `alone`: the only new statement, declared once: its
        FuncError is build_graph's (every other statement built before, none can fail first),
        raised here (since 2026-12-06: a bad value of one of 100,000 built them all again to
        say it, ~150 ms)."""
        if item.name.startswith(EXPORT_PREFIX):
            return None
        before = self._built.get((item.kind, item.name))
        if before is not None and (before[0].params, before[0].meta) == (item.params, item.meta):
            return before[1]
        try:
            res = _build(item, item.name)
        except FuncError:
            if alone:
                raise
            return None
        return None if res.meta.export else res


_SWAPPED = {
    "graph": "swapping in the new program",
    "waiting": "swapping in the new program (its graph once its streams have values)",
    "same": "the new program gives the running graph: nothing to swap",
    "error": "the new program fails at run time: nothing swapped (its graph follows it once "
    "it works)",
}


def _merge(loaded: Loaded, item: ResSpec, first: ResSpec) -> None:
    """Merge a second, different declaration into the graph's vertex (engine.graph's rules:
    compatible ones merge, e.g. pkg installed + newest); FuncError naming both positions."""
    key = (item.kind, item.name)
    old = loaded.graph.vertices.get(key)
    try:
        if old is None:  # exported only (@@name): exported resources are not merged
            raise GraphError(f"{fmt_key(key)} is declared twice with different params")
        merged = loaded.graph.add_or_merge(_build(item, item.name))
    except GraphError as err:
        # One statement made both (a loop's iterations, two includes of one class): say so,
        # rather than naming its own place as the other.
        also = (
            "also made there, by another iteration or include"
            if first.pos == item.pos
            else f"also at {first.pos}"
        )
        raise FuncError(f"{err} ({also})", item.pos) from None
    loaded.exported = [merged if res is old else res for res in loaded.exported]


def _build(item: ResSpec, name: str) -> Resource:
    cls = lookup(item.kind)
    if cls is None:
        raise FuncError(f"unknown kind {item.kind}", item.pos)
    try:
        params = {k: to_plain(v) for k, v in item.params}
        res = build_resource(cls, name, params, {k: to_plain(v) for k, v in item.meta})
    except ValidationError as err:
        raise FuncError(f"{fmt_key((item.kind, item.name))}: {err}", item.pos) from None
    return res


def _collects(item: CollectSpec) -> list[Collect]:
    params = {k: to_plain(v) for k, v in item.params}
    meta = {k: to_plain(v) for k, v in item.meta}
    return [Collect(item.kind, name=n, host=h, params=params, meta=meta) for n, h in item.targets]


class LangSource:
    """Runs a program and yields each new graph it produces (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        hostname: str,
        watch: bool = True,
        clock: Clock | None = None,
        local: LocalValues | None = None,
        otherwise: str = "no graph yet",
        commands: bool = True,
    ) -> None:
        self.path = path
        self.ctx = Context(hostname, local=local, commands=commands)
        self.watch = watch
        self.clock = clock
        self.runtime: Runtime | None = None
        self.first: Loaded | None = None
        self.first_error: str | None = None
        self.first_exception: Exception | None = None  # first_error's (`mgmt check` reads it)
        self.graphs = 0  # graphs produced so far (the agent and tests read it)
        self.needs_cluster = False  # the program imports "world"
        self.problem = ""  # what is wrong with the program, if anything (module docstring)
        self.on_problem: Callable[[str], None] | None = None  # called with each new problem
        self.otherwise = otherwise  # what runs while the program has produced no graph
        self._compile_problem = ""  # the last edit's compile error (the previous one runs)
        self._run_problem = ""  # a function's error, and what runs meanwhile
        self._last: Loaded | None = None  # the last graph produced
        self.evaluated = asyncio.Event()  # set after each evaluation (tests wait on it)
        self._digest = ""
        self._last_items: Any = None
        self._output = Output(path.stem)  # the graphs of its output
        self._last_error: str | None = None
        self._latest: Loaded | None = None
        self._ready = asyncio.Event()
        self._kick = asyncio.Event()
        self._reload = False
        self._tasks = TaskSet("lang", log)
        self._files: list[Path] = [path]  # the program's files, as last compiled or refused
        self._refused = ""  # the digest of self._files as last refused (said once)
        self._watcher: NamedPaths | None = None
        self._relink = False  # the program's path was re-pointed (a symlink on the way)

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        hostname: str,
        watch: bool = True,
        clock: Clock | None = None,
        local: LocalValues | None = None,
        otherwise: str = "no graph yet",
        commands: bool = True,
        checked: Checked | None = None,
    ) -> LangSource:
        """Compile (CompileError), start, and compute the first graph (or first_error).
        `commands`: False to check it only (Context.commands). `checked`: the program as
        compiled from `path` already (`mgmt check` compiled it to check it), not compiled
        again."""
        source = cls(
            path,
            hostname=hostname,
            watch=watch,
            clock=clock,
            local=local,
            otherwise=otherwise,
            commands=commands,
        )
        if checked is None:
            checked = await source._compile()
        source._commit(checked)
        if watch:
            await source._watch(checked.files)  # then read again: no edit is missed
        source._start(checked)
        source._evaluate()
        if not source.needs_cluster:  # the world's streams wait for the agent (attach_world)
            await source._settle()
        source._ask_for_cluster()
        source.first = source._take()
        source._spawn(source._loop(), "lang")
        return source

    def positions(self) -> dict[Key, str]:
        """Where each resource of the last graph was declared (`file:line:col`), by key."""
        return {key: str(spec.pos) for key, (spec, _res) in self._output._built.items()}

    async def _watch(self, files: list[Path]) -> None:
        """Watch the program's files (its own and its local modules'), and the path it was
        given through its symlinks (`current` -> `releases/42`): a change reloads it. A file
        watched from now on was read before its watch was there: it is read again (an edit
        between the two was unseen: a module's, made while the main file was missing, was
        lost until the next edit or SIGHUP)."""
        if self._watcher is None:
            self._watcher = NamedPaths([self.path, *files], settle=FILES_SETTLE)
            await self._watcher.__aenter__()
            self._tasks.spawn(
                self._watcher.follow(self._edited, self._relinked), "lang program watch"
            )
            self._edited()
        elif self._watcher.watch([self.path, *files]):
            self._edited()

    def _relinked(self) -> None:
        """The program's path leads elsewhere now: its files there are compiled, even if the
        ones it read are unchanged."""
        self._relink = True

    async def _compile(self) -> Checked:
        """Read and compile the program and its modules (CompileError), in a thread: a big
        program takes seconds to check, and the loop keeps running the engine meanwhile. The
        compile builds a new tree and reads only what does not change once loaded (the
        builtins, the kinds); the parser's own state is held by one parse at a time."""
        return await asyncio.to_thread(compile_file, self.path)

    def _commit(self, checked: Checked) -> None:
        """`checked` is the running program from now on (what a re-read compares with)."""
        self._digest, self._files = checked.digest, checked.files
        self.needs_cluster = any(m.split("/")[0] == "world" for m in checked.modules)

    def _start(self, checked: Checked) -> None:
        with collector.paused():  # (as _evaluate)
            self.runtime = Runtime(
                checked,
                ctx=self.ctx,
                clock=self.clock,
                base_dir=self.path.parent.resolve(),
                notify=self._kick.set,
            )

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)

    def _take(self) -> Loaded | None:
        latest, self._latest = self._latest, None
        self._ready.clear()
        return latest

    # the agent's side -----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Loaded]:
        while True:
            await self._ready.wait()
            latest = self._take()
            if latest is not None:
                yield latest

    def reload(self) -> None:
        """Re-read the program (SIGHUP); an unchanged file is not recompiled, unless it was
        refused (a module it lacked may be there now)."""
        self._refused = ""
        self._edited()

    def _edited(self) -> None:
        self._reload = True
        self._kick.set()

    async def attach_world(self, world: World) -> Loaded | None:
        """The cluster is up: the world.* functions read it from now on.

        Waits (up to SETTLE_WAIT s) until every running stream has its first value and the
        program has been evaluated with them; returns the graph it then produced, if it is new
        (taken: the iterator does not yield it again).
        """
        self.ctx.world.attach(world)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_WAIT):
                while self.runtime is not None and (self.runtime.waiting or self.runtime.pending):
                    self.evaluated.clear()
                    await self.evaluated.wait()
        return self._take()

    async def aclose(self) -> None:
        await self._tasks.close()
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None
        if self.runtime is not None:
            await self.runtime.close()

    # the loop -------------------------------------------------------------------------------

    async def _settle(self, outcome: str = "waiting") -> str:
        """Give streams that start without a value (os.system's first line, os.readfile's
        read in a thread) up to SETTLE_WAIT s to produce one, so that the first graph already
        has it (mgmt waits for them too). The last evaluation's outcome (_evaluate's), else
        `outcome`."""
        assert self.runtime is not None
        said = asyncio.get_running_loop().call_later(WAIT_SAID, self._say_waiting)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SETTLE_WAIT):
                    while self.runtime.waiting:
                        self._kick.clear()
                        if not self.runtime.pending:
                            await self._kick.wait()
                        outcome = self._evaluate()
        finally:
            said.cancel()
        if self.runtime.pending or self._reload:
            self._kick.set()  # for the loop
        return outcome

    def _say_waiting(self) -> None:
        """After WAIT_SAID s of _settle: what the graph still waits for (before, nothing was
        logged: an `os.readfile` of a file on a hung NFS or FUSE mount left a silent agent)."""
        calls = [] if self.runtime is None else self.runtime.waited_for()
        if calls:
            log.warning(
                "%s: the graph waits for %s (%gs so far)", self.path, "; ".join(calls), WAIT_SAID
            )

    async def _loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            with surviving(log, f"reading {self.path} again", self._unexpected):
                if self._reload:
                    self._reload = False
                    await self._recompile()
                if self.runtime is not None and self.runtime.pending:
                    self._evaluate()
                    await self.runtime.reap()

    def _unexpected(self, problem: str) -> None:
        self._compile_problem = problem
        self._set_problem()

    def _evaluate(self) -> str:
        """Evaluate the program: "graph" (a new graph handed over), "same" (the graph is the
        last one), "error" (a run-time error, logged) or "waiting" (for a stream's value).
        Without the cycle collector's passes: a big program's first evaluation makes many
        lasting objects and no garbage cycles (a 25,000-resource program's walked them all
        three times over, 1.1 s of its 5 s check)."""
        try:
            with collector.paused():
                return self._evaluate_once()
        finally:
            self.evaluated.set()

    def _evaluate_once(self) -> str:
        assert self.runtime is not None
        changed, items, error = self.runtime.evaluate()
        if not changed:
            return "waiting"
        if error is None:
            try:
                outcome = "same"
                if items != self._last_items:
                    loaded = self._output.build(items)
                    self._last_items = items
                    self._emit(loaded)
                    outcome = "graph"
                self._report(None)
            except (LangError, MgmtError) as err:
                self._report(err)
                return "error"
            return outcome
        if isinstance(error, NotReady):  # a world.* function before its first read
            log.debug("%s (waiting for it)", error)
            return "waiting"
        self._report(error)
        return "error"

    def _emit(self, loaded: Loaded) -> None:
        self.graphs += 1
        loaded.declared = self.positions
        loaded.digest, loaded.cluster = self._digest, self.needs_cluster
        self._last = loaded
        self._latest = loaded
        self._ready.set()

    def _ask_for_cluster(self) -> None:
        """A program that reads the world while there is none yet and has no new graph: hand
        the agent the graph it runs (an empty one at first), marked as needing the cluster."""
        if self.needs_cluster and self.ctx.world.world is None and self._latest is None:
            last = self._last or Loaded(Graph(self.path.stem))
            self._latest = dataclasses.replace(last, digest=self._digest, cluster=True)
            self._ready.set()

    def _report(self, error: Exception | None) -> None:
        """Log a run-time error once (and its recovery), not at every event."""
        text = None if error is None else str(error)
        if text == self._last_error:
            return
        if text is None:
            log.info("%s: the program produces a graph again", self.path)
            self._run_problem = ""
        else:
            keeping = (
                "keeping the last good graph" if self._last_items is not None else self.otherwise
            )
            log.error("%s (%s)", text, keeping)
            self._run_problem = f"{text} ({keeping})"
            if self.graphs == 0:  # before any graph (the world's placeholder is none)
                self.first_error, self.first_exception = text, error
        self._last_error = text
        self._set_problem()

    def _set_problem(self) -> None:
        problem = self._compile_problem or self._run_problem
        if problem != self.problem:
            self.problem = problem
            if self.on_problem is not None:
                self.on_problem(problem)

    async def _recompile(self) -> None:
        # self._files: the files the last compile (kept or refused) depended on, their digest
        # self._digest (the running program's) or self._refused.
        try:
            digest = await asyncio.to_thread(read_again, self._files)
            relinked, self._relink = self._relink, False
            if digest == self._digest and self._refused and not relinked:
                self._back_to_running()  # (its files as refused are the running program's)
                return
            if digest in (self._digest, self._refused) and not relinked:
                log.debug("program files unchanged since compiled or refused, nothing to swap")
                return
            log.debug("program file changed (one of %d): checking it", len(self._files))
            running = self._digest
            checked = await self._compile()
            if self.watch:
                await self._watch(checked.files)
        except CompileError as err:
            # Watch what the refused program read or looked for (a module it imports may not
            # be written yet): the edit that fixes it may be to a file the running one lacks.
            self._files, self._refused = err.looked_at or (self._files, digest)
            if self.watch:
                await self._watch(self._files)
            for problem in err.problems:
                log.error("%s", problem)
            log.error("keeping the running program")
            self._compile_problem = first_of(err.problems, "keeping the running program")
            self._set_problem()
            return
        if checked.digest == running:
            self._commit(checked)
            self._back_to_running()
            return
        old = self.runtime
        self._start(checked)
        self._commit(checked)  # started: an error before this compiles it again next time
        self._refused = self._compile_problem = self._run_problem = ""
        if old is not None:
            await old.close()
        self._last_error = None
        # Said once the new program is evaluated: an edit whose graph fails, or is the running
        # one, swaps nothing in (the program runs; its graph follows it when it changes).
        outcome = self._evaluate()
        if outcome == "waiting" and (not self.needs_cluster or self.ctx.world.world is not None):
            outcome = await self._settle(outcome)  # as a load: the first graph has its values
        log.info("program file changed: %s", _SWAPPED[outcome])
        self._set_problem()
        self._ask_for_cluster()

    def _back_to_running(self) -> None:
        """The program's files are the running program's again (a refused edit undone, a
        deleted file written back): no swap, and no problem left to show."""
        self._refused = self._compile_problem = ""
        log.info("program files are back to the running program's: nothing to swap")
        self._set_problem()
