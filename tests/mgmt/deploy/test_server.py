"""`mgmt deploy`'s agent side (mgmt.deploy.server): its socket, at a real prefix."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mgmt.deploy import client as thin
from mgmt.deploy.policy import Policy
from mgmt.deploy.server import DeployServer


async def test_the_socket_of_a_deep_prefix_answers_and_goes_at_the_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`<prefix>/deploy.sock` longer than a Unix socket's address (107 bytes) is bound and
    reached through a descriptor of the prefix (mgmt.sockaddr): the command's connection gets
    the agent's answer (here: no cluster yet, so the command pushes itself). At the close the
    file goes, by its path: not by the name the socket was bound with (/proc/self/fd/N/...,
    N a file's by then), which asyncio 3.13 tried, logging 'Unable to clean up listening UNIX
    socket' (mgmt.sockaddr.SERVER)."""
    prefix = tmp_path / ("deep" * 15) / ("er" * 30) / "prefix"
    prefix.mkdir(parents=True, mode=0o700)
    assert len(os.fsencode(prefix / thin.SOCKET)) > 107
    cluster: Any = SimpleNamespace(connected=asyncio.Event())  # never connected: not under test
    server = DeployServer(prefix, cluster, Policy(None, False, False, 0), "h")
    await server.start()
    plain = os.open(tmp_path / "plain", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        sock = await asyncio.to_thread(thin._connect, str(prefix))
        try:  # (the C module's socket, no `with`)
            thin.send(sock, {"force": False})
            answer = await asyncio.to_thread(thin.receive, sock)
        finally:
            sock.close()
        assert answer == {"fallback": "the agent is not connected to the cluster"}, answer
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            await server.aclose()
    finally:
        os.close(plain)
        await server.aclose()
    assert not (prefix / thin.SOCKET).exists()
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
