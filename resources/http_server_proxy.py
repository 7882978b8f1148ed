"""http:server:proxy: a caching reverse proxy for a path prefix of an http:server (mgmt's). See
docs/resources/http_server_proxy.md.

A GET below the proxy's path (its name, or `path`) is answered from the `cache` directory when
the file is there; else it is fetched from `head` + the request path without its `sub` prefix,
streamed to the client as it arrives and, at the same time, into a new unnamed file in the cache
that is fsynced and renamed into place only once the whole body arrived: a partial download is
never visible in the cache, and a failed one leaves nothing. Paths below the cache are walked
without following any symlink; a request path with `.`, `..` or an empty component is refused.

Like http:server:file, the proxy joins its http:server through the engine's shared routes
(resources.http_server) and changes nothing on the system itself: check_apply has nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import mimetypes
import os
import queue
import stat
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

from engine.errors import ValidationError
from engine.handle import Handle
from engine.resource import UID, Edgeable, Resource, register
from engine.safefs import (
    closing,
    controlled_by_others,
    lstat_at,
    make_dirs,
    open_dir,
    open_read,
    remove_at,
    sub_dir,
    write_at,
)
from resources._lib.http_routes import routes
from resources._lib.httpd import (
    CHUNK,
    Request,
    Response,
    Stream,
    StreamedReply,
    http_date,
    open_reply,
    parse_http_date,
    shown_url,
)
from resources._lib.named import or_name
from resources._lib.plan import in_thread, nothing_to_do

CACHE_DIR_MODE = 0o755  # directories made in the cache
CACHE_FILE_MODE = 0o644  # files stored in the cache (a public mirror)
UPSTREAM_TIMEOUT = 60.0  # seconds: to connect upstream, and for each chunk of its reply
REDIRECT = (301, 302, 303, 307, 308)
REDIRECTS = 10  # followed at most (Go's client's limit)
PENDING = 16 * 1024 * 1024  # bytes of a download that may wait for the disk
clock = time.time  # what a cached file's age is measured with (tests move it)


class Refused(Exception):
    """A request the proxy answers with an error status."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@register("http:server:proxy")
@dataclass(kw_only=True, eq=False)
class HTTPServerProxyRes(Edgeable, Resource):
    # The http:server (its name) that serves this proxy. Default None: every one of this agent.
    server: str | None = None
    # The URL path prefix proxied (e.g. "/fedora/"). Default None: the name.
    path: str | None = None
    # The prefix taken off the request path before it is added to `head` (absolute, ending
    # with "/"). Default "": nothing is taken off.
    sub: str = ""
    # What the rest of the request path is added to, e.g. "https://mirror.example/fedora/"
    # (ending with "/"). Default "": nothing is fetched, only the cache is served.
    head: str = ""
    # The directory (absolute, ending with "/") the downloads are kept in. Default "": none are.
    cache: str = ""
    # Seconds a cached file is served for before it is fetched again (-1: forever; 0: never
    # cache, just proxy). Default -1 (mgmt keeps cached files forever).
    ttl: int = -1
    # Replace what is in the way of a download in the cache (a directory where the file goes,
    # a file or symlink where a directory goes). Default false: that download is not cached.
    force: bool = False

    def validate(self) -> None:
        super().validate()
        url, key = or_name(self, "path")
        if not url.startswith("/"):
            raise ValidationError(f"must be a URL path starting with '/', got {url!r}", key)
        if self.sub and not (self.sub.startswith("/") and self.sub.endswith("/")):
            raise ValidationError(
                f"must be empty or an absolute path ending with '/', got {self.sub!r}", "sub"
            )
        reachable = self.url.startswith(self.sub) or (
            self.url.endswith("/") and self.sub.startswith(self.url)
        )
        if self.sub and not reachable:
            raise ValidationError(
                f"no request under {self.url!r} starts with {self.sub!r} (each would be 404): "
                "expected a prefix of the path, e.g. '/' or the path itself",
                "sub",
            )
        if self.head:
            parts = urllib.parse.urlsplit(self.head)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationError(
                    f"must be an http(s) URL, got {shown_url(self.head)!r}", "head"
                )
            if not self.head.endswith("/"):
                raise ValidationError(f"must end with '/', got {shown_url(self.head)!r}", "head")
        if self.cache and not (self.cache.startswith("/") and self.cache.endswith("/")):
            raise ValidationError(
                f"must be empty or an absolute directory ending with '/', got {self.cache!r}",
                "cache",
            )
        if self.ttl < -1:
            raise ValidationError(
                f"must be -1 (forever), 0 (never) or seconds, got {self.ttl}", "ttl"
            )
        if not (self.head or self.cache):
            raise ValidationError("give head (what to proxy), cache, or both", "head")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._keep = False  # downloads are cached: set by a check_apply that may apply
        self._unkept = ""  # why the last download was not cached (warned once, not per request)
        routes(handle).answer_from(handle, self)  # until a swap drops it: never 404 meanwhile

    async def check_apply(self, apply: bool) -> bool:
        self._keep = apply  # under --noop, downloads are proxied but the cache is left alone
        head = shown_url(self.head) if self.head else "the cache"
        return nothing_to_do(self.handle, f"proxying {self.url} to {head}")

    def uids(self) -> list[UID]:
        return [UID("http:server:proxy", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The file resource that manages the cache directory, if any."""
        return [[UID("file", self.cache)]] if self.cache else []

    @property
    def url(self) -> str:
        return or_name(self, "path")[0]

    @property
    def _caching(self) -> bool:
        return bool(self.cache) and self.ttl != 0

    def accepts(self, path: str) -> bool:
        if self.url.endswith("/"):
            return path.startswith(self.url)
        return path == self.url

    async def respond(self, request: Request) -> Response:
        if request.method != "GET":
            return Response(405, b"", {"Allow": "GET"})
        try:
            rel, upstream = self._locate(request.path)
            if self._caching and rel:
                cached = await asyncio.to_thread(open_cached, self.cache, rel, self.ttl)
                if cached is not None:
                    self.handle.logger.traffic("cache: %s", request.path)
                    return from_cache(request, rel, *cached)
            if upstream is None:
                raise Refused(502, f"{request.path} is not in the cache, and there is no head")
            return await self._proxy(request.path, rel, upstream)
        except Refused as err:
            self.handle.logger.traffic("%s: %s", request.path, err)
            return Response(err.status, f"{err}\n".encode())

    def _locate(self, path: str) -> tuple[list[str], str | None]:
        """The cache path's components below `cache` ([]: a directory, never cached) and the
        upstream URL (None without a head) of a request path."""
        below = path[len(self.url) :] if self.url.endswith("/") else ""
        names = below.split("/")
        if (
            any(n in ("", ".", "..") for n in names[:-1])
            or names[-1] in (".", "..")
            or "\0" in path
        ):
            raise Refused(400, f"{path!r} is not a clean path")
        if self.sub and not path.startswith(self.sub):
            raise Refused(404, f"{path} does not start with sub {self.sub}")
        upstream = self.head + urllib.parse.quote(path[len(self.sub) :].lstrip("/"))
        return (names if names[-1] else []), (upstream if self.head else None)

    async def _proxy(self, path: str, rel: list[str], url: str) -> Response:
        """Fetch `url` and stream it to the client (and into the cache, unless rel is [])."""
        self.handle.logger.traffic("get: %s", shown_url(url))
        for _ in range(REDIRECTS + 1):  # as Go's client, mgmt's: redirects are followed
            connection = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(UPSTREAM_TIMEOUT):
                    reply = await connection.enter_async_context(open_reply(url))
            except (OSError, ValueError, TimeoutError) as err:
                await connection.aclose()
                raise Refused(502, f"cannot fetch {shown_url(url)}: {err or 'timed out'}") from err
            location = reply.headers.get("location")
            if reply.status == 200 or reply.status not in REDIRECT or not location:
                break
            await connection.aclose()
            url = urllib.parse.urljoin(url, location)
            self.handle.logger.traffic("redirected to %s", shown_url(url))
        if reply.status != 200:
            await connection.aclose()
            raise Refused(404, f"{shown_url(url)} answered {reply.status}")
        headers = {"Content-Type": content_type(path)}
        for name in ("content-length", "last-modified"):
            if name in reply.headers:
                headers[name.title()] = reply.headers[name]
        stream = Stream(self._relay(reply, rel), connection.aclose)
        return Response(200, headers=headers, stream=stream)

    async def _relay(self, reply: StreamedReply, rel: list[str]) -> AsyncGenerator[bytes]:
        """The upstream body, chunk by chunk, into the cache too: the last chunk is held back
        until the file is in the cache, so a client that has it all finds it there next time."""
        where = "/".join(rel)
        keep = self._caching and rel and self._keep
        store = CacheWriter(self.cache, rel, reply.headers, self.force) if keep else None
        held = b""
        try:
            while True:
                async with asyncio.timeout(UPSTREAM_TIMEOUT):
                    chunk = await anext(reply.chunks, b"")
                if not chunk:
                    break
                if store is not None:
                    await store.put(chunk)
                if held:
                    yield held
                held = chunk
            if store is not None:
                try:
                    await store.commit()
                    self.handle.logger.traffic("cached: %s", where)
                    self._unkept = ""
                except OSError as err:  # the client gets it all; the cache could not keep it
                    why = str(err.strerror or err)
                    # Once while the reason holds (another user's cache, a full disk): every
                    # request of a busy proxy warned again (2026-12-06, eighth session's review).
                    if why == self._unkept:
                        self.handle.logger.traffic("not cached: %s (as said before)", where)
                    else:
                        self.handle.logger.warning("not cached: %s: %s", where, why)
                    self._unkept = why
            if held:
                yield held
        except (ValueError, TimeoutError) as err:  # upstream broke off: the client's body is short
            self.handle.logger.warning("download of %s failed: %s", where, err or "timed out")
        finally:
            if store is not None:
                await store.abort()


def cache_top(cache: str, *, create: int | None = None) -> int:
    """open_dir(cache): PermissionError (EPERM, saying why) if another user controls the cache
    or a directory above it (a sticky root-owned one passes above it, /tmp, not as the cache
    itself). What they put there would be served as the head's, and what we store swapped:
    before 2026-12-06 (eighth session), uid 65534's `/tmp/cache/page`, made before the agent's
    first download, was served to every client of the proxy."""
    top = os.path.normpath(cache)

    def check(fd: int, shown: str) -> None:
        if why := controlled_by_others(os.fstat(fd), fd, sticky_ok=os.path.normpath(shown) != top):
            raise PermissionError(errno.EPERM, f"{shown} {why}: {_THEIRS}", cache)

    return open_dir(cache, create=create, check=check)


_THEIRS = "refusing to serve or keep what another user could have put there"


def _sub_dir_ours(top: int, names: list[str]) -> int:
    """sub_dir(top, names), each directory on the way only root's or ours to write."""
    fd = os.dup(top)
    try:
        for name in names:
            new = sub_dir(fd, (name,))
            os.close(fd)
            fd = new
            if why := controlled_by_others(os.fstat(fd), fd, sticky_ok=False):
                raise PermissionError(errno.EPERM, f"{name} {why}: {_THEIRS}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_cached(cache: str, rel: list[str], ttl: int) -> tuple[int, os.stat_result] | None:
    """A read descriptor of the regular file cache/rel and its stat, following no symlink
    (None: there is none, it was stored more than `ttl` seconds ago (its ctime says when), or
    another user controls the cache (`cache_top`), a directory in it, or the file)."""
    try:
        with closing(cache_top(cache)) as top, closing(_sub_dir_ours(top, rel[:-1])) as fd:
            handle = open_read(fd, rel[-1])
            st = os.fstat(handle)
            if (ttl > 0 and clock() - st.st_ctime > ttl) or st.st_uid not in (0, os.geteuid()):
                os.close(handle)
                return None
            return handle, st
    except OSError as err:
        if err.errno in (
            errno.ENOENT,
            errno.ENOTDIR,
            errno.ELOOP,
            errno.EINVAL,
            errno.EACCES,
            errno.EPERM,  # theirs: fetched from the head, and not kept (said then)
        ):
            return None
        raise


def from_cache(request: Request, rel: list[str], fd: int, st: os.stat_result) -> Response:
    """200 with the cached file (streamed from its descriptor), or 304 if the client's
    If-Modified-Since is current."""
    since = parse_http_date(request.headers.get("if-modified-since", ""))
    headers = {"Last-Modified": http_date(st.st_mtime), "Content-Type": content_type(rel[-1])}
    if since is not None and int(st.st_mtime) <= since:
        os.close(fd)
        return Response(304, b"", headers)
    headers["Content-Length"] = str(st.st_size)
    return Response(200, headers=headers, stream=Stream(read_chunks(fd), closer(fd)))


async def read_chunks(fd: int) -> AsyncGenerator[bytes]:
    # in_thread: a read cancelled half-way is still waited for, before the descriptor closes.
    while chunk := await in_thread(functools.partial(os.read, fd, CHUNK)):
        yield chunk


def closer(fd: int) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        os.close(fd)

    return close


def content_type(path: str) -> str:
    return mimetypes.guess_type(path.rpartition("/")[2])[0] or "application/octet-stream"


_END = b""  # a chunk queued to say the body is complete


class CacheWriter:
    """A download written into the cache by a worker thread (engine.safefs.write_at: a new
    unnamed inode, fsynced, renamed into place) as its chunks are `put`: `commit()` once all of
    it arrived, `abort()` otherwise (nothing becomes visible). At most PENDING bytes wait for
    the disk: `put` waits beyond that (the download slows down to the disk's pace, instead of
    filling memory). A failure to store it (a directory in the way, a full disk) is commit's
    OSError; the client is served regardless."""

    def __init__(self, cache: str, rel: list[str], headers: dict[str, str], force: bool) -> None:
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._mtime = parse_http_date(headers.get("last-modified", ""))
        self._force = force
        self._done = False
        self._pending = 0  # bytes put and not written yet (the worker's writes lower it)
        self._lock = threading.Lock()
        self._drained = asyncio.Event()  # set (from the worker) once pending is low again
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(asyncio.to_thread(self._write, cache, rel))

    async def put(self, chunk: bytes) -> None:
        if self._task.done():  # it failed: nothing would take the chunk
            return
        with self._lock:
            self._pending += len(chunk)
        self._chunks.put(chunk)
        while not self._task.done():
            with self._lock:
                if self._pending <= PENDING:
                    return
                self._drained.clear()  # on the loop's thread; the worker sets it through it
            await self._drained.wait()

    async def commit(self) -> None:
        """Store the file (OSError: it could not be)."""
        self._done = True
        self._chunks.put(_END)
        await self._task

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            self._chunks.put(None)  # the worker raises: write_at leaves nothing behind
        with contextlib.suppress(Exception):
            await asyncio.shield(self._task)

    def _write(self, cache: str, rel: list[str]) -> None:
        with (
            closing(cache_top(cache, create=CACHE_DIR_MODE)) as top,
            closing(self._parents(top, rel[:-1])) as fd,
        ):
            if self._force and (st := lstat_at(fd, rel[-1])) and stat.S_ISDIR(st.st_mode):
                remove_at(fd, rel[-1])  # a tree where the file goes: its links not followed
            write_at(fd, rel[-1], self._fill, mode=CACHE_FILE_MODE)

    def _parents(self, top: int, names: list[str]) -> int:
        """The directory top/names..., made where missing; with force, a file or a symlink in
        the way is removed first (the link itself, never its target). One that is there must
        be only root's or ours to write, as reads require (`_sub_dir_ours`): PermissionError
        EPERM otherwise, and the download is not kept. Before 2026-12-06 (ninth session), a
        directory another user owned in the cache got our files (one fstat per level)."""
        fd = os.dup(top)
        try:
            for index, name in enumerate(names):
                if self._force and (st := lstat_at(fd, name)) and not stat.S_ISDIR(st.st_mode):
                    remove_at(fd, name)
                new = make_dirs(fd, [name], CACHE_DIR_MODE)
                os.close(fd)
                fd = new
                if why := controlled_by_others(os.fstat(fd), fd, sticky_ok=False):
                    shown = "/".join(names[: index + 1])
                    raise PermissionError(errno.EPERM, f"{shown} {why}: {_THEIRS}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _fill(self, out: BinaryIO) -> None:
        try:
            while (chunk := self._chunks.get()) != _END:
                if chunk is None:
                    raise InterruptedError("the download did not complete")
                out.write(chunk)
                with self._lock:
                    self._pending -= len(chunk)
                    low = self._pending <= PENDING
                if low:
                    self._loop.call_soon_threadsafe(self._drained.set)
            out.flush()
        finally:
            self._loop.call_soon_threadsafe(self._drained.set)  # a waiting put ends
        if self._mtime is not None:
            os.utime(out.fileno(), (self._mtime, self._mtime))
