"""libvirt network calls: plain blocking functions, run in a worker thread (a step's run, or
Connection.call). `observe` reads a network into an `Observed`; the others are the steps of a
virt:network plan, each taking the connection first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resources.virt.lib import load_libvirt

# libvirt's VIR_NETWORK_UPDATE_AFFECT_*: which definition an update changes.
CURRENT, LIVE, CONFIG = 0, 1, 2


@dataclass(frozen=True)
class View:
    """One definition of a network and how an update reaches it."""

    xml: str
    flags: int  # CONFIG (the persistent definition), LIVE (the running one) or CURRENT
    where: str  # " (persistent)", " (live)" or "" for the log lines


@dataclass(frozen=True)
class Observed:
    """The network as found: None instead of this means it does not exist."""

    active: bool
    persistent: bool
    autostart: bool
    views: tuple[View, ...]  # the definitions whose DHCP entries are managed
    base_xml: str  # the definition base fields are read from: persistent, else live


def observe(conn: Any, name: str) -> Observed | None:
    libvirt = load_libvirt()
    try:
        net = conn.networkLookupByName(name)
        active, persistent = bool(net.isActive()), bool(net.isPersistent())
        live = net.XMLDesc(0)
        views = _views(net, active, persistent, live)
        autostart = bool(net.autostart()) if persistent else False
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise
    return Observed(active, persistent, autostart, views, views[0].xml)


def _views(net: Any, active: bool, persistent: bool, live: str) -> tuple[View, ...]:
    """The persistent definition and the live one; a driver that cannot show the persistent
    one apart (the test driver) has one definition, updated as libvirt's CURRENT."""
    libvirt = load_libvirt()
    if not persistent:
        return (View(live, LIVE, ""),)
    try:
        inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    except libvirt.libvirtError as err:
        if err.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        return (View(live, CURRENT, ""),)
    config = View(inactive, CONFIG, " (persistent)")
    return (config, View(live, LIVE, " (live)")) if active else (config,)


def on_network(conn: Any, name: str, method: str) -> None:
    """net.<method>() (create, destroy, undefine) of the network `name`."""
    getattr(conn.networkLookupByName(name), method)()


def define(conn: Any, xml: str) -> None:
    conn.networkDefineXML(xml)


def create(conn: Any, xml: str) -> None:
    conn.networkCreateXML(xml)


def redefine(conn: Any, name: str, xml: str, start: bool) -> None:
    """Stop a running network first (a driver may keep its old definition until it stops),
    define the new one, start it again if `start`."""
    net = conn.networkLookupByName(name)
    if net.isActive():
        net.destroy()
    net = conn.networkDefineXML(xml)
    if start:
        net.create()


def recreate(conn: Any, name: str, xml: str) -> None:
    """A transient network: destroy it (it is gone) and create it from `xml`."""
    conn.networkLookupByName(name).destroy()
    conn.networkCreateXML(xml)


def update(
    conn: Any, name: str, *, verb: str, section: str, parent: int, xml: str, flags: int
) -> None:
    """One DHCP entry added, modified or deleted by libvirt's incremental update."""
    libvirt = load_libvirt()
    command = {
        "add": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        "modify": libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
        "delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
    }[verb]
    where = {
        "host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        "range": libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE,
    }[section]
    conn.networkLookupByName(name).update(command, where, parent, xml, flags)


def set_autostart(conn: Any, name: str, on: bool) -> None:
    conn.networkLookupByName(name).setAutostart(int(on))
