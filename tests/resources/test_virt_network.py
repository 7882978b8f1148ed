"""virt:network and its DHCP hosts and ranges, against libvirt's real test driver (no mocks).

Each test has a test-driver node file of its own (`test:///<tmp>/node.xml`): its state is
private to the pool's connection, which the test also uses to act "from outside". The test
driver keeps one definition per network (it cannot show the persistent one apart), so the
entries are managed there once; events are awaited with timeouts, never slept on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import libvirt
import pytest

from engine.errors import ResourceError, ValidationError
from engine.graph import Graph
from engine.handle import Shared
from engine.params import build
from resources import virt
from resources.virt import Pool, VirtNetworkHostRes, VirtNetworkRangeRes, VirtNetworkRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]

HOST = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
RANGE = libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE
ADD = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
DELETE = libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE


@pytest.fixture
def pool(engine_shared: Shared) -> Pool:
    return virt.pool_of(engine_shared)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    return f"test://{node}"


@pytest.fixture
async def outside(pool: Pool, uri: str) -> AsyncIterator[Any]:
    async with pool.connection(uri) as conn:
        yield conn.conn


def network(uri: str, *members: Any, **params: Any) -> VirtNetworkRes:
    params = {"state": "up", "mac": "52:54:00:bd:00:01", "ip": "192.168.42.1/24", **params}
    res = VirtNetworkRes(name="mgmtnet", uri=uri, **params)
    res.grouped = list(members)
    return res


def host(name: str, last: int, **params: Any) -> VirtNetworkHostRes:
    return VirtNetworkHostRes(
        name=name, mac=f"52:54:00:00:00:{last:02x}", ip=f"192.168.42.{last}/24", **params
    )


def pool_range(start: int = 100, end: int = 200) -> VirtNetworkRangeRes:
    return VirtNetworkRangeRes(name="dyn", start=f"192.168.42.{start}", end=f"192.168.42.{end}")


def entries(conn: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(hosts as (mac, name, ip), ranges as (start, end)) of the network's definition."""
    root = ET.fromstring(conn.networkLookupByName("mgmtnet").XMLDesc(0))
    hosts = [(h.get("mac"), h.get("name"), h.get("ip")) for h in root.iter("host")]
    ranges = [(r.get("start"), r.get("end")) for r in root.iter("range")]
    return hosts, ranges  # type: ignore[return-value]


async def test_define_start_with_entries_then_nothing_to_do(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    res = network(uri, host("web", 7, hostname="web.internal"), pool_range(), startup="enabled")
    running = await run_resource(res)
    assert await running.res.check_apply(False) is False  # noop: nothing is made
    assert "would define the network" in caplog.text
    with pytest.raises(libvirt.libvirtError):
        outside.networkLookupByName("mgmtnet")
    assert await running.res.check_apply(True) is False
    net = outside.networkLookupByName("mgmtnet")
    assert net.isActive() and net.isPersistent() and net.autostart()
    root = ET.fromstring(net.XMLDesc(0))
    assert root.find("bridge").get("name") == "virbr0"  # type: ignore[union-attr]
    assert root.find("mac").get("address") == "52:54:00:bd:00:01"  # type: ignore[union-attr]
    assert entries(outside) == (
        [("52:54:00:00:00:07", "web.internal", "192.168.42.7")],
        [("192.168.42.100", "192.168.42.200")],
    )
    assert "virt:network[mgmtnet]: defined the network" in caplog.text
    assert await running.res.check_apply(True) is True
    assert "nothing to do: network mgmtnet up, defined, as wanted" in caplog.text


async def test_entries_drift_is_repaired_and_purged(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone deletes a declared host, modifies another, adds one of their own and a range:
    check_apply puts back what is declared, and purge_hosts deletes the stranger (the range
    stays: purge_ranges is false)."""
    caplog.set_level(logging.INFO)
    res = network(uri, host("web", 7), host("db", 13), pool_range(), purge_hosts=True)
    running = await run_resource(res)
    assert await running.res.check_apply(True) is False
    net = outside.networkLookupByName("mgmtnet")
    net.update(DELETE, HOST, -1, "<host mac='52:54:00:00:00:07' name='web' ip='192.168.42.7'/>", 0)
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
        HOST,
        -1,
        "<host mac='52:54:00:00:00:0d' name='db' ip='192.168.42.99'/>",
        0,
    )
    net.update(ADD, HOST, -1, "<host mac='52:54:00:00:00:aa' name='x' ip='192.168.42.50'/>", 0)
    net.update(ADD, RANGE, -1, "<range start='192.168.42.210' end='192.168.42.220'/>", 0)
    assert await running.res.check_apply(True) is False
    hosts, ranges = entries(outside)
    assert sorted(hosts) == [
        ("52:54:00:00:00:07", "web", "192.168.42.7"),
        ("52:54:00:00:00:0d", "db", "192.168.42.13"),
    ]
    assert sorted(ranges) == [
        ("192.168.42.100", "192.168.42.200"),
        ("192.168.42.210", "192.168.42.220"),
    ]
    for line in (
        "added dhcp host 52:54:00:00:00:07 (web, 192.168.42.7)",
        "modified dhcp host 52:54:00:00:00:0d (db, 192.168.42.13)",
        "deleted dhcp host 52:54:00:00:00:aa (x, 192.168.42.50)",
    ):
        assert line in caplog.text
    assert await running.res.check_apply(True) is True
    running.res.purge_ranges = True
    assert await running.res.check_apply(True) is False
    assert entries(outside)[1] == [("192.168.42.100", "192.168.42.200")]


async def test_stopped_from_outside_is_an_event_and_started_again(
    run_resource: Start, uri: str, outside: Any
) -> None:
    running = await run_resource(network(uri))
    assert await running.res.check_apply(True) is False
    before = running.handle.events
    outside.networkLookupByName("mgmtnet").destroy()
    while running.handle.events == before:  # libvirt's lifecycle event (bounded wait)
        await running.handle.next_event()
    assert await running.res.check_apply(True) is False
    assert outside.networkLookupByName("mgmtnet").isActive()


async def test_a_base_field_change_redefines_and_restarts(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await run_resource(network(uri, host("web", 7)))
    assert await first.res.check_apply(True) is False
    running = await run_resource(network(uri, host("web", 7), mac="52:54:00:bd:00:02"))
    assert await running.res.check_apply(True) is False
    assert (
        "redefined the network (mac 52:54:00:bd:00:01 -> 52:54:00:bd:00:02); restarted it"
        in caplog.text
    )
    net = outside.networkLookupByName("mgmtnet")
    assert net.isActive()
    assert ET.fromstring(net.XMLDesc(0)).find("mac").get("address") == "52:54:00:bd:00:02"  # type: ignore[union-attr]
    assert entries(outside)[0] == [("52:54:00:00:00:07", "web", "192.168.42.7")]  # kept
    assert await running.res.check_apply(True) is True


async def test_down_stops_and_transient_down_removes(
    run_resource: Start, uri: str, outside: Any
) -> None:
    running = await run_resource(network(uri))
    assert await running.res.check_apply(True) is False
    down = await run_resource(network(uri, state="down"))
    assert await down.res.check_apply(True) is False
    net = outside.networkLookupByName("mgmtnet")
    assert not net.isActive() and net.isPersistent()
    assert await down.res.check_apply(True) is True
    gone = await run_resource(VirtNetworkRes(name="mgmtnet", uri=uri, state="down", transient=True))
    assert await gone.res.check_apply(True) is False
    with pytest.raises(libvirt.libvirtError):
        outside.networkLookupByName("mgmtnet")
    assert await gone.res.check_apply(True) is True


async def test_transient_up_is_created(run_resource: Start, uri: str, outside: Any) -> None:
    running = await run_resource(network(uri, pool_range(), transient=True))
    assert await running.res.check_apply(True) is False
    net = outside.networkLookupByName("mgmtnet")
    assert net.isActive() and not net.isPersistent()
    assert entries(outside)[1] == [("192.168.42.100", "192.168.42.200")]
    assert await running.res.check_apply(True) is True


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([host("a", 7), host("b", 7)], "already virt:network:host[a]'s"),
        ([host("a", 1)], "already virt:network[mgmtnet]'s"),
        ([VirtNetworkHostRes(name="a", mac="52:54:00:00:00:01", ip="10.0.0.5/24")], "not a usable"),
        ([VirtNetworkHostRes(name="a", mac="52:54:00:00:00:01", ip="192.168.42.5/16")], "prefix"),
        ([host("a", 150), pool_range()], "holds 192.168.42.150"),
        ([pool_range(), pool_range(150, 250)], "overlaps"),
    ],
)
async def test_grouped_entries_that_do_not_fit_fail_init(
    run_resource: Start, uri: str, members: list[Any], message: str
) -> None:
    with pytest.raises(ResourceError, match=re.escape(message)):
        await run_resource(network(uri, *members))


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        (VirtNetworkRes, {"mac": "52:54:00:BD:00:01", "ip": "192.168.42.1/24"}, "mac"),
        (VirtNetworkRes, {"mac": "52:54:00:bd:00:01", "ip": "192.168.42.1"}, "ip"),
        (VirtNetworkRes, {"mac": "52:54:00:bd:00:01", "ip": "192.168.42.0/24"}, "ip"),
        (VirtNetworkRes, {"ip": "192.168.42.1/24"}, "mac"),
        (VirtNetworkRes, {"mac": "52:54:00:bd:00:01", "ip": "10.0.0.1/8", "mode": "route"}, "mode"),
        (VirtNetworkRes, {"transient": True, "startup": "enabled"}, "startup"),
        (VirtNetworkRes, {"state": "running"}, "state"),
        (VirtNetworkRes, {"uuid": "nope", "transient": True, "state": "down"}, "uuid"),
        (VirtNetworkHostRes, {"mac": "52:54:00:00:00:zz", "ip": "192.168.42.7/24"}, "mac"),
        (VirtNetworkHostRes, {"mac": "52:54:00:00:00:07", "ip": "nope"}, "ip"),
        (VirtNetworkRangeRes, {"start": "192.168.42.9", "end": "192.168.42.8"}, "start"),
        (VirtNetworkRangeRes, {"start": "192.168.42.9", "end": "x"}, "end"),
    ],
)
def test_bad_params_name_the_key(kind: type, params: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        build(kind, {"name": "n", **params}).validate()
    assert err.value.key == key


def test_hosts_and_ranges_group_into_the_network_they_name() -> None:
    """mgmt's grouping: a host or range joins the network it names, or the only one; the
    network's vertex is the outer kind whatever the order of the graph."""
    from engine.autogroup import autogroup

    a = VirtNetworkRes(name="a", mac="52:54:00:bd:00:01", ip="192.168.42.1/24")
    b = VirtNetworkRes(name="b", mac="52:54:00:bd:00:02", ip="192.168.43.1/24")
    to_b = host("h1", 7, network="b")
    anyone = pool_range()
    graph = Graph("t")
    for res in (to_b, anyone, a, b):
        graph.add(res)
    assert autogroup(graph) == 2
    assert set(graph.vertices) == {("virt:network", "a"), ("virt:network", "b")}
    assert a.grouped == [anyone] and b.grouped == [to_b]


async def test_a_transient_network_is_created_again_for_a_base_change(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await run_resource(network(uri, host("web", 7), transient=True))
    assert await first.res.check_apply(True) is False
    changed = network(uri, host("web", 7), host("db", 13), transient=True, device="br9")
    running = await run_resource(changed)
    assert await running.res.check_apply(True) is False
    assert (
        "created the network again (device virbr0 -> br9, add dhcp host 52:54:00:00:00:0d "
        "(db, 192.168.42.13))" in caplog.text
    )
    net = outside.networkLookupByName("mgmtnet")
    assert net.isActive() and not net.isPersistent()
    assert sorted(entries(outside)[0]) == [
        ("52:54:00:00:00:07", "web", "192.168.42.7"),
        ("52:54:00:00:00:0d", "db", "192.168.42.13"),
    ]
    assert await running.res.check_apply(True) is True
