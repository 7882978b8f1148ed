"""TaskSet: tasks owned by one object, cancelled and awaited together when it closes; and
`running_loop`, asyncio.get_running_loop() without its system call.

    self._tasks = TaskSet("agent")
    self._tasks.spawn(self._reload_loop(), "reload")
    ...
    await self._tasks.close()

A task that ends with an exception (not a cancellation) is logged once, with its name, when it
ends: nothing fails silently, and nothing is left running after close().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from _thread import get_ident
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

log = logging.getLogger("engine")

T = TypeVar("T")


class _NoLoop:
    _thread_id = None  # (no thread's)


_NO_LOOP = _NoLoop()
# The loop running_loop() found last (asyncio's base loop: it has `_thread_id`), held weakly:
# a loop closed is freed (tests run many agents in one process, each on a loop of its own).
_last: list[Callable[[], Any]] = [lambda: _NO_LOOP]


def running_loop() -> asyncio.AbstractEventLoop:
    """asyncio.get_running_loop() (RuntimeError where no loop runs), without its getpid where
    it can: Python 3.11's C lookup makes that system call at each call (so that a forked
    child does not take its parent's loop for its own; 3-5 a file of a run). The loop found
    last, while it runs in this very thread (asyncio's base loop notes the thread that runs
    it, `_thread_id`, and forgets it when it stops; a thread runs one loop at a time); else
    asked, and kept (a loop of another class is not). A forked child forgets it (`_forget`).
    ~65 ns a call against ~100 (timeit)."""
    loop = _last[0]()
    if loop is not None and loop._thread_id == get_ident():
        return cast("asyncio.AbstractEventLoop", loop)
    found = asyncio.get_running_loop()
    if hasattr(found, "_thread_id"):
        _last[0] = weakref.ref(found)
    return found


def running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    """running_loop(), or None where no loop runs (asyncio._get_running_loop())."""
    try:
        return running_loop()
    except RuntimeError:
        return None


def _forget() -> None:
    _last[0] = lambda: _NO_LOOP


os.register_at_fork(after_in_child=_forget)


# The fields of asyncio's Handle that quick_call_soon sets (CPython 3.11 to 3.13): with any
# other set, asyncio's own call_soon is kept.
_HANDLE_SLOTS = {
    "_callback",
    "_args",
    "_cancelled",
    "_loop",
    "_source_traceback",
    "_repr",
    "__weakref__",
    "_context",
}


def quick_call_soon(loop: asyncio.AbstractEventLoop) -> None:
    """`loop.call_soon` (the command's loop: mgmt.cli.run_loop) without its three Python calls
    around the handle's making (`_check_closed`, `get_debug` twice, `_call_soon`): the same
    `Handle` put on the same queue, ~2 K instructions a call of ~7.4 K. asyncio's C futures and
    tasks schedule every callback and every step through it (~4.5 calls a file of a first run:
    docs/benchmarks.md, "fast"). A closed loop, a loop in debug mode, or a loop that is not
    asyncio's base loop (no `_ready`) keeps asyncio's own method (`call_soon_threadsafe` and
    the timers do in any case)."""
    base = getattr(type(loop), "call_soon", None)
    if not hasattr(loop, "_ready") or base is not asyncio.BaseEventLoop.call_soon:
        return
    from asyncio.events import Handle  # (imported with asyncio)

    if set(getattr(Handle, "__slots__", ())) != _HANDLE_SLOTS:
        return  # another Python's Handle: a field this one would leave unset
    from contextvars import copy_context

    own: Any = loop  # (its private fields: asyncio's base loop's)
    ready = own._ready
    new = Handle.__new__

    def call_soon(callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        if own._closed or own._debug:
            return base(own, callback, *args, context=context)
        # Handle.__init__'s fields, as it sets them without debug (no source traceback)
        handle: Any = new(Handle)
        handle._context = copy_context() if context is None else context
        handle._loop = own
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        ready.append(handle)
        return handle

    own.call_soon = call_soon


class TaskSet:
    def __init__(self, owner: str, logger: logging.Logger | None = None) -> None:
        self.owner = owner
        self._log = logger or log
        self._tasks: dict[asyncio.Task[Any], None] = {}  # an ordered set

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        """The running tasks, oldest first."""
        return iter(list(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start `coro` as a task owned by this set (dropped from it when it ends)."""
        task = running_loop().create_task(coro, name=name)
        self._tasks[task] = None
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (err := task.exception()) is not None:
            self._log.error(
                "%s: task %s failed: %s", self.owner, task.get_name(), err, exc_info=err
            )

    async def close(self) -> None:
        """Cancel every task and wait until all have ended (their errors are already logged).

        No reference to a task or its CancelledError is kept afterwards: such an error holds
        the frames of the call it interrupted (an etcd gRPC call keeps its connection open).
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def thread_to_end(
    func: Callable[..., T], *args: Any, undo: Callable[[T], object] | None = None
) -> T:
    """asyncio.to_thread(func, *args), except that a cancellation waits for the thread to end
    before it is raised (and then gives `undo` what the thread returned): a thread cannot be
    stopped, and one still running would act after the caller's cleanup (a temporary prefix
    made again once it was removed)."""
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        if undo is not None and not future.cancelled() and future.exception() is None:
            undo(future.result())
        raise


@contextlib.contextmanager
def surviving(
    logger: logging.Logger,
    what: str,
    report: Callable[[str], None],
    about: Callable[[], str] | None = None,
) -> Iterator[None]:
    """One pass of a loop that must outlive any error of it: a front-end's recompile after an
    edit (a Puppet manifest, a program, a graph file), the agent's swap of the collected
    resources. An error that its own checks did not foresee (a bug some input meets) must not
    end the loop, or the input is never read again: it is logged as one line (its traceback
    at debug level), and `report`ed (the source's problem: `mgmt status` fails until a good
    edit); the running graph stays and the next change is read as any. `about()`, asked once
    it failed, says what input it was (" (of ...)"). A cancellation is not caught."""
    try:
        yield
    except Exception as err:
        where = about() if about is not None else ""
        text = f"{what}{where} failed unexpectedly: {type(err).__name__}: {err}"
        logger.error("%s (keeping the running graph until the next change)", text)
        logger.debug("%s", what, exc_info=err)
        report(text)


async def first_done(*aws: Awaitable[object]) -> None:
    """Wait until the first of these is done (the others are cancelled and awaited)."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
