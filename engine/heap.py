"""The cyclic garbage collector and a big graph (issue 16).

A graph of 10,000 resources is a few million objects; each full (generation 2) collection walks
all of them: 0.1-0.3 s on a quiet machine and 0.4-2.9 s with both cores busy, measured in the
daemon during swaps of one resource, whose own cost is ~20 ms. `FrozenHeap` moves everything
alive after each graph swap, and again once that graph first converged (its first
check_applies made as many objects again), out of the collector's sight (gc.freeze(): O(1)),
so collections walk only what is newer. What the frozen part later drops is freed by
reference counting: a vertex a swap stops and drops too, its cycles broken (Vertex.release;
before, each was ~32 objects in cycles, frozen until a full collection walked the whole heap,
1-2 s of the loop at 20,000 resources). Other cycles (a resource's own) wait for the next
full collection, made when the vertices stopped since the last one reach four times the
graph (at least MIN_STOPPED), once the graph has converged again (or at the next swap, if it
does not): memory held back is bounded by that, and the pause, a walk of the live heap, is
paid once per as many swaps, never in the middle of one.

The engine itself pauses the collector during each swap and the first pass of the vertices
it starts, then freezes what lives (Engine._pause_gc), and thaws the heap at the next swap:
that swap is then followed by a freeze here, so no full pass walks the graph again.
`FrozenHeap` is for a process of its own (the CLI's agent): tests running many agents in one
process leave it off, as gc.freeze() is process-wide.
"""

from __future__ import annotations

import ctypes
import gc
from typing import TYPE_CHECKING

from engine.events import GraphSwapped

if TYPE_CHECKING:
    from engine.engine import Engine

MIN_STOPPED = 1000


class FrozenHeap:
    """Freeze the heap after each graph swap; collect it all now and then."""

    def __init__(self, engine: Engine) -> None:
        self.stopped = 0  # vertices stopped since the last full collection
        self.collections = 0  # full collections made (tests)
        self._fresh = False  # a full swap since the graph last converged
        self._due = False  # a full collection waits for the graph to converge
        self._unsubscribe = engine.listeners.subscribe(GraphSwapped, self._swapped)

    def _swapped(self, event: GraphSwapped) -> None:
        if self._due:  # the graph did not converge since: collect what the last ones left
            self._collect()
        self.stopped += event.stopped
        # Not now: the new vertices' first pass runs (Engine._pause_gc), and what it makes
        # is frozen at its end.
        self._due = self.stopped >= max(MIN_STOPPED, 4 * (event.kept + event.started))
        gc.freeze()  # it may have thawed the heap (Engine._gc_resume); what it made and
        # dropped is counted in `stopped` (gc.get_freeze_count() is O(n))
        self._fresh = self._fresh or event.replaced is None

    def converged(self) -> None:
        """The graph converged: the full collection a swap made due, or else, what its first
        run made since a full swap is frozen too; after a full swap, the memory freed goes
        back to the system (`trim`)."""
        if self._due:
            self._collect()
        elif self._fresh:
            gc.freeze()
        if self._fresh:
            trim()
        self._fresh = False

    def _collect(self) -> None:
        gc.unfreeze()
        gc.collect()
        self.collections += 1
        self.stopped = 0
        self._due = False
        gc.freeze()

    def close(self, ending: bool = False) -> None:
        """Stop freezing. `ending`: the process ends next (the CLI's agent has stopped): what
        lives is frozen and the collector stays off, else the next full collection (and the
        interpreter's at exit) walked the whole stopped graph once more only to delay the exit
        (1.2 s at 20,000 files)."""
        self._unsubscribe()
        if ending:
            gc.disable()
            gc.freeze()
        else:
            gc.unfreeze()


def trim() -> None:
    """Hand the memory a full swap's stopped graph freed back to the system (glibc's
    malloc_trim: free() keeps it for later allocations). 20,000 noops replaced six times:
    RSS 350 MiB instead of 375; 4-80 ms of the loop, once per graph converged after a full
    swap. Nothing with another C library."""
    fn = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if fn is not None:
        fn(0)
