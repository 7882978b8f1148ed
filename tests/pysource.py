"""Python source files as syntax trees, for the tests that check the code's own layout."""

from __future__ import annotations

import ast
from pathlib import Path


def parse(path: Path) -> ast.Module:
    """`path`'s syntax tree. CPython 3.11.2 (Debian 12's) counts the depth of the trees it
    builds in one counter per interpreter: another thread building one at the same moment (a
    traceback's carets are found with `ast.parse` in 3.11: a thread of an earlier test logging
    an error) makes it raise SystemError "AST constructor recursion depth mismatch" (fixed in
    later 3.11s). Seen twice in CI; the parse is made again, once."""
    source = path.read_text(encoding="utf-8")
    try:
        return ast.parse(source, str(path))
    except SystemError as err:
        if "recursion depth mismatch" not in str(err):
            raise
        return ast.parse(source, str(path))
