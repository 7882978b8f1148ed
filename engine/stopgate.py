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
import collections
import contextlib
import contextvars
import ctypes
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _pool
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from engine import libc, safefs
from engine.slots import URGENT_RUN

if TYPE_CHECKING:
    from engine.uring import Rings

T = TypeVar("T")
# Jobs a drain of Replies runs before it lets the executor's other queued jobs go first.
DRAIN_TURN = 64
# At most how many jobs of a group a worker runs together (one ring's submission: ENTRIES / 2
# in engine/uring.py); it takes a share of those waiting, so that the other workers get some
# too (their writes' fsyncs wait for the disk side by side), and then those queued since.
GROUP_MOST = 32


class Stopped(BaseException):
    """A job refused (see the module doc): its caller was cancelled, or it is a check_apply's
    first and the engine is stopping.

    A BaseException, like asyncio.CancelledError: a kind's `except Exception` (which turns
    errors into failures) lets it through to the engine.
    """


class Interrupted(Stopped):
    """A check_apply's work cut short by its vertex's stop (exec's command, sent its `sig` by
    a graceful stop, as mgmt's context cancel does): not applied, no error, the state left
    unknown, as a refused one; but it had begun, so it is not counted as refused."""


class Work:
    """One check_apply: whether its work has begun (a job of it started)."""

    __slots__ = ("_gate", "_token", "begun", "interrupted", "over", "stopping", "urgent")

    def __init__(self, gate: Gate, urgent: bool = False) -> None:
        self._gate = gate
        self.urgent = urgent  # its jobs go ahead of the others queued in Replies
        self.begun = False
        self.over = False  # the check_apply returned: what it left behind is not gated
        # It ended Interrupted, or was cancelled in the middle of its work (interrupted()):
        # the engine's stop names it.
        self.interrupted = False
        self.stopping = False  # its vertex stops (a swap removed or replaced it)

    # Gate.work()'s context (a class, not a generator's: one per check_apply)
    def __enter__(self) -> Work:
        self._token = _WORK.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Stopped):
            if isinstance(exc, Interrupted):
                self.interrupted = True
            elif self._gate.closed:
                self._gate.refused += 1  # the engine's stop reports them; a swap's are its own
        self.over = True
        _WORK.reset(self._token)

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


def interrupted() -> None:
    """The running check_apply's work is cut short by a forced stop's cancellation (exec's
    command killed): the engine's stop names it, as one that ended Interrupted."""
    work = _WORK.get()
    if work is not None:
        work.interrupted = True


def begun() -> None:
    """The running check_apply has begun its work on the loop (exec started a command): its
    later executor jobs run, as after a first job that started (see the module doc)."""
    work = _WORK.get()
    if work is not None:
        work.begun = True


class Gate:
    """One per engine: open while it runs, closed while it stops."""

    def __init__(self) -> None:
        self.closed = False
        self.refused = 0  # check_applies refused

    def work(self, urgent: bool = False) -> Work:
        """Around one check_apply (in its task, `with gate.work() as work:`): the jobs it
        submits carry its Work; `urgent`: they go ahead of others in Replies' queue."""
        return Work(self, urgent)

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
        self, fn: Callable[..., Any], task: asyncio.Task[Any] | None = None, requests: int = 0
    ) -> None:
        self.fn = fn
        self.task = task  # the caller, waiting for it even when cancelled (awaited)...
        self.requests = requests  # ...and how many cancellations it had then
        self.work: Work | None = None  # the check_apply it is a job of (GatedExecutor)

    def __call__(self, *args: Any) -> Any:
        """Run the job (`args`: what a group gives each of its jobs: Replies.submit)."""
        # task.cancel() counts at once: no wait for the loop to tell the task
        if self.task is not None and self.task.cancelling() > self.requests:
            raise Stopped
        if self.work is not None:
            self.work.admit()
        return self.fn(*args)


def awaited(fn: Callable[..., Any], loop: asyncio.AbstractEventLoop | None = None) -> Job:
    """`fn` as a job that the current task (of `loop`, the running one) waits for even when
    cancelled (in_thread): refused if the task is cancelled before the job starts."""
    task = asyncio.current_task(loop)
    return Job(fn, task, task.cancelling() if task is not None else 0)


# The executor's internals that GatedExecutor._adjust_thread_count uses as its own does
# (CPython 3.11-3.13); elsewhere, its own runs (its workers' start waits for them).
_QUICK_START = (
    sys.version_info < (3, 14)
    and hasattr(_pool, "_worker")
    and isinstance(getattr(_pool, "_threads_queues", None), weakref.WeakKeyDictionary)
)


class _Started(threading.Event):
    """A worker's `Thread._started`: `Thread.start()`'s own wait for it (its last step) returns
    at once; any later wait (`_Worker.join`) waits."""

    def __init__(self) -> None:
        super().__init__()
        self._start_skipped = False

    def wait(self, timeout: float | None = None) -> bool:
        if not self._start_skipped:
            self._start_skipped = True
            return True
        return super().wait(timeout)


class _Worker(threading.Thread):
    """An executor's worker thread whose `start()` does not wait for it to run.

    `Thread.start()` waits until the new thread has run its first lines, which needs the GIL:
    the loop, submitting a first run's writes, waited 0.2-5.7 ms for each of the 8 workers it
    started while the ones started before held the GIL (10-17 ms of a 100-file first run, in
    which the loop submits nothing). A worker not run yet is not `is_alive()`; `join()` waits
    for it to run first (the executor's shutdown, and the interpreter's exit, join each)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._started = _Started()  # Thread's own Event, replaced

    def join(self, timeout: float | None = None) -> None:
        if not self._started.wait(timeout):
            return  # not run yet: as a join's timeout, still alive
        super().join(timeout)


class GatedExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose jobs submitted inside `Gate.work()` are admitted by their
    Work as they start (the loop's default executor: see the module doc), and whose workers are
    started without waiting for them to run (`_Worker`)."""

    def __init__(
        self, max_workers: int, thread_name_prefix: str = "", *, rings: bool = True
    ) -> None:
        """`rings`: a group's new files are fsynced and named through an io_uring per worker
        (engine/uring.py, where the kernel allows); False: one after another, always."""
        super().__init__(max_workers, thread_name_prefix)
        self.workers = max_workers
        self._use_rings = rings
        self._rings_lock = threading.Lock()
        self.rings: Rings | None = None  # made for the first group (engine/uring.py imported)

    def thread_rings(self) -> Rings | None:
        """The rings of this executor's threads; None without (`rings=False`)."""
        if self.rings is None and self._use_rings:
            from engine.uring import Rings  # not at every start-up: a no-op run makes no group

            with self._rings_lock:
                if self.rings is None and self._use_rings:  # (not shut down meanwhile)
                    self.rings = Rings()
        return self.rings

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        with self._rings_lock:
            self._use_rings = False
            if self.rings is not None:
                self.rings.close()

    def _adjust_thread_count(self) -> None:
        """ThreadPoolExecutor's own (Python 3.11-3.13: a worker is started per submit while
        none is idle, up to max_workers), with a `_Worker` in place of its Thread (_QUICK_START:
        3.14's workers take other arguments, its own runs there)."""
        if not _QUICK_START:
            super()._adjust_thread_count()
            return
        if self._idle_semaphore.acquire(timeout=0):
            return

        def wake(_: object, queue: Any = self._work_queue) -> None:  # the executor is gone
            queue.put(None)

        if len(self._threads) < self._max_workers:
            name = f"{self._thread_name_prefix or self}_{len(self._threads)}"
            args = (weakref.ref(self, wake), self._work_queue, self._initializer, self._initargs)
            worker = _Worker(name=name, target=_pool._worker, args=args)
            worker.start()
            cast(set[threading.Thread], self._threads).add(worker)  # typeshed: read-only views
            cast(dict[threading.Thread, Any], _pool._threads_queues)[worker] = self._work_queue

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        work = _WORK.get()
        if work is None:
            return super().submit(fn, *args, **kwargs)
        job = fn if isinstance(fn, Job) and not (args or kwargs) else None
        if job is None:
            job = Job(functools.partial(fn, *args, **kwargs))
        job.work = work
        return super().submit(job)

    def submit_plain(self, fn: Callable[[], T]) -> Future[T]:
        """Submit `fn` as it is: not made a Job (Replies gates its jobs itself)."""
        return super().submit(fn)


class Reply(Generic[T]):
    """A job's outcome, handed back to the event loop by `Replies` (in_thread waits for it):
    `future` gets it, unless its waiter cancelled it; `over` once it is handed back (then
    `ended`, a future a cancelled waiter made to wait for the job's end, is set too)."""

    __slots__ = ("ended", "error", "future", "over", "value")

    def __init__(self, future: asyncio.Future[T]) -> None:
        self.future = future
        self.value: Any = None
        self.error: BaseException | None = None
        self.over = False
        self.ended: asyncio.Future[None] | None = None


# What the jobs of one group share (Replies.submit's `group`): a key, and how a worker opens
# what they share, once for the jobs it takes together (a context manager; what it yields is
# each job's argument).
Group = tuple[Hashable, Callable[[], AbstractContextManager[Any]]]


class Later:
    """What a job of a group may return to finish after the group's other jobs have done their
    first part (all the writes, then their fsyncs): `fn`, called then, in the worker, gives
    the job's outcome. `durable`: (fd, dir_fd, name) of a new unnamed file that `fn` fsyncs
    and links at `name` (safefs.named_new; name None: that `fn` puts in place over an
    existing file): where the worker has an io_uring (the executor's `rings`), those of the
    group are fsynced first, their fsyncs in flight together, else one after another, all
    before the first is named (safefs.named_together), and `fn` finds its file's fsync's
    outcome there (then names it)."""

    __slots__ = ("durable", "fn")

    def __init__(
        self, fn: Callable[[], Any], durable: tuple[int, int, str | None] | None = None
    ) -> None:
        self.fn = fn
        self.durable = durable


class _Grouped:
    """The queued jobs of one group (Replies.submit): a worker takes several at once."""

    __slots__ = ("items", "key", "opened")

    def __init__(self, key: Hashable, opened: Callable[[], AbstractContextManager[Any]]) -> None:
        self.key = key
        self.opened = opened
        self.items: collections.deque[tuple[Job, Reply[Any]]] = collections.deque()


class Replies:
    """Jobs run in a loop's I/O executor whose outcomes come back to the loop together: a
    worker thread queues a job's reply and wakes the loop only when no wake-up is pending
    already; the loop then sets every queued reply's future in one callback. asyncio's
    run_in_executor wakes the loop once per job and takes three callbacks more on the loop to
    reach its awaiter (its future chained to the executor's, then in_thread's shield); a first
    run of 10,000 files makes 10,000 such hops.

    The wake-up is an eventfd of its own, written by the worker and read by the loop's reader
    with the GIL held (engine/libc.py): asyncio's `call_soon_threadsafe` writes its self-pipe
    with `socket.send` and the loop reads it with `recv` until empty, each call releasing the
    GIL and then waiting for it behind the threads (cProfile of a 1,000-file first run: the
    loop's 62 `recv` calls took 70 ms).

    The jobs wait in a queue of their own, in order, which at most `workers` executor jobs
    (`_drain`) run one after another: an executor job per in_thread call cost a Future with
    its Condition, and the executor's idle count (a Python Semaphore, waited on with a zero
    timeout while every worker is busy) on the loop and again in the worker: ~47,000
    instructions a file of a first run, the loop's and the worker's together. A drain yields its thread after DRAIN_TURN jobs (it submits itself again,
    behind the executor's other jobs: asyncio.to_thread's, getaddrinfo's), so a stream of
    in_thread jobs does not keep them waiting.

    Jobs of one group (`submit`'s `group`: a file's first write, grouped by its directory)
    wait in that group's own queue, which has one place in the queue: the worker that
    reaches it takes a share of what waits there (_share), opens what they share once
    (the directory), runs them one after another, each with its own outcome, then those of
    the group queued meanwhile (_more; GROUP_MOST in all), and wakes the loop once for all of
    them. A job of a group may return a `Later`: its second part runs after every job's first
    part. A job submitted while a worker is free runs alone, at once, unless others of its
    group wait by the time the worker takes it: only jobs that would wait for a worker anyway
    are taken together.

    One per loop (`install`); it holds its loop weakly (the registry's value must not keep
    its key alive)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, executor: GatedExecutor) -> None:
        self._loop = weakref.ref(loop)
        self._executor = executor
        self._jobs: collections.deque[tuple[Job, Reply[Any]] | _Grouped] = collections.deque()
        # Jobs of urgent Work (a repair), run first, alone (a grouped one is given None), but
        # one of _jobs after URGENT_RUN of them in a row while _jobs wait (`_urgent_run`).
        self._urgent: collections.deque[tuple[Job, Reply[Any], tuple[None, ...]]] = (
            collections.deque()
        )
        self._urgent_run = 0
        self._groups: dict[Hashable, _Grouped] = {}  # groups with jobs waiting, in _jobs
        self._lock = threading.Lock()  # _jobs with _draining: a job queued is never left
        self._draining = 0  # drains submitted and not ended
        # Keys whose group a drain runs and still takes the later jobs of (_more): how many
        # drains; a job of such a key starts no drain of its own (a burst's writes, taken by
        # that drain into its round, start no thread each).
        self._collecting: dict[Hashable, int] = {}
        # Drains submitted that have not begun (their worker not started yet, or busy): a job
        # of a group starts no drain while one is to begin (it takes the group when it does).
        # A burst of 100 writes started the 8 workers (and their rings) before the first
        # began; each took a share of one or two.
        self._starting = 0
        self._queued: collections.deque[Reply[Any]] = collections.deque()
        self._waking = False
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._counter = ctypes.create_string_buffer(8)  # what a read of it returns
        weakref.finalize(loop, os.close, self._wake_fd)  # the loop's reader holds it till then
        loop.add_reader(self._wake_fd, self._woken)

    def submit(self, job: Job, group: Group | None = None) -> Reply[Any]:
        """Run `job` in the executor (gated as its `submit` gates: see the module doc); its
        outcome comes back in the returned Reply. On the loop's thread. `group`: the job may
        run with others of its key, after what they share is opened (the class doc); it is
        called with what that yields."""
        loop = self._loop()
        assert loop is not None  # the running loop: submit is called on it
        reply: Reply[Any] = Reply(loop.create_future())
        work = _WORK.get()
        if work is not None:
            job.work = work
        item = (job, reply)
        with self._lock:
            if work is not None and work.urgent:
                self._urgent.append((job, reply, () if group is None else (None,)))
            elif group is None:
                self._jobs.append(item)
            else:
                grouped = self._groups.get(group[0])
                if grouped is None:
                    grouped = self._groups[group[0]] = _Grouped(*group)
                    self._jobs.append(grouped)
                grouped.items.append(item)
                if group[0] in self._collecting or self._starting:
                    return reply  # the drain running its group, or the next one, takes it
            if self._draining >= self._executor.workers:
                return reply  # a running drain takes it
            self._draining += 1
            self._starting += 1
        try:
            self._executor.submit_plain(self._drain)
        except BaseException:  # shut down: not queued, unless a drain runs it already
            with self._lock:
                self._draining -= 1
                self._starting -= 1
                if self._unqueue(item, group):
                    raise
        return reply

    def _unqueue(self, item: tuple[Job, Reply[Any]], group: Group | None) -> bool:
        """With the lock: take back a job no drain has taken; True if it was still queued."""
        for urgent in self._urgent:
            if urgent[:2] == item:
                self._urgent.remove(urgent)
                return True
        if group is None:
            if item in self._jobs:
                self._jobs.remove(item)
                return True
            return False
        grouped = self._groups.get(group[0])
        if grouped is None or item not in grouped.items:
            return False
        grouped.items.remove(item)
        if not grouped.items:
            del self._groups[group[0]]
            self._jobs.remove(grouped)
        return True

    def _drain(self) -> None:
        """In a worker thread: run the queued jobs in turn until none is left; after
        DRAIN_TURN of them, go on in a new executor job, behind the others queued there."""
        turn = 0
        with self._lock:
            self._starting -= 1
        while True:
            with self._lock:
                urgent = self._next_urgent()
                if urgent is None:
                    if not self._jobs:
                        self._draining -= 1
                        return
                    next_ = self._jobs.popleft()
                    if isinstance(next_, _Grouped):
                        taken = self._share(next_)
            if urgent is not None:
                self._run(*urgent[:2], *urgent[2])
                self._wake()
                turn += 1
            elif isinstance(next_, _Grouped):
                turn += self._run_group(next_, taken)
            else:
                self._run(*next_)
                self._wake()
                turn += 1
            if turn >= DRAIN_TURN:
                with self._lock:
                    self._starting += 1
                try:
                    self._executor.submit_plain(self._drain)
                except RuntimeError:  # shut down: this one drains what is left
                    with self._lock:
                        self._starting -= 1
                    turn = 0
                    continue
                return

    def _next_urgent(self) -> tuple[Job, Reply[Any], tuple[None, ...]] | None:
        """With the lock: the urgent job to run next, if any, unless URGENT_RUN of them ran in
        a row while other jobs waited (then one of those goes first)."""
        if not self._urgent or (self._jobs and self._urgent_run >= URGENT_RUN):
            self._urgent_run = 0
            return None
        self._urgent_run = self._urgent_run + 1 if self._jobs else 0
        return self._urgent.popleft()

    def _share(self, grouped: _Grouped) -> list[tuple[Job, Reply[Any]]]:
        """With the lock: the jobs of `grouped` this worker takes: a worker's share of them, at
        most GROUP_MOST; the group goes back to the end of the queue if some are left (the
        other workers take them)."""
        items = grouped.items
        count = min(GROUP_MOST, max(1, -(-len(items) // self._executor.workers)))
        taken = [items.popleft() for _ in range(count)]
        if items:
            self._jobs.append(grouped)
        else:
            del self._groups[grouped.key]
        self._collecting[grouped.key] = self._collecting.get(grouped.key, 0) + 1
        return taken

    def _run_group(self, grouped: _Grouped, taken: list[tuple[Job, Reply[Any]]]) -> int:
        """In the worker thread: open what the jobs share, run each with it, then the jobs of
        the same key queued meanwhile (`_more`: a burst's writes come while the first are
        written), then their second parts together; wake the loop once for all of them. A job
        taken alone, none of its key queued, opens nothing: it is called with None. Returns
        how many jobs ran."""
        key, collecting = grouped.key, True
        try:
            if len(taken) == 1:
                more = self._more(key, GROUP_MOST - 1)
                if not more:
                    collecting = False
                    self._run(*taken[0], None)
                    self._wake()
                    return 1
                taken = taken + more
            ran: list[tuple[Job, Reply[Any]]] = []
            opened = False
            try:
                with grouped.opened() as shared:
                    opened = True
                    while taken:
                        for job, reply in taken:
                            try:
                                reply.value = job(shared)
                            except BaseException as err:  # its waiter's (see _run)
                                reply.error = err
                        ran += taken
                        taken = self._more(key, GROUP_MOST - len(ran))
                    collecting = False
                    self._second_parts(ran)
            except BaseException as err:  # the opening failed: each job's outcome (its close
                if not opened:  # failing after them is not theirs: they are done)
                    for _job, reply in taken:
                        reply.error = err
            done = ran if opened else taken
            self._queued.extend(reply for _job, reply in done)
            self._wake()
            return len(done)
        finally:
            if collecting:  # (an opening that failed)
                self._more(key, 0)

    def _more(self, key: Hashable, room: int) -> list[tuple[Job, Reply[Any]]]:
        """In the worker thread running a group of `key`: the jobs of `key` queued since it
        took its share (at most `room`), taken out of the queue; none while urgent jobs wait
        (the worker goes back to the queue sooner). One worker's ring then has a burst's fsyncs
        in flight together: a first run of 100 files made ~20 rounds of fsyncs, one after
        another in each worker, most of one or two files (taken as they came, a share each);
        4-5 this way, with `_collecting` and `_starting` (docs/benchmarks.md, "A burst's
        writes and the start's hops"). None: this drain takes no more of them
        (`_collecting`), and starts another drain for any left."""
        start = False
        with self._lock:
            grouped = self._groups.get(key)
            if room > 0 and grouped is not None and not self._urgent:
                items = grouped.items
                taken = [items.popleft() for _ in range(min(room, len(items)))]
                if not items:
                    del self._groups[key]
                    self._jobs.remove(grouped)
                return taken
            if self._collecting[key] > 1:
                self._collecting[key] -= 1
            else:
                del self._collecting[key]
            if grouped is not None and self._draining < self._executor.workers:
                self._draining += 1
                self._starting += 1
                start = True
        if start:
            try:
                self._executor.submit_plain(self._drain)
            except RuntimeError:  # shut down: this drain takes them once back in its loop
                with self._lock:
                    self._draining -= 1
                    self._starting -= 1
        return []

    def _second_parts(self, taken: list[tuple[Job, Reply[Any]]]) -> None:
        """In the worker thread: the group's second parts (Later), in order; their new files
        fsynced together first (through this worker's ring where it has one: Later's doc),
        then each named by its own."""
        durable = [
            reply.value.durable
            for _job, reply in taken
            if isinstance(reply.value, Later) and reply.value.durable is not None
        ]
        with contextlib.ExitStack() as stack:
            if len(durable) > 1:
                rings = self._executor.thread_rings()
                ring = None if rings is None else stack.enter_context(rings.mine())
                stack.enter_context(safefs.named_together(ring, durable))  # (None: no ring)
            for _job, reply in taken:
                later = reply.value
                if isinstance(later, Later):
                    reply.value = None
                    try:
                        reply.value = later.fn()
                    except BaseException as err:
                        reply.error = err

    def _run(self, job: Job, reply: Reply[Any], *args: Any) -> None:
        """In the worker thread: run the job, queue its reply (the caller wakes the loop)."""
        try:
            reply.value = job(*args)
        except BaseException as err:  # its waiter's: asyncio's executor future keeps them too
            reply.error = err
        self._queued.append(reply)

    def _wake(self) -> None:
        """In the worker thread, after queueing replies: wake the loop if need be."""
        # Queued first, then looked: a wake-up seen pending has not drained yet, so it takes
        # this reply too; else this one wakes the loop (under the GIL, both are atomic).
        if not self._waking:
            loop = self._loop()
            if loop is not None and not loop.is_closed():  # else nobody waits
                self._waking = True
                libc.signal_eventfd(self._wake_fd)  # the GIL held: it never waits

    def _woken(self) -> None:
        """On the loop, its reader of the wake-up: reset it, then deliver (reset first: a
        wake-up after this read is read next time, for the replies queued after it)."""
        libc.read(self._wake_fd, self._counter, 8)
        self._deliver()

    def _deliver(self) -> None:
        """On the loop: hand every queued reply to its future."""
        self._waking = False
        queued = self._queued
        while queued:
            reply = queued.popleft()
            reply.over = True
            future = reply.future
            if not future.done():  # else its waiter was cancelled
                error = reply.error
                if error is None:
                    future.set_result(reply.value)
                elif isinstance(error, StopIteration):  # a future refuses it
                    future.set_exception(RuntimeError(f"job raised {error!r}"))
                else:
                    future.set_exception(error)
            ended = reply.ended
            if ended is not None and not ended.done():
                ended.set_result(None)


_REPLIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Replies] = (
    weakref.WeakKeyDictionary()
)


def install(loop: asyncio.AbstractEventLoop, executor: GatedExecutor) -> None:
    """Make `executor` `loop`'s default executor, whose jobs' replies `replies(loop)` hands
    back in batches."""
    loop.set_default_executor(executor)
    _REPLIES[loop] = Replies(loop, executor)


def replies(loop: asyncio.AbstractEventLoop) -> Replies | None:
    """The Replies of `loop`'s executor set by install(); None if none was."""
    return _REPLIES.get(loop)
