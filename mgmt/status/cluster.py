"""The cluster on the status page: this host's summary published, every host's followed.

A clustered agent keeps `/_mgmt/host-status/<host>` as the summary of its status model (its
resources, how many have failed and one's last error, converged or not and since when),
rewritten whenever that changes (desired state: retried while the cluster cannot be reached).
It also watches the summaries, the deploy statuses and the liveness keys of every host and gives
the page every host's row (mgmt.deploy.status.HostStatus: the same rows `mgmt status --cluster`
and `mgmt deploy --status` print) as they change: no polling.

Both act at most once per BURST seconds: one change of the graph is a burst of changes of
the model (the swap, each resource's check, converged since a new time), and on N hosts, N
summaries written within a few ms; each write is a raft commit with a WAL fsync on every
member, and every host reads the rows again. Written and read at each step, the summaries were
~4 writes and ~25 reads in the cluster per collected change (issue 16): the next export's
commit queued behind them, and the agents spent more CPU on them than on the change. A first
change is written (once the graph settled, see HOLD) and read at once; what follows within
BURST comes with the next write or read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from typing import Any

from engine.errors import WorldError
from engine.tasks import TaskSet
from mgmt.cluster.client import EtcdClient
from mgmt.deploy.status import HOSTS, STATUS, SUMMARY, host_statuses
from mgmt.status.model import StatusModel

log = logging.getLogger("cluster")

HOLD = 1.0  # seconds a summary written while the graph is not converged waits for it
RETRY_MAX = 2.0  # seconds between attempts while the cluster cannot be reached (doubling)

BURST = 0.25  # seconds a change waits for the rest of its burst (see the module doc)


def summary(model: StatusModel) -> dict[str, Any]:
    """What this host's key holds (no timestamps but `since`: rewritten on change only)."""
    failed = [(key, info) for key, info in model.info.items() if info.state == "failed"]
    error = ""
    if failed:
        key, info = min(failed)
        error = f"{key[0]}[{key[1]}]: {info.error}"[:300]
    return {
        "converged": model.converged_since is not None,
        "since": model.converged_since,
        "resources": len(model.engine.vertices),
        "failed": len(failed),
        "error": error,
    }


class ClusterStatus:
    """See the module docstring. `start()` spawns its two tasks; `stop()` ends them."""

    def __init__(self, model: StatusModel, client: EtcdClient, hostname: str) -> None:
        self.model = model
        self.client = client
        self.key = (SUMMARY + hostname).encode()
        self._changed = asyncio.Event()
        self._changed.set()
        self._tasks = TaskSet("cluster status", log)
        self._unwatch = model.on_change(self._changed.set)

    def start(self) -> None:
        self._tasks.spawn(self._publish(), "publish the summary")
        self._tasks.spawn(self._follow(), "follow the hosts")

    async def stop(self) -> None:
        self._unwatch()
        await self._tasks.close()

    async def _publish(self) -> None:
        published: bytes | None = None
        delay = 0.05
        while True:
            await self._changed.wait()
            await self._settled()
            self._changed.clear()
            data = json.dumps(summary(self.model), sort_keys=True).encode()
            if data == published:
                continue
            try:
                await self.client.put(self.key, data)
                published, delay = data, 0.05
                await asyncio.sleep(BURST)  # the rest of a burst waits: not a readiness wait
            except WorldError as err:
                log.debug("host status: %s", err)
                await self.client.connected.wait()
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                delay = min(delay * 2, RETRY_MAX)
                self._changed.set()

    async def _settled(self) -> None:
        """While the graph is not converged (mostly: a swap is being applied), until it is, at
        most HOLD: the summary written at once would be written again a few ms later, and
        each write is one of every member's log, on the disks and cores that apply the swap
        (the deploys' latency). A change while converged is written at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOLD):
                while self.model.converged_since is None:
                    self._changed.clear()
                    await self._changed.wait()

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
                    await self.client.connected.wait()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = 0.05
                self.model.set_hosts([{**asdict(row), "state": row.state} for row in rows])
                await asyncio.sleep(BURST)  # the rest of a burst waits: not a readiness wait
                await changed.wait()
        finally:
            for unsubscribe in unsubscribes:
                await unsubscribe()
