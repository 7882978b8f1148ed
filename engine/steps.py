"""Work done as a generator of steps (issue 16): it yields between two pieces of its work
every STRIDE items or so of a loop over a graph, and returns its result. `finish` runs it at
once (a command's check, a tool); engine.slices' `stepped` runs it on the event loop, a turn
given between its steps once enough of it has run: Engine.prepare of a full swap, whose
automatic edges and checks of a 20,000-resource graph held the loop for 0.25-1.3 s at once.
(No asyncio here: the graph's own code uses it, imported where the loop is not.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TypeVar, cast

T = TypeVar("T")
Item = TypeVar("Item")

Steps = Generator[None, None, T]
# Items between two yields: a yield and the driver's look at the clock cost ~0.2 us, an item
# of a graph's preparation 0.1-10 us.
STRIDE = 64


def chunks(items: Iterable[Item], size: int = STRIDE) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last one shorter): a step's share of a loop (a count
    and a test per item cost a 20,000-resource preparation ~5% more)."""
    rest = iter(items)
    while chunk := list(itertools.islice(rest, size)):
        yield chunk


def finish(steps: Steps[T]) -> T:
    """Run `steps` to their end at once; their result."""
    return run(steps, lambda: True)[1]


def run(steps: Steps[T], more: Callable[[], bool]) -> tuple[bool, T]:
    """Run `steps` while `more()`, asked after each: (True, their result) once they ended,
    else (False, None: they are to go on)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return True, stop.value
        if not more():
            return False, cast(T, None)
