"""A prompt stop: a check_apply whose work has not begun when the engine stops never begins it.

A first run of 10,000 files holds up to `check_limit()` check_applies at once, most of them
only queued in the I/O executor (8 threads). A graceful stop lets what runs finish, and that
queue was "running": a SIGTERM went on to write thousands of files for seconds. Now:

- Inside `Gate.work()` (the engine's `Vertex._process`, around `check_apply`), every job that
  the check_apply hands to the loop's default executor (`asyncio.to_thread`,
  `run_in_executor(None, ...)`, `resources._lib.plan.in_thread`) carries the check_apply's
  `Work`: the executor is a `GatedExecutor` (the agent installs it), whose `submit` reads the
  `Work` of the submitting task (a context variable) and runs `Work.admit()` in the worker
  thread just before the job.
- `Gate.closing()` (the engine's `stop`; the agent calls `Gate.close()` already as it decides
  to stop, on the signal) closes the gate. From then on the first job of a check_apply
  that has not begun is refused: it raises `Stopped` in place of running, in the check_apply,
  which the engine takes as "not applied" (no outcome, no error, the state left unknown). Once
  one job of a check_apply has started, the check_apply has begun: its later jobs run, so it
  finishes as it would have (a file's write is one job: done whole or not at all).

Generic for every kind that does its work in the executor; work done on the event loop (a
subprocess) is not gated. The rule assumes what kinds do: observe in the executor before any
change (a stat, a read). A kind that changed something on the loop before its first executor
job would be stopped at that job, its change done but not reported. A check_apply's jobs after it returned (a task it spawned) are never
refused. Without a `GatedExecutor` as the default executor, nothing is refused: a stop is as
graceful as before.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(BaseException):
    """A check_apply's first job, refused because the engine is stopping (see the module doc).

    A BaseException, like asyncio.CancelledError: a kind's `except Exception` (which turns
    errors into failures) lets it through to the engine.
    """


class Work:
    """One check_apply: whether its work has begun (a job of it started)."""

    __slots__ = ("_gate", "begun", "over")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self.begun = False
        self.over = False  # the check_apply returned: what it left behind is not gated

    def admit(self) -> None:
        """In the worker thread, as a job starts: raise Stopped if it is the check_apply's
        first and the gate is closed."""
        if self.begun or self.over:
            return
        if self._gate.closed:
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


class GatedExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose jobs submitted inside `Gate.work()` are admitted by their
    Work as they start (the loop's default executor: see the module doc)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        work = _WORK.get()
        if work is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(_admitted, work, fn, *args, **kwargs)


def _admitted(work: Work, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    work.admit()
    return fn(*args, **kwargs)
