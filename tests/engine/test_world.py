"""The World protocol's pieces and its in-memory implementation, with a real engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import resources  # noqa: F401  # the kind loader
from engine.engine import Engine
from engine.errors import ValidationError, WorldError
from engine.graph import Graph
from engine.meta import Meta
from engine.world import Exported, MemoryStore, MemoryWorld
from resources.file import FileRes
from resources.kv import KVRes
from tests.engine.conftest import settle


def test_exported_records_round_trip() -> None:
    res = FileRes(name="/srv/motd", content="hi\n", meta=Meta(export=["web1"], retry=2))
    record = Exported.of("db1", res)
    assert record.key == "/_mgmt/exported/db1/file//srv/motd"
    assert record.meta == {"export": ["web1"], "retry": 2}  # only what differs from defaults
    again = Exported.from_key(record.key, record.to_json())
    assert again == record
    built = again.build()
    assert built.cmp(res) and built.meta.retry == 2
    assert record.visible_to("web1") and not record.visible_to("web2")
    assert Exported.of("db1", FileRes(name="/x", content="")).visible_to("anyone")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("/_mgmt/exported/h1/file", "{}", "not an exported resource key"),
        ("/elsewhere/h1/file/x", '{"params": {}}', "not an exported resource key"),
        ("/_mgmt/exported/h1/file/x", "not json", "not an exported resource record"),
        ("/_mgmt/exported/h1/file/x", '{"params": []}', "must be mappings"),
    ],
)
def test_malformed_records_are_world_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(WorldError, match=message):
        Exported.from_key(key, value)


def test_a_record_this_host_cannot_build_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="unknown kind"):
        Exported("h", "nosuchkind", "x").build()
    with pytest.raises(ValidationError, match="contnet"):
        Exported("h", "file", "/x", {"contnet": "typo"}).build()


async def test_memory_world_watches_coalesce_and_survive_an_outage() -> None:
    store = MemoryStore()
    a, b = MemoryWorld("a", store), MemoryWorld("b", store)
    async with a.str_watch("k") as changes, a.res_watch() as exported:
        for value in "123":
            await b.str_set("k", value)
        async with asyncio.timeout(1):
            await anext(changes)  # three writes, one wake-up: the reader re-reads
        assert await a.str_get("k") == "3"
        await b.res_export([Exported.of("b", FileRes(name="/f", content="x"))])
        async with asyncio.timeout(1):
            await anext(exported)
        assert [r.host for r in await a.res_list()] == ["b"]
        store.set_available(False)
        with pytest.raises(WorldError):
            await a.str_get("k")
        store.set_available(True)  # back: watchers hear about it (things may have changed)
        async with asyncio.timeout(1):
            await anext(changes)
        await b.res_export([])
        assert await a.res_list() == []


async def test_engine_with_an_in_memory_world_repairs_kv_drift(tmp_path: Path) -> None:
    store = MemoryStore()
    world = MemoryWorld("h1", store)
    engine = Engine(hostname="h1", prefix=tmp_path, world=world)
    graph = Graph("kv")
    graph.add(KVRes(name="app/version", value="3"))
    try:
        await engine.apply(graph)
        await settle(engine)
        assert await world.str_get("app/version") == "3"
        changed = asyncio.Event()
        async with world.str_watch("app/version") as changes:
            await MemoryWorld("h2", store).str_set("app/version", "1")
            async with asyncio.timeout(5):
                while await world.str_get("app/version") != "3":
                    await anext(changes)
            changed.set()
        assert changed.is_set()
    finally:
        await engine.stop()
