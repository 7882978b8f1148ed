"""A prompt stop: a job in the I/O executor that nobody needs any more never starts.

A first run of 10,000 files holds up to `check_limit()` check_applies at once, most of them
only queued in the I/O executor (8 threads). A graceful stop lets what runs finish, and that
queue was "running": a SIGTERM went on to write thousands of files for seconds; a forced stop
cancelled the check_applies, and their queued jobs then ran all the same, each changing the
system with no line logged. One rule now, checked in the worker thread as a job starts: the
job is a `Job`, which raises `Stopped` in place of running when

- its caller waits for it even when cancelled (`resources._lib.plan.in_thread`: the job may
  use descriptors the caller closes after; its job is `awaited()`), and the caller's task
  has been cancelled since (a forced stop, a check_apply's timeout): nobody wants its result,
  and the caller's wait for the refusal is short. (Other jobs need nothing: asyncio cancels
  the job of a task cancelled while it waits; a job whose future outlives its task, such as
  a spare file made ahead, is never refused for that.)
- it is the first job of a check_apply that has not begun, and the engine is stopping (a
  graceful stop). Inside `Gate.work()` (the engine's `Vertex._process`, around
  `check_apply`), every job that the check_apply hands to the loop's default executor
  (`asyncio.to_thread`, `run_in_executor(None, ...)`, `in_thread`) carries the check_apply's
  `Work` (a context variable): the executor is a `GatedExecutor` (the agent installs it),
  whose `submit` makes a `Job` of it with the submitting task's `Work`. `Gate.closing()`
  (the engine's `stop`; the agent calls `Gate.close()` already as it decides to stop, on the
  signal) closes the gate. From then on a check_apply whose first job has not started is
  refused: `Stopped` is raised in the check_apply, which the engine takes as "not applied"
  (no outcome, no error, the state left unknown). Once one job of a check_apply has
  started, the check_apply has begun: its later jobs run, so it finishes as it would have
  (a file's write is one job: done whole or not at all).

Generic for every kind that does its work in the executor; work done on the event loop (a
subprocess) is not gated. The rule assumes what kinds do: observe in the executor before any
change (a stat, a read). A kind that changed something on the loop before its first executor
job would be stopped at that job, its change done but not reported. A check_apply's jobs after
it returned (a task it spawned) are never refused by the gate. Without a `GatedExecutor` as
the default executor, the gate refuses nothing: a stop is as graceful as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(BaseException):
    """A job refused (see the module doc): its caller was cancelled, or it is a check_apply's
    first and the engine is stopping.

    A BaseException, like asyncio.CancelledError: a kind's `except Exception` (which turns
    errors into failures) lets it through to the engine.
    """


class Work:
    """One check_apply: whether its work has begun (a job of it started)."""

    __slots__ = ("_gate", "begun", "over", "stopping")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self.begun = False
        self.over = False  # the check_apply returned: what it left behind is not gated
        self.stopping = False  # its vertex stops (a swap removed or replaced it)

    def stop(self) -> None:
        """Its vertex alone stops (the engine runs on): refused as if the gate were closed."""
        self.stopping = True

    def admit(self) -> None:
        """In the worker thread, as a job starts: raise Stopped if it is the check_apply's
        first and the gate is closed (or its vertex stops)."""
        if self.begun or self.over:
            return
        if self._gate.closed or self.stopping:
            raise Stopped
        self.begun = True


_WORK: contextvars.ContextVar[Work | None] = contextvars.ContextVar("engine_work", default=None)


class Gate:
    """One per engine: open while it runs, closed while it stops."""

    def __init__(self) -> None:
        self.closed = False
        self.refused = 0  # check_applies refused

    @contextlib.contextmanager
    def work(self) -> Iterator[Work]:
        """Around one check_apply (in its task): the jobs it submits carry its Work."""
        work = Work(self)
        token = _WORK.set(work)
        try:
            yield work
        except Stopped:
            if self.closed:  # the engine's stop reports them; a swap's are its own business
                self.refused += 1
            raise
        finally:
            work.over = True
            _WORK.reset(token)

    def close(self) -> None:
        """From now on, no check_apply begins its work (until `closing()` ends)."""
        self.closed = True

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Closed inside (an engine's stop); open again after, for an engine used again."""
        self.close()
        try:
            yield
        finally:
            self.closed = False


class Job:
    """A job as a worker thread starts it: refused (Stopped) if nobody needs it any more (see
    the module doc), else run."""

    __slots__ = ("fn", "requests", "task", "work")

    def __init__(
        self, fn: Callable[[], T], task: asyncio.Task[Any] | None = None, requests: int = 0
    ) -> None:
        self.fn = fn
        self.task = task  # the caller, waiting for it even when cancelled (awaited)...
        self.requests = requests  # ...and how many cancellations it had then
        self.work: Work | None = None  # the check_apply it is a job of (GatedExecutor)

    def __call__(self) -> Any:
        # task.cancel() counts at once: no wait for the loop to tell the task
        if self.task is not None and self.task.cancelling() > self.requests:
            raise Stopped
        if self.work is not None:
            self.work.admit()
        return self.fn()


def awaited(fn: Callable[[], T]) -> Job:
    """`fn` as a job that the current task waits for even when cancelled (in_thread): refused
    if the task is cancelled before the job starts."""
    task = asyncio.current_task()
    return Job(fn, task, task.cancelling() if task is not None else 0)


class GatedExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose jobs submitted inside `Gate.work()` are admitted by their
    Work as they start (the loop's default executor: see the module doc)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        work = _WORK.get()
        if work is None:
            return super().submit(fn, *args, **kwargs)
        job = fn if isinstance(fn, Job) and not (args or kwargs) else None
        if job is None:
            job = Job(functools.partial(fn, *args, **kwargs))
        job.work = work
        return super().submit(job)
