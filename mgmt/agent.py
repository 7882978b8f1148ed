"""The agent: loads the graph, runs the engine, swaps graphs, exits when asked or converged.

`run(config)` is both what the CLI calls and the library API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import resources  # noqa: F401  # registers the loader that imports kinds on first use
from engine import codestamp, collector, inotify, stopgate
from engine.engine import RETRYING, Engine, Vertex
from engine.errors import GraphError, MgmtError, ValidationError, caused_by, path_error, transient
from engine.events import CheckApplied
from engine.exit import exit_request
from engine.graph import Graph, fmt_key
from engine.handle import Ahead
from engine.heap import FrozenHeap
from engine.limits import set_max_resources
from engine.local import LocalValues
from engine.program import ProgramRef
from engine.safefs import check_private, others_control, private_dir, through_links
from engine.stopgate import GatedExecutor
from engine.tasks import TaskSet, first_done, surviving, thread_to_end
from mgmt import log as logsetup
from mgmt import priority
from mgmt.cluster import NotAdmitted, needs_cluster
from mgmt.config import Config, ExitCode, set_max_program_size, set_max_steps
from mgmt.converger import Converger
from mgmt.listing import first_of, named, resource_count
from mgmt.signals import Signals
from mgmt.status.model import StatusModel
from mgmt.status.unixsock import SOCKET, FirstClient, remove_stale
from mgmt.tmpprefix import PrefixBusy, TmpPrefix, hold_prefix
from mgmt.yamlgraph import (
    GraphFileError,
    Loaded,
    load_file,
    locate_refusal,
    located,
    read_limited,
)

if TYPE_CHECKING:
    from engine.namedpath import NamedPaths
    from engine.world import World
    from mgmt.cluster.link import ClusterLink
    from mgmt.deploy.source import DeploySource
    from mgmt.deploy.status import HostStatus
    from mgmt.metrics import Metrics
    from mgmt.sdnotify import Notifier
    from mgmt.status.cluster import ClusterStatus
    from mgmt.status.server import StatusServer

log = logging.getLogger("main")
PROGRESS_EVERY = 2.0  # seconds between progress lines on a terminal, before the first convergence
# Once --max-runtime is reached, running operations (an exec's command...) get this long to
# finish before they are cancelled: the flag bounds the run, whatever a command does.
MAX_RUNTIME_GRACE = 5.0
# Seconds a forced stop (a second SIGINT or SIGTERM) may take before the process exits anyway,
# saying what still ran: more than etcd's own stop (SIGTERM, then SIGKILL after 10 s).
FORCED_EXIT = 15.0
# Seconds the exit may take once the agent's stop is done (the loop's last tasks cancelled, its
# threads joined), before it exits anyway, saying what still ran (tasks, threads: mgmt.stuck).
EXIT_WAIT = 30.0
LISTEN_RETRY_MAX = (
    60  # seconds: the longest wait between tries to bind a --prometheus-listen in use
)
# A graph file of at most this many bytes, without aliases, is read and parsed on the event loop
# (`Agent._reload`): a 1 KiB file parses in ~0.2 ms, less than the hop to a thread and back.
INLINE_BYTES = 8192
# A graph file found empty or missing while watched is said so only if it still is at the next
# change or this many seconds later: a write's or an editor's save's moment (Agent._reload).
SETTLE = 1.0
EMPTY = b""  # an empty graph file's digest: its bytes (yamlgraph.load_file)
# Under systemd (Type=notify), READY=1 is sent once the first graph has settled, or at the
# latest this many seconds after it started (below systemd's default TimeoutStartSec, 90 s:
# a long first run, or a resource retrying for ever, must not fail the unit's start).
READY_WAIT = 60.0


class GraphSource(Protocol):
    """A front-end that produces graphs over time (the language): the agent applies each one.

    It watches its own input (so the agent does not watch config.file); `reload()` is SIGHUP.
    A graph that needs the cluster (`Loaded.cluster`) makes the agent start it and hand the
    source its World: `attach_world` returns the graph the source then produces, if a new one.
    """

    graphs: int  # graphs produced so far
    # What is wrong with the program while something is (it does not compile, a function
    # fails: the host does not run what it was asked to), "" otherwise; `on_problem` is called
    # with each new one (the agent's status model: `mgmt status` fails on it).
    problem: str
    on_problem: Callable[[str], None] | None

    def __aiter__(self) -> AsyncIterator[Loaded]: ...

    async def attach_world(self, world: World) -> Loaded | None: ...

    def reload(self) -> None: ...

    async def aclose(self) -> None: ...


async def open_lang(
    config: Config, local: LocalValues | None = None
) -> tuple[GraphSource, Loaded | None]:
    """Compile and start a program (GraphFileError on compile errors: nothing has run).

    Returns the source and its first graph (None if the program could not produce one yet).
    """
    from mgmt.lang.errors import CompileError  # the language (and lark) only when used
    from mgmt.lang.source import LangSource

    assert config.file is not None
    try:
        source = await LangSource.open(
            config.file, hostname=config.hostname, watch=not config.no_watch, local=local
        )
    except CompileError as err:
        raise GraphFileError(err.problems) from err
    return source, source.first


async def open_puppet(config: Config, prefix: Path) -> tuple[GraphSource, Loaded | None]:
    """Compile a Puppet manifest and translate its catalog (GraphFileError: nothing has run);
    with --puppet-fallback, `puppet resource` keeps its state in the prefix's puppet/."""
    from mgmt.puppet.compile import Manifest
    from mgmt.puppet.source import PuppetSource

    manifest = Manifest.of(config)
    source = await PuppetSource.open(
        manifest,
        hostname=config.hostname,
        fallback=prefix / "puppet" if config.puppet_fallback else None,
        watch=not config.no_watch,
    )
    return source, source.first


async def open_deploys(config: Config, prefix: Path) -> DeploySource | None:
    """The source of deploys (`run empty`, `run --deploy`); None after logging bad input."""
    from mgmt.deploy import DeployError
    from mgmt.deploy.source import open_source

    try:
        return await asyncio.to_thread(open_source, config, prefix)
    except DeployError as err:
        log.error("%s", err)
        return None


def _later_graphs_code() -> None:
    """Import now what a later graph runs: the swap in O(change) (engine.smallswap) and an
    edit's re-parse (mgmt.yamlreparse), left out of a cron run's start. A daemon's first edit
    or SIGHUP may come after an upgrade (git pull, install.sh): imported then, they would be
    the new checkout's code inside the old engine, unchecked (engine.codestamp checks the
    kinds' modules), as they never were while they were engine.engine's and mgmt.yamlgraph's
    (docs/operations.md, Installing). So are an edit's spans (mgmt.spans) and what a graph
    with `collect` needs (mgmt.collectscope), which an edit may add."""
    import engine.smallswap  # noqa: F401
    import mgmt.collectscope
    import mgmt.spans
    import mgmt.yamlreparse  # noqa: F401


def load(config: Config) -> Loaded:
    """The graph the config asks for; GraphFileError on bad input."""
    if config.frontend == "empty" or config.file is None:
        return Loaded(Graph("empty"))
    # A watched file keeps what reparse() needs for an edit in O(change); but for a run that
    # ends at its first convergence (--converged-timeout=0: a cron run), whose edits are rare
    # and come before it, the parse is the block reader's where it can (no libyaml: ~7 M
    # instructions of a 100-file run): an edit then is parsed whole, the next ones in O(change).
    parsing: Callable[[bytes, str], Loaded] | None = None
    if not config.no_watch and config.exit_after != 0:
        from mgmt.yamlreparse import incremental_parse as parsing  # a watched file's
    with collector.paused():  # many objects, no cycles (engine/collector.py)
        loaded = load_file(config.file, config.max_graph_size, parsing)
        if config.own_process:  # they live on: no full collection walks them once resumed
            gc.freeze()  # (engine/heap.py; tests running many agents in a process do not)
        return loaded


def io_threads(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's default executor, once per loop: resources do their blocking I/O (fsync...)
    in threads; more than 8 only contend for directory locks (measured: 1,000 fsynced writes
    take longest with 1 or 32 threads). Gated: a check_apply's job not started when the engine
    stops never starts. Set before the run's first hop to a thread (its temporary prefix): one
    pool, whose threads the engine reuses (not a pool of asyncio's whose thread starts, waits
    idle and ends)."""
    if loop not in _IO_LOOPS:
        _IO_LOOPS.add(loop)
        stopgate.install(loop, GatedExecutor(max_workers=8, thread_name_prefix="io"))


_IO_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


async def run(config: Config, given: Loaded | None = None) -> int:
    """Run the agent until it converges (cron mode), is stopped, or hits --max-runtime.

    `given`: a graph built by the caller, instead of the one the config names. Refused at its
    start (bad input, exit 2) under systemd, the first error is its last STATUS=: `systemctl
    status` says why the unit failed (sdnotify.last_words)."""
    io_threads(asyncio.get_running_loop())
    logsetup.setup(config.log_format, config.verbose, config.own_process, config.quiet)
    if not os.environ.get("NOTIFY_SOCKET"):
        return await _run_in_prefix(config, given)
    first = _FirstError()
    logging.getLogger().addHandler(first)
    try:
        code = await _run_in_prefix(config, given)
    finally:
        logging.getLogger().removeHandler(first)
    if code in (ExitCode.USAGE, ExitCode.UNAVAILABLE) and first.message:
        from mgmt.sdnotify import last_words

        await asyncio.to_thread(last_words, first.message)
    return code


class _FirstError(logging.Handler):
    """The first error logged (a refusal at the start: its first line says why)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        if not self.message:
            self.message = record.getMessage()


async def _run_in_prefix(config: Config, given: Loaded | None) -> int:
    if config.converged_exit and config.exit_after < 0:  # mgmt's newer spelling, half given
        log.warning("--converged-exit without --converger-timeout N: the run will not exit")
    priority.renice(config.nice)
    set_max_resources(config.max_resources)  # what every graph builder counts against
    set_max_program_size(config.max_graph_size)  # and every program file read
    set_max_steps(config.max_steps)  # and every mcl evaluation pass
    # Known before the program runs: its functions keep their files there too (local.*).
    if config.tmp_prefix:  # removed at exit; a killed run's is removed by the next one
        try:  # on the loop: a directory and its lock, a few system calls; before, a hop to
            # a thread the loop waited ~1.5 ms for (its first thread started), at a cron run's
            # start. The killed runs' prefixes are looked for on the loop too (`sweep_killed`).
            tmp = TmpPrefix(swept=False)
        except (OSError, MgmtError) as err:  # e.g. $TMPDIR another user controls
            log.error("%s", ValidationError(str(err), "--tmp-prefix"))
            return refusal(err)
        sweeping = asyncio.ensure_future(tmp.sweep_killed(log))
        if config.own_process and config.exit_after >= 0:  # the process ends with this run
            tmp.leave_to_exit()
        try:
            return await _run(config, given, tmp.path, made=True)
        finally:
            try:
                await sweeping
            finally:
                tmp.close()
    try:  # before anything is applied: a shared prefix is refused
        prefix = await thread_to_end(_private_prefix, config)
    except (OSError, MgmtError) as err:
        log.error("%s", ValidationError(path_error(err, config.prefix), "--prefix"))
        return refusal(err)
    try:  # and so is a prefix another agent runs with
        lock = await thread_to_end(lock_prefix, prefix, undo=os.close)
    except PrefixBusy as err:
        log.error("%s", err)
        return ExitCode.USAGE
    except (OSError, MgmtError) as err:
        log.error("%s", ValidationError(path_error(err, config.prefix), "--prefix"))
        return refusal(err)
    try:
        return await _run(config, given, prefix)
    finally:
        os.close(lock)


def _private_prefix(config: Config) -> Path:
    """The agent's prefix, checked (`check_private`): where a link of root's or ours leads
    (`through_links`: `/var/lib/mgmt -> /srv/mgmt`), which the agent then uses throughout."""
    prefix = through_links(config.prefix)
    check_private(prefix, parent=config.prefix_parent_required)
    return prefix


def refusal(err: BaseException) -> ExitCode:
    """The exit code of a start refused for `err`: bad input (USAGE, 2), or a host problem
    that may pass (UNAVAILABLE, 75: a full disk, a missing graph file), which the unit
    restarts on (docs/operations.md, "Restarts"); PyYAML that cannot be imported (upgraded or
    removed under the agent: mgmt.yamlgraph) is one too: a reinstall ends it, the file is fine."""
    not_importable = caused_by(err, lambda e: isinstance(e, ImportError))
    return ExitCode.UNAVAILABLE if transient(err) or not_importable else ExitCode.USAGE


def warn_untrusted(path: str) -> None:
    """One warning when another user could change the graph file or program `path` (or a
    directory above it): the agent runs what it says, and a daemon applies each edit live.
    A warning, not a refusal: `sudo mgmt run yaml ~/g.yaml` from one's own checkout is the
    usual way to try a graph (docs/security.md). Nothing for what is not a file or a
    directory (`/dev/null`, a FIFO): the read refuses it, in one line."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the read says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return
    if why := others_control(path):
        log.warning(
            "%s: %s: every edit there is applied with this agent's rights (uid %d); keep it "
            "owned by root (or this agent's user) and writable only by them",
            path,
            why,
            os.geteuid(),
        )


# What systemd sets for a Type=notify unit (mgmt.sdnotify.VARIABLES): its module only then.
_SYSTEMD = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


def _notifier() -> Notifier | None:
    """`Notifier.from_environment()`, which takes systemd's variables from the environment;
    mgmt.sdnotify imported only if one is there (not a cron run's start)."""
    if os.environ.keys().isdisjoint(_SYSTEMD):
        return None
    from mgmt.sdnotify import Notifier

    return Notifier.from_environment()


def _socket_dir(prefix: Path) -> None:
    """The prefix private (safefs.private_dir), without the status socket a killed agent may
    have left in it: what the status socket needs, in one hop to a thread before the apply."""
    private_dir(prefix)
    remove_stale(prefix / SOCKET)


def lock_prefix(prefix: Path) -> int:
    """Make the prefix (private) and hold its lock (blocking)."""
    private_dir(prefix)
    return hold_prefix(prefix)


async def _run(config: Config, given: Loaded | None, prefix: Path, made: bool = False) -> int:
    """`made`: the prefix is this run's own, just made (--tmp-prefix)."""
    source: GraphSource | None = None
    first: Loaded | None = None
    if given is None and config.file is not None:
        # On the loop, as the graph file's read below (load): a few system calls, less than
        # a hop to a thread and back (which the loop waited ~1.5 ms for, at a cron run's start).
        warn_untrusted(str(config.file))
    given_graph = given is not None
    deploys = not given_graph and (config.frontend == "empty" or config.deploy)
    # The agent's local values: the program's functions and the engine's resources share them.
    local = LocalValues(prefix)
    try:
        if given is not None:
            loaded = given
        elif deploys:
            loaded = Loaded(Graph("empty"), cluster=True)  # until a deploy runs
        elif config.frontend == "lang":
            source, first = await open_lang(config, local)
            loaded = first or Loaded(Graph("empty"))
        elif config.frontend == "puppet":
            source, first = await open_puppet(config, prefix)
            loaded = first or Loaded(Graph("empty"))
        else:
            loaded = load(config)
    except GraphFileError as err:
        for problem in err.problems:
            log.error("%s", problem)
        return refusal(err)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    # The first graph, handed to the agent (`pop`): not referenced here for the agent's life.
    held = [loaded]
    del loaded, first, given
    try:
        if needs_cluster(config, held[0]):
            from mgmt.cluster.options import from_config as cluster_options
            from mgmt.cluster.ports import PortTaken, check_free, tmp_ports

            try:  # its ports too: one another process holds is said now (mgmt/cluster/ports.py)
                tmp_ports(config)
                check_free(cluster_options(config, prefix))
            except ValidationError as err:
                log.error("%s", err)
                return ExitCode.UNAVAILABLE if isinstance(err, PortTaken) else ExitCode.USAGE
        deploy_source = await open_deploys(config, prefix) if deploys else None
        if deploys and deploy_source is None:
            return ExitCode.USAGE
        if deploy_source is not None:  # the deploy this host ran last, if any
            held[0] = await deploy_source.start() or held[0]
        from mgmt.program import program_ref

        program = None if given_graph else program_ref(config, deploy_source)
        if config.exit_after != 0:  # a run that outlives its first convergence (a daemon)
            _later_graphs_code()
        agent = Agent(config, prefix, deploy_source or source, local, program, made=made)
        if deploy_source is not None:
            deploy_source.follow_convergence(agent.converger)
            agent.follow_deploys(deploy_source)
        return await agent.run(held.pop())
    except GraphError as err:  # found when the engine prepares the graph, before it runs
        for line in await _located(config, err, held[0] if held else agent.refused):
            log.error("%s", line)
        return ExitCode.USAGE


class Agent:
    refused: Loaded | None = None  # the first graph, if the engine refused it
    # The graph file's rereads, in a thread of their own (made at the first): see _reload.
    _reader: ThreadPoolExecutor | None = None
    _first_client: FirstClient | None = None  # the status socket until its first client

    def __init__(
        self,
        config: Config,
        prefix: Path,
        source: GraphSource | None = None,
        local: LocalValues | None = None,
        program: ProgramRef | None = None,
        *,
        made: bool = False,
    ) -> None:
        # made: `prefix` is this run's own, just made (TmpPrefix: private, new)
        self.config, self._prefix_made = config, made
        self.source = source  # a front-end that produces graphs itself (the language)
        self.engine = Engine(
            hostname=config.hostname,
            prefix=prefix,
            noop=config.noop,
            sema=config.sema,
            autoedges=not config.no_autoedges,
            autogroup=not config.no_autogroup,
            local=local,
            program=program,
            # A one-shot run watches its files from its first change on (docs/engine.md).
            late_watches=config.exit_after == 0,
        )
        timeout = config.exit_after
        # Always tracked (logged once converged); exits the run only in cron mode.
        self.converger = Converger(self.engine, max(timeout, 0))
        self.heap = FrozenHeap(self.engine) if config.own_process else None
        self.exit_when_converged = timeout >= 0
        self._started = time.monotonic()
        self.stopping = asyncio.Event()
        self.reload = asyncio.Event()
        self.swapped = asyncio.Event()  # set after each graph swap (tests wait on it)
        self._digest: str | bytes = ""
        self._rejected: str | bytes = ""  # digest of the graph file last refused (told once)
        self._forced = False
        self._stop_task: asyncio.Task[None] | None = None
        self._not_converged: list[str] = []  # "kind[name] (why)", when the run ended
        self._unconverged = False  # --max-runtime ended a cron-mode run before it converged
        # A check_apply changed something (with --noop: would have), for --quiet and
        # --detailed-exitcodes (listened to only for them: one call per check_apply).
        self._changed = False
        self._changes: set[str] = set()  # the resources a check_apply changed (not noop's)
        self._converged_line: tuple[str, float] | None = None  # --quiet: held back, unsaid
        if config.quiet or config.detailed_exitcodes:
            self.engine.listeners.subscribe(CheckApplied, self._check_applied)
        self._tasks = TaskSet("agent", log)
        self._file_watcher: NamedPaths | None = None
        self.cluster: ClusterLink | None = None  # started when a graph first needs it
        self._loaded: Loaded | None = None  # the last graph file loaded (collect re-merges it)
        self._collected = asyncio.Event()  # the collected resources changed
        self._apply_lock = asyncio.Lock()
        self.metrics: Metrics | None = None
        self._deploys: HostStatus | None = None  # the deploys' status, when it runs them
        self._said_waiting = False  # "waiting for the first deploy" was logged
        self._said_converged = False  # the converged line was said (see _report_convergence)
        if config.prometheus:  # imported only then (~1.5 M instructions)
            from mgmt.metrics import Metrics

            self.metrics = Metrics(self.engine)
        self.exit = exit_request(self.engine.shared)  # kept: the engine's Shared ends at stop
        self.status = StatusModel(self.engine, config.hostname)  # mgmt status, the status page
        self.server: StatusServer | None = None  # made at the status socket's first client
        self.cluster_status: ClusterStatus | None = None  # with the cluster: hosts on the page
        self.notifier = _notifier()  # under systemd, Type=notify
        if (notifier := self.notifier) is not None:  # STATUS= follows progress (else: no cost)
            self.converger.on_progress = lambda: notifier.status_soon(self._status)
        self._problem = ""  # the front-end's (the program's, the graph file's)
        self._graph_refused = ""  # the engine refused its last graph (two own one file...)
        self._collect_refused = ""  # ... or the last one with the collected resources
        # A write's moment (the file empty or missing) waits a change or SETTLE s to be said.
        self._settling: asyncio.TimerHandle | None = None
        if source is not None:
            source.on_problem = self._program_error
            self._problem = source.problem
        self.status.set_program_error(self._problem or codestamp.said.line)

    async def run(self, loaded: Loaded) -> int:
        loop = asyncio.get_running_loop()
        io_threads(loop)
        if not (self.exit_when_converged or self.config.noop):
            # A daemon's resources work ahead of need in its idle time (engine.handle.Ahead:
            # the file kind's spares); a run that exits at convergence would only pay for it.
            self.engine.shared.ahead = Ahead()
        codestamp.said.on_upgraded = self._on_upgraded
        stop, hup = self._on_stop_signal, lambda _: self._on_hup()
        with Signals(loop, {signal.SIGINT: stop, signal.SIGTERM: stop, signal.SIGHUP: hup}):
            first = [loaded]  # popped once applied: not referenced for the agent's life
            del loaded
            code = await self._run(loop, first)
        # What is left of the exit (its tasks, its threads: an I/O thread in a call that a hung
        # file system never returns was joined without bound when not clustered). A run with
        # no thread to join (a no-op cron run's) starts none for it.
        if self.cluster is not None or threading.active_count() > 1:
            self._bound_exit(EXIT_WAIT, "the exit after the stop")
        return code

    async def _run(self, loop: asyncio.AbstractEventLoop, first: list[Loaded]) -> int:
        reason = ""
        if not self.exit_when_converged:  # a restart shows in a shared log (tester11)
            log.info("agent starting: pid %d, prefix %s", os.getpid(), self.engine.prefix)
        try:
            try:
                await self._start_http()
            except ValidationError as err:  # a bad --prometheus-listen: nothing applied
                log.error("%s", err)
                return ExitCode.USAGE
            loaded = first.pop()
            try:
                await self._apply(loaded)
            except NotAdmitted as err:  # before anything was applied
                log.error("cluster: %s", err)
                return ExitCode.USAGE
            except GraphError:
                self.refused = loaded  # for the lines that say where (agent._run)
                raise
            del loaded  # the next swap drops it (engine, front-end: the last graph only)
            if self.source is not None and not self.source.graphs and self.exit_when_converged:
                # Cron mode: nothing to converge to. A run-time error (FILE:LINE:COL, logged
                # by the front-end) is bad input, as in `mgmt check`: exit 2.
                if getattr(self.source, "first_error", None):
                    return ExitCode.USAGE
                log.error("the program produced no graph")
                return ExitCode.FAILED
            if self.config.tmp_prefix:  # once it runs: `mgmt status` finds it (docs/operations.md)
                self._say_tmp_prefix()
            await self._start_background()
            self.swapped.set()
            if self.notifier is not None:
                self._spawn(self._ready(self.notifier))
                self._spawn(self.notifier.keep_alive())
            reason = await self._wait_for_end()
            self._not_converged = [f"{v.shown} ({why})" for v, why in self.converger.unsettled()]
            if reason == "max-runtime":  # said when the stop starts, not after its grace
                self._max_runtime_reached()
        finally:
            bound = None
            if reason == "max-runtime":
                bound = loop.call_later(MAX_RUNTIME_GRACE, self._force, "max runtime's grace")
            try:
                await self._shutdown()  # a second SIGINT or SIGTERM during the drain forces it
            finally:
                if bound is not None:
                    bound.cancel()
        return self._exit_code(reason)

    # lifecycle --------------------------------------------------------------------------

    async def _start_http(self) -> None:
        """Metrics, the status page (--status) and the status socket for `mgmt status`."""
        if unused := self.config.unused_listen():  # once the run is known to be valid
            log.warning("%s", unused)
        if self.metrics is not None:
            self.metrics.start(self.status)
        if self.config.status or self.metrics is not None:  # served over TCP from the start
            from mgmt.status.server import StatusServer

            self.server = StatusServer(self.status, self.metrics.render if self.metrics else None)
        private = True
        try:  # the prefix first: a listener beyond loopback may keep its certificate there
            # (a prefix this run made is private and holds no socket: no hop to a thread, which
            # the loop waited ~1.5 ms for at a cron run's start)
            if not self._prefix_made:
                await thread_to_end(_socket_dir, self.engine.prefix)
        except (OSError, MgmtError) as err:  # mgmt status cannot reach this agent, nothing else
            log.warning("no status socket in %s: %s", self.engine.prefix, err)
            private = False
        if self.server is not None:
            from mgmt.status.server import listen

            try:
                self._listening(await listen(self.server, self.config, self.engine.prefix))
            except OSError as err:  # EADDRINUSE (listen): another process holds the port
                log.warning(
                    "--prometheus-listen: %s is in use by another process (%s): the agent runs "
                    "without %s and tries again, every %d s at most; on a shared host any "
                    "local user can take a loopback port first",
                    self.config.prometheus_listen,
                    err.strerror or err,
                    "the status page" if self.config.status else "metrics",
                    LISTEN_RETRY_MAX,
                )
                self._spawn(self._listen_later())
        if private:
            path = self.engine.prefix / SOCKET
            try:
                if self.server is not None:
                    await self.server.listen_unix(path)
                else:  # the server's code at the first client (`mgmt status`): mgmt.status.unixsock
                    self._first_client = FirstClient(path, self._serve_status)
            except OSError as err:
                log.warning("no status socket in %s: %s", self.engine.prefix, err)

    def _serve_status(self, sock: socket.socket) -> None:
        """The status socket's first client is there (in its backlog): its server made, which
        serves it from now on."""
        try:
            from mgmt.status.server import StatusServer

            self.server = StatusServer(self.status)
        except BaseException:
            sock.close()
            raise
        self.server.adopt_unix(sock)

    def _listening(self, url: str) -> None:
        if self.config.status:
            log.info("status page on %s", url)
        if self.metrics is not None:
            log.info("prometheus metrics on %smetrics", url)

    async def _listen_later(self) -> None:
        """Bind --prometheus-listen once the process holding it lets go (tester13: a user who
        bound 127.0.0.1:9233 first kept a --status agent from applying anything, exit 2)."""
        server, delay = self.server, 1.0
        assert server is not None
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_RETRY_MAX)
            try:
                from mgmt.status.server import listen

                url = await listen(server, self.config, self.engine.prefix)
            except OSError:
                continue  # still held
            except ValidationError as err:
                log.warning("%s", err)
                return
            log.info("--prometheus-listen: %s is free now", self.config.prometheus_listen)
            self._listening(url)
            return

    async def _start_background(self) -> None:
        if self.source is not None:
            self._spawn(self._follow(self.source))
        elif self.config.file is not None and not self.config.no_watch:
            from engine.namedpath import NamedPaths  # a watched graph file only

            # Through its symlinks (`current` -> `releases/42`): it is read through them.
            watcher = NamedPaths([self.config.file])
            await watcher.__aenter__()  # watching before we report ready: no edit is missed
            self._file_watcher = watcher
            self._spawn(watcher.follow(self.reload.set))
            self.reload.set()  # catch an edit made between loading and watching
        self._spawn(self._reload_loop())
        self._spawn(self._report_convergence())
        if (ahead := self.engine.shared.ahead) is not None:
            self._spawn(self._work_ahead(ahead))
        if sys.stderr is not None and sys.stderr.isatty() and self.config.log_format == "text":
            self._spawn(self._show_progress())

    async def _prefix_removed(self) -> None:
        """Return once the prefix is removed or moved: its lock and status socket went with
        it (mgmt.prefixwatch); the agent stops then (exit 1, which the unit restarts)."""
        from mgmt.prefixwatch import removed
        from mgmt.tmpprefix import AGENT_LOCK, LOCK

        prefix = self.engine.prefix
        await removed(prefix, LOCK if self.config.tmp_prefix else AGENT_LOCK)
        log.error(
            "the prefix %s was removed or moved under this agent, with its lock, its status "
            "socket and the resources' state: stopping (a restart makes them again)",
            prefix,
        )

    async def _work_ahead(self, ahead: Ahead) -> None:
        """Run what the resources queued to do ahead of need (engine.handle.Ahead) while the
        graph is converged: a divergence (a drift, a swap) pauses it until the next
        convergence; with nothing queued, it waits for a job, not for time."""
        converged = self.converger.converged
        while True:
            await ahead.queued()
            await converged.wait()
            await ahead.run(converged.is_set)

    async def _report_convergence(self) -> None:
        # The line is logged when the graph first converges, with the time that took: with a
        # converged timeout, as soon as every vertex is settled, not once the timeout (the
        # converged state's, and cron mode's exit) has run out (its time included the wait).
        converger = self.converger
        converger.on_converged = self._converged_again
        if converger.timeout > 0:
            while not converger.settled.is_set():  # still settled once this task runs: not
                await converger.settled.wait()  # a transition's moment
            self._said_converged = self._log_converged()
        again = False
        said = ""  # the last summary line _until_diverged said
        graph = self.engine.graph  # the graph whose convergence was said
        while True:
            await converger.converged.wait()
            if self.heap is not None:
                self.heap.converged()
            self.status.set_converged(True)
            if self.metrics is not None:
                self.metrics.set_converged(True)
            if self.notifier is not None:
                self.notifier.status(self._status())
            if not self._said_converged:
                self._said_converged = self._log_converged()
            elif again and self.engine.graph is not graph:  # a swapped-in graph's is said too
                said = self._convergence_summary()  # (tester11: a deploy's log ended at the
                logsetup.summary(log, True, "converged: %s", said)  # swap's lines)
            elif again and log.isEnabledFor(logging.DEBUG):  # O(graph): not for nothing
                log.debug("converged again: %s", self._convergence_summary())
            graph, again = self.engine.graph, True
            said = await self._until_diverged(said)
            self.status.set_converged(False)
            if self.metrics is not None:
                self.metrics.set_converged(False)
            if self.notifier is not None:
                self.notifier.status(self._status())

    def _converged_again(self) -> None:
        """The converger converged (again): when the status still says converged, the
        divergence before it was too short for _report_convergence to see (a swap that started
        resources already right): `converged since` is now, the new graph's (tester15)."""
        if self.status.converged_since is not None:
            self.status.set_converged(True)

    async def _until_diverged(self, said: str) -> str:
        """Wait until the graph diverges. Meanwhile a vertex that fails (a watch that ends for
        good) or recovers leaves the graph settled, so converged: a new converged line (and
        systemd's STATUS=) says so, at most one a second, for whoever reads the log's last
        summary (`tail -f`); not the line `said` last again (a timer's ticks beside a failed
        resource repeated it every few seconds: tester11). Returns the last line said."""
        converger = self.converger
        diverged = converger.next_divergence()  # (not `diverged.wait()`: see there)
        while not diverged.done():
            converger.failures.clear()
            await first_done(converger.failures.wait(), asyncio.shield(diverged))
            if diverged.done():
                return said
            summary = self._convergence_summary() if self._said_converged else said
            if summary != said:
                said = summary
                logsetup.summary(log, True, "converged: %s", summary)
            if self.notifier is not None:
                self.notifier.status(self._status())
            with contextlib.suppress(TimeoutError):  # the next such line a second later
                async with asyncio.timeout(1.0):
                    await asyncio.shield(diverged)
        return said

    def _check_applied(self, event: CheckApplied) -> None:
        """A change, or under --noop one that would be (a resource's own `noop` meta param
        in a run that applies is not: nothing would change without it either)."""
        if event.changed and (event.apply or self.config.noop):
            self._changed = True
            if event.apply and self.config.quiet:  # said at the exit: no line said it
                self._changes.add(event.vertex.shown)

    def _eventful(self) -> bool:
        """Whether the run's summary is worth saying under --quiet: something changed, failed
        or would change (noop). Always, without --quiet (O(graph) only with it)."""
        reverser = self.engine.reverser
        if not self.config.quiet or self._changed or reverser.changes or reverser.failed():
            return True
        return bool(self.converger.counts()[1] or self.engine.would_change())

    def _log_converged(self) -> bool:
        """The converged line (once: True), or that the agent waits for its first deploy
        (False: the line comes once a deploy's graph has converged). Under --quiet with
        nothing to say, the line is held for the exit (said then if something changes)."""
        waiting = self._waiting_for_deploy()
        if not (waiting and self._said_waiting):
            took = time.monotonic() - self._started
            shown, summary = self._eventful(), self._convergence_summary()
            if self.status.program_error:  # not "all 0 ... desired" alone: it failed (its
                # error was logged when it came: not repeated here)
                shown = True
                summary += "; the program has an error (logged above; `mgmt status` shows it)"
            if not shown:
                self._converged_line = (summary, took)
            logsetup.summary(log, shown, "converged: %s (%.3fs)", summary, took)
        self._said_waiting = waiting
        return not waiting

    def _waiting_for_deploy(self) -> bool:
        return self._deploys is not None and not self._deploys.running

    def _deploy_graph_applied(self) -> None:
        """After a graph is applied: the first deploy's (the waiting line said, a deploy runs)
        ends the wait, whatever it changed. A graph that makes the converger diverge is said
        at its convergence (_report_convergence); one that changed nothing (an empty program:
        nothing ran before it either) never would be: the converged line, and systemd's
        STATUS=, say it now."""
        if not (self._said_waiting and not self._waiting_for_deploy()):
            return
        if self.converger.converged.is_set() and not self._said_converged:
            self._said_converged = self._log_converged()
            if self.notifier is not None:
                self.notifier.status(self._status())

    def _program_error(self, problem: str) -> None:
        """What is wrong with the program now ("": nothing): `mgmt status`, the page and
        systemd's STATUS= say it (the engine's refusal of its last graph first)."""
        self._problem = problem
        self._show_problem()

    async def _refuse_graph(self, loaded: Loaded, err: GraphError) -> None:
        """The engine refused a front-end's graph: say why (at the statements, when it knows
        them: mcl's line:col) and which graph still runs (a deploy's, by its id)."""
        running = self._loaded.origin if self._loaded is not None else ""
        keeping = f"{running}'s graph still runs" if running else "keeping the last good graph"
        lines = await _located(self.config, err, loaded)
        for line in lines[:-1]:
            log.error("%s", line)
        log.error("%s (%s)", lines[-1], keeping)
        self._refused_graph(f"{lines[-1]} ({keeping})")

    def _refused_graph(self, problem: str) -> None:
        """The engine refused the front-end's last graph ("": it took one since)."""
        self._graph_refused = problem
        self._show_problem()

    def _on_upgraded(self, _line: str) -> None:  # mgmt upgraded under it: restart it
        self._show_problem()

    def _show_problem(self) -> None:
        problem = self._graph_refused or self._collect_refused or self._problem
        problem = problem or codestamp.said.line
        self.status.set_program_error(problem)
        if self.notifier is not None:
            self.notifier.status(self._status())

    def _say_tmp_prefix(self) -> None:
        """The temporary prefix, once, with the command that reads the agent (a run that
        exits: --verbose only)."""
        prefix = self.engine.prefix
        level = logging.INFO if self.config.exit_after < 0 else logging.DEBUG
        log.log(
            level, "temporary prefix %s (removed at exit): mgmt status --prefix %s", prefix, prefix
        )

    async def _ready(self, notifier: Notifier) -> None:
        """READY=1 once the first graph has settled (each resource in its desired state,
        failed, or behind a failure), or after READY_WAIT s: `systemctl start` returns, and the
        units ordered after the agent start, once the host is in its declared state, not as
        soon as the agent runs (before 2026-12-05: a file of the graph could still be missing
        when `mgmt setup --start` returned)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WAIT):
                await self.converger.settled.wait()
        if not self.converger.settled.is_set():
            log.info(
                "told systemd the agent is ready before its first run settled (%gs): %s",
                READY_WAIT,
                self._status(),
            )
        notifier.ready(self._status())

    def _status(self) -> str:
        """One line for systemd's STATUS= (and `systemctl status`), the program's error first
        if it has one (its first 200 characters); converging, the resources retrying named
        (before 2026-12-07 a resource retrying for ever read `0 failed`, the unit
        `activating` for a minute with nothing said why: user3)."""
        problem = self.status.program_error
        head = f"program error: {problem[:200]}; " if problem else ""
        if self.converger.converged.is_set():
            return head + "converged: " + self._convergence_summary()
        n = len(self.engine.vertices)
        waiting, failed = self.converger.counts()
        line = f"{head}converging: {n - waiting} of {resource_count(n)} settled, {failed} failed"
        if retrying := sorted(v.shown for v in self.converger.retrying()):
            line += f", {len(retrying)} retrying ({named(retrying)})"
        return line

    async def _show_progress(self) -> None:
        """On a terminal, a line every PROGRESS_EVERY seconds until the first convergence."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_EVERY):
                await self.converger.converged.wait()
                return
        while not self.converger.converged.is_set():
            log.info("%s", self._status())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY):
                    await self.converger.converged.wait()

    def follow_deploys(self, source: DeploySource) -> None:
        """The agent runs the cluster's deploys: say which runs (none yet: it waits for the
        first), from now on."""
        self._deploys = source.status
        source.on_status = self._deploy_changed
        self._deploy_changed(source.status)

    def _deploy_changed(self, status: HostStatus) -> None:
        self._deploys = status
        refused = status.refused if status.refused > status.running else 0
        self.status.set_deploy(
            {
                "running": status.running,
                "warning": status.warning,
                "refused": refused,
                "error": status.error if refused else "",
            }
        )

    def _convergence_summary(self) -> str:
        """How many resources are in the desired state, naming the failed and blocked ones;
        for an agent of deploys that runs none yet, that it waits for the first."""
        n = len(self.engine.vertices)
        if not n and self._waiting_for_deploy():
            return "waiting for the first deploy (none runs yet)"
        failed = sorted(v.shown for v in self.converger.failed())
        blocked = sorted(v.shown for v in self.converger.blocked())
        # noop (--noop, or a resource's meta): checked, not changed, so not in the desired state
        would = sorted(v.shown for v in self.engine.would_change())
        unreversed = sorted(fmt_key(key) for key in self.engine.reverser.failed())
        if not failed and not blocked and not would:
            summary = f"{'the' if n == 1 else 'all'} {resource_count(n)} in the desired state"
            return summary + (f"; reversal failed: {named(unreversed)}" if unreversed else "")
        good = n - len(failed) - len(blocked) - len(would)
        summary = f"{good} of {resource_count(n)} in the desired state"
        if would:
            summary += "; would change (noop): " + named(would)
        if failed:
            summary += "; failed: " + named(failed)
        if blocked:
            summary += "; blocked by a failure: " + named(blocked)
        if unreversed:  # left the graph, not undone: kept for the next run (engine.reverse)
            summary += "; reversal failed: " + named(unreversed)
        return summary

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    async def _wait_for_end(self) -> str:
        waiters: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(self.stopping.wait()): "signal"
        }
        if self.exit_when_converged:
            waiters[asyncio.create_task(self.converger.converged.wait())] = "converged"
        if self.config.max_runtime > 0:
            waiters[asyncio.create_task(asyncio.sleep(self.config.max_runtime))] = "max-runtime"
        if not self.exit_when_converged:  # a daemon: its prefix may be removed under it
            waiters[asyncio.create_task(self._prefix_removed())] = "prefix-gone"
        # An exit resource (engine.exit): a graceful stop, then its code.
        waiters[asyncio.create_task(self.exit.requested.wait())] = "exit"
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return waiters[done.pop()]

    def _max_runtime_reached(self) -> None:
        config = self.config
        log.info(
            "max runtime of %ss reached: stopping (what runs gets %ss to finish)",
            *(config.max_runtime, MAX_RUNTIME_GRACE),
        )
        # Not converged (in cron mode: settled for --converged-timeout; else: settled): exit
        # 1, naming what was not and why (README, "Cron mode"), whatever the other flags.
        if self._not_converged or (
            self.exit_when_converged and not self.converger.converged.is_set()
        ):
            self._unconverged = True
            timeout = self.converger.timeout
            if self._not_converged:  # as they were when the run ended (a stop unsettles all)
                log.error("did not converge: not settled: %s", named(self._not_converged))
            else:
                log.error("did not converge: settled, but for less than %ss", timeout)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping gracefully (send it again to force)", sig.name)
            logsetup.stopping()  # the last lines at exit: a bounded wait for stderr
            self.engine.gate.close()  # from now on no check_apply begins (engine/stopgate.py)
            self.stopping.set()
        else:
            self._force(f"{sig.name} again")

    def _force(self, why: str) -> None:
        """Stop now: the step of the stop under way is cancelled and what is left of the stop
        is done without grace (the run then exits 1). What still runs is said, and where it
        waits (mgmt.stuck): a stop that hung shows why. A process of its own that has not
        ended FORCED_EXIT s later exits anyway (`_bound_exit`)."""
        if self._forced:
            return
        from mgmt import stuck  # (a stop forced: not imported by every run)

        running = stuck.still_running()
        log.warning(
            "%s: stopping now, cancelling what still runs%s",
            why,
            f" (waiting: {running})" if running else "",
        )
        self._forced = True
        if self._stop_task:
            self._stop_task.cancel()
        self._bound_exit(FORCED_EXIT, "the forced stop")

    def _bound_exit(self, within: float, what: str) -> None:
        """A process of its own ends within `within` s from now, whatever its loop does
        (`stuck.exit_within`: what still runs said, this host's etcd killed, exit 1)."""
        if not self.config.own_process:
            return
        from mgmt import stuck

        def kill() -> None:  # the cluster of when it fires: one made since (a start) too
            if (cluster := self.cluster) is not None:
                cluster.kill_member()

        stuck.exit_within(within, what, asyncio.get_running_loop(), kill, ExitCode.FAILED)

    async def _step(self, stop: Callable[[bool], Coroutine[Any, Any, None]]) -> None:
        """One step of the stop, `stop(graceful)`: graceful unless forced before or during it
        (a second signal cancels it, and it is done again without grace)."""
        if not self._forced:
            self._stop_task = asyncio.create_task(stop(True))
            try:
                await self._stop_task
                return
            except asyncio.CancelledError:
                if not self._forced:
                    raise
            finally:
                self._stop_task = None
        await stop(False)

    async def _shutdown(self) -> None:
        if self.config.own_process:  # the process ends with this stop (mgmt.__main__)
            inotify.leave_to_exit()
        self.stopping.set()
        self.engine.gate.close()
        if self.notifier is not None:
            self.notifier.stopping()
        await self._tasks.close()
        if self._file_watcher is not None:
            await self._file_watcher.aclose()
        if self._settling is not None:
            self._settling.cancel()
        if self._reader is not None:  # a reread under way ends alone (the exit joins it)
            self._reader.shutdown(wait=False)
        if self.metrics is not None:
            self.metrics.stop()
        first, self._first_client = self._first_client, None
        if first is not None:
            first.close()  # before the server's: no server made from here on
        if self.server is not None:
            await self.server.close()
        if first is not None or self.server is not None:
            with contextlib.suppress(OSError):
                (self.engine.prefix / SOCKET).unlink()
        self.status.close()
        if codestamp.said.on_upgraded == self._on_upgraded:
            codestamp.said.on_upgraded = None
        if self.heap is not None:
            # A process of its own: it ends when the agent has. The collector goes off now:
            # re-enabled after the engine's stop, it collected what the stop had made (0.2 s
            # of a 10,000-file cron run's exit), only to delay the exit.
            self.heap.close(ending=True)
        self.converger.stopping()
        await self._step(lambda graceful: self.engine.stop(graceful=graceful))
        if self.source is not None:  # after the engine: a scheduled host leaves once idle
            await self.source.aclose()
        self.converger.close()
        # Each step of the cluster's stop too: a second signal during a leave cancels it.
        if (status := self.cluster_status) is not None:
            await self._step(lambda graceful: status.stop(graceful=graceful))
        if (cluster := self.cluster) is not None:  # withdraw exports, leave, stop etcd
            await self._step(lambda graceful: cluster.stop(graceful=graceful))
        if self.notifier is not None:
            self.notifier.close()

    def _exit_code(self, reason: str) -> int:
        vertices = self.engine.vertices.values()
        failed = [v for v in vertices if v.failed]
        # A stop asked for by a signal is a clean stop, failures or not (docs/operations.md,
        # "Stopping"): each failure was logged when it happened, and is not repeated here;
        # but not for a one-shot run under --detailed-exitcodes (tester15: a CI runner's stop
        # recorded success for a run with a failed resource).
        asked = reason == "signal" and not self._forced
        cut_short = 0  # a one-shot run under --detailed-exitcodes stopped with work undone
        if asked and self._stop_tells_failures():
            failed, asked = [v for v in vertices if v.failed or v.outcome is RETRYING], False
            cut_short = len(self.engine.undone())
        if failed and not asked:  # named, not said again: each said why when it failed
            names = sorted(v.shown for v in failed)
            log.error(
                "%d of %s failed: %s", len(names), resource_count(len(vertices)), named(names)
            )
        shown = self._eventful()
        if shown and self._converged_line is not None:  # --quiet held it back: said now
            logsetup.summary(log, shown, "converged: %s (%.3fs)", *self._converged_line)
        if self._changes:  # --quiet: what its resources' lines would have said
            changes = sorted(self._changes)
            count = f"{len(changes)} of {resource_count(len(vertices))}"
            logsetup.summary(log, shown, "changed: %s: %s", count, named(changes))
        if self.config.noop:
            changes = sorted(v.shown for v in vertices if v.changed_last)
            logsetup.summary(
                log,
                shown,
                "noop: %d of %s would change%s",
                len(changes),
                resource_count(len(vertices)),
                (": " + named(changes)) if changes else "",
            )
        if reason == "converged":
            logsetup.summary(log, shown, "converged for %ss, exiting", self.config.exit_after)
        elif reason == "max-runtime" and self._unconverged:
            return ExitCode.FAILED
        elif cut_short and not failed:  # (a failure says 1 below, named)
            # Not 3 ("changed, none failed"), nor 0: its caller would record success for a run
            # that did not finish (tester17).
            log.error(
                "stopped before converging: %d of %s left undone: exit 1 (--detailed-exitcodes)",
                cut_short,
                resource_count(len(vertices)),
            )
            return ExitCode.FAILED
        if self.exit.code is not None:  # an exit resource was applied: its code, whatever ended
            code = self.exit.code
            log.info("an exit resource asked to exit with code %d, exiting", code)
            return code
        if asked:
            return self._ok(failed)
        if failed or reason == "prefix-gone" or self._forced or self.engine.reverser.failed():
            return ExitCode.FAILED
        etcd_failure = self.cluster.cluster.start_failure if self.cluster is not None else ""
        if etcd_failure and self.exit_when_converged:
            # The local graph converged all the same (docs/clustering.md), but not the run.
            log.error("cluster: this host's etcd did not start: %s", etcd_failure)
            return ExitCode.FAILED
        return self._ok(failed)

    def _stop_tells_failures(self) -> bool:
        """Whether a stop asked for exits 1 when a resource failed (or retries after a
        failure) or a reversal did, as an end does: a one-shot run whose caller asked for its
        outcome (--detailed-exitcodes)."""
        return self.config.detailed_exitcodes and self.exit_when_converged

    def _ok(self, failed: list[Vertex]) -> int:
        """A run's success: 0, or with --detailed-exitcodes 3 when it changed something (with
        --noop: would have) and nothing failed."""
        changed = self._changed or self.engine.reverser.changes  # an undo is a change too
        if self.config.detailed_exitcodes and changed and not failed:
            return ExitCode.CHANGED
        return ExitCode.OK

    # graphs -----------------------------------------------------------------------------

    async def _apply(
        self, loaded: Loaded | None = None, accepted: Callable[[], None] | None = None
    ) -> None:
        """Swap in `loaded`, merged with what is collected; None: the latest graph loaded,
        read once the lock is held. A re-merge of the collected resources passes None: the
        graph it would have captured before waiting for the lock may have been replaced while
        it waited (a deploy switch, an edit), and applying it then ran the old program's
        graph, with its exports, under the new one's name. `accepted`: Engine.apply's."""
        async with self._apply_lock:
            if loaded is None:
                if self._loaded is None:
                    return
                loaded = self._loaded
            last, last_digest = self._loaded, self._digest
            self._digest, self._loaded = loaded.digest, loaded
            graph = loaded.graph
            # After a swap that replaced a few resources of a graph that did not need it, only
            # those can make the cluster needed.
            changed = None
            if last is not None and loaded.since is not None and loaded.since[0] is last.graph:
                changed = loaded.since[1]
            if self.cluster is None and needs_cluster(self.config, loaded, changed):
                await self._start_cluster()
                if self.cluster is not None and self.source is not None:
                    # The program can read the world now: apply what it then produces.
                    loaded = await self.source.attach_world(self.cluster.world) or loaded
            since = loaded.since
            if self.cluster is not None:  # publish exports, add what is collected: O(change)
                graph, since = await self.cluster.merge(loaded)
            try:  # the converger and metrics hear GraphSwapped
                await self.engine.apply(graph, since, accepted)
                loaded.accepted = True  # (a bad edit of it is then told from its items alone)
            except GraphError:  # refused before anything ran: the running graph stays
                self._digest, self._loaded = last_digest, last
                if self.cluster is not None and last is not None:
                    # ... and its exports and collects, not the refused graph's (published
                    # by the merge: they stayed in the cluster while the old graph ran)
                    await self.cluster.merge(last)
                raise
            self._refused_collected("")  # this graph holds what is collected now
            if self.config.graphviz:
                await self._write_graphviz(self.config.graphviz)

    async def _write_graphviz(self, path: Path) -> None:
        """--graphviz: the graph's dot, written as every file of the agent is (engine.safefs:
        atomic, no symlink another user controls followed, a link at the path replaced, not
        written through). Before 2026-12-05 (tester13) Path.write_text overwrote the root-only
        file a user's link at `/tmp/x/graph.dot` named. A failure is a warning. Its directory
        must exist, as for mgmt's os.WriteFile: until 2026-12-07 missing ones were made, unsaid
        (a typo in the flag made a root-owned directory tree)."""
        from engine import safefs

        dot = self.engine.graph.to_dot().encode()

        def write() -> None:
            full = os.path.abspath(path)
            with safefs.closing(safefs.open_dir(os.path.dirname(full))) as dir_fd:
                safefs.write_at(dir_fd, os.path.basename(full), dot, mode=0o644)

        try:
            await asyncio.to_thread(write)
        except (OSError, MgmtError) as err:
            log.warning("--graphviz: cannot write %s: %s", path, getattr(err, "strerror", err))

    async def _start_cluster(self) -> None:
        from mgmt.cluster.link import ClusterLink  # etcd client: only for graphs that need it
        from mgmt.cluster.options import from_config as cluster_options
        from mgmt.cluster.ports import check_free, tmp_ports

        try:
            tmp_ports(self.config)
            check_free(options := cluster_options(self.config, self.engine.prefix))
            link = ClusterLink(
                options,
                self.engine.prefix,
                self._collected.set,
            )
        except ValidationError as err:
            log.error("cluster: %s", err)
            return
        self.cluster = link
        self.engine.world = link.world
        try:
            await link.start()
        except NotAdmitted:  # nothing was applied yet: the run ends (Agent.run)
            self.cluster, self.engine.world = None, None
            await link.stop(graceful=False)
            raise
        self._spawn(self._collect_loop())
        from mgmt.status.cluster import ClusterStatus

        cluster = link.cluster
        self.cluster_status = ClusterStatus(
            self.status, cluster.client, self.config.hostname, lambda: cluster.no_quorum
        )
        link.cluster.on_start_failure = self.status.set_member_error
        self.status.set_member_error(link.cluster.start_failure)
        self.cluster_status.start()

    async def _collect_loop(self) -> None:
        """Swap in a new graph whenever the collected resources change. A graph the engine
        refuses (a collected resource and a local one manage one file) is one line, said once
        while it stays the same; any other error one line too (its traceback at debug level):
        the loop survives it, the running graph stays, the next change swaps as any."""
        what = "applying the collected resources"
        while True:
            await self._collected.wait()
            self._collected.clear()
            if self._loaded is None:
                continue
            self.swapped.clear()
            with surviving(log, what, self._refused_collected, self._collected_about):
                try:
                    await self._apply()  # the latest graph, whatever replaced it meanwhile
                except GraphError as err:
                    refused = f"{what} refused: {err} (keeping the running graph)"
                    if refused != self._collect_refused:
                        log.error("%s", refused)
                    self._refused_collected(refused)
            self.swapped.set()

    def _collected_about(self) -> str:
        """Which collected resources a failed swap of them brought in or changed."""
        if self.cluster is None:
            return ""
        changes = self.cluster.collected_changes(self.engine.graph)
        return f" (of {', '.join(changes)})" if changes else ""

    def _refused_collected(self, problem: str) -> None:
        """The last swap of the collected resources failed ("": a swap since took them)."""
        if problem != self._collect_refused:
            self._collect_refused = problem
            self._show_problem()

    def _on_hup(self) -> None:
        if self.stopping.is_set():
            # A reload's retries after the engine's stop (a clustered host's leave) applied a
            # failed reversal again, in a task spawned after the reverser's close.
            log.info("SIGHUP: stopping: nothing reloaded")
            return
        self._retry_failed()
        if self.source is None and self.config.file is None:
            log.info("SIGHUP: no graph file to reload")
            return
        log.info("SIGHUP: reading %s again", self.config.file or "the program")
        self.reload.set()

    def _retry_failed(self) -> None:
        """A reload retries what failed, even with the graph unchanged: each resource whose
        watch or init() failed for good (DEAD) starts again, each out of retries (FAILED) is
        checked once more, each waiting for a retry retries now. (A vertex the reload's swap
        replaces starts afresh anyway.)"""
        dead, failed, retrying = self.engine.retry_failed()
        now = f"; retrying {retrying} now, not at their meta delay" if retrying else ""
        if dead or failed or retrying:
            log.info(
                "SIGHUP: restarting %d dead and re-checking %d failed resources%s",
                *(dead, failed, now),
            )

    async def _reload_loop(self) -> None:
        while True:
            await self.reload.wait()
            self.reload.clear()
            what = f"reading {self.config.file or 'the program'} again"
            with surviving(log, what, self._program_error):  # later edits still swap
                if self.source is not None:
                    self.source.reload()
                else:
                    await self._reload()

    async def _follow(self, source: GraphSource) -> None:
        """Swap in every graph the front-end produces."""
        async for loaded in source:
            with surviving(log, "applying the new graph", self._refused_graph):
                await self._swap_in(loaded)

    async def _swap_in(self, loaded: Loaded) -> None:
        self.swapped.clear()
        try:
            await self._apply(loaded)
        except GraphError as err:  # e.g. two resources managing one file
            await self._refuse_graph(loaded, err)
            return
        finally:
            self.swapped.set()
        if self._graph_refused:
            self._refused_graph("")
        self._deploy_graph_applied()
        await self._program_changed()

    async def _program_changed(self) -> None:
        """After a new graph: tell the resources that read the program's files (deploy:tar,
        remote) if they changed; nothing is read while none listens."""
        ref = self.engine.program
        if ref is None or not ref.listened:
            return
        try:
            changed = await asyncio.to_thread(ref.reload)
        except MgmtError as err:  # the resources report it at their next check
            log.warning("%s", err)
            changed = True
        if changed:
            ref.notify()

    async def _reload(self) -> None:
        """Swap in the edited graph file. Reading and parsing run in a thread: the running
        graph keeps being enforced however long a big (or hostile) file takes, within the
        input limits of docs/graph-format.md; except a small file without aliases
        (`_small_file`), whose parse is linear in its few bytes (well under a millisecond)."""
        file = self.config.file
        assert file is not None
        skip = (self._digest, self._rejected)
        small = _small_file(file, min(INLINE_BYTES, self.config.max_graph_size))
        if small is not None:  # on the loop: a hop to a thread costs more (~1 ms under load)
            got = _parsed(small, file, skip, self._loaded)
        else:
            limit = self.config.max_graph_size
            # The lock: a re-merge of the collected resources (_apply) reads the last graph,
            # which the reparse's derive changes in place (engine.derive.derive).
            # Always the same thread: the file's new buffer (8 MB at 100,000 resources) is
            # then taken from that thread's malloc arena, where the last versions were freed
            # and whose pages are mapped already. Read in whichever I/O thread was free, it
            # came from another arena's fresh pages about every other time: 2,100 pages
            # faulted in and zeroed, ~3 of the agent's 7-10 ms of CPU per edit at 100,000.
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="graph-file")
            reread = functools.partial(_reread, file, limit, skip, self._loaded)
            async with self._apply_lock:
                got = await asyncio.get_running_loop().run_in_executor(self._reader, reread)
        if got.error is not None and _in_a_write(got) and not self._settled():
            log.debug("graph file %s: waiting for the write", got.error.problems[0])
            return
        if self._settling is not None:
            self._settling.cancel()
            self._settling = None
        if got.error is not None:
            self._refuse(got.error, got.digest)
            return
        if got.loaded is None:
            refused = isinstance(self._rejected, bytes) or self._rejected  # (b"": empty)
            if got.digest == self._digest and refused:  # an edit undone
                self._rejected = ""  # written again later, a bad file is reported again
                self._graph_refused = ""
                self._program_error("")
                log.info("graph file is back to the running graph: nothing to swap")
                return
            log.debug("graph file unchanged since it was last loaded or refused, nothing to swap")
            return
        loaded = got.loaded
        loaded.digest = got.digest
        self._rejected = ""  # a bad file written again later is reported again
        self._graph_refused = ""
        self._program_error("")
        for warning in loaded.warnings:
            log.warning("%s", warning)
        self.swapped.clear()
        try:  # said once the engine accepts it (a refusal says why instead)
            await self._apply(
                loaded, lambda: log.info("graph file changed: swapping in the new graph")
            )
        except GraphError as err:  # e.g. two resources managing one file: one line, once
            self._rejected = got.digest
            lines = await _located(self.config, err, loaded)
            for line in lines:
                log.error("%s", line)
            log.error("keeping the running graph")
            self._refused_graph(first_of(lines, "keeping the running graph"))
            return
        finally:
            self.swapped.set()
        await self._program_changed()

    def _settled(self) -> bool:
        """Whether the graph file has been empty or missing for SETTLE seconds (as each look
        since the first found it); the first look starts the wait, which a look ends."""
        loop = asyncio.get_running_loop()
        if self._settling is None:
            self._settling = loop.call_later(SETTLE, self.reload.set)
            return False
        return loop.time() >= self._settling.when()

    def _refuse(self, err: GraphFileError, refused: str | bytes) -> None:
        """Report a bad graph file once (its digest is remembered) and keep the running graph."""
        self._rejected = refused
        for problem in err.problems:
            log.error("%s", problem)
        log.error("keeping the running graph")
        self._program_error(first_of(err.problems, "keeping the running graph"))


async def _located(config: Config, err: GraphError, loaded: Loaded | None = None) -> list[str]:
    """The lines that say why the engine refused a graph: each problem at its line when a
    parse that looks for them finds them (yamlgraph.locate_refusal), or at the statements of a
    program's graph (`Loaded.declared`: check.duplicate_problems), else the engine's reason
    after the file's name."""
    if loaded is not None and loaded.declared is not None:
        from mgmt.check import duplicate_problems

        found = duplicate_problems(loaded.graph, loaded.declared())
        if found:
            return found
    if config.frontend == "yaml" and config.file is not None:
        found = [] if loaded is None else located(loaded, str(config.file))
        if not found:  # parsed again, looking for them
            found = await asyncio.to_thread(locate_refusal, config.file, config.max_graph_size)
        if found:
            return found
    return [f"{config.file or 'graph'}: {err}"]


# The digest of a graph file that cannot be read (deleted...), before the reason (a FIFO put in
# place of a deleted file is said, not taken for the same refusal: tester11).
UNREADABLE = "unreadable"


@dataclass
class _Reread:
    """What a re-read of the graph file found."""

    # What was read: its bytes (yamlgraph.load_file's digest), or why it could not be
    # (UNREADABLE: refused as such, then read back is undone).
    digest: str | bytes
    loaded: Loaded | None = None  # None: not parsed (unchanged), or refused
    error: GraphFileError | None = None


def _in_a_write(got: _Reread) -> bool:
    """Whether a graph file refused so may be a writer's moment: empty (truncated by an
    in-place write, `open(w)`, before its write) or missing (an editor's save: `mv f f~`, write
    `f`): its next event, or SETTLE seconds, tells (tester11: 1,000 quick edits logged `must be
    a mapping` and a vim-like save `cannot read`, each with `keeping the running graph`)."""
    return got.digest == EMPTY or (got.error is not None and transient(got.error))


def _small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes holding no alias
    (no "&": see yamlgraph's alias bounds), read on the loop (a cached file: tens of
    microseconds); None for anything else, which `_reread` reads (and reports) in a thread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit and b"&" not in data else None


def _reread(
    path: Path, max_size: int, skip: tuple[str | bytes, str | bytes], last: Loaded | None
) -> _Reread:
    """Read the graph file and parse it unless its digest is in `skip`: one hop to a thread,
    not two (each costs a wait for a core when the machine is busy: ~1 ms under load)."""
    try:
        data = read_limited(path, max_size)
    except GraphFileError as err:
        return _Reread(f"{UNREADABLE}: {err}", error=err)  # another reason is said again
    return _parsed(data, path, skip, last)


def _parsed(
    data: bytes, path: Path, skip: tuple[str | bytes, str | bytes], last: Loaded | None
) -> _Reread:
    """The graph file's `data` parsed, unless it is one of `skip` (bytes compared: memcmp)."""
    new = data
    if any(new == seen for seen in skip if isinstance(seen, bytes)):
        return _Reread(new)
    log.debug("graph file changed (%d bytes): parsing it", len(data))
    import mgmt.yamlreparse  # an edit's, not a cron run's (a package's: no `from` of a module,
    # whose missing `__path__` costs a formatted AttributeError at each edit: ~6 K instructions)

    try:
        return _Reread(new, mgmt.yamlreparse.reparse(data, str(path), last))
    except GraphFileError as err:
        return _Reread(new, error=err)
