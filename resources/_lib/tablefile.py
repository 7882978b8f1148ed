"""Files of one-line entries (/etc/fstab, /etc/hosts): read and rewritten whole, safely.

`read_lines` (`read_text`: the text as it is) reads through the parent directory's descriptor,
following no symlink at the file, bounded in size; a missing file has no lines (no text). `write_step` is the Step that writes the
new lines atomically and durably (`engine.safefs.write_file`). `replace` puts one wanted line
in place of the entries a key selects (at the first one's position; appended when there is
none), or removes them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from engine import safefs
from engine.errors import ResourceError
from resources._lib.plan import Step

READ_LIMIT = 1 << 20  # bytes


def read_lines(path: str, limit: int = READ_LIMIT) -> list[str]:
    data = read_text(path, limit)
    return data.splitlines() if data is not None else []


def read_text(path: str, limit: int = READ_LIMIT, errors: str = "replace") -> str | None:
    """The file's text, read as `read_lines` does (None: there is no such file); `errors` as
    for bytes.decode ("surrogateescape" to write back bytes that are not UTF-8 unchanged)."""
    parent, name = os.path.split(path)
    try:
        with safefs.closing(safefs.open_dir(parent)) as dir_fd:
            data = safefs.read_at(dir_fd, name, limit)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ResourceError(f"cannot read {path}: {err.strerror}") from err
    if data is None:
        raise ResourceError(f"{path} is bigger than {limit} bytes")
    return data.decode(errors=errors)


def write_step(path: str, lines: list[str], would: str, done: str, mode: int = 0o644) -> Step:
    data = "".join(line + "\n" for line in lines).encode()
    return Step(would, done, functools.partial(safefs.write_file, path, data, mode), slow=True)


def replace(lines: list[str], selects: Callable[[str], bool], wanted: str | None) -> list[str]:
    """`lines` with the selected entries replaced by `wanted` (None: removed)."""
    out: list[str] = []
    placed = wanted is None
    for line in lines:
        if not selects(line):
            out.append(line)
        elif not placed:
            out.append(wanted or "")
            placed = True
    if not placed and wanted is not None:
        out.append(wanted)
    return out
