"""A file resource's check of a path on a file system that can stop answering (NFS, CIFS, FUSE:
engine.hangfs), run in a thread of its own with an event loop of its own, so that a call the
kernel never returns holds that thread only: never the agent's loop (every other resource, the
signals, `mgmt status`), never an I/O thread the exit joins. Local paths keep the fast path on
the loop (docs/resources/file.md, "A file system that does not answer").

The thread is a daemon thread, abandoned when the check is cancelled (meta timeout, a stop):
the descriptors it holds are its own, closed by it if the call ever returns. While it waits, the
resource's next check fails at once, naming the path (no second thread stuck behind it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import ResourceError

if TYPE_CHECKING:
    from engine.handle import Handle

T = TypeVar("T")
SAID_AFTER = 5.0  # seconds a check waits before a warning says what does not answer


_here = threading.local()  # `check`: True in a check's own thread (here())


def here() -> bool:
    """Whether the caller runs in a check's own thread: what is the agent loop's (the
    resource's watcher, its hub) is left alone there."""
    return getattr(_here, "check", False)


def no_answer(path: str, kind: str) -> str:
    """What a check of `path` waiting on its file system says."""
    return f"{path}: the file system ({kind}) does not answer"


class LoopBound:
    """The resource's handle as its check's thread uses it: what reaches the engine (a one-shot
    run's `changing`, `send`, `on_cleanup`) is done on the agent's loop; the rest (its logger,
    its names) is the handle's own."""

    def __init__(self, handle: Handle, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = handle
        self._loop = loop
        self._thread = threading.get_ident()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, fn: Callable[[], object]) -> None:
        if threading.get_ident() == self._thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def changing(self) -> None:
        self._call(self.inner.changing)

    def send(self, **values: Any) -> None:
        self._call(functools.partial(self.inner.send, **values))

    def on_cleanup(self, fn: Any) -> None:
        self._call(functools.partial(self.inner.on_cleanup, fn))


class _Inline(concurrent.futures.ThreadPoolExecutor):
    """The check's own loop's default executor: a job runs at once in the check's thread (it is
    off the agent's loop already; a pool's threads would be joined at the exit)."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as err:  # (the job's caller gets it)
            done.set_exception(err)
        return done


class Aside:
    """One resource's checks in their thread: `run` one at a time; `waiting` says what a check
    still running waits on (the engine's meta timeout says it)."""

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.since: float | None = None  # when the running check began (time.monotonic)
        self.what = ""  # no_answer() of the running check

    def waiting(self) -> str | None:
        if self.since is None:
            return None
        return f"{self.what} (waited {time.monotonic() - self.since:.0f} s)"

    async def run(self, check: Callable[[], Awaitable[bool]], path: str, kind: str) -> bool:
        if self.since is not None:
            raise ResourceError(f"{self.waiting()}: its last check still waits")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self.since, self.what = time.monotonic(), no_answer(path, kind)
        thread = threading.Thread(
            target=self._thread, args=(loop, future, check), name=f"check {path}", daemon=True
        )
        thread.start()
        # The resource's stop (the agent's, graceful too: it waits for a check in progress)
        # ends the wait: the thread is left to end on its own.
        unregister = self.handle.on_stop(functools.partial(self._stopped, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), SAID_AFTER)
        except TimeoutError:
            self.handle.logger.warning("%s: its check has waited %.0f s", self.what, SAID_AFTER)
            await future
        finally:
            unregister()
        return future.result()

    def _stopped(self, future: asyncio.Future[bool]) -> None:
        if not future.done():
            future.set_exception(ResourceError(f"{self.waiting()}: stopped while it waited"))

    def _thread(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[bool],
        check: Callable[[], Awaitable[bool]],
    ) -> None:
        _here.check = True
        try:
            result: bool | BaseException = asyncio.run(_inline(check))
        except BaseException as err:  # told to the loop's check
            result = err
        try:
            loop.call_soon_threadsafe(self._ended, future, result)
        except RuntimeError:  # the loop is closed: the agent has stopped
            return

    def _ended(self, future: asyncio.Future[bool], result: bool | BaseException) -> None:
        self.since = None
        if future.done():
            return  # its check was cancelled (meta timeout, a stop)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _inline(check: Callable[[], Awaitable[bool]]) -> bool:
    asyncio.get_running_loop().set_default_executor(_Inline(max_workers=1))
    return await check()
