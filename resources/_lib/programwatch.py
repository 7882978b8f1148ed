"""The watch of a kind that follows the program the agent runs (deploy:tar, remote).

`follow_program(handle, changed, also)`: the startup event, then an event for each change of
the paths in `also`, of a local program's files (`Program.watch`: its files, and its
`files/` or `lang DIR/` recursively) and for each new program (`changed`, set by the kind's
`handle.program.subscribe` callback: a new deploy). Runs until cancelled.
`current_program(handle, doing)`: the program as it is now, or a ResourceError saying why
there is none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from engine.errors import ResourceError
from engine.handle import Handle
from engine.program import Program
from engine.watcher import PathWatcher
from resources._lib.plan import in_thread


async def follow_program(
    handle: Handle,
    changed: asyncio.Event,
    also: Sequence[str] = (),
    on_files: Callable[[], None] | None = None,
) -> None:
    """See the module doc; `on_files` is called before the event of a change of the program's
    files (not of `also`)."""
    ref = handle.program
    try:
        program = await in_thread(ref.get) if ref is not None else None
    except ResourceError:  # the kind's check reports it
        program = None
    follow = program.watch if program is not None else ()
    files = [*also, *(p for p in follow if not p.endswith("/"))]
    trees = [p for p in follow if p.endswith("/")]
    async with PathWatcher(files) as changes, PathWatcher(trees, recurse=True) as tree:
        await handle.event()
        async with asyncio.TaskGroup() as group:
            group.create_task(_forward(handle, changes, on_files if not also else None))
            group.create_task(_forward(handle, tree, on_files))
            while True:
                await changed.wait()
                changed.clear()
                await handle.event()


async def _forward(handle: Handle, changes: PathWatcher, before: Callable[[], None] | None) -> None:
    async for _ in changes:
        if before is not None:
            before()
        await handle.event()


async def current_program(handle: Handle, doing: str) -> Program:
    """The program this agent runs, read afresh; a ResourceError if it runs none (`doing`:
    what the kind would do with it, for the message)."""
    ref = handle.program
    program = await in_thread(lambda: ref.get(fresh=True)) if ref is not None else None
    if program is None:
        raise ResourceError(
            f"this agent runs no program {doing} (it runs a puppet manifest or a graph given "
            "by the caller, or waits for its first deploy)"
        )
    return program
