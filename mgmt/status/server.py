"""The agent's HTTP server: the status page, its API and live updates, and /metrics.

    GET /                 the status page (static/index.html, app.js, style.css: no CDN)
    GET /api/status       StatusModel.snapshot() as JSON
    GET /api/events       server-sent events: every update as it happens (no polling)
    GET /graph.svg        the running graph drawn by Graphviz (`dot`), grouped by kind
    GET /metrics          Prometheus metrics (with --prometheus)

It always listens on a Unix socket in the prefix (`<prefix>/status.sock`, 0600: the agent's
user alone; `mgmt status` reads it), and on TCP with --status or --prometheus (at
--prometheus-listen, loopback by default; one listener for the page and /metrics; with
--prometheus alone it serves /metrics only). Beyond loopback it speaks the cluster's TLS: HTTPS
with this host's cluster certificate (given, or minted from the cluster's CA), and a client
certificate from the cluster's CA required (mTLS); options the cluster would refuse are refused
(`listen()`), and an insecure cluster's (--insecure-cluster) is plain HTTP, with a warning.
A small HTTP/1.1 server of our own on asyncio: GET and HEAD only, one request per connection, bounded request size and time; a client
that stops reading is dropped after SEND_TIMEOUT. On TCP, at most MAX_CONNECTIONS connections
are served at once (the others wait in the kernel's backlog), beyond loopback at most PER_PEER
from one address; the socket, private, is not
limited, for `mgmt status`. At most MAX_STREAMS event streams; the snapshot each starts with
is encoded once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import itertools
import logging
import math
import os
import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ResourceError, ValidationError, WorldError
from engine.params import show
from mgmt.sockaddr import SERVER
from mgmt.status.model import StatusModel
from mgmt.status.unixsock import bound

if TYPE_CHECKING:
    from mgmt.config import Config

log = logging.getLogger("main")

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
MAX_REQUEST = 8192  # bytes of request line and headers
REQUEST_TIMEOUT = 10.0  # seconds to send them
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
SEND_TIMEOUT = 30.0  # seconds a client may take to read what a stream sent it
MAX_STREAMS = 64  # event streams at once: each holds a snapshot in flight
MAX_CONNECTIONS = 128  # TCP connections served at once; the others wait in the backlog
# TCP connections from one address at once beyond loopback: more are closed as soon as
# accepted. Without it, one client that opened MAX_CONNECTIONS and sent nothing (no certificate
# needed: the TLS handshake has REQUEST_TIMEOUT) held every slot, again and again: the page was
# nobody else's. (On loopback every local user is 127.0.0.1: the socket is `mgmt status`'s.)
PER_PEER = 16
DOT_TIMEOUT = 60.0  # seconds Graphviz may take to lay out a graph
# Resources past which the graph is not drawn: Graphviz lays 1,001 out in 0.5-2 s, but ran
# over DOT_TIMEOUT (a core and 350 MB) for 100,000, after each swap (docs/operations.md).
MAX_DRAWN = 2000
CLOSE_WAIT = 3.0  # seconds close() waits for the requests it cancelled (a `dot` stopped)
COLORS = {
    "pending": "#d0d0d0",
    "applying": "#6fa8dc",
    "converged": "#93c47d",
    "differs": "#ffd966",
    "retrying": "#f6b26b",
    "failed": "#e06666",
}

Response = tuple[int, str, bytes]


class StatusServer:
    def __init__(self, model: StatusModel, metrics: Callable[[], bytes] | None = None) -> None:
        self.model = model
        self.metrics = metrics
        self.servers: list[asyncio.Server] = []
        self._svg: tuple[object, bytes, str] = (None, b"", "")  # (_shape, SVG, why none)
        self._svg_version = -1  # the model's graph_version that _svg is for
        self._too_slow: int | None = None  # resources in a graph Graphviz did not finish
        self._svg_lock = asyncio.Lock()
        self._streams: set[asyncio.Task[Any]] = set()
        self._events = 0  # open /api/events streams
        self._listeners: list[socket.socket] = []
        self._accepting: set[asyncio.Task[None]] = set()
        self._adopting: list[socket.socket] = []  # adopt_unix's, until their server is made

    async def listen_unix(self, path: Path) -> None:
        """Serve on a socket at `path`, in the private prefix (0700): the agent's user alone
        can connect; the socket itself is 0600 from its creation (`unixsock.bound`). One a killed agent
        left there is removed first, by the caller (`unixsock.remove_stale`, in its hop to a thread)."""
        server = await asyncio.start_unix_server(self._serve, sock=bound(path), **SERVER)
        self.servers.append(server)

    def adopt_unix(self, sock: socket.socket) -> None:
        """Serve on `sock`, a Unix socket bound and listening already, its first client waiting
        in the backlog (mgmt.status.unixsock.FirstClient): from now on as `listen_unix`'s.
        Until its server is made (a task), close() closes the socket."""
        self._adopting.append(sock)
        self._accepting.add(asyncio.create_task(self._adopt(sock)))

    async def _adopt(self, sock: socket.socket) -> None:
        # Not serving yet: no suspension before the server is in self.servers (close()'s)
        server = await asyncio.start_unix_server(
            self._serve, sock=sock, start_serving=False, **SERVER
        )
        self._adopting.remove(sock)
        self.servers.append(server)
        await server.start_serving()

    async def listen_tcp(
        self, host: str, port: int, page: bool = True, tls: ssl.SSLContext | None = None
    ) -> None:
        """Serve the page and /metrics (`page` false: /metrics alone) at host:port, over `tls`
        when given. On loopback, a request must name the host by address or as `localhost`: a
        web page the admin opens cannot rebind its own domain name to 127.0.0.1 and read the
        status."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
        sock.setblocking(False)
        self._listeners.append(sock)
        listener = _Listener(_is_loopback(host), page, tls)
        self._accepting.add(asyncio.create_task(self._accept(sock, listener)))

    async def _accept(self, sock: socket.socket, listener: _Listener) -> None:
        """Accept a connection only when fewer than MAX_CONNECTIONS are open: the others wait
        in the kernel's backlog and hold none of our descriptors (a local user holding
        thousands took every one the agent had: its resources failed with EMFILE)."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(MAX_CONNECTIONS)
        peers: dict[str, int] = {}  # open connections by address

        def done(peer: str, _task: asyncio.Task[None]) -> None:
            slots.release()
            peers[peer] -= 1
            if not peers[peer]:
                del peers[peer]

        while True:
            await slots.acquire()
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as err:  # out of descriptors: the backlog keeps the client
                slots.release()
                log.debug("status listener: %s", err)
                await asyncio.sleep(0.5)
                continue
            peer = str(address[0])
            if not listener.check_host and peers.get(peer, 0) >= PER_PEER:
                log.debug(
                    "status listener: %s has %d connections open, closing one", peer, PER_PEER
                )
                conn.close()
                slots.release()
                continue
            peers[peer] = peers.get(peer, 0) + 1
            task = asyncio.create_task(self._serve_socket(conn, listener))
            task.add_done_callback(functools.partial(done, peer))

    async def _serve_socket(self, conn: socket.socket, listener: _Listener) -> None:
        """One TCP connection: the TLS handshake first (a client without a certificate from
        the cluster's CA is refused there), then one request."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=listener.tls,
                ssl_handshake_timeout=REQUEST_TIMEOUT if listener.tls else None,
            )
        except (OSError, TimeoutError) as err:  # ssl.SSLError is an OSError
            log.debug("status listener: %s", err)
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._serve(reader, writer, check_host=listener.check_host, page=listener.page)

    async def close(self) -> None:
        for accepting in self._accepting:
            accepting.cancel()
        for sock in self._listeners + self._adopting:
            sock.close()
        self._accepting, self._listeners, self._adopting = set(), [], []
        for server in self.servers:
            server.close()
        for task in list(self._streams):
            task.cancel()
        # Awaited (bounded: a connection whose client reads nothing may wait to flush): a
        # request's child (the picture's `dot`) is stopped and reaped before the agent exits,
        # not left running under pid 1 (its stop takes 2 x GRACE at most).
        if self._streams:
            await asyncio.wait(list(self._streams), timeout=CLOSE_WAIT)
        for server in self.servers:
            await server.wait_closed()
        self.servers = []

    # requests --------------------------------------------------------------------------------

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        check_host: bool = False,
        page: bool = True,
    ) -> None:
        from resources._lib import httpd  # at the first request: not in a cron run's start

        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await httpd.read_request(
                        reader, head_limit=MAX_REQUEST, body_limit=0, methods=("GET", "HEAD")
                    )
            except httpd.BadRequest as err:
                response = (err.status, "text/plain", f"{err}\n".encode())
                await _send(writer, response, headers=err.headers)
                return
            except TimeoutError:
                return
            method, target = request.method, request.path
            if check_host and not _local_host(request.headers.get("host", "")):
                await _send(writer, (403, "text/plain", b"Host: an address or localhost\n"))
                return
            if not page and target != "/metrics":
                await _send(writer, (404, "text/plain", b"not found (--status serves the page)\n"))
                return
            if target == "/api/events":
                if self._events >= MAX_STREAMS:
                    await _send(writer, (503, "text/plain", b"too many event streams\n"))
                    return
                self._events += 1
                try:  # a closed page's stream ends at once, not at its next write
                    await httpd.while_there(reader, self._stream(writer))
                except httpd.Gone:
                    pass
                finally:
                    self._events -= 1
                return
            route = self._routes().get(target)
            response = await route() if route else (404, "text/plain", b"not found\n")
            await _send(writer, response, head=method == "HEAD")
        except TimeoutError:  # a client that does not read (or send): reset, not waited for
            httpd.drop(writer.transport)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _routes(self) -> dict[str, Callable[[], Awaitable[Response]]]:
        routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/api/status": self._status,
            "/graph.svg": self._graph_svg,
        }
        for name in ("index.html", "app.js", "style.css", "favicon.svg"):
            routes["/" + name] = _static(name)
        routes["/"] = routes["/index.html"]
        routes["/favicon.ico"] = routes["/favicon.svg"]
        if self.metrics is not None:
            routes["/metrics"] = self._metrics
        return routes

    async def _status(self) -> Response:
        return 200, "application/json", await self.model.encoded()

    async def _metrics(self) -> Response:
        assert self.metrics is not None
        return 200, "text/plain; version=0.0.4", self.metrics()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Server-sent events: a `snapshot` first, then every update."""
        queue = self.model.subscribe()
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            snapshot = await self.model.encoded()  # {"host": ...}
            writer.write(b'data: {"type": "snapshot", ' + snapshot[1:] + b"\n\n")
            await _drain(writer)
            while self.model.subscribed(queue):
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        update = await queue.get()
                except TimeoutError:
                    writer.write(b": keep-alive\n\n")
                else:
                    writer.write(_sse(update))
                await _drain(writer)
        finally:
            self.model.unsubscribe(queue)

    async def _graph_svg(self) -> Response:
        """The graph laid out by Graphviz: drawn at most once per graph (a swap that leaves
        the resources and edges as they were draws nothing), by one `dot` at a time, and not
        at all past MAX_DRAWN resources or for a graph as large as one Graphviz did not finish
        (DOT_TIMEOUT): the answer then says why, and the table and search work as ever."""
        async with self._svg_lock:
            version = self.model.graph_version
            if self._svg_version != version:
                count = len(self.model.engine.vertices)
                if count > MAX_DRAWN:  # no snapshot either: ~0.2 s of the loop at 100,000
                    self._svg = (None, b"", _too_many(count))
                else:
                    snapshot = self.model.snapshot()
                    shape = _shape(snapshot)
                    if self._svg[0] != shape:
                        self._svg = (shape, *await self._draw(snapshot))
                self._svg_version = version
        _, svg, why = self._svg
        if not svg:
            return 503, "text/plain", f"no graph picture: {why}\n".encode()
        return 200, "image/svg+xml", svg

    async def _draw(self, snapshot: dict[str, Any]) -> tuple[bytes, str]:
        """(the SVG, "") or (b"", why there is none)."""
        from resources._lib.proc import run_command  # a page's: not in a cron run's start

        count = len(snapshot["vertices"])
        if self._too_slow is not None and count >= self._too_slow:
            return b"", (
                f"Graphviz did not lay out {self._too_slow:,} resources within "
                f"{DOT_TIMEOUT:.0f}s: a graph as large is not tried again; search the table below"
            )
        dot = shutil.which("dot")
        if dot is None:
            return b"", "it needs Graphviz's dot, which is not installed (apt-get install graphviz)"
        try:  # stopped with its process group when the request is (the agent's stop)
            _, out, _ = await run_command(
                [dot, "-Tsvg"], timeout=DOT_TIMEOUT, stdin=to_dot(snapshot).encode()
            )
        except ResourceError as err:
            if "timed out" in str(err):
                self._too_slow = count
            log.warning("graph picture of %d resources: %s", count, err)
            return b"", f"Graphviz failed: {err}"
        return out.encode(), ""


def _too_many(count: int) -> str:
    return (
        f"{count:,} resources are too many to draw (the picture stops at {MAX_DRAWN:,}): "
        "search the table below"
    )


def _shape(snapshot: dict[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[str, str, bool], ...]]:
    """What the picture draws, less the states (the page paints those live): its resources
    and edges."""
    edges = tuple(sorted((e["from"], e["to"], bool(e["notify"])) for e in snapshot["edges"]))
    return tuple(v["id"] for v in snapshot["vertices"]), edges


class _Listener:
    """How a TCP listener serves: the Host check (loopback), the page or /metrics alone, TLS."""

    def __init__(self, check_host: bool, page: bool, tls: ssl.SSLContext | None) -> None:
        self.check_host, self.page, self.tls = check_host, page, tls


async def listen(server: StatusServer, config: Config, prefix: Path) -> str:
    """Serve on --prometheus-listen as the config says (see the module docstring); the URL
    served. ValidationError (naming the flag) when it cannot: nothing is applied then; OSError
    EADDRINUSE when another process holds the port (any local user can take a loopback port
    first: the agent must not depend on it, it runs on and tries again)."""
    from mgmt.metrics import FLAG, parse_listen, resolve  # a listener's: not every run's

    what = "the status page" if config.status else "metrics"
    host, port = parse_listen(config.prometheus_listen)
    try:
        address = await asyncio.to_thread(resolve, host, port)
        tls = None
        if not _is_loopback(address):
            shown = f"[{address}]" if ":" in address else address
            tls = await asyncio.to_thread(_tls_context, config, prefix, f"https://{shown}:{port}")
            if tls is None:
                log.warning(
                    "%s %s: %s served over plain HTTP beyond this host (%s), as the cluster "
                    "is insecure (--insecure-cluster): anyone who reaches it reads the graph",
                    FLAG,
                    config.prometheus_listen,
                    what,
                    address,
                )
        await server.listen_tcp(address, port, page=config.status, tls=tls)
    except OSError as err:  # a port in use, a host that does not resolve, unreadable TLS files
        if err.errno == errno.EADDRINUSE:
            raise  # another process holds it: the agent runs on, and tries again (mgmt.agent)
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)
        raise ValidationError(
            f"cannot serve {what} on {show(config.prometheus_listen)}: {reason}", FLAG
        ) from err
    shown = f"[{address}]" if ":" in address else address
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def _tls_context(config: Config, prefix: Path, url: str) -> ssl.SSLContext | None:
    """The cluster's TLS for a listener beyond loopback (None for an insecure cluster): the
    options the cluster would use (mgmt.cluster.options, refused as it would refuse them).
    With files given (--tls-*, --cluster-cert-dir) those; else a certificate minted for `url`
    (for 0.0.0.0 or ::, the host's addresses at the start) from the cluster's CA (--cluster-ca-dir, default <prefix>/cluster-ca, created first on the
    first host as the cluster would) into <prefix>/status-tls/. A client certificate from
    that CA is required."""
    from mgmt.address import wildcard_addresses
    from mgmt.cluster import pki
    from mgmt.cluster.options import from_config
    from mgmt.metrics import FLAG

    try:
        options = from_config(config, prefix)
    except ValidationError as err:
        raise ValidationError(
            f"{show(config.prometheus_listen)} is beyond loopback, which needs the cluster's "
            f"TLS: {err}",
            FLAG,
        ) from None
    if options.insecure:
        return None
    files = options.tls
    if options.ca_dir is not None:
        try:
            if options.create_ca and pki.create_ca(options.ca_dir):
                log.info("created the cluster CA in %s", options.ca_dir)
            names = pki.san_names(config.hostname, [url]) + wildcard_addresses(url)
            files = pki.mint(options.ca_dir, prefix / "status-tls", config.hostname, names)
        except WorldError as err:
            raise ValidationError(str(err), FLAG) from None
    if files.ca is None or files.cert is None or files.key is None:
        raise ValidationError(
            f"{show(config.prometheus_listen)} is beyond loopback: serving there needs the "
            "cluster's TLS files (--cluster-cert-dir, or --tls-ca, --tls-cert and --tls-key; "
            "clients then need a certificate from that CA), or --insecure-cluster for plain "
            "HTTP (development only)",
            FLAG,
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(files.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_host(host: str) -> bool:
    """A Host header that is an IP address or localhost (or absent: not a browser)."""
    host = host.strip().lower()
    if not host:
        return True
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def to_dot(snapshot: dict[str, Any]) -> str:
    """The graph in Graphviz's language: a cluster per kind; each node's id is its resource
    (`file[/etc/motd]`), which the page finds in the SVG to colour it live.

    The resources of a kind that have no edge are laid out as a grid (rows chained by
    invisible edges, `_rows`): left alone, Graphviz stacks them in one column, 47,000 points
    tall for 1,000 files, which no zoom makes readable."""
    lines = [
        "digraph mgmt {",
        '  graph [rankdir=LR, fontname="sans-serif", fontsize=11, nodesep=0.15, ranksep=0.4];',
        '  node [shape=box, style="rounded,filled", fontname="sans-serif", fontsize=10];',
    ]
    connected = {e["from"] for e in snapshot["edges"]} | {e["to"] for e in snapshot["edges"]}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for vertex in snapshot["vertices"]:
        by_kind.setdefault(vertex["kind"], []).append(vertex)
    for index, (kind, vertices) in enumerate(sorted(by_kind.items())):
        lines.append(f"  subgraph cluster_{index} {{ label={_q(kind)}; style=dashed;")
        for vertex in vertices:
            label = _label(vertex["name"])
            color = COLORS[vertex["state"]]
            lines.append(
                f"    {_q(vertex['id'])} [id={_q(vertex['id'])}, label={_q(label)}, "
                f'fillcolor="{color}", tooltip={_q(vertex["id"])}];'
            )
        lines.extend(_rows([v for v in vertices if v["id"] not in connected]))
        lines.append("  }")
    for edge in snapshot["edges"]:
        style = (
            ' [style=bold, color="#cc0000", label="notify", fontsize=8]' if edge["notify"] else ""
        )
        lines.append(f"  {_q(edge['from'])} -> {_q(edge['to'])}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


GRID_FROM = 12  # a kind with more resources without edges than this lays them out as a grid
ASPECT = 1.7  # the grid's width to height: about the page's picture


def _label(name: str) -> str:
    return name if len(name) <= 40 else "…" + name[-39:]


def _rows(vertices: list[dict[str, Any]]) -> list[str]:
    """Invisible edges chaining `vertices` into rows (left to right): a grid about ASPECT times
    as wide as it is tall. A box is about 6 points a character wide (54 at least) plus the
    29 points between ranks, and 47 points high with the space between rows."""
    if len(vertices) <= GRID_FROM:
        return []
    chars = sum(len(_label(v["name"])) for v in vertices) / len(vertices)
    box = max(54.0, 6 * chars + 16) + 29
    width = max(4, round(math.sqrt(ASPECT * 47 * len(vertices) / box)))
    ids = [v["id"] for v in vertices]
    return [
        f"    {_q(a)} -> {_q(b)} [style=invis];"
        for start in range(0, len(ids), width)
        for a, b in itertools.pairwise(ids[start : start + width])
    ]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _static(name: str) -> Callable[[], Awaitable[Response]]:
    suffix = os.path.splitext(name)[1]

    async def serve() -> Response:
        body = await asyncio.to_thread((STATIC / name).read_bytes)
        return 200, CONTENT_TYPES[suffix], body

    return serve


async def _drain(writer: asyncio.StreamWriter) -> None:
    """A client that stops reading is dropped (TimeoutError), not waited for forever."""
    async with asyncio.timeout(SEND_TIMEOUT):
        await writer.drain()


def _sse(data: dict[str, Any]) -> bytes:
    import json  # here: a cron run serves no client (~5 M instructions of its start-up)

    return b"data: " + json.dumps(data).encode() + b"\n\n"


# Every answer: never cached, never sniffed, scripts and styles from the agent alone.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
}


async def _send(
    writer: asyncio.StreamWriter,
    response: Response,
    head: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    from resources._lib import httpd

    code, content_type, body = response
    headers = {"Content-Type": content_type, **HEADERS, **(headers or {})}
    writer.write(httpd.encode(httpd.Response(code, body, headers), head))
    await _drain(writer)
