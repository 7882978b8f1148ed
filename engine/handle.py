"""The handle: a resource's only link to the engine."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from engine.params import hide_secret, secrets_pattern
from engine.safefs import fit_name, private_dir

if TYPE_CHECKING:
    from engine.local import LocalValues
    from engine.program import ProgramRef
    from engine.resource import Resource
    from engine.world import World

Cleanup = Callable[[], Awaitable[Any] | Any]

log = logging.getLogger("engine")

T = TypeVar("T")


AHEAD_SLICE = 0.0005  # s of Ahead's jobs at most between two passes of the loop


class Ahead:
    """Work the resources of a daemon do ahead of need, in its idle time (the file kind's
    spares, resources/_lib/spare.py): a resource `want`s a job once, the agent `run`s the jobs
    queued, one at a time and yielding to the loop between two, while the graph stays
    converged; a divergence (a drift, a swap) stops it until the next convergence. Made by the
    agent of a daemon only (`Shared.ahead`): a run that exits at convergence has none, and its
    resources queue nothing. Nothing queued, nothing runs (no timer, no poll)."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], Awaitable[None] | None]] = collections.deque()
        self._queued = asyncio.Event()  # jobs are waiting
        self.drained = asyncio.Event()  # the queue ran empty (tests await it)
        self.ran = 0  # jobs run (tests)

    def want(self, job: Callable[[], Awaitable[None] | None]) -> None:
        """Run `job` once the graph has converged (its owner checks, when it runs, that it is
        still wanted: a resource stopped meanwhile does nothing)."""
        self._jobs.append(job)
        self._queued.set()
        self.drained.clear()

    async def queued(self) -> None:
        """Return once a job waits."""
        await self._queued.wait()

    async def run(self, idle: Callable[[], bool]) -> None:
        """Run the queued jobs while `idle()` (the graph converged); return when none is left
        or it is not idle any more. Every AHEAD_SLICE s of them, the loop runs what is ready
        first (an event's read, a repair): a job is short (a few system calls; one with
        nothing left to do, ~1 us: 100,000 files past the budget of spares), or waits."""
        jobs, loop = self._jobs, asyncio.get_running_loop()
        end = loop.time() + AHEAD_SLICE
        while jobs and idle():
            job = jobs.popleft()
            self.ran += 1
            try:
                result = job()
                if result is not None:
                    await result
            except Exception:
                log.exception("work ahead failed")
            if loop.time() >= end:
                await asyncio.sleep(0)
                end = loop.time() + AHEAD_SLICE
        if not jobs:
            self._queued.clear()
            self.drained.set()


class Shared:
    """What the resources of one engine share (D-Bus connections, tool locks...): made on first
    use by `get`, and closed (each one's `aclose()`, newest first) when the engine stops."""

    def __init__(self) -> None:
        self._items: dict[str, object] = {}
        self.ahead: Ahead | None = None  # a daemon's agent's: see Ahead
        # A one-shot run's engine, until its first change: what `Handle.changing()` calls,
        # with that handle (Engine.watch_late).
        self.changing: Callable[[Handle], None] | None = None

    def get(self, key: str, make: Callable[[], T]) -> T:
        """The object under `key` (its owner module's name), made by `make()` on first use."""
        if key not in self._items:
            self._items[key] = make()
        return cast("T", self._items[key])

    async def aclose(self) -> None:
        items, self._items = list(self._items.values()), {}
        for item in reversed(items):
            close = getattr(item, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing %r failed", item)


class LineSink(Protocol):
    """A handler of ours that takes a resource's INFO line as its parts, no LogRecord made (see
    ResourceLogger.log): what it does with them is what its `handle(record)` does with the
    record logging would make of them."""

    def takes_lines(self) -> bool:
        """Whether emit_line is, now, what handle() would do (its exact class, no filters...)."""
        ...

    def emit_line(self, logger: str, created: float, kind: str, name: str, message: str) -> None:
        """The line `kind[name]: message` that `logger` logs at INFO at time.time() `created`."""
        ...


def line_sinks(logger: logging.Logger) -> list[LineSink] | None:
    """The handlers an INFO record of `logger` would reach, in logging's order, when every one
    is a LineSink that takes lines and the logger neither filters nor is disabled (None:
    logging's own path: caplog's handler, an embedder's, a formatter not ours...). A handler
    not ours puts every line on logging's path, even one of a level above INFO."""
    if logger.filters or logger.disabled:
        return None
    sinks: list[LineSink] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            takes = getattr(handler, "takes_lines", None)
            if takes is None or not takes():
                return None
            if handler.level <= logging.INFO:
                sinks.append(handler)  # type: ignore[arg-type]  # it takes lines
        current = current.parent if current.propagate else None
    return sinks or None  # none: logging's last resort (or its "no handlers" note)


# The record attribute of a `ResourceLogger.traffic` line (what a server was asked).
TRAFFIC = {"traffic": True}


class ResourceLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with `kind[name]: ` (log format: `HH:MM:SS engine: file[x]: msg`).

    An INFO line, a resource's change lines (a first run's "created PATH", one per file), skips
    logging's LogRecord and handler calls (~7 us a line) when every handler the line reaches is
    one of ours (line_sinks: stderr's, text or JSON, the journal's, the status model's): each
    gets the line's parts, and makes of them what it makes of a record (the same text, the same
    change kept). Any other handler (caplog, an embedder's) or a filter: the line takes
    logging's path, as every other level's lines do (tests/mgmt/test_log_lines.py).

    While the resource keeps failing (`repeats` is a set: the engine's Vertex._failed), an INFO
    line it said already in this streak of failures (an exec's `running: CMD`, its output) is
    said again at DEBUG only: a resource retrying for ever logs each of its lines once, not
    once per attempt (tester11: ~2,400 lines a second with `delay: 0`)."""

    repeats: set[str] | None = None  # the INFO lines said since the resource began failing
    REPEATS = 100  # lines remembered at most (a command printing a clock: each line is new)
    # Its failure repeated since it was last said (at said_at, time.monotonic()): counted, said
    # at DEBUG, then in one line (engine.Vertex._say_failure).
    again = 0
    said_at = 0.0
    differed = False  # one of those failures' text differed from the one before it

    def traffic(self, msg: str, *args: object) -> None:
        """An INFO line about what a server was asked (a request, a transfer, a lease), not a
        change of the resource's state: logged as any other, but not kept as its last change
        (`mgmt status`' LAST CHANGE, the status page: a flood of requests showed the last one
        there, not what last changed)."""
        self.log(logging.INFO, msg, *args, extra=TRAFFIC)

    # Values received as secrets (engine.resource.Received.secret): "***" in every line and
    # error of this resource (redact). A receiver logs what it was given (exec's "running:
    # CMD"), and its errors carry it: tester13 read a received password in the log and on the
    # status page. Only the last few are kept (the latest are those in use).
    # A short one only where it is a whole token (engine.params.SHORT_SECRET). A traceback
    # (exception(), exc_info) is redacted too: formatted into the line, not left to logging.
    secrets: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = None

    def hide(self, secret: str) -> None:
        """Redact `secret` (a received secret value) from now on."""
        if secret and secret not in self.secrets:
            self.secrets = (*self.secrets[-7:], secret)
            self._pattern = secrets_pattern(self.secrets)
            hide_secret(secret)  # and in the lines others log of it (engine.params.hide_secret)

    def redact(self, text: str) -> str:
        """`text` with every secret this resource received as "***"."""
        return text if self._pattern is None else self._pattern.sub("***", text)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Every level's line (LoggerAdapter's info(), warning()... call it)."""
        logger = self.logger
        if level == logging.INFO and self.repeats is not None:
            level = self._repeated(_message(msg, args))
        if not logger.isEnabledFor(level):
            return
        if self.secrets:
            msg, args = self.redact(_message(msg, args) or f"{msg}"), ()
            if kwargs.get("exc_info"):  # the error's text and traceback: redacted here too
                msg = f"{msg}\n{self.redact(_traceback(kwargs.pop('exc_info')))}"
        extra: Mapping[str, object] = self.extra or {}
        if level == logging.INFO and not kwargs:
            sinks = line_sinks(logger)
            if sinks is not None:
                message = _message(msg, args)
                if message is not None:
                    created = time.time()
                    kind, name = str(extra["res_kind"]), str(extra["res_name"])
                    for sink in sinks:
                        sink.emit_line(logger.name, created, kind, name, message)
                    return
        given = kwargs.get("extra")
        kwargs["extra"] = extra if given is None else {**extra, **given}  # logging copies it
        prefix = f"{extra['res_kind']}[{extra['res_name']}]: "
        if args:  # logging formats `msg % args`: a name's '%' (a file "/srv/100%") kept as is,
            prefix = prefix.replace("%", "%%")  # not read as a conversion ("cannot log" it)
        # the record's caller (when logging looks for it) is the resource: this frame skipped
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        logger.log(level, f"{prefix}{msg}", *args, **kwargs)

    def _repeated(self, message: str | None) -> int:
        """DEBUG for a line said already while failing, else INFO (and it is remembered)."""
        repeats = self.repeats
        assert repeats is not None
        if message in repeats:
            return logging.DEBUG
        if message is not None and len(repeats) < self.REPEATS:
            repeats.add(message)
        return logging.INFO


def _message(msg: Any, args: tuple[Any, ...]) -> str | None:
    """`f"{msg}" % args`, as LogRecord.getMessage makes it of ResourceLogger's message; None
    where logging does otherwise (one mapping as args: a record's args are the mapping) or
    fails (a bad format: its handlers say so)."""
    text = f"{msg}"
    if not args:
        return text
    if len(args) == 1 and not isinstance(args[0], str) and isinstance(args[0], Mapping):
        return None
    try:
        return text % args
    except Exception:
        return None


def _traceback(exc_info: Any) -> str:
    """The traceback logging would add for `exc_info` (True: the exception being handled)."""
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    return "".join(traceback.format_exception(*exc_info)).rstrip()


def _nothing(*_args: object) -> None:
    """A detached handle's callbacks (Handle.detach)."""


def _false() -> bool:
    return False


class Handle:
    """What the engine gives a resource in `init()`.

    `event()` reports a change (the first call is the startup event), `refresh()` says whether a
    notify arrived since the last successful check_apply, `on_cleanup()` registers an
    unsubscribe callable that runs after `cleanup()`, `on_stop()` a callable the engine's stop
    of the resource calls (work in progress that ends early). `shared` holds what the
    resources of one engine share (connections, locks), closed when the engine stops.
    """

    def __init__(
        self,
        *,
        kind: str,
        name: str,
        hostname: str,
        var_dir: Path | None = None,
        on_event: Callable[[], None] | None = None,
        get_refresh: Callable[[], bool] | None = None,
        on_send: Callable[[dict[str, Any]], None] | None = None,
        get_received: Callable[[], dict[str, bool]] | None = None,
        world: World | None = None,
        local: LocalValues | None = None,
        prefix: Path | None = None,
        shared: Shared | None = None,
        peers: Callable[[], Iterable[Resource]] | None = None,
        program: ProgramRef | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.hostname = hostname
        self.world = world  # the cluster's shared store; None when this run has no cluster
        self.local = local  # this host's values shared with the language (engine.local)
        self.program = program  # the files of the program the agent runs (engine.program)
        self.shared = shared if shared is not None else Shared()  # the engine's: see Shared
        self._var_dir = var_dir  # None: made from the prefix on first use (see var_dir)
        self._prefix = prefix  # var_dir's directories from here down are kept private
        self._on_event = on_event or (lambda: None)
        self._get_refresh = get_refresh or (lambda: False)
        self._on_send = on_send or (lambda values: None)
        self._get_received = get_received or dict
        self._cleanups: list[Cleanup] = []
        self.stopping = False  # the engine stops this resource (request_stop)
        self._on_stop: list[Callable[[], None]] | None = None
        self._on_detach: list[Callable[[], None]] | None = None
        self._started = False  # event() was called: the startup event was reported
        self._peers = peers or (lambda: ())
        self.logger = ResourceLogger(log, {"res_kind": kind, "res_name": name})

    @property
    def var_dir(self) -> Path:
        """A private state directory for this resource (0700 from the prefix down, made on use):
        by default PREFIX/var/KIND/NAME (a path made only when a resource asks: few do)."""
        return private_dir(self.var_path, root=self._prefix)

    @property
    def var_path(self) -> Path:
        """var_dir's path, not made nor checked: for a look at what an earlier run may have
        left there (a missing directory: nothing)."""
        if self._var_dir is None:
            if self._prefix is None:
                raise RuntimeError(f"{self.kind}[{self.name}]: no var_dir and no prefix")
            self._var_dir = self._prefix / "var" / self.kind / var_name(self.name)
        return self._var_dir

    async def event(self) -> None:
        """Report a change. The first call is the startup event that lets check_apply run.

        Each later call yields to the loop (a watch that reports in a loop lets the others
        run); the startup event does not: a watch goes on to wait for changes (one step of
        its task less per resource, ~1,000 at 1,000 files)."""
        self._on_event()
        if self._started:
            await asyncio.sleep(0)
        else:
            self._started = True

    def refresh(self) -> bool:
        """True once per notify: an upstream resource changed along a `notify` edge."""
        return self._get_refresh()

    def changing(self) -> None:
        """The resource's check begins to change something (resources._lib.plan.apply_steps
        says so), or to run a command that may change anything (exec's guards, under --noop
        too): a one-shot run watches from now on, before that change (Engine.watch_late;
        its end would say so too, but the checks begun meanwhile would run unwatched)."""
        changing = self.shared.changing
        if changing is not None:
            changing(self)

    def send(self, **values: Any) -> None:
        """Publish named values (e.g. exec's stdout) for `send`/`recv` edges to pick up."""
        self._on_send(values)

    def peers(self) -> list[Resource]:
        """The resources of the graph this one runs in (itself included), to read only: mgmt's
        GraphQueryable (file's purge keeps what other file resources manage)."""
        return list(self._peers())

    def received(self) -> dict[str, bool]:
        """The params set along send/recv edges before this check_apply, each with whether its
        value changed then (mgmt's Recv())."""
        return self._get_received()

    def on_stop(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn()` once the engine stops this resource (the agent's stop, graceful or not,
        or a swap that removes or replaces it), at once if it is stopping already: what may
        end work in progress early (exec sends its command `sig`, as mgmt's exec does when its
        context is cancelled). Returns what unregisters it."""
        if self.stopping:
            fn()
            return lambda: None
        if self._on_stop is None:
            self._on_stop = []
        callbacks = self._on_stop
        callbacks.append(fn)

        def unregister() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(fn)

        return unregister

    def on_detach(self, fn: Callable[[], None]) -> None:
        """Call `fn()` once the engine has dropped this resource (`detach`): at the end of the
        swap that removed or replaced it, once the resources that replace it have run init()
        (its cleanup() ran before they did). Not at the engine's own stop. What a member of
        a shared service withdraws there is offered on across the swap, until its successor
        offers it: an http:server:file's URL path is never 404 in between."""
        if self._on_detach is None:
            self._on_detach = []
        self._on_detach.append(fn)

    def detach(self) -> None:
        """The engine has dropped this resource's vertex: what on_detach() registered is
        called, and the callbacks into it do nothing from now on (they pointed back at the
        vertex, which holds this handle: a reference cycle only a full collection freed,
        Vertex.release)."""
        self._on_event = _nothing
        self._get_refresh = _false
        self._on_send = _nothing
        self._get_received = dict
        self._peers = tuple
        callbacks, self._on_detach = self._on_detach, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:
                self.logger.exception("detaching failed")

    def request_stop(self) -> None:
        """The engine stops this resource: call what on_stop() registered (once)."""
        if self.stopping:
            return
        self.stopping = True
        callbacks, self._on_stop = self._on_stop, None
        for fn in callbacks or ():
            try:
                fn()
            except Exception:
                self.logger.exception("stopping failed")

    def on_cleanup(self, fn: Cleanup) -> None:
        """Register something to undo at cleanup (sync or async), run in reverse order."""
        self._cleanups.append(fn)

    def has_cleanups(self) -> bool:
        return bool(self._cleanups)

    async def run_cleanups(self) -> None:
        """Run the registered cleanups, newest first; a failing one is logged, not raised."""
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                result = fn()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.logger.exception("cleanup failed")


def var_name(name: str) -> str:
    """The directory name of a resource's var dir under PREFIX/var/KIND/: its name, each '/' a
    '_' (so `a/b` and `a_b` share one: a kind whose state must not be shared refuses the two
    in one graph, as password does), hashed when too long."""
    return fit_name(name.replace("/", "_"))
