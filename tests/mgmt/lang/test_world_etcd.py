"""world.getval / world.kvlookup against real etcd, and the agent starting the cluster for a
program that imports "world" (at start, at an edit, and for a cron run's first graph)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mgmt.agent import Agent, open_lang
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.world import EtcdWorld
from mgmt.config import Config, ExitCode
from mgmt.lang.funcs import Context
from mgmt.lang.runtime import ResSpec, Runtime
from mgmt.lang.streams import WorldRef
from tests.e2e.helpers import has_content, wait_path
from tests.mgmt.cluster.helpers import (
    ELECTION_MS,
    HEARTBEAT_MS,
    free_ports,
    members,
    pid_alive,
    wait_pid_gone,
)
from tests.mgmt.lang.helpers import compile_ok


async def test_getval_and_kvlookup_on_etcd(tmp_path: Path) -> None:
    src = """
    import "fmt"
    import "world"
    $v = world.getval("app/mode")
    noop "n" { comment => fmt.printf("%s %t %v", $v->value, $v->exists, world.kvlookup("seen")) }
    """
    async with members(tmp_path) as nodes:
        client = EtcdClient([nodes[0].client_url], call_timeout=0.5)
        kicked = asyncio.Event()
        ref = WorldRef()
        rt = Runtime(
            compile_ok(textwrap.dedent(src)), ctx=Context("h1", world=ref), notify=kicked.set
        )

        async def until(wanted: str) -> None:
            async with asyncio.timeout(10):
                while True:
                    kicked.clear()
                    _changed, items, error = rt.evaluate()
                    if error is None and items[0].params[0][1] == wanted:
                        assert isinstance(items[0], ResSpec)
                        return
                    await kicked.wait()

        try:
            me, other = EtcdWorld(client, "h1"), EtcdWorld(client, "h2")
            ref.attach(me)
            await until(" false {}")
            await other.str_set("app/mode", "blue")
            await until("blue true {}")
            await me.str_map_set("seen", "yes")
            await other.str_map_set("seen", "no")
            await until('blue true {"h1": "yes", "h2": "no"}')
            await other.str_del("app/mode")
            await until(' false {"h1": "yes", "h2": "no"}')
        finally:
            await rt.close()
            await client.close()


@pytest.fixture
def default_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The agent's default etcd URLs on free ports: no cluster flag is given."""
    client_port, peer_port = free_ports(2)
    monkeypatch.setattr("mgmt.cluster.options.DEFAULT_CLIENT_ADDR", f"127.0.0.1:{client_port}")
    monkeypatch.setattr("mgmt.cluster.options.DEFAULT_SERVER_ADDR", f"127.0.0.1:{peer_port}")
    yield


def lang_config(tmp_path: Path, program: str, **kwargs: object) -> Config:
    path = tmp_path / "main.mcl"
    path.write_text(textwrap.dedent(program).replace("TMP", str(tmp_path)))
    return Config(
        frontend="lang",
        file=path,
        prefix=tmp_path / "prefix",
        hostname="a1",
        etcd_heartbeat_interval=HEARTBEAT_MS,
        etcd_election_timeout=ELECTION_MS,
        **kwargs,  # type: ignore[arg-type]
    )


async def run(config: Config, etcd_pids: list[int]) -> ExitCode:
    """What `mgmt run` does for a program (without its logging set-up)."""
    source, first = await open_lang(config)
    assert first is not None  # a program that reads the world: a placeholder at first
    agent = Agent(config, config.prefix, source)
    code = await agent.run(first)
    assert agent.cluster is not None and agent.cluster.cluster.member is not None
    assert agent.cluster.cluster.member.pid is not None
    etcd_pids.append(agent.cluster.cluster.member.pid)
    return code


@pytest.fixture
async def stopped_etcd() -> AsyncIterator[list[int]]:
    """Etcd pids to check gone at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        await wait_pid_gone(pid)
        assert not pid_alive(pid)


PLAIN = """
file "TMP/out" { content => "no world\\n" }
"""

WITH_WORLD = """
import "fmt"
import "world"
kv "mode" { key => "app/mode", value => "blue" }
kv "seen" { key => "app/seen", value => "yes", mapped => true }
$mode = world.getval("app/mode")
$text = if $mode->exists { "mode " + $mode->value } else { "no mode" }
file "TMP/out" { content => fmt.printf("%s, seen: %v\\n", $text, world.kvlookup("app/seen")) }
"""


async def test_an_edit_that_imports_world_starts_the_cluster(
    tmp_path: Path, default_urls: None, stopped_etcd: list[int]
) -> None:
    config = lang_config(tmp_path, PLAIN)
    source, first = await open_lang(config)
    assert first is not None and not first.cluster
    agent = Agent(config, config.prefix, source)
    runner = asyncio.create_task(agent.run(first))
    try:
        await wait_path(tmp_path / "out", has_content("no world\n"))
        assert agent.cluster is None and agent.engine.world is None
        assert config.file is not None
        config.file.write_text(WITH_WORLD.replace("TMP", str(tmp_path)))
        # The program's own kv resources write the keys; its world functions see them.
        await wait_path(
            tmp_path / "out", has_content('mode blue, seen: {"a1": "yes"}\n'), timeout=20
        )
        assert agent.cluster is not None
        member = agent.cluster.cluster.member
        assert member is not None and member.pid is not None
        stopped_etcd.append(member.pid)
        # Another host's entry, written elsewhere: the program follows it.
        other = EtcdWorld(agent.cluster.world.client, "other")
        await other.str_map_set("app/seen", "hi")
        await wait_path(
            tmp_path / "out", has_content('mode blue, seen: {"a1": "yes", "other": "hi"}\n')
        )
        await other.str_map_del("app/seen")
        await wait_path(tmp_path / "out", has_content('mode blue, seen: {"a1": "yes"}\n'))
    finally:
        agent.stopping.set()
        async with asyncio.timeout(20):
            assert await runner == ExitCode.OK


async def test_a_cron_runs_first_graph_has_the_worlds_values(
    tmp_path: Path, default_urls: None, stopped_etcd: list[int]
) -> None:
    """A cron run's first graph waits for its world reads: here, the key an earlier run wrote
    (the one-member cluster keeps its data in the prefix between runs)."""
    writer = lang_config(
        tmp_path, 'kv "mode" { key => "app/mode", value => "green" }\n', converged_timeout=0
    )
    assert await run(writer, stopped_etcd) == ExitCode.OK
    reader = lang_config(
        tmp_path,
        """
        import "fmt"
        import "world"
        $mode = world.getval("app/mode")
        file "TMP/out" { content => fmt.printf("%s %t\\n", $mode->value, $mode->exists) }
        """,
        converged_timeout=0,
    )
    assert await run(reader, stopped_etcd) == ExitCode.OK
    assert (tmp_path / "out").read_text() == "green true\n"


async def test_schedule_on_etcd_follows_join_order_and_leaving(tmp_path: Path) -> None:
    """Hosts are scheduled in the order they joined (etcd's creation revision), each bound to
    its own lease; one that leaves (its stream stops: the lease is revoked) is replaced."""
    async with members(tmp_path) as nodes:
        client = EtcdClient([nodes[0].client_url], call_timeout=0.5)
        h9, h5, h0 = (EtcdWorld(client, h) for h in ("h9", "h5", "h0"))

        async def hosts_become(want: list[str]) -> None:
            async with h0.schedule_watch("pool") as changes, asyncio.timeout(10):
                while await h0.schedule_hosts("pool") != want:  # read after subscribing
                    await anext(changes)

        try:
            async with h9.schedule_join("pool", 5):
                assert await h0.schedule_hosts("pool") == ["h9"]  # written once joined
                # A second call site in the same namespace, and a sub-pool (not the pool).
                async with h9.schedule_join("pool", 5), h9.schedule_join("pool/sub", 5):
                    assert await h0.schedule_hosts("pool/sub") == ["h9"]
                    assert await h0.schedule_hosts("pool") == ["h9"]
                assert await h0.schedule_hosts("pool") == ["h9"]  # still in: one join is left
                await hosts_become(["h9"])
                async with h5.schedule_join("pool", 5):
                    await hosts_become(["h9", "h5"])
                    async with h0.schedule_join("pool", 5):
                        await hosts_become(["h9", "h5", "h0"])
                    assert await h0.schedule_hosts("pool") == ["h9", "h5"]  # revoked on leaving
                await hosts_become(["h9"])
            assert await h0.schedule_hosts("pool") == []
        finally:
            await client.close()
