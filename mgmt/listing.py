"""Long lists in messages: at most NAMED items are shown, then how many more there were."""

from __future__ import annotations

# Items one message lists at most (the exit's list of failures, the converged line, noop's
# changes, a bad graph's or program's problems): 20,000 failing files made one summary line of
# 269 KB, and systemd's STATUS=; 10,000 copies of one bad key, 10,000 error lines.
NAMED = 20


def resource_count(count: int) -> str:
    """`1 resource`, `2 resources`, `0 resources`: how many, in the summaries."""
    return f"{count} resource{'s' * (count != 1)}"


def named(names: list[str]) -> str:
    """`names` joined, at most NAMED of them, then how many more."""
    shown = ", ".join(names[:NAMED])
    return shown if len(names) <= NAMED else f"{shown} and {len(names) - NAMED} more"


def capped(lines: list[str], what: str) -> list[str]:
    """`lines` (one message each), at most NAMED of them then one line saying how many more
    `what` there were ("and 9980 more problems"). A list of NAMED + 1 stays whole (that line
    would hide no fewer), so a capped list is the same capped again."""
    if len(lines) <= NAMED + 1:
        return lines
    return [*lines[:NAMED], f"and {len(lines) - NAMED} more {what}"]


def first_of(problems: list[str], keeping: str) -> str:
    """One line for many problems (a program's status): the first one, how many others there
    were, and what runs instead (`keeping`, e.g. "keeping the running program")."""
    first = problems[0] if problems else "an unknown problem"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}{more} ({keeping})"
