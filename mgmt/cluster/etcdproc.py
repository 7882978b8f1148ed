"""One etcd server process, a child of the agent: argv, start, readiness, stop.

- The child gets `PR_SET_PDEATHSIG = SIGKILL`: if the agent dies, even by `kill -9`, the kernel
  kills its etcd, so no etcd is ever orphaned (Linux; elsewhere a clean stop still stops it).
- Readiness is an event: etcd's own log line saying it serves clients (it logs JSON on stderr,
  `--logger zap`), which it prints only after it has joined the raft group and published its
  member attributes. An exit before that is a WorldError carrying etcd's last error line.
- etcd's stderr is a file the agent follows (`<prefix>/etcd.log`, mgmt/cluster/etcdlog.py),
  never a pipe: a hung agent must not make etcd wait in a log write.
- What etcd writes that is not JSON (a Go `panic:`, a runtime `fatal error:`, its stack) is
  kept, its first panic line and the last `TAIL` lines only, and logged when etcd exits on its
  own with an error: the operator sees e.g. `panic: removed all voters`, which is also the
  exit's reason (unless etcd's JSON log gave one with more detail).
- `stop()` sends SIGTERM and waits (SIGKILL after a timeout).
- A start cancelled at any of its awaits (its agent stopped while its etcd starts) closes what
  it opened (the log's two descriptors, made in a thread that is waited for) and stops the etcd
  it spawned before the cancel goes on; `stop()` of a process never spawned closes its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from engine import safefs
from engine.errors import ResourceError, WorldError
from mgmt.cluster import datadir, etcdlog
from mgmt.cluster.etcdlog import EtcdLog
from mgmt.cluster.options import Options
from mgmt.cluster.pki import CORE_SAN
from resources._lib.proc import dies_with_agent

log = logging.getLogger("cluster")
T = TypeVar("T")

ETCD = "etcd"
_READY = ("serving client traffic", "ready to serve client requests")
# etcd's words for "this data dir's member was removed from the cluster" (in its message, or
# in the error field of its "server error" line when a removed member restarts from its data).
_REMOVED = (
    "the member has been permanently removed from the cluster",
    "data-dir used by this member must be removed",
    # etcd 3.4's panic when a request (a Status) reaches a member removed a moment before, as
    # it stops: ci3 2026-12-07, a leave overtaken by the leader's removal was then said as
    # "this host's member stays in the cluster", its data kept.
    "failed to find local ID in cluster members",
)
# etcd 3.4 refuses to join a cluster whose version its leader has not decided yet: a cluster
# started moments ago. The leader decides it on its first no-op entry, unless its version
# monitor was busy then (a send dropped when no one listens): then 4 s later (etcd's
# monitorVersionInterval). A host nominated at once (three agents started together, under
# CI's load, 2026-12-07) failed three starts in 3 s and cooled down 10 s: the cluster kept two
# voters. Its owner starts it again each second for a while (`Cluster._supervise`).
# The same refusal is lasting when a member runs another etcd version (the cluster's version out
# of what this etcd can join: "too high", "too low"), or when no member answered: those are
# start failures as any other (said at once, counted for the cool-down). So it is "undecided"
# only when etcd said, before it, that a member's cluster version was "not_decided".
UNDECIDED = "incompatible with current running cluster"
_NOT_DECIDED = "failed to parse cluster version of remote member"  # its "not_decided" warning
_OTHER_VERSION = "cluster version of remote member is not compatible"  # "; too high" / "too low"
TAIL = 10  # non-JSON lines of etcd's output kept to be logged when it exits with an error
_SAID: dict[str, str] = {}  # data dir -> the last panic whose output was logged
# How a Go program says why it died (the first such line is the exit's reason).
_GO_DEATH = ("panic:", "fatal error:")
# etcd's errors a healthy cluster can give while it changes, in words (what happened, what to
# do); the raw error is logged at debug level. tester9 saw the first on a whole-cluster
# restart: "discovery failed: error validating peerURLs {ClusterID:... Members:[...]}: member
# count is unequal".
IN_WORDS = {
    "member count is unequal": (
        "the cluster's members changed between this host's nomination and its member's start "
        "(another member was added or removed meanwhile): this host stays a client and "
        "volunteers again, and the leader adds it with the current members; nothing to do "
        "unless it goes on"
    ),
}


@dataclass
class EtcdSpec:
    """What one etcd member is started with."""

    name: str
    data_dir: Path
    options: Options
    # "name=peerURL,..." for a new member; "" when the data dir already holds a member.
    initial_cluster: str = ""
    # "new" (the first member of a new cluster) or "existing" (joining one).
    state: str = "new"
    extra: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        opts = self.options
        argv = [
            _etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            ",".join(opts.client_urls),
            "--advertise-client-urls",
            ",".join(opts.advertise_client_urls),
            "--listen-peer-urls",
            ",".join(opts.server_urls),
            "--initial-advertise-peer-urls",
            ",".join(opts.advertise_server_urls),
            "--heartbeat-interval",
            str(opts.heartbeat_ms),
            "--election-timeout",
            str(opts.election_ms),
            # Membership changes are made one at a time by the agents' elected leader, only when
            # every member is started and answering (mgmt/cluster/membership.py).
            "--strict-reconfig-check=false",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            opts.compaction_retention,
        ]
        if opts.quota_bytes > 0:
            argv += ["--quota-backend-bytes", str(opts.quota_bytes)]
        if self.initial_cluster:
            argv += [
                "--initial-cluster",
                self.initial_cluster,
                "--initial-cluster-state",
                self.state,
                "--initial-cluster-token",
                "mgmt",
            ]
        tls, peer = opts.tls, opts.peer_tls
        if tls.cert is not None and tls.key is not None:
            argv += ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]
        if tls.ca is not None:
            argv += ["--trusted-ca-file", str(tls.ca), "--client-cert-auth"]
        if peer.cert is not None and peer.key is not None:
            argv += ["--peer-cert-file", str(peer.cert), "--peer-key-file", str(peer.key)]
        if peer.ca is not None:
            argv += ["--peer-trusted-ca-file", str(peer.ca), "--peer-client-cert-auth"]
        if opts.identities:  # only core hosts' certificates speak raft (mgmt/cluster/identity.py)
            argv += ["--peer-cert-allowed-hostname", CORE_SAN]
        return argv + self.extra


def _etcd_binary() -> str:
    path = shutil.which(ETCD) or next(
        (p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise WorldError(
            "no etcd binary found (Debian: apt-get install etcd-server); it is needed for "
            "exported resources, collect and kv"
        )
    return path


def _no_room(directory: Path) -> str:
    """Why etcd's error is missing when `directory`'s file system is full to the last block:
    etcd could not write its log there either ("": it is not full)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return ""
    if st.f_bfree and (st.f_bavail or os.geteuid() == 0):
        return ""
    return f"no space left on device (the file system of {directory} is full: etcd's log too)"


async def _settled(task: asyncio.Future[T]) -> bool:
    """Wait until `task` is done, even if cancelled meanwhile: whether it was."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def _to_the_end(aw: Awaitable[T]) -> T:
    """Await `aw` until it is done, even if cancelled meanwhile (then CancelledError after it):
    what it cleans up is cleaned up whatever happens to its caller."""
    task = asyncio.ensure_future(aw)
    if await _settled(task):
        raise asyncio.CancelledError
    return task.result()


async def _created(etcd_log: EtcdLog) -> int:
    """`etcd_log.create()` in a thread: etcd's descriptor (OSError if it cannot). Cancelled,
    it waits for the thread (a few system calls) and closes what it opened: the thread would
    run on, and its two descriptors be left open, with no one to take them."""
    made = asyncio.ensure_future(asyncio.to_thread(etcd_log.create))
    try:
        return await asyncio.shield(made)
    except asyncio.CancelledError:
        await _settled(made)
        if made.exception() is None:  # (else it closed what it had opened)
            os.close(made.result())
        etcd_log.close()
        raise


class EtcdProcess:
    """A running etcd member (see the module doc)."""

    def __init__(self, spec: EtcdSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        self.removed = False  # etcd said this member was removed from the cluster
        self.said_removed = asyncio.Event()  # set as `removed` is
        self.leaving = False  # its host removes it (a clean leave): its exit then is no news
        self.leader_changed: Callable[[], None] = lambda: None
        self.last_error = ""
        self.panicked = ""  # etcd's first Go `panic:`/`fatal error:` line ("": none)
        self._fatal = False  # etcd logged (JSON) a panic or fatal entry: its error says why
        self.tail: deque[str] = deque(maxlen=TAIL)  # its last lines that were not JSON
        # Why etcd exited before it served clients, unless we stopped it ("": it did not).
        self.start_failure = ""
        # etcd refused to join as the cluster's version is not decided yet (UNDECIDED): its
        # owner starts it again (its failure said at debug only; the owner says it if it lasts).
        self.undecided = False
        self._not_decided = False  # etcd said a member's cluster version was "not_decided"
        # A member's cluster version this etcd cannot join, in words (`_other_version`).
        self._other_version = ""
        self._version = ""  # this etcd's version, as it says when it starts
        # The start failure its owner said already (an earlier process's): the same again is
        # logged at debug only (a port taken: it used to be said at every retry).
        self.said_failure = ""
        self._reader: asyncio.Task[None] | None = None
        self._log: EtcdLog | None = None  # its stderr (mgmt/cluster/etcdlog.py)
        self._stopping = False
        self._log_events: list[tuple[str, asyncio.Event]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    async def spawn(self) -> None:
        """Start the etcd process (WorldError if it cannot be started at all)."""
        argv = self.spec.argv()
        data_dir = self.spec.data_dir
        try:  # the prefix 0700 and ours (made so if missing), etcd's data dir too
            await asyncio.to_thread(safefs.private_dir, data_dir, root=data_dir.parent)
        except (OSError, ResourceError) as err:
            raise WorldError(f"cannot use etcd's data dir: {err}") from err
        who = await asyncio.to_thread(datadir.holder, data_dir)
        if who is not None:  # etcd would wait for its lock, saying nothing
            raise WorldError(
                f"etcd's data dir {data_dir} is in use by another process ({who} holds its "
                "lock: Go mgmt's etcd, or another etcd?): stop it, or give this agent another "
                "--prefix"
            )
        log.debug("starting etcd: %s", " ".join(argv))
        self._log = etcd_log = EtcdLog(etcdlog.path_of(data_dir))
        try:
            stderr = await _created(etcd_log)
        except OSError as err:
            raise WorldError(f"cannot create etcd's log file {etcd_log.path}: {err}") from err
        try:
            # Cancelled while it waits for the child, asyncio kills and reaps it.
            self.proc = await asyncio.create_subprocess_exec(
                *dies_with_agent(),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,  # a file, never a pipe: etcd must not wait on this agent
                start_new_session=True,  # a terminal's Ctrl-C goes to the agent, not to etcd
            )
        except BaseException as err:  # (cancelled too: the log is closed on every path)
            etcd_log.close()
            if isinstance(err, OSError):
                raise WorldError(f"cannot start etcd: {err}") from err
            raise
        finally:
            os.close(stderr)
        self._reader = asyncio.create_task(self._read(), name="etcd log")

    async def wait_ready(self) -> bool:
        """Wait until etcd serves clients (True) or has exited (False)."""
        ready = asyncio.create_task(self.ready.wait())
        exited = asyncio.create_task(self.exited.wait())
        try:
            await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
        if self.ready.is_set():
            log.info(
                "etcd member %s serving clients on %s (pid %s)",
                self.spec.name,
                ",".join(self.spec.options.advertise_client_urls),
                self.pid,
            )
            return True
        return False

    async def start(self, timeout: float = 30) -> None:
        """Spawn and wait until etcd serves clients; WorldError (and stopped) if it does not."""
        await self.spawn()
        try:
            async with asyncio.timeout(timeout):
                ready = await self.wait_ready()
        except TimeoutError:
            await _to_the_end(self.stop())
            raise WorldError(f"etcd did not become ready within {timeout:.0f}s") from None
        except BaseException:  # cancelled (its agent stops): etcd must not outlive its start
            await _to_the_end(self.stop())
            raise
        if not ready:
            await _to_the_end(self.stop())
            raise WorldError(f"etcd exited at start: {self.last_error or 'no error logged'}")

    async def _read(self) -> None:
        assert self.proc is not None and self._log is not None
        try:
            await self._log.follow(self.proc.wait(), self._line)
        except asyncio.CancelledError:
            # Torn down without stop() (e.g. its event loop is closing): never leave etcd behind.
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            raise
        except Exception:
            # Its log unreadable (an I/O error, a bug reading a line): said, and etcd is stopped
            # with it, so that `exited` is true (before, set while etcd ran on, unsaid: a
            # restart would have found its data dir still locked).
            log.exception("etcd member %s: its log could not be read: etcd stopped", self.spec.name)
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        finally:
            self._log.close()
            code = self.proc.returncode
            if code and not (self.last_error or self._stopping):
                self.last_error = _no_room(self._log.path.parent)
            # Removed: not a failure to fix (the cluster went on without this member).
            if not (self.removed or self.ready.is_set() or self._stopping):
                self.start_failure = self.last_error or "it exited with no error logged"
            self.exited.set()
            if self.tail and not self._stopping and (self.start_failure or code):
                self._log_tail(code)
            # Said even when the agent stopped it meanwhile: a leave the leader's removal
            # overtook stops etcd as etcd stops itself (the line was left out then: CI).
            if self.removed:
                log.log(
                    logging.DEBUG if self.leaving else logging.WARNING,
                    "etcd member %s was removed from its cluster (while this host was away, "
                    "or by its clean leave): etcd exited (code %s)",
                    self.spec.name,
                    code,
                )
            elif self.start_failure:  # a port in use, a bad certificate: what the user must fix
                # A change of the cluster while it started (IN_WORDS): not for the user to fix.
                level = (
                    logging.WARNING if self.start_failure in IN_WORDS.values() else logging.ERROR
                )
                if self.undecided:  # started again by its owner, which says it if it lasts
                    level = logging.DEBUG
                log.log(
                    logging.DEBUG if self.start_failure == self.said_failure else level,
                    "etcd member %s failed to start (code %s): %s; the local graph keeps "
                    "running without the cluster",
                    self.spec.name,
                    self.proc.returncode,
                    self.start_failure,
                )
            elif not self._stopping:
                log.warning(
                    "etcd member %s exited (code %s)%s",
                    self.spec.name,
                    self.proc.returncode,
                    f": {self.last_error}" if self.last_error else "",
                )

    def _log_tail(self, code: int | None) -> None:
        """Say what etcd wrote that was not JSON (bounded): its panic, the end of its stack.
        The same panic from the same data dir again (a retry): debug only. So is the panic of
        a member removed (etcd 3.4 panics "failed to find local ID in cluster members" when a
        request reaches it as it stops: a clean leave said a Go stack at ERROR about one stop
        in two under load): its removal is said in words (at `_read`'s end)."""
        key = str(self.spec.data_dir)
        again = _SAID.get(key) == self.panicked != ""
        level = logging.DEBUG if again or self.removed else logging.ERROR
        _SAID[key] = self.panicked
        lines = list(self.tail)
        if self.panicked and self.panicked not in lines:
            lines = [self.panicked, "...", *lines]
        log.log(
            level,
            "etcd member %s exited (code %s); what it wrote that was not JSON:",
            self.spec.name,
            code,
        )
        for line in lines:
            log.log(level, "etcd %s: %s", self.spec.name, line)

    def log_event(self, text: str) -> asyncio.Event:
        """An event set when etcd logs a message containing `text` (from now on)."""
        event = asyncio.Event()
        self._log_events.append((text, event))
        return event

    def _line(self, line: str) -> None:
        entry: dict[str, object] = {}
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            entry = parsed if isinstance(parsed, dict) else {}
        if not entry:  # not etcd's JSON log: a Go panic, a fatal error, a stack
            if line:
                self.tail.append(line[:500])
            if not self.panicked and line.startswith(_GO_DEATH):
                self.panicked = line[:500]
                if not self._fatal:  # zap's Panic() logged it already, with its error
                    self.last_error = self.panicked
        msg, level = str(entry.get("msg", line)), str(entry.get("level", "info"))
        for text, event in self._log_events:
            if text in msg:
                event.set()
        if not self.ready.is_set() and any(text in msg for text in _READY):
            self.ready.set()
        if "became leader" in msg or "elected leader" in msg or "lost leader" in msg:
            self.leader_changed()
        if any(text in msg or text in str(entry.get("error", "")) for text in _REMOVED):
            self.removed = True
            self.said_removed.set()
        if level in ("error", "fatal", "panic", "dpanic") and not self.panicked:
            self._fatal = level != "error"
            detail = entry.get("error", "")
            raw = f"{msg}: {detail}" if detail else msg
            log.debug("etcd: %s", raw)
            self.last_error = next((w for text, w in IN_WORDS.items() if text in raw), raw)
            if UNDECIDED in raw and not self.ready.is_set():
                self.undecided = self._not_decided and not self._other_version
                if self._other_version:
                    self.last_error = f"{self._other_version} (etcd: {raw})"
        elif level == "warn":
            log.debug("etcd: %s", msg)
            cluster = str(entry.get("remote-member-cluster-version", ""))
            self._not_decided |= _NOT_DECIDED in msg and cluster == "not_decided"
            if _OTHER_VERSION in msg and not self._other_version:
                self._other_version = self._other_versions(cluster, "too high" in msg)
        elif "etcd-version" in entry and not self._version:
            self._version = str(entry["etcd-version"])

    def _other_versions(self, cluster: str, newer: bool) -> str:
        """A member's cluster version that this etcd cannot join (etcd's "incompatible with
        current running cluster" after it), in words: a lasting refusal."""
        mine = f"this host's etcd ({self._version})" if self._version else "this host's etcd"
        return (
            f"the cluster's version is {cluster}, {'newer' if newer else 'older'} than {mine} "
            "can join: give every host the same etcd version"
        )

    def kill(self) -> None:
        """SIGKILL etcd now if it runs (not reaped: its owner exits)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM, wait (SIGKILL after `timeout`), and reap: never leaves a process behind."""
        self._stopping = True
        proc = self.proc
        if proc is None:  # never spawned (its start failed, or was cancelled): no reader
            if self._log is not None:  # closes the log
                self._log.close()
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                log.warning("etcd did not stop within %ss: killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
