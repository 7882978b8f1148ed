"""Resource kinds: module `resources.<kind>` registers kind `<kind>` with `engine.register`.

Importing this package lets `engine.resource.lookup(kind)` import a kind's module on first use,
so a run imports only the kinds its graph uses; `load_all()` imports every one. Each module
keeps its heavy libraries (D-Bus, libvirt...) behind lazy imports too.
"""

from __future__ import annotations

import importlib

from engine.resource import set_loader

MODULES = (
    "noop",
    "print",
    "msg",
    "timer",
    "file",
    "exec",
    "pkg",
    "user",
    "group",
    "virt",
    "svc",
    "hostname",
    "cron",
    "kv",
)


def load_all() -> None:
    """Import every resource module so that every kind is registered."""
    for module in MODULES:
        importlib.import_module(f"resources.{module}")


def load(kind: str) -> None:
    """Import the module that registers `kind`."""
    importlib.import_module(f"resources.{kind}")


set_loader(load, MODULES)
