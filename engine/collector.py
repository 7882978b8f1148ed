"""The cycle collector around work that makes many long-lived objects and no cyclic garbage.

Each full collection walks every tracked object: while a 10,000-resource graph is parsed,
its vertices started and checked, or stopped, a dozen full passes walked them all and found
nothing (10 of 17 s of a first run's CPU). `paused()` suspends collections for a block;
`Engine` also pauses each swap and the first pass of the vertices it starts (engine.py,
_pause_gc).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside; the collector as it was afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def lasting() -> Iterator[None]:
    """For a block whose objects live as long as the process (the `mgmt` command's imports):
    no collection inside, then everything alive is frozen (gc.freeze: later collections skip
    it). Without the freeze, the first collection after the block walked all of it at once."""
    with paused():
        yield
        gc.freeze()
