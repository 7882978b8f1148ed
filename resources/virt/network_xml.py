"""libvirt network XML: what a virt:network wants, read from and written to a definition.

Pure functions (no libvirt): `Wanted` is built from the resources' parameters; `read` parses a
definition (live or persistent) into `Found`; `base_diff` says which base fields differ;
`rebase` rewrites those fields of an existing definition in place (its DHCP entries and
anything else libvirt keeps are left as they are); `build` writes a new definition. DHCP
entries are single elements (`<host .../>`, `<range .../>`) handed to libvirt's incremental
network update. ElementTree is imported on first use.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Host:
    """A static DHCP reservation: `<host mac=... name=... ip=.../>`."""

    mac: str
    name: str
    ip: str

    def xml(self) -> str:
        return f"<host mac='{self.mac}' name='{_attr(self.name)}' ip='{self.ip}'/>"

    def describe(self) -> str:
        return f"dhcp host {self.mac} ({self.name}, {self.ip})"


@dataclass(frozen=True)
class Range:
    """A dynamic DHCP pool: `<range start=... end=.../>`."""

    start: str
    end: str

    def xml(self) -> str:
        return f"<range start='{self.start}' end='{self.end}'/>"

    def describe(self) -> str:
        return f"dhcp range {self.start}-{self.end}"


@dataclass(frozen=True)
class Wanted:
    """The network a virt:network and its grouped hosts and ranges describe."""

    name: str
    uuid: str | None
    mode: str
    device: str
    mac: str
    ip: ipaddress.IPv4Interface
    hosts: tuple[Host, ...] = ()
    ranges: tuple[Range, ...] = ()


@dataclass
class Found:
    """A definition as libvirt gives it (the fields this kind manages)."""

    uuid: str | None = None
    mode: str | None = None
    device: str | None = None
    mac: str | None = None
    # Every IPv4 <ip>: (address, netmask), in document order.
    ips: list[tuple[str, str]] = field(default_factory=list)
    # The DHCP entries of the <ip> this kind owns (see `owned_ip`).
    hosts: list[Host] = field(default_factory=list)
    ranges: list[Range] = field(default_factory=list)


def _et() -> Any:
    from xml.etree import ElementTree as ET

    return ET


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")


def _is_ipv4(ip: Any) -> bool:
    family = ip.get("family")
    return family in (None, "ipv4") and ":" not in (ip.get("address") or "")


def _netmask(ip: Any) -> str:
    if ip.get("netmask"):
        return str(ip.get("netmask"))
    prefix = ip.get("prefix") or "32"
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def owned_ip(ips: list[tuple[str, str]], want: ipaddress.IPv4Interface) -> int | None:
    """The index of the <ip> this kind manages: the one with the wanted address, else the only
    IPv4 one; None if there is none; ValueError if several and none has the address (mgmt's)."""
    for i, (address, _mask) in enumerate(ips):
        if address == str(want.ip):
            return i
    if len(ips) == 1:
        return 0
    if not ips:
        return None
    raise ValueError(
        f"the network has {len(ips)} IPv4 addresses and none is {want.ip}: cannot tell which "
        "one to manage"
    )


def read(xml: str, want: ipaddress.IPv4Interface) -> Found:
    """The managed fields of a network definition."""
    root = _et().fromstring(xml)
    found = Found(
        uuid=root.findtext("uuid"),
        mode=(root.find("forward").get("mode") or "nat")
        if root.find("forward") is not None
        else None,
        device=root.find("bridge").get("name") if root.find("bridge") is not None else None,
        mac=root.find("mac").get("address") if root.find("mac") is not None else None,
    )
    ips = [ip for ip in root.findall("ip") if _is_ipv4(ip)]
    found.ips = [(str(ip.get("address")), _netmask(ip)) for ip in ips]
    index = owned_ip(found.ips, want)
    if index is not None:
        dhcp = ips[index].find("dhcp")
        if dhcp is not None:
            found.hosts = [
                Host(str(h.get("mac", "")).lower(), str(h.get("name", "")), str(h.get("ip", "")))
                for h in dhcp.findall("host")
            ]
            found.ranges = [
                Range(str(r.get("start")), str(r.get("end"))) for r in dhcp.findall("range")
            ]
    return found


def base_diff(found: Found, want: Wanted) -> list[str]:
    """The base fields (not DHCP entries) that differ: 'mac 52:.. -> 52:..'."""
    diffs = []
    if want.uuid is not None and found.uuid != want.uuid:
        diffs.append(f"uuid {found.uuid} -> {want.uuid}")
    for name, old, new in (
        ("mode", found.mode, want.mode),
        ("device", found.device, want.device),
        ("mac", found.mac, want.mac),
    ):
        if old != new:
            diffs.append(f"{name} {old} -> {new}")
    index = owned_ip(found.ips, want.ip)
    address = (str(want.ip.ip), str(want.ip.netmask))
    if index is None or found.ips[index] != address:
        old_ip = "none" if index is None else "/".join(found.ips[index])
        diffs.append(f"ip {old_ip} -> {want.ip.ip}/{want.ip.netmask}")
    return diffs


def entry_changes(
    found: Found, want: Wanted, purge_hosts: bool, purge_ranges: bool
) -> list[tuple[str, str, Host | Range]]:
    """The DHCP entry changes that make `found` as wanted: (verb, section, entry), verb "add",
    "modify" or "delete", section "host" or "range". Hosts are matched by MAC."""
    changes: list[tuple[str, str, Host | Range]] = []
    have = {h.mac: h for h in found.hosts}
    for host in want.hosts:
        old = have.get(host.mac)
        if old != host:
            changes.append(("add" if old is None else "modify", "host", host))
    if purge_hosts:
        wanted = {h.mac for h in want.hosts}
        changes += [("delete", "host", h) for h in found.hosts if h.mac not in wanted]
    changes += [("add", "range", r) for r in want.ranges if r not in found.ranges]
    if purge_ranges:
        changes += [("delete", "range", r) for r in found.ranges if r not in want.ranges]
    return changes


def rebase(
    xml: str, want: Wanted, purge_hosts: bool = False, purge_ranges: bool = False
) -> tuple[str, list[str]]:
    """`xml` with its base fields set as wanted and its DHCP entries made as wanted (the rest
    kept); also the entry changes that made, described ('add dhcp host ...')."""
    et = _et()
    root = et.fromstring(xml)

    def child(parent: Any, tag: str) -> Any:
        node = parent.find(tag)
        return node if node is not None else et.SubElement(parent, tag)

    if want.uuid is not None:
        child(root, "uuid").text = want.uuid
    child(root, "forward").set("mode", want.mode)
    child(root, "bridge").set("name", want.device)
    child(root, "mac").set("address", want.mac)
    ips = [ip for ip in root.findall("ip") if _is_ipv4(ip)]
    found = read(xml, want.ip)
    index = owned_ip(found.ips, want.ip)
    ip = ips[index] if index is not None else et.SubElement(root, "ip")
    ip.attrib.pop("prefix", None)
    ip.set("address", str(want.ip.ip))
    ip.set("netmask", str(want.ip.netmask))
    changes = entry_changes(found, want, purge_hosts, purge_ranges)
    if changes:
        dhcp = child(ip, "dhcp")
        for verb, section, entry in changes:
            for old in dhcp.findall(section):
                same_host = section == "host" and old.get("mac", "").lower() == getattr(
                    entry, "mac", None
                )
                same_range = section == "range" and (old.get("start"), old.get("end")) == (
                    getattr(entry, "start", None),
                    getattr(entry, "end", None),
                )
                if same_host or same_range:
                    dhcp.remove(old)
            if verb != "delete":
                dhcp.append(et.fromstring(entry.xml()))
    described = [f"{verb} {entry.describe()}" for verb, _section, entry in changes]
    return str(et.tostring(root, encoding="unicode")), described


def build(want: Wanted) -> str:
    """The definition of a new network. A <dhcp> element only when there is an entry: libvirt
    would otherwise start a DHCP server nobody asked for (mgmt's)."""
    uuid = f"<uuid>{want.uuid}</uuid>" if want.uuid else ""
    entries = "".join(r.xml() for r in want.ranges) + "".join(h.xml() for h in want.hosts)
    dhcp = f"<dhcp>{entries}</dhcp>" if entries else ""
    return (
        f"<network><name>{_attr(want.name)}</name>{uuid}<forward mode='{want.mode}'/>"
        f"<bridge name='{_attr(want.device)}'/><mac address='{want.mac}'/>"
        f"<ip address='{want.ip.ip}' netmask='{want.ip.netmask}'>{dhcp}</ip></network>"
    )
