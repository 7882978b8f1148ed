"""This host's place in the cluster: run (or not) an etcd member, volunteer, nominate.

The topology (DESIGN §6): a small raft core of etcd members run by some agents, every other
agent a client of any core member.

- No `--seeds`: start a one-member cluster (or restart this host's member from its data dir).
- `--seeds`: connect as a client and volunteer (unless `--no-server`); a data dir left by an
  earlier run (e.g. after a crash) restarts that member, which rejoins if it is still one.
- The agent whose etcd member is the raft leader reconciles membership, one change at a time:
  it adds a volunteer as a *learner* (a non-voting member: a nominee that never starts cannot
  cost the cluster its quorum), the nominee starts its etcd with `--initial-cluster-state
  existing`, and once it serves the leader promotes it; up to the ideal size. It removes a
  member whose agent is gone (its volunteer key expired with its lease) and that no longer
  answers, a member whose agent lives but whose etcd has not answered for 30 s (it cannot
  start), the member of a host that left cleanly without probing it (its summary says it
  left, and its agent is not alive), and removes members beyond the ideal size. Every agent
  checks that the leader's agent lives; if it does not, the leadership is moved (`_check_leader`).
- A clean stop withdraws this host's exports and volunteer key and, unless it is the last
  voting member, removes its member from the cluster and deletes its data. Leaving takes a
  turn (`/_mgmt/leaving`, bound to a lease): hosts stopped together leave one after the other,
  so the last voter always stays (removing every voter makes a data dir etcd can never start
  again: `panic: removed all voters`). A host that left remembers the members it left behind
  (`<prefix>/cluster-peers.json`) and, restarted without a data dir, joins them (even without
  `--seeds`) instead of starting a new cluster. A member keeps that file up to date while it
  runs: a host that crashed and was removed meanwhile (its restarted etcd says so) joins them
  too; knowing none, it keeps its data dir (the only record of them) and says so.
- Another agent alive under this host's name (its liveness key held and renewed) refuses the
  run at start, before it writes anything (HostnameTaken).
- A data dir etcd panics on at start is moved aside (`<prefix>/etcd.unusable-<time>`, kept
  for a manual recovery); the host then joins (seeds or remembered members) or, with neither,
  starts a new cluster.

The leader also withdraws the exports of a host whose agent is gone (its lease expired) once it
has been gone for `--export-grace` seconds (-1: never).

Keys (under /_mgmt/): `hosts/<host>` (every agent's liveness) and `volunteers/<host>`
{peer_urls, client_urls, serving}, both bound to the host's lease; `nominated/<host>`
{initial_cluster, peer_urls, voting}: this host should run a member; `ideal_cluster_size`:
written by the first member, change it with etcdctl at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aetcd import rpc

from engine import safefs
from engine.errors import ResourceError, WorldError
from engine.tasks import TaskSet, first_done
from engine.world import EXPORTED, ROOT, JoinInfo
from mgmt import stuck
from mgmt.cluster import HostnameTaken, NotAdmitted, datadir, identity
from mgmt.cluster.client import RECONNECT_GRACE, STOP_WAIT, EtcdClient, Member, range_end
from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
from mgmt.cluster.identity import HOSTS, IDEAL, NOMINATED, VOLUNTEERS
from mgmt.cluster.options import Options
from mgmt.cluster.pki import TLSFiles
from mgmt.cluster.world import EtcdWorld
from mgmt.deploy.status import SUMMARY

log = logging.getLogger("cluster")

_NO_SPACE = "no space left on device"
NOMINEE_GRACE = 10.0  # seconds (at least 10 election timeouts)
STALLED_GRACE = 30.0  # seconds (at least 100 election timeouts): see `_remove_stalled`
KEEP_ASIDE = 2  # unusable etcd data dirs kept (their keys only): the newest
UNDECIDED_RETRY = 1.0  # seconds between two starts of a join refused for an undecided version
COOLDOWN_MIN, COOLDOWN_MAX = 10.0, 300.0  # seconds a member that cannot start stops volunteering
PEER_URL_TAKEN = "Peer URLs already exists"  # etcd's refusal of a member add (ErrPeerURLexist)
# Held (bound to a lease) by the one host leaving the cluster at a time: hosts stopped
# together must not all remove themselves (the last voter stays).
LEAVING = ROOT + "leaving"
LEAVE_WAIT = 10.0  # seconds a stopping host waits for its turn to leave (then it stays)
# Seconds a failed leave waits, at most, for this host's etcd to say the leader removed its
# member (its line, or its exit: Cluster._removed_as_we_left waits for either, not for a fixed
# time). STOPPED_WAIT when the failure says this etcd stopped (`raft: stopped`: it is going
# down, its line and exit are coming, later on a busy machine; its own stop kills it after
# 10 s); REMOVED_WAIT for any other failure, which a removal rarely causes: a leave refused
# for another reason (no quorum, every host stopping at once) holds no host's exit long.
STOPPED_WAIT = 10.0
REMOVED_WAIT = 2.0
# Seconds a stop waits for this host's etcd to stop (its own stop SIGKILLs it after 10 s);
# then it is killed (SIGKILL) and the stop goes on.
ETCD_STOP_WAIT = 15.0
# What a request says when this host's etcd stopped serving (raft's ErrStopped, etcd's).
_STOPPED = ("raft: stopped", "server stopped")
PEERS_FILE = "cluster-peers.json"  # in the prefix: the other members a host knew last
URLS_FILE = "cluster-urls.json"  # in the prefix: the URLs its agent reaches the cluster at
# In the prefix: the TLS files its agent reaches the cluster with, when they were given to it
# (--cluster-cert-dir, --tls-*) and not minted into its own `cluster-tls/` (agent_tls).
TLS_FILE = "cluster-tls.json"
AGENT_ID_FILE = "cluster-agent-id"  # in the prefix: its agent's id, in its liveness key


def remembered_peers(prefix: Path) -> list[str]:
    """The client URLs of the members this host left behind at its last clean stop."""
    try:
        urls = json.loads((prefix / PEERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


def remember_peers(prefix: Path, urls: list[str]) -> None:
    """Write them (atomically, 0600 like everything in the prefix)."""
    safefs.write_file(str(prefix / PEERS_FILE), (json.dumps(urls) + "\n").encode(), 0o600)


def agent_urls(prefix: Path) -> list[str]:
    """The client URLs the agent at `prefix` reaches the cluster at (its own member's, its
    seeds, and the other members it knew last): the default seeds of `mgmt status
    --cluster` and `mgmt deploy` given that prefix. [] if no agent there ran a cluster."""
    try:
        urls = json.loads((prefix / URLS_FILE).read_text())
    except (OSError, ValueError):
        urls = []
    found = [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
    return list(dict.fromkeys([*found, *remembered_peers(prefix)]))


def agent_tls(prefix: Path) -> TLSFiles | None:
    """The TLS files the agent at `prefix` reaches the cluster with, when they were given to it
    (--cluster-cert-dir, --tls-*): what `mgmt status --cluster` and `mgmt deploy` given that
    prefix use when it holds no `cluster-tls/` of its own (each file then checked as a given
    one: pki.check_credentials). None if the agent recorded none, or if the prefix is not
    ours alone: another user who could write there would name their own files."""
    try:
        safefs.check_private(prefix)
        data = json.loads(safefs.read_regular(str(prefix / TLS_FILE), 1 << 16))
    except (OSError, ValueError, ResourceError):
        return None
    if not isinstance(data, dict):
        return None
    paths = [data.get(name) for name in ("ca", "cert", "key")]
    if not all(p is None or (isinstance(p, str) and p.startswith("/")) for p in paths):
        return None
    ca, cert, key = (Path(p) if p is not None else None for p in paths)
    return TLSFiles(ca, cert, key) if cert is not None and key is not None else None


def _publish_tls(prefix: Path, tls: TLSFiles) -> None:
    """Record in the prefix the TLS files given to this agent (agent_tls); none (no TLS, or
    minted into `cluster-tls/`, which the commands find anyway): the record is removed."""
    path = prefix / TLS_FILE
    if tls.cert is None or tls.key is None or tls.cert.parent == prefix / "cluster-tls":
        path.unlink(missing_ok=True)
        return
    files = {"ca": tls.ca, "cert": tls.cert, "key": tls.key}
    data = {name: str(p.absolute()) if p is not None else None for name, p in files.items()}
    safefs.write_file(str(path), (json.dumps(data) + "\n").encode(), 0o600)


def agent_id(prefix: Path) -> bytes:
    """The id of the agent at `prefix` (made at its first clustered start, then kept)."""
    path = prefix / AGENT_ID_FILE
    with contextlib.suppress(OSError):
        found = path.read_bytes().strip()
        if len(found) == 32:
            return found
    made = os.urandom(16).hex().encode()
    safefs.write_file(str(path), made + b"\n", 0o600)
    return made


def move_aside(data_dir: Path) -> tuple[Path, int]:
    """Rename an etcd data dir that cannot start; returns its new name and the bytes it keeps.

    Bounded, on the file system etcd needs to start again (tester9: a 100 MB one stayed full):
    only its keys are kept (`member/snap/db`, what a manual recovery restores), not the write-
    ahead log (64 MB preallocated), and only the KEEP_ASIDE newest such copies."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = data_dir.with_name(f"{data_dir.name}.unusable-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = data_dir.with_name(f"{data_dir.name}.unusable-{stamp}-{n}")
    data_dir.rename(aside)
    shutil.rmtree(aside / "member" / "wal", ignore_errors=True)
    older = sorted(
        (p for p in data_dir.parent.glob(f"{data_dir.name}.unusable-*") if p != aside),
        key=lambda p: p.stat(follow_symlinks=False).st_mtime,
    )
    for old in older[: max(0, len(older) - KEEP_ASIDE + 1)]:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    kept = sum(
        p.stat(follow_symlinks=False).st_size
        for p in aside.rglob("*")
        if p.is_file() and not p.is_symlink()
    )
    return aside, kept


def has_member(data_dir: Path) -> bool:
    """Whether an etcd data dir holds a member (its write-ahead log), not only what a first
    start that failed (e.g. on a full file system) left behind."""
    return any((data_dir / "member" / "wal").glob("*.wal"))


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(raw)
        if isinstance(data, dict):
            return data
    return None


class Cluster:
    """See the module doc. `start()`, then `world` serves the agent; `stop()` leaves cleanly."""

    def __init__(self, options: Options, prefix: Path) -> None:
        self.options = options
        self.host = options.hostname
        self.prefix = prefix
        self.data_dir = prefix / "etcd"
        self.tls_dir = prefix / "cluster-tls"  # this host's minted certificate (docs/security.md)
        self.client = EtcdClient(
            options.seeds or options.advertise_client_urls,
            tls=options.tls,
            user=options.user,
            password=options.password,
            call_timeout=options.call_timeout,
        )
        self.world = EtcdWorld(self.client, self.host)
        ca_dir = None if options.insecure or options.ca_dir is None else str(options.ca_dir)
        join_url = (options.seeds or options.advertise_client_urls)[0]
        self.world.join = JoinInfo(join_url, ca_dir, options.insecure)
        self.member: EtcdProcess | None = None  # this host's etcd, while it runs one
        # Why this host's etcd last failed to start, until one serves ("": it did not); told
        # to `on_start_failure` (the agent's status: its summary's row shows it).
        self._start_failure = ""
        self.on_start_failure: Callable[[str], None] = lambda why: None
        self.voting = False  # that member votes (not a learner): the client prefers it
        self.member_ready = asyncio.Event()
        self._tried = asyncio.Event()  # the first start of our etcd is over (ready or not)
        self.stopping = False
        self._serve_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("cluster", log)
        self._wake = asyncio.Event()  # the leader's reconcile trigger
        self._lease = 0
        self._learners: dict[int, float] = {}  # learner id -> when first seen
        self._gone: dict[str, float] = {}  # exporting host whose agent is gone -> since when
        self._confined_volunteers: set[str] = set()  # said once: not nominated
        # Volunteer -> the peer URLs it advertised that a member already has (said once, not
        # added again while it advertises those).
        self._taken_urls: dict[str, list[str]] = {}
        self._expiry: asyncio.TimerHandle | None = None  # the next export expiry check
        self._nominated = False  # our nomination key was seen (its deletion un-nominates)
        # Seconds a nominee may take to start its member before the leader removes it.
        self.nominee_grace = max(NOMINEE_GRACE, 10 * options.election_ms / 1000)
        # Seconds a voter whose agent lives may not serve before the leader removes it.
        self.stalled_grace = max(STALLED_GRACE, 100 * options.election_ms / 1000)
        self._stalled: dict[int, float] = {}  # such a voter's id -> since when (monotonic)
        self._recheck = asyncio.Event()  # re-read our nomination (set by its watch, and after
        # this host's member was dropped: a nomination that came meanwhile is still ours)
        self._remembered: list[str] | None = None  # what PEERS_FILE holds (None: not read)
        self._name_ok = asyncio.Event()  # no other agent runs under this host's name
        self._agent_id = b""  # this prefix's agent (AGENT_ID_FILE), read at start
        self._quorum_lost = False  # said so (`_explain`): said again when it is back
        # While it is lost: (voting members answering, voting members, those silent).
        self.no_quorum: tuple[int, int, list[str]] | None = None
        # A nominated member that failed to start: not volunteering until `_volunteer_after`
        # (time.monotonic()), for `_cooldown` s; `_cooled`: the failure said; `_said_failure`:
        # the start failure etcd's process last said (the same again is debug).
        self._cooldown = 0.0
        self._volunteer_after = 0.0
        self._cooled = ""
        self._said_failure = ""
        self._wake_volunteer: asyncio.TimerHandle | None = None
        # The raft leader whose agent is not alive: (its name, since when, said so).
        self._headless: tuple[str, float, bool] | None = None
        self.client.explain = self._explain
        # Per-host identities: a refusal is the host's role's (NotAdmitted says what to do).
        self.client.says_denied = not options.identities

    @property
    def start_failure(self) -> str:
        return self._start_failure

    @start_failure.setter
    def start_failure(self, why: str) -> None:
        if why != self._start_failure:
            self._start_failure = why
            self.on_start_failure(why)

    @property
    def serving(self) -> bool:
        """This host runs (or is starting, or restarting) an etcd member."""
        return self._serve_task is not None and not self._serve_task.done()

    @property
    def tick(self) -> float:
        """Seconds between the leader's periodic checks (it also reacts to every event)."""
        return max(1.0, 5 * self.options.election_ms / 1000)

    # lifecycle ----------------------------------------------------------------------------

    async def _publish_client(self) -> None:
        """Where and how this agent reaches the cluster, in its prefix: for `mgmt status
        --cluster --prefix` and `mgmt deploy --prefix`, without --seeds and --tls-*."""
        own = self.options.advertise_client_urls
        urls = json.dumps(list(dict.fromkeys([*own, *self.options.seeds]))) + "\n"
        try:
            await asyncio.to_thread(
                safefs.write_file, str(self.prefix / URLS_FILE), urls.encode(), 0o600
            )
        except (OSError, ResourceError) as err:
            log.warning("cannot write %s: %s", self.prefix / URLS_FILE, err)
        try:  # with which files (--cluster-cert-dir)
            await asyncio.to_thread(_publish_tls, self.prefix, self.options.tls)
        except (OSError, ResourceError) as err:
            log.warning("cannot write %s: %s", self.prefix / TLS_FILE, err)

    async def start(self, wait: float = 10.0) -> bool:
        """Start or join; True once connected (else it keeps trying in the background)."""
        if self.options.insecure:
            log.warning(
                "--insecure-cluster: etcd runs without TLS or client certificates; any local "
                "user (and, off loopback, anyone who can reach it) can write the cluster, and "
                "so make this host apply what they write"
            )
        if not self.options.no_server:  # before anything is written: Go mgmt's data dir?
            await asyncio.to_thread(datadir.claim, self.prefix, self.data_dir)
        if self.options.ca_dir is not None:
            try:
                await asyncio.to_thread(self._mint)
            except (OSError, WorldError) as err:
                log.error("cluster TLS: %s", err)  # the client cannot connect: said again there
        has_data = has_member(self.data_dir)
        own = self.options.advertise_client_urls
        try:
            self._agent_id = await asyncio.to_thread(agent_id, self.prefix)
        except (OSError, ResourceError) as err:
            log.warning("cannot keep this agent's id in %s: %s", self.prefix, err)
        if not has_data and not self.options.no_server:
            await self._join_remembered()
        await self._publish_client()
        if not self.options.seeds:
            self.client.set_endpoints(own, preferred=own[0])
            initial = "" if has_data else self._initial_self()
            self.voting = True
            self._serve(
                EtcdSpec(self.host, self.data_dir, self.options, initial, "new"), not has_data
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._tried.wait()  # ready, or it failed: no point waiting
        elif has_data and not self.options.no_server:
            log.info("restarting this host's etcd member from %s", self.data_dir)
            # Its own member too: after a stop of every host it may hold the only cluster.
            self.client.set_endpoints([*self.options.seeds, *own])
            self._serve(EtcdSpec(self.host, self.data_dir, self.options, "", "existing"), False)
        connected = await self.client.wait_connected(wait)
        if self.options.identities and not (connected and await self._admitted()):
            self._spawn(self._check_admitted_later())  # said when the cluster answers
        if connected:
            await self._check_name()  # HostnameTaken: before this run writes anything
            self._name_ok.set()
        self._spawn(self._follow_nominations())
        self._spawn(self._register(checked=connected))
        if not self.options.no_server:
            self._spawn(self._lead())
        if not connected:
            log.error(
                "no etcd member reachable yet (%s); the local graph runs, cluster "
                "features follow when one is",
                self.client.last_error or "connecting",
            )
        return connected

    async def _check_name(self) -> None:
        """HostnameTaken if another agent runs under this host's name. The liveness key holds
        the id of the agent that wrote it (`<prefix>/AGENT_ID_FILE`): ours, it is this prefix's
        agent's from an earlier run, which crashed (the prefix's lock says none runs now).
        Another's: waited for until its lease expires (an agent elsewhere that crashed, or of
        an older version) or outlives its time left (renewed: that agent is alive)."""
        key = (HOSTS + self.host).encode()
        loop = asyncio.get_running_loop()
        try:
            if await self.client.get(key) in (None, self._agent_id):
                return
            lease = await self.client.lease_of(key)
            left = await self.client.lease_left(lease) if lease else -1
            if not lease or left < 0:
                return
            log.info(
                "%s's liveness key is held by another agent (%ds left): waiting for it to "
                "expire (that agent crashed) or be renewed (it runs)",
                self.host,
                left,
            )
            deadline = loop.time() + left + 1 + self.options.call_timeout
            changed = asyncio.Event()
            unsubscribe = await self.client.subscribe(key, changed.set)
            try:
                while await self.client.lease_of(key) == lease:
                    if loop.time() >= deadline:
                        raise HostnameTaken(
                            f"host {self.host} is alive in the cluster: another agent runs "
                            "under this name"
                        )
                    changed.clear()
                    with contextlib.suppress(TimeoutError):  # not renewed: gone by then
                        async with asyncio.timeout(deadline - loop.time()):
                            await changed.wait()
            finally:
                await unsubscribe()
        except WorldError as err:
            log.debug("checking this host's name: %s", err)

    async def _admitted(self) -> bool:
        """Per-host identities: True if etcd takes this host's certificate as a user, False if
        the cluster did not answer; NotAdmitted if it refused (every admitted host may read
        /_mgmt/, so a refused read means no such user)."""
        try:
            await self.client.get(IDEAL.encode())
        except WorldError as err:
            if "permission denied" in str(err):
                raise identity.not_admitted(self.host, "etcd: permission denied") from None
            return False
        return True

    async def _check_admitted_later(self) -> None:
        """Say (once, an error: the run goes on) when a cluster out of reach at start refuses."""
        try:
            while True:
                await self.client.connected.wait()
                if await self._admitted():
                    return
                await asyncio.sleep(self.tick)  # it answered nothing: try again later
        except NotAdmitted as err:
            log.error("%s", err)

    def _mint(self) -> None:
        """This host's certificate from the cluster CA (created first, on the first host)."""
        from mgmt.cluster import pki  # cryptography: only when a cluster starts

        opts = self.options
        assert opts.ca_dir is not None
        if opts.create_ca and pki.create_ca(opts.ca_dir):
            log.info(
                "created the cluster CA in %s: joining hosts need a copy (--cluster-ca-dir)",
                opts.ca_dir,
            )
        urls = [*opts.client_urls, *opts.server_urls]
        urls += [*opts.advertise_client_urls, *opts.advertise_server_urls]
        files = pki.mint(opts.ca_dir, self.tls_dir, self.host, pki.san_names(self.host, urls))
        self.options = dataclasses.replace(opts, tls=files, peer_tls=files)
        self.client.tls = files
        log.debug("cluster TLS: %s's certificate minted from %s", self.host, opts.ca_dir)

    async def stop(self, graceful: bool = True) -> None:
        """Leave cleanly: exports and volunteer key withdrawn, member removed, etcd stopped.

        Not graceful: only stop etcd (as after a crash, the others notice and carry on).
        """
        self.stopping = True
        for timer in (self._expiry, self._wake_volunteer):
            if timer is not None:
                timer.cancel()
        await stuck.cancel_within(list(self._tasks), STOP_WAIT, "cluster", log)
        self.client.retry_for = 2.0  # a cluster that is gone must not hold up the exit
        left = False
        if graceful and await self.client.reconnected(RECONNECT_GRACE):
            with contextlib.suppress(WorldError):
                await self.world.res_export([])
            if self._lease:
                with contextlib.suppress(WorldError):
                    await self.client.lease_revoke(self._lease)
            if self.member is not None:  # serving, or still starting: the leader may promote
                left = await self._leave()  # it any moment (two voters, one gone: no quorum)
        await self.client.close()
        serving = [self._serve_task] if self._serve_task is not None else []
        # etcd's own stop: SIGTERM, SIGKILL 10 s later; a stop stuck beyond: killed now
        if not await stuck.cancel_within(serving, ETCD_STOP_WAIT, "etcd", log):
            self.kill_member()
        if left:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill_member(self) -> None:
        """SIGKILL this host's etcd now, if it runs: a forced stop that did not end exits
        without waiting for it (its data is etcd's to recover, as after a crash)."""
        if self.member is not None:
            self.member.kill()

    async def _join_remembered(self) -> None:
        """This host left a cluster at its last stop: join its members (besides the seeds)
        rather than start a new cluster without them."""
        remembered = await asyncio.to_thread(remembered_peers, self.prefix)
        urls = [u for u in remembered if u not in self.options.seeds]
        if not urls:
            return
        log.info(
            "joining the members this host knew last (%s: written as it ran or left), through "
            "%s (delete that file to start a new cluster)",
            self.prefix / PEERS_FILE,
            ", ".join(urls),
        )
        seeds = [*self.options.seeds, *urls]
        self.options = dataclasses.replace(self.options, seeds=seeds)
        self.client.set_endpoints(seeds)

    async def _leave(self) -> bool:
        """Remove our member unless it is the last voting one (which keeps the data for a
        restart); one host at a time (LEAVING)."""
        member = self.member
        if member is not None:  # its removal from here on, by us or the leader, is expected
            member.leaving = True
        try:
            async with self._leaving_turn():
                return await self._leave_now()
        except (WorldError, TimeoutError) as err:
            if member is not None and await self._removed_as_we_left(member, err):
                with contextlib.suppress(WorldError):  # (else: what `_remember` kept)
                    await self._remember_others(await self.client.members())
                log.info("this host's member left the cluster (removed by the leader)")
                return True
            log.warning(
                "this host's member stays in the cluster, its data kept for the next start "
                "(leaving it: %s)",
                str(err) or f"no turn within {LEAVE_WAIT:g}s",
            )
            return False

    @staticmethod
    async def _removed_as_we_left(member: EtcdProcess, err: Exception) -> bool:
        """Whether the leave failed because the leader removed this host's member meanwhile
        (its exports and volunteer key gone, its host left: `_reconcile`): etcd then stops,
        and the leave's requests to it fail (`raft: stopped`). etcd says it as it stops: a
        request that failed waits for its line or its exit, whichever comes first, at most
        STOPPED_WAIT or REMOVED_WAIT (see them)."""
        if isinstance(err, WorldError) and not member.removed and not member.exited.is_set():
            stopped = any(text in str(err) for text in _STOPPED)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOPPED_WAIT if stopped else REMOVED_WAIT):
                    await first_done(member.said_removed.wait(), member.exited.wait())
        return member.removed

    @contextlib.asynccontextmanager
    async def _leaving_turn(self) -> AsyncIterator[None]:
        """Hold LEAVING (bound to a lease of LEAVE_WAIT seconds, so a host that dies holding
        it cannot block the others for longer); wait for it while another host holds it."""
        client, key = self.client, LEAVING.encode()
        absent = rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL)
        changed = asyncio.Event()
        unsubscribe = await client.subscribe(key, changed.set)
        lease = 0
        try:
            async with asyncio.timeout(LEAVE_WAIT):
                while True:
                    changed.clear()
                    lease = await client.lease_grant(int(LEAVE_WAIT))  # fresh at each try
                    put = rpc.PutRequest(key=key, value=self.host.encode(), lease=lease)
                    take = rpc.RequestOp(request_put=put)
                    if (await client.txn([absent], [take], what="leave turn")).succeeded:
                        break
                    with contextlib.suppress(WorldError):
                        await client.lease_revoke(lease)
                    lease = 0
                    await changed.wait()  # its holder released it, or its lease expired
            # Held while this host leaves, however long that takes: a leave slower than the
            # lease (a loaded machine) let the next host take its turn, both saw two voters and
            # both removed themselves (no voter left: etcd's `panic: removed all voters`).
            renew = asyncio.create_task(self._keep_turn(lease), name="leave turn")
            try:
                yield
            finally:
                await stuck.cancel_within([renew], STOP_WAIT, "leave turn", log)
        finally:
            await unsubscribe()
            if lease:
                with contextlib.suppress(WorldError):  # releases the turn (else: its TTL does)
                    await client.lease_revoke(lease)

    async def _keep_turn(self, lease: int) -> None:
        """Renew the leave turn's lease until cancelled (or it is gone: its TTL passed)."""
        with contextlib.suppress(WorldError):
            async with self.client.renewal(lease) as renew:
                while True:
                    if await renew() <= 0:
                        return
                    await asyncio.sleep(LEAVE_WAIT / 3)  # a renewal period, not a poll

    async def _leave_now(self) -> bool:
        try:
            members = await self.client.members()
        except WorldError:
            return False
        own = next((m for m in members if self._is_own(m)), None)
        voters = sum(not m.is_learner for m in members)
        if own is None and has_member(self.data_dir):  # removed by the leader as we left
            await self._remember_others(members)
            log.info("this host's member left the cluster (removed by the leader)")
            return True
        if own is None or (not own.is_learner and voters == 1):  # the last voter stays
            return False
        # Remembered even if the removal fails: the leader may remove this member later.
        others = await self._remember_others(members)
        if others:  # our own member stops as it is removed: what follows goes elsewhere
            self.client.set_endpoints(others, preferred=others[0])
        try:
            await self.client.member_remove(own.id)
        except WorldError as err:
            # "not found": the removal went through, its answer got lost. Another failure may
            # be the leader's removal of this member at the same moment (etcd drops the second
            # of two conf changes, `possible unapplied conf change`, and our request times
            # out): `_leave` waits for this etcd to say it was removed, and says which.
            if "not found" not in str(err):
                raise
        with contextlib.suppress(WorldError):  # (else the leader deletes it: not a member)
            await self.client.delete((NOMINATED + self.host).encode())
        log.info("this host's member left the cluster")
        return True

    def _is_own(self, member: Member) -> bool:
        """Whether `member` is this host's (one not started yet has no name: its peer URLs)."""
        peers = set(self.options.advertise_server_urls)
        return member.name == self.host or bool(peers & set(member.peer_urls))

    async def _remember_others(self, members: list[Member]) -> list[str]:
        """Save the other voting members' client URLs (PEERS_FILE) as this host leaves, however
        its member went (its own removal, or the leader's first): restarted without --seeds,
        it joins them (`_join_remembered`). Returns them."""
        others = [
            u for m in members if not m.is_learner and not self._is_own(m) for u in m.client_urls
        ]
        with contextlib.suppress(OSError, ResourceError):
            await asyncio.to_thread(remember_peers, self.prefix, others)
        return others

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    def _initial_self(self) -> str:
        return ",".join(f"{self.host}={u}" for u in self.options.advertise_server_urls)

    # this host's etcd member --------------------------------------------------------------

    def _serve(self, spec: EtcdSpec, bootstrap: bool) -> None:
        self._serve_task = asyncio.create_task(self._serve_loop(spec, bootstrap), name="etcd")

    async def _serve_loop(self, spec: EtcdSpec, bootstrap: bool) -> None:
        """Run this host's etcd member until the host stops or drops it (`_supervise`). An
        error of our own there (a bug, not etcd's exit) is said, one line with its reason, and
        the member restarted as after etcd's exit (from its data dir, backoff 1 s to 30 s):
        before, it ended the loop silently, and the host ran no member from then on."""
        delay, said = 1.0, ""
        try:
            while True:
                try:
                    await self._supervise(spec, bootstrap)
                    return
                except Exception as err:  # not CancelledError: a stop ends it
                    why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                    level = logging.DEBUG if why == said else logging.ERROR
                    log.log(
                        level,
                        "supervising this host's etcd failed (%s); restarting it in %.0fs",
                        *(why, delay),
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
                    said = why
                if self.member is not None:
                    await self.member.stop()
                self.member_ready.clear()
                if self.stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if self._tried.is_set():  # it served once: what bootstrap does is done
                    bootstrap = False
                spec = self._next_spec(spec)
        finally:
            if self.member is not None:
                await self.member.stop()

    async def _supervise(self, spec: EtcdSpec, bootstrap: bool) -> None:
        """Start etcd, and restart it when it exits (see `_serve_loop`)."""
        delay, failures, first = 1.0, 0, spec
        reported = ""  # the last exit reported as an error (the same one again: debug)
        # A join refused as the cluster's version is not decided yet (etcdproc.UNDECIDED): started
        # again each second, not counted as a failure, for `nominee_grace` s from the first
        # refusal (then the leader removes a nominee that has not started).
        undecided_since: float | None = None
        while not self.stopping:
            proc = EtcdProcess(spec)
            proc.leader_changed = self._wake.set
            proc.said_failure = self._said_failure
            self.member = proc
            try:
                await proc.spawn()
                ready = await proc.wait_ready()
            except WorldError as err:  # the same again (a retry): debug
                log.log(
                    logging.DEBUG if str(err) == self._said_failure else logging.ERROR, "%s", err
                )
                ready, proc.start_failure, proc.last_error = False, str(err), str(err)
            if ready:
                delay, failures, reported = 1.0, 0, ""
                self.start_failure = self._said_failure = ""
                self._cooldown = 0.0
                await self._on_member_ready(bootstrap)
                bootstrap = False
                self._tried.set()
                await proc.exited.wait()
            unusable = bool(proc.start_failure and proc.panicked and has_member(self.data_dir))
            if not unusable:  # (moved aside, and started again at once: not over yet)
                self._tried.set()
            self._member_down()
            await proc.stop()
            again, undecided_since = self._join_again(proc, first, undecided_since)
            if not again:  # (not shown as this host's failure while it is started again)
                self.start_failure = proc.start_failure or self.start_failure
            self._said_failure = proc.start_failure or self._said_failure
            if self.stopping:
                return
            failures += not again
            if unusable:
                joined = await self._unusable(proc)
                if joined:
                    return
                if joined is not None:  # moved aside: a new cluster, at once
                    spec = first = EtcdSpec(
                        self.host, self.data_dir, self.options, self._initial_self(), "new"
                    )
                    bootstrap, failures = True, 0
                    continue
            if proc.removed:
                await self._client_only()
                return
            if self.options.seeds and failures >= 3:
                await self._client_only(failed=True)
                return
            reported = self._report_exit(proc, UNDECIDED_RETRY if again else delay, reported, again)
            spec = self._next_spec(first)
            await asyncio.sleep(UNDECIDED_RETRY if again else delay)
            delay = delay if again else min(delay * 2, 30.0)

    def _join_again(
        self, proc: EtcdProcess, spec: EtcdSpec, since: float | None
    ) -> tuple[bool, float | None]:
        """Whether etcd, which refused to join as the cluster's version is not decided yet
        (etcdproc.UNDECIDED), is started again without counting a failure: for `nominee_grace`
        s from the first such refusal (`since`, monotonic; returned with the answer)."""
        if not (proc.undecided and spec.state == "existing"):
            return False, since
        now = time.monotonic()
        since = now if since is None else since
        return now - since < self.nominee_grace, since

    def _next_spec(self, spec: EtcdSpec) -> EtcdSpec:
        """How etcd starts again: from its data dir if it got as far as a member there, else
        afresh as `spec` says (what its failed start left removed)."""
        if has_member(self.data_dir):
            return dataclasses.replace(spec, initial_cluster="")
        shutil.rmtree(self.data_dir / "member", ignore_errors=True)
        return spec

    def _member_down(self) -> None:
        """This host's etcd exited: not ready, and its volunteer key says it does not serve
        (the leader tells a stalled member by it: `_remove_stalled`)."""
        self.member_ready.clear()
        if not self.stopping:
            self._spawn(self._put_volunteer())

    async def _unusable(self, proc: EtcdProcess) -> bool | None:
        """etcd panicked starting from its data dir (e.g. `removed all voters`): that data can
        never start. Move it aside (kept for a manual recovery) and join the cluster (True:
        client and volunteer) or, with no seeds and no remembered members, start a new one
        (False). None: it could not be moved (retried as any failed start)."""
        try:
            aside, kept = await asyncio.to_thread(move_aside, self.data_dir)
        except OSError as err:
            log.error("cannot move etcd's unusable data dir %s aside: %s", self.data_dir, err)
            return None
        await self._join_remembered()
        log.error(
            "etcd cannot start from its data dir (%s): moved it to %s (its keys, %.1f MB, on "
            "the same file system: restore them with `etcdctl snapshot restore "
            "%s/member/snap/db --skip-hash-check` (etcd >= 3.5: etcdutl); its write-ahead log "
            "is dropped to leave etcd room; the %d newest such copies are kept); %s",
            proc.panicked,
            aside,
            kept / 1e6,
            aside,
            KEEP_ASIDE,
            "joining the cluster as a client and volunteer"
            if self.options.seeds
            else "starting a new cluster (what the old one held is in that copy)",
        )
        if self.options.seeds:
            self.start_failure = ""
            self._drop_member()
            return True
        return False

    def _report_exit(
        self, proc: EtcdProcess, delay: float, reported: str, undecided: bool = False
    ) -> str:
        """Say why etcd is restarted (an error once; the same failure again: debug). An
        `undecided` cluster version (`_join_again`): debug, as etcd will soon decide it."""
        if undecided:
            log.debug(
                "etcd member %s: the cluster's version is not decided yet (a cluster started "
                "moments ago); starting it again in %.0fs",
                *(self.host, delay),
            )
            return reported
        why = proc.last_error
        level = logging.DEBUG if why and why == reported else logging.ERROR
        if _NO_SPACE in why:
            log.log(
                level,
                "etcd cannot write its data dir %s: the file system is full (%s); the local "
                "graph keeps running, and the cluster's features resume once etcd starts "
                "(retrying in %.0fs, then less often)",
                self.data_dir,
                why,
                delay,
            )
        else:
            log.log(level, "etcd exited; restarting it in %.0fs", delay)
        return why

    def _cool_down(self) -> None:
        """This host's nominated member failed to start 3 times: it stops volunteering for a
        while (10 s, doubling to 5 min until a member serves), so the leader does not nominate
        it again at once (a port taken by another program made it churn ~1 line a second,
        with two raft changes a cycle). Said once per failure reason."""
        self._cooldown = min(max(2 * self._cooldown, COOLDOWN_MIN), COOLDOWN_MAX)
        self._volunteer_after = time.monotonic() + self._cooldown
        level = logging.DEBUG if self._cooled == self.start_failure else logging.ERROR
        self._cooled = self.start_failure
        log.log(
            level,
            "this host's etcd member cannot start (%s): it stays a client and volunteers again "
            "in %.0fs (then less often)%s",
            self.start_failure or "it exited",
            self._cooldown,
            "; free that port or give this host other --server-urls/--client-urls"
            if "address already in use" in self.start_failure
            else "",
        )
        self._wake_volunteer = asyncio.get_running_loop().call_later(
            self._cooldown, lambda: self._spawn(self._put_volunteer())
        )

    async def _client_only(self, failed: bool = False) -> None:
        """This host's member is not one any more: drop it, stay a client and volunteer (of
        the members it remembers, if it was started without seeds). Knowing none, it keeps its
        data dir: the only record of the cluster's members, for a restart with --seeds.
        `failed`: it could not start (`_cool_down` said why; kept as `start_failure`)."""
        if failed:
            self._cool_down()
        else:
            self.start_failure = ""  # not a failure: the cluster goes on without it
        await self._join_remembered()
        if self.options.seeds:
            if not failed:
                log.info("this host's etcd member is not one any more; client only")
            self._drop_member()
            return
        log.error(
            "this host's etcd member was removed from its cluster and this host knows no "
            "other member (no --seeds, no %s): restart it with --seeds URL (a member's client "
            "URL) to rejoin; its data dir %s is kept",
            self.prefix / PEERS_FILE,
            self.data_dir,
        )
        self._drop_member(keep_data=True)

    def _drop_member(self, keep_data: bool = False) -> None:
        if not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.member = None
        self.voting = False
        self._nominated = False
        self.member_ready.clear()
        self._recheck.set()
        self._spawn(self._refresh_endpoints())
        self._spawn(self._put_volunteer())

    async def _on_member_ready(self, bootstrap: bool) -> None:
        client = self.client
        if bootstrap:
            try:
                await client.put(IDEAL.encode(), str(self.options.ideal_cluster_size).encode())
                await client.put((NOMINATED + self.host).encode(), self._nomination(True))
                if self.options.identities:
                    await identity.bootstrap(client, self.host)
                    log.info(
                        "etcd authentication enabled with per-host identities; admit every "
                        "other host first: mgmt cluster admit HOST"
                    )
                elif self.options.user is not None and self.options.password is not None:
                    await client.enable_auth(self.options.user, self.options.password)
                    client.reconnect()
                    log.info("etcd authentication enabled for %s", self.options.user)
            except WorldError as err:
                log.error("could not initialise the new cluster: %s", err)
            log.info("started a new cluster (ideal size %d)", self.options.ideal_cluster_size)
        elif self.options.identities:
            await self._sync_roles()
        self.member_ready.set()
        await self._refresh_endpoints()
        await self._put_volunteer()
        self._wake.set()

    async def _sync_roles(self) -> None:
        """Per-host identities: bring confined hosts' roles up to `identity.HOST_KEYS`."""
        try:
            changed = await identity.sync_roles(self.client)
        except WorldError as err:
            log.warning("could not update the hosts' etcd roles: %s", err)
            return
        if changed:
            log.info("etcd roles of %s given this version's per-host keys", ", ".join(changed))

    def _nomination(self, voting: bool) -> bytes:
        return json.dumps(
            {
                "initial_cluster": self._initial_self(),
                "peer_urls": self.options.advertise_server_urls,
                "voting": voting,
            }
        ).encode()

    async def _refresh_endpoints(self) -> None:
        """Connect through any voting member; prefer our own when it votes."""
        try:
            members = await self.client.members()
        except WorldError:
            return
        urls = [u for m in members if not m.is_learner for u in m.client_urls]
        own = self.options.advertise_client_urls[0]
        if self.member_ready.is_set() and not self.voting:
            # etcd's membership says so even if our nomination key went (a leave that failed).
            self.voting = any(m.name == self.host and not m.is_learner for m in members)
        preferred = own if self.voting and self.member_ready.is_set() else None
        self.client.set_endpoints([*urls, *self.options.seeds], preferred)
        if self.member_ready.is_set() and any(m.name == self.host for m in members):
            others = [m for m in members if not m.is_learner and m.name != self.host]
            await self._remember([u for m in others for u in m.client_urls])

    async def _remember(self, urls: list[str]) -> None:
        """Keep PEERS_FILE up to date with the other voting members while this host runs one:
        a crashed host the others removed meanwhile rejoins them through it (its data dir
        then only says it was removed). None left: the file goes."""
        if self._remembered is None:
            self._remembered = await asyncio.to_thread(remembered_peers, self.prefix)
        if urls == self._remembered:
            return
        try:
            if urls:
                await asyncio.to_thread(remember_peers, self.prefix, urls)
            else:
                await asyncio.to_thread((self.prefix / PEERS_FILE).unlink, missing_ok=True)
        except (OSError, ResourceError) as err:
            log.warning("cannot remember the cluster's members in %s: %s", PEERS_FILE, err)
            return
        self._remembered = urls

    # volunteering -------------------------------------------------------------------------

    async def _register(self, checked: bool) -> None:
        """Hold a lease and, bound to it, this host's liveness key (every agent) and volunteer
        key (unless --no-server); renew until stopped. Not `checked` at start (the cluster was
        out of reach): its name is checked first, once it is reachable; taken, this host does
        not register (said, an error: the run goes on, its cluster features stay off)."""
        if not checked:
            await self.client.connected.wait()
            try:
                await self._check_name()
            except HostnameTaken as err:
                log.error("%s; this host stays out of the cluster", err)
                return
            self._name_ok.set()

        async def on_lease(lease: int) -> None:
            self._lease = lease
            await self.client.put((HOSTS + self.host).encode(), self._agent_id, lease=lease)
            await self._put_volunteer()

        await self.client.keep_leased(self.options.lease_ttl, on_lease)

    async def _put_volunteer(self) -> None:
        if not self._lease or self.options.no_server:
            return
        if time.monotonic() < self._volunteer_after:  # cooling down (`_cool_down`)
            with contextlib.suppress(WorldError):
                await self.client.delete((VOLUNTEERS + self.host).encode())
            return
        value = {
            "peer_urls": self.options.advertise_server_urls,
            "client_urls": self.options.advertise_client_urls,
            "serving": self.member_ready.is_set(),
        }
        with contextlib.suppress(WorldError):
            await self.client.put(
                (VOLUNTEERS + self.host).encode(), json.dumps(value).encode(), lease=self._lease
            )

    async def _follow_nominations(self) -> None:
        """React to our own nomination (start or stop a member) and to membership changes."""
        await self._name_ok.wait()  # (another agent's nomination is not ours)
        async with self._subscribe(NOMINATED, prefix=True, signal=self._recheck.set):
            while True:
                self._recheck.clear()
                try:
                    await self._on_nominations()
                except WorldError as err:
                    log.debug("nominations: %s", err)
                await self._recheck.wait()

    async def _on_nominations(self) -> None:
        nomination = _json(await self.client.get((NOMINATED + self.host).encode()))
        if nomination is not None:
            self._nominated = True
            if time.monotonic() < self._volunteer_after:
                pass  # it failed to start: not again before the cool-down (`_cool_down`)
            elif not self.serving and not self.options.no_server:
                log.info("nominated; starting an etcd member")
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.voting = bool(nomination.get("voting"))
                initial = str(nomination.get("initial_cluster", ""))
                self._serve(
                    EtcdSpec(self.host, self.data_dir, self.options, initial, "existing"), False
                )
            elif nomination.get("voting") and not self.voting:
                log.info("this host's member is now a voting member")
                self.voting = True
        elif self._nominated and self.serving and not self.stopping:
            log.info("no longer nominated; stopping this host's member")
            self._nominated = False
            task, self._serve_task = self._serve_task, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._drop_member()
            return
        await self._refresh_endpoints()

    # the leader ---------------------------------------------------------------------------

    async def _lead(self) -> None:
        """Whenever volunteers, nominations or leadership change (and every tick): reconcile."""
        async with (
            self._subscribe(VOLUNTEERS, prefix=True, signal=self._wake.set),
            self._subscribe(NOMINATED, prefix=True, signal=self._wake.set),
            self._subscribe(IDEAL, prefix=False, signal=self._wake.set),
            self._subscribe(HOSTS, prefix=True, signal=self._wake.set),
        ):
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self._check_leader()
                except WorldError as err:
                    log.debug("leader check: %s", err)
                if self.member is None or not self.member_ready.is_set() or not self.voting:
                    continue
                try:
                    await self._reconcile()
                except WorldError as err:
                    log.debug("reconcile: %s", err)

    async def _check_leader(self) -> None:
        """Whether the raft leader's agent lives (its liveness key), on every agent: the agent
        that reconciles (membership, gone hosts' exports) is the leader's. One that hangs (a
        deadlock, SIGSTOP) while its etcd goes on leading would leave the cluster without one,
        silently. Once the leader has had no live agent for `nominee_grace` seconds (an agent
        restarted from its data dir registers within it), every agent says so, once, and the
        first (by name) voting member with a live agent asks the leader's etcd to hand it the
        leadership (etcd's MoveLeader); its agent then reconciles. Each agent counts the grace
        from when it saw the key gone: one whose grace ends after the move says nothing.
        While no leader is known (an election, the move itself), what was seen is kept: one
        that said the leader hung names the next leader it finds alive."""
        status = await self.client.status()
        members = await self.client.members()
        leader = next((m for m in members if m.id == status.leader), None)
        if leader is None or not leader.name:
            return
        alive: set[str] = set()
        if leader.name != self.host:
            alive = set(await self._read_prefix(HOSTS, values=False))
        if leader.name == self.host or leader.name in alive:
            if self._headless is not None and self._headless[2]:
                hung = self._headless[0]
                if hung == leader.name:
                    log.info("the cluster's leader %s has a live agent again", hung)
                else:  # taken over (or elected anew): the hung agent may still hang
                    log.info(
                        "the cluster's leader is now %s (a live agent), not %s", leader.name, hung
                    )
            self._headless = None
            return
        now = time.monotonic()
        if self._headless is None or self._headless[0] != leader.name:
            self._headless = (leader.name, now, False)
        name, since, said = self._headless
        if now - since < self.nominee_grace:
            self._wake_later(since + self.nominee_grace - now)
            return
        voters = sorted(
            (m for m in members if not m.is_learner and m.name in alive), key=lambda m: m.name
        )
        taker = ""
        for member in voters:
            if await self.client.member_answers(member):
                taker = member.name
                break
        if not said:
            self._headless = (name, since, True)
            log.warning(
                "the cluster's leader %s has no live agent (its liveness key is gone): "
                "membership changes and the withdrawal of gone hosts' exports are stalled; %s",
                name,
                f"{taker} takes the leadership over"
                if taker
                else "no other voting member has a live agent to take it over",
            )
        own = next((m for m in members if m.name == self.host), None)
        if taker != self.host or own is None or not self.member_ready.is_set():
            return
        probe = self.client.probe(leader, timeout=2 * self.options.call_timeout)
        try:
            await probe.move_leader(own.id)
        except WorldError as err:
            log.warning("could not move the leadership from %s to this host: %s", name, err)
            self._wake_later(self.tick)
            return
        finally:
            await probe.close()
        self._headless = None  # this line says who leads now
        log.warning("moved the cluster's leadership from %s (no live agent) to this host", name)

    async def _reconcile(self) -> None:
        client = self.client
        members = await client.members()
        own = next((m for m in members if m.name == self.host), None)
        if own is None:
            return
        status = await client.status()
        if status.leader != own.id:
            return
        if await client.space_alarms():
            await self._reclaim_space(members, status.header.revision)
        vols = await self._read_prefix(VOLUNTEERS)
        await self._expire_exports(set(vols))
        if self.options.identities:
            vols = await self._core_volunteers(vols)
        noms = await self._read_prefix(NOMINATED)
        raw_ideal = await client.get(IDEAL.encode())
        try:
            ideal = max(1, int(raw_ideal or b"")) if raw_ideal else self.options.ideal_cluster_size
        except ValueError:
            ideal = self.options.ideal_cluster_size
        if await self._settle_learners(members, vols, noms):
            return
        voters = [m for m in members if not m.is_learner]
        # Not this host's own member: its agent is alive (it is this one), whatever its
        # volunteer key (not written yet, or its lease just expired under load) and its probe
        # (slow under load) say. Removing it removed the only voter: etcd's `panic: removed
        # all voters`, in a data dir that can never start again.
        unvolunteered = [m for m in voters if m.name not in ("", self.host) and m.name not in vols]
        left = await self._left_hosts() if unvolunteered else set()
        for member in unvolunteered:
            if member.name in left:  # stopped cleanly: not probed (it comes back alive)
                log.info("member %s: its host left the cluster; removing it", member.name)
                await self._remove(member, member.name)
                return
            if not await self.client.member_answers(member):
                log.warning("member %s is gone; removing it", member.name)
                await self._remove(member, member.name)
                return
        if await self._remove_stalled(voters, vols):
            return
        names = {m.name for m in members}
        for host in noms:
            if host not in names:
                await client.delete((NOMINATED + host).encode())
        if len(voters) < ideal:
            await self._grow(members, vols, noms)
        elif len(voters) > ideal:
            victim = max((m for m in voters if m.name != self.host), key=lambda m: m.name)
            log.info("%d members for an ideal %d: removing %s", len(voters), ideal, victim.name)
            await self._remove(victim, victim.name)

    async def _remove_stalled(self, voters: list[Member], vols: dict[str, dict[str, Any]]) -> bool:
        """Remove a voting member whose agent lives (it volunteers) but whose etcd has not
        served for `stalled_grace` s (its volunteer key says it does not, and it does not
        answer): its etcd cannot start (a full disk, a port taken, unusable data; its agent
        keeps retrying), and the cluster ran one failure closer to losing its quorum, for good
        (tester9). Its host, a volunteer, is added again (a learner) once it can start a
        member. True if removed. Only those are probed (a connection each)."""
        now = time.monotonic()
        stalled = {
            m.id: m
            for m in voters
            if m.name != self.host
            and not vols.get(m.name, {"serving": True}).get("serving")
            and not await self.client.member_answers(m)
        }
        self._stalled = {i: t for i, t in self._stalled.items() if i in stalled}
        for member_id, member in stalled.items():
            since = self._stalled.setdefault(member_id, now)
            if now - since < self.stalled_grace:
                self._wake_later(since + self.stalled_grace - now)
                continue
            log.warning(
                "member %s has not served for %.0fs while its agent lives (its etcd cannot "
                "start): removing it; its host is added again once it can start one",
                member.name,
                now - since,
            )
            await self._remove(member, member.name)
            del self._stalled[member_id]
            return True
        return False

    async def _core_volunteers(self, vols: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per-host identities: the volunteers that are core users (etcd's root role). A
        confined host's role may write its own volunteer key: a compromised one would get a
        learner added at the peer URLs it names, taking the one learner slot."""
        core = {}
        for host, volunteer in vols.items():
            if host == self.host or await identity.is_core(self.client, host):
                core[host] = volunteer
                self._confined_volunteers.discard(host)
            elif host not in self._confined_volunteers:
                self._confined_volunteers.add(host)
                log.warning("%s volunteers to run a member but is not a core host: ignored", host)
        return core

    async def _expire_exports(self, volunteers: set[str]) -> None:
        """Withdraw the exports of a host whose agent is gone (no liveness or volunteer key)
        once it has been gone for --export-grace seconds (-1: never)."""
        grace = self.options.export_grace
        exported = await self.client.keys_by_creation(EXPORTED.encode())
        exporters = {
            k.decode(errors="replace").removeprefix(EXPORTED).split("/")[0] for k in exported
        }
        alive = volunteers | set(await self._read_prefix(HOSTS, values=False)) | {self.host}
        now = time.monotonic()
        for host in [h for h in self._gone if h not in exporters or h in alive]:
            del self._gone[host]
        wake = None
        for host in sorted(exporters - alive):
            if host not in self._gone:
                self._gone[host] = now
                log.warning(
                    "%s's agent is gone: %s",
                    host,
                    "its exports are kept (--export-grace -1)"
                    if grace < 0
                    else f"its exports are withdrawn in {grace:g}s unless it comes back",
                )
            if grace < 0:
                continue
            left = self._gone[host] + grace - now
            if left > 0:
                wake = min(wake or left, left)
                continue
            if await self._withdraw(host):
                log.warning(
                    "withdrew the exports of %s (gone for %.0fs)", host, now - self._gone[host]
                )
            del self._gone[host]
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = (
            None if wake is None else asyncio.get_running_loop().call_later(wake, self._wake.set)
        )

    async def _withdraw(self, host: str) -> bool:
        """Delete `host`'s exports, unless it came back meanwhile (one transaction)."""
        absent = [
            rpc.Compare(key=k.encode(), target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL)
            for k in (HOSTS + host, VOLUNTEERS + host)
        ]
        prefix = f"{EXPORTED}{host}/".encode()
        delete = rpc.DeleteRangeRequest(key=prefix, range_end=range_end(prefix))
        response = await self.client.txn(absent, [rpc.RequestOp(request_delete_range=delete)])
        return bool(response.succeeded)

    async def _settle_learners(
        self,
        members: list[Member],
        vols: dict[str, dict[str, Any]],
        noms: dict[str, dict[str, Any]],
    ) -> bool:
        """Promote a started learner, drop a dead one; True while one is pending."""
        now = time.monotonic()
        grace = self.nominee_grace
        for member in (m for m in members if m.is_learner):
            host = member.name or next(
                (h for h, n in noms.items() if n.get("peer_urls") == member.peer_urls), ""
            )
            first = self._learners.setdefault(member.id, now)
            if not host or host not in vols or (not member.name and now - first > grace):
                await self._remove(member, host)
                log.warning("nominee %s did not start: removed it", host or member.id)
                return True
            if member.name and vols[host].get("serving"):
                try:
                    await self.client.member_promote(member.id)
                except WorldError as err:
                    log.debug("promote %s: %s", host, err)
                    self._wake_later(self.options.election_ms / 1000)
                    return True
                self._learners.pop(member.id, None)
                nomination = {**noms.get(host, {}), "voting": True}
                await self.client.put((NOMINATED + host).encode(), json.dumps(nomination).encode())
                log.info("%s is now a voting member", host)
            return True
        return False

    async def _grow(
        self,
        members: list[Member],
        vols: dict[str, dict[str, Any]],
        noms: dict[str, dict[str, Any]],
    ) -> None:
        """Add the first volunteer that can be added as a learner, and nominate it."""
        names = {m.name for m in members}
        voters = [m for m in members if not m.is_learner]
        candidates = sorted(h for h in vols if h not in names and h not in noms)
        self._taken_urls = {h: u for h, u in self._taken_urls.items() if h in candidates}
        if not candidates:
            return
        for member in voters:  # only add to a cluster whose every member answers
            if member.name != self.host and not await self.client.member_answers(member):
                return
        for host in candidates:
            peer_urls = [str(u) for u in vols[host].get("peer_urls", [])]
            # etcd refuses a peer URL a member has ("Peer URLs already exists"): say whose.
            # Looked up at every pass: once that member is gone, the volunteer is added.
            owner = next((m for m in members for u in m.peer_urls if u in peer_urls), None)
            if owner is None:
                try:
                    new, members = await self.client.member_add_learner(peer_urls)
                except WorldError as err:
                    if PEER_URL_TAKEN not in str(err):
                        log.warning("could not add %s: %s", host, err)
                        return
                else:
                    await self._nominate(host, new, members, peer_urls)
                    log.info(
                        "nominated %s (member %d of %d)", host, len(voters) + 1, len(names) + 1
                    )
                    return
            if self._taken_urls.get(host) == peer_urls:
                continue  # said already; the next volunteer is tried
            self._taken_urls[host] = peer_urls
            log.error(
                "cannot add %s as an etcd member: its peer URL %s is already %s (each host "
                "needs its own --server-urls or --advertise-server-urls); added once that "
                "member is gone or it volunteers other URLs",
                host,
                ", ".join(u for u in peer_urls if owner is None or u in owner.peer_urls),
                "another member's" if owner is None else f"{owner.name or owner.id}'s",
            )

    async def _nominate(
        self, host: str, new: Member, members: list[Member], peer_urls: list[str]
    ) -> None:
        """`host` was added as the learner `new`: tell it how to start its member."""
        self._learners[new.id] = time.monotonic()
        initial = ",".join(f"{m.name or host}={u}" for m in members for u in m.peer_urls)
        nomination = {"initial_cluster": initial, "peer_urls": peer_urls, "voting": False}
        await self.client.put((NOMINATED + host).encode(), json.dumps(nomination).encode())

    async def _remove(self, member: Member, host: str) -> None:
        """Remove `member` (and `host`'s nomination). Never this host's own member, nor the
        last voting one (a voter's removal re-reads the member list first): etcd applies a
        removal that leaves no voter and then panics (`removed all voters`), at once and at
        every start from that data dir."""
        if not member.is_learner:
            try:
                voters = [m for m in await self.client.members() if not m.is_learner]
            except WorldError:
                return  # the next pass decides again
            if self._is_own(member) or not any(m.id != member.id for m in voters):
                log.warning(
                    "not removing member %s: %s",
                    member.name or member.id,
                    "it is this host's" if self._is_own(member) else "it is the last voter",
                )
                return
        with contextlib.suppress(WorldError):
            await self.client.member_remove(member.id)
        self._learners.pop(member.id, None)
        if host:
            await self.client.delete((NOMINATED + host).encode())

    async def _reclaim_space(self, members: list[Member], revision: int) -> None:
        """The storage quota was reached: compact all history, defragment, clear the alarm."""
        log.warning("etcd storage quota reached: compacting and defragmenting")
        with contextlib.suppress(WorldError):  # already compacted that far
            await self.client.compact(revision)
        for member in members:
            if member.client_urls:
                probe = self.client.probe(member, timeout=30.0)
                try:
                    await probe.defragment()
                except WorldError as err:
                    log.warning("could not defragment %s: %s", member.name, err)
                finally:
                    await probe.close()
        for alarm in await self.client.space_alarms():
            await self.client.disarm(alarm)
        log.warning("etcd storage reclaimed; writes accepted again")

    async def _explain(self, err: WorldError | None) -> bool:
        """Why a lease cannot be held (the client's `explain`): a lost quorum is named, once,
        with how many voting members answer; and when a lease is held again, that it is back.
        True if said (else the client says `err`). The client is connected to a member (its
        membership is served locally, as its status: both answer without a leader)."""
        if err is None:
            self.no_quorum = None
            if self._quorum_lost:
                self._quorum_lost = False
                try:
                    up, voters = await self._reachable()
                except WorldError:
                    log.info("the cluster has its quorum again")
                else:
                    log.info(
                        "the cluster has its quorum again: %d of %d members reachable", up, voters
                    )
            return True
        try:
            answering, silent = await self.client.voters_answering()
        except WorldError:
            return False
        up, voters = len(answering), len(answering) + len(silent)
        if not voters or up > voters // 2:
            # Not a quorum's loss: the client says what it is; unless one was said and the
            # members answer again before a leader is elected (its return is said once a
            # lease is held: CI saw "cannot hold a lease: ... deadline exceeded" between).
            return self._quorum_lost
        self.no_quorum = (up, voters, sorted(m.name or str(m.id) for m in silent))
        if not self._quorum_lost:
            self._quorum_lost = True
            log.warning(
                "lost the cluster's quorum: %d of %d members reachable; waiting for %d to "
                "answer (the local graph keeps running; the cluster's features resume then)",
                *(up, voters, voters // 2 + 1),
            )
        return True

    async def _reachable(self) -> tuple[int, int]:
        """How many voting members answer now, of how many."""
        up, down = await self.client.voters_answering()
        return len(up), len(up) + len(down)

    async def _left_hosts(self) -> set[str]:
        """The hosts that left the cluster cleanly: their summary says when (written before
        they leave) and their agent is not alive (a host that comes back is alive again)."""
        alive = await self._read_prefix(HOSTS, values=False)
        summaries = await self._read_prefix(SUMMARY)
        return {host for host, doc in summaries.items() if doc.get("left") and host not in alive}

    def _wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _read_prefix(self, prefix: str, values: bool = True) -> dict[str, dict[str, Any]]:
        """The keys under `prefix` (without it) whose values are JSON objects (or any value,
        `values=False`: an empty dict each)."""
        items, _ = await self.client.get_prefix(prefix.encode())
        out = {}
        for key, value in items.items():
            data = _json(value) if values else {}
            if data is not None:
                out[key.decode(errors="replace").removeprefix(prefix)] = data
        return out

    def _subscribe(self, key: str, prefix: bool, signal: Callable[[], None]) -> _Subscription:
        return _Subscription(self.client, key, prefix, signal)


class _Subscription:
    """An etcd watch as an async context manager: `signal()` on every change while entered."""

    def __init__(
        self, client: EtcdClient, key: str, prefix: bool, signal: Callable[[], None]
    ) -> None:
        self.client = client
        self.key = key
        self.prefix = prefix
        self.signal = signal
        self._cancel: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> _Subscription:
        self._cancel = await self.client.subscribe(self.key.encode(), self.signal, self.prefix)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._cancel is not None:
            await self._cancel()
