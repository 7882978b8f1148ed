"""An http:server:file whose `data` an edit of the graph file changes, its http:server kept:
a client asking without pause across the edit gets the old content, then the new, and
nothing else (never a 404, never a refused connection).

Go mgmt groups the member into its server's vertex, and its graph sync compares a grouped
vertex with its group (engine/cmp.go, ResCmp: "compare sub resources"): the edited member
makes the whole http:server differ, and the swap replaces the server (its listener closed,
then opened again). Here each member is a vertex of its own and the server is kept; the
replaced member stays offered until the swap drops it, after its successor's init (Routes,
Handle.on_detach), so nothing is missing in between. This test is the whole path (the file
edited, read again, the swap keeping the server) with a real client; the instant between the
member's stop and its successor's init, too short for a client in another process to hit at
will, is asked at by tests/resources/test_http_server.py (at_successor_init)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.e2e.helpers import Daemon, free_port

ENOUGH = 20  # replies with the old content before the edit, with the new one after it


def graph(port: int, data: str) -> str:
    return (
        "graph: g\nresources:\n"
        f'  http:server:\n  - name: "127.0.0.1:{port}"\n'
        f'  http:server:file:\n  - name: /f\n    data: "{data}"\n'
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


async def get(port: int) -> tuple[str, bytes]:
    """One GET of /f on a new connection: (status line, body); a connection refused or cut
    is an OSError."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


async def test_a_client_across_an_edit_of_a_served_file_gets_old_then_new(
    tmp_path: Path,
) -> None:
    port, path = free_port(), tmp_path / "g.yaml"
    write(path, graph(port, "old"))
    replies: list[tuple[str, bytes] | str] = []
    old_seen = asyncio.Event()

    async def client() -> None:
        """Ask without pause until ENOUGH replies with the new content came."""
        while sum(reply == ("HTTP/1.1 200 OK", b"new") for reply in replies) < ENOUGH:
            try:
                replies.append(await get(port))
            except OSError as err:
                replies.append(f"{type(err).__name__}: {err}")
            if replies.count(("HTTP/1.1 200 OK", b"old")) == ENOUGH:
                old_seen.set()  # (asking at its pace: the edit comes now)

    async with Daemon(["run", "--tmp-prefix", "yaml", str(path)]) as daemon:
        await daemon.wait_log("converged:")
        asking = asyncio.ensure_future(client())
        try:
            async with asyncio.timeout(30):
                await old_seen.wait()
                write(path, graph(port, "new"))
                await daemon.wait_log("graph swap: ")
                await asking
        finally:
            asking.cancel()
        swap = next(line for line in daemon.lines if "graph swap: " in line)
        assert "changed http:server:file[/f]" in swap and "http:server[" not in swap, swap
    first_new = replies.index(("HTTP/1.1 200 OK", b"new"))
    assert replies[first_new] != replies[first_new - 1] and first_new > 0
    assert set(replies[:first_new]) == {("HTTP/1.1 200 OK", b"old")}, replies[:first_new]
    assert set(replies[first_new:]) == {("HTTP/1.1 200 OK", b"new")}, replies[first_new:]
