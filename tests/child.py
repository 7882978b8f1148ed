"""A fresh Python interpreter run to its end, for the tests that need one of their own (an
import system, a process-wide setting, a thread or descriptor that must not touch pytest's)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python(
    script: str,
    *args: str,
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    new_session: bool = False,
    wrapper: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """This interpreter (with `flags`, e.g. `-S` as the `mgmt` launcher) running `script` with
    `args` in the repository (its packages importable), bounded by `timeout`: its exit code and
    what it printed (text). `env`: its whole environment (default: ours). `new_session`: in a
    session of its own (a kill of its process group reaches nothing of pytest's). `wrapper`:
    a command that execs the interpreter's command line given after it (`unshare ...`)."""
    return subprocess.run(
        [*wrapper, sys.executable, *flags, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        start_new_session=new_session,
    )
