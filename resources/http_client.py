"""http:client: download a URL to a file, polled or by HTTP long poll (mgmt's http:client). See
docs/resources/http_client.md.

The file is `file`, else the name when it is an absolute file path, else a file in the
resource's state directory. check_apply asks the server (with If-Modified-Since, the file's
mtime, when `mtime_check`): 304 means the file is current; 200 brings content, written
atomically with the server's Last-Modified as its mtime (the cursor of the next request) and
checked against `sha256`. The content is sent as `content`. Without `longpoll`, `meta: poll` is
required (mgmt's rule); with `longpoll` (and `longpoll_conditional`, the If-Modified-Since
contract of http:server:file), watch holds a request open and each reply is an event whose body
check_apply takes, so nothing is fetched twice.

Each check_apply publishes the resource's response in the host's local values (engine.local,
under `response_key(name)`), which the language's `net/http.response(name)` follows (mgmt's
HTTP local API): the status (the HTTP code of the last reply, -1 after an engine-level error
such as a network or disk failure) and the file holding the last downloaded body.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import Refreshable, Resource, register
from engine.safefs import write_file
from engine.watcher import PathWatcher
from resources._lib.events import run_all
from resources._lib.httpd import Reply, fetch, http_date, parse_http_date, shown_url
from resources._lib.plan import Step, apply_steps, nothing_to_do

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE")
SAFE = ("GET", "HEAD")  # what --noop may still send
ENGINE_ERROR = -1  # the published status after a failure that is not an HTTP reply
RETRY_MIN, RETRY_MAX = 0.1, 15.0  # seconds: between long poll retries; longest Retry-After
HELD_MIN = 1.0  # seconds: a 304 sooner than this means the server did not hold the request


@register("http:client")
@dataclass(kw_only=True, eq=False)
class HTTPClientRes(Refreshable, Resource):
    SENDS: ClassVar[Mapping[str, Any]] = {"content": str}

    # The URL to ask (http or https). Required.
    url: str
    # Where the content is written (absolute). Default None: the name if it is an absolute file
    # path, else a file in the resource's state directory.
    file: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The request method (upper case). Default "GET".
    method: str = "GET"
    # The request body. Default None (none).
    body: str | None = None
    # Send the file's mtime as If-Modified-Since (a 304 skips the download). Default true.
    mtime_check: bool = True
    # The content's expected sha256 (lower-case hex). Default None (not checked).
    sha256: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Watch by HTTP long poll instead of `meta: poll`. Default false.
    longpoll: bool = False
    # mgmt's redirect long poll contract: not supported here (an error says so). Default false.
    longpoll_redirect: bool = False
    # The If-Modified-Since long poll contract (http:server:file's). Default false.
    longpoll_conditional: bool = False

    def validate(self) -> None:
        super().validate()
        dst = self._named_file()
        if dst is not None and (not dst.startswith("/") or dst.endswith("/")):
            raise ValidationError(f"must be an absolute file path, got {dst!r}", "file")
        if self.method not in METHODS:
            upper = (
                f" (upper case: {self.method.upper()!r})" if self.method.upper() in METHODS else ""
            )
            raise ValidationError(f"unknown method {self.method!r}{upper}", "method")
        if not re.fullmatch(r"https?://[^/?#\s]+(/\S*)?", self.url):
            raise ValidationError(
                f"expected an http(s) URL with a host, got {shown_url(self.url)!r}", "url"
            )
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValidationError("must be 64 lower-case hex digits", "sha256")
        if self.longpoll_redirect:
            raise ValidationError(
                "not supported here; use longpoll_conditional (http:server:file's contract)",
                "longpoll_redirect",
            )
        if self.longpoll and self.meta.poll:
            raise ValidationError("cannot long poll while polling (meta poll)", "longpoll")
        if self.longpoll and not self.longpoll_conditional:
            raise ValidationError("longpoll needs longpoll_conditional", "longpoll")
        if not self.longpoll and not self.meta.poll:
            raise ValidationError(
                "without longpoll, meta poll is required (seconds between downloads)", "longpoll"
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        named = self._named_file()
        self._dst = named if named is not None else str(handle.var_dir / "content")
        # A long poll reply for check_apply to take, and how many requests check_apply had
        # made itself when the long poll's request went out.
        self._pending: tuple[Reply, int] | None = None
        self._taken = asyncio.Event()  # check_apply took it: the next long poll may start
        self._seen: float | None = None  # Last-Modified of the newest reply (even under --noop)
        self._fetches = 0  # requests check_apply made itself (the long poll's replies: stale?)

    async def watch(self) -> None:
        """Long poll (validate ensured it): a held request, and the file, are the events."""
        async with PathWatcher([self._dst]) as changes:
            await self.handle.event()
            await pump_and_poll(self.handle, changes, self._long_poll)

    async def check_apply(self, apply: bool) -> bool:
        self._status: int | None = ENGINE_ERROR  # None: nothing was asked (nothing to publish)
        try:
            return await self._check_apply(apply)
        finally:
            await self._publish()

    async def _publish(self) -> None:
        """The response, for net/http.response: its status, and the file with the last body
        (its size and mtime tell a new download of the same status from the last one)."""
        local = self.handle.local
        if local is None or self._status is None:
            return
        stat = await asyncio.to_thread(_stat, self._dst)
        response = {"status": self._status, "path": self._dst if stat else "", "file": stat}
        await asyncio.to_thread(local.set, response_key(self.name), response)

    async def _check_apply(self, apply: bool) -> bool:
        reply = self._long_polled()
        refresh = self.handle.refresh()
        old = await asyncio.to_thread(_read, self._dst)
        known = reply is None and old is not None and self.sha256 and not refresh
        if known and hashlib.sha256(old or b"").hexdigest() == self.sha256:
            self._status = 200  # (not asked again: the file is what the server gave)
            self.handle.send(content=(old or b"").decode("utf-8", "replace"))
            return nothing_to_do(self.handle, f"{self._dst} has the expected sha256")
        if reply is None:
            if not apply and self.method not in SAFE:
                self._status = None
                await apply_steps(self.handle, [Step(f"{self.method} {self._shown}", "")], apply)
                return False  # --noop sends only GET and HEAD
            self._fetches += 1
            reply = await self._ask(wait=False, refresh=refresh)
        self._status = reply.status
        if reply.status == 304 and old is not None:
            self.handle.send(content=old.decode("utf-8", "replace"))
            return nothing_to_do(self.handle, f"{self._dst} is current (304)")
        if reply.status != 200:
            raise ResourceError(f"{self.method} {self._shown}: status {reply.status}")
        if self.sha256 and hashlib.sha256(reply.body).hexdigest() != self.sha256:
            raise ResourceError(f"{self._shown}: sha256 mismatch, expected {self.sha256}")
        mtime = parse_http_date(reply.headers.get("last-modified", ""))
        if old == reply.body and (mtime is None or _mtime(self._dst) == mtime):
            self.handle.send(content=reply.body.decode("utf-8", "replace"))
            return nothing_to_do(self.handle, f"{self._dst} holds the content already")
        step = Step(
            f"download {self._shown} to {self._dst}",
            f"downloaded {self._shown} to {self._dst} ({len(reply.body)} bytes)",
            lambda: _store(self._dst, reply.body, mtime),
            slow=True,
        )
        await apply_steps(self.handle, [step], apply, errors=(OSError,))
        self.handle.send(content=reply.body.decode("utf-8", "replace"))
        return old == reply.body  # a new mtime alone (the cursor) is not a change

    def _long_polled(self) -> Reply | None:
        """The long poll's reply handed over, if check_apply is to take it as the server's
        answer: a 200 whose request went out after check_apply's own last one. Else None:
        check_apply asks for itself. An older one may be older than what check_apply has
        (a reply that came in while a check_apply began, before its own request went out:
        the 404 from before the file was made, taken after that check_apply's 200, failed
        the resource: examples/http-server.yaml, 4 runs in 20 on a loaded host). A failure
        is only ever a fresh request's: a 404 handed over before the resources that make the
        file had run (the long poll starts with the watch, before them) is not."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        self._taken.set()
        reply, fetches = pending
        return reply if reply.status == 200 and fetches == self._fetches else None

    @property
    def _shown(self) -> str:
        """The URL as logged and shown: no password, no secret-looking query value."""
        return shown_url(self.url)

    def _named_file(self) -> str | None:
        if self.file is not None:
            return self.file
        if self.name.startswith("/") and not self.name.endswith("/"):
            return self.name
        return None

    async def _ask(self, *, wait: bool, refresh: bool = False) -> Reply:
        headers = {}
        mtime = _mtime(self._dst)
        if wait and self._seen is not None:  # under --noop the file keeps its old mtime
            mtime = max(mtime or 0.0, self._seen)
        if self.mtime_check and mtime is not None and not refresh:
            headers["If-Modified-Since"] = http_date(mtime)
        if wait:
            headers["Prefer"] = "wait=60"
        body = self.body.encode() if self.body is not None else None
        try:
            return await fetch(self.url, method=self.method, headers=headers, body=body)
        except (OSError, ValueError) as err:
            raise ResourceError(f"{self.method} {self._shown}: {err}") from err

    async def _long_poll(self) -> None:
        """Hold a request; each reply (but a 304 or a Retry-After) is handed to check_apply.
        A server that cannot be reached (not up yet, restarting) is asked again, backing off."""
        backoff = RETRY_MIN
        while True:
            asked, fetches = time.monotonic(), self._fetches
            try:
                reply = await self._ask(wait=True)
            except ResourceError as err:
                if backoff == RETRY_MIN:
                    self.handle.logger.warning("long poll: %s (retrying)", err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            if self._fetches != fetches:
                # check_apply asked for itself meanwhile: this reply may be older than the one
                # it took (a 404 from before the file was made, after its 200: the resource
                # failed, CI). Asked again at once, with the cursor of what it has now.
                continue
            retry = reply.headers.get("retry-after", "")
            if reply.status == 503 and retry.isdigit():
                await asyncio.sleep(min(float(retry), RETRY_MAX))
                continue
            if reply.status == 304:  # not held (the server does not long poll), or timed out
                if time.monotonic() - asked < HELD_MIN:
                    if backoff == RETRY_MIN:
                        self.handle.logger.warning("long poll: %s does not hold", self._shown)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = RETRY_MIN
            self._seen = parse_http_date(reply.headers.get("last-modified", "")) or self._seen
            self._taken.clear()
            self._pending = (reply, fetches)
            await self.handle.event()
            await self._taken.wait()  # backpressure: one reply at a time


async def pump_and_poll(
    handle: Handle, changes: PathWatcher, poll: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """An event per change of the file, while `poll` runs (the first failure of either ends
    both, re-raised as itself)."""

    async def file_changes() -> None:
        async for _ in changes:
            await handle.event()

    await run_all([file_changes, poll])


def response_key(name: str) -> str:
    """The local values key of http:client `name`'s response (net/http.response reads it)."""
    return f"http:client[{name}]"


def _stat(path: str) -> list[int] | None:
    """The file's size and mtime (ns), or None if it is not a readable regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if os.path.isfile(path) else None


def _read(path: str) -> bytes | None:
    """The destination's content; None if it is missing or not a regular file (a FIFO is
    never waited on: it is replaced)."""
    try:
        with open(safefs.open_regular(path), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.EINVAL:
            return None
        raise


def _mtime(path: str) -> float | None:
    with contextlib.suppress(OSError):
        return os.stat(path).st_mtime
    return None


def _store(path: str, data: bytes, mtime: float | None) -> None:
    write_file(path, data, 0o644)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
