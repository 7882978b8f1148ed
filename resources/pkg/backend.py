"""The package-manager interface behind the pkg resource (apt now; dnf can follow).

A backend answers three questions and does one thing: which of some packages are installed
(`installed`), what could be installed for them (`available`), how two versions order
(`older`), and it applies a list of `Change`s in ONE transaction (`apply`). It knows nothing
about resources, graphs or grouping; the resource plans, the backend executes.
"""

from __future__ import annotations

import abc
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

Action = Literal["install", "upgrade", "downgrade", "remove"]

# Past tense of each action, for the one INFO line logged per change.
DONE: dict[Action, str] = {
    "install": "installed",
    "upgrade": "upgraded",
    "downgrade": "downgraded",
    "remove": "removed",
}


@dataclass(frozen=True)
class Installed:
    """A package the package database knows about on this host."""

    # The version in the database.
    version: str
    # Fully installed and configured (dpkg "ii"); False when half-installed, unpacked, ...
    complete: bool


@dataclass(frozen=True)
class Available:
    """What the package manager could install for one package name."""

    # The version an install would pick now (None: nothing installable, e.g. a virtual name).
    candidate: str | None
    # Every version known for the name (repositories and the installed one), best first.
    versions: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One package to change in a transaction."""

    name: str
    action: Action
    # The version to end up with (None for a removal).
    version: str | None
    # The version installed before (None when it was not installed).
    old: str | None
    # Ask the package manager for exactly `version` (a version state), not its own candidate.
    pin: bool = False

    def describe(self) -> str:
        """`hello 2.10-3`, `hello 2.10-2 -> 2.10-3`, `sl 5.02-1` (removed)."""
        if self.action == "remove":
            return f"{self.name} {self.old}" if self.old else self.name
        if self.old and self.old != self.version:
            return f"{self.name} {self.old} -> {self.version}"
        return f"{self.name} {self.version}"


class Backend(abc.ABC):
    """One package manager. Instances are stateless; every call runs the real tools."""

    # Short name ("apt"): resources group only with resources of the same backend.
    name: ClassVar[str]
    # Where the package manager keeps its packages, for error messages ("the apt cache").
    cache: ClassVar[str]
    # Files and directories whose changes may change what is installed or installable.
    watch_paths: ClassVar[tuple[str, ...]]

    @classmethod
    @abc.abstractmethod
    def usable(cls) -> bool:
        """The backend's tools are present on this host."""

    def files(self, name: str) -> frozenset[str]:
        """The paths the installed package `name` owns, as the package database lists them
        (empty when it is not installed, or when the backend cannot tell). Synchronous, read
        from the database's files: automatic edges are computed before anything runs."""
        return frozenset()

    @abc.abstractmethod
    async def installed(self, names: Sequence[str]) -> dict[str, Installed]:
        """The packages among `names` that the package database knows (absent: not there)."""

    @abc.abstractmethod
    async def available(self, names: Sequence[str]) -> dict[str, Available]:
        """What could be installed for each of `names` (absent: the name is unknown)."""

    @abc.abstractmethod
    async def older(self, version: str, than: str) -> bool:
        """`version` sorts before `than` in this package manager's version order."""

    async def wait_idle(self, logger: logging.LoggerAdapter[logging.Logger]) -> bool:
        """Wait (bounded) while another transaction holds the package manager, saying whose;
        whether one did (what is installed is then read again). None by default."""
        return False

    @abc.abstractmethod
    async def apply(
        self,
        changes: Sequence[Change],
        *,
        allow_downgrade: bool,
        allow_untrusted: bool,
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        """Apply every change in one transaction; raise ResourceError if it fails, or if it
        would have to remove packages no change asked to remove. The caller holds the engine's
        lock named after the backend (one transaction at a time from this engine; the package
        manager's own lock guards against others)."""


def which(*tools: str) -> bool:
    """Every tool is on PATH."""
    return all(shutil.which(tool) is not None for tool in tools)
