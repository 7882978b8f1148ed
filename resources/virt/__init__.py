"""virt: a libvirt domain (virtual machine): existence, persistence, run state, vCPUs, memory.

mgmt's virt. The domain is named after the resource. It is defined (or, `transient`, created)
from the parameters when missing; then its state is driven to `state`, its vCPU count to `cpus`
(hot-plugged into a running domain when `hotcpus` allows it) and its memory to `memory`.
Changes a running domain cannot take live are handled as `restartondiverge` says: `error`
(default: fail and say so), `ifneeded` (graceful shutdown, change, start again) or `ignore`
(change the persistent config for the next boot). A refresh restarts it with `restartonrefresh`.

Events: libvirt's lifecycle events (started, stopped, paused, defined...) arrive in the asyncio
loop through `libvirtaio`, never by polling. Every libvirt call runs in a worker thread
(`asyncio.to_thread`): the test driver answers in microseconds but a remote driver does a round
trip, and a graceful shutdown is awaited on events with a timeout, never by blocking the loop.
Connections are shared per URI and outlive their last user by LINGER seconds, so a graph swap
that replaces the resource keeps the connection (and the test driver's in-memory state).
See docs/resources/virt.md.

Modules (libvirt itself is imported on first use, never by importing these):
- resource.py: the `virt` kind (VirtRes), its parameters, validation and plan of steps.
- domain_xml.py: the device parameters and the XML of a new domain; memory sizes read back
  from a definition.
- calls.py: the blocking libvirt calls run in worker threads, and what they observe.
- events.py: libvirt's event loop on asyncio (libvirtaio, made safe for worker threads).
- connection.py: one shared connection and its per-domain lifecycle-callback dispatch.
- network.py: the `virt:network`, `virt:network:host` and `virt:network:range` kinds (a
  libvirt network and its DHCP entries); network_xml.py: their XML; network_calls.py: their
  blocking libvirt calls.
- pool.py: the shared connections of an engine, one per URI (`pool_of(handle.shared)`).
- auth.py: the credentials of a connection (mgmt's VirtAuth, the password never shown) and how
  a connection is opened with them.
- lib.py: the lazy import of libvirt.
"""

from __future__ import annotations

from resources.virt.auth import VirtAuth
from resources.virt.calls import Attrs, Observed
from resources.virt.connection import Connection
from resources.virt.domain_xml import (
    DEFAULT_MAXCPUS,
    DEFAULT_MEMORY,
    CDRomDevice,
    DiskDevice,
    FilesystemDevice,
    NetworkDevice,
)
from resources.virt.events import EVENTS
from resources.virt.network import (  # importing it registers the virt:network kinds
    VirtNetworkHostRes,
    VirtNetworkRangeRes,
    VirtNetworkRes,
)
from resources.virt.pool import LINGER, Pool, pool_of
from resources.virt.resource import (  # importing it registers the "virt" kind
    BOOT_DEVICES,
    FS_ACCESS,
    POLICIES,
    STATES,
    VirtRes,
)

__all__ = [
    "BOOT_DEVICES",
    "DEFAULT_MAXCPUS",
    "DEFAULT_MEMORY",
    "EVENTS",
    "FS_ACCESS",
    "LINGER",
    "POLICIES",
    "STATES",
    "Attrs",
    "CDRomDevice",
    "Connection",
    "DiskDevice",
    "FilesystemDevice",
    "NetworkDevice",
    "Observed",
    "Pool",
    "VirtAuth",
    "VirtNetworkHostRes",
    "VirtNetworkRangeRes",
    "VirtNetworkRes",
    "VirtRes",
    "pool_of",
]
