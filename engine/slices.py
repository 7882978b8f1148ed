"""Big batches of work on the event loop, in slices (issue 16).

The loop runs every callback ready at the start of a step before it looks at its sockets:
a swap that stopped 20,000 vertices and started 20,000 others in one go readied 20,000
callbacks at once, over and over, and nothing else ran meanwhile (no drift repaired, the
status socket silent, the service watchdog unfed). `sliced` hands out the items of such a
batch and gives the loop a turn after each slice of them.

A slice's size follows the loop: each slice and the turn after it (what the slice readied,
such as the first steps of the vertices it started, and everything else ready) is aimed at
TURN seconds. A fixed slice of 500 vertices started made turns of 40-100 ms during a
20,000-file swap (a vertex's start readies a callback or two in each of the next few turns:
its init, its startup event, its first check), and a drift's repair, which takes four or five
turns (its inotify event, its worker, its check's hops to an I/O thread and back), waited
for each of them. So a batch starts with LEAST items, then each slice is sized from the last
one's turn: at most twice the last, at most SLICE, at least LEAST (a loop kept busy by other
work still moves the batch on).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

# Items per slice, at most: a vertex started or stopped costs 20-100 us of the loop's time
# (more on a busy machine).
SLICE = 500
# Items per slice, at least (the first slice's size).
LEAST = 16
# Seconds a slice and the loop's turn after it are aimed at.
TURN = 0.002


async def sliced(items: Iterable[T]) -> AsyncIterator[list[T]]:
    """`items` in lists of LEAST to SLICE (see the module doc), the loop getting a turn (one
    step: what the last slice readied runs) after each full one. Callers loop over each list
    themselves: an async generator's step per item cost a no-op run of 1,000 files ~12 K
    instructions a file (five passes over its vertices), a step per slice costs nothing that
    shows."""
    size = LEAST
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            began = time.perf_counter()
            yield chunk
            chunk = []
            await asyncio.sleep(0)
            took = time.perf_counter() - began
            size = next_size(size, took)
    if chunk:
        yield chunk


def next_size(size: int, took: float) -> int:
    """The next slice's size, after a slice of `size` whose work and turn took `took` s."""
    fits = int(size * TURN / took) if took > 0 else SLICE
    return max(LEAST, min(SLICE, 2 * size, fits))
