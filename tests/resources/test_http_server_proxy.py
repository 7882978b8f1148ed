"""http:server:proxy in a real engine on 127.0.0.1, in front of a real upstream HTTP server
(the standard library's, in a thread) that the test starts; asked by real HTTP clients."""

from __future__ import annotations

import asyncio
import email.utils
import http.server
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.errors import ValidationError
from engine.meta import Meta
from resources._lib.httpd import fetch as raw_fetch
from resources.http_server import HTTPServerRes
from resources.http_server_proxy import HTTPServerProxyRes
from tests.engine.conftest import engine, settle
from tests.resources.swapping import at_successor_init, swap
from tests.resources.test_http_server import fetch, free_port, graph_of, status_line

__all__ = ["engine"]  # the fixture

MODIFIED = 1_700_000_000  # the upstream files' Last-Modified (2023-11-14)
BIG = 256 * 1024  # bytes of the file the upstream sends in two halves


@dataclass
class Upstream:
    """What the upstream serves at each path, and the requests it got."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)  # each request's header
    moved: dict[str, str] = field(default_factory=dict)  # path -> its 302's Location
    # /mirror/releases/big: the first half is sent, then the server waits for `resume`; `complete`
    # says whether the second half follows or the connection is cut.
    half_sent: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    complete: bool = True


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    state = Upstream()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.asked.append(self.path)
            state.authorization.append(self.headers.get("Authorization"))
            if self.path == "/mirror/releases/big":
                self._big()
                return
            if self.path in state.moved:
                self.send_response(302)
                self.send_header("Location", state.moved[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", email.utils.formatdate(MODIFIED, usegmt=True))
            self.end_headers()
            self.wfile.write(body)

        def _big(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            self.wfile.write(b"a" * (BIG // 2))
            self.wfile.flush()
            state.half_sent.set()
            state.resume.wait(30)
            if state.complete:
                self.wfile.write(b"b" * (BIG // 2))

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.resume.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


async def start(engine: Engine, upstream: Upstream, cache: Path, **params: Any) -> str:
    """An http:server with a proxy of /fedora/releases/ to the upstream's /mirror/; its URL."""
    port = free_port()
    proxy = HTTPServerProxyRes(
        name="/fedora/releases/",
        sub="/fedora/",
        head=f"http://127.0.0.1:{upstream.port}/mirror/",
        cache=f"{cache}/",
        **params,
    )
    await engine.apply(graph_of(HTTPServerRes(name=f":{port}"), proxy))
    await settle(engine)
    return f"http://127.0.0.1:{port}"


async def test_fetches_once_then_serves_the_cache(
    tmp_path: Path, engine: Engine, upstream: Upstream
) -> None:
    upstream.files["/mirror/releases/38/os/Packages/c/cowsay.rpm"] = b"moo\n"
    cache = tmp_path / "cache"
    base = await start(engine, upstream, cache)
    url = f"{base}/fedora/releases/38/os/Packages/c/cowsay.rpm"
    status, body, headers = await fetch(url)
    assert (status, body) == (200, b"moo\n")
    assert upstream.asked == ["/mirror/releases/38/os/Packages/c/cowsay.rpm"]
    cached = cache / "38/os/Packages/c/cowsay.rpm"  # the path below the proxy's, in the cache
    assert cached.read_bytes() == b"moo\n"
    assert cached.stat().st_mtime == MODIFIED  # the upstream's Last-Modified
    assert oct(cached.stat().st_mode & 0o777) == "0o644"
    # Again: from the cache, the upstream is not asked.
    status, body, headers = await fetch(url)
    assert (status, body) == (200, b"moo\n")
    assert len(upstream.asked) == 1
    assert headers["Last-Modified"] == email.utils.formatdate(MODIFIED, usegmt=True)
    assert (await fetch(url, headers={"If-Modified-Since": headers["Last-Modified"]}))[0] == 304
    # Missing upstream: 404, nothing cached; a directory is proxied, never cached.
    assert (await fetch(f"{base}/fedora/releases/38/os/none"))[0] == 404
    assert not (cache / "38/os/none").exists()
    assert (await fetch(f"{base}/fedora/releases/38/", data=b"x"))[0] == 405
    assert sorted(p.name for p in (cache / "38/os/Packages/c").iterdir()) == ["cowsay.rpm"]
    # A redirect is followed (as mgmt's Go client does); the file is cached under our path.
    upstream.moved["/mirror/releases/old.rpm"] = "new/cowsay.rpm"
    upstream.files["/mirror/releases/new/cowsay.rpm"] = b"moved\n"
    assert (await fetch(f"{base}/fedora/releases/old.rpm"))[:2] == (200, b"moved\n")
    assert (cache / "old.rpm").read_bytes() == b"moved\n"


async def test_url_credentials_are_sent_as_basic_auth_and_never_shown(
    tmp_path: Path, engine: Engine, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL's userinfo was dropped (the upstream got no Authorization: a mirror behind basic
    auth answered 401, the proxy 404) and logged whole, into `mgmt status` and the status
    page; and its token= too. Now it is Basic auth, as Go's client sends it, and shown as
    user:*** (secret-looking query values as ***) wherever a URL is logged or told."""
    import base64
    import logging

    from resources.http_client import HTTPClientRes

    caplog.set_level(logging.DEBUG)
    upstream.files["/mirror/releases/a.txt"] = b"a\n"
    upstream.files["/c.txt?token=QUERYTOKEN"] = b"c\n"
    port = free_port()
    proxy = HTTPServerProxyRes(
        name="/fedora/releases/",
        sub="/fedora/",
        head=f"http://mirroruser:S3CR3TPASS@127.0.0.1:{upstream.port}/mirror/",
    )
    dst = tmp_path / "fetched.txt"
    url = f"http://cliuser:CLIENTPASS@127.0.0.1:{upstream.port}/c.txt?token=QUERYTOKEN"
    missing = url.replace("c.txt", "none.txt")
    graph = graph_of(
        HTTPServerRes(name=f":{port}"),
        proxy,
        HTTPClientRes(name=str(dst), url=url, meta=Meta(poll=3600)),
        HTTPClientRes(name="missing", url=missing, meta=Meta(poll=3600)),
    )
    await engine.apply(graph)
    await settle(engine)
    assert dst.read_text() == "c\n"
    assert (await fetch(f"http://127.0.0.1:{port}/fedora/releases/a.txt"))[:2] == (200, b"a\n")
    status, body, _ = await fetch(f"http://127.0.0.1:{port}/fedora/releases/none")
    assert status == 404 and b"mirroruser:***@" in body
    basic = {
        "Basic " + base64.b64encode(pair).decode()
        for pair in (b"mirroruser:S3CR3TPASS", b"cliuser:CLIENTPASS")
    }
    assert set(upstream.authorization) == basic
    errors = " ".join(str(v.error) for v in engine.vertices.values())
    assert "cliuser:***@" in errors and "token=***" in errors  # the missing file's
    for secret in ("S3CR3TPASS", "CLIENTPASS", "QUERYTOKEN"):
        assert secret not in caplog.text
        assert secret not in errors
        assert secret.encode() not in body


async def test_streams_and_never_shows_a_partial_file(
    tmp_path: Path, engine: Engine, upstream: Upstream
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()  # there before the download: its listing is what the client could see
    base = await start(engine, upstream, cache)
    port = int(base.rpartition(":")[2])

    async def ask() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fedora/releases/big HTTP/1.1\r\nHost: x\r\n\r\n")
        return reader, writer, await reader.readuntil(b"\r\n\r\n")

    # The client gets bytes while the upstream still holds the second half: streamed.
    reader, writer, head = await ask()
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {BIG}".encode() in head
    got = await reader.read(BIG)
    assert got and not upstream.resume.is_set()
    assert await asyncio.to_thread(upstream.half_sent.wait, 10)
    assert [p.name for p in cache.iterdir()] == []  # nothing in the cache, under any name
    upstream.resume.set()
    got += await reader.read()  # to the end: the proxy closes once the file is in the cache
    writer.close()
    assert got == b"a" * (BIG // 2) + b"b" * (BIG // 2)
    assert (cache / "big").read_bytes() == got

    # Cut off half-way: the client's body is short, and nothing is cached.
    (cache / "big").unlink()
    upstream.half_sent.clear()
    upstream.resume.clear()
    upstream.complete = False
    reader, writer, head = await ask()
    assert await asyncio.to_thread(upstream.half_sent.wait, 10)
    upstream.resume.set()
    assert 0 < len(await reader.read()) <= BIG // 2  # short: the client can tell
    writer.close()
    assert [p.name for p in cache.iterdir()] == []


async def test_a_download_waits_for_the_disk_beyond_the_pending_limit(
    tmp_path: Path, engine: Engine, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resources.http_server_proxy

    monkeypatch.setattr(resources.http_server_proxy, "PENDING", 1024)  # every chunk waits
    upstream.files["/mirror/releases/iso"] = body = os.urandom(BIG) * 4
    cache = tmp_path / "cache"
    base = await start(engine, upstream, cache)
    assert (await fetch(f"{base}/fedora/releases/iso"))[:2] == (200, body)
    assert (cache / "iso").read_bytes() == body


async def test_refuses_traversal_and_symlinks_out_of_the_cache(
    tmp_path: Path, engine: Engine, upstream: Upstream
) -> None:
    upstream.files["/mirror/releases/out/x"] = b"from upstream\n"
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    cache.mkdir()
    (cache / "out").symlink_to(outside)
    base = await start(engine, upstream, cache)
    for path in ("/fedora/releases/../x", "/fedora/releases/%2e%2e/x", "/fedora/releases/a//b"):
        assert (await raw_fetch(base + path)).status == 400, path
    # A symlink in the cache is not followed: neither read through nor written through.
    assert (await fetch(f"{base}/fedora/releases/out/secret"))[0] == 404  # asked upstream
    status, body, _ = await fetch(f"{base}/fedora/releases/out/x")
    assert (status, body) == (200, b"from upstream\n")  # served, but not cached through it
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert upstream.asked == ["/mirror/releases/out/secret", "/mirror/releases/out/x"]


async def test_under_noop_the_cache_is_left_alone(
    tmp_path: Path, engine: Engine, upstream: Upstream
) -> None:
    upstream.files["/mirror/releases/f"] = b"proxied\n"
    cache = tmp_path / "cache"
    base = await start(engine, upstream, cache, meta=Meta(noop=True))
    assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"proxied\n")
    assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"proxied\n")
    assert upstream.asked == ["/mirror/releases/f"] * 2  # never cached
    assert not cache.exists()


async def test_ttl_refetches_old_files_and_zero_never_caches(
    tmp_path: Path, engine: Engine, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resources.http_server_proxy

    upstream.files["/mirror/releases/f"] = b"one\n"
    cache = tmp_path / "cache"
    base = await start(engine, upstream, cache, ttl=3600)
    assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"one\n")
    assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"one\n")
    assert len(upstream.asked) == 1  # younger than its ttl: from the cache
    upstream.files["/mirror/releases/f"] = b"two\n"
    later = time.time() + 3601
    monkeypatch.setattr(resources.http_server_proxy, "clock", lambda: later)
    assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"two\n")
    assert len(upstream.asked) == 2 and (cache / "f").read_bytes() == b"two\n"

    never = tmp_path / "never"
    base = await start(engine, upstream, never, ttl=0)
    for _ in range(2):
        assert (await fetch(f"{base}/fedora/releases/f"))[:2] == (200, b"two\n")
    assert len(upstream.asked) == 4 and not never.exists()


async def test_force_replaces_what_is_in_the_way(
    tmp_path: Path, engine: Engine, upstream: Upstream
) -> None:
    for name in ("d", "a/f", "l/f"):
        upstream.files[f"/mirror/releases/{name}"] = f"{name}\n".encode()
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / "d" / "sub").mkdir(parents=True)  # a tree where the file d goes
    (cache / "a").write_text("a file where a directory goes\n")
    outside.mkdir()
    (cache / "l").symlink_to(outside)  # a link where a directory goes
    base = await start(engine, upstream, cache, force=True)
    for name in ("d", "a/f", "l/f"):
        assert (await fetch(f"{base}/fedora/releases/{name}"))[:2] == (200, f"{name}\n".encode())
        assert (cache / name).read_text() == f"{name}\n"
    assert not (cache / "l").is_symlink() and list(outside.iterdir()) == []


async def test_cache_only_and_an_unreachable_head(tmp_path: Path, engine: Engine) -> None:
    cache = tmp_path / "cache"
    (cache / "a").mkdir(parents=True)
    (cache / "a" / "f").write_text("kept\n")
    port, dead = free_port(), free_port()
    await engine.apply(
        graph_of(
            HTTPServerRes(name=f":{port}"),
            HTTPServerProxyRes(name="/only/", cache=f"{cache}/"),
            HTTPServerProxyRes(name="/dead/", head=f"http://127.0.0.1:{dead}/"),
        )
    )
    await settle(engine)
    base = f"http://127.0.0.1:{port}"
    assert (await fetch(f"{base}/only/a/f"))[:2] == (200, b"kept\n")
    assert (await fetch(f"{base}/only/a/g"))[0] == 502  # not cached, nothing to fetch from
    assert (await fetch(f"{base}/dead/x"))[0] == 502  # the head cannot be reached
    assert await status_line(port, "/dead/x") == b"HTTP/1.1 502 Bad Gateway"
    os.chmod(cache / "a" / "f", 0o644)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"name": "fedora/", "head": "http://h/"}, "name"),
        ({"name": "/f/", "sub": "fedora/", "head": "http://h/"}, "sub"),
        ({"name": "/f/", "head": "ftp://h/"}, "head"),
        ({"name": "/f/", "head": "http://h/x"}, "head"),
        ({"name": "/f/", "cache": "rel/"}, "cache"),
        ({"name": "/f/", "cache": "/srv/cache"}, "cache"),
        ({"name": "/f/"}, "head"),
        ({"name": "/f/", "cache": "/srv/", "ttl": -2}, "ttl"),
    ],
)
def test_validation_names_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        HTTPServerProxyRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


def test_a_sub_no_request_can_start_with_is_refused() -> None:
    """mgmt answers every request of such a proxy 404; a typo in `sub` is found by check."""
    with pytest.raises(ValidationError) as err:
        HTTPServerProxyRes(name="/mirror/", sub="/fedora/", head="http://h/").validate()
    assert err.value.key == "sub" and "no request under '/mirror/' starts with" in str(err.value)
    for path, sub in [
        ("/fedora/38/", "/fedora/"),
        ("/f/", "/f/"),
        ("/f/", "/f/a/"),
        ("/f/x", "/f/"),
    ]:
        HTTPServerProxyRes(name=path, sub=sub, head="http://h/").validate()


async def test_a_proxy_replaced_by_a_swap_is_served_throughout(
    tmp_path: Path, engine: Engine, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap that replaces an http:server:proxy (its `ttl` edited) stopped it before its
    successor's init() offered its path: a request in between was 404 (a download of an
    installer failed). It is answered by the old one now (tests/resources/swapping.py)."""
    upstream.files["/mirror/releases/a.rpm"] = b"moo\n"
    port = free_port()
    base, server = f"http://127.0.0.1:{port}", HTTPServerRes(name=f":{port}")

    def proxy(ttl: int) -> HTTPServerProxyRes:
        head = f"http://127.0.0.1:{upstream.port}/mirror/"
        cache = f"{tmp_path}/c/"
        return HTTPServerProxyRes(name="/fedora/", sub="/fedora/", head=head, cache=cache, ttl=ttl)

    await swap(engine, server, proxy(-1))
    url = f"{base}/fedora/releases/a.rpm"
    assert (await fetch(url))[:2] == (200, b"moo\n")
    between = at_successor_init(
        monkeypatch, HTTPServerProxyRes, lambda res: res.ttl == 60, lambda: fetch(url)
    )
    await swap(engine, server, proxy(60))
    assert [reply[:2] for reply in between] == [(200, b"moo\n")]  # (before: 404)
    assert (await fetch(url))[:2] == (200, b"moo\n")
    await swap(engine, server)
    assert (await fetch(url))[0] == 404
