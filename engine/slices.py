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


async def sliced(items: Iterable[T]) -> AsyncIterator[T]:
    """Each of `items`, the loop getting a turn (one step: what the last slice readied runs)
    after every SLICE of them."""
    for count, item in enumerate(items, 1):
        yield item
        if count % SLICE == 0:
            await asyncio.sleep(0)
