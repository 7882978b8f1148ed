"""The status server's answers to malformed requests, over a real loopback connection."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from engine.engine import Engine
from mgmt.status.model import StatusModel
from mgmt.status.server import MAX_REQUEST, StatusServer, remove_stale, to_dot


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"200"),
        (b"GET /api/status HTTP/1.1\r\nHost: evil.example\r\n\r\n", b"403"),
        (b"POST /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n", b"405"),
        # With a body: the method is refused first (was 413: operator tester, 2026-12-05).
        (b"POST /api/status HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", b"405"),
        (b"GET /api/status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"413"),
        (b"GET /x HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST + b"\r\n\r\n", b"431"),
        (b"NONSENSE\r\n\r\n", b"400"),
    ],
)
async def test_answers(tmp_path: Path, request_bytes: bytes, status: bytes) -> None:
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    server = StatusServer(model)
    port = _port()
    await server.listen_tcp("127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == status, answer[:200]
        assert b"Content-Security-Policy: default-src 'self'" in answer
        if status == b"405":
            assert b"\r\nAllow: GET, HEAD\r\n" in answer, answer[:200]
    finally:
        await server.close()
        model.close()
        await engine.stop(graceful=False)


def test_a_thousand_resources_without_edges_are_laid_out_as_a_grid() -> None:
    """Graphviz stacked 1,000 unconnected files in one column (274 x 47,049 points: the page
    fitted it at a scale of 0.007); in rows they make a picture about as wide as it is tall.
    Resources with edges keep their layout."""
    vertices = [
        {"id": f"file[f{i}]", "kind": "file", "name": f"f{i}", "state": "converged"}
        for i in range(1000)
    ] + [{"id": "exec[e]", "kind": "exec", "name": "e", "state": "failed"}]
    edges = [{"from": "file[f0]", "to": "exec[e]", "notify": True}]
    source = to_dot({"vertices": vertices, "edges": edges})
    assert '"file[f0]" -> "file[f1]"' not in source  # f0 has an edge: not in a row
    assert source.count("[style=invis]") > 900  # in rows
    dot = shutil.which("dot")
    assert dot is not None, "graphviz is missing: scripts/install.sh --test installs it"
    svg = subprocess.run(
        [dot, "-Tsvg"], input=source.encode(), capture_output=True, check=True, timeout=120
    ).stdout
    match = re.search(rb'<svg width="(\d+)pt" height="(\d+)pt"', svg)
    assert match is not None
    width, height = int(match[1]), int(match[2])
    assert width / 3 < height < width, (width, height)


async def test_the_unix_socket_is_0600_from_its_bind_and_replaces_a_killed_agents(
    tmp_path: Path,
) -> None:
    """The socket's file is made 0600 by the bind itself (no chmod after: no instant at the
    umask's mode), even under umask 0; a socket a killed agent left is removed first
    (`remove_stale`, as the agent does in its hop to a thread), and the new one answers."""
    path = tmp_path / "status.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(path))  # a killed agent's: bound, nobody listening
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    server = StatusServer(model)
    old = os.umask(0)
    try:
        with pytest.raises(OSError):  # bind refuses a path in use: it must be removed first
            await server.listen_unix(path)
        await asyncio.to_thread(remove_stale, path)
        await server.listen_unix(path)
    finally:
        os.umask(old)
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == b"200", answer[:200]
    finally:
        await server.close()
        model.close()
        await engine.stop(graceful=False)


async def test_a_stream_that_is_not_read_is_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading was 'dropped' after SEND_TIMEOUT with close(), which waits
    to send what is buffered: its connection and descriptor stayed until the client read or
    went away. Now it is reset."""
    import select

    from mgmt.status import server as status_server

    monkeypatch.setattr(status_server, "SEND_TIMEOUT", 0.5)
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    server = StatusServer(model)
    port = _port()
    await server.listen_tcp("127.0.0.1", port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        await asyncio.to_thread(sock.connect, ("127.0.0.1", port))
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await asyncio.to_thread(sock.recv, 12)) == b"HTTP/1.1 200"

        def reset() -> bool:
            poll = select.poll()
            poll.register(sock, select.POLLERR | select.POLLHUP)
            return bool(poll.poll(30_000))

        waiting = asyncio.create_task(asyncio.to_thread(reset))
        for i in range(200):  # 8 MB: more than the buffers hold (queued: QUEUE is 1,000)
            model.set_program_error("x" * 40_000 + str(i))
        async with asyncio.timeout(60):
            assert await waiting
    finally:
        sock.close()
        await server.close()
        model.close()
        await engine.stop(graceful=False)
