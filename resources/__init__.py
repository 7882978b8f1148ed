"""Resource kinds: each kind is registered by one module of this package (`KINDS` says which).

Importing this package lets `engine.resource.lookup(kind)` import a kind's module on first use,
so a run imports only the kinds its graph uses; `load_all()` imports every one. Each module
keeps its heavy libraries (D-Bus, libvirt...) behind lazy imports too.
"""

from __future__ import annotations

import importlib

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
    "svc": "svc",
    "hostname": "hostname",
    "cron": "cron",
    "kv": "kv",
}
MODULES = tuple(sorted(set(KINDS.values())))


def load_all() -> None:
    """Import every resource module so that every kind is registered."""
    for module in MODULES:
        importlib.import_module(f"resources.{module}")


def load(kind: str) -> None:
    """Import the module that registers `kind`."""
    importlib.import_module(f"resources.{KINDS[kind]}")


set_loader(load, tuple(KINDS))
