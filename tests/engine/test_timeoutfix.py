"""asyncio.timeout() in a task being cancelled (engine/timeoutfix.py): on every interpreter, as
Python 3.11.3 made it; on 3.11.0-3.11.2 (Debian 12's python3) through the fix `engine`
installs (tests/conftest.py imports it). Real tasks, real loops,
real interpreters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.child import python

ROOT = Path(__file__).resolve().parents[2]


async def test_a_new_cancellation_in_the_timeouts_scope_still_cancels() -> None:
    """A cancellation that comes while a cleanup's timeout runs is not taken for its own."""
    started, in_cleanup = asyncio.Event(), asyncio.Event()

    async def victim() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            in_cleanup.set()
            async with asyncio.timeout(30):
                await asyncio.Event().wait()

    task = asyncio.create_task(victim())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    await asyncio.wait_for(in_cleanup.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


# What a forced stop's stop_group relies on: in a task being cancelled, its grace's timeout
# expires as TimeoutError, and the SIGKILL that follows is sent.
SCRIPT = """
import asyncio

async def victim(started):
    try:
        started.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return "timed out"
        raise

async def main():
    started = asyncio.Event()
    task = asyncio.create_task(victim(started))
    await started.wait()
    task.cancel()
    print(await task)

asyncio.run(main())
"""


@pytest.mark.parametrize("first", ["engine", "asyncio"])
def test_a_timeout_in_a_cancelled_tasks_cleanup_expires_as_timeouterror(first: str) -> None:
    """In a fresh interpreter, `engine` imported before asyncio (the fix made when asyncio's
    timeouts are) or after (made at once)."""
    second = "asyncio" if first == "engine" else "engine"
    assert _python(f"import {first}, {second}\n{SCRIPT}") == (0, "timed out\n", "")


def _python(script: str, *args: str) -> tuple[int, str, str]:
    """A fresh interpreter's (exit code, stdout, stderr) for `script` with `args`."""
    done = python(script, *args)
    return done.returncode, done.stdout, done.stderr


# A lookup in another thread that has passed the fix's finder when asyncio.timeouts is imported
# (`mgmt deploy`: the worker thread reading the graph file imports mgmt.yamlgraph while the
# loop thread's connection imports asyncio.timeouts). `Gate`, put right after the fix's
# finder, holds the lookup of `probe` there, the import lock released as while it waits for
# that lock at its next finder, until the main thread has imported asyncio.
RACE = """
import _imp, sys, threading
from engine import timeoutfix

sys.path.insert(0, sys.argv[1])
timeoutfix.install()
at_gate, imported, outcome = threading.Event(), threading.Event(), []

class Gate:
    def find_spec(self, name, path=None, target=None):
        if name == "probe":
            at_gate.set()
            _imp.release_lock()
            try:
                imported.wait(60)
            finally:
                _imp.acquire_lock()
        return None

def lookup():
    try:
        import probe
        outcome.append(probe.WHAT)
    except ImportError as err:
        outcome.append(repr(err))

fix = next(i for i, f in enumerate(sys.meta_path) if type(f) is timeoutfix._OnImport)
sys.meta_path.insert(fix + 1, Gate())
thread = threading.Thread(target=lookup)
thread.start()
assert at_gate.wait(60)
import asyncio.timeouts
imported.set()
thread.join(60)
print(outcome, "asyncio" in sys.modules, type(sys.meta_path[fix]).__name__)
"""


def test_a_lookup_in_another_thread_still_asks_every_finder_when_the_fix_is_made(
    tmp_path: Path,
) -> None:
    """The fix's finder leaves `sys.meta_path` once asyncio.timeouts is found. A lookup that
    another thread is making meanwhile goes on over the finders it started with: on main
    6729fd9a the finder removed itself from that very list, the finders after it moved up
    one place, and a lookup past it never asked the next one (CPython's PathFinder), a
    ModuleNotFoundError for a module that is there (`mgmt deploy`, 'No module named
    engine.autoedge', 2 of 3 runs of tests/e2e/test_hostile_user_inputs.py on a checkout
    whose index of a run's modules was stale)."""
    (tmp_path / "probe.py").write_text("WHAT = 'found'\n")
    assert _python(RACE, str(tmp_path)) == (0, "['found'] True Gate\n", "")
