"""Shared servers across graph swaps: a daemon (`mgmt run yaml`) serves an http:server (a
file, a flag, a UI with one field, a cache-only proxy), a tftp:server (a file) and a
dhcp:server (a host, a range) beside N noops, while clients ask without pause; the graph file
is edited `--swaps` times, each edit changing every member (a file's data, the UI's title,
the field's sort, the proxy's `force`, the TFTP file's data, the host's `nbp`, the range's
`skip`), so that each swap replaces them all. Printed: per kind of request, how many were
asked during the edits and how many failed (a 404, a TFTP error, a DHCP NAK or no answer
within 1 s, a UI list without its field). Before 2026-12-06 (fifth session) each replaced
member was withdrawn between its stop and its successor's start.

    .venv/bin/python bench/swap_serving.py [--noops 3000] [--swaps 5] [--rounds 2] [--base DIR]

The DHCP client asks as a relay (`giaddr` 127.0.0.2) so that the answer comes back to it on
loopback (a client's own answers go to port 68 or broadcast). `--rounds` daemons are started
one after the other; with `--base DIR` (another checkout) each round starts this tree's and
BASE's, alternately first. The clients' timeouts are `asyncio.timeout`, not `wait_for`:
3.11's `wait_for` returns the inner result when it is cancelled just as that result comes
(cpython gh-86296, fixed in 3.12), so a client loop cancelled at the end of a daemon's run
went on asking and the TaskGroup waited for it for ever, the daemon's stderr no longer read
(its log writer blocked on the full pipe). A race at any daemon's end: it was seen as "a
second daemon hangs" before 2026-12-06 (fifth session, helper twodaemons); the daemons were
not at fault.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import tempfile
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

from common import MGMT, Parser, base_launcher, checkout, run_script, terminate, whole

HOST_MAC, POOL_MAC = "02:00:00:00:01:05", "02:00:00:00:00:02"
HOST_IP = "10.77.1.5"
RELAY = "127.0.0.2"
MAGIC = b"\x63\x82\x53\x63"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graph(n: int, i: int, ports: tuple[int, int, int], work: Path) -> str:
    """The graph file of edit `i` (every member changes from one `i` to the next)."""
    http, tftp, dhcp = ports
    odd = i % 2 == 1
    lines = [
        "graph: serving",
        "resources:",
        "  http:server:",
        f'    - {{name: "127.0.0.1:{http}"}}',
        "  http:server:file:",
        f'    - {{name: /f, data: "v{i}\\n"}}',
        "  http:server:flag:",
        f"    - {{name: /done, key: k{i}}}",
        "  http:server:ui:",
        f'    - {{name: /ui/, data: {{title: "v{i}", head: ""}}}}',
        "  http:server:ui:input:",
        f'    - {{name: f1, value: "a", sort: "v{i}"}}',
        "  http:server:proxy:",
        f"    - {{name: /cache/, cache: {work}/cache/, force: {'true' if odd else 'false'}}}",
        "  tftp:server:",
        f'    - {{name: "127.0.0.1:{tftp}"}}',
        "  tftp:file:",
        f'    - {{name: /t, data: "v{i}\\n"}}',
        "  dhcp:server:",
        f'    - {{name: "127.0.0.1:{dhcp}", interface: lo, leasetime: 1h}}',
        "  dhcp:host:",
        f'    - {{name: h, mac: "{HOST_MAC}", ip: {HOST_IP}/24, nbp: "tftp://10.77.1.1/v{i}"}}',
        "  dhcp:range:",
        f"    - {{name: 10.77.0.0/24, skip: [10.77.0.{200 + i % 50}]}}",
        "  noop:",
    ]
    lines += [f"    - name: n{k}" for k in range(n)]
    return "\n".join(lines) + "\n"


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        async with asyncio.timeout(30):  # (not wait_for: see the docstring)
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def udp(local: tuple[str, int]) -> tuple[asyncio.DatagramTransport, Datagrams]:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(Datagrams, local_addr=local)
    return transport, inbox


async def tftp_get(port: int, name: str) -> bool:
    """Whether `name` came (one block), else an error packet or no answer within 1 s."""
    transport, inbox = await udp(("127.0.0.1", 0))
    try:
        transport.sendto(struct.pack("!H", 1) + name.encode() + b"\0octet\0", ("127.0.0.1", port))
        try:
            async with asyncio.timeout(1):
                data, peer = await inbox.queue.get()
        except TimeoutError:
            return False
        if data[:2] != struct.pack("!H", 3):
            return False
        transport.sendto(struct.pack("!H", 4) + data[2:4], peer)
        return True
    finally:
        transport.close()


def dhcp_message(kind: int, mac: str, asked: str | None) -> bytes:
    giaddr = IPv4Address(RELAY).packed
    head = bytes((1, 1, 6, 1)) + os.urandom(4) + b"\0" * 16 + giaddr  # secs..siaddr, giaddr
    head += bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0") + b"\0" * 192 + MAGIC
    options = bytes((53, 1, kind))
    if asked is not None:
        options += bytes((50, 4)) + IPv4Address(asked).packed
    return head + options + b"\xff"


def dhcp_reply(data: bytes) -> tuple[int, str] | None:
    """The reply's message type and yiaddr."""
    if len(data) < 241 or data[236:240] != MAGIC:
        return None
    options, i = data[240:], 0
    while i + 1 < len(options) and options[i] != 255:
        if options[i] == 53:
            return options[i + 2], str(IPv4Address(data[16:20]))
        i += 2 + options[i + 1]
    return None


class DHCPClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = asyncio.Lock()  # one exchange at a time (the answers share the socket)

    async def start(self) -> None:
        self.transport, self.inbox = await udp((RELAY, self.port))

    def close(self) -> None:
        if hasattr(self, "transport"):
            self.transport.close()

    async def ask(self, kind: int, mac: str, asked: str | None) -> tuple[int, str] | None:
        async with self.lock:
            while not self.inbox.queue.empty():
                self.inbox.queue.get_nowait()
            self.transport.sendto(dhcp_message(kind, mac, asked), ("127.0.0.1", self.port))
            try:
                async with asyncio.timeout(1):
                    while True:
                        data, _ = await self.inbox.queue.get()
                        reply = dhcp_reply(data)
                        if reply is not None:
                            return reply
            except TimeoutError:
                return None


async def one(  # noqa: PLR0915 (one daemon's whole story)
    mgmt: list[str], n: int, swaps: int
) -> tuple[Counter[str], Counter[str], float]:
    """One daemon, `swaps` edits: (asked, failed) per kind of request, and the seconds."""
    work = Path(tempfile.mkdtemp(prefix="mgmt-bench-serving-"))
    (work / "cache").mkdir()
    (work / "cache" / "a.txt").write_text("cached\n")
    ports = (
        free_port(socket.SOCK_STREAM),
        free_port(socket.SOCK_DGRAM),
        free_port(socket.SOCK_DGRAM),
    )
    http, tftp, dhcp = ports
    path = work / "graph.yaml"
    path.write_text(graph(n, 0, ports, work))
    proc = await asyncio.create_subprocess_exec(
        *mgmt, "run", "--prefix", str(work / "prefix"), "yaml", str(path),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    swapped, converged = asyncio.Event(), asyncio.Event()
    count = [0]

    last: list[bytes] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            last[:] = [*last[-20:], raw]
            if b"converged: all" in raw:
                converged.set()
            if b"graph swap:" in raw:
                count[0] += 1
                swapped.set()
        lines = b"".join(last).decode(errors="replace")
        raise RuntimeError(f"the daemon ended ({await proc.wait()}):\n{lines}")

    asked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    counting = False

    def note(kind: str, ok: bool) -> None:
        if counting:
            asked[kind] += 1
            failed[kind] += not ok

    client = DHCPClient(dhcp)

    async def http_loop(kind: str, target: str, needle: bytes) -> None:
        while True:
            try:
                status, body = await http_get(http, target)
                note(kind, status == 200 and needle in body)
            except (OSError, ValueError, IndexError):
                note(kind, False)

    async def post_loop() -> None:
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", http)
            writer.write(
                b"POST /done HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                b"\r\nContent-Length: 3\r\n\r\nk=1"
            )
            async with asyncio.timeout(30):
                line = await reader.readline()
            writer.close()
            note("http:server:flag POST", line.split(b" ")[1:2] == [b"200"])

    async def tftp_loop() -> None:
        while True:
            note("tftp:file", await tftp_get(tftp, "/t"))

    async def dhcp_loop(kind: str, mac: str, address: str) -> None:
        while True:
            reply = await client.ask(3, mac, address)
            note(kind, reply == (5, address))

    try:
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(read())
            async with asyncio.timeout(600):
                await converged.wait()
            await client.start()
            offer = await client.ask(1, POOL_MAC, None)
            assert offer is not None and offer[0] == 2, offer
            pool_ip = offer[1]
            assert await client.ask(3, POOL_MAC, pool_ip) == (5, pool_ip)
            clients = [
                group.create_task(http_loop("http:server:file", "/f", b"v")),
                group.create_task(http_loop("http:server:file", "/f", b"v")),
                group.create_task(http_loop("http:server:ui", "/ui/index.html", b"<title>v")),
                group.create_task(http_loop("http:server:ui:input (list/)", "/ui/list/", b'"f1"')),
                group.create_task(http_loop("http:server:proxy", "/cache/a.txt", b"cached")),
                group.create_task(post_loop()),
                group.create_task(tftp_loop()),
                group.create_task(dhcp_loop("dhcp:host (renew)", HOST_MAC, HOST_IP)),
                group.create_task(dhcp_loop("dhcp:range (renew)", POOL_MAC, pool_ip)),
            ]
            counting = True
            start = time.perf_counter()
            for i in range(1, swaps + 1):
                seen = count[0]
                tmp = path.with_suffix(".tmp")
                tmp.write_text(graph(n, i, ports, work))
                os.rename(tmp, path)
                async with asyncio.timeout(600):
                    while count[0] <= seen:
                        swapped.clear()
                        await swapped.wait()
                    while (await http_get(http, "/f"))[1] != f"v{i}\n".encode():
                        pass  # its successor serves it: the swap is over
            took = time.perf_counter() - start
            counting = False
            for task in [*clients, reader]:
                task.cancel()
    finally:
        client.close()
        await terminate([proc])
        shutil.rmtree(work, ignore_errors=True)
    return asked, failed, took


async def main() -> None:
    parser = Parser()
    parser.add_argument("--noops", type=whole(0), default=3000, help="noop vertices beside")
    parser.add_argument("--swaps", type=whole(1), default=5, help="graph file edits per run")
    parser.add_argument("--rounds", type=whole(1), default=2, help="daemons per checkout")
    parser.add_argument("--base", type=Path, help="another checkout of mgmt, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgmt-bench-serving-") as where:
        runs = {"this tree": MGMT}
        if args.base is not None:
            runs["BASE"] = base_launcher(checkout(args.base, "--base"), Path(where) / "m")
        results: dict[str, list[tuple[Counter[str], Counter[str], float, float]]] = {}
        for round_ in range(args.rounds):
            names = list(runs) if round_ % 2 == 0 else list(reversed(runs))  # each one first
            for name in names:
                asked, failed, took = await one(runs[name], args.noops, args.swaps)
                load = os.getloadavg()[0]
                results.setdefault(name, []).append((asked, failed, took, load))
    for name, rows in results.items():
        times = ", ".join(f"{took:.1f}s (load {load:.1f})" for _, _, took, load in rows)
        print(
            f"{name}: {args.swaps} swaps of {args.noops} noops + the members, per daemon: {times}"
        )
        for kind in sorted({kind for asked, *_ in rows for kind in asked}):
            counts = ", ".join(f"{failed[kind]} of {asked[kind]}" for asked, failed, *_ in rows)
            print(f"  {kind:30s} failed {counts}")


if __name__ == "__main__":
    run_script(main)
