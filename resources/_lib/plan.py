"""Plan then apply, the one way every kind changes things.

`check_apply` first computes its `Step`s from the params and the observed state (no I/O
writes), then hands them to `apply_steps`: under `--noop` (apply False) each is logged as
"would <step.would>", else each is done in order and logged as `step.done`. When there is
nothing to do, `nothing_to_do(handle, why)` logs the reason (a debug line) and returns True.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from engine import stopgate
from engine.errors import ResourceError
from engine.handle import Handle
from engine.stopgate import awaited
from engine.tasks import running_loop

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One change: how `--noop` describes it, how it is logged once done, and how to do it."""

    would: str  # "start web.service": logged as "would start web.service" under --noop
    done: str  # "started web.service": logged once it is done ("": `run` logs for itself)
    # What does it: a callable, or an async one; a str it returns replaces `done` (a more
    # precise line). None: an earlier step does it too (one tool call, several changes).
    run: Callable[[], object] | None = None
    slow: bool = False  # `run` blocks: it runs in a worker thread (see in_thread)


def value_change(where: str, had: bool) -> tuple[str, str]:
    """How a step that writes a value given in the graph is told, (would, done): it names
    `where` (a key, a setting, a path in a file) and says "set" (there was none) or "changed",
    never the value, old or new, which may be a secret (docs/security.md, "Secrets")."""
    return (f"change {where}", f"{where} changed") if had else (f"set {where}", f"{where} set")


# The note in_thread adds to the CancelledError of a call whose function ran to its end.
DONE_NOTE = "in_thread: done before the cancellation took effect"


async def apply_steps(
    handle: Handle,
    steps: list[Step],
    apply: bool,
    *,
    errors: tuple[type[BaseException], ...] = (),
    explain: Callable[[BaseException], str] | None = None,
) -> None:
    """Log "would ..." for each step (apply False), or do it and log it (apply True). An
    exception of a type in `errors` becomes ResourceError("could not <would>: <error>"), the
    error as `explain` (default: describe) tells it."""
    if apply and steps:
        handle.changing()  # (a one-shot run watches from its first change: Engine.watch_late)
    for step in steps:
        if not apply:
            handle.logger.info("would %s", step.would)
            continue
        try:
            result = await _execute(step)
        except asyncio.CancelledError as err:
            if DONE_NOTE in getattr(err, "__notes__", ()) and step.done:
                handle.logger.info("%s", step.done)  # cancelled once done (a forced stop)
            raise
        except errors as err:
            raise ResourceError(f"could not {step.would}: {(explain or describe)(err)}") from err
        done = result if isinstance(result, str) else step.done
        if done:
            handle.logger.info("%s", done)


def describe(err: BaseException) -> str:
    """An error as a user reads it: an OSError's text without the names only the agent knows
    (a descriptor's /proc/self/fd/N, a temp name or any name relative to an open directory);
    the message it goes in names the user's path ("could not create /x/y")."""
    if not isinstance(err, OSError) or not err.strerror:
        return str(err)
    names = [repr(name) for name in (err.filename, err.filename2) if _shown(name)]
    return f"{err.strerror}: {' -> '.join(names)}" if names else err.strerror


def _shown(name: object) -> bool:
    return isinstance(name, str) and name.startswith("/") and not name.startswith("/proc/")


def nothing_to_do(handle: Handle, why: str | Callable[[], str]) -> bool:
    """Say why nothing must change (a debug line; `why` may be a callable, computed only when
    debug logging is on) and return True, check_apply's answer."""
    if handle.logger.isEnabledFor(logging.DEBUG):
        handle.logger.debug("nothing to do: %s", why() if callable(why) else why)
    return True


async def _execute(step: Step) -> object:
    if step.run is None:
        return None
    result = await in_thread(step.run) if step.slow else step.run()
    if isinstance(result, Awaitable):  # a coroutine, a future (not inspect's: see LAZY)
        result = await result
    return result


@overload
async def in_thread(fn: Callable[[], T]) -> T: ...
@overload
async def in_thread(fn: Callable[[Any], T], group: stopgate.Group) -> T: ...


async def in_thread(fn: Callable[..., T], group: stopgate.Group | None = None) -> T:
    """Run fn in a thread (the loop's default executor); if cancelled, still wait for its job
    to end: it may use descriptors that the caller closes after. A job not started when the
    caller is cancelled never starts (engine.stopgate.awaited: a forced stop of a first run
    left thousands queued, then each changed the system with no line logged). With the
    agent's executor (stopgate.install) the job's outcome comes back through its Replies
    (batched: stopgate.Replies), else through asyncio's executor future.

    `group`: `fn` may run with other jobs of the group's key in one worker, after one opening
    of what they share (engine.stopgate.Replies); it is called with what that opening
    yields, or with None (no Replies on this loop, or it ran alone), and then does its work
    alone."""
    loop = running_loop()
    replies = stopgate.replies(loop)
    if replies is None:
        alone = fn if group is None else functools.partial(fn, None)
        return await _in_default_executor(loop, alone)
    reply = replies.submit(awaited(fn, loop), group)
    try:
        return cast(T, await reply.future)
    except asyncio.CancelledError as err:
        while not reply.over:
            if reply.ended is None:
                reply.ended = loop.create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([reply.ended])
        if reply.error is None:
            err.add_note(DONE_NOTE)  # apply_steps logs the step: it was done
        raise


async def _in_default_executor(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    """in_thread through run_in_executor (a default executor not set by stopgate.install)."""
    done = loop.run_in_executor(None, awaited(fn, loop))
    try:
        return cast(T, await asyncio.shield(done))
    except asyncio.CancelledError as err:
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([done])
        # The exception read in any case (a job refused: engine.stopgate.Stopped), or the
        # future logs it as never retrieved when collected.
        if not done.cancelled() and done.exception() is None:
            err.add_note(DONE_NOTE)  # apply_steps logs the step: it was done
        raise
