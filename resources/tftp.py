"""tftp:server and tftp:file: mgmt's small built-in, read-only TFTP server. See
docs/resources/tftp.md.

`tftp:server` listens on UDP (its name, or `address`, is `host:port`; an empty host means
127.0.0.1 here, as for http:server) and answers read requests (RFC 1350, with the blksize,
tsize and timeout options of RFC 2347/2348/2349) from the files offered to it, then from its
`root` directory. Write requests are refused. Each transfer runs from a port of its own, as
the RFC asks; at most `transfers` run at once, more are refused with a TFTP error. A file is
opened when its transfer starts and read as it is sent, never held whole: a client that asks
for a big file and never acknowledges costs a descriptor, not the file's size in memory.

`tftp:file` offers a file (its `data`, or the file at `path`) under the name that is its name
(or `filename`). It joins its server as resources._lib.serving says: `server` names the
tftp:server to join; left out, it is served by every tftp:server of this agent. Neither kind
changes the system: both are always in the desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from engine.errors import ResourceError, ValidationError
from engine.handle import Handle, ResourceLogger
from engine.resource import UID, Edgeable, Resource, register
from resources._lib.named import or_name
from resources._lib.plan import nothing_to_do
from resources._lib.serving import (
    Offers,
    Refusals,
    RootedServer,
    offers,
    open_file,
    open_under,
    shown,
)

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
# RFC 1350's error codes.
NOT_DEFINED, NOT_FOUND, ACCESS_VIOLATION, ILLEGAL, UNKNOWN_TID, OPTION_REFUSED = 0, 1, 2, 4, 5, 8
BLOCK = 512  # RFC 1350's block size, without the blksize option
MAX_BLOCK = 65464  # RFC 2348's largest blksize
# The most transfers one client address holds at once (at most `transfers`): unanswered
# requests from one host cannot take every transfer and keep the others out. A PXE client
# makes one or two at a time.
PER_ADDRESS = 8
RETRIES = 5  # sends of one packet before a transfer is given up
CHUNK = 1 << 16  # bytes of a file read at once: a transfer never holds its whole file


class TFTPError(Exception):
    """A transfer ends with this error packet sent to the client."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_packet(code: int, message: str) -> bytes:
    return struct.pack("!HH", ERROR, code) + message.encode() + b"\0"


def data_packet(block: int, chunk: bytes) -> bytes:
    return struct.pack("!HH", DATA, block & 0xFFFF) + chunk


def parse_request(packet: bytes) -> tuple[int, str, str, dict[str, str]]:
    """The opcode, file name, mode (lower case) and options (names lower case) of a RRQ/WRQ."""
    if len(packet) < 4:
        raise TFTPError(ILLEGAL, "short packet")
    (opcode,) = struct.unpack("!H", packet[:2])
    if opcode not in (RRQ, WRQ):
        raise TFTPError(ILLEGAL, "expected a read request")
    fields = packet[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] != b"" or len(fields) % 2 != 1:
        raise TFTPError(ILLEGAL, "malformed request")
    try:
        text = [f.decode() for f in fields[:-1]]
    except UnicodeDecodeError:
        raise TFTPError(ILLEGAL, "malformed request") from None
    options = {text[i].lower(): text[i + 1] for i in range(2, len(text), 2)}
    return opcode, text[0], text[1].lower(), options


def netascii(content: bytes) -> bytes:
    """RFC 764's netascii: CR as CR NUL, LF as CR LF."""
    return content.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def negotiate(
    options: dict[str, str], size: int, timeout: float
) -> tuple[dict[str, str], int, float]:
    """The options we accept (for the OACK), the block size and the retransmit timeout."""
    accepted: dict[str, str] = {}
    block = BLOCK
    value = options.get("blksize", "")
    if value.isascii() and value.isdigit() and int(value) >= 8:
        block = min(int(value), MAX_BLOCK)
        accepted["blksize"] = str(block)
    value = options.get("timeout", "")
    if value.isascii() and value.isdigit() and 1 <= int(value) <= 255:
        timeout = float(value)
        accepted["timeout"] = value
    if options.get("tsize") == "0":
        accepted["tsize"] = str(size)
    return accepted, block, timeout


class _Inbox(asyncio.DatagramProtocol):
    """A UDP socket's datagrams, queued."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr[:2]))


class _Admission:
    """Which requests get a transfer: at most `transfers` at once, and PER_ADDRESS of them
    for one client address. A refusal is said once while it lasts (clients can send floods),
    and its end when it ends."""

    def __init__(self, logger: ResourceLogger, transfers: int) -> None:
        self.logger = logger
        self.transfers = transfers
        self.per_address = min(PER_ADDRESS, transfers)
        self.held: dict[str, int] = {}  # transfers running, by client address
        self.capped: set[str] = set()  # addresses refused at per_address, said once each
        self.refused = 0  # requests refused since the server became busy

    def admit(self, address: str, running: int) -> bool:
        if running >= self.transfers:
            if not self.refused:
                self.logger.warning(
                    "busy (%d transfers): refusing requests, from %s first", running, address
                )
            self.refused += 1
            return False
        if self.held.get(address, 0) >= self.per_address:
            if address not in self.capped:
                self.capped.add(address)
                self.logger.warning(
                    "%s holds %d transfers: refusing its further requests",
                    address,
                    self.held[address],
                )
            return False
        self.held[address] = self.held.get(address, 0) + 1
        return True

    def finished(self, address: str, running: int) -> None:
        self.held[address] -= 1
        if not self.held[address]:
            del self.held[address]
        self.capped.discard(address)
        if self.refused and running < self.transfers:
            self.logger.traffic("no longer busy: %d requests refused", self.refused)
            self.refused = 0


@register("tftp:server")
@dataclass(kw_only=True, eq=False)
class TFTPServerRes(RootedServer):
    # `address` is host:port on UDP (":69" is TFTP's port; ":1069" needs no privilege; an
    # empty host is 127.0.0.1); `root` and `address`: serving.RootedServer.

    # Seconds to wait for an acknowledgement before sending again (a client's `timeout` option
    # overrides it for its transfer). Default 5, as mgmt.
    timeout: int = 5
    # The most transfers at once; more requests are refused with an error. Default 64.
    transfers: int = 64

    def validate(self) -> None:
        super().validate()
        if self.timeout < 1:
            raise ValidationError(f"must be >= 1 second, got {self.timeout}", "timeout")
        if self.transfers < 1:
            raise ValidationError(f"must be >= 1, got {self.transfers}", "transfers")

    async def watch(self) -> None:
        host, port = self._listen_address()
        loop = asyncio.get_running_loop()
        try:
            transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(host, port))
        except OSError as err:
            raise ResourceError(f"cannot listen on udp {host}:{port}: {err.strerror}") from err
        self.handle.on_cleanup(transport.close)
        bound = transport.get_extra_info("sockname")
        self.handle.logger.info("listening on udp %s:%d", host, bound[1])
        self._port = int(bound[1])
        await self.handle.event()
        running: set[asyncio.Task[None]] = set()
        admission = _Admission(self.handle.logger, self.transfers)
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    packet, peer = await inbox.queue.get()
                    if packet[:2] == struct.pack("!H", ERROR):
                        continue  # never an error for an error: two servers would loop
                    if not admission.admit(peer[0], len(running)):
                        transport.sendto(error_packet(NOT_DEFINED, "server busy"), peer)
                        continue
                    task = group.create_task(self._transfer(host, packet, peer))
                    running.add(task)

                    def finished(done: asyncio.Task[None], address: str = peer[0]) -> None:
                        running.discard(done)
                        admission.finished(address, len(running))

                    task.add_done_callback(finished)
        finally:
            transport.close()

    async def check_apply(self, apply: bool) -> bool:
        await self._check_root()
        return nothing_to_do(self.handle, f"serving on udp {self._address}")

    @property
    def port(self) -> int:
        """The UDP port listened on (known once watch has sent its first event)."""
        return self._port

    async def _transfer(self, host: str, packet: bytes, peer: tuple[str, int]) -> None:
        """Serve one request from a socket of its own (its transfer ID); never raises."""
        loop = asyncio.get_running_loop()
        try:
            transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(host, 0))
        except OSError as err:
            self.handle.logger.warning("no socket for a transfer to %s: %s", peer[0], err.strerror)
            return
        try:
            await self._serve(transport, inbox, packet, peer)
        except TFTPError as err:
            transport.sendto(error_packet(err.code, str(err)), peer)
            self.handle.logger.traffic("%s: %s", peer[0], err)
        except TimeoutError:
            self.handle.logger.traffic("%s: transfer timed out", peer[0])
        except ConnectionAbortedError:
            self.handle.logger.traffic("%s: the client ended the transfer", peer[0])
        except Exception:
            self.handle.logger.exception("%s: transfer failed", peer[0])
        finally:
            transport.close()

    async def _serve(
        self,
        transport: asyncio.DatagramTransport,
        inbox: _Inbox,
        packet: bytes,
        peer: tuple[str, int],
    ) -> None:
        opcode, filename, mode, options = parse_request(packet)
        if opcode == WRQ:
            raise TFTPError(ACCESS_VIOLATION, "this server is read-only")
        if mode not in ("octet", "netascii"):
            raise TFTPError(ILLEGAL, f"unsupported mode {mode!r}")
        self.handle.logger.traffic("read %s from %s", shown(filename), peer[0])
        found = await self._source(filename)
        if found is None:
            raise TFTPError(NOT_FOUND, "file not found")
        with found as source:
            text = mode == "netascii"
            size = await source.size(text) if options.get("tsize") == "0" else 0
            accepted, block, timeout = negotiate(options, size, float(self.timeout))
            exchange = _Exchange(transport, inbox, peer, timeout)
            if accepted:
                oack = struct.pack("!H", OACK)
                oack += b"".join(
                    k.encode() + b"\0" + v.encode() + b"\0" for k, v in accepted.items()
                )
                await exchange.send(oack, 0)
            number, sent = 1, 0
            async with contextlib.aclosing(source.blocks(block, text)) as blocks:
                async for chunk in blocks:
                    await exchange.send(data_packet(number, chunk), number)
                    number, sent = number + 1, sent + len(chunk)
        self.handle.logger.traffic("sent %s to %s: %d bytes", shown(filename), peer[0], sent)

    async def _source(self, filename: str) -> _Source | None:
        wanted = filename.lstrip("/")
        for file in files(self.handle).to(self.name):
            if file.served_name.lstrip("/") == wanted:
                return await file.source()
        if self.root is not None:
            fd = await asyncio.to_thread(open_under, self.root, wanted, self.refused)
            return _Source(fd) if fd is not None else None
        return None


class _Source:
    """What one transfer sends: a tftp:file's data, or an open file read as it is sent (a
    file replaced during the transfer, as the file resource does, is sent as it was)."""

    def __init__(self, content: bytes | int) -> None:
        self.content = content

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.content, int):
            os.close(self.content)

    async def size(self, text: bool) -> int:
        """Its size in bytes as sent (netascii, with `text`, adds a byte per CR and LF)."""
        if not text and isinstance(self.content, int):
            return os.fstat(self.content).st_size
        size = offset = 0
        while chunk := await self._read(offset):
            size, offset = size + len(netascii(chunk) if text else chunk), offset + len(chunk)
        return size

    async def blocks(self, block: int, text: bool) -> AsyncGenerator[bytes]:
        """Its blocks of `block` bytes as sent, the last one shorter (maybe empty)."""
        pending, offset = b"", 0
        while chunk := await self._read(offset, max(CHUNK, block)):
            offset += len(chunk)
            pending += netascii(chunk) if text else chunk
            whole = len(pending) // block * block
            for start in range(0, whole, block):
                yield pending[start : start + block]
            pending = pending[whole:]
        yield pending

    async def _read(self, offset: int, size: int = CHUNK) -> bytes:
        if isinstance(self.content, bytes):
            return self.content[offset : offset + size]
        return await asyncio.to_thread(os.pread, self.content, size, offset)


class _Exchange:
    """One transfer's lock-step: send a packet, wait for its acknowledgement, send it again."""

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        inbox: _Inbox,
        peer: tuple[str, int],
        timeout: float,
    ) -> None:
        self.transport, self.inbox, self.peer, self.timeout = transport, inbox, peer, timeout

    async def send(self, packet: bytes, block: int) -> None:
        """Send `packet` until `block` is acknowledged; TimeoutError after RETRIES sends."""
        for _ in range(RETRIES):
            self.transport.sendto(packet, self.peer)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._acked(block)
                    return
        raise TimeoutError

    async def _acked(self, block: int) -> None:
        while True:
            data, addr = await self.inbox.queue.get()
            if addr != self.peer:  # another client's packet to this transfer's port
                if data[:2] != struct.pack("!H", ERROR):  # an error for an error: a loop
                    self.transport.sendto(error_packet(UNKNOWN_TID, "unknown transfer ID"), addr)
                continue
            if len(data) >= 4:
                opcode, number = struct.unpack("!HH", data[:4])
                if opcode == ACK and number == block & 0xFFFF:
                    return
                if opcode == ERROR:  # the client gave up (or refused our options): no reply
                    raise ConnectionAbortedError
            # an older ACK (a duplicate): ignored, never answered (the Sorcerer's Apprentice)


def files(handle: Handle) -> Offers[TFTPFileRes]:
    """The tftp:file resources offered to this engine's tftp servers."""
    return offers(handle, "tftp:file", Offers[TFTPFileRes])


@register("tftp:file")
@dataclass(kw_only=True, eq=False)
class TFTPFileRes(Edgeable, Resource):
    # The tftp:server (its name) that serves this file. Default None: every one of this agent.
    server: str | None = None
    # The name clients ask for (a leading "/" is optional for them). Default None: the name.
    filename: str | None = None
    # An absolute file whose content is served. Default None: serve `data`.
    path: str | None = None
    # The content, when there is no `path`. Default "" (an empty file).
    data: str = ""

    def validate(self) -> None:
        super().validate()
        served, key = or_name(self, "filename")
        if not served.strip("/"):
            raise ValidationError(f"must name a file, got {served!r}", key)
        if self.path is not None:
            if not self.path.startswith("/") or self.path.endswith("/"):
                raise ValidationError(f"must be an absolute file, got {self.path!r}", "path")
            if self.data:
                raise ValidationError("give path or data, not both", "data")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._refused = Refusals(handle.logger)  # requests refused for a link on the way
        files(handle).offer(handle, self)  # until a swap drops it: served across the swap

    async def check_apply(self, apply: bool) -> bool:
        return nothing_to_do(self.handle, f"offering {self.served_name}")

    def uids(self) -> list[UID]:
        return [UID("tftp:file", self.name)]

    def autoedges(self) -> list[list[UID]]:
        """The file resource that manages `path`, if any (mgmt's example adds this edge)."""
        return [[UID("file", self.path)]] if self.path is not None else []

    @property
    def served_name(self) -> str:
        return or_name(self, "filename")[0]

    async def source(self) -> _Source | None:
        """What a transfer of this file sends (None: `path` is missing)."""
        if self.path is None:
            return _Source(self.data.encode())
        fd = await asyncio.to_thread(open_file, self.path, self._refused)
        return _Source(fd) if fd is not None else None
