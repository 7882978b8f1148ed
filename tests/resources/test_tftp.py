"""tftp:server and tftp:file on 127.0.0.1, asked by a real TFTP client (busybox tftp) and, for
what that client cannot send (write requests, bad names, lost acknowledgements), by raw UDP."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import ValidationError
from resources.tftp import PER_ADDRESS, TFTPFileRes, TFTPServerRes
from tests.conftest import Running
from tests.engine.conftest import engine
from tests.resources.swapping import at_successor_init, swap

__all__ = ["engine"]  # the fixture


async def busybox_get(port: int, remote: str, local: Path, *blksize: str) -> tuple[int, str]:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is needed (scripts/apt-packages.txt)"
    argv = [busybox, "tftp", "-g", "-r", remote, "-l", str(local), *blksize, "127.0.0.1", str(port)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def request(opcode: int, name: str, mode: str = "octet", **options: str) -> bytes:
    fields = [name, mode] + [x for kv in options.items() for x in kv]
    return struct.pack("!H", opcode) + b"".join(f.encode() + b"\0" for f in fields)


class Client:
    """A raw UDP TFTP client: what it sends, what it receives (with a generous bound)."""

    def __init__(self, port: int, address: str = "127.0.0.1") -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.setblocking(False)

    async def send(self, packet: bytes, to: tuple[str, int] | None = None) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, packet, to or self.server)

    async def receive(self) -> tuple[int, bytes, tuple[str, int]]:
        async with asyncio.timeout(30):
            data, addr = await asyncio.get_running_loop().sock_recvfrom(self.sock, 70000)
        return struct.unpack("!H", data[:2])[0], data[2:], addr

    def close(self) -> None:
        self.sock.close()


async def start(run_resource: object, *resources: TFTPServerRes | TFTPFileRes) -> int:
    port = 0
    for res in resources:
        running: Running = await run_resource(res)  # type: ignore[operator]
        assert await running.res.check_apply(True) is True  # nothing ever changes
        if isinstance(res, TFTPServerRes):
            port = res.port
    return port


async def test_files_and_root_are_served(run_resource: object, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "r.txt").write_text("in root\n")
    (tmp_path / "secret").write_text("secret\n")
    (root / "link").symlink_to(tmp_path / "secret")
    big = os.urandom(200_000)  # 391 blocks of 512 bytes, or 4 of 65464
    (tmp_path / "big").write_bytes(big)
    port = await start(
        run_resource,
        TFTPFileRes(name="/file1", data="hello\n"),
        TFTPFileRes(name="/big", path=str(tmp_path / "big")),
        TFTPFileRes(name="/nope", data="not ours\n", server="another"),
        TFTPServerRes(name="127.0.0.1:0", root=f"{root}/"),
    )
    got = tmp_path / "got"
    assert (await busybox_get(port, "/file1", got))[0] == 0
    assert got.read_text() == "hello\n"
    assert (await busybox_get(port, "file1", got))[0] == 0  # the leading "/" is optional
    assert (await busybox_get(port, "/big", got))[0] == 0
    assert got.read_bytes() == big
    assert (await busybox_get(port, "/big", got, "-b", "65464"))[0] == 0  # blksize option
    assert got.read_bytes() == big
    assert (await busybox_get(port, "sub/r.txt", got, "-b", "1024"))[0] == 0
    assert got.read_text() == "in root\n"
    for name in ("/nope", "/missing", "/link", "../secret", "sub/../../secret"):
        code, out = await busybox_get(port, name, got)
        assert code != 0 and "not found" in out, (name, out)


async def test_protocol_details(run_resource: object, tmp_path: Path) -> None:
    data = b"0123456789abcdef" * 64 + b"end\n"  # 1028 bytes: blocks of 512, 512 and 4
    port = await start(
        run_resource,
        TFTPFileRes(name="f", data=data.decode()),
        TFTPFileRes(name="text", data="a\nb\r"),
        TFTPServerRes(name="127.0.0.1:0", timeout=2),
    )
    client = Client(port)
    try:
        await client.send(request(2, "f"))  # a write request: refused
        opcode, body, _ = await client.receive()
        assert (opcode, body[:2]) == (5, struct.pack("!H", 2))
        await client.send(request(1, "text", "netascii"))
        opcode, body, tid = await client.receive()
        assert (opcode, body) == (3, b"\0\x01a\r\nb\r\0")
        assert tid[1] != port  # a transfer ID (port) of its own
        await client.send(struct.pack("!HH", 4, 1), tid)
        # options: tsize and blksize acknowledged (OACK), then blocks of that size
        await client.send(request(1, "f", tsize="0", blksize="600", bogus="1"))
        opcode, body, tid = await client.receive()
        assert opcode == 6 and body == b"blksize\x00600\x00tsize\x001028\x00"
        await client.send(struct.pack("!HH", 4, 0), tid)
        opcode, body, _ = await client.receive()
        assert (opcode, body[2:]) == (3, data[:600])
        # a lost acknowledgement: the block comes again (after `timeout`), an old ACK is ignored
        opcode, again, _ = await client.receive()
        assert (opcode, again) == (3, body)
        await client.send(struct.pack("!HH", 4, 0), tid)
        await client.send(struct.pack("!HH", 4, 1), tid)
        while body[:2] == b"\0\x01":  # block 1 may come once more on a busy machine
            opcode, body, _ = await client.receive()
        assert (opcode, body) == (3, b"\0\x02" + data[600:])
        stranger = Client(port)  # another client writing to this transfer's port
        await stranger.send(struct.pack("!HH", 4, 2), tid)
        opcode, body, _ = await stranger.receive()
        assert (opcode, body[:2]) == (5, struct.pack("!H", 5))
        stranger.close()
        await client.send(struct.pack("!HH", 4, 2), tid)
        junk = Client(port)
        await junk.send(b"\0\x07junk")  # not a request: an error
        opcode, body, _ = await junk.receive()
        junk.close()
        assert (opcode, body[:2]) == (5, struct.pack("!H", 4))
    finally:
        client.close()


async def fetch(client: Client, name: str, mode: str, **options: str) -> tuple[bytes, bytes]:
    """The OACK's body (b"" if none) and the whole file, every block acknowledged."""
    await client.send(request(1, name, mode, **options))
    oack, content, number = b"", b"", 0
    while True:
        opcode, body, tid = await client.receive()
        if opcode == 6:
            oack = body
            await client.send(struct.pack("!HH", 4, 0), tid)
            continue
        assert opcode == 3, body
        if struct.unpack("!H", body[:2])[0] == (number + 1) & 0xFFFF:
            number, content = number + 1, content + body[2:]
        await client.send(struct.pack("!H", 4) + body[:2], tid)
        if len(body) - 2 < int(options.get("blksize", 512)):
            return oack, content


def resident() -> int:
    """This process's resident memory, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_files_are_streamed_not_held(run_resource: object, tmp_path: Path) -> None:
    """A transfer reads its file as it sends it: a client that asks for a big file and never
    acknowledges held all of it in the agent's memory (a few such requests: out of memory)."""
    root = tmp_path / "root"
    root.mkdir()
    with (root / "big.iso").open("wb") as big:
        big.truncate(128 << 20)  # sparse: no disk used
    text = (b"line\r\n" * 9000 + b"bare\n" + b"x" * 70000 + b"\r") * 2  # past a read's chunk
    (root / "text").write_bytes(text)
    port = await start(run_resource, TFTPServerRes(name="127.0.0.1:0", root=f"{root}/"))
    before = resident()
    idle = [Client(port) for _ in range(4)]
    try:
        for client in idle:
            await client.send(request(1, "big.iso", tsize="0"))
            opcode, body, _ = await client.receive()
            assert opcode == 6 and body == b"tsize\x00134217728\x00"
        grown = resident() - before
        assert grown < 64 << 20, f"{grown >> 20} MiB more for 4 transfers of 128 MiB"
        client = Client(port)
        oack, got = await fetch(client, "text", "netascii", blksize="1000", tsize="0")
        client.close()
    finally:
        for each in idle:
            each.close()
    sent = text.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    assert oack == b"blksize\x001000\x00tsize\x00" + str(len(sent)).encode() + b"\x00"
    assert got == sent


async def test_concurrent_transfers_are_limited(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = await start(
        run_resource,
        TFTPFileRes(name="f", data="x" * 100),
        TFTPServerRes(name="127.0.0.1:0", transfers=1),
    )
    first, second = Client(port), Client(port)
    try:
        await first.send(request(1, "f"))
        opcode, _, tid = await first.receive()
        assert opcode == 3  # its transfer runs, waiting for our ACK
        for _ in range(20):  # a flood while busy: each refused, one line logged for all
            await second.send(request(1, "f"))
            opcode, body, _ = await second.receive()
            assert opcode == 5 and b"busy" in body
        assert caplog.text.count("refusing requests") == 1
        await first.send(struct.pack("!HH", 4, 1), tid)  # its transfer ends
        async with asyncio.timeout(30):
            while True:  # its slot is free once its task has ended
                await second.send(request(1, "f"))
                if (await second.receive())[0] == 3:
                    break
        assert "no longer busy: " in caplog.text
    finally:
        first.close()
        second.close()


async def test_one_client_address_cannot_take_every_transfer(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    """tester8: 64 requests never acknowledged, from one host, took every transfer and kept
    every other client out (each retried for ~25 s). One address holds PER_ADDRESS at most;
    another address is served meanwhile; the refusal is one line while it lasts."""
    caplog.set_level(logging.INFO)
    port = await start(
        run_resource, TFTPFileRes(name="f", data="x" * 100), TFTPServerRes(name="127.0.0.1:0")
    )
    flood = [Client(port) for _ in range(PER_ADDRESS + 3)]
    other = Client(port, "127.0.0.2")  # another host (all of 127/8 is loopback)
    try:
        for client in flood[:PER_ADDRESS]:  # each transfer waits for an ACK never sent
            await client.send(request(1, "f"))
            assert (await client.receive())[0] == 3
        for client in flood[PER_ADDRESS:]:
            await client.send(request(1, "f"))
            opcode, body, _ = await client.receive()
            assert opcode == 5 and b"busy" in body
        assert caplog.text.count("127.0.0.1 holds 8 transfers: refusing its further") == 1
        await other.send(request(1, "f"))
        assert (await other.receive())[0] == 3  # served: the server is not full
    finally:
        for client in [*flood, other]:
            client.close()


async def test_names_cannot_forge_log_lines(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = await start(
        run_resource, TFTPFileRes(name="a\nb", data="x"), TFTPServerRes(name="127.0.0.1:0")
    )
    client = Client(port)
    try:
        for name in ("x\nERROR forged", "a\nb"):  # each logged before it is answered
            await client.send(request(1, name))
            await client.receive()
    finally:
        client.close()
    assert "read x\\nERROR forged from 127.0.0.1" in caplog.text
    assert "read a\\nb from 127.0.0.1" in caplog.text
    assert not [line for line in caplog.text.splitlines() if line.startswith("ERROR")]


async def test_error_packets_are_never_answered(run_resource: object) -> None:
    """An error answered with an error makes two servers (or a server and any UDP echo) bounce
    packets forever once a spoofed one starts them (the "Loop DoS", CVE-2024-2169): a stray
    error packet gets no answer, on the server's port as on a transfer's."""
    port = await start(
        run_resource,
        TFTPFileRes(name="f", data="x" * 2000),
        TFTPServerRes(name="127.0.0.1:0"),
    )
    client, stray, witness = Client(port), Client(port), Client(port)
    error = struct.pack("!HH", 5, 0) + b"loop\0"
    try:
        await stray.send(error)  # to the server's port, then a packet that is answered
        await witness.send(b"\0\x07junk")
        assert (await witness.receive())[:2] == (
            5,
            struct.pack("!H", 4) + b"expected a read request\0",
        )
        with pytest.raises(BlockingIOError):  # its answer would have come first
            stray.sock.recv(100)
        await client.send(request(1, "f"))
        opcode, _, tid = await client.receive()
        assert opcode == 3
        await stray.send(error, tid)  # to a transfer's port, then a stranger's ACK there
        await witness.send(struct.pack("!HH", 4, 1), tid)
        opcode, body, _ = await witness.receive()
        assert (opcode, body[:2]) == (5, struct.pack("!H", 5))  # unknown transfer ID
        with pytest.raises(BlockingIOError):
            stray.sock.recv(100)
        await client.send(struct.pack("!HH", 4, 1), tid)  # the transfer carries on
        opcode, body, _ = await client.receive()
        assert (opcode, body[:2]) == (3, b"\0\x02")
    finally:
        for each in (client, stray, witness):
            each.close()


@pytest.mark.parametrize(
    ("res", "key"),
    [
        (TFTPServerRes(name="nope"), "name"),
        (TFTPServerRes(name="x", address="host:69"), "address"),
        (TFTPServerRes(name=":69", root="relative/"), "root"),
        (TFTPServerRes(name=":69", root="/no/slash"), "root"),
        (TFTPServerRes(name=":69", timeout=0), "timeout"),
        (TFTPServerRes(name=":69", transfers=0), "transfers"),
        (TFTPFileRes(name="/"), "name"),
        (TFTPFileRes(name="f", path="relative"), "path"),
        (TFTPFileRes(name="f", path="/x", data="y"), "data"),
    ],
)
def test_bad_params(res: TFTPServerRes | TFTPFileRes, key: str) -> None:
    with pytest.raises(ValidationError) as err:
        res.validate()
    assert err.value.key == key


async def test_a_link_on_the_way_to_root_is_said_once(
    run_resource: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A root behind a link another user planted: each read is "file not found", said once by
    the server (its name, the file asked for); the repeats are counted (test_http_server)."""
    caplog.set_level(logging.INFO)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("secret\n")
    (tmp_path / "root").symlink_to(tmp_path / "d")
    os.lchown(tmp_path / "root", 65534, 65534)  # planted by nobody
    port = await start(run_resource, TFTPServerRes(name="127.0.0.1:0", root=f"{tmp_path}/root/"))
    got = tmp_path / "got"
    for _ in range(3):
        code, out = await busybox_get(port, "a.txt", got)
        assert code != 0 and "not found" in out, out
    said = [r.getMessage() for r in caplog.records if "not served" in r.getMessage()]
    assert [line.split(": refusing")[0] for line in said] == [
        f"tftp:server[127.0.0.1:0]: not served: {tmp_path}/root/a.txt"
    ]


async def test_a_file_replaced_by_a_swap_is_served_throughout(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap that replaces a tftp:file (its data edited) stopped it before its successor's
    init() offered its name: a machine booting in between was told "file not found" (busybox
    tftp exits 1). The old one's content is sent now, the new one's from the successor's init
    on (tests/resources/swapping.py); a file the swap removes is not found once it is over."""
    server = TFTPServerRes(name="127.0.0.1:0")
    await swap(engine, server, TFTPFileRes(name="/f", data="old\n"))
    got = tmp_path / "got"

    async def get() -> tuple[int, str]:
        code, out = await busybox_get(server.port, "/f", got)
        return code, got.read_text() if code == 0 else out

    assert await get() == (0, "old\n")
    between = at_successor_init(monkeypatch, TFTPFileRes, lambda res: res.data == "new\n", get)
    await swap(engine, server, TFTPFileRes(name="/f", data="new\n"))
    assert between == [(0, "old\n")]  # (before: 1, "file not found")
    assert await get() == (0, "new\n")
    await swap(engine, server)
    code, out = await get()
    assert code != 0 and "not found" in out
