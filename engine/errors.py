"""The one error hierarchy of the project."""

from __future__ import annotations

import errno
from collections.abc import Callable


class MgmtError(Exception):
    """Base of every error this project raises on purpose."""


class GraphError(MgmtError):
    """The graph is malformed: a cycle, an edge to a missing vertex, a duplicate."""


class ValidationError(MgmtError, ValueError):
    """A parameter is wrong. `key` names it (dotted for nested keys, e.g. `meta.retry`)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        # More problems found in the same pass (engine.params.build: every key of a resource
        # is looked at, so a typo in two keys is told at once).
        self.others: list[ValidationError] = []

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ResourceError(MgmtError):
    """A resource failed to reach its desired state."""


class Interfered(MgmtError, FileNotFoundError):
    """A change was cut short by another's change to the same place: a name of its own (a
    write's temp name, engine.safefs) or its directory was removed between two of its calls
    (an `rm -rf` listed the directory meanwhile). Not the last word on the resource: its
    watch may see no event for it (a temp name's are not read, engine/inotify.py), so the
    engine checks it again, as after an event (`interfered`)."""


def interfered(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, is an Interfered."""
    for _ in range(8):  # a few `raise ... from` deep at most (and never a cycle's loop)
        if err is None:
            return False
        if isinstance(err, Interfered):
            return True
        err = err.__cause__
    return False


class EngineStopped(MgmtError):
    """A graph given to an engine that stops (Engine.stop called before or while it was
    prepared): not applied, nothing of it runs."""


class WorldError(MgmtError):
    """The cluster (World) could not answer."""


def path_error(err: BaseException, path: object) -> str:
    """An error about the path the user gave (`--prefix`), as one reads it: an OSError as
    `PATH: reason` (its own path when absolute, else `path`: never a raw errno, nor a name
    relative to an open directory such as 'prefix' or '.'); anything else as it is."""
    if not isinstance(err, OSError) or not err.strerror:
        return str(err)
    named = err.filename if isinstance(err.filename, str) and err.filename.startswith("/") else path
    return f"{named}: {err.strerror}"


# A host's state that may pass, not bad input: a full or failing disk, a mount not there yet
# (the file or directory it holds is missing), no memory, a read-only remount after an error.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.ENOMEM,
        errno.EAGAIN,
        errno.EROFS,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.ENFILE,
        errno.ENOENT,
    }
)


def caused_by(err: BaseException | None, test: Callable[[BaseException], bool]) -> bool:
    """Whether `err`, or an error that caused it (`__cause__`, down the chain), passes `test`."""
    while err is not None:
        if test(err):
            return True
        err = err.__cause__
    return False


def transient(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is a host problem that may pass (TRANSIENT_ERRNOS)."""
    return caused_by(err, lambda e: isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS)
