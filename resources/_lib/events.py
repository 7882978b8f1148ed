"""Fan-in of event sources: one engine event per wake-up of any of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Coroutine
from typing import Any

from engine.handle import Handle

Source = Callable[[], Coroutine[Any, Any, None]]


async def run_all(sources: list[Source]) -> None:
    """Run the sources until one fails (re-raised as itself) or we are cancelled; with no
    source, wait until cancelled."""
    if not sources:
        await asyncio.Event().wait()
    try:
        async with asyncio.TaskGroup() as group:
            for source in sources:
                group.create_task(source())
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None


async def pump_events(handle: Handle, sources: list[AsyncIterable[Any]]) -> None:
    """One engine event per wake-up of any source (Signals, PathWatcher...), until cancelled;
    a failing source fails the watch."""

    def pump(source: AsyncIterable[Any]) -> Source:
        async def run() -> None:
            async for _ in source:
                await handle.event()

        return run

    await run_all([pump(source) for source in sources])
