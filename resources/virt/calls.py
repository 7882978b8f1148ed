"""libvirt calls: plain blocking functions, run in a worker thread by Connection.call.

`observe` reads the domain into an `Observed`; the others are the steps of a plan, each taking
the connection or the domain (see VirtRes._conn_step and VirtRes._step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.virt.domain_xml import config_memory
from resources.virt.lib import load_libvirt


@dataclass(frozen=True)
class Attrs:
    """vCPUs and memory of one definition (live or persistent config)."""

    cpus: int
    maxcpus: int
    memory: int  # KiB
    maxmemory: int  # KiB


@dataclass(frozen=True)
class Observed:
    """The domain as found: None instead of this means it does not exist."""

    persistent: bool
    state: str  # running, paused, shutoff, crashed or pmsuspended
    live: Attrs | None  # when active
    config: Attrs | None  # when persistent

    @property
    def active(self) -> bool:
        return self.state != "shutoff"


def observe(conn: Any, name: str) -> Observed | None:
    """The domain as it is now; None if it does not exist (or vanished while being read)."""
    libvirt = load_libvirt()
    try:
        return _read(conn.lookupByName(name))
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _read(dom: Any) -> Observed:
    libvirt = load_libvirt()
    code, _reason = dom.state()
    active = bool(dom.isActive())
    state = "shutoff"
    if active:
        state = {
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_CRASHED: "crashed",
            libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
        }.get(code, "running")
    persistent = bool(dom.isPersistent())
    live = config = None
    if active:
        _state, maxmemory, memory, _cpus, _time = dom.info()
        live_flag = libvirt.VIR_DOMAIN_AFFECT_LIVE
        cpus = dom.vcpusFlags(live_flag)
        maxcpus = dom.vcpusFlags(live_flag | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        live = Attrs(cpus=cpus, maxcpus=maxcpus, memory=memory, maxmemory=maxmemory)
    if persistent:
        config_flag = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        memory, maxmemory = config_memory(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        config = Attrs(
            cpus=dom.vcpusFlags(config_flag),
            maxcpus=dom.vcpusFlags(config_flag | libvirt.VIR_DOMAIN_VCPU_MAXIMUM),
            memory=memory,
            maxmemory=maxmemory,
        )
    return Observed(persistent=persistent, state=state, live=live, config=config)


def on_domain(conn: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(conn.lookupByName(name), *args)


def define(conn: Any, xml: str) -> None:
    conn.defineXML(xml)


def create(conn: Any, xml: str, paused: bool) -> None:
    libvirt = load_libvirt()
    if not paused:
        conn.createXML(xml, 0)
        return
    try:
        conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        conn.createXML(xml, 0).suspend()  # a driver without START_PAUSED (the test driver)


def start(dom: Any, paused: bool) -> None:
    libvirt = load_libvirt()
    if not paused:
        dom.create()
        return
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        dom.create()  # a driver without START_PAUSED (the test driver)
        dom.suspend()


def persist(dom: Any) -> None:
    dom.connect().defineXML(dom.XMLDesc(load_libvirt().VIR_DOMAIN_XML_INACTIVE))


def undefine(dom: Any) -> None:
    dom.undefine()


def resume(dom: Any) -> None:
    dom.resume()


def suspend(dom: Any) -> None:
    dom.suspend()


def destroy(dom: Any) -> None:
    if dom.isActive():
        dom.destroy()


def is_active(conn: Any, name: str) -> bool:
    """Whether the domain runs; False if it is gone (a stopped transient domain)."""
    libvirt = load_libvirt()
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise


def request_shutdown(dom: Any) -> bool:
    """Ask the guest to shut down (resuming a paused one first); False if it was already off."""
    if not dom.isActive():
        return False
    if dom.state()[0] == load_libvirt().VIR_DOMAIN_PAUSED:
        dom.resume()  # a paused guest cannot act on the request
    dom.shutdown()
    return True


def set_live_cpus(dom: Any, cpus: int) -> None:
    dom.setVcpusFlags(cpus, load_libvirt().VIR_DOMAIN_AFFECT_LIVE)


def set_live_memory(dom: Any, memory: int) -> None:
    dom.setMemoryFlags(memory, load_libvirt().VIR_DOMAIN_AFFECT_LIVE)


def set_config_cpus(dom: Any, old: Attrs, cpus: int, maxcpus: int, hotpluggable: bool) -> None:
    libvirt = load_libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    count = flags | (libvirt.VIR_DOMAIN_VCPU_HOTPLUGGABLE if hotpluggable else 0)
    if maxcpus >= old.cpus:  # raise the maximum first, or lower the count first
        if maxcpus != old.maxcpus:
            dom.setVcpusFlags(maxcpus, flags | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(cpus, count)
    else:
        dom.setVcpusFlags(cpus, count)
        dom.setVcpusFlags(maxcpus, flags | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)


def set_config_memory(dom: Any, old: Attrs, memory: int) -> None:
    libvirt = load_libvirt()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if memory >= old.memory:  # raise the maximum first, or lower the current size first
        dom.setMemoryFlags(memory, flags | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(memory, flags)
    else:
        dom.setMemoryFlags(memory, flags)
        dom.setMemoryFlags(memory, flags | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
