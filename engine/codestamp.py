"""Whether the code on disk changed under this process (mgmt upgraded under a running agent).

The install is editable (`pip install -e`: the checkout is on sys.path) and a resource kind's
module is imported when a graph first uses it. So after `git pull` and `./scripts/install.sh`
an agent started before imports the NEW module of a kind it first meets into its OLD engine:
a mix of versions that may fail (`ImportError: cannot import name ...`) or, worse, run. (mgmt
is one static binary: replacing it never changes a running process.) Each module imported
after the start is checked (`check`): one whose source is newer than the process's start says,
once, that the agent must be restarted, in the log and to `said.on_upgraded` (the agent's status:
`mgmt status` exits 1). The check costs a stat per module imported late, nothing otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("main")

STARTED = time.time()  # this module is imported at the process's start (by `resources`)


class _Said:
    line = ""  # the line, once said
    # Called with it (once), e.g. by the agent: its status shows it.
    on_upgraded: Callable[[str], None] | None = None


said = _Said()


def check(paths: Iterable[str | None]) -> None:
    """Say once if one of these source files changed since the process started."""
    if said.line:
        return
    for path in paths:
        if not path:
            continue
        try:
            changed = os.stat(path).st_mtime
        except OSError:  # removed by the upgrade: what imported it already failed, and said so
            continue
        if changed > STARTED:
            said.line = (
                f"mgmt was upgraded under this agent: {path} changed at {_clock(changed)}, "
                f"after the agent started at {_clock(STARTED)}: restart it (systemctl restart "
                "mgmt); until then it runs its old code with the new code of what it loads "
                "from now on"
            )
            log.error("%s", said.line)
            if said.on_upgraded is not None:
                said.on_upgraded(said.line)
            return


def new_modules(before: set[str]) -> list[str | None]:
    """The source files of the modules imported since `before` (a copy of sys.modules' keys)."""
    return [getattr(sys.modules[name], "__file__", None) for name in sys.modules.keys() - before]


def _clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))
