"""This host's summary in a real etcd (mgmt.status.cluster): written once a burst of changes
is over, and not in the middle of a stream of changes (where the next export waits)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from mgmt.cluster.client import EtcdClient
from mgmt.deploy.status import SUMMARY
from mgmt.status import cluster as status_cluster
from mgmt.status.cluster import ClusterStatus
from mgmt.status.model import StatusModel
from tests.aio import pass_ended
from tests.mgmt.cluster.helpers import free_ports, members


class Writes:
    """The summaries written to a key, as its watch's events bring them."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def on_events(self, events: Any) -> None:
        for event in events or []:
            self.written.append(json.loads(bytes(event.kv.value)))
        self._arrived.set()

    async def next(self, count: int) -> None:
        """Wait until `count` summaries were written in all."""
        async with asyncio.timeout(20):
            while len(self.written) < count:
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def summary(
    tmp_path: Path, writes: Writes
) -> AsyncIterator[tuple[StatusModel, EtcdClient, ClusterStatus]]:
    """Host h's status model and its summary in a real etcd, written since converged; the
    summaries written go to `writes`."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        key = (SUMMARY + "h").encode()
        unsubscribe = await client.subscribe(key, lambda: None, events=writes.on_events)
        status = ClusterStatus(model, client, "h")
        try:
            model.set_converged(True)
            status.start()
            await writes.next(1)
            yield model, client, status
        finally:
            await status.stop()
            await unsubscribe()
            await client.close()
            model.close()
            await engine.stop(graceful=False)


async def test_a_burst_of_changes_is_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not converged, then converged again a few turns of the loop later (a collected change
    swapped in and applied), twice: one write of the summary, not one per step or change. Each write is a raft
    commit that the next export queues behind, and a read of three prefixes by every agent
    (issue 16). QUIET is made long here so that a busy machine cannot split the burst."""
    monkeypatch.setattr(status_cluster, "QUIET", 0.5)
    writes = Writes()
    written = writes.written
    async with summary(tmp_path, writes) as (model, _client, _status):
        for _ in range(2):  # two changes back to back, each applied and converged
            model.set_converged(False)
            for _ in range(5):  # the swap and the checks: passes of the loop, not time
                await pass_ended()
            model.set_converged(True)
            for _ in range(5):
                await pass_ended()
        await writes.next(2)
        with pytest.raises(TimeoutError):  # nothing else comes: generous, not a threshold
            async with asyncio.timeout(1.5):
                await writes.next(3)
    assert [w["converged"] for w in written] == [True, True], written
    assert written[1]["since"] == model.converged_since


async def test_no_write_while_changes_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream of changes (a collected change swapped in and converged every ~10 ms, as in
    bench/cluster_latency.py) for longer than the reads' BURST: the summary is written once it
    is over, not at the first convergence of each BURST, where it landed right after a change,
    in front of the next one's export (issue 16). Then, with a short MAX_DELAY, a stream that
    does not stop is still written while it goes on."""
    monkeypatch.setattr(status_cluster, "QUIET", 1.0)  # long: gaps of a busy machine's loop
    monkeypatch.setattr(status_cluster, "MAX_DELAY", 600.0)
    writes = Writes()
    written = writes.written

    async def stream(client: EtcdClient, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            model.set_converged(False)
            await pass_ended()
            model.set_converged(True)
            await client.put(b"/test/pace", b"x")  # paced by etcd, as exports are

    async with summary(tmp_path, writes) as (model, client, _status):
        await stream(client, 4 * status_cluster.BURST)
        assert len(written) == 1, written  # nothing in the middle of the stream
        await writes.next(2)
        assert written[1]["since"] == model.converged_since
        monkeypatch.setattr(status_cluster, "MAX_DELAY", 0.3)
        await stream(client, 3.0)  # at least one write per 0.3 s on an idle machine: ~10
        assert len(written) >= 3, written


async def test_a_clean_stop_between_two_connections_still_says_left(tmp_path: Path) -> None:
    """A host stopped cleanly just as its client switches to its own member (it has just
    become a voter: the connection to the seed is dropped, the next not made yet) still
    writes `left`: the leader then removes its member as a host that left, not after its
    etcd is gone (before 2026-12-06 the stop saw no connection and wrote nothing: CI's
    test_a_host_removed_by_the_leader_as_it_leaves_remembers_the_others, four times)."""
    writes = Writes()
    async with summary(tmp_path, writes) as (_model, client, status):
        url = client.endpoints[0]
        same = url.replace("127.0.0.1", "localhost")  # the same member by another name
        client.set_endpoints([url], preferred=same)
        assert not client.connected.is_set()  # dropped: the switch's reconnection to come
        await status.stop(graceful=True)
        await writes.next(2)
        assert writes.written[-1].get("left"), writes.written


async def test_a_cluster_out_of_reach_holds_a_stop_once(tmp_path: Path) -> None:
    """The stop's writes one after the other (the summary's `left`, then the leave) wait for a
    connection once per outage: the second does not wait again (the bound below is a hang's)."""
    (port,) = free_ports(1)
    client = EtcdClient([f"http://127.0.0.1:{port}"])  # nothing listens there
    try:
        assert not await client.wait_connected(20)
        assert not await client.reconnected(0.05)
        async with asyncio.timeout(60):
            assert not await client.reconnected(3600)
    finally:
        await client.close()
