"""world.getval / world.kvlookup on the in-memory World: streams of the cluster's strings.

The same functions against real etcd and in the agent: tests/mgmt/lang/test_world_etcd.py.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.world import MemoryStore, MemoryWorld
from mgmt.lang.errors import FuncError, NotReady
from mgmt.lang.funcs import Context
from mgmt.lang.runtime import ResSpec, Runtime
from mgmt.lang.source import LangSource
from mgmt.lang.streams import WorldRef
from mgmt.lang.values import FrozenDict, Struct
from tests.mgmt.lang.helpers import binding, compile_ok

PROGRAM = """
import "world"
import "fmt"
$v = world.getval("app/mode")
$seen = world.kvlookup("app/seen")
noop "n" { comment => fmt.printf("%s %t %v", $v->value, $v->exists, $seen) }
"""


class Driven:
    """A runtime whose streams' emissions are awaited (no sleeping)."""

    def __init__(self, src: str, world: MemoryWorld | None) -> None:
        self.kicked = asyncio.Event()
        self.ref = WorldRef()
        if world is not None:
            self.ref.attach(world)
        self.rt = Runtime(
            compile_ok(src), ctx=Context("h1", world=self.ref), notify=self.kicked.set
        )

    async def until(self, wanted: Any, timeout: float = 5) -> None:
        """Evaluate at every emission until the noop's comment is `wanted`."""
        async with asyncio.timeout(timeout):
            while True:
                self.kicked.clear()
                if self.comment() == wanted:
                    return
                await self.kicked.wait()

    def comment(self) -> str | None:
        """Evaluate; the noop's comment (None while the program has no graph)."""
        _changed, items, error = self.rt.evaluate()
        if error is not None:
            return None
        return next(dict(i.params).get("comment") for i in items if isinstance(i, ResSpec))


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


async def test_getval_and_kvlookup_follow_their_keys(store: MemoryStore) -> None:
    me, other = MemoryWorld("h1", store), MemoryWorld("h2", store)
    driven = Driven(PROGRAM, me)
    try:
        await driven.until(" false {}")
        await other.str_set("app/mode", "blue")
        await driven.until("blue true {}")
        await me.str_map_set("app/seen", "yes")
        await other.str_map_set("app/seen", "no")
        await driven.until('blue true {"h1": "yes", "h2": "no"}')
        await other.str_set("app/mode", "")  # empty, but it exists
        await driven.until(' true {"h1": "yes", "h2": "no"}')
        await other.str_del("app/mode")
        await other.str_map_del("app/seen")
        await driven.until(' false {"h1": "yes"}')
        await other.str_set("app/mode/deeper", "x")  # another key: no change
        await me.str_set("app/seen/h3/nested", "x")  # not a host's entry
        await driven.until(' false {"h1": "yes"}')
    finally:
        await driven.rt.close()
    assert not driven.rt._tasks  # every watch ended


async def test_values_are_typed_struct_and_map(store: MemoryStore) -> None:
    world = MemoryWorld("h1", store)
    await world.str_set("k", "v")
    await world.str_map_set("m", "x")
    src = """
    import "world"
    $g = world.getval("k")
    $m = world.kvlookup("m")
    noop "n" { comment => if $g->exists and len($m) == 1 { "both" } else { "not yet" } }
    """
    driven = Driven(textwrap.dedent(src), world)
    try:
        await driven.until("both")
        assert binding(driven.rt, "g") == Struct(value="v", exists=True)
        assert binding(driven.rt, "m") == FrozenDict({"h1": "x"})
    finally:
        await driven.rt.close()


async def test_they_wait_for_the_world_and_report_a_lost_cluster(store: MemoryStore) -> None:
    driven = Driven(PROGRAM, None)
    try:
        _changed, _items, error = driven.rt.evaluate()
        assert isinstance(error, NotReady) and "world.getval has no value yet" in str(error)
        assert driven.rt.waiting
        store.set_available(False)
        driven.ref.attach(MemoryWorld("h1", store))
        async with asyncio.timeout(5):
            while not isinstance(driven.rt.evaluate()[2], FuncError):
                driven.kicked.clear()
                await driven.kicked.wait()
        assert "world.getval: cannot read app/mode: the cluster is unreachable" in str(
            driven.rt.evaluate()[2]
        )
        store.set_available(True)  # every watch signals once the cluster is back
        await driven.until(" false {}")
    finally:
        await driven.rt.close()


async def test_a_bad_key_is_a_run_time_error() -> None:
    driven = Driven('import "world"\nnoop "n" { comment => world.getval("/x")->value }\n', None)
    _changed, _items, error = driven.rt.evaluate()
    assert isinstance(error, FuncError)
    assert "world.getval: expected a non-empty key" in str(error)
    await driven.rt.close()


async def test_the_key_may_change_a_new_watch_replaces_the_old(store: MemoryStore) -> None:
    world = MemoryWorld("h1", store)
    await world.str_set("which", "a")
    await world.str_set("a", "from a")
    await world.str_set("b", "from b")
    src = 'import "world"\nnoop "n" { comment => world.getval(world.getval("which")->value)->value }\n'
    driven = Driven(src, world)
    try:
        await driven.until("from a")
        await world.str_set("which", "b")
        await driven.until("from b")
        assert len(driven.rt.streams) == 2  # "which" and "b": the watch of "a" is gone
        await driven.rt.reap()
        assert len(store._watchers) == 2
    finally:
        await driven.rt.close()
    assert store._watchers == []


# the source: what the agent sees -------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "main.mcl"
    path.write_text(textwrap.dedent(text))
    return path


async def test_the_source_asks_for_the_cluster_then_applies_the_settled_graph(
    tmp_path: Path, store: MemoryStore
) -> None:
    world = MemoryWorld("h1", store)
    await world.str_set("app/mode", "green")
    source = await LangSource.open(write(tmp_path, PROGRAM), hostname="h1", watch=False)
    try:
        first = source.first
        assert source.needs_cluster and first is not None and first.cluster
        assert len(first.graph) == 0 and source.graphs == 0  # a placeholder: no graph yet
        settled = await source.attach_world(world)
        assert settled is not None and settled.cluster and source.graphs == 1
        (res,) = settled.graph
        assert res.comment == "green true {}"  # type: ignore[attr-defined]
        await world.str_set("app/mode", "red")
        async with asyncio.timeout(5):
            following = await anext(aiter(source))
        assert following.graph.vertices[("noop", "n")].comment == "red true {}"  # type: ignore[attr-defined]
    finally:
        await source.aclose()


async def test_a_program_without_world_needs_no_cluster(tmp_path: Path) -> None:
    source = await LangSource.open(write(tmp_path, 'noop "n" {}\n'), hostname="h1", watch=False)
    try:
        assert source.first is not None and not source.first.cluster
        assert not source.needs_cluster
    finally:
        await source.aclose()


async def test_exchange_writes_this_hosts_value_and_follows_everyones(
    store: MemoryStore, tmp_path: Path
) -> None:
    src = """
    import "fmt"
    import "os"
    import "world"
    noop "n" {{ comment => fmt.printf("%v", world.exchange("ns", os.readfile("{path}"))) }}
    """
    other = MemoryWorld("h2", store)
    await other.str_map_set("exchange/ns", "theirs")
    driven_path = tmp_path / "value"
    driven_path.write_text("one")
    driven = Driven(textwrap.dedent(src.format(path=driven_path)), MemoryWorld("h1", store))
    try:
        await driven.until('{"h1": "one", "h2": "theirs"}')
        driven_path.write_text("two")  # a new value is written by the same stream
        await driven.until('{"h1": "two", "h2": "theirs"}')
        assert [s.name for s, _ in driven.rt.streams.values()].count("world.exchange") == 1
        await other.str_map_del("exchange/ns")
        await driven.until('{"h1": "two"}')
    finally:
        await driven.rt.close()


async def test_schedule_picks_up_to_max_hosts_in_join_order(store: MemoryStore) -> None:
    src = """
    import "fmt"
    import "world"
    $opts = struct{max => 2, strategy => "rr"}
    noop "n" { comment => fmt.printf("%v", world.schedule("pool", $opts)) }
    """
    early, late = MemoryWorld("h9", store), MemoryWorld("h0", store)
    async with early.schedule_join("pool", 10):
        driven = Driven(textwrap.dedent(src), MemoryWorld("h5", store))
        try:
            await driven.until('["h9", "h5"]')
            async with late.schedule_join("pool", 10):
                await driven.until('["h9", "h5"]')  # joined last: not chosen
                assert await late.schedule_hosts("pool") == ["h9", "h5", "h0"]
        finally:
            await driven.rt.close()
    assert await early.schedule_hosts("pool") == []  # everyone left, h5 when its stream stopped


async def test_schedule_memberships_are_counted_per_namespace(store: MemoryStore) -> None:
    world, other = MemoryWorld("h1", store), MemoryWorld("h2", store)
    async with world.schedule_join("pool", 10):
        async with world.schedule_join("pool", 10), world.schedule_join("pool/sub", 10):
            assert await other.schedule_hosts("pool") == ["h1"]  # not "sub/h1"
            assert await other.schedule_hosts("pool/sub") == ["h1"]
        assert await other.schedule_hosts("pool") == ["h1"]  # one join is left
        assert await other.schedule_hosts("pool/sub") == []
    assert await other.schedule_hosts("pool") == []


async def test_schedule_alpha_and_bad_options(store: MemoryStore) -> None:
    world = MemoryWorld("h5", store)
    async with MemoryWorld("h9", store).schedule_join("pool", 10):
        alpha = Driven(
            'import "fmt"\nimport "world"\n'
            'noop "n" { comment => fmt.printf("%v", world.schedule("pool", '
            'struct{strategy => "alpha", max => 5})) }\n',
            world,
        )
        bad = Driven(
            'import "fmt"\nimport "world"\n$s = world.schedule("pool", struct{strategy => "best"})\n'
            'noop "n" { comment => fmt.printf("%d", len($s)) }\n',
            world,
        )
        try:
            await alpha.until('["h5", "h9"]')
            _changed, _items, error = bad.rt.evaluate()
            assert error is not None and "unknown strategy 'best'" in str(error)
        finally:
            await alpha.rt.close()
            await bad.rt.close()


async def test_schedule_with_only_a_namespace_reads_without_joining(store: MemoryStore) -> None:
    """mgmt's current world.schedule(namespace): the pool as it is (the `schedule` resource
    joins); this host is not added by reading it."""
    src = 'import "fmt"\nimport "world"\nnoop "n" { comment => fmt.printf("%v", world.schedule("pool")) }\n'
    reader = MemoryWorld("h5", store)
    driven = Driven(src, reader)
    try:
        await driven.until("[]")
        async with MemoryWorld("h9", store).schedule_join("pool", 10):
            await driven.until('["h9"]')
            async with MemoryWorld("h0", store).schedule_join("pool", 10):
                await driven.until('["h9", "h0"]')
            await driven.until('["h9"]')
        assert await reader.schedule_hosts("pool") == []
    finally:
        await driven.rt.close()
