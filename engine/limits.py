"""How large a graph a front-end may build (`--max-resources`, docs/operations.md#graph-limits).

One value per process: each command (`mgmt run`, `check`, `deploy`) sets it from its option
once, and every graph builder (mcl's evaluation, YAML graph files, Puppet's catalogs) counts
against it while it builds, so a runaway program fails at the limit instead of first taking
the host's memory.
"""

from __future__ import annotations

# Twice issue 16's 100,000 files: a graph of that size converges with the defaults, while a
# runaway loop (a typo of 1,000,000) fails at the limit (~15-20 KiB per resource in the agent).
DEFAULT_MAX_RESOURCES = 200_000
_max_resources = [DEFAULT_MAX_RESOURCES]


def max_resources() -> int:
    """The most resources, and the most declared edges, one graph may have here."""
    return _max_resources[0]


def set_max_resources(limit: int) -> None:
    """This process's `--max-resources`."""
    _max_resources[0] = limit


def too_many(count: int, what: str = "resources") -> str | None:
    """Why a graph of `count` resources (or edges) is refused, or None within the limit."""
    limit = _max_resources[0]
    if count <= limit:
        return None
    return f"more than {limit:,} {what} (--max-resources, MGMT_MAX_RESOURCES)"
