"""The status server's answers to malformed requests, over a real loopback connection."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from engine.engine import Engine
from mgmt.status.model import StatusModel
from mgmt.status.server import MAX_REQUEST, StatusServer


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
    finally:
        await server.close()
        model.close()
        await engine.stop(graceful=False)
