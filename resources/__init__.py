"""Resource kinds: each kind is registered by one module of this package (`KINDS` says which).

Importing this package lets `engine.resource.lookup(kind)` import a kind's module on first use,
so a run imports only the kinds its graph uses; `load_all()` imports every one. Each module
keeps its heavy libraries (D-Bus, libvirt...) behind lazy imports too.
"""

from __future__ import annotations

import importlib
import os
import sys

from engine import codestamp
from engine.resource import set_loader

# Every shipped kind and the module `resources.<module>` that registers it. A kind's module is
# named after it; kinds with a ':' (mgmt's "http:server:file") use '_' instead, and a family of
# kinds may share one module (name each kind here).
KINDS: dict[str, str] = {
    "noop": "noop",
    "print": "print",
    "msg": "msg",
    "timer": "timer",
    "file": "file",
    "exec": "exec",
    "pkg": "pkg",
    "user": "user",
    "group": "group",
    "virt": "virt",
    "virt:network": "virt",
    "virt:network:host": "virt",
    "virt:network:range": "virt",
    "svc": "svc",
    "hostname": "hostname",
    "host": "host",
    "cron": "cron",
    "kv": "kv",
    "gzip": "gzip",
    "tar": "tar",
    "sysctl": "sysctl",
    "json:edit": "json_edit",
    "mount": "mount",
    "gsettings": "gsettings",
    "augeas": "augeas",
    "net": "net",
    "test": "test",
    "value": "value",
    "http:server": "http_server",
    "http:server:file": "http_server",
    "http:server:flag": "http_server",
    "http:server:proxy": "http_server_proxy",
    "http:server:ui": "http_server_ui",
    "http:server:ui:input": "http_server_ui",
    "http:client": "http_client",
    "tftp:server": "tftp",
    "tftp:file": "tftp",
    "dhcp:server": "dhcp",
    "dhcp:host": "dhcp",
    "dhcp:range": "dhcp",
    "schedule": "schedule",
    "line": "line",
    "exit": "exit",
    "password": "password",
    "ssh:authorized_key": "ssh_authorized_key",
    "deploy:tar": "deploy_tar",
    "remote": "remote",
}
MODULES = tuple(sorted(set(KINDS.values())))

# mgmt's kinds that this version does not ship, and why: a graph or program using one is
# refused at check time with "kind X is not supported by this version: <why>".
_NO_DOCKER = "it needs a Docker engine, and none can run where this version is tested"
_NO_FWUPD = "it needs the fwupd daemon and firmware devices, absent where this version is tested"
_NO_BMC = "it needs a baseboard management controller (Redfish, IPMI) to test against"
_NO_DHCP = "a DHCP server was not built: it could only be tested in network namespaces"
UNSUPPORTED: dict[str, str] = {
    "nspawn": "it needs systemd-machined and systemd as PID 1, absent where this version is tested",
    "docker:container": _NO_DOCKER,
    "docker:image": _NO_DOCKER,
    "docker:network": _NO_DOCKER,
    "fwupd:device": _NO_FWUPD,
    "fwupd:remote": _NO_FWUPD,
    "fwupd:system": _NO_FWUPD,
    "consul:kv": "it needs a Consul cluster; this version's cluster store is etcd (use kv)",
    "aws:ec2": "it needs AWS credentials and network access to AWS, which this version cannot test",
    "bmc:power": _NO_BMC,
    "bmc:firmware": _NO_BMC,
    "cloudflare:dns": "it needs a Cloudflare account and network access, which this version "
    "cannot test",
    "config:etcd": "it tunes mgmt's embedded etcd; this version's cluster is configured by flags "
    "(--ideal-cluster-size, --etcd-*: README.md)",
    "deploy:sync": "it is not built yet",
    "firewalld": "it needs firewalld on the system bus, absent where this version is tested",
    "fwattr": "it needs the firmware attributes of real hardware, absent where this version is "
    "tested",
    "hetzner:vm": "it needs a Hetzner account and network access, which this version cannot test",
    "panic": "it is a testing kind of mgmt's that fails on purpose (use exec or exit)",
    "pippet": "it runs Puppet resources through mgmt's Puppet bridge; run a manifest with the "
    "puppet front-end instead (mgmt run puppet FILE.pp: docs/puppet.md)",
    "virt:builder": "it is not built yet (virt takes a prepared disk image)",
}


def load_all() -> None:
    """Import every resource module so that every kind is registered."""
    for module in MODULES:
        importlib.import_module(f"resources.{module}")


def load(kind: str) -> None:
    """Import the module that registers `kind`; if it (or a module it imported) changed since
    the process started, say that mgmt was upgraded under it (engine.codestamp)."""
    module = KINDS[kind]
    before = set(sys.modules)
    try:
        importlib.import_module(f"resources.{module}")
    finally:  # also when the new module fails in the old process (ImportError): it is gone
        here = __path__[0]  # from sys.modules then, its file is named here
        own = [os.path.join(here, f"{module}.py"), os.path.join(here, module, "__init__.py")]
        codestamp.check([*own, *codestamp.new_modules(before)])


set_loader(load, tuple(KINDS), UNSUPPORTED)
