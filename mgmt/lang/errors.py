"""Errors of the language: compile-time (with file:line:col) and run-time (in a function)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import MgmtError
from mgmt.listing import capped

if TYPE_CHECKING:
    from pathlib import Path

# Control characters (a newline in a name or a string quoted by a message, a stray byte) would
# break the one-line `file:line:col: message` form; they are shown escaped.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(message: str) -> str:
    """The message with its control characters escaped (\\n, \\x01...): always one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


@dataclass(frozen=True)
class Pos:
    """A position in a program: file, 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Pos("<builtin>", 0, 0)


class LangError(MgmtError):
    """Base of the language's errors."""


class CompileError(LangError):
    """One or more problems found before anything runs; each is `file:line:col: message`, at
    most NAMED of them then how many more there were (mgmt.listing.capped).

    `looked_at` (set by compile_file) is every file the refused program depended on and their
    digest as read (ModuleLoader.looked_at): what to watch for the edit that fixes it.
    """

    looked_at: tuple[list[Path], str] | None = None

    def __init__(self, problems: list[str]) -> None:
        problems = [one_line(p) for p in capped(problems, "problems")]
        super().__init__("\n".join(problems))
        self.problems = problems

    @classmethod
    def at(cls, pos: Pos, message: str) -> CompileError:
        return cls([f"{pos}: {message}"])


class FuncError(LangError):
    """A function failed while the program ran (bad input, missing file...).

    The agent logs it and keeps enforcing the last good graph.
    """

    def __init__(self, message: str, pos: Pos | None = None) -> None:
        message = one_line(message)
        super().__init__(f"{pos}: {message}" if pos else message)
        self.pos = pos
        self.message = message


class GraphLimitError(FuncError):
    """The program declares more than a graph may hold (--max-resources): the same on every
    host, so `mgmt check` and `mgmt deploy` refuse it too."""


class CycleError(FuncError):
    """The program's edges make a cycle (named with where each edge was made): every host that
    builds this graph refuses it, so `mgmt check` and `mgmt deploy` refuse it too."""


class Abort(Exception):
    """Stop checking the current binding or statement (its problem is already recorded)."""


class Problems:
    """What the checker's parts found: `file:line:col: message` each. The parts run one after
    the other (names, then types, then resources), so `ordered()` tells them in file order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.at: list[Pos] = []  # where each line sorts

    def add(self, pos: Pos, message: str) -> None:
        self.lines.append(f"{pos}: {message}")
        self.at.append(pos)

    def extend(self, lines: list[str], pos: Pos) -> None:
        """Another file's problems (a module's), told where `pos` brought them in."""
        self.lines += lines
        self.at += [pos] * len(lines)

    def ordered(self) -> list[str]:
        """The lines by file (the first one named first), then line and column."""
        files: dict[str, int] = {}
        for pos in self.at:
            files.setdefault(pos.file, len(files))
        at = self.at
        order = sorted(range(len(at)), key=lambda i: (files[at[i].file], at[i].line, at[i].col))
        return [self.lines[i] for i in order]

    def abort(self, pos: Pos, message: str) -> Abort:
        """Record a problem; the caller raises the Abort to give up on the current check."""
        self.add(pos, message)
        return Abort()


def plural(count: int, word: str) -> str:
    """`1 value`, `2 values`, `0 values`."""
    return f"{count} {word}{'s' * (count != 1)}"


class NotReady(LangError):
    """A stream has produced no value yet: nothing depending on it can be computed."""
