"""Resource kinds. Each module registers its kind with `engine.resource.register`.

`load_all()` imports every kind module; each keeps its heavy libraries behind lazy imports so
that loading the registry stays cheap (cron runs start in a few tens of milliseconds).
"""

from __future__ import annotations

import importlib

MODULES = ("noop", "print", "msg", "timer", "file", "exec")


def load_all() -> None:
    """Import every resource module so that every kind is registered."""
    for module in MODULES:
        importlib.import_module(f"resources.{module}")
