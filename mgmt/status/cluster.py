"""The cluster on the status page: this host's summary published, every host's followed.

A clustered agent keeps `/_mgmt/host-status/<host>` as the summary of its status model (its
resources, how many have failed and one's last error (a failed reversal counts as one), converged or not and since when, and its
program's error: `program_error`, a later field, absent from an older host's summary),
rewritten whenever that changes (desired state: retried while the cluster cannot be reached).
It also watches the summaries, the deploy statuses and the liveness keys of every host and gives
the page every host's row (mgmt.deploy.status.HostStatus: the same rows `mgmt status --cluster`
and `mgmt deploy --status` print) as they change: no polling.

The summary is written once the model has been quiet for QUIET seconds (and the graph is
converged), or MAX_DELAY seconds after the first change of a stream of changes that does not
stop: one change of the graph is a burst of changes of the model (the swap, each resource's
check, converged since a new time), and each write is a raft commit with a WAL fsync on every
member, which every host answers with a read of the rows. Written at each step, the summaries
were ~4 writes and ~25 reads in the cluster per collected change (issue 16); written at the
first convergence of each BURST, they still landed right after a change, where the next one
starts: its export's commit queued behind two or three of them (cluster_latency.py: etcd's CPU
per change 2.4 / 1.2 / 1.3 ms instead of 3.1 / 1.8 / 2.0 ms at load 12). So a summary is up to
QUIET late after a lone change, and MAX_DELAY late while changes keep coming. The rows are read
at once after a change, then at most once per BURST.

A clean stop writes the summary once more, with `left` (the time), before the host leaves the
cluster: `mgmt status --cluster` then tells a host stopped on purpose (`left`) from one that
went away (`down`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from engine.errors import WorldError
from engine.tasks import TaskSet
from mgmt.cluster.client import RECONNECT_GRACE, EtcdClient
from mgmt.deploy.status import HOSTS, STATUS, SUMMARY, host_statuses, no_quorum_note
from mgmt.status.model import FAILING, StatusModel

log = logging.getLogger("cluster")

QUIET = 0.25  # seconds without a change (and converged) before the summary is written
MAX_DELAY = 2.0  # seconds a summary waits at most while its model keeps changing
RETRY_MAX = 2.0  # seconds between attempts while the cluster cannot be reached (doubling)

BURST = 0.25  # seconds between two reads of the rows (see the module doc)
RECHECK = 5.0  # seconds between two reads of the rows without a change (a lost quorum)
LEAVE_WAIT = 1.0  # seconds the summary of a clean stop may take (it must not hold the exit)


def summary(model: StatusModel) -> dict[str, Any]:
    """What this host's key holds (no timestamps but `since`: rewritten on change only).
    `failed` counts the failing resources (`failed`, or `retrying`: its last attempt failed,
    as `mgmt status` counts them; before 2026-12-07 a resource retrying for ever was no
    failure here: its host read `converging`, exit 0, while its own `mgmt status` exited 1)
    and the failed reversals of resources that left the graph; `error` is a failing
    resource's, else a failed reversal's (`reversal failed: file[/x/]: ...`), else why this
    host's etcd member cannot start (`etcd member cannot start: ...`: before 2026-12-05 the
    table said nothing)."""
    failed = [(key, info) for key, info in model.info.items() if info.state in FAILING]
    reversals = [rev for rev in model.reversals() if rev["state"] == "failed"]
    error = ""
    if failed:
        key, info = min(failed)
        error = f"{key[0]}[{key[1]}]: {info.error}"[:300]
    elif reversals:
        error = f"reversal failed: {reversals[0]['id']}: {reversals[0]['error']}"[:300]
    elif model.member_error:
        error = f"etcd member cannot start: {model.member_error}"[:300]
    return {
        "converged": model.converged_since is not None,
        "since": model.converged_since,
        "resources": len(model.engine.vertices),
        "failed": len(failed) + len(reversals),
        "error": error,
        "program_error": model.program_error[:300],
    }


class ClusterStatus:
    """See the module docstring. `start()` spawns its two tasks; `stop()` ends them."""

    def __init__(
        self,
        model: StatusModel,
        client: EtcdClient,
        hostname: str,
        no_quorum: Callable[[], tuple[int, int, list[str]] | None] = lambda: None,
    ) -> None:
        self.model = model
        self.no_quorum = no_quorum  # the cluster's (mgmt.cluster.cluster.Cluster.no_quorum)
        self.client = client
        self.key = (SUMMARY + hostname).encode()
        self._changed = asyncio.Event()
        self._changed.set()
        self._last = -math.inf  # time.monotonic() of the model's last change
        self._tasks = TaskSet("cluster status", log)
        # The summary's put being made: a stop lets it end (not cancelled mid-request: etcd
        # could still apply it after the stop's own put, overwriting "left"), then writes.
        self._putting: asyncio.Future[int] | None = None
        self._unwatch = model.on_change(self._on_change)
        self._no_quorum_since: float | None = None  # time.time() the rows were first stale

    def _on_change(self) -> None:
        self._last = time.monotonic()
        self._changed.set()

    def start(self) -> None:
        self._tasks.spawn(self._publish(), "publish the summary")
        self._tasks.spawn(self._follow(), "follow the hosts")

    async def stop(self, graceful: bool = False) -> None:
        """Stop publishing and following; graceful (a clean stop, before the host leaves the
        cluster): the summary last written says when this host left (its row reads `left`,
        not `down`: mgmt.deploy.status), within LEAVE_WAIT s or not at all."""
        self._unwatch()
        await self._tasks.close()
        putting, self._putting = self._putting, None
        if putting is not None:  # (its error: the task's log)
            # Taken first and waited for, not awaited: a stop cancelled here (a second signal)
            # ends the put, and the forced stop run next finds none; awaited again there, the
            # cancelled put raised CancelledError, which ended the agent's stop before the
            # cluster's (etcd left running).
            try:
                await asyncio.wait([putting], timeout=LEAVE_WAIT)
            finally:
                putting.cancel()
                await asyncio.gather(putting, return_exceptions=True)
        # Between two connections (its agent's switch to its own member as it starts to
        # vote): not skipped, else the leader saw no "left" and waited for its member to be
        # gone (tests: a stop of a host that had just become a voter).
        if not graceful or not await self.client.reconnected(RECONNECT_GRACE):
            return
        data = json.dumps({**summary(self.model), "left": time.time()}, sort_keys=True)
        try:
            async with asyncio.timeout(LEAVE_WAIT):
                await self.client.put(self.key, data.encode())
        except (WorldError, TimeoutError) as err:  # then it reads `down`, as after a crash
            log.debug("host status at leaving: %s", err)

    async def _publish(self) -> None:
        published: bytes | None = None
        delay = 0.05
        while True:
            await self._changed.wait()
            await self._quiet()
            data = json.dumps(summary(self.model), sort_keys=True).encode()
            if data == published:
                continue
            try:
                self._putting = asyncio.ensure_future(self.client.put(self.key, data))
                await asyncio.shield(self._putting)
                published, delay = data, 0.05
            except WorldError as err:
                log.debug("host status: %s", err)
                await self.client.connected.wait()
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                delay = min(delay * 2, RETRY_MAX)
                self._changed.set()

    async def _quiet(self) -> None:
        """Until the model has not changed for QUIET s and the graph is converged (a summary
        written in the middle of a swap would be written again a few ms later), at most
        MAX_DELAY s. Not a readiness wait: the time a summary is held back, on purpose. It
        sleeps (at most once per QUIET), not woken by each of a swap's many model changes."""
        deadline = time.monotonic() + MAX_DELAY
        while True:
            now = time.monotonic()
            quiet_at = self._last + QUIET
            if now >= deadline or (now >= quiet_at and self.model.converged_since is not None):
                self._changed.clear()  # what changed until now is in the summary written next
                return
            wake = quiet_at if quiet_at > now else now + QUIET  # quiet, not converged: again
            await asyncio.sleep(min(wake, deadline) - now)

    async def _stale_rows(self) -> None:
        """The rows could not be read: without a quorum, show them as this host's member last
        knew them, marked stale, and say since when the cluster has none (before 2026-12-05 the
        page kept killed hosts `converged` and said nothing)."""
        lost = self.no_quorum()  # known from the lease (not probed: a host leaving is not)
        if lost is None:
            return
        note = no_quorum_note(*lost, self.client.endpoint)
        try:
            rows = await host_statuses(self.client, stale=True)
        except WorldError as err:
            log.debug("stale host statuses: %s", err)
            return
        if self._no_quorum_since is None:
            self._no_quorum_since = time.time()
        since = time.strftime("%H:%M:%S", time.localtime(self._no_quorum_since))
        self.model.set_hosts([row.doc() for row in rows])
        self.model.set_cluster_note(f"{note.removeprefix('cluster: ')} (since {since})")

    async def _follow(self) -> None:
        changed = asyncio.Event()
        unsubscribes = [
            await self.client.subscribe(prefix.encode(), changed.set, prefix=True)
            for prefix in (STATUS, HOSTS, SUMMARY)
        ]
        delay = 0.05
        try:
            while True:
                changed.clear()
                try:
                    rows = await host_statuses(self.client)
                except WorldError as err:
                    log.debug("host statuses: %s", err)
                    await self._stale_rows()
                    await self.client.connected.wait()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = 0.05
                self.model.set_hosts([row.doc() for row in rows])
                self.model.set_cluster_note("")
                self._no_quorum_since = None
                await asyncio.sleep(BURST)  # the rest of a burst waits: not a readiness wait
                # And every RECHECK s: a lost quorum cancels every watch (no leader), and no
                # event would tell the rows are stale.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECHECK):
                        await changed.wait()
        finally:
            for unsubscribe in unsubscribes:
                await unsubscribe()
