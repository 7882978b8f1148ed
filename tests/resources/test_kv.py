"""kv: the idempotency timeline on the in-memory World and on a real etcd member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from engine.stopgate import Stopped
from engine.world import MemoryStore, MemoryWorld, World
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.world import EtcdWorld
from resources._lib import fight
from resources.kv import KVRes
from tests.conftest import RecordingHandle
from tests.mgmt.cluster.helpers import members

Start = Callable[..., Awaitable[tuple[KVRes, RecordingHandle]]]


@pytest.fixture
async def start_kv(tmp_path: Path) -> AsyncIterator[Start]:
    """`res, handle = await start_kv(world, name=..., ...)`: init, watch, startup event."""
    running: list[tuple[KVRes, asyncio.Task[None]]] = []

    async def start(world: World | None, **params: object) -> tuple[KVRes, RecordingHandle]:
        res = KVRes(**params)  # type: ignore[arg-type]
        res.validate()
        handle = RecordingHandle(res, tmp_path / "var" / res.name)
        handle.world = world
        await res.init(handle)
        task = asyncio.create_task(res.watch())
        running.append((res, task))
        await handle.next_event()
        return res, handle

    yield start
    for res, task in running:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await res.cleanup()


async def timeline(world: World, other: World, start: Start) -> None:
    res, handle = await start(world, name="version", key="app/version", value="2")
    assert await res.check_apply(False) is False  # noop: reports, changes nothing
    assert await world.str_get("app/version") is None
    assert await res.check_apply(True) is False
    assert await world.str_get("app/version") == "2"
    await handle.next_event()  # our own write comes back through the watch
    assert await res.check_apply(True) is True
    await other.str_set("app/version", "1")  # drift, from another host
    await handle.next_event()
    assert await res.check_apply(True) is False
    assert await other.str_get("app/version") == "2"
    assert await res.check_apply(True) is True


async def test_timeline_in_memory(start_kv: Start) -> None:
    store = MemoryStore()
    await timeline(MemoryWorld("h1", store), MemoryWorld("h2", store), start_kv)


async def test_timeline_on_etcd(tmp_path: Path, start_kv: Start) -> None:
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        try:
            await timeline(EtcdWorld(client, "h1"), EtcdWorld(client, "h2"), start_kv)
        finally:
            await client.close()


async def test_absent_value_deletes(start_kv: Start) -> None:
    world = MemoryWorld("h1")
    await world.str_set("old", "x")
    res, _ = await start_kv(world, name="old")
    assert await res.check_apply(False) is False
    assert await world.str_get("old") == "x"
    assert await res.check_apply(True) is False
    assert await world.str_get("old") is None
    assert await res.check_apply(True) is True


async def test_mapped_writes_this_hosts_entry(start_kv: Start) -> None:
    store = MemoryStore()
    h1, h2 = MemoryWorld("h1", store), MemoryWorld("h2", store)
    await h2.str_map_set("seen", "no")
    res, _ = await start_kv(h1, name="seen", value="yes", mapped=True)
    assert await res.check_apply(True) is False
    # The world's host (the one whose key range it may write), not the handle's name.
    assert await h1.str_map_get("seen") == {"h1": "yes", "h2": "no"}
    assert await res.check_apply(True) is True


@pytest.mark.parametrize(
    ("style", "stored", "ours", "kept"),
    [
        ("int", "10", "7", True),  # stored is greater: left alone
        ("int", "3", "7", False),
        ("int", "junk", "7", False),  # not a number: replaced
        ("string", "b", "a", True),
        ("string", "a", "b", False),
    ],
)
async def test_skiplessthan(
    start_kv: Start, style: str, stored: str, ours: str, kept: bool
) -> None:
    world = MemoryWorld("h1")
    await world.str_set("n", stored)
    res, _ = await start_kv(world, name="n", value=ours, skiplessthan=True, skipcmpstyle=style)
    assert await res.check_apply(True) is kept
    assert await world.str_get("n") == (stored if kept else ours)


async def test_skiplessthan_races_never_lower_the_value(tmp_path: Path, start_kv: Start) -> None:
    """Twenty hosts write 20..1 to one counter at once, on real etcd: all read before any
    writes, so without compare-and-set the last (smallest) write would win."""
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        try:
            world = EtcdWorld(client, "h0")
            assert await world.str_cas("n", None, "0") is True  # absent, as expected
            assert await world.str_cas("n", None, "5") is False
            assert await world.str_cas("n", "1", "5") is False
            assert await world.str_get("n") == "0"
            started = [
                await start_kv(
                    EtcdWorld(client, f"h{i}"), name="n", value=str(i), skiplessthan=True
                )
                for i in range(20, 0, -1)
            ]
            await asyncio.gather(*(res.check_apply(True) for res, _ in started))
            assert await world.str_get("n") == "20"
        finally:
            await client.close()


async def test_a_stop_ends_a_fights_wait_and_nothing_is_written(
    tmp_path: Path, start_kv: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another host undoes each write (real etcd): the back-off's wait before the next repair
    (1 s, doubling to 30 s) ends at the resource's stop, and the repair is not made (Stopped).
    Before, a graceful stop sat the wait out, then wrote: two agents fighting over a key did
    not exit within 30 s of their SIGTERM (CI, tests/e2e/test_cluster_faults.py)."""
    monkeypatch.setattr(fight, "WINDOW", 600.0)  # the writes below a fight however slow
    async with members(tmp_path) as (node,):
        client = EtcdClient([node.client_url])
        try:
            world, other = EtcdWorld(client, "h1"), EtcdWorld(client, "h2")
            res, handle = await start_kv(world, name="k", value="ours")
            for _ in range(fight.WRITES):
                await other.str_set("k", "theirs")
                assert await res.check_apply(True) is False
            await other.str_set("k", "theirs")
            repair = asyncio.create_task(res.check_apply(True))
            # Called after the task's first step, which ends in the wait (the stop's order).
            asyncio.get_running_loop().call_soon(handle.request_stop)
            with pytest.raises(Stopped):
                await repair
            assert await world.str_get("k") == "theirs"
            with pytest.raises(Stopped):  # stopped already: no wait at all
                await res.check_apply(True)
        finally:
            await client.close()


async def test_refresh_rewrites_and_wakes_watchers(start_kv: Start) -> None:
    world = MemoryWorld("h1")
    res, handle = await start_kv(world, name="k", value="v")
    assert await res.check_apply(True) is False
    await handle.next_event()
    async with world.str_watch("k") as changes:
        handle.refresh_flag = True
        assert await res.check_apply(True) is False  # a refresh is a real (re-)write
        async with asyncio.timeout(5):
            await anext(changes)


async def test_without_a_cluster_it_fails_clearly(start_kv: Start) -> None:
    res, _ = await start_kv(None, name="k", value="v")
    with pytest.raises(ResourceError, match="needs the cluster"):
        await res.check_apply(True)


def test_validate() -> None:
    with pytest.raises(ValidationError, match="key"):
        KVRes(name="x", key="/abs").validate()
    with pytest.raises(ValidationError, match="name"):
        KVRes(name="a//b").validate()
    with pytest.raises(ValidationError, match="integer value"):
        KVRes(name="x", value="high", skiplessthan=True).validate()
    KVRes(name="x", value="high", skiplessthan=True, skipcmpstyle="string").validate()
