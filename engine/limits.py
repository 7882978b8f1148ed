"""How large a graph a front-end may build (`--max-resources`, docs/operations.md#graph-limits).

One value per process: each command (`mgmt run`, `check`, `deploy`) sets it from its option
once, and every graph builder (mcl's evaluation, YAML graph files, Puppet's catalogs) counts
against it while it builds, so a runaway program fails at the limit instead of first taking
the host's memory. A check made for someone else (the agent checking a `mgmt deploy
--max-resources N` pushed through its socket) counts against theirs (`limited_to`), in its
own context alone: the agent's graphs keep the agent's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# Twice issue 16's 100,000 files: a graph of that size converges with the defaults, while a
# runaway loop (a typo of 1,000,000) fails at the limit (~15-20 KiB per resource in the agent).
DEFAULT_MAX_RESOURCES = 200_000
_max_resources = [DEFAULT_MAX_RESOURCES]
_given: contextvars.ContextVar[int | None] = contextvars.ContextVar("max_resources", default=None)


def max_resources() -> int:
    """The most resources, and the most declared edges, one graph may have here."""
    given = _given.get()
    return _max_resources[0] if given is None else given


@contextlib.contextmanager
def limited_to(limit: int | None) -> Iterator[None]:
    """Within: `max_resources()` is `limit` in this context (a thread's, a task's) only, the
    process's everywhere else; None: the process's."""
    token = _given.set(limit)
    try:
        yield
    finally:
        _given.reset(token)


def set_max_resources(limit: int) -> None:
    """This process's `--max-resources`."""
    _max_resources[0] = limit


def too_many(count: int, what: str = "resources") -> str | None:
    """Why a graph of `count` resources (or edges) is refused, or None within the limit."""
    limit = max_resources()
    if count <= limit:
        return None
    return f"more than {limit:,} {what} (--max-resources, MGMT_MAX_RESOURCES)"
