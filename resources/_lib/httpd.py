"""A small HTTP/1.1 server on asyncio streams, for the http:server kind; its request parser
and response encoder also serve the agent's status page (mgmt/status/server.py).

One request per connection (`Connection: close`): enough for files, flags and long polls, with
no keep-alive state to get wrong. The request line and headers are bounded (HEAD_LIMIT), so is
a body (BODY_LIMIT, mgmt's 4 MiB for flags); a request that breaks a bound or the syntax gets
400/413 and the connection is closed. `serve(host, port, handler, ...)` starts the listener;
the handler gets a `Request` and returns a `Response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from resources._lib.serving import shown

log = logging.getLogger("engine")

HEAD_LIMIT = 64 * 1024  # bytes of request line and headers
BODY_LIMIT = 4 * 1024 * 1024  # bytes of a request body (mgmt's limit for flag POSTs)
MAX_CONNECTIONS = 128  # connections served at once; the others wait in the kernel's backlog
CHUNK = 1 << 16  # bytes of a file body read and written at once
REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""

    def form(self) -> dict[str, str]:
        """The query and a urlencoded body together (the body wins), like Go's PostFormValue."""
        values = dict(self.query)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            values.update(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace")))
        return values


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # An open file whose content is the body instead, read as it is sent (a big one is never
    # held in memory), then closed. Default None.
    file: int | None = None


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def http_date(seconds: float) -> str:
    import email.utils  # ~5 ms, and every run loads this module (the status socket)

    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(text: str) -> float | None:
    import email.utils

    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


async def read_request(
    reader: asyncio.StreamReader, head_limit: int = HEAD_LIMIT, body_limit: int = BODY_LIMIT
) -> Request:
    """One request, its head and body at most `head_limit` and `body_limit` bytes; BadRequest
    for anything malformed or too large."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "incomplete request") from None
    if len(head) > head_limit:
        raise BadRequest(431, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "bad request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    length_text = headers.get("content-length", "0")
    if not length_text.isascii() or not length_text.isdigit():
        raise BadRequest(400, "bad content-length")
    length = int(length_text)
    if length > body_limit:
        raise BadRequest(413, "request body too large")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "incomplete body") from None
    url = urllib.parse.urlsplit(target)
    return Request(
        method=method,
        path=urllib.parse.unquote(url.path),
        query=dict(urllib.parse.parse_qsl(url.query)),
        headers=headers,
        body=body,
    )


def body_length(response: Response) -> int:
    return len(response.body) if response.file is None else os.fstat(response.file).st_size


def encode(response: Response, head_only: bool, length: int | None = None) -> bytes:
    """The response's head and its body (not its `file`: see send_file), the body `length`
    bytes long (None: found by body_length)."""
    length = body_length(response) if length is None else length
    headers = {"Content-Length": str(length), "Connection": "close"}
    headers.update(response.headers)
    reason = REASONS.get(response.status, "Unknown")
    lines = [f"HTTP/1.1 {response.status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


async def send_file(writer: asyncio.StreamWriter, fd: int, length: int) -> None:
    """`length` bytes of the file fd, a chunk at a time, each written out before the next is
    read (a file that shrank meanwhile ends the body short: the client sees it incomplete)."""
    offset = 0
    while offset < length:
        chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, length - offset), offset)
        if not chunk:
            break
        writer.write(chunk)
        await writer.drain()
        offset += len(chunk)


class Listener:
    """A listening server; `aclose()` stops listening and ends the open connections (a held
    long poll among them)."""

    def __init__(self, handler: Handler, read_timeout: float | None, write_timeout: float | None):
        self._handler = handler
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connections: set[asyncio.Task[None]] = set()
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
        self._sock.setblocking(False)
        self._accepting = asyncio.create_task(self._accept(self._sock))

    @property
    def port(self) -> int:
        """The port listened on (the one the kernel chose, for port 0)."""
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    async def aclose(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, sock: socket.socket) -> None:
        """Accept a connection only when fewer than MAX_CONNECTIONS are open: the others wait
        in the backlog and hold none of the agent's descriptors (as the status page does: a
        client holding thousands of idle connections took every one, and the agent's other
        resources failed with EMFILE)."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        while True:
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as err:  # out of descriptors: the backlog keeps the client
                slots.release()
                log.debug("http: accept: %s", err)
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._connection(conn))
            self._connections.add(task)
            task.add_done_callback(functools.partial(self._done, slots))

    def _done(self, slots: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        slots.release()

    async def _connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=HEAD_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            response, head_only = await self._answer(reader)
            if response is not None:
                try:
                    length = body_length(response)
                    writer.write(encode(response, head_only, length))
                    async with asyncio.timeout(self._write_timeout):
                        await writer.drain()
                        if response.file is not None and not head_only:
                            await send_file(writer, response.file, length)
                finally:
                    if response.file is not None:
                        os.close(response.file)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Response | None, bool]:
        try:
            async with asyncio.timeout(self._read_timeout):
                request = await read_request(reader)
        except BadRequest as err:
            return Response(err.status, f"{err}\n".encode()), False
        except TimeoutError:
            return None, False
        try:
            return await self._handler(request), request.method == "HEAD"
        except Exception:
            log.exception("http: handling %s %s failed", shown(request.method), shown(request.path))
            return Response(500, b"internal error\n"), False


async def serve(
    host: str,
    port: int,
    handler: Handler,
    *,
    read_timeout: float | None = None,
    write_timeout: float | None = None,
) -> Listener:
    """Listen on host:port; each connection reads one request, answers it and closes."""
    listener = Listener(handler, read_timeout, write_timeout)
    await listener.start(host, port)
    return listener


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    limit: int = 1 << 30,
) -> Reply:
    """One HTTP/1.1 request (http or https) on its own connection; cancellable at any point (a
    held long poll too). The body is read to its Content-Length, or to the end of the
    connection; chunked replies are decoded. OSError/ValueError when it cannot be done."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ssl_context = None
    if parts.scheme == "https":
        import ssl

        ssl_context = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ssl_context)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        return await _read_reply(reader, method, limit)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_reply(reader: asyncio.StreamReader, method: str, limit: int) -> Reply:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise ValueError("the server sent no complete reply head") from err
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(status_parts[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if method == "HEAD" or status in (204, 304):
        return Reply(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            if len(data) + size > limit:
                raise ValueError(f"the reply is larger than {limit} bytes")
            data += await reader.readexactly(size + 2)
            del data[-2:]
        return Reply(status, headers, bytes(data))
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise ValueError(f"the reply is larger than {limit} bytes")
        return Reply(status, headers, await reader.readexactly(int(length)))
    data = bytearray()
    while chunk := await reader.read(65536):  # to the end of the connection
        data += chunk
        if len(data) > limit:
            raise ValueError(f"the reply is larger than {limit} bytes")
    return Reply(status, headers, bytes(data))
