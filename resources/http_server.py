"""http:server, http:server:file and http:server:flag: mgmt's small built-in web server. See
docs/resources/http_server.md.

`http:server` listens (its name, or `address`, is `host:port`; an empty host means 127.0.0.1
here, see the docs) and answers GET/HEAD from the files offered to it, then from its `root`
directory; anything else is 404. `http:server:file` offers a file (its `data`, or the file or
directory at `path`) at the URL path that is its name (or `filename`); with `longpoll`, a GET
whose If-Modified-Since is current and that says `Prefer: wait=N` is held until the content
changes (or N seconds pass: then 304). `http:server:flag`
takes POSTs to its path: the form value `key` becomes its `value`, sent along send/recv edges.

In mgmt the file and flag resources autogroup into the server's vertex. Here each stays a vertex
of its own (its own events, send/recv and `--noop` line) and joins its servers as
resources._lib.http_routes says: `server` names the http:server (its name) to join; left out, it
is served by every http:server of this agent. None of them changes the system: each is always in
the desired state, except when a received `data` or a POSTed flag value changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources._lib.http_routes import clashes, routes
from resources._lib.httpd import (
    Request,
    Response,
    file_body,
    http_date,
    parse_http_date,
    serve,
)
from resources._lib.named import or_name
from resources._lib.plan import nothing_to_do
from resources._lib.serving import Refusals, RootedServer, open_file, open_under, shown


def check_timeout(value: int | None, key: str) -> None:
    if value is not None and value < 0:
        raise ValidationError(f"must be >= 0 seconds, got {value}", key)


def answer(request: Request, path: str, content: bytes | int, mtime: float) -> Response:
    """200 with the content (data, or an open file: sent, then closed), 304 if the client's
    If-Modified-Since is current, or, as Go's http.ServeContent (mgmt's), 206 with the part a
    `Range: bytes=...` asks for (416 if it is past the end) unless an If-Range says the
    content changed."""
    since = parse_http_date(request.headers.get("if-modified-since", ""))
    modified = http_date(mtime)
    headers = {"Last-Modified": modified, "Content-Type": content_type(path)}
    headers["Accept-Ranges"] = "bytes"
    size = os.fstat(content).st_size if isinstance(content, int) else len(content)
    wanted = request.headers.get("range", "")
    if request.headers.get("if-range", modified) != modified:
        wanted = ""  # the client's part is of an older version: the whole of this one
    part = byte_range(wanted, size) if wanted else None
    status = 206 if part else 200
    if (since is not None and math.floor(mtime) <= since) or part == ():
        if isinstance(content, int):
            os.close(content)
        if part == ():
            return Response(416, b"", {"Content-Range": f"bytes */{size}"})
        return Response(304, b"", headers)
    start, length = part or (0, size)
    if part:
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    if isinstance(content, int):
        body, length = file_body(content, start, length)
        return Response(status, b"", {**headers, "Content-Length": str(length)}, stream=body)
    return Response(status, content[start : start + length], headers)


def byte_range(text: str, size: int) -> tuple[int, int] | tuple[()] | None:
    """The (start, length) of one `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a content of
    `size` bytes; () when it starts past the end (416); None when there is none we serve (a
    malformed one, or several: the whole content then, as RFC 9110 allows)."""
    unit, _, spec = text.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    first, last = first.strip(), last.strip()
    if not all(n.isascii() and n.isdigit() for n in (first, last) if n) or not (first or last):
        return None
    if not first:  # the last n bytes
        n = min(int(last), size)
        return (size - n, n) if n else ()
    start = int(first)
    if start >= size:
        return ()
    end = min(int(last), size - 1) if last else size - 1
    return (start, end - start + 1) if end >= start else None


def opened(fd: int | None) -> tuple[int, float] | None:
    """An open file and its mtime (None: there was none to open)."""
    return (fd, os.fstat(fd).st_mtime) if fd is not None else None


def prefer_wait(text: str) -> float | None:
    """The seconds of a `Prefer: wait=N` header (RFC 7240; 0: no limit), or None without one."""
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip()
            return float(value) if value.isascii() and value.isdigit() else 0.0
    return None


def content_type(path: str) -> str:
    suffix = path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else ""
    return {
        "html": "text/html; charset=utf-8",
        "json": "application/json",
        "txt": "text/plain; charset=utf-8",
    }.get(suffix, "application/octet-stream" if suffix else "text/plain; charset=utf-8")


READ_TIMEOUT = 60  # seconds to read a request when neither `read_timeout` nor `timeout` is set
WRITE_TIMEOUT = 30  # seconds a client may take to read each part of an answer, by default


@register("http:server")
@dataclass(kw_only=True, eq=False)
class HTTPServerRes(RootedServer):
    # `address` and `root`: serving.RootedServer.
    UNSERVED = "its files are 404"
    # Seconds for each timeout below that is not set. Default None (none).
    timeout: int | None = None
    # Seconds to read a request (0: no limit). Default None: `timeout`, else READ_TIMEOUT.
    read_timeout: int | None = None
    # Seconds to write each part of a response (0: no limit). Default None: `timeout`, else
    # WRITE_TIMEOUT.
    write_timeout: int | None = None
    # Seconds open requests may finish in when the server stops. Default None: `timeout`, else
    # 0 (they are cut off at once).
    shutdown_timeout: int | None = None

    def validate(self) -> None:
        super().validate()
        for key in ("timeout", "read_timeout", "write_timeout", "shutdown_timeout"):
            check_timeout(getattr(self, key), key)

    async def watch(self) -> None:
        host, port = self._listen_address()
        try:
            listener = await serve(
                host,
                port,
                self._serve,
                read_timeout=self._read_limit(),
                write_timeout=self._default_limit(self.write_timeout, WRITE_TIMEOUT),
            )
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)  # not asyncio's text
            raise ResourceError(f"cannot listen on {host}:{port}: {reason}") from err
        self.handle.on_cleanup(listener.aclose)
        self.handle.logger.info("listening on %s:%d", host, listener.port)
        await self.handle.event()
        await asyncio.Event().wait()

    async def check_apply(self, apply: bool) -> bool:
        await self._check_root()
        return nothing_to_do(self.handle, f"serving on {self._address}")

    def _limit(self, value: int | None) -> float | None:
        value = value if value is not None else self.timeout
        return float(value) if value else None

    def _read_limit(self) -> float | None:
        """`read_timeout`, else `timeout`, else READ_TIMEOUT: a client that connects and sends
        nothing (or half a request) must not hold a connection, of the 128, forever."""
        return self._default_limit(self.read_timeout, READ_TIMEOUT)

    def _default_limit(self, value: int | None, default: float) -> float | None:
        """`value`, else `timeout`, else `default` (mgmt's default is no limit: a client that
        sends half a request, or asks for a big file and does not read, would hold one of the
        128 connections for as long as it likes)."""
        if value is None and self.timeout is None:
            return float(default)
        return self._limit(value)

    async def _serve(self, request: Request) -> Response:
        table = routes(self.handle)
        self.handle.logger.traffic("%s %s", shown(request.method), shown(request.path))
        if request.method == "POST":
            flags = table.flags_for(self.name, request.path)
            if flags:
                values = request.form()
                for flag in flags:
                    flag.receive(values)
                return Response(200)
        file = table.answerer_for(self.name, request.path)
        if file is not None:
            return await file.respond(request)
        if self.root is not None and request.method in ("GET", "HEAD"):
            found = opened(
                await asyncio.to_thread(open_under, self.root, request.path, self.refused)
            )
            if found is not None:
                return answer(request, request.path, *found)
        return Response(404, b"404 page not found\n")


@register("http:server:file")
@dataclass(kw_only=True, eq=False)
class HTTPServerFileRes(Edgeable, Resource):
    # The http:server (its name) that serves this file. Default None: every one of this agent.
    server: str | None = None
    # The URL path (e.g. "/file1"; ending with "/" with a directory `path`). Default None: the
    # name.
    filename: str | None = None
    # An absolute file to serve; a directory (ending with "/") serves the files under it.
    # Default None: serve `data`.
    path: str | None = None
    # The content, when there is no `path` (it may be received along a send/recv edge).
    # Default "".
    data: str = ""
    # Hold a GET with `Prefer: wait=N` whose If-Modified-Since is current until the content
    # changes (at most N seconds). Default false.
    longpoll: bool = False

    @classmethod
    def validate_together(cls, resources: list[Resource]) -> list[tuple[Resource, ValidationError]]:
        """Two files of one graph at one URL path for one server (the same `server`, or either
        none): refused, as one would be served and the other never (mgmt's has this check as a
        to-do: a URL path has one entry)."""
        files = [res for res in resources if isinstance(res, HTTPServerFileRes)]
        problems: list[tuple[Resource, ValidationError]] = []
        for res, other in clashes(files, lambda r: r.url, lambda r: r.server):
            key = "filename" if res.filename is not None else "name"
            why = f"{res.url!r} is also the URL path of {other} (one of them would never be served)"
            problems.append((res, ValidationError(why, key)))
        return problems

    def validate(self) -> None:
        super().validate()
        url, key = or_name(self, "filename")
        if not url.startswith("/"):
            raise ValidationError(f"must be a URL path starting with '/', got {url!r}", key)
        if self.path is not None:
            if not self.path.startswith("/"):
                raise ValidationError(f"must be absolute, got {self.path!r}", "path")
            if self.data:
                raise ValidationError("give path or data, not both", "data")
            if self.longpoll and self.path.endswith("/"):
                raise ValidationError("a directory path cannot be long polled", "longpoll")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._data = self.data
        # Last-Modified of data (and long polls): after the one it replaces in a swap (still
        # offered at its URL path), which its clients hold (the same second: held for ever).
        before = routes(handle).answerer_for(self.server or "", self.url)
        last = before._version if isinstance(before, HTTPServerFileRes) else 0.0
        self._version: float = max(float(math.floor(time.time())), last + 1)
        self._changed = asyncio.Event()  # set and replaced on each change: wakes long polls
        self._refused = Refusals(handle.logger)  # requests refused for a link on the way
        # Offered until the engine drops it (not at its cleanup): a swap that replaces it
        # stops it before its successor's init() offers the same URL path (404s in between,
        # seen by clients); the successor is asked first from then on (Routes.answerer_for).
        withdraw = routes(handle).answer_at(self)

        def withdrawn() -> None:  # its long polls are answered: they ask the successor next
            withdraw()
            self._changed.set()

        handle.on_detach(withdrawn)

    async def watch(self) -> None:
        if not (self.longpoll and self.path is not None):
            await super().watch()
            return
        async with PathWatcher([self.path]) as changes:
            await self.handle.event()
            async for _ in changes:
                self._advance()

    async def check_apply(self, apply: bool) -> bool:
        if not self.handle.received().get("data") or self.data == self._data:
            return nothing_to_do(self.handle, f"offering {self.url}")
        self._data = self.data  # served at once, under --noop too: nothing on the host changes
        self._advance()
        self.handle.logger.info("serving new data at %s", self.url)
        return False

    def uids(self) -> list[UID]:
        return [UID("http:server:file", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The file resource that manages `path`, if any (mgmt's examples add this edge)."""
        return [[UID("file", self.path)]] if self.path is not None else []

    @property
    def url(self) -> str:
        return or_name(self, "filename")[0]

    def accepts(self, path: str) -> bool:
        if self.path is not None and self.path.endswith("/") and self.url.endswith("/"):
            return path.startswith(self.url)
        return path == self.url

    def _advance(self) -> None:
        """A new version: a Last-Modified after the last one (whole seconds), long polls woken."""
        self._version = max(float(math.floor(time.time())), self._version + 1)
        self._changed.set()
        self._changed = asyncio.Event()

    async def respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"", {"Allow": "GET, HEAD"})
        since = parse_http_date(request.headers.get("if-modified-since", ""))
        wait = prefer_wait(request.headers.get("prefer", ""))
        if self.longpoll and since is not None and wait is not None and self._version <= since:
            with contextlib.suppress(TimeoutError):  # then 304: nothing changed meanwhile
                async with asyncio.timeout(wait or None):
                    await request.hold(self._changed.wait())  # until the content changes
                request.headers.pop("if-modified-since")
        found = await self._content(request.path)
        if found is None:
            return Response(404, b"404 page not found\n")
        content, mtime = found
        return answer(request, request.path, content, self._version if self.longpoll else mtime)

    async def _content(self, path: str) -> tuple[bytes | int, float] | None:
        """The data, or an open file (the caller closes it), and its mtime."""
        if self.path is None:
            return self._data.encode(), self._version
        if self.path.endswith("/") and self.url.endswith("/"):
            rel = path.removeprefix(self.url)
            return opened(await asyncio.to_thread(open_under, self.path, rel, self._refused))
        return opened(await asyncio.to_thread(open_file, self.path, self._refused))


@register("http:server:flag")
@dataclass(kw_only=True, eq=False)
class HTTPServerFlagRes(Resource):
    SENDS: ClassVar[Mapping[str, Any]] = {"value": str}

    # The http:server (its name) that takes the POSTs. Default None: every one of this agent.
    server: str | None = None
    # The URL path POSTed to. Default None: the name.
    path: str | None = None
    # The form field (query string or urlencoded body) whose value is taken. Default "": none.
    key: str = ""

    def validate(self) -> None:
        super().validate()
        url, key = or_name(self, "path")
        if not url.startswith("/"):
            raise ValidationError(f"must be a URL path starting with '/', got {url!r}", key)

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._value: str | None = None  # the last POSTed value (None: none, or empty)
        self._sent: str | None = None  # the value at the last check_apply
        self._posted = asyncio.Event()
        # Offered until the engine drops it, as http:server:file: a swap that replaces it stops
        # it before its successor's init(), and a POST in between was 404. One that comes then
        # is kept (`_late`) and taken by the successor, here, as a POST to it.
        self._stopped = False
        self._late: dict[str, str] | None = None  # the form POSTed last since it stopped
        flags = routes(handle).flags
        old = flags.replacing(self)
        flags.offer(handle, self)
        if isinstance(old, HTTPServerFlagRes) and old._late is not None:
            self.receive(old._late)
        handle.on_cleanup(self._stop)

    def _stop(self) -> None:
        self._stopped = True

    async def watch(self) -> None:
        await self.handle.event()
        while True:
            await self._posted.wait()
            self._posted.clear()
            await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        value, previous = self._value, self._sent
        self._sent = value
        self.handle.send(value=value or "")
        if value == previous:
            return nothing_to_do(self.handle, f"no new value POSTed to {self.url}")
        self.handle.logger.info("%s: %s", self.key, "(none)" if value is None else repr(value))
        return False

    @property
    def url(self) -> str:
        return or_name(self, "path")[0]

    def receive(self, form: dict[str, str]) -> None:
        """A POST to our path: take our key's value (empty or missing: none) and wake watch;
        once stopped (a swap replacing it), keep the form for the successor."""
        if self._stopped:
            self._late = form
            return
        if not self.key:
            return
        self._value = form.get(self.key) or None
        self._posted.set()
