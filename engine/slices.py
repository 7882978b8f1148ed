"""Big batches of work on the event loop, in slices (issue 16).

The loop runs every callback ready at the start of a step before it looks at its sockets:
a swap that stopped 20,000 vertices and started 20,000 others in one go readied 20,000
callbacks at once, over and over, and nothing else ran meanwhile (no drift repaired, the
status socket silent, the service watchdog unfed). `sliced` hands out the items of such a
batch and gives the loop a turn after every SLICE of them, so a step of the loop runs at most
about a slice's worth of the batch beside everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")

# Items per slice: a vertex started or stopped costs 20-100 us of the loop's time (more on a
# busy machine), so a slice is a few tens of milliseconds of one step.
SLICE = 500


async def sliced(items: Iterable[T]) -> AsyncIterator[list[T]]:
    """`items` in lists of at most SLICE, the loop getting a turn (one step: what the last
    slice readied runs) after each full one. Callers loop over each list themselves: an async
    generator's step per item cost a no-op run of 1,000 files ~12 K instructions a file (five
    passes over its vertices), a step per slice costs nothing that shows."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == SLICE:
            yield chunk
            chunk = []
            await asyncio.sleep(0)
    if chunk:
        yield chunk
