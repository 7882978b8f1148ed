"""A file a resource reads is not there yet: under --noop, that is a change to report.

In a graph, what a resource reads (gzip's input, json:edit's document...) is often made by a
resource before it, which `--noop` does not run. So a kind raises `Missing` for it; its
check_apply calls `would_wait(handle, err, apply, would)`: applying, the error stands (the
resource fails, naming what is missing); under noop it logs "would <would> (<what> does not
exist yet: made by an earlier resource?)" and check_apply reports a change.
"""

from __future__ import annotations

from engine.errors import ResourceError
from engine.handle import Handle


class Missing(ResourceError):
    """Something the resource reads does not exist (the message says what)."""


def would_wait(handle: Handle, err: Missing, apply: bool, would: str) -> bool:
    """Re-raise `err` when applying; under noop log the change and return False."""
    if apply:
        raise err
    handle.logger.info("would %s (%s: made by an earlier resource?)", would, err)
    return False
