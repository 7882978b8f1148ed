"""What a host runs: the cluster's newest deploy, verified, as a graph source for the agent.

`DeploySource` is a front-end like the language's (`agent.GraphSource`): the agent applies
every graph it yields through its usual swap, so a new deploy keeps the resources that did not
change running. Once the cluster is up (`attach_world`) it:

1. watches `/_mgmt/deploy/`; on every change (and once after each reconnection: a host that
   was down or cut off catches up) it reads the newest deploy;
2. prepares it: the blob's hash must match the record, the signature must verify against
   `--trusted-keys` (an unsigned deploy only with `--allow-unsigned-deploys`), the files are
   extracted to `<prefix>/deploy/<id>/` and the program is checked and started. Anything
   refused is logged once and reported in its status; the host keeps running what it had;
3. switches to it: at once (`--deploy-switch now`, the default), or once every live host has
   it ready (`together`: each host says so in its status);
4. keeps its current deploy in `<prefix>/deploy/current.*`: restarted, it runs it again
   (verified again) whether or not it reaches the cluster.

Its bookkeeping after a switch (this host's status in the cluster, the kept copy, written
with fsync) waits until the engine has applied the new graph and it settled, at most `HOLD`:
each status write is a write of every etcd member's log, and on the cluster's disks and
cores they competed with the program's own first changes (the deploy's latency). The status
then says the deploy runs, converged, in one write.

A running deploy's program that fails (a function's error: it checked, but `os.readfile` of a
missing file cannot run) is this source's `problem` (agent.GraphSource): the agent's status
(`mgmt status`, the host's summary in the cluster) says it has failed, and what still runs
(the graph of an older deploy, or the last good one of this deploy).

A deploy older than the one running is never switched to (an old, validly signed deploy
replayed into etcd cannot roll a host back): `mgmt deploy --rollback N` makes a new deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import WorldError
from engine.events import GraphSwapped
from engine.namedpath import NamedPaths
from engine.tasks import TaskSet
from mgmt.deploy import DeployError
from mgmt.deploy import sign as signing
from mgmt.deploy.bundle import Bundle
from mgmt.deploy.policy import Policy, signed_for
from mgmt.deploy.status import (
    HOSTS,
    STATUS,
    HostStatus,
    host_statuses,
    status_key,
)
from mgmt.deploy.store import (
    BLOBS,
    NEWEST,
    PREFIX,
    Record,
    blob,
    head,
    id_key,
    push,
    record,
    record_maker,
)
from mgmt.yamlgraph import GraphFileError, Loaded, parse

if TYPE_CHECKING:
    from engine.world import World
    from mgmt.cluster.client import EtcdClient
    from mgmt.config import Config
    from mgmt.converger import Converger
    from mgmt.deploy.server import DeployServer
    from mgmt.lang.source import LangSource

log = logging.getLogger("deploy")

SETTLE_WAIT = 2.0  # seconds attach_world waits for the first look at the cluster's deploys
HOLD = 1.0  # seconds a switch's bookkeeping waits at most for its graph to be applied, settled
KEYS_SETTLE = 0.1  # seconds after the last change of the trusted keys file before it is read


RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds before a transient refusal's retries (doubling)

# The errors of writing a deploy's files that say nothing about the deploy: the host's disk,
# its quota, its limits. A deploy refused for one is tried again (`DeploySource._retry`).
TRANSIENT = {
    errno.ENOSPC: "the file system is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EIO: "an I/O error",
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "too many open files (this process)",
    errno.ENFILE: "too many open files (the system)",
}


class Unrunnable(DeployError):
    """A deploy this host would refuse (`policy.signed_for`), made here: not stored."""


class Untrusted(DeployError):
    """A deploy whose signature this host's trusted keys do not verify (`policy.signed_for`):
    a change of the keys file may change that."""


class Transient(DeployError):
    """A deploy that could not be prepared for a reason of this host's (`TRANSIENT`), not the
    deploy's: tried again with a backoff."""


def os_reason(err: OSError) -> str:
    """An OSError as the other messages say it: its cause in words (`TRANSIENT`), else its
    strerror, and the file it names."""
    reason = TRANSIENT.get(err.errno or 0) or err.strerror or str(err)
    return f"{reason} ({err.filename})" if err.filename else reason


@dataclass
class Prepared:
    record: Record
    data: bytes  # the blob
    loaded: Loaded | None  # its first graph (None: a program that has not produced one yet)
    lang: LangSource | None = None  # a running program
    unverified: str = ""  # why it runs unverified (`verify`), "" if it was verified


def verify(rec: Record, data: bytes, policy: Policy) -> tuple[Bundle, str]:
    """The bundle of `rec` if its blob and signature are good for this host, and why it runs
    unverified (`--allow-unsigned-deploys`: "unsigned" or "no --trusted-keys"; "" when it was
    verified); else DeployError (blocking: reads the trusted keys)."""
    if hashlib.sha256(data).hexdigest() != rec.hash:
        raise DeployError(f"its blob does not match its hash {rec.hash[:12]}")
    try:
        unverified = signed_for(rec, policy)
    except DeployError as err:
        raise Untrusted(str(err)) from None
    if unverified:
        log.warning(
            "deploy %d is NOT VERIFIED (%s): running it because of --allow-unsigned-deploys "
            "(development only: whoever can write the cluster can make this host run anything)",
            rec.id,
            unverified,
        )
    bundle = Bundle.decode(data)
    if (bundle.frontend, bundle.entry) != (rec.frontend, rec.entry):
        raise DeployError("its record and its bundle disagree on the program")
    return bundle, unverified


class DeploySource:
    """See the module doc."""

    def __init__(
        self,
        hostname: str,
        prefix: Path,
        policy: Policy,
        seed: Bundle | None = None,
        sign_key: Path | None = None,
    ) -> None:
        self.hostname = hostname
        self.prefix = prefix
        self.dir = prefix / "deploy"
        self.policy = policy
        self.graphs = 1  # the empty graph it starts with counts
        self.problem = ""  # the running deploy's program's problem (agent.GraphSource)
        self.on_problem: Callable[[str], None] | None = None
        self._graph_of = 0  # the deploy whose graph the agent runs (0: none)
        self.running: Prepared | None = None
        self.status = HostStatus(hostname)
        # Called with `status` after each change of it (the agent: `mgmt status`, the log).
        self.on_status: Callable[[HostStatus], None] | None = None
        self.checked = asyncio.Event()  # set after each look at the cluster (tests wait on it)
        self._seed = seed  # `run yaml|lang --deploy`: the first deploy if the cluster has none
        self._sign_key = sign_key
        self._world: World | None = None
        self._client: EtcdClient | None = None
        self._ready: Prepared | None = None  # verified, waiting to switch (together)
        self._latest: Loaded | None = None
        self._new = asyncio.Event()
        self._kick = asyncio.Event()
        self._publish = asyncio.Event()
        self._keeping = asyncio.Event()  # the running deploy is to be kept (`_keeper`)
        self._writing: asyncio.Future[None] | None = None  # a keep's thread, not cancelled
        self._converger: Converger | None = None
        # Set once the engine applied the graph of the last switch (None: no switch waits).
        self._applied: asyncio.Event | None = None
        self._tasks = TaskSet("deploy", log)
        self._forward: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], Awaitable[None]]] = []
        self._said = ""  # the last waiting/refusal line logged (each is said once)
        self._skip = 0  # the deploy last refused: not tried again until SIGHUP or a newer one
        self._retry_in = RETRY_FIRST  # the next retry's delay after a transient refusal
        self._retrying: asyncio.Task[None] | None = None  # a transient refusal's retry
        self._server: DeployServer | None = None  # `mgmt deploy`'s thin path (server.py)
        # The deploys' keys as the watch's events carried them since the last look: a push's
        # transaction (newest, record, blob) needs no read (two round trips) to be run.
        self._noted: dict[bytes, bytes] = {}

    # the agent's side -----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Loaded]:
        while True:
            await self._new.wait()
            latest = self._take()
            if latest is not None:
                yield latest

    def _take(self) -> Loaded | None:
        latest, self._latest = self._latest, None
        self._new.clear()
        return latest

    def _emit(self, loaded: Loaded) -> None:
        self.graphs += 1
        loaded.cluster = True
        if self._graph_of:
            loaded.origin = f"deploy {self._graph_of}"
        self._latest = loaded
        self._new.set()

    def reload(self) -> None:
        """SIGHUP: look at the cluster's deploys again."""
        log.info("SIGHUP: reading the cluster's newest deploy again")
        self._skip = 0  # a refused deploy is tried again (its key may be trusted now)
        self._kick.set()

    async def _watch_keys(self, path: Path) -> None:
        """A change of the trusted keys file (a key added, its mode fixed, a symlink on its
        way re-pointed) tries the deploy last refused again, as SIGHUP does: it may be
        trusted now."""

        def changed() -> None:
            if self._skip:
                log.info("%s changed: verifying deploy %d again", path, self._skip)
                self._skip = 0
                self._kick.set()

        async with NamedPaths([path], settle=KEYS_SETTLE) as watcher:
            await watcher.follow(changed)

    async def start(self) -> Loaded | None:
        """The graph of the deploy kept from the last run (verified again), if there is one:
        the agent's first graph, run whether or not the cluster is reached."""
        await self._restore()
        if self.running is None or self.running.lang is None:
            self._tasks.spawn(asyncio.to_thread(_load_language), "deploy warm-up")
        return self._take()

    async def attach_world(self, world: World) -> Loaded | None:
        """The cluster is up: follow its deploys."""
        self._world = world
        client: EtcdClient = world.client  # type: ignore[attr-defined]
        self._client = client
        lang = self.running.lang if self.running is not None else None
        if lang is not None and lang.needs_cluster:  # the kept deploy reads the world
            loaded = await lang.attach_world(world)
            if loaded is not None:
                self._emit(loaded)
        self._tasks.spawn(self._follow(), "deploy follow")
        if self.policy.trusted_keys is not None:
            self._tasks.spawn(self._watch_keys(self.policy.trusted_keys), "deploy trusted keys")
        self._tasks.spawn(self._publisher(), "deploy status")
        self._tasks.spawn(self._keeper(), "deploy keep")
        self._unsubscribe.append(
            await client.subscribe(PREFIX.encode(), self._kick.set, True, events=self._note)
        )
        for key in [STATUS, HOSTS] if self.policy.together else []:
            self._unsubscribe.append(await client.subscribe(key.encode(), self._kick.set, True))
        self._kick.set()
        self._publish.set()  # this host runs deploys (`--deploy-switch together` counts it)
        await self._listen(client)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_WAIT):
                self.checked.clear()
                await self.checked.wait()
        return self._take()

    def follow_convergence(self, converger: Converger) -> None:
        """Report the graph's convergence in this host's status."""
        self._converger = converger
        self._unsubscribe.append(
            _async(converger.engine.listeners.subscribe(GraphSwapped, self._swapped))
        )

        async def follow() -> None:
            while True:
                await converger.converged.wait()
                self._set_status(converged=True)
                await converger.diverged.wait()
                self._set_status(converged=False)

        self._tasks.spawn(follow(), "deploy convergence")

    async def _listen(self, client: EtcdClient) -> None:
        """`mgmt deploy` pushes through this agent (`<prefix>/deploy.sock`) from now on."""
        from mgmt.deploy.server import DeployServer

        server = DeployServer(self.prefix, client, self.policy, self.hostname)
        try:
            await server.start()
        except OSError as err:  # `mgmt deploy` pushes itself, as without an agent
            log.warning("no deploy socket in %s: %s", self.prefix, err)
            return
        self._server = server

    async def aclose(self) -> None:
        if self._server is not None:
            await self._server.aclose()
            self._server = None
        await self._tasks.close()
        for unsubscribe in self._unsubscribe:
            await unsubscribe()
        self._unsubscribe = []
        if self._writing is not None:  # its thread runs on: the files must be whole
            await asyncio.gather(self._writing, return_exceptions=True)
        if self._keeping.is_set():  # a switch not kept yet: before the process ends
            await self._keep_running()
        await self._stop_forward()
        for prepared in (self._ready, self.running):
            if prepared is not None and prepared.lang is not None:
                await prepared.lang.aclose()

    # following the cluster ------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self._check()
            except WorldError as err:  # the watch signals again once a member answers
                log.debug("deploys: %s", err)
            except DeployError as err:
                self._say(logging.ERROR, str(err))
            except Exception:  # the loop must survive: later deploys still run
                log.exception("following the deploys failed; keeping the running deploy")
            finally:
                self.checked.set()

    def _note(self, events: Sequence[Any] | None) -> None:
        """The watch's changes under /_mgmt/deploy/ (None: some may have been missed)."""
        if events is None:
            self._noted.clear()
            return
        for event in events:
            key = bytes(event.kv.key)
            if event.type == 0:  # PUT
                self._noted[key] = bytes(event.kv.value)
            else:
                self._noted.pop(key, None)

    async def _check(self) -> None:
        assert self._client is not None
        client = self._client
        seen = asyncio.get_running_loop().time()
        noted, self._noted = self._noted, {}
        pushed = _pushed(noted)
        if pushed is not None:  # the newest deploy came whole in the watch's events
            newest, kept, data = pushed[0].id, [pushed[0]], pushed[1]
        else:
            (newest, kept), data = await head(client, limit=1), None
        if newest == 0:
            if self._seed is not None:
                await self._push_seed()
            return
        self._seed = None  # the cluster has deploys: they win
        running = self.running.record.id if self.running else 0
        if newest < running:
            self._say(
                logging.WARNING,
                f"the cluster's newest deploy {newest} is older than the one running "
                f"({running}): keeping {running}",
            )
            return
        if newest in (running, self._skip):
            return
        if self._ready is None or self._ready.record.id != newest:
            rec = kept[-1] if kept and kept[-1].id == newest else await record(client, newest)
            if data is None and rec is not None:
                data = await blob(client, rec.hash)
            if rec is None or data is None:
                return  # compacted meanwhile: the watch tells us about the newer one
            if rec.id != newest:  # signed as that id: running it would roll this host back
                self._refuse(newest, f"its record is deploy {rec.id}'s, replayed under a new id")
                return
            try:
                prepared = await self._prepare(rec, data)
            except Transient as err:
                self._retry(newest, str(err))
                return
            except DeployError as err:
                self._refuse(newest, str(err), isinstance(err, Untrusted))
                return
            self._retry_in = RETRY_FIRST
            await self._drop_ready()
            self._ready = prepared
            # Others wait for it only when switching together; else the switch says it.
            self._set_status(publish=self.policy.together, ready=newest)
        if self.policy.together:
            if await self._all_ready(newest):
                await self._switch()
            return
        await self._switch(seen)

    async def _all_ready(self, deploy_id: int) -> bool:
        assert self._client is not None
        waiting = [
            row.host
            for row in await host_statuses(self._client)
            if row.alive
            and row.runs_deploys
            and row.host != self.hostname
            and max(row.ready, row.running) < deploy_id
        ]
        if waiting:
            self._say(
                logging.INFO,
                f"deploy {deploy_id} is ready; switching together once "
                f"{', '.join(waiting)} {'has' if len(waiting) == 1 else 'have'} it too "
                "(--deploy-switch together)",
            )
        return not waiting

    async def _push_seed(self) -> None:
        assert self._client is not None and self._seed is not None
        seed, key = self._seed, self._sign_key

        async def checked(deploy_id: int, parent: int) -> Record:
            rec = await make(deploy_id, parent)
            try:  # as the deploy socket does: never store what this host would refuse
                await asyncio.to_thread(signed_for, rec, self.policy)
            except DeployError as err:
                raise Unrunnable(str(err)) from None
            return rec

        try:
            make = await asyncio.to_thread(record_maker, seed, key)
            rec = await push(self._client, seed, checked)
        except Unrunnable as err:
            log.error(
                "not seeding the cluster with this program: this host would not run it: %s", err
            )
        except DeployError as err:
            log.info("not seeding the cluster with this program: %s", err)
        else:
            log.info("this program is the cluster's first deploy (%d)", rec.id)
        self._seed = None
        self._kick.set()

    # preparing and switching ----------------------------------------------------------------

    async def _prepare(self, rec: Record, data: bytes) -> Prepared:
        bundle, entry, unverified = await asyncio.to_thread(self._verify_extract, rec, data)
        prepared = await self._load(rec, data, bundle, entry)
        prepared.unverified = unverified
        return prepared

    async def _load(self, rec: Record, data: bytes, bundle: Bundle, entry: Path) -> Prepared:
        if bundle.frontend == "yaml":
            text = bundle.files[bundle.entry]
            if len(text) > self.policy.max_graph_size:
                raise DeployError(
                    f"{bundle.entry}: larger than this host's --max-graph-size "
                    f"({self.policy.max_graph_size:,} bytes)"
                )
            try:
                loaded = await asyncio.to_thread(parse, text, str(entry))
            except GraphFileError as err:
                raise DeployError("; ".join(err.problems)) from None
            for warning in loaded.warnings:
                log.warning("%s", warning)
            return Prepared(rec, data, loaded)
        return await self._open_lang(rec, data, entry)

    def _verify_extract(self, rec: Record, data: bytes) -> tuple[Bundle, Path, str]:
        """(blocking: one thread's work, not two: each hop waited for a thread and the GIL)"""
        bundle, unverified = verify(rec, data, self.policy)
        try:
            return bundle, bundle.extract(self.dir / str(rec.id)), unverified
        except OSError as err:  # a full disk (tried again), a bundle naming `a` and `a/b`
            error = Transient if err.errno in TRANSIENT else DeployError
            raise error(f"cannot extract it into {self.dir}: {os_reason(err)}") from None

    async def _open_lang(self, rec: Record, data: bytes, entry: Path) -> Prepared:
        from mgmt.lang.errors import CompileError
        from mgmt.lang.source import LangSource

        try:
            source = await LangSource.open(
                entry, hostname=self.hostname, watch=False, otherwise=self._what_runs()
            )
        except CompileError as err:
            raise DeployError("; ".join(err.problems)) from None
        loaded = source.first
        if source.needs_cluster and self._world is not None:
            loaded = await source.attach_world(self._world) or loaded
        return Prepared(rec, data, loaded, source)

    async def _switch(self, seen: float | None = None, hold: bool = True) -> None:
        """Run the ready deploy; `seen`: when this host saw it in the cluster (loop time);
        `hold`: its status and copy wait for its graph (not when restored: nothing runs yet)."""
        prepared, self._ready = self._ready, None
        assert prepared is not None
        await self._stop_forward()
        old, self.running = self.running, prepared
        rec = prepared.record
        after = ""
        if seen is not None:
            took = asyncio.get_running_loop().time() - seen
            after = f", {took * 1000:.0f} ms after this host saw it"
        if self._converger is not None and hold and prepared.loaded is not None:
            self._applied = asyncio.Event()  # the status and the copy wait for it (HOLD)
        runs = ""
        if prepared.loaded is None:
            runs = f"; it has no graph yet: {self._what_runs()}"
        log.info(
            "running deploy %d (%s %s, %s%s)%s",
            rec.id,
            rec.frontend,
            rec.entry,
            f"signed by {rec.key}" if rec.signature else "unsigned",
            after,
            runs,
        )
        if prepared.loaded is not None:
            self._graph_of = rec.id
            self._emit(prepared.loaded)
        if old is not None and old.lang is not None:
            old.lang.on_problem = None
        lang = prepared.lang
        if lang is not None:
            self._forward = asyncio.create_task(self._forward_graphs(lang))
            lang.on_problem = lambda problem: self._set_problem(rec.id, problem)
        self._set_problem(rec.id, lang.problem if lang is not None else "")
        if old is not None and old.lang is not None:
            await old.lang.aclose()
        refused = self.status.refused if self.status.refused > rec.id else 0
        error = self.status.error if refused else ""
        self._set_status(
            running=rec.id,
            ready=rec.id,
            unverified=prepared.unverified,
            refused=refused,
            error=error,
        )
        if not hold:
            await self._keep_running()
        else:
            self._keeping.set()

    def _swapped(self, _: GraphSwapped) -> None:
        if self._applied is not None:
            self._applied.set()

    async def _settled(self) -> None:
        """Until the graph of the last switch is applied and settled, at most HOLD (a graph
        that does not settle soon, a graph the agent never applies: the status says so)."""
        applied = self._applied
        if applied is None:
            return
        try:
            async with asyncio.timeout(HOLD):
                await applied.wait()
                if self._converger is not None:
                    await self._converger.converged.wait()
        except TimeoutError:
            pass
        if self._applied is applied:
            self._applied = None

    async def _keeper(self) -> None:
        """Keep the running deploy in the prefix after each switch, once its graph settled."""
        while True:
            await self._keeping.wait()
            await self._settled()
            await self._keep_running()

    async def _keep_running(self) -> None:
        self._keeping.clear()
        prepared = self.running
        if prepared is None:
            return
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._keep, prepared))
        try:
            await asyncio.shield(self._writing)
        except OSError as err:
            log.warning("cannot keep deploy %d in %s: %s", prepared.record.id, self.dir, err)

    async def _forward_graphs(self, source: LangSource) -> None:
        async for loaded in source:
            if self.running is not None:
                self._graph_of = self.running.record.id
            self._emit(loaded)

    def _what_runs(self) -> str:
        """What the agent runs while a new deploy's program has produced no graph."""
        if self._graph_of:
            return f"deploy {self._graph_of}'s graph still runs"
        return "no graph yet"

    def _set_problem(self, deploy_id: int, problem: str) -> None:
        problem = f"deploy {deploy_id}: {problem}" if problem else ""
        if problem != self.problem:
            self.problem = problem
            if self.on_problem is not None:
                self.on_problem(problem)

    async def _stop_forward(self) -> None:
        task, self._forward = self._forward, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drop_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None and ready.lang is not None:
            await ready.lang.aclose()

    def _refuse(self, deploy_id: int, why: str, untrusted: bool = False) -> None:
        """Refuse the deploy until SIGHUP or a newer one; `untrusted` (its signature): or a
        change of the trusted keys (`_watch_keys`), which the line then names."""
        running = self.running.record.id if self.running else 0
        keeping = f"keeping deploy {running}" if running else "running nothing yet"
        again = "SIGHUP"
        if untrusted and self.policy.trusted_keys is not None:
            again = f"a change of {self.policy.trusted_keys} or SIGHUP"
        log.error(
            "refused deploy %d: %s; %s (%s verifies it again)", deploy_id, why, keeping, again
        )
        self._skip = deploy_id
        self._set_status(refused=deploy_id, error=why)

    def _retry(self, deploy_id: int, why: str) -> None:
        """A deploy this host could not prepare for a reason of its own (a full disk): said
        once while it stays the same, tried again after RETRY_FIRST s, doubling to RETRY_MAX
        (as etcd's restarts), or at once on SIGHUP or a newer deploy."""
        running = self.running.record.id if self.running else 0
        keeping = f"keeping deploy {running}" if running else "running nothing yet"
        delay, self._retry_in = self._retry_in, min(self._retry_in * 2, RETRY_MAX)
        again = f"trying again in {delay:.0f}s, then less often; SIGHUP tries at once"
        level = logging.DEBUG if why == self.status.error else logging.ERROR
        log.log(level, "could not prepare deploy %d: %s; %s (%s)", deploy_id, why, keeping, again)
        self._skip = deploy_id  # not again at every event of the watch: at the retry
        self._set_status(refused=deploy_id, error=why)
        if self._retrying is not None:
            self._retrying.cancel()
        self._retrying = self._tasks.spawn(self._retry_after(deploy_id, delay), "deploy retry")

    async def _retry_after(self, deploy_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._skip == deploy_id:
            self._skip = 0
            self._kick.set()

    def _say(self, level: int, line: str) -> None:
        if line != self._said:
            self._said = line
            log.log(level, "%s", line)

    # this host's deploy, kept in the prefix --------------------------------------------------

    def _keep(self, prepared: Prepared) -> None:
        """Write the running deploy's blob, then its record (each atomically: the record's
        rename is the commit), drop older blobs and directories (blocking; `_keeper` runs it
        after a switch, while a newer deploy may be prepared).

        The blob is named by its hash: the record and the blob in the prefix always match,
        whenever the process is killed (the same name for both, a kill between the two
        renames kept one deploy's record with another's blob: refused at the restart)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob = _kept_blob(prepared.record.hash)
        for name, data in ((blob, prepared.data), ("current.json", prepared.record.encode())):
            tmp = self.dir / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            tmp.rename(self.dir / name)
        # Older deploys' files only: a newer one may be being prepared meanwhile (extracted,
        # compiled from there), its id is not known here before it is ready.
        ready = self._ready.record.id if self._ready else 0
        for child in self.dir.iterdir():
            if child.name.startswith("current.") and child.name.endswith(".blob"):
                if child.name != blob:  # another deploy's, or `current.blob` (before)
                    child.unlink(missing_ok=True)
                continue
            older = child.name.isdigit() and int(child.name) < prepared.record.id
            if older and int(child.name) != ready and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

    async def _restore(self) -> None:
        """Run the deploy kept by the last run (verified again), if there is one: its line
        says how long after the read of the prefix, as a new deploy's says after it was seen."""
        seen = asyncio.get_running_loop().time()
        try:
            await asyncio.to_thread(_drop_leftovers, self.dir)
            kept = await asyncio.to_thread(_read_kept, self.dir)
        except OSError as err:
            log.warning("cannot read the kept deploy in %s: %s", self.dir, err)
            return
        except DeployError as err:
            log.error("not running the kept deploy from %s: %s", self.dir, err)
            return
        if kept is None:
            return
        rec, data = kept
        try:
            self._ready = await self._prepare(rec, data)
        except DeployError as err:
            log.error("not running the kept deploy from %s: %s", self.dir, err)
            return
        log.info("restarting with deploy %d, kept from the last run", rec.id)
        await self._switch(seen, hold=False)

    # status -----------------------------------------------------------------------------------

    def _set_status(self, publish: bool = True, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.status, name, value)
        if self.on_status is not None:
            self.on_status(self.status)
        if publish:
            self._publish.set()

    async def _publisher(self) -> None:
        """Keep this host's status key as `self.status` (desired state, retried)."""
        assert self._client is not None
        delay = 0.05
        published = b""
        while True:
            await self._publish.wait()
            await self._settled()  # a switch's status changes: one write, after its graph
            self._publish.clear()
            if self._converger is not None:  # as of now (`follow` may not have run yet)
                self.status.converged = self._converger.converged.is_set()
            data = self.status.encode()
            if data == published:
                continue
            try:
                await self._client.put(status_key(self.hostname).encode(), data)
                published, delay = data, 0.05
            except WorldError as err:
                log.debug("deploy status: %s", err)
                await self._client.connected.wait()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._publish.set()


def _kept_blob(digest: str) -> str:
    """The name of a kept blob in the prefix (`current.<sha256>.blob`)."""
    return f"current.{digest}.blob"


def _drop_leftovers(directory: Path) -> None:
    """Remove what a killed agent left half-written in `directory` (blocking; at the start:
    nothing is extracted nor kept yet): a deploy's extraction (`Bundle.extract`'s
    `.extract-*`, as large as its `files/`) and a kept file's temporary copy. Nothing else
    removes them: `_keep` drops older deploys' directories only."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.name.startswith(".extract-") and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(".current.") and child.name.endswith(".tmp"):
            child.unlink(missing_ok=True)


def _read_kept(directory: Path) -> tuple[Record, bytes] | None:
    """The record and blob `_keep` wrote in `directory`, None if none (blocking; OSError,
    DeployError). A prefix kept before the blobs were named by hash has `current.blob`."""
    try:
        raw = (directory / "current.json").read_bytes()
    except FileNotFoundError:
        return None
    rec = Record.decode(raw, str(directory / "current.json"))
    if len(rec.hash) != 64 or rec.hash.strip("0123456789abcdef"):
        raise DeployError(f"{directory / 'current.json'}: its hash is {rec.hash!r}")
    try:
        return rec, (directory / _kept_blob(rec.hash)).read_bytes()
    except FileNotFoundError:
        return rec, (directory / "current.blob").read_bytes()


def _async(fn: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn()

    return call


def _pushed(noted: dict[bytes, bytes]) -> tuple[Record, bytes] | None:
    """The newest deploy's record and blob if the watch's events carried all three keys (as
    a push's transaction does), else None (they are read)."""
    raw = noted.get(NEWEST.encode())
    try:
        newest = int(raw) if raw is not None else 0
        rec_raw = noted.get(id_key(newest).encode()) if newest else None
        rec = Record.decode(rec_raw, id_key(newest)) if rec_raw is not None else None
    except (ValueError, DeployError):
        return None
    if rec is None or rec.id != newest:  # another deploy's record: `_check` refuses it
        return None
    data = noted.get((BLOBS + rec.hash).encode())
    return (rec, data) if data is not None else None


def _load_language() -> None:
    """Load the language (its modules, parser and built-in types) while the host joins the
    cluster: its first compile in a process costs ~0.5 s, which the first deploy would wait."""
    from mgmt.lang import compile_bytes
    from mgmt.lang.errors import CompileError
    from mgmt.lang.source import LangSource  # noqa: F401  # what runs a program

    with contextlib.suppress(CompileError):
        compile_bytes(b"", "<warm-up>")


def open_source(config: Config, prefix: Path) -> DeploySource:
    """The deploy source a run asks for (blocking: reads and checks files); DeployError
    naming the flag or file on bad input."""
    from mgmt.deploy.bundle import read_checked

    trusted = config.trusted_keys
    if trusted is not None:
        signing.check_trusted(trusted)
        try:
            text = trusted.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DeployError(f"--trusted-keys: cannot read {trusted}: {err}") from None
        if not any(line.strip() and not line.startswith("#") for line in text.splitlines()):
            raise DeployError(f"--trusted-keys: {trusted} holds no key")
    if config.allow_unsigned_deploys:
        log.warning(
            "--allow-unsigned-deploys: this host runs deploys nobody trusted signed "
            "(development only: whoever can write the cluster can make it run anything)"
        )
    seed = None
    if config.deploy and config.frontend != "empty":
        assert config.file is not None
        seed, problems = read_checked(config.frontend, config.file, config.max_graph_size)
        if problems:
            raise DeployError("\n".join(problems))
        if config.sign_key is not None:
            signing.key_fingerprint(config.sign_key)
        elif not config.allow_unsigned_deploys:
            raise DeployError("--deploy: give --sign-key FILE (or --allow-unsigned-deploys)")
    policy = Policy(
        trusted_keys=trusted,
        allow_unsigned=config.allow_unsigned_deploys,
        together=config.deploy_switch == "together",
        max_graph_size=config.max_graph_size,
    )
    return DeploySource(config.hostname, prefix, policy, seed, config.sign_key)
