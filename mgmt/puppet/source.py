"""Puppet manifests as a source of graphs for the agent (`mgmt run puppet FILE.pp`).

`PuppetSource.open` compiles the manifest with the real Puppet and translates its catalog
(GraphFileError before anything runs). The source then watches the manifest file (unless told
not to): on an edit (read once its writer has closed it: engine.watcher.follow_writes), or on
SIGHUP, it compiles again and yields the new graph if the catalog
changed; the agent swaps it in, keeping unchanged resources running. A manifest that no longer
compiles is reported and the running graph stays (and is the source's `problem`: `mgmt
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
from engine.tasks import TaskSet
from mgmt.listing import first_of
from mgmt.puppet.compile import Manifest, compile_catalog
from mgmt.puppet.translate import translate
from mgmt.yamlgraph import GraphFileError, Loaded

if TYPE_CHECKING:
    from engine.world import World

log = logging.getLogger("puppet")


async def load(manifest: Manifest, hostname: str, *, fallback: Path | None = None) -> Loaded:
    """Compile and translate `manifest` for `hostname`; GraphFileError on any problem.
    `fallback`: where `puppet resource` keeps its state (translate's), None: no fallback."""
    catalog = await compile_catalog(manifest, hostname)
    loaded = translate(catalog, manifest.label, fallback=fallback)
    loaded.digest = _digest(catalog)
    return loaded


def _digest(catalog: dict[str, Any]) -> str:
    """What tells a changed catalog from a recompiled identical one (not its version stamp)."""
    content = {"resources": catalog.get("resources"), "edges": catalog.get("edges")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class PuppetSource:
    """Compiles a manifest, then recompiles it on each edit (see the module docstring)."""

    def __init__(self, manifest: Manifest, *, hostname: str, fallback: Path | None) -> None:
        self.manifest = manifest
        self.hostname = hostname
        self.fallback = fallback
        self.graphs = 0
        self.first: Loaded | None = None
        self.problem = ""  # agent.GraphSource: the last edit's compile error, if it failed
        self.on_problem: Callable[[str], None] | None = None
        self._digest = ""
        self._kick = asyncio.Event()
        self._out: asyncio.Queue[Loaded] = asyncio.Queue()
        self._tasks = TaskSet("puppet", log)
        self._watcher: NamedPaths | None = None

    @classmethod
    async def open(
        cls,
        manifest: Manifest,
        *,
        hostname: str,
        fallback: Path | None = None,
        watch: bool = True,
    ) -> PuppetSource:
        source = cls(manifest, hostname=hostname, fallback=fallback)
        if watch and manifest.file is not None:
            source._watcher = NamedPaths([manifest.file])  # through its symlinks
            await source._watcher.__aenter__()  # before the first compile: no edit is missed
        try:
            source.first = await load(manifest, hostname, fallback=fallback)
        except BaseException:
            await source.aclose()
            raise
        source.graphs, source._digest = 1, source.first.digest
        source._tasks.spawn(source._loop(), "puppet recompile")
        if source._watcher is not None:
            source._tasks.spawn(source._watch(source._watcher), "puppet manifest watch")
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

    def _set_problem(self, problem: str) -> None:
        if problem != self.problem:
            self.problem = problem
            if self.on_problem is not None:
                self.on_problem(problem)

    async def _watch(self, watcher: NamedPaths) -> None:
        await watcher.follow(self._kick.set)  # not a half-written manifest

    async def _loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                loaded = await load(self.manifest, self.hostname, fallback=self.fallback)
            except GraphFileError as err:
                for problem in err.problems:
                    log.error("%s", problem)
                log.error("keeping the running graph")
                self._set_problem(first_of(err.problems, "keeping the running graph"))
                continue
            self._set_problem("")
            if loaded.digest == self._digest:
                log.debug("the catalog is unchanged: nothing to swap")
                continue
            self._digest = loaded.digest
            for warning in loaded.warnings:
                log.warning("%s", warning)
            log.info("the manifest changed: swapping in the new catalog")
            self.graphs += 1
            self._out.put_nowait(loaded)
