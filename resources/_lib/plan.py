"""Plan then apply: a kind computes its `Change`s (no I/O), then logs or makes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.handle import Handle


@dataclass(frozen=True)
class Change:
    """One change: how `--noop` describes it, how it is logged once done, and how to do it."""

    would: str
    done: str
    run: Callable[[], Awaitable[object]]


async def apply_changes(handle: Handle, changes: list[Change], apply: bool) -> None:
    """Log "would ..." for each change (apply False), or make it and log it (apply True)."""
    for change in changes:
        if not apply:
            handle.logger.info("would %s", change.would)
            continue
        await change.run()
        handle.logger.info("%s", change.done)
