"""An etcd v3 client on aetcd's gRPC stubs: endpoint failover, TLS, auth, resilient watches.

`aetcd.Client` talks to one endpoint over a plain channel; this client uses aetcd's generated
messages and stubs (`aetcd.rpc`) with its own connection management:

- one connection (a gRPC channel) at a time, to the preferred endpoint (this host's own member)
  if it answers, else to the next endpoint that does; an RPC that fails because its member is
  gone, leaderless or electing (UNAVAILABLE, DEADLINE_EXCEEDED) drops the connection and is
  retried on the next endpoint until `retry_for` seconds have passed, then raises WorldError;
- TLS (CA, client certificate) for `https://` endpoints; etcd authentication (the token is
  renewed when etcd expires it); the password is never logged;
- a watch is a task that re-creates its etcd watch on every new connection and then signals
  once (the watched state may have changed while it was away): level-triggered, no lost change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio
from aetcd import rpc

from engine.errors import WorldError
from engine.tasks import TaskSet
from mgmt import stuck
from mgmt.cluster.pki import TLSFiles

log = logging.getLogger("cluster")
logging.getLogger("grpc").setLevel(logging.WARNING)  # its debug lines say nothing useful here

T = TypeVar("T")
_RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# grpc.aio's own status (not etcd's answer) when a request could not be sent on a stream whose
# connection broke meanwhile (a lease keepalive or watch written as its etcd stops, or under
# load): a connection failure, retried as one, and said in words (`_status`).
_BROKEN = "Internal error from Core"
BROKEN_WORDS = (
    "the connection broke while the request was sent (its etcd member stopped, or is "
    "overloaded): retried on the next connection; if it goes on, see that member's log"
)
# etcd's refusals of a request or watch under authentication: a user without the permission
# (a client certificate's CN is its user), and no user at all (over plain HTTP).
_DENIED = ("permission denied", "user name is empty")
# Seconds a password check may take, at least: etcd runs bcrypt on it, CPU work that took
# 0.5 s at load 16 (not a write caught in an election, which `call_timeout` bounds: with a
# short --etcd-election-timeout, every check timed out and was made again, adding load).
AUTH_TIMEOUT = 2.0
CLOSED = "the etcd client is closed (this agent stops)"
# Seconds a task cancelled as the client closes (a watch, the connection's maintainer) may take
# to end: a bound on the stop (it ends at once; one that does not is said, and left behind).
STOP_WAIT = 5.0
RECONNECT_GRACE = 1.0  # seconds a stop's last writes wait for a connection between two (a failover)
# Keys per read of a prefix: 32 values of etcd's largest (1.5 MiB) stay under the receive limit.
_PAGE = 32
_CHANNEL_OPTIONS = [
    # etcd refuses pings more often than every 5 s (its --grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Our own subchannels: a shared one may still be backing off from a member that was gone.
    ("grpc.use_local_subchannel_pool", 1),
]


class TLSRefused(WorldError):
    """Every member refused the TLS handshake, or this host refused theirs: a wrong CA or a
    clock far off, which retrying does not mend (said once, in words, until it changes)."""


# BoringSSL's words (in gRPC's details) for a handshake this host refused: the member's
# certificate does not verify against our CA.
_WE_REFUSED = ("BAD_SIGNATURE", "CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
# ... and for one the member refused: an alert about this host's certificate (with TLS 1.3 the
# alert comes after the handshake, and gRPC reports it as corrupted data).
_THEY_REFUSED = (
    "BAD_CERTIFICATE",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "UNKNOWN_CA",
    "TSI_DATA_CORRUPTED",
)


def _validity(cert: Path | None) -> str:
    """`cert`'s validity and this host's clock, in words ("" if it cannot be read)."""
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes()) if cert else None
    except (OSError, ValueError):
        parsed = None
    clock = f"this host's clock says {now:%Y-%m-%d %H:%M:%S} UTC"
    if parsed is None:
        return clock
    start, end = parsed.not_valid_before_utc, parsed.not_valid_after_utc
    span = f"{cert} is valid from {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC"
    return f"{span}, {clock}"


def tls_refusal(endpoint: str, details: str, tls: TLSFiles) -> str | None:
    """What a failed TLS handshake with `endpoint` means, in words (None: not one)."""
    if any(word in details for word in _WE_REFUSED):
        return (
            f"{endpoint} presents a certificate that the CA in {tls.ca} did not sign (another "
            f"cluster's CA?), or one not valid at this host's time ({_validity(None)})"
        )
    if any(word in details for word in _THEY_REFUSED):
        return (
            f"{endpoint} refused this host's TLS certificate ({_validity(tls.cert)}): check "
            f"this host's clock against the cluster's, and that its CA is the cluster's"
        )
    return None


@dataclass(frozen=True)
class Scan:
    """What `EtcdClient.scan` read: key -> (value, mod revision). Every change up to revision
    `first` (the first page's) is in it; later ones may be, up to `last` (the last page's)."""

    items: dict[bytes, tuple[bytes, int]]
    first: int
    last: int


@dataclass(frozen=True)
class Member:
    id: int
    name: str  # "" until the member has started and published itself
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False

    @classmethod
    def of(cls, msg: Any) -> Member:
        return cls(msg.ID, msg.name, list(msg.peerURLs), list(msg.clientURLs), bool(msg.isLearner))


async def close_channel(channel: grpc.aio.Channel, grace: float) -> None:
    """Close `channel` once its open calls have ended, or after `grace` s: bounded, and safe to
    cancel (no task outlives it). grpc's own `close(grace)` waits for the calls in tasks of its
    own, which a cancellation mid-grace left pending (leaks, 2026-12-07), with the calls open
    and the channel never destroyed. Here the wait is a future the calls' done callbacks set
    (no task), and the close proper (`close()` without a grace: its calls cancelled, the
    channel destroyed) awaits nothing, so a cancellation cannot stop it. The open calls are
    grpc's list (`_active_calls`, grpc >= 1.59); without it, none is waited for."""
    calls = [call for call in getattr(channel, "_active_calls", ()) if not call.done()]
    try:
        if calls and grace > 0:
            ended = asyncio.get_running_loop().create_future()
            left = len(calls)

            def one_ended(_call: object) -> None:
                nonlocal left
                left -= 1
                if left == 0 and not ended.done():
                    ended.set_result(None)

            for call in calls:
                call.add_done_callback(one_ended)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await ended
    finally:
        await channel.close()


class _Conn:
    """One gRPC channel to one endpoint, with etcd's service stubs and the auth token."""

    def __init__(self, endpoint: str, channel: grpc.aio.Channel) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.authenticating = asyncio.Lock()  # one password check at a time (`_authenticate`)
        self.member_id = 0
        self.kv: Any = rpc.KVStub(channel)
        self.watch: Any = rpc.WatchStub(channel)
        self.lease: Any = rpc.LeaseStub(channel)
        self.cluster: Any = rpc.ClusterStub(channel)
        self.maintenance: Any = rpc.MaintenanceStub(channel)
        self.auth: Any = rpc.AuthStub(channel)


class _Renewal:
    """The renewals of one lease on one LeaseKeepAlive stream, kept open between them as etcd's
    own clients keep theirs: a stream opened, written, read and cancelled for each renewal (one
    a second at the default timings) was most of an idle agent's CPU (2026-12-06). The stream
    is opened again after any failure (a timeout, a cancelled renewal: no answer is left
    unread on it), on another connection, or with another token."""

    def __init__(self, client: EtcdClient, lease_id: int) -> None:
        self.client = client
        self.lease_id = lease_id
        self._call: Any = None
        self._conn: _Conn | None = None
        self._sent: tuple[tuple[str, str], ...] = ()

    async def renew(self) -> int:
        resp = await self.client.call("lease keepalive", self._once)
        return 0 if resp is grpc.aio.EOF else int(resp.TTL)

    async def _once(self, conn: _Conn) -> Any:
        # A stream that ended since (etcd's error, between two renewals) is opened again: a
        # write to it raised InvalidStateError, which no caller took for a failover.
        call = self._call
        if call is None or call.done() or self._conn is not conn or self._sent != conn.metadata:
            self.close()
            self._call = conn.lease.LeaseKeepAlive(metadata=conn.metadata)  # no deadline
            self._conn, self._sent = conn, conn.metadata
        call, kept = self._call, False
        try:
            async with asyncio.timeout(self.client.call_timeout):  # the deadline of one
                await call.write(rpc.LeaseKeepAliveRequest(ID=self.lease_id))
                resp = await call.read()
            kept = resp is not grpc.aio.EOF
            return resp
        except TimeoutError:  # as a request's own deadline: a failover, retried
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, details="Deadline Exceeded"
            ) from None
        finally:
            if not kept:
                self.close()

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self._call, self._conn = None, None


def _cancelled() -> bool:
    """Whether the current task is being cancelled (grpc also raises CancelledError when a
    channel is closed under a running call)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def range_end(prefix: bytes) -> bytes:
    """The end of the key range holding every key that starts with `prefix`."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class EtcdClient:
    """See the module doc. `start()` begins connecting; every call waits for a connection."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSFiles | None = None,
        user: str | None = None,
        password: str | None = None,
        call_timeout: float = 2.0,
        retry_for: float = 5.0,
        name: str = "",
    ) -> None:
        self.endpoints = list(dict.fromkeys(endpoints))
        self.preferred: str | None = None
        self._gave_up = -1  # the connection `generation` a `reconnected` wait gave up after
        self.tls = tls or TLSFiles()
        self.user = user
        self._password = password
        self.call_timeout = call_timeout
        self.retry_for = retry_for
        self.name = name
        self._tag = f"{name}: " if name else ""
        self.last_error = ""
        self.generation = 0  # bumped on every new connection
        self.connected = asyncio.Event()
        self.attempted = asyncio.Event()  # every endpoint was tried at least once
        self._conn: _Conn | None = None
        self._broken = asyncio.Event()
        self._broken.set()
        self._last_failed: str | None = None
        self._tasks = TaskSet("etcd client", log)
        self._watches: set[_Watch] = set()  # live subscriptions: closing the client ends them
        self._maintainer: asyncio.Task[None] | None = None
        # Closed (`close`): every call and wait from then on fails at once (WorldError), and
        # nothing connects again. Before, a call in flight as its channel was closed retried
        # for `retry_for` s, and one made after the close started a new connection, which no
        # one closed.
        self.closed = False
        self._credentials: grpc.ChannelCredentials | None = None
        self._was_connected = False
        self._refused = False  # the last failure to connect was a TLS refusal (TLSRefused)
        self._denied_said = False  # `denied` said it
        # An agent's client says why etcd refuses it (`denied`); a command's error says it.
        self.says_denied = False
        # Says why a lease cannot be held (e.g. the cluster lost its quorum) and when it can be
        # again (called with None): True if it said so, for keep_leased (mgmt.cluster.cluster).
        self.explain: Callable[[WorldError | None], Awaitable[bool]] | None = None
        self.quiet = False  # a probe: failing to connect is its caller's to say (debug)

    def __repr__(self) -> str:
        return f"<EtcdClient {self.name or 'main'} {self.endpoint or 'not connected'}>"

    @property
    def endpoint(self) -> str | None:
        return self._conn.endpoint if self._conn else None

    # connection ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._maintainer is None and not self.closed:
            self._maintainer = asyncio.create_task(self._maintain(), name=f"etcd {self!r}")

    async def wait_connected(self, timeout: float) -> bool:
        """Connected? Waits (at most `timeout`) until every endpoint has been tried once."""
        self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.attempted.wait()
        return self.connected.is_set()

    async def reconnected(self, grace: float) -> bool:
        """Connected, or again within `grace` s if a member was ever tried: a stop's last
        writes, made between two connections (a failover, or the switch to this host's own
        member as it starts to vote), are not skipped; a cluster never reached is not waited
        for, nor one that a wait of this outage already gave up on (a stop's writes one after
        the other wait once)."""
        if (
            not self.closed
            and self.attempted.is_set()
            and not self.connected.is_set()
            and self._gave_up != self.generation
        ):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.connected.wait()
            if not self.connected.is_set():
                self._gave_up = self.generation
        return self.connected.is_set()

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise WorldError(f"{what}: {CLOSED}")

    async def close(self) -> None:
        self.closed = True
        live, self._watches = self._watches, set()
        watches = [w.task for w in live]
        for watch in live:
            watch.task = None  # (see _Watch.cancel)
        tasks = [t for t in (*watches, self._maintainer, *self._tasks) if t is not None]
        await stuck.cancel_within(tasks, STOP_WAIT, f"{self._tag}etcd client", log)
        self._maintainer = None
        if self._conn is not None:
            await self._conn.channel.close()
            self._conn = None
        # Whatever waits for a connection wakes, and finds the client closed.
        self.connected.set()
        self.attempted.set()
        self.connected.clear()

    def set_endpoints(self, endpoints: Sequence[str], preferred: str | None = None) -> None:
        """Replace the endpoint list; reconnect if a preferred endpoint is now available."""
        self.endpoints = list(dict.fromkeys([*([preferred] if preferred else []), *endpoints]))
        switch = preferred is not None and preferred != self.preferred
        self.preferred = preferred
        if switch and self._conn is not None and self._conn.endpoint != preferred:
            self._drop(self._conn, "switching to this host's own member")

    def _drop(self, conn: _Conn, why: str) -> None:
        """Forget a broken connection (if still current); the maintainer finds another."""
        if self._conn is not conn:
            return
        log.debug("%sleaving %s: %s", self._tag, conn.endpoint, why)
        self._conn = None
        self._last_failed = conn.endpoint
        self.connected.clear()
        self._broken.set()
        # Calls still running on it get a moment to finish (or fail, and be retried).
        self._spawn(close_channel(conn.channel, self.call_timeout))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        self._tasks.spawn(run())

    async def _maintain(self) -> None:
        delay = 0.02
        while True:
            await self._broken.wait()
            try:
                conn = await self._connect_any()
            except WorldError as err:
                self.attempted.set()
                refused = isinstance(err, TLSRefused)  # said once (an error) while it lasts
                if self._was_connected or not self.last_error or refused != self._refused:
                    log.log(
                        logging.DEBUG if self.quiet else logging.WARNING,
                        "%s%s: %s",
                        self._tag,
                        "cannot join the cluster" if refused else "no etcd member reachable",
                        err,
                    )
                self._refused = refused
                self._was_connected = False
                self.last_error = str(err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.02
            self._conn = conn
            self.attempted.set()
            self.generation += 1
            self._broken.clear()
            self.connected.set()
            if not self._was_connected and self.last_error:
                log.info("%sconnected to %s again", self._tag, conn.endpoint)
            else:
                log.debug("%sconnected to %s", self._tag, conn.endpoint)
            self._was_connected = True
            self.last_error = ""

    def _order(self) -> list[str]:
        eps = [e for e in self.endpoints if e != self.preferred]
        if self._last_failed in eps:
            i = eps.index(self._last_failed) + 1
            eps = eps[i:] + eps[:i]
        return ([self.preferred] if self.preferred else []) + eps

    async def _connect_any(self) -> _Conn:
        """A connection to the first endpoint that answers; else WorldError naming each one's
        failure (TLSRefused if every one refused a TLS handshake: retrying does not help)."""
        errors: list[WorldError] = []
        for endpoint in self._order():
            try:
                return await self._open(endpoint)
            except WorldError as err:
                errors.append(err)
        text = "; ".join(dict.fromkeys(str(e) for e in errors)) or "no endpoints"
        if errors and all(isinstance(e, TLSRefused) for e in errors):
            raise TLSRefused(text)
        raise WorldError(text)

    async def _open(self, endpoint: str) -> _Conn:
        parts = urlsplit(endpoint)
        target = f"{parts.hostname}:{parts.port}"
        if parts.hostname and ":" in parts.hostname:
            target = f"[{parts.hostname}]:{parts.port}"
        if parts.scheme == "https":
            channel = grpc.aio.secure_channel(target, self._tls_credentials(), _CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(target, _CHANNEL_OPTIONS)
        conn = _Conn(endpoint, channel)
        try:
            if self.user is not None:
                await self._authenticate(conn)
            status = await conn.maintenance.Status(
                rpc.StatusRequest(), timeout=self.call_timeout, metadata=conn.metadata
            )
        except grpc.aio.AioRpcError as err:
            await channel.close()
            details = err.details() or err.code().name
            refusal = tls_refusal(endpoint, details, self.tls)
            if refusal is not None:
                raise TLSRefused(refusal) from None
            raise WorldError(f"{endpoint}: {details}") from None
        conn.member_id = status.header.member_id
        return conn

    async def _authenticate(
        self, conn: _Conn, refused: tuple[tuple[str, str], ...] | None = None
    ) -> None:
        """Get a token for `conn`. `refused`: the metadata a refused request carried; if
        another request got a new token meanwhile, that one serves: one password check per
        connection, not one per refused request (eight watches refused at once each asked
        for one, at load 30, each timed out and asked again)."""
        async with conn.authenticating:
            if refused is None or conn.metadata == refused:
                await self._token(conn)

    async def _token(self, conn: _Conn) -> None:
        try:
            resp = await conn.auth.Authenticate(
                rpc.AuthenticateRequest(name=self.user, password=self._password),
                timeout=max(self.call_timeout, AUTH_TIMEOUT),
            )
        except grpc.aio.AioRpcError as err:
            if "authentication is not enabled" in (err.details() or ""):
                conn.metadata = ()  # not yet (a new cluster enables it after bootstrap)
                return
            raise
        conn.metadata = (("token", resp.token),)

    def reconnect(self) -> None:
        """Drop the current connection (e.g. after enabling auth): the next one starts fresh."""
        if self._conn is not None:
            self._drop(self._conn, "reconnecting")

    def _tls_credentials(self) -> grpc.ChannelCredentials:
        if self._credentials is None:

            def read(path: Any) -> bytes | None:
                return path.read_bytes() if path is not None else None

            try:
                self._credentials = grpc.ssl_channel_credentials(
                    root_certificates=read(self.tls.ca),
                    private_key=read(self.tls.key),
                    certificate_chain=read(self.tls.cert),
                )
            except OSError as err:
                raise WorldError(f"cannot read TLS files: {err}") from err
        return self._credentials

    async def connection(self) -> _Conn:
        """The current connection, waiting (without limit) for one; WorldError once closed."""
        self.start()
        while self._conn is None:
            self._check_open("connecting")
            await self.connected.wait()
        return self._conn

    async def call(self, what: str, fn: Callable[[_Conn], Awaitable[T]]) -> T:
        """Run `fn(conn)`, failing over and retrying for up to `retry_for` s; else WorldError."""
        self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        last = ""
        delay = 0.01
        while True:
            self._check_open(what)  # (its channel closed under it: not retried)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WorldError(f"{what}: {last or self.last_error or 'no etcd member reachable'}")
            conn = self._conn
            if conn is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self.connected.wait()
                continue
            sent = conn.metadata
            try:
                return await fn(conn)
            except asyncio.CancelledError:
                if _cancelled():
                    raise
                last = f"connection to {conn.endpoint} closed"  # by a failover: retry
                continue
            except grpc.aio.AioRpcError as err:
                code, details = _status(err)
                last = f"{details} ({conn.endpoint})"
                if self._needs_token(sent, code):
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await self._authenticate(conn, sent)  # the token expired: a fresh one
                        continue
                    self._drop(conn, details)
                    continue
                if code not in _RETRY:
                    if any(word in details for word in _DENIED):
                        self.denied(what.encode())
                    raise WorldError(f"{what}: {details}") from None
                self._drop(conn, details)
                await asyncio.sleep(min(delay, max(remaining, 0)))
                delay = min(delay * 2, 0.2)

    def denied(self, what: bytes) -> None:
        """etcd refused a request or watch: without a user, authentication is on in this
        cluster and this client gives none; said once (each refusal is its caller's)."""
        if self.user is not None or self._denied_said or not self.says_denied:
            return
        self._denied_said = True
        log.log(
            logging.DEBUG if self.quiet else logging.ERROR,
            "%setcd refused %s: etcd authentication is on in this cluster "
            "and this host gives no user: give --cluster-user and --cluster-password-file (or "
            "this host's per-host credentials)",
            self._tag,
            what.decode(errors="replace"),
        )

    def _needs_token(self, sent: tuple[tuple[str, str], ...], code: grpc.StatusCode) -> bool:
        """Whether a refusal of a request that carried `sent` means our token expired, or we
        connected before auth was on."""
        if self.user is None:
            return False
        return code is grpc.StatusCode.UNAUTHENTICATED or (
            code is grpc.StatusCode.PERMISSION_DENIED and not sent
        )

    def _opts(self, conn: _Conn) -> dict[str, Any]:
        return {"timeout": self.call_timeout, "metadata": conn.metadata}

    # key-value ----------------------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        async def fn(conn: _Conn) -> Any:
            return await conn.kv.Range(rpc.RangeRequest(key=key), **self._opts(conn))

        resp = await self.call(f"get {key.decode(errors='replace')}", fn)
        return bytes(resp.kvs[0].value) if resp.kvs else None

    async def lease_of(self, key: bytes) -> int | None:
        """The lease a key is bound to (0: none), or None if the key does not exist."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.RangeRequest(key=key, keys_only=True)
            return await conn.kv.Range(req, **self._opts(conn))

        resp = await self.call(f"get {key.decode(errors='replace')}", fn)
        return int(resp.kvs[0].lease) if resp.kvs else None

    async def get_prefix(
        self, prefix: bytes, serializable: bool = False
    ) -> tuple[dict[bytes, bytes], int]:
        """Every key under `prefix` with its value, and the store revision of the last read
        (`serializable`: as the connected member knows them, without a quorum; maybe stale)."""
        scan = await self.scan(prefix, serializable)
        return {key: value for key, (value, _) in scan.items.items()}, scan.last

    async def scan(self, prefix: bytes, serializable: bool = False) -> Scan:
        """Every key under `prefix` with its value and mod revision (see `Scan`).

        Read in pages of `_PAGE` keys, each within the receive limit whatever the values' size
        (etcd takes values up to its --max-request-bytes, 1.5 MiB): in one response, 48 values
        of 1.4 MB that one host wrote under its own exports stopped every collector. The pages
        are not one snapshot: a change between them is also a watch event, and read again."""
        end, start = range_end(prefix), prefix
        items: dict[bytes, tuple[bytes, int]] = {}
        first = 0
        while True:

            async def fn(conn: _Conn, start: bytes = start) -> Any:
                req = rpc.RangeRequest(
                    key=start, range_end=end, limit=_PAGE, serializable=serializable
                )
                return await conn.kv.Range(req, **self._opts(conn))

            resp = await self.call(f"list {prefix.decode(errors='replace')}", fn)
            first = first or int(resp.header.revision)
            items.update(
                (bytes(kv.key), (bytes(kv.value), int(kv.mod_revision))) for kv in resp.kvs
            )
            if not resp.more or not resp.kvs:
                return Scan(items, first, int(resp.header.revision))
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def keys_by_creation(self, prefix: bytes) -> list[bytes]:
        """Every key under `prefix`, oldest first (by creation revision; keys only)."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.RangeRequest(
                key=prefix,
                range_end=range_end(prefix),
                keys_only=True,
                sort_order=rpc.RangeRequest.ASCEND,
                sort_target=rpc.RangeRequest.CREATE,
            )
            return await conn.kv.Range(req, **self._opts(conn))

        resp = await self.call(f"list {prefix.decode(errors='replace')}", fn)
        return [bytes(kv.key) for kv in resp.kvs]

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        async def fn(conn: _Conn) -> Any:
            req = rpc.PutRequest(key=key, value=value, lease=lease)
            return await conn.kv.Put(req, **self._opts(conn))

        resp = await self.call(f"put {key.decode(errors='replace')}", fn)
        return int(resp.header.revision)

    async def delete(self, key: bytes, prefix: bool = False) -> int:
        async def fn(conn: _Conn) -> Any:
            req = rpc.DeleteRangeRequest(key=key, range_end=range_end(key) if prefix else b"")
            return await conn.kv.DeleteRange(req, **self._opts(conn))

        resp = await self.call(f"delete {key.decode(errors='replace')}", fn)
        return int(resp.deleted)

    async def txn(
        self,
        compare: Sequence[Any],
        success: Sequence[Any],
        failure: Sequence[Any] = (),
        what: str = "transaction",  # its name in errors
    ) -> Any:
        async def fn(conn: _Conn) -> Any:
            req = rpc.TxnRequest(compare=compare, success=success, failure=failure)
            return await conn.kv.Txn(req, **self._opts(conn))

        return await self.call(what, fn)

    async def compact(self, revision: int) -> None:
        async def fn(conn: _Conn) -> Any:
            return await conn.kv.Compact(
                rpc.CompactionRequest(revision=revision), **self._opts(conn)
            )

        await self.call("compact", fn)

    # leases -------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> int:
        async def fn(conn: _Conn) -> Any:
            return await conn.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), **self._opts(conn))

        return int((await self.call("lease grant", fn)).ID)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns its new TTL (0: the lease is gone). A lease renewed
        again and again: `renewal`."""
        async with self.renewal(lease_id) as renew:
            return await renew()

    @contextlib.asynccontextmanager
    async def renewal(self, lease_id: int) -> AsyncIterator[Callable[[], Awaitable[int]]]:
        """`renew()`, as `lease_keepalive`, on one stream kept open between renewals (closed at
        the block's end)."""
        stream = _Renewal(self, lease_id)
        try:
            yield stream.renew
        finally:
            stream.close()

    async def keep_leased(self, ttl: int, on_lease: Callable[[int], Awaitable[None]]) -> None:
        """Hold a lease of `ttl` seconds until cancelled: grant it, call `on_lease(id)` (to put
        the keys bound to it), renew it three times per TTL. After an expiry (a partition that
        outlasted it) start again with a new lease; after an error, revoke the lease (if any),
        wait for the cluster and retry with a growing delay (0.1 s to 5 s). Why it cannot hold
        one is said once per distinct problem (by `explain` when it knows, e.g. a lost quorum)."""
        delay, reported, troubled = 0.1, "", False
        while True:
            lease = 0
            try:
                lease = await self.lease_grant(ttl)
                await on_lease(lease)
                if troubled and self.explain is not None:
                    await self.explain(None)
                delay, reported, troubled = 0.1, "", False
                async with self.renewal(lease) as renew:
                    while True:
                        if await renew() <= 0:
                            break
                        await asyncio.sleep(ttl / 3)  # a renewal period, not a poll
                log.warning("a lease of %d s expired (a partition?): taking a new one", ttl)
            except WorldError as err:
                if self.closed:  # (its owner stops: its lease is revoked or expires)
                    return
                troubled = True
                said = False
                if self.connected.is_set() and self.explain is not None:
                    said = await self.explain(err)
                if str(err) != reported and not said:  # once per problem, not every retry
                    reported = str(err)
                    # Unreachable: said elsewhere. Reachable but refused (auth?): say it here.
                    level = logging.WARNING if self.connected.is_set() else logging.DEBUG
                    log.log(level, "cannot hold a lease: %s (retrying)", err)
                if lease:
                    with contextlib.suppress(WorldError):
                        await self.lease_revoke(lease)
                await self.connected.wait()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def lease_left(self, lease_id: int) -> int:
        """The seconds a lease has left (-1: it is gone)."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.LeaseTimeToLiveRequest(ID=lease_id)
            return await conn.lease.LeaseTimeToLive(req, **self._opts(conn))

        return int((await self.call("lease time to live", fn)).TTL)

    async def lease_revoke(self, lease_id: int) -> None:
        async def fn(conn: _Conn) -> Any:
            return await conn.lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), **self._opts(conn)
            )

        await self.call("lease revoke", fn)

    # cluster ------------------------------------------------------------------------------

    async def members(self) -> list[Member]:
        async def fn(conn: _Conn) -> Any:
            return await conn.cluster.MemberList(rpc.MemberListRequest(), **self._opts(conn))

        return [Member.of(m) for m in (await self.call("member list", fn)).members]

    async def member_add_learner(self, peer_urls: list[str]) -> tuple[Member, list[Member]]:
        """Add a non-voting member: it does not count for quorum until promoted."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.MemberAddRequest(peerURLs=peer_urls, isLearner=True)
            return await conn.cluster.MemberAdd(req, **self._opts(conn))

        resp = await self.call("member add", fn)
        return Member.of(resp.member), [Member.of(m) for m in resp.members]

    async def member_promote(self, member_id: int) -> None:
        async def fn(conn: _Conn) -> Any:
            req = rpc.MemberPromoteRequest(ID=member_id)
            return await conn.cluster.MemberPromote(req, **self._opts(conn))

        await self.call("member promote", fn)

    async def member_remove(self, member_id: int) -> None:
        async def fn(conn: _Conn) -> Any:
            req = rpc.MemberRemoveRequest(ID=member_id)
            return await conn.cluster.MemberRemove(req, **self._opts(conn))

        await self.call("member remove", fn)

    async def move_leader(self, target: int) -> None:
        """Ask the raft leader (the connected member must be it) to hand its leadership to the
        voting member `target`."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.MoveLeaderRequest(targetID=target)
            return await conn.maintenance.MoveLeader(req, **self._opts(conn))

        await self.call("move leader", fn)

    async def status(self) -> Any:
        """The connected member's status (its id, the leader's id, db sizes)."""

        async def fn(conn: _Conn) -> Any:
            return await conn.maintenance.Status(rpc.StatusRequest(), **self._opts(conn))

        return await self.call("status", fn)

    def probe(self, member: Member, timeout: float = 0.5, authenticate: bool = True) -> EtcdClient:
        """A short-lived client of one member, with this client's credentials (close it);
        quiet: whether it answers is its caller's to say. Not `authenticate`: its TLS
        certificate only, no etcd user (for a status request, which etcd serves without one)."""
        probe = EtcdClient(
            member.client_urls,
            tls=self.tls,
            user=self.user if authenticate else None,
            password=self._password if authenticate else None,
            call_timeout=timeout,
            retry_for=timeout,
            name=f"probe {member.name}",
        )
        probe.quiet = True
        return probe

    async def member_answers(self, member: Member, timeout: float = 0.5) -> bool:
        """Whether `member` answers a status request right now (within `timeout` s). Without
        authenticating: etcd checks a password with bcrypt, which took longer than `timeout`
        under load (CI, load 9-12), and a live member was judged gone (`Cluster._reconcile`)."""
        if not member.client_urls:
            return False
        probe = self.probe(member, timeout, authenticate=False)
        try:
            return await probe.answers()
        finally:
            await probe.close()

    async def voters_answering(self, timeout: float = 0.5) -> tuple[list[Member], list[Member]]:
        """The voting members that answer now and those that do not (the member list is
        served by the connected member itself: it answers without a quorum)."""
        voters = [m for m in await self.members() if not m.is_learner]
        answers = await asyncio.gather(*(self.member_answers(m, timeout) for m in voters))
        up = [m for m, ok in zip(voters, answers, strict=True) if ok]
        return up, [m for m, ok in zip(voters, answers, strict=True) if not ok]

    async def answers(self) -> bool:
        """Whether a member answers a status request now (within this client's timeouts)."""
        try:
            await self.status()
        except WorldError:
            return False
        return True

    async def no_quorum(self, timeout: float = 0.5) -> str:
        """ "" when the connected member has a leader; else one line saying so and which
        voting members do not answer (each asked its status for `timeout` s). Both reads are
        served by a member without a leader: a caller learns it at once, not after a write's
        deadline."""
        if (await self.status()).leader:
            return ""
        up, silent = await self.voters_answering(timeout)
        down = [m.name or ",".join(m.client_urls) for m in silent]
        line = (
            "the cluster has no quorum (no leader): "
            f"{len(up)} of {len(up) + len(silent)} voting members answer"
        )
        return line + (f"; not answering: {', '.join(sorted(down))}" if down else "")

    async def space_alarms(self) -> list[Any]:
        """The active NOSPACE alarms (the storage quota was reached: writes are refused)."""

        async def fn(conn: _Conn) -> Any:
            req = rpc.AlarmRequest(action=rpc.AlarmRequest.GET)
            return await conn.maintenance.Alarm(req, **self._opts(conn))

        nospace = rpc.AlarmType.Value("NOSPACE")
        return [a for a in (await self.call("alarm list", fn)).alarms if a.alarm == nospace]

    async def disarm(self, alarm: Any) -> None:
        async def fn(conn: _Conn) -> Any:
            req = rpc.AlarmRequest(
                action=rpc.AlarmRequest.DEACTIVATE, memberID=alarm.memberID, alarm=alarm.alarm
            )
            return await conn.maintenance.Alarm(req, **self._opts(conn))

        await self.call("alarm disarm", fn)

    async def defragment(self) -> None:
        async def fn(conn: _Conn) -> Any:
            return await conn.maintenance.Defragment(
                rpc.DefragmentRequest(), timeout=30, metadata=conn.metadata
            )

        await self.call("defragment", fn)

    # auth ---------------------------------------------------------------------------------

    async def enable_auth(self, user: str, password: str) -> None:
        """Create `user` with the root role (and the root user etcd requires); enable auth."""
        import secrets

        async def fn(conn: _Conn) -> Any:
            auth, opts = conn.auth, self._opts(conn)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), **opts)
            users = {user: password}
            if user != "root":
                users["root"] = secrets.token_urlsafe(32)  # unused: `user` is the admin
            for name, secret in users.items():
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await auth.UserAdd(rpc.AuthUserAddRequest(name=name, password=secret), **opts)
                await auth.UserGrantRole(
                    rpc.AuthUserGrantRoleRequest(user=name, role="root"), **opts
                )
            return await auth.AuthEnable(rpc.AuthEnableRequest(), **opts)

        await self.call("enable authentication", fn)

    async def auth_request(self, method: str, request: Any, exists_ok: bool = False) -> Any:
        """One request of etcd's Auth service (`UserAdd`, `RoleGet`...), its response; with
        `exists_ok`, etcd's "already exists" is no error (None; admission may be run twice)."""

        async def fn(conn: _Conn) -> Any:
            return await getattr(conn.auth, method)(request, **self._opts(conn))

        try:
            return await self.call(method, fn)
        except WorldError as err:
            if not (exists_ok and "already exists" in str(err)):
                raise
        return None

    # watches ------------------------------------------------------------------------------

    async def subscribe(
        self,
        key: bytes,
        signal: Callable[[], None],
        prefix: bool = False,
        events: Callable[[Sequence[Any] | None], None] | None = None,
    ) -> Callable[[], Awaitable[None]]:
        """Call `signal()` on every change of `key` (or under it); returns the unsubscribe.

        `events`, if given, is called before `signal()` with the changes themselves (etcd's
        `mvccpb.Event`s, in revision order), and with None whenever the watch ends or is
        (re)created: changes may be missed meanwhile, so what was learnt from events must be
        read again. Returns once the etcd watch exists (or after `call_timeout` if no member
        answers: then it signals as soon as the watch exists).
        """
        self._check_open(f"watch {key.decode(errors='replace')}")
        watch = _Watch(self, key, range_end(key) if prefix else b"", signal, events)
        watch.task = asyncio.create_task(watch.run(), name=f"watch {key.decode(errors='replace')}")
        self._watches.add(watch)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.call_timeout):
                    await watch.created.wait()
        except BaseException:  # cancelled before the caller could: never leave it running
            await watch.cancel()
            raise
        watch.returned = True
        return watch.cancel


class _Watch:
    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        end: bytes,
        signal: Callable[[], None],
        events: Callable[[Sequence[Any] | None], None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.end = end
        self.signal = signal
        self.events = events
        self.created = asyncio.Event()
        self.returned = False
        self.task: asyncio.Task[None] | None = None
        self.denied = False  # etcd canceled the last watch: permission denied

    async def cancel(self) -> None:
        self.client._watches.discard(self)
        task, self.task = self.task, None  # its CancelledError's frames hold the gRPC call
        if task is not None:
            await stuck.cancel_within([task], STOP_WAIT, f"watch {self.key!r}", log)

    async def run(self) -> None:
        delay = 0.02
        while True:
            try:
                conn = await self.client.connection()
            except WorldError:  # closed: the watch ends with it
                return
            if await self._stream(conn):
                delay = 0.02
            else:
                await asyncio.sleep(delay)
                # A refused watch (permission denied) is re-created every few seconds, not
                # at once: an agent without credentials of a cluster with authentication
                # re-created every watch ~1,000 times a second.
                delay = min(delay * 2, 5.0 if self.denied else 0.5)

    async def _stream(self, conn: _Conn) -> bool:
        """One etcd watch on `conn` until it breaks; True if it was created."""
        sent = conn.metadata
        metadata = (*sent, ("hasleader", "true"))
        call = conn.watch.Watch(metadata=metadata)
        created = False
        try:
            request = rpc.WatchCreateRequest(key=self.key, range_end=self.end)
            await call.write(rpc.WatchRequest(create_request=request))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return created
                if resp.created and not created:
                    created = True
                    if self.events is not None:
                        self.events(None)  # what happened while no watch ran is unknown
                    if self.returned:
                        self.signal()  # we were away: whatever changed meanwhile
                    self.created.set()
                if resp.canceled:
                    log.debug("watch %s canceled: %s", self.key, resp.cancel_reason)
                    reason = resp.cancel_reason
                    self.denied = any(word in reason for word in _DENIED)
                    if self.denied:
                        self.client.denied(self.key)
                    if self.client.user is not None and ("token" in reason or not sent):
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await self.client._authenticate(conn, sent)
                    return False  # backed off: created and canceled at once, it spun
                self.denied = False
                if resp.events:
                    if self.events is not None:
                        self.events(resp.events)
                    self.signal()
        except grpc.aio.AioRpcError as err:
            code, details = _status(err)
            if code in _RETRY:
                self.client._drop(conn, details)
            else:
                log.debug("watch %s failed: %s", self.key, details)
            return created
        except asyncio.CancelledError:
            if _cancelled():
                raise
            return created  # its channel was closed by a failover
        finally:
            call.cancel()
            if self.events is not None:
                self.events(None)  # until a watch runs again, changes go unseen


def _status(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """An RPC error's code and words: a request that could not be sent on a broken connection
    (`_BROKEN`, which said nothing to an operator) is UNAVAILABLE, in words (BROKEN_WORDS)."""
    code, details = err.code(), err.details() or err.code().name
    if code is grpc.StatusCode.INTERNAL and details == _BROKEN:
        return grpc.StatusCode.UNAVAILABLE, BROKEN_WORDS
    return code, details
