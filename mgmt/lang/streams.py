"""Functions whose value changes over time: each call site (and set of key arguments) runs
one Stream instance that emits new values to the runtime.

- datetime.now(): unix seconds, a new value at every whole second.
- sys.load(): struct{x1; x5; x15} from /proc/loadavg, polled every second.
- os.readfile(path): the file's content, re-read on every inotify event once a writer in place
  closed it (engine.watcher.follow_writes).
- history(value, n): the value n values ago, as mgmt's (no value until n + 1 were seen).
- delayed(value, ms): the value as it was `ms` milliseconds ago (the oldest value seen, while
  less than `ms` of history exists); an extension, not in mgmt.
- debounce(value, ms): the value, changed only once the new value has held for `ms`
  milliseconds (an extension, not in mgmt: exact hysteresis in time).
- world.getval(key), world.kvlookup(key): a string of the cluster (struct{value; exists}) and a
  per-host map (host -> value), re-read on every change the World's watch reports. They wait
  for the cluster (WorldRef) until the agent has started it.
- collect.res(kind) (module "world/collect"): the exported resources of a kind, as
  struct{name; host}, re-read on every change of the exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import secrets
import string
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar, Protocol

from engine import hangfs, safefs
from engine.errors import ValidationError, WorldError
from engine.local import LocalValues
from engine.world import Changes, World, check_key
from mgmt.lang.clock import Clock, Timer
from mgmt.lang.errors import NOWHERE, FuncError, Pos
from mgmt.lang.types import Type
from mgmt.lang.values import MAX_LEN, FrozenDict, Struct

log = logging.getLogger("lang")


class Host(Protocol):
    """What a stream needs from the runtime."""

    clock: Clock
    base_dir: Path
    world: WorldRef
    local: LocalValues | None

    def emit(self, stream: Stream, value: Any, error: FuncError | None = None) -> None: ...

    def deploy_dir(self, file: str) -> Path: ...

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...

    @property
    def readers(self) -> Readers: ...


class Stream:
    """One running instance of a stream function."""

    # Indexes of the arguments that select an instance (None: all of them). The others are
    # inputs passed to update() on every evaluation (history's value).
    KEY_ARGS: ClassVar[tuple[int, ...] | None] = None
    # It runs a command (os.system): not where the program is only checked (Context.commands).
    RUNS_COMMANDS: ClassVar[bool] = False
    # The call's type as the checker inferred it (the runtime sets it; `types.resolve()` it):
    # what a polymorphic stream returns (value.get's value).
    result_type: Type | None = None
    # Where the call is (the runtime sets it): deploy.* resolve paths in its module.
    pos: Pos = NOWHERE

    def __init__(self, host: Host, args: tuple[Any, ...], name: str) -> None:
        self.host = host
        self.args = args
        self.name = name
        self._timers: list[Timer] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Emit the first value (synchronously), start timers or tasks."""

    def update(self, args: tuple[Any, ...]) -> None:
        """The call site was evaluated again with these arguments."""

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def emit(self, value: Any) -> None:
        self.host.emit(self, value)

    def fail(self, message: str) -> None:
        self.host.emit(self, None, FuncError(f"{self.name}: {message}"))

    def later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """A timer that close() cancels (forgotten once it has fired)."""
        timer: Timer | None = None

        def fire() -> None:
            if timer in self._timers:
                self._timers.remove(timer)
            callback()

        timer = self.host.clock.call_later(delay, fire)
        self._timers.append(timer)
        return timer


class Now(Stream):
    """datetime.now(): unix seconds; ticks at every whole second."""

    def start(self) -> None:
        self._tick()

    def _tick(self) -> None:
        now = self.host.clock.time()
        self.emit(math.floor(now))
        # A little past the next whole second, so that floor() has moved on.
        self.later(math.floor(now) + 1 - now + 0.001, self._tick)


class Random(Stream):
    """random1(length): a random string of letters and digits, drawn once per call site (a
    stream that never changes, so that the graph does not change at every evaluation)."""

    ALPHABET: ClassVar[str] = string.ascii_letters + string.digits

    def start(self) -> None:
        length = self.args[0]
        if length < 0 or length > 4096:
            self.fail(f"length must be between 0 and 4096, got {length}")
            return
        self.emit("".join(secrets.choice(self.ALPHABET) for _ in range(length)))


class Load(Stream):
    """sys.load(): the 1, 5 and 15 minute load averages, polled every second."""

    PATH: ClassVar[str] = "/proc/loadavg"
    INTERVAL: ClassVar[float] = 1.0

    def start(self) -> None:
        self._poll()

    def _poll(self) -> None:
        try:
            with open(self.PATH) as f:
                x1, x5, x15 = (float(v) for v in f.read().split()[:3])
        except (OSError, ValueError) as err:
            self.fail(f"cannot read {self.PATH}: {err}")
        else:
            self.emit(Struct(x1=x1, x5=x5, x15=x15))
        self.later(self.INTERVAL, self._poll)


def read_for_program(path: str) -> str:
    """A file a program reads (os.readfile, golang/os.read_file, deploy.readfile): as the agent
    reads a `source` (engine.safefs.read_regular: a symlink followed only under the safe-path
    rule, a FIFO or device refused rather than waited on forever, at most MAX_LEN bytes: a
    string's limit). ValueError naming the path and why, else. Until 2026-12-05 (tester13) a
    FIFO planted by another user stopped the agent for good (open() waiting for a writer on the
    event loop, SIGTERM unheard) and their link read root's files into the program."""
    if not path.startswith("/"):  # relative: to the agent's working directory, as in mgmt
        path = os.path.join(os.getcwd(), path)
    try:
        return safefs.read_regular(path, MAX_LEN).decode()
    except safefs.UnsafePathError as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read {path}: {err}") from None


# Files a program reads are read in this many threads, not on the event loop (READERS reads
# at once; the others wait their turn): a slow disk or a MAX_LEN file holds up only the values
# read from it, never the loop that repairs every resource (until 2026-12-05 they were read on
# the loop). A pool of their own: reads cannot take the threads resources block in.
READERS = 4


# A program's close waits this long for its reads in flight, then names the paths still being
# read and leaves their threads to end with them (a hung NFS server, a FUSE file system that
# never answers): a read cannot be stopped, and the agent's stop or a program edit must not wait
# on it for good.
READ_CLOSE_WAIT = 5.0


class Readers:
    """The threads a program's files are read in (`read`: read_for_program off the loop), made
    at its first read (most programs read no file) and owned by its runtime, which stops them
    at its close (`close`): no read runs on after it, up to READ_CLOSE_WAIT s. Until 2026-12-07
    (leaks) one pool served every program of the process for its life: a read cancelled with
    its stream ran on after the program had ended (in a test worker, opening and closing
    descriptors under the next test's checks), and its threads were never joined.

    Daemon threads, not a ThreadPoolExecutor's: a read that never ends (a hung NFS server, a
    FUSE daemon that stopped answering) is left to end with the process, whose exit does not
    wait for it. Until 2026-12-07 (eleventh session) the interpreter's exit joined an executor's
    threads: a stopped agent that had read such a file never exited (SIGTERM and a second one
    unheard; only SIGKILL ended it)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[str], str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._running: dict[Future[str], str] = {}  # each read submitted, and its path

    async def read(self, path: str) -> str:
        """read_for_program(path) in one of the READERS threads (ValueError as it raises it,
        and once closed)."""
        if self._closed:
            raise ValueError(f"cannot read {path}: the program has stopped")
        if not self._threads:
            for n in range(READERS):
                thread = threading.Thread(target=self._serve, name=f"lang-read_{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: Future[str] = Future()
        self._running[future] = path
        future.add_done_callback(self._ended)
        self._queue.put((future, path))
        return await asyncio.wrap_future(future)

    def _serve(self) -> None:  # (each thread's life: the reads it takes, until told to end)
        while (job := self._queue.get()) is not None:
            future, path = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it began
            try:
                future.set_result(read_for_program(path))
            except BaseException as err:  # (handed to the reader, as an executor would)
                future.set_exception(err)

    def _ended(self, future: Future[str]) -> None:  # (in its thread, or at a cancel)
        self._running.pop(future, None)

    async def close(self) -> None:
        """The reads not started dropped, those running waited for (up to READ_CLOSE_WAIT s:
        the paths still read then are named in a warning, their threads left to end with
        them, or with the process), the threads joined; cancelled, the waiting ends (the
        threads end on their own)."""
        self._closed = True
        threads, self._threads = self._threads, []
        if not threads:
            return
        for future in list(self._running):
            future.cancel()  # those not started (a running one is not cancelled)
        for _ in threads:
            self._queue.put(None)  # each thread ends once its read has
        running = dict(self._running)
        # A read on a file system that can stop answering (engine.hangfs) is not waited for:
        # one that has not ended yet most likely never will (a stop took 5 s more).
        kinds = {path: hangfs.kind_of(path) for path in running.values()}
        if hung := sorted(f"{path} ({kind})" for path, kind in kinds.items() if kind):
            log.warning(
                "%s: still being read at the program's close, on a file system that can stop "
                "answering: left to end on its own",
                ", ".join(hung),
            )
            return
        if running:
            _, late = await asyncio.wait(
                [asyncio.wrap_future(f) for f in running], timeout=READ_CLOSE_WAIT
            )
            if late:
                paths = sorted({running[f] for f in running if not f.done()})
                log.warning(
                    "%s: still being read at the program's close after %gs: left to end on "
                    "its own (a file system that does not answer?)",
                    ", ".join(paths),
                    READ_CLOSE_WAIT,
                )
                return
        await asyncio.to_thread(_join_all, threads)  # no read left: at once


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


class ReadFile(Stream):
    """os.readfile(path): the content; re-read whenever inotify reports a change, once a
    writer in place closed it (engine.watcher.follow_writes: mgmt reads at each event, and a
    truncate then gave ''). A relative path is relative to the agent's working directory, as
    in mgmt. Read off the loop (the runtime's Readers): the first value comes once the first read is
    done (the program waits for it as for os.system's first line), once the watch is up; changes
    that come during a read make one read more, after it."""

    def start(self) -> None:
        self.path = Path(self.args[0]).absolute()  # relative: to the agent's directory (mgmt's)
        self._stale = asyncio.Event()  # a change not read yet
        self._tasks.append(self.host.spawn(self._watch(), f"watch {self.path}"))

    async def _read(self) -> None:
        try:
            text = await self.host.readers.read(str(self.path))
        except ValueError as err:
            self.fail(str(err))
            return
        self.emit(text)

    async def _reads(self) -> None:
        while True:
            await self._stale.wait()
            self._stale.clear()
            await self._read()

    async def _watch(self) -> None:
        from engine.watcher import PathWatcher, follow_writes

        watcher = PathWatcher([self.path])
        try:
            watcher.open()
        except OSError as err:  # out of inotify watches: said, not a value that never comes
            self.fail(f"cannot watch {self.path}: {err.strerror or err}")
            return
        try:
            async with asyncio.TaskGroup() as group:
                # The first read once the watch is up: a change after it is an event, read at
                # its writer's close (no read runs alongside a writer the watch has seen).
                self._stale.set()
                group.create_task(self._reads())
                await follow_writes(watcher, self._stale.set)  # not a half-written file's half
        finally:
            await watcher.aclose()


class History(Stream):
    """history(value, n): the value n values ago (mgmt's lang/core history: "the Nth oldest
    value seen"); no value until n + 1 values were seen. A value equal to the last one received
    is the same value evaluated again, not a new one."""

    KEY_ARGS = (1,)

    def start(self) -> None:
        self.values: list[Any] = []  # the last n + 1 values, newest first

    def update(self, args: tuple[Any, ...]) -> None:
        value, n = args
        if n < 0:
            self.fail(f"can't use a negative index of {n}")
            return
        if self.values and self.values[0] == value:
            return
        self.values.insert(0, value)
        del self.values[n + 1 :]
        if len(self.values) == n + 1:
            self.emit(self.values[-1])


class Delayed(Stream):
    """delayed(value, ms): the value as it was ms milliseconds ago."""

    KEY_ARGS = (1,)

    def start(self) -> None:
        self.entries: list[tuple[float, Any]] = []  # (monotonic time, value), oldest first

    def update(self, args: tuple[Any, ...]) -> None:
        value, ms = args
        if ms < 0:
            self.fail(f"a negative duration ({ms} ms)")
            return
        delay = ms / 1000
        now = self.host.clock.monotonic()
        if not self.entries or self.entries[-1][1] != value:
            self.entries.append((now, value))
            if delay > 0:
                due = now + delay
                self.later(delay, lambda: self._due(due, delay))
        self._prune(now - delay)
        self.emit(self._at(now - delay))

    def _due(self, due: float, delay: float) -> None:
        when = max(self.host.clock.monotonic(), due) - delay
        self._prune(when)
        self.emit(self._at(when))

    def _at(self, when: float) -> Any:
        value = self.entries[0][1]
        for t, v in self.entries:
            if t > when:
                break
            value = v
        return value

    def _prune(self, when: float) -> None:
        """Forget entries older than the newest one at or before `when`."""
        keep = 0
        for i, (t, _) in enumerate(self.entries):
            if t <= when:
                keep = i
        del self.entries[:keep]


class Debounce(Stream):
    """debounce(value, ms): follows value only once a new value has held for ms milliseconds."""

    KEY_ARGS = (1,)
    _UNSET: ClassVar[object] = object()

    def start(self) -> None:
        self.output: Any = self._UNSET
        self.candidate: Any = self._UNSET
        self._pending: Timer | None = None

    def update(self, args: tuple[Any, ...]) -> None:
        value, ms = args
        if ms < 0:
            self.fail(f"a negative duration ({ms} ms)")
            return
        if self.output is self._UNSET:
            self.output = self.candidate = value
        elif value != self.candidate:
            self.candidate = value
            if self._pending is not None:
                self._pending.cancel()
                if self._pending in self._timers:
                    self._timers.remove(self._pending)
                self._pending = None
            if value != self.output:
                self._pending = self.later(ms / 1000, self._settle)
        self.emit(self.output)

    def _settle(self) -> None:
        self._pending = None
        self.output = self.candidate
        self.emit(self.output)


class WorldRef:
    """The cluster's World, once the agent has started the cluster (world.* functions wait)."""

    def __init__(self) -> None:
        self.world: World | None = None
        self._attached = asyncio.Event()

    def attach(self, world: World) -> None:
        self.world = world
        self._attached.set()

    async def get(self) -> World:
        await self._attached.wait()
        assert self.world is not None
        return self.world


class _WorldStream(Stream):
    """A value of the World for a key: read once the World is there, re-read on every change.

    A read that fails (the cluster is unreachable) is the stream's error until the watch,
    which survives a lost cluster and signals once it is back, brings a good read.
    """

    def start(self) -> None:
        key = self.args[0]
        try:
            self.check(key)
        except ValidationError as err:
            self.fail(err.message)
            return
        self._tasks.append(self.host.spawn(self._follow(key), f"{self.name} {key}"))

    def check(self, key: str) -> None:
        check_key(key)

    def watch(self, world: World, key: str) -> Changes:
        raise NotImplementedError

    async def read(self, world: World, key: str) -> Any:
        raise NotImplementedError

    async def _follow(self, key: str) -> None:
        world = await self.host.world.get()
        async with self.watch(world, key) as changes:
            await self._read(world, key)  # after subscribing: no change is missed
            async for _ in changes:
                await self._read(world, key)

    async def _read(self, world: World, key: str) -> None:
        try:
            value = await self.read(world, key)
        except WorldError as err:
            self.fail(f"cannot read {key}: {err}")
            return
        self.emit(value)


class GetVal(_WorldStream):
    """world.getval(key): struct{value; exists} of the string `key` ("" if it does not exist)."""

    def watch(self, world: World, key: str) -> Changes:
        return world.str_watch(key)

    async def read(self, world: World, key: str) -> Any:
        value = await world.str_get(key)
        return Struct(value=value or "", exists=value is not None)


class KVLookup(_WorldStream):
    """world.kvlookup(key): the per-host map `key`, host -> value (what `kv` with `mapped`
    writes)."""

    def watch(self, world: World, key: str) -> Changes:
        return world.str_map_watch(key)

    async def read(self, world: World, key: str) -> Any:
        return FrozenDict(await world.str_map_get(key))


class CollectRes(_WorldStream):
    """collect.res(kind): every exported resource of `kind` this host may collect, as
    struct{name; host}, sorted by name then host; re-read on every change of the exports."""

    def check(self, key: str) -> None:
        if not key:
            raise ValidationError("collect.res needs a kind, got an empty string", "kind")

    def watch(self, world: World, key: str) -> Changes:
        return world.res_watch()

    async def read(self, world: World, key: str) -> Any:
        records = await world.res_list()
        found = {
            (r.name, r.host) for r in records if r.kind == key and r.visible_to(world.hostname)
        }
        return tuple(Struct(name=name, host=host) for name, host in sorted(found))


class Exchange(_WorldStream):
    """world.exchange(namespace, value): every host's value in the namespace (host -> value),
    this host's included; a new value is written at once (the stream stays, KEY_ARGS)."""

    KEY_ARGS = (0,)

    def __init__(self, host: Host, args: tuple[Any, ...], name: str) -> None:
        super().__init__(host, args, name)
        self._value: str = args[1]
        self._written: str | None = None
        self._changes: Changes | None = None

    def update(self, args: tuple[Any, ...]) -> None:
        if args[1] != self._value:
            self._value = args[1]
            if self._changes is not None:
                self._changes.signal()  # re-read, which writes first

    @staticmethod
    def _map(namespace: str) -> str:
        return f"exchange/{namespace}"

    def watch(self, world: World, key: str) -> Changes:
        self._changes = world.str_map_watch(self._map(key))
        return self._changes

    async def read(self, world: World, key: str) -> Any:
        if self._written != self._value:
            value = self._value
            await world.str_map_set(self._map(key), value)
            self._written = value
        return FrozenDict(await world.str_map_get(self._map(key)))


class Schedule(_WorldStream):
    """world.schedule(namespace): the hosts in the namespace's pool, in the order they joined
    (mgmt's current API: it only reads; the `schedule` resource joins).

    world.schedule(namespace, opts), mgmt's earlier API, also joins while it runs: the value
    is the hosts chosen among those that call it with this namespace, at most `max` (default
    1), in the order they joined ("rr", the default) or by name ("alpha"). A host stays in the
    pool while its agent runs it (a lease of `ttl` seconds, default 10, so a dead host leaves
    within ttl; a stopped stream leaves at once)."""

    STRATEGIES = ("rr", "alpha")

    def start(self) -> None:
        self.joins = len(self.args) > 1
        opts = self.args[1] if self.joins else {}
        self.strategy = opts.get("strategy", "rr")
        self.max = opts.get("max", 1)
        self.ttl = opts.get("ttl", 10)
        if self.strategy not in self.STRATEGIES:
            self.fail(f"unknown strategy {self.strategy!r}; strategies: rr, alpha")
        elif self.max < 1 or self.ttl < 1:
            self.fail(f"max and ttl must be at least 1, got max {self.max}, ttl {self.ttl}")
        else:
            super().start()

    def watch(self, world: World, key: str) -> Changes:
        return world.schedule_watch(key)

    async def read(self, world: World, key: str) -> Any:
        hosts = await world.schedule_hosts(key)
        if not self.joins:
            return tuple(hosts)
        if self.strategy == "alpha":
            hosts.sort()
        return tuple(hosts[: self.max])

    async def _follow(self, key: str) -> None:
        if not self.joins:
            await super()._follow(key)
            return
        world = await self.host.world.get()
        while True:
            try:
                async with world.schedule_join(key, self.ttl):
                    await super()._follow(key)
            except WorldError as err:  # the join could not be made: after the next change
                self.fail(f"cannot join {key}: {err}")
                async with world.schedule_watch(key) as changes:
                    await anext(changes)


def load_average_path(path: str) -> contextlib.AbstractContextManager[None]:
    """Read the load average from another file (tests)."""

    @contextlib.contextmanager
    def swap() -> Any:
        old = Load.PATH
        Load.PATH = path
        try:
            yield
        finally:
            Load.PATH = old

    return swap()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
