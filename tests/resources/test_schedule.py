"""schedule: joining and withdrawing on the in-memory World and on a real etcd member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from engine.world import MemoryStore, MemoryWorld, World
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.world import EtcdWorld
from resources.schedule import ScheduleRes
from tests.conftest import RecordingHandle
from tests.mgmt.cluster.helpers import members

Start = Callable[..., Awaitable[tuple[ScheduleRes, RecordingHandle]]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """`res, handle = await start(world, hostname, name=..., ...)`: init, watch, startup event;
    stopped (and cleaned up: it leaves the pool) at the end."""
    running: list[tuple[ScheduleRes, RecordingHandle, asyncio.Task[None]]] = []

    async def begin(
        world: World | None, hostname: str, **params: object
    ) -> tuple[ScheduleRes, RecordingHandle]:
        res = ScheduleRes(**params)  # type: ignore[arg-type]
        res.validate()
        handle = RecordingHandle(res, tmp_path / "var" / hostname)
        handle.world, handle.hostname = world, hostname
        await res.init(handle)
        task = asyncio.create_task(res.watch())
        running.append((res, handle, task))
        await handle.next_event()
        return res, handle

    yield begin
    for res, handle, task in running:  # (before `etcd`'s teardown: asked for after it)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await res.cleanup()
        await handle.run_cleanups()


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdClient]:
    """A client of a one-member etcd cluster; a test asks for it before `start`, so that the
    resources started are stopped (and leave their pools) while it still runs: stopped after,
    each cleanup waited for a closed client (5 s in all)."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        try:
            yield client
        finally:
            await client.close()


async def timeline(h1: World, h2: World, start: Start) -> None:
    res1, handle1 = await start(h1, "h1", name="db", max=1)
    assert await res1.check_apply(False) is False  # noop: would join, joins nothing
    assert await h1.schedule_hosts("db") == []
    assert await res1.check_apply(True) is False
    assert await h1.schedule_hosts("db") == ["h1"]
    await handle1.next_event()  # the pool changed
    assert await res1.check_apply(True) is True
    res2, _ = await start(h2, "h2", name="db")
    assert await res2.check_apply(True) is False
    assert await h1.schedule_hosts("db") == ["h1", "h2"]  # in the order they joined
    await handle1.next_event()
    assert await res1.check_apply(True) is True
    # Another resource of h1 withdraws it... only what it joined itself: nothing here.
    out, _ = await start(h1, "h1", name="db-out", namespace="db", withdraw=True)
    assert await out.check_apply(True) is True
    # Stopping the resource leaves the pool at once.
    await res1.cleanup()
    await res1.handle.run_cleanups()
    assert await h2.schedule_hosts("db") == ["h2"]


async def test_timeline_in_memory(start: Start) -> None:
    store = MemoryStore()
    await timeline(MemoryWorld("h1", store), MemoryWorld("h2", store), start)


async def test_timeline_on_etcd(etcd: EtcdClient, start: Start) -> None:
    await timeline(EtcdWorld(etcd, "h1"), EtcdWorld(etcd, "h2"), start)


async def test_withdraw_leaves_what_it_joined(start: Start) -> None:
    world = MemoryWorld("h1")
    res, _ = await start(world, "h1", name="pool", ttl=3)
    assert await res.check_apply(True) is False
    assert await world.schedule_hosts("pool") == ["h1"]
    res.withdraw, res.ttl = True, None  # as a graph swap would give it
    assert await res.check_apply(False) is False  # noop: would leave
    assert await world.schedule_hosts("pool") == ["h1"]
    assert await res.check_apply(True) is False
    assert await world.schedule_hosts("pool") == []
    assert await res.check_apply(True) is True


async def persist_timeline(h1: World, h2: World, start: Start) -> None:
    """persist (no ttl): the key has no lease, outlives its resource, and a withdraw (of a
    later run) deletes it."""
    res, handle = await start(h1, "h1", name="keep", persist=True, ttl=0)
    assert await res.check_apply(False) is False  # noop: would join
    assert await h1.schedule_entry("keep") is None
    assert await res.check_apply(True) is False
    assert await h1.schedule_entry("keep") == "persisted"
    await handle.next_event()  # the pool changed
    assert await res.check_apply(True) is True
    await res.cleanup()
    await handle.run_cleanups()  # the agent stops
    assert await h2.schedule_hosts("keep") == ["h1"]  # still there
    out, _ = await start(h1, "h1", name="keep", withdraw=True)
    assert await out.check_apply(False) is False  # noop: would withdraw
    assert await h2.schedule_hosts("keep") == ["h1"]
    assert await out.check_apply(True) is False
    assert await h2.schedule_hosts("keep") == []
    assert await out.check_apply(True) is True


async def test_persist_timeline_in_memory(start: Start) -> None:
    store = MemoryStore()
    await persist_timeline(MemoryWorld("h1", store), MemoryWorld("h2", store), start)


async def test_persist_and_ttl_on_etcd(etcd: EtcdClient, start: Start) -> None:
    """On etcd: persist puts the key without a lease; a ttl's lease is left to run out when
    the resource stops (the host stays ttl seconds), a default one is revoked at once."""
    h1, h2 = EtcdWorld(etcd, "h1"), EtcdWorld(etcd, "h2")
    await persist_timeline(h1, h2, start)
    now, later = EtcdWorld(etcd, "h3"), EtcdWorld(etcd, "h4")
    res_now, _ = await start(now, "h3", name="pool", ttl=0)
    # 3 s, renewed every 1 s while it runs: 1 s ran out under CI's load (a renewal late)
    # before h3 was looked at (2026-12-06).
    res_later, _ = await start(later, "h4", name="pool", ttl=3)
    assert await res_now.check_apply(True) is False
    assert await res_later.check_apply(True) is False
    assert await h1.schedule_entry("pool") is None
    assert await later.schedule_entry("pool") == "leased"
    async with h1.schedule_watch("pool") as changes, asyncio.timeout(20):
        await res_now.cleanup()
        await res_now.handle.run_cleanups()
        assert await h1.schedule_hosts("pool") == ["h4"]  # h3 left at once
        await res_later.cleanup()
        await res_later.handle.run_cleanups()
        while await h1.schedule_hosts("pool"):  # h4's lease runs out (3 s)
            await anext(changes)


async def test_without_a_cluster_check_apply_says_so(start: Start) -> None:
    res, _ = await start(None, "h1", name="pool")
    with pytest.raises(ResourceError, match="needs the cluster"):
        await res.check_apply(True)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "/bad/"}, "name"),
        ({"name": "a", "strategy": "random"}, "strategy"),
        ({"name": "a", "max": 0}, "max"),
        ({"name": "a", "ttl": -1}, "ttl"),
        ({"name": "a", "withdraw": True, "persist": True}, "persist"),
        ({"name": "a", "withdraw": True, "max": 2}, "max"),
    ],
)
def test_validation_names_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        ScheduleRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key
