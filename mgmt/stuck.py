"""Where the tasks of a stop that does not end wait: said by a forced stop (a second SIGINT or
SIGTERM, `Agent._force`), and by the exit a forced stop ends with if it still does not end
(`exit_within`); and the bounded waits of a stop for the tasks it cancelled (`cancel_within`).

One line: each task still running, by name, with the innermost frame its coroutine chain
reaches (`file:line in function`), the same place counted once ("3x"). A chain is followed
through coroutines only: one that waits in an async generator (an `asynccontextmanager`'s
body) or on a future stops there, which says enough to find it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

MAX_PLACES = 12  # places said, the most crowded first (an agent runs a task per resource)
DEPTH = 3  # frames said of each
NAME_MAX = 200  # characters of a task's name said (a watched key, a resource's name: any length)


def where(task: asyncio.Task[Any]) -> str:
    """Where `task` waits: the innermost DEPTH frames of its coroutine chain outside asyncio's,
    contextlib's and grpc's own modules (an `Event.wait` says less than its callers; none:
    the innermost frame), innermost first, as `file:line in function < ...`. The chain is
    followed through an `asynccontextmanager`'s generator too."""
    link: Any = task.get_coro()
    ours: list[str] = []
    inner = "?"
    for _ in range(100):  # (a chain is never that deep: a bound, not a limit)
        frame = next((f for f in (getattr(link, a, None) for a in _FRAMES) if f is not None), None)
        if frame is None:
            break
        code = frame.f_code
        inner = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
        if not any(part in code.co_filename for part in _THEIRS):
            ours.append(inner)
        nxt = next((n for n in (getattr(link, a, None) for a in _AWAITS) if n is not None), None)
        if nxt is None or not any(hasattr(nxt, a) for a in _FRAMES):
            # An async generator's step (`asend`) hides its generator: an asynccontextmanager
            # keeps it as `self.gen`.
            nxt = getattr(frame.f_locals.get("self"), "gen", None)
        if nxt is None:
            break
        link = nxt
    return " < ".join(reversed(ours[-DEPTH:])) if ours else inner


_FRAMES = ("cr_frame", "ag_frame", "gi_frame")
_AWAITS = ("cr_await", "ag_await", "gi_yieldfrom")
_THEIRS = (
    f"{os.sep}contextlib.py",
    f"{os.sep}grpc{os.sep}aio{os.sep}",
    *(f"{os.sep}asyncio{os.sep}{m}.py" for m in ("locks", "tasks", "timeouts", "queues")),
)


def said(tasks: Iterable[asyncio.Task[Any]]) -> str:
    """`tasks` in one bounded line ("" if none): by place, the most crowded first (MAX_PLACES
    of them), each `[N x] place` and the name of one task there (not one asyncio made,
    `Task-N`; cut to NAME_MAX): `3x NAME @ FILE:LINE in FUNCTION < CALLER`."""
    places: Counter[str] = Counter()
    names: dict[str, str] = {}
    for task in tasks:
        place, name = where(task), task.get_name()
        places[place] += 1
        if not name.startswith("Task-"):
            names.setdefault(place, name if len(name) <= NAME_MAX else name[:NAME_MAX] + "...")
    lines = [
        (f"{n}x " if n > 1 else "") + (f"{names[p]} @ " if p in names else "") + p
        for p, n in places.most_common(MAX_PLACES)
    ]
    more = len(places) - len(lines)
    return "; ".join(lines) + (f"; and {more} other places" if more > 0 else "")


def threads_running() -> str:
    """The threads but the calling one, in one line: `thread NAME @ FILE:LINE in FUNCTION <
    CALLER` (the innermost DEPTH frames outside threading's, queue's and the executors' own
    modules), the same place counted once ("3x"), the most crowded first: where a join at
    the exit waits (an I/O thread in a read that a hung file system never answers)."""
    frames = sys._current_frames()
    places: Counter[str] = Counter()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or 0)
        if thread.ident == threading.get_ident() or frame is None:
            continue
        places[f"thread {thread.name.rstrip('0123456789_')} @ {_frame_where(frame)}"] += 1
    lines = [(f"{n}x " if n > 1 else "") + p for p, n in places.most_common(MAX_PLACES)]
    more = len(places) - len(lines)
    return "; ".join(lines) + (f"; and {more} other places" if more > 0 else "")


def _frame_where(frame: Any) -> str:
    """A thread's stack from `frame` (its innermost) as `where` says a task's."""
    ours: list[str] = []
    inner = ""
    while frame is not None and len(ours) < DEPTH:
        code = frame.f_code
        place = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
        inner = inner or place
        if not any(part in code.co_filename for part in _THREADS_OWN):
            ours.append(place)
        frame = frame.f_back
    return " < ".join(ours) if ours else inner


_THREADS_OWN = tuple(
    f"{os.sep}{m}.py" for m in ("threading", "queue", "thread", "selectors", "base_events")
)


def still_running(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every task of `loop` (the running one) but the current one, in one line (`said`)."""
    current = asyncio.current_task() if loop is None else None
    return said(t for t in asyncio.all_tasks(loop) if t is not current and not t.done())


async def cancel_within(
    tasks: Iterable[asyncio.Task[Any]], within: float, what: str, logger: logging.Logger
) -> bool:
    """Cancel `tasks` and wait until they end, at most `within` s: a stop's bound. One that
    does not end by then (it ignores its cancellation, or its cleanup waits without bound) is
    said, with where it waits, and left behind; False if any was."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=within)
    for task in pending:  # their errors taken (logged by their owner, if it logs them)
        if task.done() and not task.cancelled():
            task.exception()
    left = [t for t in pending if not t.done()]
    if left:
        logger.warning(
            "%s: %d task(s) did not end within %gs of their cancellation, left behind: %s",
            what,
            len(left),
            within,
            said(left),
        )
    return not left


def exit_within(
    within: float,
    what: str,
    loop: asyncio.AbstractEventLoop,
    before: Callable[[], None],
    code: int,
) -> threading.Timer:
    """Exit the process with `code` in `within` s unless it has ended: a daemon thread's timer
    (the loop may be what is stuck: a blocking call, or a join of a thread that does not end)
    says what `loop` still runs, calls `before()` (e.g. SIGKILL to a child) and exits, the
    log flushed (logging's `atexit` handler; a stderr that takes nothing waited for at most
    mgmt.log.WRITE_WAIT, twice: the line said, then the flush)."""
    log = logging.getLogger("main")

    def expired() -> None:
        # The log's last lines wait for stderr at most WRITE_WAIT from now, as after a stop
        # signal: without one (a converged run's exit, max-runtime's grace), logging's flush at
        # exit waited for a stderr nobody reads without bound, and the exit never came.
        logsetup = sys.modules.get("mgmt.log")  # (not imported: not its handlers either)
        if logsetup is not None:
            logsetup.stopping()
        try:  # (from this thread, as the loop runs: a glance, not a snapshot)
            left = "; ".join(filter(None, (still_running(loop), threads_running())))
        except Exception as err:  # (the exit goes on whatever)
            left = f"unknown ({err})"
        log.error(
            "%s did not end within %gs: exiting now; still running: %s",
            *(what, within, left or "nothing (the exit itself)"),
        )
        try:
            before()
        finally:
            atexit._run_exitfuncs()
            os._exit(code)

    timer = threading.Timer(within, expired)
    timer.daemon = True
    timer.start()
    return timer
