"""test and value: their params, logs and send/recv, in a real engine (and value's store on
disk, across a restart)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from engine.engine import Engine, Status
from engine.errors import ValidationError
from engine.graph import Edge, Graph
from engine.local import LocalValues
from resources.test import TestRes
from resources.value import ValueRes
from tests.engine.conftest import settle


def graph_of(*resources: object) -> Graph:
    graph = Graph("t")
    for res in resources:
        graph.add(res)  # type: ignore[arg-type]
    return graph


def chain() -> Graph:
    """mgmt's examples/lang/value-resource.mcl: value -> value -> test, along send/recv."""
    graph = graph_of(
        ValueRes(name="hello1", any="wow"),
        ValueRes(name="hello2", any="whatever"),
        TestRes(name="test", onlyshow=["AnotherStr"], expectrecv=["anotherstr"]),
    )
    graph.connect(("value", "hello1"), ("value", "hello2"), Edge(sendrecv=(("any", "any"),)))
    graph.connect(("value", "hello2"), ("test", "test"), Edge(sendrecv=(("any", "anotherstr"),)))
    return graph


async def run(engine: Engine, graph: Graph) -> None:
    await engine.apply(graph)
    await settle(engine)


async def test_values_flow_and_are_stored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine = Engine(hostname="h", prefix=tmp_path)
    try:
        await run(engine, chain())
        assert all(v.status is Status.OK for v in engine.vertices.values())
        assert engine.local.get("hello1") == "wow"
        assert engine.local.get("hello2") == "wow"  # received, replacing its param
        test = engine.vertices[("test", "test")].res
        assert isinstance(test, TestRes)
        assert test.anotherstr == "wow"
        assert "test[test]: AnotherStr: wow" in caplog.text
        assert "Bool:" not in caplog.text  # onlyshow
        assert engine.vertices[("test", "test")].sent == {"hello": "", "answer": 42}
        # Drift: another writer of the local values (the language, a swap) is repaired.
        await asyncio.to_thread(engine.local.set, "hello1", "changed")
        await settle(engine, lambda: engine.local.get("hello1") == "wow")
    finally:
        await engine.stop()
    # A restart finds the stored values: nothing changes.
    assert (tmp_path / "local" / "value" / "hello1.json").stat().st_mode & 0o077 == 0
    caplog.clear()
    engine = Engine(hostname="h", prefix=tmp_path)
    try:
        await run(engine, chain())
        assert not any(v.changed_last for v in engine.vertices.values())
    finally:
        await engine.stop()


async def test_noop_stores_nothing_but_sends(tmp_path: Path) -> None:
    engine = Engine(hostname="h", prefix=tmp_path, noop=True)
    try:
        await run(engine, chain())
        assert engine.local.get("hello1") is None
        test = engine.vertices[("test", "test")].res
        assert isinstance(test, TestRes) and test.anotherstr == "wow"
    finally:
        await engine.stop()


async def test_no_value_deletes_the_stored_one(tmp_path: Path) -> None:
    LocalValues(tmp_path).set("old", [1, 2])
    engine = Engine(hostname="h", prefix=tmp_path)
    try:
        await run(engine, graph_of(ValueRes(name="old")))
        assert engine.local.get("old") is None
        assert not (tmp_path / "local" / "value" / "old.json").exists()
    finally:
        await engine.stop()


async def test_expectrecv_fails_on_a_different_count(tmp_path: Path) -> None:
    engine = Engine(hostname="h", prefix=tmp_path)
    try:
        await run(engine, graph_of(TestRes(name="t", expectrecv=["anotherstr"])))
        vertex = engine.vertices[("test", "t")]
        assert vertex.failed
        assert "the received keys differ from expected" in str(vertex.error)
    finally:
        await engine.stop()


def test_alwaysgroup_and_comparefail(tmp_path: Path) -> None:
    graph = graph_of(TestRes(name="a", alwaysgroup=True), TestRes(name="b"), TestRes(name="c"))
    Engine(hostname="h", prefix=tmp_path).prepare(graph)
    assert list(graph.vertices) == [("test", "a")]
    assert not TestRes(name="x", comparefail=True).cmp(TestRes(name="x", comparefail=True))
    assert TestRes(name="x", int8=3).cmp(TestRes(name="x", int8=3))


async def test_a_grouped_test_resource_runs_and_shows_its_members(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Grouped (alwaysgroup), a test resource's check shows each member's fields by its own
    handle: a member has none (before 2026-12-06: `test[b]: used before init()`, failed)."""
    graph = graph_of(TestRes(name="a", alwaysgroup=True), TestRes(name="b", stringptr="bee"))
    engine = Engine(hostname="h", prefix=tmp_path)
    try:
        with caplog.at_level(logging.INFO):
            await run(engine, graph)
        vertex = engine.vertices[("test", "a")]
        assert vertex.status is Status.OK and not vertex.failed, vertex.error
        assert "test[b]: StringPtr: bee" in caplog.text
    finally:
        await engine.stop()


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ({"validatebool": True}, "validatebool", "the validate param was set to true"),
        ({"validateerror": "boom"}, "validateerror", "was set to: boom"),
        ({"int8": 128}, "int8", "from -128 to 127"),
        ({"uint8": -1}, "uint8", "from 0 to 255"),
        ({"onlyshow": ["Nope"]}, "onlyshow", "unknown field 'Nope'"),
    ],
)
def test_test_validation(params: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        TestRes(name="t", **params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


def test_value_must_be_plain_data() -> None:
    with pytest.raises(ValidationError) as err:
        ValueRes(name="v", any=object()).validate()
    assert err.value.key == "any"
