"""The status server's answers to malformed requests, over a real loopback connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.engine import Engine
from mgmt.status.model import StatusModel
from mgmt.status.server import MAX_REQUEST, StatusServer, to_dot
from mgmt.status.unixsock import FirstClient, remove_stale


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path) -> AsyncIterator[tuple[Engine, StatusModel, int]]:
    """A real engine, its status model and a StatusServer on a loopback port: (those, port)."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    server = StatusServer(model)
    port = _port()
    await server.listen_tcp("127.0.0.1", port)
    try:
        yield engine, model, port
    finally:
        await server.close()
        model.close()
        await engine.stop(graceful=False)


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
    async with _serving(tmp_path) as (_, _, port):
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
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with _serving(tmp_path) as (_, model, port):
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


def _fake_dot(tmp_path: Path, body: str) -> Path:
    """A `dot` first on PATH that logs its pid to tmp_path/dot.pids, then runs `body`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_text(f'#!/bin/sh\necho $$ >> "{tmp_path}/dot.pids"\n{body}\n')
    dot.chmod(0o755)
    return bin_dir


async def _get_svg(port: int) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /graph.svg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(60):
        answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1], body


async def test_the_picture_is_drawn_once_per_graph_and_not_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graphviz ran for every swap, also one that changed nothing, and at 100,000 resources
    for 60 s of a core each time, then the page said to install it (operator tester,
    2026-12-05, F7). Now: one `dot` per graph drawn, none past MAX_DRAWN, and the answer says
    why there is no picture."""
    from engine.graph import Graph
    from mgmt.status.server import MAX_DRAWN
    from resources.noop import NoopRes
    from tests.engine.conftest import settle

    real = shutil.which("dot")
    assert real is not None, "graphviz is missing: scripts/install.sh --test installs it"
    passthrough = _fake_dot(tmp_path, f'exec {real} "$@"')
    monkeypatch.setenv("PATH", f"{passthrough}:{os.environ['PATH']}")
    pids = tmp_path / "dot.pids"

    def graph(count: int) -> Graph:
        graph = Graph("g")
        for i in range(count):
            graph.add(NoopRes(name=f"n{i}"))
        return graph

    async with _serving(tmp_path) as (engine, model, port):
        await engine.apply(graph(3))
        await settle(engine)
        for _ in range(2):
            status, body = await _get_svg(port)
            assert status == b"200" and b'id="noop[n2]"' in body
        version = model.graph_version
        await engine.apply(graph(3))  # a swap that leaves the graph as it was
        await settle(engine)
        assert model.graph_version > version
        assert (await _get_svg(port))[0] == b"200"
        assert len(pids.read_text().split()) == 1
        await engine.apply(graph(MAX_DRAWN + 1))
        await settle(engine)
        status, body = await _get_svg(port)
        assert status == b"503"
        assert (
            body
            == (
                f"no graph picture: {MAX_DRAWN + 1:,} resources are too many to draw (the picture "
                f"stops at {MAX_DRAWN:,}): search the table below\n"
            ).encode()
        )
        assert len(pids.read_text().split()) == 1


async def test_a_dot_that_does_not_finish_is_killed_and_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past DOT_TIMEOUT, `dot` is killed and reaped; a graph as large is not tried again (each
    swap at 100,000 started another minute of it), and the answer names the cause, not a
    missing Graphviz (F7)."""
    from engine.graph import Graph
    from mgmt.status import server as status_server
    from resources.noop import NoopRes
    from tests.engine.conftest import settle

    monkeypatch.setattr(status_server, "DOT_TIMEOUT", 0.5)
    monkeypatch.setenv("PATH", f"{_fake_dot(tmp_path, 'exec sleep 600')}:{os.environ['PATH']}")
    async with _serving(tmp_path) as (engine, _, port):
        graph = Graph("g")
        graph.add(NoopRes(name="a"))
        graph.add(NoopRes(name="b"))
        await engine.apply(graph)
        await settle(engine)
        status, body = await _get_svg(port)
        assert status == b"503" and b"timed out after 0.5s" in body, body
        assert b"install" not in body
        (pid,) = (int(p) for p in (tmp_path / "dot.pids").read_text().split())
        assert not await asyncio.to_thread(
            os.path.exists, f"/proc/{pid}"
        )  # killed and reaped: no zombie either
        graph.add(NoopRes(name="c"))  # larger: not tried
        await engine.apply(graph)
        await settle(engine)
        status, body = await _get_svg(port)
        assert status == b"503" and b"Graphviz did not lay out 2 resources within" in body
        assert len((tmp_path / "dot.pids").read_text().split()) == 1


def _adopter(model: StatusModel) -> tuple[list[StatusServer], Callable[[socket.socket], None]]:
    """FirstClient's `serve`, as the agent's: a StatusServer of `model` made, which adopts the
    socket; and the list of those made."""
    served: list[StatusServer] = []

    def serve(sock: socket.socket) -> None:
        server = StatusServer(model)
        served.append(server)
        server.adopt_unix(sock)

    return served, serve


async def test_the_status_socket_before_its_first_client(tmp_path: Path) -> None:
    """FirstClient listens (0600) without a server; its first client, waiting in the backlog,
    hands the socket to `serve` once: a StatusServer adopting it answers that client and the
    next. Closed before any client, the socket is closed (a connection is refused) and
    `serve` never runs; a server's close() closes a socket it adopted."""
    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    served, serve = _adopter(model)

    async def get(path: Path) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /api/status HTTP/1.1\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        return answer

    path = tmp_path / "status.sock"
    first = FirstClient(path, serve)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and first.waiting
        assert not served
        # Two clients at once: both wait in the backlog for the server made at the first
        answers = await asyncio.gather(get(path), get(path))
        assert [a.split(b" ", 2)[1] for a in answers] == [b"200", b"200"], answers
        assert b'\r\n\r\n{"host": "h", ' in answers[0], answers[0][:300]
        assert len(served) == 1 and not first.waiting
        assert (await get(path)).split(b" ", 2)[1] == b"200"
    finally:
        first.close()
        for server in served:
            await server.close()
    with pytest.raises(ConnectionRefusedError):
        await get(path)
    remove_stale(path)

    unused = FirstClient(path, serve)
    unused.close()
    assert not unused.waiting
    with pytest.raises(ConnectionRefusedError):
        await get(path)
    assert len(served) == 1
    model.close()
    await engine.stop(graceful=False)


async def test_a_deep_status_socket_is_served_whatever_its_binds_descriptor_became(
    tmp_path: Path,
) -> None:
    """A socket bound through its directory's descriptor (a deep prefix, mgmt.sockaddr) is
    named `/proc/self/fd/N/status.sock` by getsockname, N closed since: with N a file's by the
    first client, the server adopting it raised NotADirectoryError under Python 3.13 (asyncio
    stats a server socket by that name, to unlink it at close; it must not: `SERVER`), and
    `mgmt status` got no answer. The socket file goes when the agent removes it, not before."""
    from mgmt.status.command import fetch

    engine = Engine(hostname="h", prefix=tmp_path / "prefix")
    model = StatusModel(engine, "h")
    served, serve = _adopter(model)

    prefix = tmp_path / ("deep" * 15) / ("er" * 30)
    prefix.mkdir(parents=True)
    path = prefix / "status.sock"
    first = FirstClient(path, serve)
    plain = os.open(tmp_path / "plain", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        assert first._sock is not None
        name = first._sock.getsockname()
        assert name.startswith("/proc/self/fd/") and name.endswith("/status.sock"), name
        number = int(name.split("/")[4])  # closed at the bind's end: a file's from now on
        if plain != number:
            with pytest.raises(OSError):
                os.fstat(number)
            os.dup2(plain, number)
        try:
            snapshot = await fetch(path)
            assert snapshot["host"] == "h" and len(served) == 1
        finally:
            if plain != number:
                os.close(number)
        for server in served:
            await server.close()
        assert stat.S_ISSOCK(path.lstat().st_mode)  # the agent's to remove (by its path)
    finally:
        os.close(plain)
        first.close()
        for server in served:
            await server.close()
        model.close()
        await engine.stop(graceful=False)
