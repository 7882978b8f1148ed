"""virt: against libvirt's real test driver (no mocks); events awaited with timeouts, never slept on.

Isolation: most tests use a custom test-driver node file of their own (`test:///<tmp>/node.xml`):
every *connection* to such a URI has its own in-memory state, and all resources of one URI share
the pool's connection, so the test acts "from outside" through that same pooled connection. The
tests of a domain destroyed by someone else use `test:///default`, whose state every connection
of the process shares, through a second connection of the test's own (domain names are unique).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import libvirt
import pytest

from engine.engine import Engine, Status
from engine.errors import ResourceError, ValidationError
from engine.events import VertexChanged
from engine.graph import Graph
from engine.handle import Shared
from engine.params import build
from resources import virt
from resources.virt import DiskDevice, FilesystemDevice, NetworkDevice, Pool, VirtRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
MAXIMUM = libvirt.VIR_DOMAIN_VCPU_MAXIMUM


@pytest.fixture
def pool(engine_shared: Shared) -> Pool:
    """The pool of the test's resources (fresh for every test, closed at its end: no
    test-driver state leaks)."""
    return virt.pool_of(engine_shared)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    """A test-driver URI whose state is private to this test (and to one connection)."""
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    return f"test://{node}"


@pytest.fixture
async def outside(pool: Pool, uri: str) -> AsyncIterator[Any]:
    """The pooled connection of `uri`: the state the resources see, for acting from outside."""
    async with pool.connection(uri) as conn:
        yield conn.conn


@pytest.fixture
def default_outside() -> Any:
    """A connection of the test's own to test:///default (shared state within the process)."""
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def vm(uri: str, name: str = "vm1", **params: Any) -> VirtRes:
    params.setdefault("shutdowntimeout", 5)
    return VirtRes(name=name, uri=uri, **params)


def unique() -> str:
    return f"vm-{uuid.uuid4().hex[:8]}"


def boot_id(conn: Any, name: str = "vm1") -> int:
    """The id of the domain's current run: the test driver gives every start a new one (a fresh
    lookup: a domain object keeps the id it was looked up with)."""
    return int(conn.lookupByName(name).ID())


def cpus(dom: Any, flags: int = LIVE) -> int:
    return int(dom.vcpusFlags(flags))


def plain_xml(name: str, extra: str = "", vcpu: str = "<vcpu current='2'>8</vcpu>") -> str:
    """A domain defined by someone else (not from our parameters)."""
    return (
        f"<domain type='test'><name>{name}</name><memory unit='KiB'>262144</memory>{vcpu}"
        f"<os><type>hvm</type></os>{extra}</domain>"
    )


class Lifecycle:
    """The test's own lifecycle-event subscription on a connection: awaitable events."""

    def __init__(self, conn: Any, name: str) -> None:
        self.events: asyncio.Queue[int] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_event(_c: Any, dom: Any, event: int, _detail: int, _o: Any) -> None:
            if dom.name() == name:
                loop.call_soon_threadsafe(self.events.put_nowait, event)

        self.conn = conn
        self.cid = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None
        )

    async def wait(self, event: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.events.get() != event:
                pass

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self.cid)


async def new_event(running: Running, before: int) -> None:
    """Wait (bounded) for an event after the first `before` ones."""
    while running.handle.events == before:
        await running.handle.next_event()


async def flush_events(pool: Pool, uri: str) -> None:
    """Wait until every lifecycle event so far has been dispatched: libvirt delivers them in
    order, so once a marker domain's event arrives, all earlier ones have been handed out."""
    async with pool.connection(uri) as conn:
        arrived = asyncio.Event()
        unsubscribe = await conn.subscribe("marker", arrived.set)
        try:
            conn.conn.defineXML(plain_xml("marker")).undefine()
            async with asyncio.timeout(5):
                await arrived.wait()
        finally:
            await unsubscribe()


# validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ({"cpus": 4, "maxcpus": 2}, "cpus", "4 is more than maxcpus (2)"),
        ({"state": "stopped"}, "state", "expected one of running, paused, shutoff"),
        ({"restartondiverge": "maybe"}, "restartondiverge", "expected one of ignore"),
        ({"cpus": 0}, "cpus", "must be >= 1"),
        ({"memory": 0}, "memory", "must be >= 1"),
        ({"boot": ["usb"]}, "boot[0]", "expected one of fd, hd, cdrom, network"),
        ({"disk": [DiskDevice(source="")]}, "disk[0].source", "must not be empty"),
        ({"network": [NetworkDevice(name="default", mac="nope")]}, "network[0].mac", "MAC"),
        (
            {"filesystem": [FilesystemDevice(source="/a", target="b", access="all")]},
            "filesystem[0].access",
            "passthrough",
        ),
        ({"osinit": "/sbin/init"}, "osinit", "only an lxc:// URI"),
        ({"uri": "nowhere"}, "uri", "expected a libvirt URI"),
        ({"shutdowntimeout": -1}, "shutdowntimeout", "must be >= 0"),
    ],
)
def test_bad_params_are_refused(params: dict[str, Any], key: str, message: str) -> None:
    params.setdefault("uri", "test:///default")
    with pytest.raises(ValidationError) as err:
        VirtRes(name="vm1", **params).validate()
    assert err.value.key == key
    assert message in err.value.message


def test_bad_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="no '/'"):
        VirtRes(name="a/b").validate()


def test_graph_file_params_build_nested_devices() -> None:
    res = build(
        VirtRes,
        {
            "name": "vm1",
            "uri": "qemu:///session",
            "cpus": 2,
            "disk": [{"source": "~/img.qcow2", "type": "qcow2"}],
            "network": [{"name": "default"}],
            "filesystem": [{"source": "/srv", "target": "srv", "read_only": True}],
        },
    )
    res.validate()
    assert res.disk == [DiskDevice(source="~/img.qcow2", type="qcow2")]
    with pytest.raises(ValidationError) as err:
        build(VirtRes, {"name": "vm1", "disk": [{"sorce": "/x"}]})
    assert err.value.key == "disk[0].sorce"
    assert "did you mean 'source'" in err.value.message


def test_domain_xml_has_the_parameters() -> None:
    res = VirtRes(
        name="vm1",
        cpus=2,
        maxcpus=4,
        memory=131072,
        boot=["hd", "cdrom"],
        disk=[DiskDevice(source="/img/a.qcow2", type="qcow2"), DiskDevice(source="/img/b")],
        cdrom=[virt.CDRomDevice(source="/iso/x.iso")],
        network=[NetworkDevice(name="default", mac="52:54:00:00:00:01")],
        filesystem=[FilesystemDevice(source="/srv", target="srv", read_only=True)],
    )
    root = ET.fromstring(res.domain_xml())
    assert root.get("type") == "kvm"  # qemu:///system
    assert root.findtext("name") == "vm1"
    vcpu = root.find("vcpu")
    assert vcpu is not None and (vcpu.get("current"), vcpu.text) == ("2", "4")
    enabled = [(v.get("enabled"), v.get("hotpluggable")) for v in root.iter("vcpu") if v.get("id")]
    assert enabled == [("yes", "no"), ("yes", "yes"), ("no", "yes"), ("no", "yes")]
    assert [b.get("dev") for b in root.iter("boot")] == ["hd", "cdrom"]
    assert root.findtext("memory") == root.findtext("currentMemory") == "131072"
    targets = [t.get("dev") for t in root.iter("target") if t.get("dev")]
    assert targets == ["vda", "vdb", "hda"]
    assert root.find("features/acpi") is not None
    assert root.find("devices/interface/mac").get("address") == "52:54:00:00:00:01"  # type: ignore[union-attr]
    assert root.find("devices/filesystem/readonly") is not None


def test_domain_xml_without_hotcpus_and_for_lxc() -> None:
    root = ET.fromstring(VirtRes(name="c", cpus=3, hotcpus=False).domain_xml())
    assert root.find("vcpus") is None and root.find("features") is None
    assert root.find("vcpu").text == "3"  # type: ignore[union-attr]
    lxc = VirtRes(name="c", uri="lxc:///system", osinit="/sbin/init", cpus=1)
    root = ET.fromstring(lxc.domain_xml())
    assert (root.get("type"), root.findtext("os/type"), root.findtext("os/init")) == (
        "lxc",
        "exe",
        "/sbin/init",
    )


# the idempotency timeline ---------------------------------------------------------------------


async def test_define_and_start_then_nothing_to_do(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await run_resource(vm(uri, state="running", cpus=2, maxcpus=4, memory=131072))
    assert await running.res.check_apply(True) is False
    dom = outside.lookupByName("vm1")
    assert dom.isActive() and dom.isPersistent()
    assert (cpus(dom), cpus(dom, LIVE | MAXIMUM), dom.info()[2]) == (2, 4, 131072)
    assert "virt[vm1]: defined" in caplog.text and "virt[vm1]: started" in caplog.text
    assert await running.res.check_apply(True) is True
    assert "nothing to do: domain running, persistent, 2/4 cpus, 131072 KiB" in caplog.text


async def test_noop_changes_nothing(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    running = await run_resource(vm(uri, state="running", cpus=2))
    assert await running.res.check_apply(False) is False
    assert await running.res.check_apply(False) is False
    assert outside.listAllDomains() == []
    assert "would define the domain" in caplog.text and "would start the domain" in caplog.text
    outside.defineXML(plain_xml("vm1"))
    caplog.clear()
    assert await running.res.check_apply(False) is False
    assert not outside.lookupByName("vm1").isActive()
    assert "would start the domain" in caplog.text


async def test_drift_is_detected_and_repaired(
    pool: Pool, run_resource: Start, uri: str, outside: Any
) -> None:
    running = await run_resource(vm(uri, state="running"))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    await flush_events(pool, uri)
    before = running.handle.events
    outside.lookupByName("vm1").destroy()
    await new_event(running, before)  # the libvirt lifecycle event reached the watch
    assert await running.res.check_apply(True) is False
    assert outside.lookupByName("vm1").isActive()
    assert await running.res.check_apply(True) is True
    await flush_events(pool, uri)
    before = running.handle.events
    outside.lookupByName("vm1").undefine()  # now transient (it runs)
    await new_event(running, before)
    assert await running.res.check_apply(True) is False
    assert outside.lookupByName("vm1").isPersistent()


async def test_state_unmanaged_only_defines(run_resource: Start, uri: str, outside: Any) -> None:
    running = await run_resource(vm(uri))
    assert await running.res.check_apply(True) is False
    assert not outside.lookupByName("vm1").isActive()
    outside.lookupByName("vm1").create()
    assert await running.res.check_apply(True) is True  # running is fine too


# run states -------------------------------------------------------------------------------------


async def test_pause_and_resume(run_resource: Start, uri: str, outside: Any) -> None:
    paused = await run_resource(vm(uri, state="paused"))
    assert await paused.res.check_apply(True) is False  # defined, started paused
    dom = outside.lookupByName("vm1")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert await paused.res.check_apply(True) is True
    running = await run_resource(vm(uri, name="vm1", state="running"), watch=False)
    assert await running.res.check_apply(True) is False
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    await paused.handle.next_event()  # resumed: an event for the paused resource
    assert await paused.res.check_apply(True) is False
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED


async def test_shutoff_shuts_down_gracefully(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outside.defineXML(plain_xml("vm1")).create()
    running = await run_resource(vm(uri, state="shutoff"))
    assert await running.res.check_apply(True) is False
    assert not outside.lookupByName("vm1").isActive()
    assert "shut down: done" in caplog.text
    assert await running.res.check_apply(True) is True


async def test_shutdown_ignored_by_the_guest_ends_in_destroy(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # on_poweroff=restart: the test driver reboots instead of stopping (a guest ignoring ACPI).
    caplog.set_level(logging.INFO)
    outside.defineXML(plain_xml("vm1", "<on_poweroff>restart</on_poweroff>")).create()
    running = await run_resource(vm(uri, state="shutoff", shutdowntimeout=0.2))
    assert await running.res.check_apply(True) is False
    assert not outside.lookupByName("vm1").isActive()
    assert "destroyed, it did not shut down within 0.2s" in caplog.text


async def test_shutdowntimeout_zero_destroys_at_once(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outside.defineXML(plain_xml("vm1", "<on_poweroff>restart</on_poweroff>")).create()
    running = await run_resource(vm(uri, state="shutoff", shutdowntimeout=0))
    assert await running.res.check_apply(True) is False
    assert "destroyed (shutdowntimeout is 0)" in caplog.text


async def test_transient_domain_and_absence(run_resource: Start, uri: str, outside: Any) -> None:
    running = await run_resource(vm(uri, state="running", transient=True))
    assert await running.res.check_apply(True) is False
    dom = outside.lookupByName("vm1")
    assert dom.isActive() and not dom.isPersistent()
    assert await running.res.check_apply(True) is True
    absent = await run_resource(vm(uri, name="vm1", state="shutoff", transient=True), watch=False)
    assert await absent.res.check_apply(True) is False
    assert outside.listAllDomains() == []
    assert await absent.res.check_apply(True) is True


async def test_transient_paused(run_resource: Start, uri: str, outside: Any) -> None:
    running = await run_resource(vm(uri, state="paused", transient=True))
    assert await running.res.check_apply(True) is False
    assert outside.lookupByName("vm1").state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert await running.res.check_apply(True) is True


async def test_persistence_is_converted_both_ways(
    run_resource: Start, uri: str, outside: Any
) -> None:
    outside.defineXML(plain_xml("vm1")).create()
    transient = await run_resource(vm(uri, state="running", transient=True), watch=False)
    assert await transient.res.check_apply(True) is False
    dom = outside.lookupByName("vm1")
    assert dom.isActive() and not dom.isPersistent()  # undefined, still running
    persistent = await run_resource(vm(uri, state="running"), watch=False)
    assert await persistent.res.check_apply(True) is False
    assert dom.isActive() and dom.isPersistent()
    assert await persistent.res.check_apply(True) is True


async def test_transient_wanted_for_a_defined_off_domain_creates_it(
    run_resource: Start, uri: str, outside: Any
) -> None:
    outside.defineXML(plain_xml("vm1"))
    running = await run_resource(vm(uri, state="running", transient=True), watch=False)
    assert await running.res.check_apply(True) is False
    dom = outside.lookupByName("vm1")
    assert dom.isActive() and not dom.isPersistent()


# vCPUs and memory -------------------------------------------------------------------------------


async def test_cpus_are_hot_plugged_into_a_running_domain(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outside.defineXML(plain_xml("vm1")).create()
    dom = outside.lookupByName("vm1")
    started = boot_id(outside)
    running = await run_resource(vm(uri, state="running", cpus=4))
    assert await running.res.check_apply(True) is False
    assert (cpus(dom), cpus(dom, CONFIG), boot_id(outside)) == (4, 4, started)
    assert "cpus hot-plugged: 2 -> 4" in caplog.text
    assert "persistent config: cpus 2 -> 4" in caplog.text
    assert await running.res.check_apply(True) is True
    fewer = await run_resource(vm(uri, name="vm1", state="running", cpus=1), watch=False)
    assert await fewer.res.check_apply(True) is False
    assert (cpus(dom), boot_id(outside)) == (1, started)
    assert "cpus hot-unplugged: 4 -> 1" in caplog.text


async def test_cpus_of_a_paused_domain_change_live(
    run_resource: Start, uri: str, outside: Any
) -> None:
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    dom.suspend()
    running = await run_resource(vm(uri, state="paused", cpus=3), watch=False)
    assert await running.res.check_apply(True) is False
    assert cpus(dom) == 3 and dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED


async def test_cpus_without_hotcpus_need_a_restart_error_by_default(
    run_resource: Start, uri: str, outside: Any
) -> None:
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    running = await run_resource(vm(uri, state="running", cpus=4, hotcpus=False), watch=False)
    with pytest.raises(
        ResourceError, match=r"cpus: 2 -> 4 with hotcpus false: that needs a restart"
    ):
        await running.res.check_apply(True)
    with pytest.raises(ResourceError, match="restartondiverge is 'error'"):
        await running.res.check_apply(False)
    assert cpus(dom) == 2


async def test_restartondiverge_ifneeded_restarts(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    started = boot_id(outside)
    res = vm(uri, state="running", cpus=4, hotcpus=False, restartondiverge="ifneeded")
    running = await run_resource(res, watch=False)
    assert await running.res.check_apply(True) is False
    assert dom.isActive() and boot_id(outside) != started
    assert (cpus(dom), cpus(dom, CONFIG)) == (4, 4)
    assert "shut down to restart it (cpus: 2 -> 4 with hotcpus false): done" in caplog.text
    assert await running.res.check_apply(True) is True


async def test_restartondiverge_ignore_changes_the_config_only(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    res = vm(uri, state="running", cpus=4, hotcpus=False, restartondiverge="ignore")
    running = await run_resource(res, watch=False)
    assert await running.res.check_apply(True) is False
    assert (cpus(dom), cpus(dom, CONFIG)) == (2, 4)
    assert await running.res.check_apply(True) is True
    assert "restart needed but ignored" in caplog.text


async def test_cpus_above_the_slots_of_a_running_domain(
    run_resource: Start, uri: str, outside: Any
) -> None:
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    running = await run_resource(vm(uri, state="running", cpus=10), watch=False)
    with pytest.raises(ResourceError, match="cpus: 10 is more than the running domain's 8"):
        await running.res.check_apply(True)
    restart = vm(uri, state="running", cpus=10, restartondiverge="ifneeded")
    running = await run_resource(restart, watch=False)
    assert await running.res.check_apply(True) is False
    assert (cpus(dom), cpus(dom, LIVE | MAXIMUM)) == (10, 10)


async def test_maxcpus_change_needs_a_restart(run_resource: Start, uri: str, outside: Any) -> None:
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    res = vm(uri, state="running", maxcpus=16, restartondiverge="ifneeded")
    running = await run_resource(res, watch=False)
    assert await running.res.check_apply(True) is False
    assert (cpus(dom), cpus(dom, LIVE | MAXIMUM)) == (2, 16)
    assert await running.res.check_apply(True) is True


async def test_config_of_a_domain_that_is_off(run_resource: Start, uri: str, outside: Any) -> None:
    dom = outside.defineXML(plain_xml("vm1"))
    running = await run_resource(vm(uri, state="shutoff", cpus=12, memory=131072), watch=False)
    assert await running.res.check_apply(True) is False
    assert (cpus(dom, CONFIG), cpus(dom, CONFIG | MAXIMUM)) == (12, 12)
    assert (dom.info()[1], dom.info()[2]) == (131072, 131072)
    assert not dom.isActive()
    assert await running.res.check_apply(True) is True
    lower = await run_resource(vm(uri, state="shutoff", cpus=1, maxcpus=2), watch=False)
    assert await lower.res.check_apply(True) is False
    assert (cpus(dom, CONFIG), cpus(dom, CONFIG | MAXIMUM)) == (1, 2)


async def test_memory_is_ballooned_live(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    dom = outside.defineXML(plain_xml("vm1"))
    dom.create()
    running = await run_resource(vm(uri, state="running", memory=131072), watch=False)
    assert await running.res.check_apply(True) is False
    assert dom.info()[2] == 131072 and dom.isActive()
    assert "memory ballooned: 262144 -> 131072 KiB" in caplog.text
    assert await running.res.check_apply(True) is True
    more = await run_resource(vm(uri, state="running", memory=1048576), watch=False)
    with pytest.raises(ResourceError, match="memory: 1048576 KiB is more than"):
        await more.res.check_apply(True)


# refresh -----------------------------------------------------------------------------------------


async def test_restartonrefresh_restarts_on_a_refresh(
    run_resource: Start, uri: str, outside: Any
) -> None:
    running = await run_resource(vm(uri, state="running", restartonrefresh=True))
    assert await running.res.check_apply(True) is False
    started = boot_id(outside)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is False
    assert outside.lookupByName("vm1").isActive() and boot_id(outside) != started


async def test_refresh_without_restartonrefresh_does_nothing(
    run_resource: Start, uri: str, outside: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await run_resource(vm(uri, state="running"))
    assert await running.res.check_apply(True) is False
    started = boot_id(outside)
    running.handle.refresh_flag = True
    assert await running.res.check_apply(True) is True
    assert boot_id(outside) == started
    assert "refresh ignored: restartonrefresh is false" in caplog.text


# events, connections, callbacks ---------------------------------------------------------------


async def test_destroyed_from_outside_is_brought_back(
    run_resource: Start, default_outside: Any
) -> None:
    # test:///default: the test's own connection shares the state of the resource's connection.
    name = unique()
    running = await run_resource(vm("test:///default", name=name, state="running"))
    try:
        assert await running.res.check_apply(True) is False
        default_outside.lookupByName(name).destroy()
        await running.handle.next_event()
        assert await running.res.check_apply(True) is False
        assert default_outside.lookupByName(name).isActive()
    finally:
        dom = default_outside.lookupByName(name)
        dom.destroy()
        dom.undefine()


async def test_events_of_other_domains_are_not_ours(
    pool: Pool, run_resource: Start, uri: str, outside: Any
) -> None:
    outside.defineXML(plain_xml("vm1")).create()
    await flush_events(pool, uri)  # vm1's own events are past
    running = await run_resource(vm(uri, state="running"))
    assert await running.res.check_apply(True) is True
    before = running.handle.events
    other = outside.defineXML(plain_xml("other"))
    other.create()
    other.destroy()
    await flush_events(pool, uri)
    assert await running.handle.no_event(0.1)
    assert running.handle.events == before
    outside.lookupByName("vm1").suspend()  # but ours are
    await running.handle.next_event()


async def test_callbacks_are_released_on_cleanup(pool: Pool, run_resource: Start, uri: str) -> None:
    async with pool.connection(uri) as conn:
        assert conn.callbacks() == conn.subscribers() == 0
        first = await run_resource(vm(uri, name="a", state="running"))
        second = await run_resource(vm(uri, name="b", state="running"))
        # One shared connection:
        assert first.res._lease.conn is conn and second.res._lease.conn is conn
        assert (conn.callbacks(), conn.subscribers()) == (1, 2)  # one libvirt callback, fanned out
        assert await first.res.check_apply(True) is False  # a shutdown waiter comes and goes
        for running in (first, second):
            assert running.task is not None
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
            running.task = None
            await running.res.cleanup()
            await running.handle.run_cleanups()
        assert conn.callbacks() == conn.subscribers() == 0
        assert conn.users == 1  # only ours: both resources released it
    assert not virt.EVENTS.impl.callbacks  # libvirt's dispatch timer is gone too


async def test_connection_lingers_for_the_next_user(pool: Pool, uri: str) -> None:
    async with pool.connection(uri) as first:
        pass
    assert first.linger is not None  # closed only after LINGER seconds unused
    async with pool.connection(uri) as second:
        assert second is first and first.linger is None
    await pool.close_idle()
    async with pool.connection(uri) as third:
        assert third is not first


async def test_lost_connection_fails_the_watch_and_check_apply_reconnects(
    pool: Pool, run_resource: Start, uri: str
) -> None:
    running = await run_resource(vm(uri, state="running"))
    assert await running.res.check_apply(True) is False
    old = running.res._lease.conn
    assert old is not None and running.task is not None
    pool._lost(old, libvirt.VIR_CONNECT_CLOSE_REASON_EOF)  # what libvirt's close callback does
    with pytest.raises(ResourceError, match=r"libvirt connection to test://.* lost: end of file"):
        async with asyncio.timeout(5):
            await running.task
    assert await running.res.check_apply(True) is False  # a new connection (a new test state)
    assert running.res._lease.conn is not old and old.closed


async def test_cannot_connect_is_a_clear_error(run_resource: Start, tmp_path: Path) -> None:
    res = vm(f"test://{tmp_path}/missing.xml", state="running")
    with pytest.raises(ResourceError, match="cannot connect to test://"):
        await run_resource(res)


# auth -----------------------------------------------------------------------------------------

SECRET = "pw-Zq8v-never-shown"


@pytest.fixture
def auth_uri(tmp_path: Path) -> str:
    """A test-driver node that asks for credentials (libvirt's test driver checks them)."""
    node = tmp_path / "auth-node.xml"
    node.write_text(f"<node><auth><user password='{SECRET}'>alice</user></auth></node>\n")
    return f"test://{node}"


async def test_auth_opens_a_connection_that_asks_for_credentials(
    run_resource: Start, pool: Pool, auth_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """mgmt's `auth`: the username and password answer libvirt's questions; the password is
    in no log line, no error and no repr of the resource."""
    caplog.set_level(logging.DEBUG)
    auth = virt.VirtAuth(username="alice", password=SECRET)
    running = await run_resource(vm(auth_uri, state="running", auth=auth))
    assert await running.res.check_apply(True) is False
    assert await running.res.check_apply(True) is True
    async with pool.connection(auth_uri, auth) as conn:  # the same (shared) connection
        assert conn.conn.lookupByName("vm1").isActive()
    wrong = vm(auth_uri, name="vm2", auth=virt.VirtAuth(username="alice", password="nope"))
    with pytest.raises(ResourceError, match="authentication failed") as err:
        await run_resource(wrong)
    without = vm(auth_uri, name="vm3")
    with pytest.raises(ResourceError, match="cannot connect to test://"):
        await run_resource(without)
    shown = [caplog.text, str(err.value), repr(running.res), str(running.res.params())]
    assert all(SECRET not in text and "nope" not in text for text in shown)
    assert "password=<set>" in repr(running.res)


def test_auth_from_a_graph_file_and_the_language_struct() -> None:
    res = build(VirtRes, {"name": "vm1", "auth": {"username": "u", "password": SECRET}})
    assert res.auth == virt.VirtAuth(username="u", password=SECRET)
    with pytest.raises(ValidationError) as err:
        build(VirtRes, {"name": "vm1", "auth": {"user": "u"}})
    assert err.value.key == "auth.user"


async def test_libvirt_calls_in_threads_are_safe_for_the_loop(
    run_resource: Start, uri: str, outside: Any
) -> None:
    # In debug mode asyncio refuses loop calls from another thread: libvirt arms its event timer
    # from the worker thread that defines the domain; the event must still arrive.
    asyncio.get_running_loop().set_debug(True)
    try:
        running = await run_resource(vm(uri, state="running"))
        assert await running.res.check_apply(True) is False
        await running.handle.next_event()
        outside.lookupByName("vm1").destroy()
        await running.handle.next_event()
    finally:
        asyncio.get_running_loop().set_debug(False)


# with the engine ---------------------------------------------------------------------------------


def one_vm(name: str, **params: Any) -> Graph:
    graph = Graph("virt")
    graph.add(VirtRes(name=name, uri="test:///default", state="running", maxcpus=8, **params))
    return graph


async def settled(eng: Engine, key: tuple[str, str], timeout: float = 5.0) -> None:
    """Wait (on engine notifications) until the vertex is OK and has nothing pending."""
    changed = asyncio.Event()
    unsubscribe = eng.listeners.subscribe(VertexChanged, lambda _event: changed.set())

    def done() -> bool:
        vertex = eng.vertices[key]
        return vertex.status is Status.OK and vertex.state_ok and not vertex.dirty.is_set()

    try:
        async with asyncio.timeout(timeout):
            while not done():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


async def test_engine_brings_back_a_destroyed_domain_and_hot_plugs_on_swap(
    tmp_path: Path, default_outside: Any
) -> None:
    name = unique()
    key = ("virt", name)
    eng = Engine(hostname="test", prefix=tmp_path)
    try:
        await eng.apply(one_vm(name, cpus=2))
        await settled(eng, key)
        dom = default_outside.lookupByName(name)
        assert dom.isActive() and cpus(dom) == 2
        events = Lifecycle(default_outside, name)
        try:
            dom.destroy()
            await events.wait(libvirt.VIR_DOMAIN_EVENT_STARTED)  # the engine started it again
            started = boot_id(default_outside, name)
            old = eng.vertices[key]
            await eng.apply(one_vm(name, cpus=4))  # a graph swap: a new vertex
            assert eng.vertices[key] is not old
            await settled(eng, key)
            assert cpus(dom) == 4 and boot_id(default_outside, name) == started  # not restarted
        finally:
            events.close()
    finally:
        await eng.stop(graceful=True)
        dom = default_outside.lookupByName(name)
        dom.destroy()
        dom.undefine()
