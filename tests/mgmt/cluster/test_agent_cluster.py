"""The agent in-process: the cluster starts only when a graph first needs it (even at a swap)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mgmt.agent import Agent, load
from mgmt.config import Config, ExitCode
from tests.mgmt.cluster.helpers import (
    ELECTION_MS,
    HEARTBEAT_MS,
    free_ports,
    pid_alive,
    wait_pid_gone,
)

PLAIN = "graph: g\nresources:\n  noop:\n    - name: n\n"
WITH_KV = PLAIN + "  kv:\n    - name: app/mode\n      value: blue\n"


async def test_a_swap_that_needs_the_cluster_starts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_port, peer_port = free_ports(2)  # the defaults, here: no cluster flag is given
    monkeypatch.setattr("mgmt.cluster.options.DEFAULT_CLIENT_ADDR", f"127.0.0.1:{client_port}")
    monkeypatch.setattr("mgmt.cluster.options.DEFAULT_SERVER_ADDR", f"127.0.0.1:{peer_port}")
    graph = tmp_path / "graph.yaml"
    graph.write_text(PLAIN)
    config = Config(
        file=graph,
        prefix=tmp_path / "prefix",
        hostname="a1",
        etcd_heartbeat_interval=HEARTBEAT_MS,
        etcd_election_timeout=ELECTION_MS,
    )
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    try:
        async with asyncio.timeout(10):
            await agent.swapped.wait()
        assert agent.cluster is None and agent.engine.world is None
        agent.swapped.clear()
        graph.write_text(WITH_KV)
        async with asyncio.timeout(20):
            await agent.swapped.wait()
        assert agent.cluster is not None and agent.engine.world is not None
        world = agent.engine.world
        async with asyncio.timeout(10), world.str_watch("app/mode") as changes:
            while await world.str_get("app/mode") != "blue":
                await anext(changes)
        member = agent.cluster.cluster.member
        assert member is not None and member.pid is not None
        pid = member.pid
    finally:
        agent.stopping.set()
        async with asyncio.timeout(20):
            assert await runner == ExitCode.OK
    await wait_pid_gone(pid)
    assert not pid_alive(pid)
