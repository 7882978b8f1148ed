"""Domain XML: the definition of a new domain built from the parameters, and the memory sizes
read back from a domain's persistent definition. ElementTree is imported on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.params import EMPTY_IS_UNSET

DEFAULT_MAXCPUS = 32  # vCPU slots of a new domain with hotcpus when maxcpus is not set (mgmt's)
DEFAULT_MEMORY = 524288  # KiB of a new domain when memory is not set (512 MiB)
# libvirt's domain type per URI driver; any other driver's type is its name (test, lxc, xen...).
_DOMAIN_TYPES = {"qemu": "kvm", "libxl": "xen"}


# parameters of the device lists --------------------------------------------------------------


@dataclass(kw_only=True)
class DiskDevice:
    # Path of the disk image ("~" is expanded). Required.
    source: str
    # Image format given to the qemu driver, e.g. "qcow2". Default "raw".
    type: str = "raw"


@dataclass(kw_only=True)
class CDRomDevice:
    # Path of the ISO image ("~" is expanded). Required.
    source: str
    # Image format given to the qemu driver. Default "raw".
    type: str = "raw"


@dataclass(kw_only=True)
class NetworkDevice:
    # Name of the libvirt network the interface is attached to. Required.
    name: str
    # MAC address "52:54:00:xx:xx:xx". Default None (or ""): libvirt picks one when defining.
    mac: str | None = field(default=None, metadata=EMPTY_IS_UNSET)


@dataclass(kw_only=True)
class FilesystemDevice:
    # (mgmt's field order: a language struct lists them so.)
    # Access mode: passthrough, mapped or squash. Default None (or ""): libvirt's default.
    access: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Host directory shared with the guest ("~" is expanded). Required.
    source: str
    # Mount tag (qemu) or path (lxc) in the guest. Required.
    target: str
    # Share it read-only. Default false.
    read_only: bool = False


class DomainSpec(Protocol):
    """What a new domain is built from: the virt resource's parameters (VirtRes)."""

    name: str
    cpus: int | None
    maxcpus: int | None
    hotcpus: bool
    memory: int | None
    osinit: str | None
    boot: list[str]
    disk: list[DiskDevice]
    cdrom: list[CDRomDevice]
    network: list[NetworkDevice]
    filesystem: list[FilesystemDevice]


def build_domain_xml(res: DomainSpec, driver: str) -> str:
    """The libvirt XML of a new domain built from the parameters; driver is the URI's."""
    from xml.etree import ElementTree as ET

    lxc = driver == "lxc"
    root = ET.Element("domain", type=_DOMAIN_TYPES.get(driver, driver))
    ET.SubElement(root, "name").text = res.name
    memory = str(res.memory or DEFAULT_MEMORY)
    ET.SubElement(root, "memory", unit="KiB").text = memory
    ET.SubElement(root, "currentMemory", unit="KiB").text = memory
    cpus = res.cpus or 1
    maxcpus = res.maxcpus or (max(DEFAULT_MAXCPUS, cpus) if res.hotcpus else cpus)
    ET.SubElement(root, "vcpu", placement="static", current=str(cpus)).text = str(maxcpus)
    hot = res.hotcpus and not lxc
    if hot:  # vCPU 0 stays; the others can come and go
        vcpus = ET.SubElement(root, "vcpus")
        for i in range(maxcpus):
            enabled = "yes" if i < cpus else "no"
            ET.SubElement(
                vcpus, "vcpu", id=str(i), enabled=enabled, hotpluggable="yes" if i else "no"
            )
    os_ = ET.SubElement(root, "os")
    ET.SubElement(os_, "type").text = "exe" if lxc else "hvm"
    if lxc and res.osinit is not None:
        ET.SubElement(os_, "init").text = res.osinit
    for dev in res.boot:
        ET.SubElement(os_, "boot", dev=dev)
    if hot:
        ET.SubElement(ET.SubElement(root, "features"), "acpi")  # needed for CPU hot-plug
    _devices_xml(res, ET.SubElement(root, "devices"), hot)
    return ET.tostring(root, encoding="unicode")


def _devices_xml(res: DomainSpec, devices: Any, hot: bool) -> None:
    from xml.etree import ElementTree as ET

    for i, disk in enumerate(res.disk):
        elem = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(elem, "driver", name="qemu", type=disk.type)
        ET.SubElement(elem, "source", file=os.path.expanduser(disk.source))
        ET.SubElement(elem, "target", dev="vd" + _letters(i), bus="virtio")
    for i, cdrom in enumerate(res.cdrom):
        elem = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(elem, "driver", name="qemu", type=cdrom.type)
        ET.SubElement(elem, "source", file=os.path.expanduser(cdrom.source))
        ET.SubElement(elem, "target", dev="hd" + _letters(i), bus="ide")
        ET.SubElement(elem, "readonly")
    for net in res.network:
        elem = ET.SubElement(devices, "interface", type="network")
        if net.mac is not None:
            ET.SubElement(elem, "mac", address=net.mac)
        ET.SubElement(elem, "source", network=net.name)
    for fs in res.filesystem:
        elem = ET.SubElement(devices, "filesystem")
        if fs.access is not None:
            elem.set("accessmode", fs.access)
        ET.SubElement(elem, "source", dir=os.path.expanduser(fs.source))
        ET.SubElement(elem, "target", dir=fs.target)
        if fs.read_only:
            ET.SubElement(elem, "readonly")
    if hot:  # the guest agent can bring hot-plugged vCPUs online
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "source", mode="bind")
        ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")


def _letters(index: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa" (disk target names)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def config_memory(xml: str) -> tuple[int, int]:
    """(currentMemory, memory) in KiB from a domain's XML (libvirt writes them in KiB)."""
    from xml.etree import ElementTree as ET

    root = ET.fromstring(xml)
    maxmemory = int(root.findtext("memory") or 0)
    return int(root.findtext("currentMemory") or maxmemory), maxmemory
