"""Puppet manifests as a source of graphs for the agent (`mgmt run puppet FILE.pp`).

`PuppetSource.open` compiles the manifest with the real Puppet and translates its catalog
(GraphFileError before anything runs). The source then watches the files the last compile
depended on (unless told not to): the manifest, the modules' manifests and templates it used,
and, after a refused compile, those it looked for and did not find (compile.Compiled.files,
CompileFailed.files), each through its symlinks (engine.namedpath, as the language's program
files). On an edit of one of them (read once its writer has closed it:
engine.watcher.follow_writes), or on SIGHUP, it compiles again and yields the new graph if the
catalog changed; the agent swaps it in, keeping unchanged resources running. A manifest that no
longer compiles is reported and the running graph stays (and is the source's `problem`: `mgmt
status` fails until a good edit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.namedpath import NamedPaths
from engine.tasks import TaskSet, surviving
from mgmt.listing import first_of
from mgmt.puppet.compile import CompileFailed, Manifest, compile_catalog
from mgmt.puppet.translate import source_files, translate
from mgmt.yamlgraph import GraphFileError, Loaded

if TYPE_CHECKING:
    from engine.world import World

log = logging.getLogger("puppet")


async def load(
    manifest: Manifest, hostname: str, *, fallback: Path | None = None
) -> tuple[Loaded, list[Path]]:
    """Compile and translate `manifest` for `hostname`, and the files it depended on;
    CompileFailed on any problem. `fallback`: where `puppet resource` keeps its state
    (translate's), None: no fallback."""
    compiled = await compile_catalog(manifest, hostname)
    modulepath = compiled.modulepath
    sources = source_files(compiled.catalog, modulepath)
    files = list(dict.fromkeys([*compiled.files, *sources]))
    try:
        loaded = translate(
            compiled.catalog, manifest.label, fallback=fallback, modulepath=modulepath
        )
    except GraphFileError as err:
        raise CompileFailed(err.problems, files) from None
    loaded.warnings += compiled.warnings
    loaded.digest = _digest(compiled.catalog, sources)
    return loaded, files


def _digest(catalog: dict[str, Any], sources: list[Path]) -> str:
    """What tells a changed catalog from a recompiled identical one (not its version stamp),
    and a file `source` translated to another path (`sources`: those not taken: one written
    is taken now, source_files)."""
    content = {"resources": catalog.get("resources"), "edges": catalog.get("edges")}
    content["sources"] = [str(p) for p in sources]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class PuppetSource:
    """Compiles a manifest, then recompiles it on each edit (see the module docstring)."""

    def __init__(
        self, manifest: Manifest, *, hostname: str, fallback: Path | None, watch: bool = True
    ) -> None:
        self.manifest = manifest
        self.hostname = hostname
        self.fallback = fallback
        self.graphs = 0
        self.first: Loaded | None = None
        self.problem = ""  # agent.GraphSource: the last edit's compile error, if it failed
        self.on_problem: Callable[[str], None] | None = None
        self._digest: str | bytes = ""
        self._kick = asyncio.Event()
        self._out: asyncio.Queue[Loaded] = asyncio.Queue()
        self._tasks = TaskSet("puppet", log)
        self._watch_files = watch  # inline code (-e) too: the module files it uses
        self._watcher: NamedPaths | None = None
        self._watched: list[Path] = []
        self._watcher_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        manifest: Manifest,
        *,
        hostname: str,
        fallback: Path | None = None,
        watch: bool = True,
    ) -> PuppetSource:
        source = cls(manifest, hostname=hostname, fallback=fallback, watch=watch)
        try:
            if manifest.file is not None:
                await source._watch([manifest.file])  # before the first compile: no edit missed
            source.first, files = await load(manifest, hostname, fallback=fallback)
            await source._watch(files)
        except BaseException:
            await source.aclose()
            raise
        source.graphs, source._digest = 1, source.first.digest
        source._tasks.spawn(source._loop(), "puppet recompile")
        return source

    async def __aiter__(self) -> AsyncIterator[Loaded]:
        while True:
            yield await self._out.get()

    def reload(self) -> None:
        """Compile the manifest again (SIGHUP)."""
        self._kick.set()

    async def attach_world(self, world: World) -> Loaded | None:
        return None  # a Puppet catalog never needs the cluster

    async def aclose(self) -> None:
        await self._tasks.close()
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None

    async def _watch(self, files: list[Path]) -> None:
        """Watch `files` (through their symlinks), the files the last compile depended on or
        looked for: an edit of one compiles again once its writer closed it."""
        if not self._watch_files or files == self._watched:
            return
        old, old_task = self._watcher, self._watcher_task
        watcher = NamedPaths(files)
        await watcher.__aenter__()  # before the old one ends: no edit in between is missed
        self._watcher, self._watched = watcher, files
        self._watcher_task = self._tasks.spawn(watcher.follow(self._kick.set), "puppet watch")
        if old_task is not None:
            old_task.cancel()
        if old is not None:
            await old.aclose()

    def _set_problem(self, problem: str) -> None:
        if problem != self.problem:
            self.problem = problem
            if self.on_problem is not None:
                self.on_problem(problem)

    async def _loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            with surviving(log, f"compiling {self.manifest.label}", self._set_problem):
                await self._recompile()

    async def _recompile(self) -> None:
        try:
            loaded, files = await load(self.manifest, self.hostname, fallback=self.fallback)
            await self._watch(files)
        except CompileFailed as err:
            await self._watch(err.files)  # what it read or looked for: the fix may be there
            problem = first_of(err.problems, "keeping the running graph")
            # The same refusal again (an editor's second write): said once.
            level = logging.DEBUG if problem == self.problem else logging.ERROR
            for line in err.problems:
                log.log(level, "%s", line)
            log.log(level, "keeping the running graph")
            self._set_problem(problem)
            return
        refused = bool(self.problem)
        self._set_problem("")
        if loaded.digest == self._digest:
            if refused:  # a bad edit undone: the running catalog is the manifest's again
                log.info("the manifest compiles to the running catalog again: nothing to swap")
            else:
                log.debug("the catalog is unchanged: nothing to swap")
            return
        self._digest = loaded.digest
        for warning in loaded.warnings:
            log.warning("%s", warning)
        log.info("the manifest changed: swapping in the new catalog")
        self.graphs += 1
        self._out.put_nowait(loaded)
