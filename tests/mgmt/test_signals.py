"""A stop signal reaches a busy agent (issue 16): a daemon of 10,000 resources ignored two
SIGTERMs, their wakeup bytes dropped from the loop's self-pipe, which thread completions
(`call_soon_threadsafe`, one byte each) had filled. Here the pipe is filled the same way."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from mgmt.agent import Agent, load
from mgmt.config import Config, ExitCode

GRAPH = """
graph: g
resources:
  noop:
    - name: n
"""


def _fill_self_pipe_then_signal(loop: asyncio.AbstractEventLoop) -> None:
    """What a busy loop sees: many wakeups pending (never read meanwhile), then a SIGTERM."""
    for _ in range(20_000):  # far beyond a socket buffer of one-byte writes
        loop.call_soon_threadsafe(lambda: None)
    os.kill(os.getpid(), signal.SIGTERM)


async def test_sigterm_stops_an_agent_whose_self_pipe_is_full(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)
    config = Config(file=path, prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    async with asyncio.timeout(10):
        await agent.converger.converged.wait()
    _fill_self_pipe_then_signal(asyncio.get_running_loop())
    async with asyncio.timeout(10):  # generous: it never returned before the fix
        await agent.stopping.wait()
        assert await runner == ExitCode.OK


async def test_a_second_sigterm_forces_the_stop(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)
    config = Config(file=path, prefix=tmp_path / "prefix", hostname="t")
    agent = Agent(config, config.prefix)
    runner = asyncio.create_task(agent.run(load(config)))
    async with asyncio.timeout(10):
        await agent.converger.converged.wait()
    loop = asyncio.get_running_loop()
    _fill_self_pipe_then_signal(loop)
    _fill_self_pipe_then_signal(loop)
    async with asyncio.timeout(10):
        assert await runner == ExitCode.FAILED  # forced: exit 1
