"""A file a resource reads is not there yet: under --noop, that is a change to report.

In a graph, what a resource reads (gzip's input, json:edit's document...) is often made by a
resource before it, which `--noop` does not run. So a kind raises `Missing` for it; its
check_apply returns `await would_wait(handle, err, apply, would)`: applying, the error stands
(the resource fails, naming what is missing); under noop the step `would` is reported, with
"(<what> does not exist yet: made by an earlier resource?)", and check_apply reports a change.
"""

from __future__ import annotations

import os
import stat

from engine import safefs
from engine.errors import ResourceError
from engine.handle import Handle
from resources._lib.plan import Step, apply_steps


class Missing(ResourceError):
    """Something the resource reads does not exist (the message says what)."""


async def would_wait(handle: Handle, err: Missing, apply: bool, would: str) -> bool:
    """Re-raise `err` when applying; under noop report the change (a Step) and return False."""
    if apply:
        raise err
    step = Step(f"{would} ({err}: made by an earlier resource?)", "", None)
    await apply_steps(handle, [step], False)
    return False


def read_existing(path: str, limit: int, what: str) -> tuple[bytes, os.stat_result]:
    """The content and stat of the regular file `path` (blocking: call it in a thread).

    Missing if it (or its directory) does not exist; ResourceError if it is not a regular file
    (a symlink is not followed) or is bigger than `limit` bytes. `what` names it in errors.
    """
    parent, name = os.path.split(path)
    try:
        with safefs.closing(safefs.open_dir(parent)) as dir_fd:
            st = safefs.lstat_at(dir_fd, name)
            if st is None:
                raise Missing(f"{what} {path} does not exist")
            if not stat.S_ISREG(st.st_mode):
                raise ResourceError(f"{what} {path} is not a regular file (not followed)")
            data = safefs.read_at(dir_fd, name, limit)
    except FileNotFoundError:
        raise Missing(f"{what} {path} does not exist ({parent} neither)") from None
    except OSError as err:
        raise ResourceError(f"cannot read {what} {path}: {err.strerror}") from err
    if data is None:
        raise ResourceError(f"{what} {path} is bigger than {limit} bytes")
    return data, st
