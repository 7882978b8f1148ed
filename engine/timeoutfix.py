"""asyncio.timeout() as Python 3.11.3 fixed it (CPython gh-102780), on 3.11.0-3.11.2.

Debian 12's python3 is 3.11.2 (scripts/install.sh builds .venv on it). There, a timeout entered
in a task that is already being cancelled (cleanup after a cancellation: a forced stop killing
an exec's command, `resources._lib.proc.stop_group`'s grace before SIGKILL) did not end as
TimeoutError when it expired: its own cancellation was taken for the earlier one, so
CancelledError went on, and what the cleanup does after the timeout (the SIGKILL) never ran.
3.11.3 counts the task's cancellations when the timeout is entered, and takes an expiry for the
timeout's own unless a new cancellation came in its scope: the same here, for every timeout
made after `install()`, ours and our libraries'.

`engine/__init__.py` installs it on those versions only, without importing asyncio for it: if
asyncio is not imported yet, when `asyncio.timeouts` is (the command's `mgmt deploy` thin path
imports `engine` and never asyncio).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing`'s: the thin `mgmt deploy` imports neither it nor importlib's
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType, TracebackType
    from typing import Any

MODULE = "asyncio.timeouts"


def install() -> None:
    """Fix asyncio.timeouts.Timeout now if it is imported, else when it is."""
    module = sys.modules.get(MODULE)
    if module is not None:
        fix(module)
    elif not any(isinstance(finder, _OnImport) for finder in sys.meta_path):
        # Right before CPython's PathFinder, which finds asyncio.timeouts: after the finders
        # of the names it never is (builtin, frozen; the `mgmt` command's index of a run's
        # modules, which leaves it out), each asked before it for every module imported.
        finders = sys.meta_path
        path_finder = sys.modules["_frozen_importlib_external"].PathFinder
        at = finders.index(path_finder) if path_finder in finders else len(finders)
        finders.insert(at, _OnImport())


def fix(module: ModuleType) -> None:
    """Make the Timeout of `module` (asyncio.timeouts) count the cancellations before it."""
    timeout: Any = module.Timeout
    state: Any = module._State
    entered = timeout.__aenter__

    async def __aenter__(self: Any) -> Any:
        done = await entered(self)
        self._cancelling_before = self._task.cancelling()  # before this timeout's own
        return done

    async def __aexit__(
        self: Any,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timeout_handler is not None:
            self._timeout_handler.cancel()
            self._timeout_handler = None
        if self._state is state.EXPIRING:
            self._state = state.EXPIRED
            # its own cancellation taken back; a TimeoutError unless another came in its scope
            cancelled = exc_type is module.exceptions.CancelledError
            if self._task.uncancel() <= self._cancelling_before and cancelled:
                raise TimeoutError from exc
        elif self._state is state.ENTERED:
            self._state = state.EXITED

    timeout.__aenter__ = __aenter__
    timeout.__aexit__ = __aexit__


class _OnImport:
    """A meta path finder: asyncio.timeouts found as usual, fixed once it has run."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != MODULE:
            return None
        from importlib.machinery import PathFinder

        # A new list without this finder, not `sys.meta_path.remove(self)`: another thread's
        # lookup may be going through the list (CPython's `_find_spec`, `for finder in
        # meta_path`), past this finder; removing it there would move the next one (PathFinder)
        # into a place that lookup has passed, and it would end without asking it (a
        # ModuleNotFoundError of a module that is there). A lookup goes on over the list it
        # started with.
        sys.meta_path = [finder for finder in sys.meta_path if finder is not self]
        spec = PathFinder.find_spec(name, path, target)
        loader: Any = spec.loader if spec is not None else None
        if loader is None:
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            fix(module)

        loader.exec_module = exec_module
        return spec
