"""dhcp:server, dhcp:host and dhcp:range against a real DHCP client (busybox udhcpc).

`test_in_namespaces` runs this file again under `unshare --mount --net` (as
test_kernel_kinds does): there a bridge carries the server, and each client runs in a network
namespace of its own (a nested `unshare --net`) on one end of a veth pair whose other end is
on the bridge. The host's network is never changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import ResourceError, ValidationError
from resources.dhcp import (
    MAGIC,
    OFFER_HOLD,
    OPT_LEASE,
    OPT_SERVER_ID,
    DHCPHostRes,
    DHCPRangeRes,
    DHCPServerRes,
    parse_duration,
    parse_message,
)
from tests.conftest import Running
from tests.engine.conftest import engine
from tests.resources.swapping import at_successor_init, swap

__all__ = ["engine"]  # the fixture

INSIDE = os.environ.get("MGMT_TEST_NS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs inside test_in_namespaces' namespaces")

# What udhcpc hands its script, written to a file; the address is set as a real client does.
SCRIPT = """#!/bin/sh
case "$1" in
bound)
    ip addr add "$ip/$mask" dev "$interface"
    {
        echo "ip=$ip mask=$mask router=$router dns=$dns serverid=$serverid lease=$lease"
        echo "tftp=$tftp bootfile=$bootfile"
        echo "siaddr=$siaddr boot_file=$boot_file"
        ip -4 -o addr show dev "$interface"
    } > "$OUT"
    ;;
esac
"""


@pytest.mark.slow  # a pytest of its own in the namespaces: a few seconds, mostly start-up
@pytest.mark.skipif(INSIDE, reason="this is the outer test")
def test_in_namespaces() -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed"
    argv = [unshare, "--mount", "--net", "--propagation", "private", "--"]
    argv += [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", __file__]
    env = {**os.environ, "MGMT_TEST_NS": "1"}
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.replace("1 skipped", "")


async def ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *args, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 0, f"ip {' '.join(args)}: {err.decode()}"


async def lease(tmp_path: Path, port: str, mac: str) -> str:
    """Run udhcpc in a network namespace of its own on a new veth pair whose other end is
    on br0; returns what its script recorded once bound."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox is needed (scripts/apt-packages.txt)"
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = tmp_path / f"{port}.out"
    client = (
        f"echo ready; read go; ip link set lo up; ip link set c0 address {mac};"
        f" ip link set c0 up; exec {busybox} udhcpc -f -q -n -t 10 -T 1 -i c0 -s {script}"
        " -O tftp -O bootfile"
    )
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", "--", "sh", "-c", client,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "OUT": str(out)},
    )  # fmt: skip
    assert proc.stdin and proc.stdout
    try:
        async with asyncio.timeout(60):
            assert await proc.stdout.readline() == b"ready\n"  # in its own namespace now
            await ip(
                "link", "add", port, "type", "veth", "peer", "name", "c0", "netns", str(proc.pid)
            )
            await ip("link", "set", port, "master", "br0", "up")
            proc.stdin.write(b"go\n")
            output, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()
    return out.read_text()


@inside
async def test_clients_get_their_leases(run_resource: object, tmp_path: Path) -> None:
    await ip("link", "add", "br0", "type", "bridge")
    await ip("addr", "add", "192.168.42.1/24", "dev", "br0")
    await ip("link", "set", "br0", "up")
    resources = [
        DHCPServerRes(
            name=":67",
            interface="br0",
            leasetime="60s",
            dns=["192.0.2.53", "192.0.2.54"],
            routers=["192.168.42.1"],
        ),
        DHCPHostRes(
            name="host1",
            mac="00:11:22:33:44:55",
            ip="192.168.42.101/24",
            nbp="tftp://192.168.42.1/pxelinux.0",
        ),
        DHCPHostRes(name="other", mac="00:11:22:33:44:66", ip="10.0.0.5/8", server="another"),
        DHCPRangeRes(name="192.168.42.0/24", skip=["192.168.42.2/24"]),
    ]
    for res in resources:
        running: Running = await run_resource(res)  # type: ignore[operator]
        assert await running.res.check_apply(True) is True  # nothing ever changes
    got = await lease(tmp_path, "h1", "00:11:22:33:44:55")  # the static host
    assert "ip=192.168.42.101 mask=24 router=192.168.42.1 dns=192.0.2.53 192.0.2.54" in got
    assert "serverid=192.168.42.1 lease=60" in got
    assert "tftp=192.168.42.1 bootfile=/pxelinux.0" in got
    assert "siaddr=192.168.42.1 boot_file=/pxelinux.0" in got  # the BOOTP header's too
    assert "inet 192.168.42.101/24" in got  # the client's interface has it
    # Any other client: from the range, past the server's own address and the skipped one
    # (and 00:11:22:33:44:66's host is another server's: it gets a range address too).
    got = await lease(tmp_path, "h2", "00:11:22:33:44:66")
    assert "ip=192.168.42.3 mask=24" in got and "tftp= bootfile=" in got, got
    got = await lease(tmp_path, "h3", "02:00:00:00:00:03")
    assert "ip=192.168.42.4 mask=24" in got, got
    got = await lease(tmp_path, "h4", "00:11:22:33:44:66")  # its lease is kept for it
    assert "ip=192.168.42.3 mask=24" in got, got
    # tester8: the interface deleted and made again (a re-created bridge): the socket bound
    # to the old one heard nothing for good. The server listens on the new one.
    await ip("link", "del", "br0")
    await ip("link", "add", "br0", "type", "bridge")
    await ip("addr", "add", "192.168.42.1/24", "dev", "br0")
    await ip("link", "set", "br0", "up")
    got = await lease(tmp_path, "h5", "02:00:00:00:00:05")
    assert "ip=192.168.42.5 mask=24" in got, got


def test_durations() -> None:
    assert parse_duration("60s", "k") == 60
    assert parse_duration("10m", "k") == 600
    assert parse_duration("1h42m13s", "k") == 6133
    assert parse_duration("1.5h", "k") == 5400
    for bad in ("", "10", "m", "1d", "10 m", "0s"):
        with pytest.raises(ValidationError):
            parse_duration(bad, "k")


@pytest.mark.parametrize(
    ("res", "key"),
    [
        (DHCPServerRes(name=":67"), "interface"),
        (DHCPServerRes(name=":67", interface="an-interface-name-too-long"), "interface"),
        (DHCPServerRes(name=":67", interface="eth0 "), "interface"),
        (DHCPServerRes(name="67", interface="lo"), "name"),
        (DHCPServerRes(name=":67", address="[::1]:67", interface="lo"), "address"),
        (DHCPServerRes(name=":67", interface="lo", serverid="x"), "serverid"),
        (DHCPServerRes(name=":67", interface="lo", leasetime="1 day"), "leasetime"),
        (DHCPServerRes(name=":67", interface="lo", dns=["8.8.8.8", "dns"]), "dns"),
        (DHCPServerRes(name=":67", interface="lo", routers=["::1"]), "routers"),
        (DHCPServerRes(name=":67", interface="lo", nbp="http://x/y"), "nbp"),
        (DHCPHostRes(name="h", mac="00:11:22:33:44:5", ip="10.0.0.1/8"), "mac"),
        (DHCPHostRes(name="h", mac="00:11:22:33:44:AA", ip="10.0.0.1/8"), "mac"),
        (DHCPHostRes(name="h", mac="00:11:22:33:44:55", ip="10.0.0.1"), "ip"),
        (DHCPHostRes(name="h", mac="00:11:22:33:44:55", ip="10.0.0.1/8", nbp="pxe"), "nbp"),
        (DHCPRangeRes(name="nope"), "name"),
        (DHCPRangeRes(name="r", network="10.0.0.0/31"), "network"),
        (DHCPRangeRes(name="10.0.0.0/24", skip=["10.0.0"]), "skip"),
    ],
)
def test_bad_params(res: DHCPServerRes | DHCPHostRes | DHCPRangeRes, key: str) -> None:
    with pytest.raises(ValidationError) as err:
        res.validate()
    assert err.value.key == key


def dhcp_request(kind: int, mac: str, **options: bytes) -> bytes:
    """A client's message: `options` by number (o50=requested address, o54=server id)."""
    head = bytes((1, 1, 6, 0)) + b"\x12\x34\x56\x78" + b"\0" * 20
    head += bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0") + b"\0" * 192 + MAGIC
    body = bytes((53, 1, kind))
    for name, value in options.items():
        body += bytes((int(name[1:]), len(value))) + value
    return head + body + b"\xff"


async def test_answers(run_resource: object) -> None:
    """The server's answers to what udhcpc does not send: a wrong address asked for, another
    server chosen, a release, a decline, an unknown client."""
    server = DHCPServerRes(name="10.9.0.1:0", interface="lo", leasetime="")
    pool = DHCPRangeRes(name="r", network="10.9.0.0/29")
    for res in (server, pool):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True
    mac = "02:00:00:00:00:01"
    offer = parse_message(server._answer(dhcp_request(1, mac))[0])  # type: ignore[index]
    assert offer is not None and offer.kind == 2 and OPT_LEASE not in offer.options  # ""
    assert offer.option_ip(OPT_SERVER_ID) == IPv4Address("10.9.0.1")
    reply, to = server._answer(dhcp_request(3, mac, o50=IPv4Address("10.9.0.5").packed))  # type: ignore[misc]
    nak = parse_message(reply)
    assert nak is not None and nak.kind == 6 and to == ("255.255.255.255", 68)  # not its offer
    asked = IPv4Address("10.9.0.2").packed
    ack = parse_message(server._answer(dhcp_request(3, mac, o50=asked))[0])  # type: ignore[index]
    assert ack is not None and ack.kind == 5
    other = IPv4Address("10.9.0.99").packed
    assert server._answer(dhcp_request(3, mac, o50=asked, o54=other)) is None  # not for us
    second = parse_message(server._answer(dhcp_request(1, "02:00:00:00:00:02"))[0])  # type: ignore[index]
    assert second is not None and second.yiaddr == IPv4Address("10.9.0.2")  # freed above
    assert server._answer(dhcp_request(4, "02:00:00:00:00:02")) is None  # declined: set aside
    third = parse_message(server._answer(dhcp_request(1, "02:00:00:00:00:03"))[0])  # type: ignore[index]
    assert third is not None and third.yiaddr == IPv4Address("10.9.0.3")
    assert server._answer(b"not dhcp") is None


async def test_hostile_messages(run_resource: object) -> None:
    """What any client on the network can send: a message type of no length (a traceback in
    the log per packet, before), and DECLINEs of every address of the pool (emptied for good,
    before: a declined address is set aside only while the pool has others)."""
    server = DHCPServerRes(name="10.9.0.1:0", interface="lo")
    pool = DHCPRangeRes(name="r", network="10.9.0.0/29")  # .2 to .6: the server is .1
    for res in (server, pool):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True
    empty_type = dhcp_request(1, "02:00:00:00:00:01").replace(b"\x35\x01\x01", b"\x35\x00", 1)
    assert server._answer(empty_type) is None
    for n in range(2, 7):  # each of 5 clients takes an address, then declines it
        mac = f"02:00:00:00:00:{n:02x}"
        offer = parse_message(server._answer(dhcp_request(1, mac))[0])  # type: ignore[index]
        assert offer is not None and offer.yiaddr == IPv4Address(f"10.9.0.{n}")
        assert server._answer(dhcp_request(4, mac, o50=offer.yiaddr.packed)) is None
    for n, expected in ((7, "10.9.0.2"), (8, "10.9.0.3")):  # declined first, reused first
        offer = parse_message(server._answer(dhcp_request(1, f"02:00:00:00:00:{n:02x}"))[0])  # type: ignore[index]
        assert offer is not None and offer.yiaddr == IPv4Address(expected)


async def test_a_lease_in_a_second_range_is_kept(run_resource: object) -> None:
    server = DHCPServerRes(name="10.9.0.1:0", interface="lo")
    first, second = DHCPRangeRes(name="10.9.0.0/29"), DHCPRangeRes(name="10.9.1.0/29")
    for res in (server, first, second):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True
    for n in range(2, 7):  # the first range is full
        assert server._answer(dhcp_request(1, f"02:00:00:00:00:{n:02x}")) is not None
    mac = "02:00:00:00:01:00"
    offer = parse_message(server._answer(dhcp_request(1, mac))[0])  # type: ignore[index]
    assert offer is not None and offer.yiaddr == IPv4Address("10.9.1.1")
    assert server._answer(dhcp_request(7, "02:00:00:00:00:02")) is None  # frees 10.9.0.2
    again = parse_message(server._answer(dhcp_request(1, mac))[0])  # type: ignore[index]
    assert again is not None and again.yiaddr == IPv4Address("10.9.1.1")  # not moved


async def test_many_leases_cost_no_scan(run_resource: object) -> None:
    """Each new lease scanned every address leased before it (and built the set of them):
    a client sending DISCOVERs from made-up MACs to a /16 range slowed every answer by 15 ms
    at 4000 leases, and the agent's whole event loop with it. The cost is now flat."""
    server = DHCPServerRes(name="10.8.0.1:0", interface="lo")
    pool = DHCPRangeRes(name="10.8.0.0/16")
    for res in (server, pool):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True

    def discovers(first: int, count: int) -> int:
        """The calls (Python functions and builtins) that `count` answers made: their work,
        counted the same on a loaded machine as on an idle one."""
        calls = 0

        def count_call(_frame: object, event: str, _arg: object) -> None:
            nonlocal calls
            calls += event in ("call", "c_call")

        sys.setprofile(count_call)
        try:
            for n in range(first, first + count):
                assert server._answer(dhcp_request(1, f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}"))
        finally:
            sys.setprofile(None)
        return calls

    early = discovers(0, 200)
    discovers(200, 2800)
    late = discovers(3000, 200)
    # A scan of the leases would make 3000 calls and more per answer, not ~100.
    assert late < 2 * early, f"200 answers: {early} calls at first, {late} at 3000 leases"
    assert server._answer(dhcp_request(7, "02:00:00:00:00:05")) is None  # frees 10.8.0.7
    offer = parse_message(server._answer(dhcp_request(1, "02:00:00:00:ff:ff"))[0])  # type: ignore[index]
    assert offer is not None and offer.yiaddr == IPv4Address("10.8.0.7")  # the lowest free


async def test_a_removed_host_address_is_leased_again(run_resource: object) -> None:
    server = DHCPServerRes(name="10.9.0.1:0", interface="lo")
    host = DHCPHostRes(name="h", mac="02:00:00:00:00:99", ip="10.9.0.2/29")
    for res in (server, DHCPRangeRes(name="10.9.0.0/29"), host):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True
    for n in range(3, 7):  # .3 to .6 leased: the range is full
        leased(server, f"02:00:00:00:00:{n:02x}", f"10.9.0.{n}")
    assert server._answer(dhcp_request(1, "02:00:00:00:00:07")) is None
    await host.handle.run_cleanups()
    host.handle.detach()  # a swap dropped the host: its address is the range's again
    offer = parse_message(server._answer(dhcp_request(1, "02:00:00:00:00:07"))[0])  # type: ignore[index]
    assert offer is not None and offer.yiaddr == IPv4Address("10.9.0.2")


def leased(server: DHCPServerRes, mac: str, expected: str) -> None:
    """`mac` is offered `expected`, requests it and is given it (an ACK)."""
    offer = parse_message(server._answer(dhcp_request(1, mac))[0])  # type: ignore[index]
    assert offer is not None and offer.yiaddr == IPv4Address(expected)
    requested(server, mac, expected)


def requested(server: DHCPServerRes, mac: str, address: str) -> None:
    """`mac` requests `address` and is given it (an ACK)."""
    answer = server._answer(dhcp_request(3, mac, o50=IPv4Address(address).packed))
    ack = parse_message(answer[0]) if answer is not None else None
    assert ack is not None and ack.kind == 5 and ack.yiaddr == IPv4Address(address)


async def test_offers_that_are_never_requested_cannot_empty_a_range(
    run_resource: object, caplog: pytest.LogCaptureFixture
) -> None:
    """tester8: each OFFER held its address for a whole lease time, so DISCOVERs from made-up
    MACs (11 packets for a /28) kept every real client out, and nothing said so. An offer
    holds its address OFFER_HOLD seconds; when none is free, the one offered longest ago and
    never requested is offered again; a range out of addresses is a warning, said again at
    most every minute with how many were refused."""
    caplog.set_level(logging.INFO)
    server = DHCPServerRes(name="10.9.0.1:0", interface="lo")  # the default lease: 10 minutes
    pool = DHCPRangeRes(name="10.9.0.0/29")  # .2 to .6
    for res in (server, pool):
        await run_resource(res, watch=False)  # type: ignore[operator]
    assert await server.check_apply(True) is True
    for n in range(2, 7):  # a flood's DISCOVERs take every address
        offer = parse_message(server._answer(dhcp_request(1, f"02:00:00:00:ff:{n:02x}"))[0])  # type: ignore[index]
        assert offer is not None and offer.yiaddr == IPv4Address(f"10.9.0.{n}")
    ends = [end - time.monotonic() for _, end in server._leases.held.values()]
    assert all(0 < left <= OFFER_HOLD for left in ends)  # not the lease's 600 s
    leased(server, "02:00:00:00:00:01", "10.9.0.2")  # a real client: the oldest offer's
    leased(server, "02:00:00:00:00:02", "10.9.0.3")
    for n in range(4, 7):  # the flood's other offers requested after all: leases now
        requested(server, f"02:00:00:00:ff:{n:02x}", f"10.9.0.{n}")
    assert "no free address" not in caplog.text
    assert server._answer(dhcp_request(1, "02:00:00:00:00:03")) is None  # leases are kept
    assert server._answer(dhcp_request(1, "02:00:00:00:00:04")) is None
    warnings = [r.getMessage() for r in caplog.records if "no free address" in r.getMessage()]
    assert warnings == [
        "dhcp:server[10.9.0.1:0]: no free address in 10.9.0.0/29 for 02:00:00:00:00:03: "
        "every address is leased (1 client refused)"
    ]
    requested(server, "02:00:00:00:00:01", "10.9.0.2")  # a renewal keeps its address


async def test_a_second_server_on_the_same_interface_and_port_is_refused(
    run_resource: object,
) -> None:
    """tester8: with SO_REUSEADDR a second server (another agent's, a stale one) bound the
    same port on the same interface and answered too: a rogue DHCP server nobody was told
    about. It fails, as a taken TCP port does for http:server."""
    if INSIDE:  # test_in_namespaces' new network namespace: its loopback starts down
        await ip("link", "set", "lo", "up")
    first: Running = await run_resource(DHCPServerRes(name="127.0.0.1:0", interface="lo"))  # type: ignore[operator]
    port = first.res.port  # type: ignore[attr-defined]
    second = DHCPServerRes(name=f"127.0.0.1:{port}", interface="lo")
    await run_resource(second, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match=f"cannot listen on udp 127.0.0.1:{port} on lo: "):
        async with asyncio.timeout(20):
            await second.watch()


async def test_hosts_and_ranges_replaced_by_a_swap_are_served_throughout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap that replaces a dhcp:host or a dhcp:range (a param edited) stopped it before its
    successor's init() offered it again. A host renewing its address in between was sent a
    NAK (a range's address was picked for it: the client drops its address), one renewing a
    range's lease had no answer. Each is answered as before the swap now (the server runs
    in a real engine; its answers are asked as in test_answers; tests/resources/swapping.py)."""
    server = DHCPServerRes(name="127.0.0.1:0", interface="lo")
    host_mac, client_mac = "02:00:00:00:01:05", "02:00:00:00:00:02"

    def host(nbp: str) -> DHCPHostRes:
        return DHCPHostRes(name="h", mac=host_mac, ip="10.9.1.5/24", nbp=nbp)

    def pool(skip: list[str]) -> DHCPRangeRes:
        return DHCPRangeRes(name="10.9.0.0/29", skip=skip)

    def renewed(mac: str, address: str) -> Callable[[], Awaitable[tuple[int, IPv4Address] | None]]:
        async def ask() -> tuple[int, IPv4Address] | None:
            answer = server._answer(dhcp_request(3, mac, o50=IPv4Address(address).packed))
            reply = parse_message(answer[0]) if answer is not None else None
            return (reply.kind, reply.yiaddr) if reply is not None else None

        return ask

    await swap(engine, server, host(""), pool([]))
    requested(server, host_mac, "10.9.1.5")
    leased(server, client_mac, "10.9.0.1")
    between = at_successor_init(
        monkeypatch, DHCPHostRes, lambda res: res.nbp != "", renewed(host_mac, "10.9.1.5")
    )
    await swap(engine, server, host("tftp://10.9.1.1/boot"), pool([]))
    assert between == [(5, IPv4Address("10.9.1.5"))]  # an ACK (before: 6, a NAK)
    between = at_successor_init(
        monkeypatch, DHCPRangeRes, lambda res: res.skip != [], renewed(client_mac, "10.9.0.1")
    )
    await swap(engine, server, host("tftp://10.9.1.1/boot"), pool(["10.9.0.6"]))
    assert between == [(5, IPv4Address("10.9.0.1"))]  # an ACK (before: None, no answer)
    requested(server, client_mac, "10.9.0.1")
    requested(server, host_mac, "10.9.1.5")
    await swap(engine, server)
    assert server._answer(dhcp_request(3, client_mac, o50=IPv4Address("10.9.0.1").packed)) is None
