"""A small HTTP/1.1 server on asyncio streams, for the http:server kind; its request parser
and response encoder also serve the agent's status page (mgmt/status/server.py).

One request per connection (`Connection: close`): enough for files, flags and long polls, with
no keep-alive state to get wrong. The request line and headers are bounded (HEAD_LIMIT), so is
a body (BODY_LIMIT, mgmt's 4 MiB for flags); a request that breaks a bound or the syntax gets
400/413 and the connection is closed. `serve(host, port, handler, ...)` starts the listener;
the handler gets a `Request` and returns a `Response`.

Bounds, so that no set of clients takes the server from the others: at most MAX_CONNECTIONS
connections served at once (the others wait in the kernel's backlog), PER_PEER of them from
one address other than loopback (more are closed at once, as the status page does); at most
MAX_HELD requests held waiting for a change (long polls, `Request.hold`), HELD_PER_PEER from
one address (more get 503 and `Retry-After`); a client that does not read within the write
timeout is reset. A held request whose client goes away (closes the connection) is dropped at
once, as Go's net/http cancels a request's context: else each reloaded page's long polls kept
their slots until the value they watched changed, and a few dozen reloads held every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TypeVar

from resources._lib.serving import shown

log = logging.getLogger("engine")

HEAD_LIMIT = 64 * 1024  # bytes of request line and headers
MAX_CONNECTIONS = 128  # connections served at once; the others wait in the kernel's backlog
PER_PEER = 64  # connections from one address at once, but LOCAL's; more are closed at once
LOCAL = ("127.0.0.1", "::1", "::ffff:127.0.0.1")  # unbounded: a local reverse proxy's clients
MAX_HELD = 64  # requests held waiting for a change at once (long polls); more get 503
HELD_PER_PEER = 32  # of them from one address
RETRY_AFTER = "2"  # seconds, in a 503 for a request that could not be held
WARN_EVERY = 60.0  # seconds between two warnings that the server is full
CHUNK = 1 << 16  # bytes of a body read and written at once
BODY_LIMIT = 4 * 1024 * 1024  # bytes of a request body (mgmt's limit for flag POSTs)
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


class Busy(Exception):
    """Too many requests are held (Request.hold): answered 503 with Retry-After."""


class Gone(Exception):
    """The client of a held request closed its connection: the request is dropped."""


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""
    # The listener's bounds and the connection a held request watches (None: no bounds).
    holding: Holding | None = field(default=None, repr=False)

    async def hold(self, waiting: Awaitable[T]) -> T:
        """`waiting` (a wait for a change: a long poll), within the held requests' bounds
        (Busy past them) and only while the client is there (Gone when it closes)."""
        if self.holding is None:
            return await waiting
        return await self.holding.hold(waiting)

    def form(self) -> dict[str, str]:
        """The query and a urlencoded body together (the body wins), like Go's PostFormValue."""
        values = dict(self.query)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            values.update(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace")))
        return values


class Stream:
    """A response body that comes as it is read from `chunks` (e.g. a proxied download);
    `close()` runs once when the response ends, however it ends, even if never read."""

    def __init__(
        self, chunks: AsyncGenerator[bytes], close: Callable[[], Awaitable[object]]
    ) -> None:
        self._chunks = chunks
        self._close: Callable[[], Awaitable[object]] | None = close

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            try:
                await self._chunks.aclose()
            finally:
                await close()


def file_body(fd: int, start: int = 0, length: int | None = None) -> tuple[Stream, int]:
    """The open file fd (from `start`, `length` bytes: default to its end) as a streamed body,
    and its length: read a chunk at a time as it is sent (a big file is never held in memory),
    closed when the response ends. A file that shrank meanwhile ends the body short: the
    client sees it incomplete."""
    if length is None:
        length = os.fstat(fd).st_size - start
    end = start + length

    async def chunks() -> AsyncGenerator[bytes]:
        offset = start
        while offset < end:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    async def close() -> None:
        os.close(fd)

    return Stream(chunks(), close), length


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # The body as it comes, instead of `body`: written chunk by chunk, its length the
    # `Content-Length` header if the handler set one, else the end of the connection. Closed
    # when the response ends (sent, the client gone, the server stopping).
    stream: Stream | None = None


Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


class Peers:
    """How many of something each address holds, and all of them together."""

    def __init__(self, total: int, each: int) -> None:
        self._total, self._each = total, each
        self._held: dict[str, int] = {}
        self.count = 0

    def take(self, peer: str, unbounded: bool = False) -> bool:
        """One more for `peer`, if within the bounds (`unbounded`: the total's alone)."""
        if self.count >= self._total or (not unbounded and self._held.get(peer, 0) >= self._each):
            return False
        self._held[peer] = self._held.get(peer, 0) + 1
        self.count += 1
        return True

    def give(self, peer: str) -> None:
        self.count -= 1
        self._held[peer] -= 1
        if not self._held[peer]:
            del self._held[peer]


class Throttled:
    """A server's warnings, one at most every WARN_EVERY seconds (a client can repeat their
    cause), each starting with `where` (the server's address)."""

    def __init__(self) -> None:
        self._last = -WARN_EVERY
        self.where = "http"

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self._last = now
            log.warning("%s: " + message, self.where, *args)


@dataclass
class Holding:
    """What a held request of one connection needs: its server's bounds, its client's address
    and the connection's reader (to see the client go away)."""

    held: Peers
    peer: str
    reader: asyncio.StreamReader
    warn: Throttled

    async def hold(self, waiting: Awaitable[T]) -> T:
        if not self.held.take(self.peer):
            close = getattr(waiting, "close", None)
            if close is not None:
                close()  # a coroutine never awaited
            self.warn(
                "too many requests held waiting (at most %d, %d from one address):"
                " answering 503 to %s",
                MAX_HELD,
                HELD_PER_PEER,
                self.peer,
            )
            raise Busy()
        try:
            return await while_there(self.reader, waiting)
        finally:
            self.held.give(self.peer)


async def while_there(reader: asyncio.StreamReader, waiting: Awaitable[T]) -> T:
    """`waiting`, cancelled (Gone) if the client closes its connection first."""
    wait = asyncio.ensure_future(waiting)
    gone = asyncio.create_task(until_gone(reader))
    try:
        await asyncio.wait((wait, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (wait, gone):
            task.cancel()
        await asyncio.gather(wait, gone, return_exceptions=True)
    if wait.cancelled():  # the client went first
        raise Gone()
    return wait.result()


async def until_gone(reader: asyncio.StreamReader) -> None:
    """Until the client closes its side of the connection (or it breaks). One request per
    connection: a client sends nothing after its request but the end; what it does send is
    dropped, and after HEAD_LIMIT bytes of it the connection is no longer watched."""
    seen = 0
    try:
        while seen <= HEAD_LIMIT:
            data = await reader.read(CHUNK)
            if not data:
                return
            seen += len(data)
    except (ConnectionError, OSError):
        return
    await asyncio.Event().wait()


class BadRequest(Exception):
    def __init__(self, status: int, why: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(why)
        self.status = status
        self.headers = headers or {}  # of the answer (405's Allow)


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
    reader: asyncio.StreamReader,
    head_limit: int = HEAD_LIMIT,
    body_limit: int = BODY_LIMIT,
    methods: tuple[str, ...] = (),
) -> Request:
    """One request, its head and body at most `head_limit` and `body_limit` bytes; BadRequest
    for anything malformed or too large, and (405, with Allow) for a method not in `methods`
    if given: said before its body is refused as too large (a POST to a GET-only server)."""
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
    if methods and method not in methods:
        raise BadRequest(405, f"{' and '.join(methods)} only", {"Allow": ", ".join(methods)})
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
    if target.startswith("/"):  # origin form: not urlsplit, which takes //a/b's `a` as a host
        raw_path, _, raw_query = target.partition("#")[0].partition("?")
    else:  # absolute form (http://host/path), which a server must take too
        url = urllib.parse.urlsplit(target)
        raw_path, raw_query = url.path, url.query
    path = urllib.parse.unquote(raw_path)
    if "\x00" in path:  # no file name has one: a 400, not a 500 from open()
        raise BadRequest(400, "a NUL in the path")
    return Request(
        method=method,
        path=path,
        query=dict(urllib.parse.parse_qsl(raw_query)),
        headers=headers,
        body=body,
    )


def _phrase(status: int) -> str:
    """The standard reason phrase of a status not in REASONS (301, 502...)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode(response: Response, head_only: bool) -> bytes:
    headers = {"Connection": "close"}
    if response.stream is None:
        headers["Content-Length"] = str(len(response.body))
    headers.update(response.headers)
    reason = REASONS.get(response.status) or _phrase(response.status)
    lines = [f"HTTP/1.1 {response.status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def drop(transport: asyncio.WriteTransport) -> None:
    """Close a connection at once, what it has not sent dropped, with a reset: close() would
    wait for a client that does not read, and the kernel would keep sending to it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


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
        self._held = Peers(MAX_HELD, HELD_PER_PEER)
        self._full = Throttled()

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
        self._sock.setblocking(False)
        self._full.where = f"http server on {host}:{self.port}"
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
        resources failed with EMFILE). One address's connections past PER_PEER are closed at
        once: 128 clients that asked for a big file and did not read held the server."""
        loop = asyncio.get_running_loop()
        open_ = Peers(MAX_CONNECTIONS, PER_PEER)
        free = asyncio.Event()
        while True:
            if open_.count >= MAX_CONNECTIONS:
                self._full("all %d connections are in use: new ones wait", MAX_CONNECTIONS)
                free.clear()
                await free.wait()
                continue
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as err:  # out of descriptors: the backlog keeps the client
                log.debug("http: accept: %s", err)
                await asyncio.sleep(0.5)
                continue
            peer = str(address[0])
            if not open_.take(peer, peer in LOCAL):
                self._full("%s has %d connections open: closing more", peer, PER_PEER)
                conn.close()
                continue
            task = asyncio.create_task(self._connection(conn, peer))
            self._connections.add(task)
            task.add_done_callback(functools.partial(self._done, open_, peer, free))

    def _done(self, open_: Peers, peer: str, free: asyncio.Event, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        open_.give(peer)
        free.set()

    async def _connection(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=HEAD_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        response: Response | None = None
        try:
            response, head_only = await self._answer(Holding(self._held, peer, reader, self._full))
            if response is not None:
                writer.write(encode(response, head_only))
                async with asyncio.timeout(self._write_timeout):
                    await writer.drain()
                if response.stream is not None and not head_only:
                    await self._write_stream(writer, response.stream)
        except (TimeoutError, ConnectionError):
            drop(transport)
        finally:
            if response is not None and response.stream is not None:
                try:
                    await response.stream.aclose()
                except Exception:
                    log.exception("http: closing a streamed response failed")
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _write_stream(self, writer: asyncio.StreamWriter, stream: Stream) -> None:
        """Each chunk of `stream`, each drained within the write timeout."""
        async for chunk in stream:
            writer.write(chunk)
            async with asyncio.timeout(self._write_timeout):
                await writer.drain()

    async def _answer(self, holding: Holding) -> tuple[Response | None, bool]:
        try:
            async with asyncio.timeout(self._read_timeout):
                request = await read_request(holding.reader)
        except BadRequest as err:
            return Response(err.status, f"{err}\n".encode()), False
        except TimeoutError:
            return None, False
        request.holding = holding
        try:
            return await self._handler(request), request.method == "HEAD"
        except Gone:
            return None, False
        except Busy:
            return Response(503, b"too many requests held\n", {"Retry-After": RETRY_AFTER}), False
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


SECRET_WORDS = ("pass", "secret", "token", "key", "auth", "sig", "credential", "session")


def shown_url(url: str) -> str:
    """`url` for a log line, a status or a message (docs/security.md: secrets are never
    logged): the password of its userinfo and the values of its secret-looking query fields
    (token=, password=, api_key=...) as `***`, control characters escaped."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':***' if colon else ''}{at}{host}"
    fields = []
    for part in parts.query.split("&") if parts.query else []:
        name, eq, _ = part.partition("=")
        secret = eq and any(word in name.lower() for word in SECRET_WORDS)
        fields.append(f"{name}=***" if secret else part)
    return shown(urllib.parse.urlunsplit(parts._replace(netloc=netloc, query="&".join(fields))))


def basic_auth(parts: urllib.parse.SplitResult) -> dict[str, str]:
    """The Authorization header of a URL's userinfo (none without one), as Go's net/http sends
    it: `http://user:pass@host/` is Basic auth, never sent as part of the Host."""
    if parts.username is None:
        return {}
    import base64

    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class StreamedReply:
    status: int
    headers: dict[str, str]  # names lower-cased
    chunks: AsyncGenerator[bytes]  # the body as it arrives (ValueError if it ends early)


@contextlib.asynccontextmanager
async def open_reply(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> AsyncIterator[StreamedReply]:
    """One HTTP/1.1 request (http or https) on its own connection, its reply's body read as it
    arrives; the connection is closed when the block ends. Cancellable at any point (a held long
    poll too). OSError/ValueError when it cannot be done."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {shown_url(url)!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    target += f"?{parts.query}" if parts.query else ""
    ssl_context = None
    if parts.scheme == "https":
        import ssl

        ssl_context = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ssl_context)
    try:
        host = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in {**basic_auth(parts), **(headers or {})}.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        status, reply_headers = await _read_reply_head(reader)
        chunks = _read_body(reader, reply_headers, empty=method == "HEAD" or status in (204, 304))
        async with contextlib.aclosing(chunks):
            yield StreamedReply(status, reply_headers, chunks)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    limit: int = 1 << 30,
) -> Reply:
    """One HTTP/1.1 request (see open_reply), its whole body read (chunked replies decoded; at
    most `limit` bytes). OSError/ValueError when it cannot be done."""
    async with open_reply(url, method=method, headers=headers, body=body) as reply:
        length = reply.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ValueError(f"the reply is larger than {limit} bytes")
        data = bytearray()
        async for chunk in reply.chunks:
            data += chunk
            if len(data) > limit:
                raise ValueError(f"the reply is larger than {limit} bytes")
        return Reply(reply.status, reply.headers, bytes(data))


async def _read_reply_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise ValueError("the server sent no complete reply head") from err
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(status_parts[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], *, empty: bool
) -> AsyncGenerator[bytes]:
    """The body's chunks: chunked, to its Content-Length, or to the end of the connection."""
    if empty:
        return
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16):
                yield (await reader.readexactly(size + 2))[:-2]
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            left = int(length)
            while left:
                chunk = await reader.read(min(left, CHUNK))
                if not chunk:
                    raise ValueError(f"the reply ended {left} bytes short of its Content-Length")
                left -= len(chunk)
                yield chunk
            return
        while chunk := await reader.read(CHUNK):  # to the end of the connection
            yield chunk
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise ValueError("the reply ended in the middle of a chunk") from err
