"""Big batches of work on the event loop, in slices (issue 16).

The loop runs every callback ready at the start of a step before it looks at its sockets:
a swap that stopped 20,000 vertices and started 20,000 others in one go readied 20,000
callbacks at once, over and over, and nothing else ran meanwhile (no drift repaired, the
status socket silent, the service watchdog unfed). `sliced` hands out the items of such a
batch and gives the loop a turn after each slice of them.

A slice's size follows its own work: each slice is sized from the time the caller spent on the
last one, aimed at WORK seconds. A fixed slice of 500 vertices started made turns of 40-100 ms
during a 20,000-file swap (a vertex's start also readies a callback or two in each of the next
few turns: its init, its startup event, its first check), and a drift's repair, which takes
four or five turns (its inotify event, its worker, its check's hops to an I/O thread and
back), waited for each of them. So a batch starts with LEAST items, then each slice is at most
twice the last, at most SLICE, at least LEAST. (Sized from the turn after it too, everything
else the loop ran included, the slices of a swap's cheap loops shrank to LEAST on a loaded
machine, and a 40,000-file swap took twice as long.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

from engine.steps import Steps, run

T = TypeVar("T")

# Items per slice, at most: a vertex started or stopped costs 20-100 us of the loop's time
# (more on a busy machine).
SLICE = 500
# Items per slice, at least (the first slice's size).
LEAST = 16
# Seconds of the caller's work a slice is aimed at.
WORK = 0.0005


async def sliced(items: Iterable[T]) -> AsyncIterator[list[T]]:
    """`items` in lists of LEAST to SLICE (see the module doc), the loop getting a turn (one
    step: what the last slice readied runs) after each full one. Callers loop over each list
    themselves: an async generator's step per item cost a no-op run of 1,000 files ~12 K
    instructions a file (five passes over its vertices), a step per slice costs nothing that
    shows."""
    size = LEAST
    rest = iter(items)
    while chunk := list(itertools.islice(rest, size)):  # (in C: no bytecode per item)
        if len(chunk) < size:
            yield chunk  # the last
            return
        began = time.perf_counter()
        yield chunk
        size = next_size(size, time.perf_counter() - began)
        await asyncio.sleep(0)


def next_size(size: int, took: float) -> int:
    """The next slice's size, after a slice of `size` whose work took `took` s."""
    fits = int(size * WORK / took) if took > 0 else SLICE
    return max(LEAST, min(SLICE, 2 * size, fits))


async def stepped(steps: Steps[T]) -> T:
    """Run `steps` (engine.steps) on the loop, giving it a turn (one step: what is ready
    runs) whenever WORK seconds of them have run; their result. Whatever they read must not
    change meanwhile but by them (their caller's to ensure)."""
    clock = time.perf_counter
    while True:
        until = clock() + WORK
        ended, result = run(steps, lambda: clock() < until)  # noqa: B023  (called here)
        if ended:
            return result
        await asyncio.sleep(0)
