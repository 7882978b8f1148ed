"""dhcp:server, dhcp:host and dhcp:range: mgmt's small built-in DHCPv4 server. See
docs/resources/dhcp.md.

`dhcp:server` listens on UDP (its name, or `address`, is `host:port`, usually ":67": an empty
host is every address, as a DHCP server must hear broadcasts) on one `interface`, and answers
DISCOVER with an OFFER and REQUEST with an ACK (or a NAK for an address it would not give),
RFC 2131/2132. `dhcp:host` gives the client with its `mac` a fixed address; `dhcp:range`
leases the addresses of a network to any other client, in memory (a lease lasts the server's
`leasetime`; a RELEASE frees it, a DECLINE puts the address aside). Hosts and ranges join
their server as resources._lib.serving says: `server` names the dhcp:server to join; left out,
they are served by every dhcp:server of this agent. None of them changes the system.
"""

from __future__ import annotations

import asyncio
import fcntl
import heapq
import re
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.resource import UID, Edgeable, Resource, register
from resources._lib.events import run_all
from resources._lib.ifname import check_interface_name
from resources._lib.netlink import NETLINK_ROUTE, RTMGRP_LINK, Netlink
from resources._lib.plan import nothing_to_do
from resources._lib.serving import Offers, offers, split_address

DEFAULT_LEASE = "10m"  # mgmt's default lease time (dhcpd's)
# How long an OFFER holds its address before the client's REQUEST (at most the lease time):
# dhcpd and kea hold an offer for seconds to a couple of minutes, not a lease. And when no
# address is free, the oldest address offered but never requested is offered again: a flood
# of DISCOVERs from made-up MACs cannot keep a real client out.
OFFER_HOLD = 60.0
# A range out of addresses is said at most this often (with how many were refused meanwhile).
EXHAUSTED_EVERY = 60.0
MAGIC = b"\x63\x82\x53\x63"
CLIENT_PORT = 68
BROADCAST = "255.255.255.255"
# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE = 1, 2, 3, 4, 5, 6, 7
# Options (RFC 2132).
OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_REQUESTED_IP, OPT_LEASE = 1, 3, 6, 50, 51
OPT_TYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_TFTP_SERVER, OPT_BOOTFILE = 53, 54, 55, 66, 67
SIOCGIFADDR = 0x8915

_DURATION = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, key: str) -> int:
    """Whole seconds of a Go duration ("60s", "10m", "1h42m13s"), as mgmt's leasetime."""
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValidationError(
            f"expected a duration like '60s', '10m' or '1h30m', got {text!r}", key
        )
    seconds = int(sum(float(n) * _UNITS[u] for n, u in parts))
    if not 0 < seconds < 2**32 - 1:
        raise ValidationError(f"must be between 1 second and 136 years, got {text!r}", key)
    return seconds


def check_ipv4(text: str, key: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise ValidationError(f"expected an IPv4 address, got {text!r}", key) from None


def check_cidr(text: str, key: str) -> IPv4Interface:
    """An IPv4 address with its prefix length ("192.168.42.101/24"), which is required."""
    try:
        if "/" in text:
            return IPv4Interface(text)
    except ValueError:
        pass
    raise ValidationError(f"expected an IPv4 address in CIDR form (a.b.c.d/n), got {text!r}", key)


def check_nbp(url: str, key: str) -> None:
    """A network boot program URL: tftp://server/path (DHCPv4 takes only tftp)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "tftp" or not parts.hostname:
        raise ValidationError(f"expected a URL like tftp://192.0.2.13/pxelinux.0, got {url!r}", key)


def boot_options(nbp: str, nbp_path: str) -> dict[int, bytes]:
    """Options 66 (TFTP server) and 67 (boot file) of a network boot program URL."""
    if not nbp:
        return {}
    parts = urllib.parse.urlsplit(nbp)
    found = {OPT_TFTP_SERVER: (parts.hostname or "").encode()}
    path = nbp_path or parts.path
    if path:
        found[OPT_BOOTFILE] = path.encode()
    return found


def interface_ipv4(name: str) -> IPv4Address:
    """The (first) IPv4 address of the interface `name`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    return IPv4Address(packed[20:24])


@dataclass
class Message:
    """A BOOTP/DHCP message (RFC 2131 section 2), its options decoded."""

    op: int
    xid: bytes
    flags: int
    ciaddr: IPv4Address
    yiaddr: IPv4Address
    giaddr: IPv4Address
    chaddr: bytes
    options: dict[int, bytes]

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr[:6])

    @property
    def kind(self) -> int:
        value = self.options.get(OPT_TYPE, b"")
        return value[0] if value else 0  # an empty option 53 is no type

    def asks(self, option: int) -> bool:
        return option in self.options.get(OPT_PARAMS, b"")

    def option_ip(self, option: int) -> IPv4Address | None:
        value = self.options.get(option, b"")
        return IPv4Address(value) if len(value) == 4 else None


def parse_message(packet: bytes) -> Message | None:
    """The DHCP message in `packet`, or None if it is not one."""
    if len(packet) < 240 or packet[0] not in (1, 2) or packet[236:240] != MAGIC:
        return None
    hlen = min(packet[2], 16)
    options: dict[int, bytes] = {}
    at = 240
    while at < len(packet):
        code = packet[at]
        if code == 255:
            break
        if code == 0:
            at += 1
            continue
        if at + 1 >= len(packet):
            return None
        length = packet[at + 1]
        options[code] = options.get(code, b"") + packet[at + 2 : at + 2 + length]  # RFC 3396
        at += 2 + length
    (flags,) = struct.unpack("!H", packet[10:12])
    return Message(
        op=packet[0],
        xid=packet[4:8],
        flags=flags,
        ciaddr=IPv4Address(packet[12:16]),
        yiaddr=IPv4Address(packet[16:20]),
        giaddr=IPv4Address(packet[24:28]),
        chaddr=packet[28 : 28 + hlen],
        options=options,
    )


def build_reply(
    request: Message,
    yiaddr: IPv4Address,
    siaddr: IPv4Address,
    options: dict[int, bytes],
    file: bytes = b"",
) -> bytes:
    """A BOOTREPLY to `request` with these options (type first, end last). `siaddr` is the
    next server (mgmt sends its server id there), `file` the BOOTP boot file name (cut to
    127 bytes: the field holds 128 with its NUL) as PXE firmware reads it, beside option 67."""
    head = struct.pack("!BBBB", 2, 1, 6, 0) + request.xid + struct.pack("!HH", 0, request.flags)
    head += request.ciaddr.packed + yiaddr.packed + siaddr.packed + request.giaddr.packed
    head += request.chaddr.ljust(16, b"\0") + b"\0" * 64 + file[:127].ljust(128, b"\0") + MAGIC
    body = b""
    for code in sorted(options, key=lambda c: (c != OPT_TYPE, c)):
        value = options[code]
        for start in range(0, len(value), 255):  # long values split (RFC 3396)
            chunk = value[start : start + 255]
            body += bytes((code, len(chunk))) + chunk
    return head + body + b"\xff"


@dataclass
class Lease:
    ip: IPv4Address
    mask: IPv4Address
    boot: dict[int, bytes] = field(default_factory=dict)


class _Inbox(asyncio.DatagramProtocol):
    """The requests of a server's socket; kept across its sockets (a re-created interface
    gets a new one)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


@register("dhcp:server")
@dataclass(kw_only=True, eq=False)
class DHCPServerRes(Edgeable, Resource):
    # Where to listen, host:port on UDP (":67" is DHCP's port; an empty host is every address
    # of `interface`). Default None: the name.
    address: str | None = None
    # The network interface to serve on (required, as in mgmt), e.g. "eth0".
    interface: str = ""
    # This server's identifier (option 54), an IPv4 address; "" sends none. Default None: the
    # host of `address`, else the first IPv4 address of `interface` when the first request comes.
    serverid: str | None = None
    # How long leases last, a duration like "60s" or "1h30m"; "" sends none. Default None: "10m".
    leasetime: str | None = None
    # DNS servers offered to clients that ask for them (option 6). Default [] (none).
    dns: list[str] = field(default_factory=list)
    # Routers offered to clients (option 3). Default [] (none).
    routers: list[str] = field(default_factory=list)
    # The network boot program URL (tftp://server/file) of hosts and ranges that name none.
    # Default "" (none).
    nbp: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.interface:
            raise ValidationError("must name the network interface to serve on", "interface")
        check_interface_name(self.interface, "interface")
        key = "address" if self.address is not None else "name"
        host, _ = split_address(self._address, key, "0.0.0.0")
        check_ipv4(host, key)
        if self.serverid:
            check_ipv4(self.serverid, "serverid")
        if self.leasetime:
            parse_duration(self.leasetime, "leasetime")
        for name in ("dns", "routers"):
            for address in getattr(self, name):
                check_ipv4(address, name)
        if self.nbp:
            check_nbp(self.nbp, "nbp")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._leases = _Leases()
        self._server_id: IPv4Address | None = None
        self._refused = 0  # clients refused for want of an address since it was last said
        self._refused_said = -EXHAUSTED_EVERY
        self._transport: asyncio.DatagramTransport | None = None

    async def watch(self) -> None:
        inbox = _Inbox()
        self.handle.on_cleanup(self._close)
        async with Netlink(NETLINK_ROUTE, RTMGRP_LINK) as links:  # before the socket: no gap
            index = await self._listen(inbox)
            await self.handle.event()
            await run_all([lambda: self._serve(inbox), lambda: self._follow(links, inbox, index)])

    async def _listen(self, inbox: _Inbox) -> int:
        """A new socket on the interface (the last one closed), answering into `inbox`; the
        interface's index. Without SO_REUSEADDR: a second server on the same interface and
        port (another agent's, a stale one) is refused, not a rogue second answerer."""
        self._close()
        host, port = split_address(self._address, "address", "0.0.0.0")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.bind((host, port))
            index = socket.if_nametoindex(self.interface)
        except OSError as err:
            sock.close()
            raise ResourceError(
                f"cannot listen on udp {host}:{port} on {self.interface}: {err.strerror}"
            ) from err
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: inbox, sock=sock)
        self._port = int(sock.getsockname()[1])
        self.handle.logger.info("listening on udp %s:%d on %s", host, self._port, self.interface)
        return index

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _serve(self, inbox: _Inbox) -> None:
        while True:
            packet = await inbox.queue.get()
            try:
                answer = self._answer(packet)
            except Exception:  # a bad packet or a bug: logged, the server keeps serving
                self.handle.logger.exception("cannot answer a request")
                continue
            if answer is not None and self._transport is not None:
                self._transport.sendto(*answer)

    async def _follow(self, links: Netlink, inbox: _Inbox, index: int | None) -> None:
        """A socket stays bound to the interface it was bound to, by its index: one deleted
        and made again (a bridge re-created, a VM's tap) would leave the server deaf for
        good. At each link change, an interface of our name with another index gets a new
        socket; a missing one is said once."""
        async for _ in links:
            try:
                now: int | None = socket.if_nametoindex(self.interface)
            except OSError:
                now = None
            if now == index:
                continue
            if now is None:
                self._close()
                self.handle.logger.warning(
                    "%s is gone: serving nothing until it is back", self.interface
                )
                index = None
                continue
            try:
                index = await self._listen(inbox)
            except ResourceError as err:
                self.handle.logger.warning("%s was made again, but %s", self.interface, err)
                index = None  # the next link change tries again
                continue
            self.handle.logger.info("%s was made again: serving on it", self.interface)

    async def check_apply(self, apply: bool) -> bool:
        if self.serverid != "":
            try:
                self._server_id = await asyncio.to_thread(self._find_server_id)
            except OSError as err:
                raise ResourceError(
                    f"no server identifier: {self.interface} has no IPv4 address "
                    f"({err.strerror}); set serverid"
                ) from err
        return nothing_to_do(self.handle, f"serving on {self.interface}")

    def uids(self) -> list[UID]:
        return [UID("dhcp:server", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The net resource that configures the interface (mgmt's examples add this edge)."""
        return [[UID("net", self.interface)]]

    @property
    def _address(self) -> str:
        return self.address if self.address is not None else self.name

    @property
    def port(self) -> int:
        """The UDP port listened on (known once watch has sent its first event)."""
        return self._port

    def _find_server_id(self) -> IPv4Address:
        if self.serverid:
            return IPv4Address(self.serverid)
        host, _ = split_address(self._address, "address", "")
        return IPv4Address(host) if host else interface_ipv4(self.interface)

    def _lease_seconds(self) -> int | None:
        if self.leasetime == "":
            return None
        return parse_duration(self.leasetime or DEFAULT_LEASE, "leasetime")

    def _answer(self, packet: bytes) -> tuple[bytes, tuple[str, int]] | None:
        """The reply to a request and where to send it (None: no reply)."""
        request = parse_message(packet)
        if (
            request is None
            or request.op != 1
            or request.kind not in (DISCOVER, REQUEST, DECLINE, RELEASE)
        ):
            return None
        if self.serverid != "" and self._server_id is None:
            try:
                self._server_id = self._find_server_id()
            except OSError:
                self.handle.logger.warning("no IPv4 address on %s to identify us", self.interface)
                return None
        asked_server = request.option_ip(OPT_SERVER_ID)
        if asked_server is not None and self._server_id and asked_server != self._server_id:
            self._leases.drop(request.mac)  # the client chose another server's offer
            return None
        if request.kind in (RELEASE, DECLINE):
            held = self._leases.drop(request.mac)
            if request.kind == DECLINE and held is not None:
                self.handle.logger.warning("%s declined %s: set aside", request.mac, held)
                self._leases.declined[held] = None
            return None
        wanted = request.option_ip(OPT_REQUESTED_IP) or (
            request.ciaddr if int(request.ciaddr) else None
        )
        lease = self._lease_for(request.mac, wanted, offer=request.kind == DISCOVER)
        if lease is None:
            if request.kind == REQUEST:
                self.handle.logger.traffic("no address for %s", request.mac)
            return None  # not ours to answer: another server may know it
        if request.kind == REQUEST and wanted != lease.ip:
            self.handle.logger.traffic(
                "NAK to %s: asked for %s, not %s", request.mac, wanted, lease.ip
            )
            reply = build_reply(request, IPv4Address(0), IPv4Address(0), self._options(NAK))
            return reply, (BROADCAST, CLIENT_PORT)
        kind = OFFER if request.kind == DISCOVER else ACK
        options = self._options(kind)
        options[OPT_MASK] = lease.mask.packed
        if self._lease_seconds() is not None:
            options[OPT_LEASE] = struct.pack("!I", self._lease_seconds())
        if self.routers:
            options[OPT_ROUTER] = b"".join(IPv4Address(r).packed for r in self.routers)
        if self.dns and request.asks(OPT_DNS):
            options[OPT_DNS] = b"".join(IPv4Address(d).packed for d in self.dns)
        options.update({k: v for k, v in lease.boot.items() if request.asks(k)})
        self.handle.logger.traffic(
            "%s %s to %s", "offered" if kind == OFFER else "leased", lease.ip, request.mac
        )
        siaddr = self._server_id if self.serverid != "" and self._server_id else IPv4Address(0)
        reply = build_reply(request, lease.ip, siaddr, options, lease.boot.get(OPT_BOOTFILE, b""))
        if int(request.giaddr):
            return reply, (str(request.giaddr), self.port)
        if int(request.ciaddr) and not request.flags & 0x8000:
            return reply, (str(request.ciaddr), CLIENT_PORT)
        return reply, (BROADCAST, CLIENT_PORT)  # as mgmt: a client without an address hears this

    def _options(self, kind: int) -> dict[int, bytes]:
        options = {OPT_TYPE: bytes((kind,))}
        if self._server_id is not None and self.serverid != "":
            options[OPT_SERVER_ID] = self._server_id.packed
        return options

    def _lease_for(self, mac: str, wanted: IPv4Address | None, offer: bool) -> Lease | None:
        """The address for `mac`: its dhcp:host's, else its range lease (kept, or new: the
        address it wants if free, else the lowest free one, else the one offered longest ago
        and never requested). An `offer` (a DISCOVER's) holds a new address OFFER_HOLD
        seconds; a REQUEST's lease holds it the lease time; an offer to a client holding a
        lease leaves that lease as it is."""
        static = {IPv4Interface(h.ip).ip: h for h in hosts(self.handle).to(self.name)}
        for ip, host in static.items():
            if host.mac == mac:
                boot = boot_options(host.nbp or self.nbp, host.nbp_path)
                return Lease(ip, IPv4Address(int(IPv4Interface(host.ip).netmask)), boot)
        leases = self._leases
        now = time.monotonic()
        pools = ranges(self.handle).to(self.name)
        leases.expire(now, static, pools)
        end = now + (self._lease_seconds() or 24 * 3600)
        if offer:
            end = min(end, now + OFFER_HOLD)
        held = leases.held.get(mac)
        for pool in pools:
            if held is not None and held[0] in pool.subnet:
                if not offer or mac in leases.offered:
                    leases.give(mac, held[0], end, offer)
                return self._range_lease(pool, held[0])

        def free(ip: IPv4Address, pool: DHCPRangeRes) -> bool:
            return not (
                ip in leases.owners
                or ip in static
                or ip in leases.declined
                or ip == self._server_id
                or not pool.allows(ip)
            )

        def pick() -> Lease | None:
            for pool in pools:
                if wanted is not None and wanted in pool.subnet and free(wanted, pool):
                    found: IPv4Address | None = wanted
                else:
                    found = leases.lowest_free(pool, free)
                if found is not None:
                    leases.give(mac, found, end, offer)
                    return self._range_lease(pool, found)
            return None

        lease = pick()
        if lease is not None:
            return lease
        # None free: the address declined longest ago comes back (as dhcpd's abandoned leases),
        # else DECLINEs, which any client can send, would empty the pools for good.
        for ip in leases.declined:
            for pool in pools:
                if ip in pool.subnet and ip not in static and ip != self._server_id:
                    self.handle.logger.warning("leasing %s again: it was declined", ip)
                    del leases.declined[ip]
                    leases.give(mac, ip, end, offer)
                    return self._range_lease(pool, ip)
        # Else the address offered longest ago and never requested: else DISCOVERs from
        # made-up MACs would keep every real client out for as long as offers hold.
        if leases.reclaim(mac, pools) and (lease := pick()) is not None:
            return lease
        if pools:
            self._exhausted(mac, pools, now)
        return None

    def _exhausted(self, mac: str, pools: list[DHCPRangeRes], now: float) -> None:
        """Say that the ranges are out of addresses: once, then at most every
        EXHAUSTED_EVERY seconds with how many clients were refused meanwhile."""
        self._refused += 1
        if now - self._refused_said < EXHAUSTED_EVERY:
            return
        subnets = ", ".join(str(pool.subnet) for pool in pools)
        self.handle.logger.warning(
            "no free address in %s for %s: every address is leased (%d client%s refused)",
            subnets,
            mac,
            self._refused,
            "" if self._refused == 1 else "s",
        )
        self._refused, self._refused_said = 0, now

    def _range_lease(self, pool: DHCPRangeRes, ip: IPv4Address) -> Lease:
        boot = boot_options(pool.nbp or self.nbp, pool.nbp_path)
        return Lease(ip, IPv4Address(int(pool.subnet.netmask)), boot)


class _Free:
    """Where a range's free addresses are: from `cursor` up, none was leased yet; below it,
    those freed since are in the heap `freed` (so finding the lowest free one costs no scan of
    the leased ones, which a client can make many of)."""

    def __init__(self, network: IPv4Network) -> None:
        self.cursor = int(network.network_address) + 1
        self.end = int(network.broadcast_address)
        self.freed: list[int] = []
        self.queued: set[int] = set()

    def push(self, ip: IPv4Address) -> None:
        if int(ip) < self.cursor and int(ip) not in self.queued:
            self.queued.add(int(ip))
            heapq.heappush(self.freed, int(ip))


class _Leases:
    """A dhcp:server's range leases, indexed both ways, with their expiries in a heap."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[IPv4Address, float]] = {}  # mac -> address, end
        self.owners: dict[IPv4Address, str] = {}  # address -> mac
        self.offered: dict[
            str, None
        ] = {}  # macs offered an address not yet requested, oldest first
        self.declined: dict[IPv4Address, None] = {}  # set aside, the oldest first
        self._ends: list[tuple[float, str]] = []  # (end, mac); stale ones skipped
        self._free: dict[DHCPRangeRes, _Free] = {}
        self._static: set[IPv4Address] = set()

    def give(self, mac: str, ip: IPv4Address, end: float, offer: bool = False) -> None:
        old = self.held.get(mac)
        if old is not None and old[0] != ip:
            self.drop(mac)
        self.held[mac] = (ip, end)
        self.owners[ip] = mac
        self.offered.pop(mac, None)
        if offer:
            self.offered[mac] = None  # the newest
        heapq.heappush(self._ends, (end, mac))
        if len(self._ends) > 2 * len(self.held) + 1024:  # renewals: stale entries pile up
            self._ends = [(e, m) for m, (_, e) in self.held.items()]
            heapq.heapify(self._ends)

    def drop(self, mac: str) -> IPv4Address | None:
        """End the lease of `mac`; its address, if it had one."""
        held = self.held.pop(mac, None)
        if held is None:
            return None
        self.offered.pop(mac, None)
        del self.owners[held[0]]
        self._freed(held[0])
        return held[0]

    def reclaim(self, mac: str, pools: list[DHCPRangeRes]) -> bool:
        """Free the address of one of `pools` offered longest ago and never requested (not
        `mac`'s own); whether there was one."""
        for other in self.offered:
            if other != mac and any(self.held[other][0] in pool.subnet for pool in pools):
                self.drop(other)
                return True
        return False

    def expire(
        self, now: float, static: dict[IPv4Address, DHCPHostRes], pools: list[DHCPRangeRes]
    ) -> None:
        """Drop the leases that ended, and the state of ranges no longer offered; addresses
        no longer a host's are free again."""
        while self._ends and self._ends[0][0] <= now:
            end, mac = heapq.heappop(self._ends)
            held = self.held.get(mac)
            if held is not None and held[1] == end:
                self.drop(mac)
        if len(self._free) > len(pools):
            self._free = {p: s for p, s in self._free.items() if p in pools}
        for ip in self._static - static.keys():
            self._freed(ip)
        self._static = set(static)

    def lowest_free(
        self, pool: DHCPRangeRes, free: Callable[[IPv4Address, DHCPRangeRes], bool]
    ) -> IPv4Address | None:
        state = self._free.get(pool)
        if state is None:
            state = self._free[pool] = _Free(pool.subnet)
        while state.freed:
            ip = IPv4Address(heapq.heappop(state.freed))
            state.queued.discard(int(ip))
            if free(ip, pool):
                return ip
        while state.cursor < state.end:
            ip = IPv4Address(state.cursor)
            state.cursor += 1
            if free(ip, pool):
                return ip
        return None

    def _freed(self, ip: IPv4Address) -> None:
        for pool, state in self._free.items():
            if ip in pool.subnet:
                state.push(ip)


def hosts(handle: Handle) -> Offers[DHCPHostRes]:
    """The dhcp:host resources offered to this engine's dhcp servers."""
    return offers(handle, "dhcp:host", Offers[DHCPHostRes])


def ranges(handle: Handle) -> Offers[DHCPRangeRes]:
    """The dhcp:range resources offered to this engine's dhcp servers."""
    return offers(handle, "dhcp:range", Offers[DHCPRangeRes])


@register("dhcp:host")
@dataclass(kw_only=True, eq=False)
class DHCPHostRes(Resource):
    # The dhcp:server (its name) that serves this host. Default None: every one of this agent.
    server: str | None = None
    # The host's MAC address, lower case with colons ("00:11:22:33:44:55"). Required.
    mac: str = ""
    # The host's IPv4 address with its prefix length ("192.168.42.101/24"): the prefix gives the
    # netmask sent. Required.
    ip: str = ""
    # The network boot program URL (tftp://server/file). Default "": the server's `nbp`.
    nbp: str = ""
    # The boot file sent instead of the URL's path (e.g. one without a leading "/").
    # Default "": the URL's path.
    nbp_path: str = ""

    def validate(self) -> None:
        super().validate()
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", self.mac):
            raise ValidationError(
                f"expected a lower-case MAC address like 00:11:22:33:44:55, got {self.mac!r}", "mac"
            )
        check_cidr(self.ip, "ip")
        if self.nbp:
            check_nbp(self.nbp, "nbp")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        hosts(handle).offer(handle, self)  # until a swap drops it: its address kept meanwhile

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, f"offering {self.ip} to {self.mac}")


@register("dhcp:range")
@dataclass(kw_only=True, eq=False)
class DHCPRangeRes(Resource):
    # The dhcp:server (its name) that serves this range. Default None: every one of this agent.
    server: str | None = None
    # The network whose addresses are leased ("192.168.42.0/24"). Default None: the name.
    network: str | None = None
    # Addresses never leased (a prefix length, as in "192.168.42.1/24", is allowed and ignored).
    # Default [] (none; the network and broadcast addresses, the hosts' and the server's own
    # are never leased anyway).
    skip: list[str] = field(default_factory=list)
    # The network boot program URL (tftp://server/file). Default "": the server's `nbp`.
    nbp: str = ""
    # The boot file sent instead of the URL's path. Default "": the URL's path.
    nbp_path: str = ""

    def validate(self) -> None:
        super().validate()
        key = "network" if self.network is not None else "name"
        try:
            network = IPv4Network(self.network_cidr, strict=False)
        except ValueError:
            raise ValidationError(
                f"expected an IPv4 network like 192.168.42.0/24, got {self.network_cidr!r}", key
            ) from None
        if network.num_addresses < 4:
            raise ValidationError(f"{network} has no addresses to lease", key)
        for text in self.skip:
            check_ipv4(text.partition("/")[0], "skip")
        if self.nbp:
            check_nbp(self.nbp, "nbp")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._skip = {IPv4Address(text.partition("/")[0]) for text in self.skip}
        ranges(handle).offer(handle, self)  # until a swap drops it: its leases renewed meanwhile

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, f"leasing from {self.subnet}")

    @property
    def network_cidr(self) -> str:
        return self.network if self.network is not None else self.name

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Network(self.network_cidr, strict=False)

    def allows(self, ip: IPv4Address) -> bool:
        return ip not in self._skip
