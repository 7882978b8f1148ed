"""The etcd World and its client against real etcd members: values, watches, failover."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aetcd import rpc

from engine.errors import WorldError
from engine.meta import Meta
from engine.world import Changes, Exported
from mgmt.cluster.client import EtcdClient, Scan
from mgmt.cluster.mirror import Mirror
from mgmt.cluster.world import EtcdWorld
from resources.file import FileRes
from tests.mgmt.cluster.helpers import Node, members, wait_pid_gone


@pytest.fixture
async def client_of() -> AsyncIterator[object]:
    clients: list[EtcdClient] = []

    def make(nodes: list[Node], **kwargs: object) -> EtcdClient:
        client = EtcdClient([n.client_url for n in nodes], call_timeout=0.5, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def next_change(changes: Changes, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        await anext(changes)


async def test_strings_maps_and_their_watches(tmp_path: Path, client_of: object) -> None:
    async with members(tmp_path) as nodes:
        client = client_of(nodes)  # type: ignore[operator]
        a, b = EtcdWorld(client, "a"), EtcdWorld(client, "b")
        assert await a.str_get("app/version") is None
        async with a.str_watch("app/version") as changes, a.str_map_watch("app/seen") as seen:
            await b.str_set("app/version", "1")
            await next_change(changes)
            assert await a.str_get("app/version") == "1"
            await a.str_map_set("app/seen", "yes")
            await b.str_map_set("app/seen", "no")
            await next_change(seen)
            assert await a.str_map_get("app/seen") == {"a": "yes", "b": "no"}
            await b.str_del("app/version")
            await next_change(changes)
            assert await a.str_get("app/version") is None
            await a.str_map_del("app/seen")
            assert await b.str_map_get("app/seen") == {"b": "no"}
        with pytest.raises(ValueError, match="key"):
            await a.str_get("/absolute")


async def test_exported_resources_round_trip_and_replace(tmp_path: Path, client_of: object) -> None:
    async with members(tmp_path) as nodes:
        world = EtcdWorld(client_of(nodes), "h1")  # type: ignore[operator]
        res = FileRes(name="/tmp/x", content="hi\n", meta=Meta(export=["h2"], retry=3))
        async with world.res_watch() as changes:
            await world.res_export([Exported.of("h1", res)])
            await next_change(changes)
            (record,) = await world.res_list()
            assert record.key == "/_mgmt/exported/h1/file//tmp/x"
            assert record.params["content"] == "hi\n"
            assert record.meta == {"export": ["h2"], "retry": 3}
            assert record.visible_to("h2") and not record.visible_to("h3")
            again = record.build()
            assert again.cmp(res)
            await world.res_export([])  # the whole set is replaced: the record goes
            await next_change(changes)
            assert await world.res_list() == []


async def test_failover_to_another_member_keeps_calls_and_watches(
    tmp_path: Path, client_of: object
) -> None:
    async with members(tmp_path, 3) as nodes:
        client: EtcdClient = client_of(nodes)  # type: ignore[operator]
        world = EtcdWorld(client, "h")
        async with world.str_watch("k") as changes:
            await world.str_set("k", "1")
            await next_change(changes)
            first = client.endpoint
            victim = next(n for n in nodes if n.client_url == first)
            pid = victim.pid
            assert victim.proc.proc is not None
            victim.proc.proc.send_signal(signal.SIGKILL)
            await wait_pid_gone(pid)
            await world.str_set("k", "2")  # retried on another member
            assert client.endpoint != first
            await next_change(changes)  # the watch moved too (and signals it was away)
            assert await world.str_get("k") == "2"


async def test_unreachable_cluster_is_a_world_error_soon(client_of: object) -> None:
    client = EtcdClient(["http://127.0.0.1:9"], retry_for=0.3, call_timeout=0.2)
    try:
        with pytest.raises(WorldError, match="get"):
            await EtcdWorld(client, "h").str_get("x")
    finally:
        await client.close()


async def test_a_malformed_record_is_logged_once(
    tmp_path: Path, client_of: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Every agent reads exported/ at each change: a warning per malformed record per read let
    any host that may write its own exports flood every agent's log."""
    async with members(tmp_path) as nodes:
        client = client_of(nodes)  # type: ignore[operator]
        world = EtcdWorld(client, "a")
        for name in ("x", "y\nWARNING forged"):
            await client.put(f"/_mgmt/exported/zz/file/{name}".encode(), b"not json")
        for _ in range(3):
            assert await world.res_list() == []
        assert caplog.text.count("ignoring a malformed exported record") == 2
        assert "\nWARNING forged" not in caplog.text and "y\\nWARNING forged" in caplog.text
        await client.delete(b"/_mgmt/exported/zz/file/x")
        assert await world.res_list() == []
        await client.put(b"/_mgmt/exported/zz/file/x", b"again")  # gone, then back: said again
        assert await world.res_list() == []
        assert caplog.text.count("ignoring a malformed exported record") == 3


def _record(host: str, name: str, content: str) -> Exported:
    return Exported.of(host, FileRes(name=name, content=content, meta=Meta(export=["h2"])))


async def test_a_collector_follows_exports_by_events_without_reading_them_all_again(
    tmp_path: Path, client_of: object
) -> None:
    """The watch event holds the change: a change costs no read of every record (it cost a
    round trip and a decode of each record, on every collector, at every change)."""
    async with members(tmp_path) as nodes:
        h1 = EtcdWorld(client_of(nodes), "h1")  # type: ignore[operator]
        client: EtcdClient = client_of(nodes)  # type: ignore[operator]
        h2 = EtcdWorld(client, "h2")
        scans = 0
        scan = client.scan

        async def counted(prefix: bytes) -> object:
            nonlocal scans
            scans += 1
            return await scan(prefix)

        client.scan = counted  # type: ignore[assignment,method-assign]
        await client.put(b"/_mgmt/exported/zz/file/bad", b"not json")

        async def seen(changes: Changes, want: dict[str, str]) -> None:
            async with asyncio.timeout(5):
                while {r.name: r.params["content"] for r in await h2.res_list()} != want:
                    await anext(changes)

        async with h2.res_watch() as changes:
            await seen(changes, {})
            for i in range(5):
                await h1.res_export([_record("h1", "/a", str(i)), _record("h1", "/b", "b")])
                await seen(changes, {"/a": str(i), "/b": "b"})
            await h1.res_export([_record("h1", "/b", "b")])  # a deletion
            await seen(changes, {"/b": "b"})
            await client.delete(b"/_mgmt/exported/zz/file/bad")
            await h1.res_export([])
            await seen(changes, {})
            assert scans == 1
        assert await h2.res_list() == []  # no watch held: the store is read
        assert scans == 2


def _event(kind: int, key: bytes, value: bytes, revision: int) -> object:
    kv = rpc.KeyValue(key=key, value=value, mod_revision=revision)
    return rpc.Event(type=kind, kv=kv)


def test_the_mirror_keeps_the_newest_revision_of_each_key() -> None:
    """Events that a read already reflects are dropped; newer ones win over the read; a watch
    created again makes the mirror unsynced until the next read."""
    mirror = Mirror()
    mirror.held = 1
    assert not mirror.synced
    generation = mirror.generation
    mirror.apply([_event(rpc.Event.PUT, b"a", b"new", 12)])  # arrives during the read
    mirror.apply([_event(rpc.Event.DELETE, b"c", b"", 11)])
    mirror.load(Scan({b"a": (b"old", 9), b"b": (b"b", 5), b"c": (b"c", 7)}, 10, 13), generation)
    assert mirror.synced
    assert mirror.values == {b"a": (b"new", 12), b"b": (b"b", 5)}
    mirror.apply([_event(rpc.Event.PUT, b"a", b"stale", 12), _event(rpc.Event.PUT, b"b", b"x", 9)])
    mirror.apply([_event(rpc.Event.PUT, b"c", b"late", 11)])  # not newer than its deletion
    assert mirror.values == {b"a": (b"new", 12), b"b": (b"b", 5)}
    mirror.apply([_event(rpc.Event.DELETE, b"b", b"", 14), _event(rpc.Event.PUT, b"d", b"d", 15)])
    assert mirror.values == {b"a": (b"new", 12), b"d": (b"d", 15)}
    generation = mirror.generation
    mirror.apply(None)  # the watch was created again: changes may have been missed
    assert not mirror.synced
    mirror.load(Scan({b"a": (b"new", 12)}, 16, 16), generation)  # a read from before that
    assert not mirror.synced
    mirror.held = 0
    mirror.load(Scan({}, 17, 17), mirror.generation)
    assert not mirror.synced  # nothing feeds it


async def test_exports_back_to_back_end_as_the_last_one(tmp_path: Path, client_of: object) -> None:
    """Exporting compares with the copy the watch keeps: a write of our own is in it as soon as
    it succeeded, not only when its event arrives (else a quick revert was taken for done)."""
    async with members(tmp_path) as nodes:
        h1 = EtcdWorld(client_of(nodes), "h1")  # type: ignore[operator]
        reader: EtcdClient = client_of(nodes)  # type: ignore[operator]
        async with h1.res_watch() as changes:
            await h1.res_export([_record("h1", "/a", "1"), _record("h1", "/b", "b")])
            await next_change(changes)
            assert len(await h1.res_list()) == 2  # the copy is up to date
            for _ in range(5):
                await h1.res_export([_record("h1", "/a", "2")])
                await h1.res_export([_record("h1", "/a", "1"), _record("h1", "/b", "b")])
        stored, _ = await reader.get_prefix(b"/_mgmt/exported/h1/")
        want = [_record("h1", "/a", "1"), _record("h1", "/b", "b")]
        assert stored == {r.key.encode(): r.to_json().encode() for r in want}


def test_the_mirror_knows_a_write_of_our_own_before_its_event() -> None:
    mirror = Mirror()
    mirror.held = 1
    mirror.load(Scan({b"a": (b"1", 5)}, 6, 6), mirror.generation)
    mirror.change(b"a", b"2", 7)  # our transaction returned revision 7
    mirror.change(b"b", None, 7)  # and deleted a key that was not there
    assert mirror.values == {b"a": (b"2", 7)}
    mirror.change(b"a", b"1", 8)  # reverted at once: compared with "2", written
    mirror.apply([_event(rpc.Event.PUT, b"a", b"2", 7)])  # the first write's event, late
    assert mirror.values == {b"a": (b"1", 8)}


async def test_a_collector_reads_the_exports_again_after_its_member_died(
    tmp_path: Path, client_of: object
) -> None:
    """Changes made while the watch moves to another member are not lost: the copy is read in
    full again once the watch runs there."""
    async with members(tmp_path, 3) as nodes:
        client: EtcdClient = client_of(nodes)  # type: ignore[operator]
        h2 = EtcdWorld(client, "h2")
        async with h2.res_watch() as changes:
            assert await h2.res_list() == []
            victim = next(n for n in nodes if n.client_url == client.endpoint)
            h1 = EtcdWorld(client_of([n for n in nodes if n is not victim]), "h1")  # type: ignore[operator]
            pid = victim.pid
            assert victim.proc.proc is not None
            victim.proc.proc.send_signal(signal.SIGKILL)
            await wait_pid_gone(pid)
            await h1.res_export([_record("h1", "/a", "meanwhile")])
            async with asyncio.timeout(10):
                while [r.params["content"] for r in await h2.res_list()] != ["meanwhile"]:
                    await anext(changes)
