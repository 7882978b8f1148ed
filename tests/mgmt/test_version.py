"""mgmt.version: the version and the checkout's commit, git run without `subprocess`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mgmt.version import VERSION, _git_output, version
from tests.child import python

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkouts_version_names_its_commit() -> None:
    """In a git checkout: VERSION+the commit git names (12 digits), as `git rev-parse` says."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert version() == f"{VERSION}+{commit}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\+[0-9a-f]{12}", version())


def test_git_output_is_the_commands_stdout_stripped() -> None:
    """Its stdout only (stderr to /dev/null, stdin /dev/null: nothing read), stripped."""
    out = _git_output(["sh", "-c", "echo '  out  '; echo err >&2; cat"])
    assert out == "out"


def test_a_failed_or_missing_command_is_an_oserror() -> None:
    """Exit other than 0, or no such program: OSError, the bare version then."""
    with pytest.raises(OSError):
        _git_output(["sh", "-c", "echo abc; exit 3"])
    with pytest.raises(OSError):
        _git_output(["/nonexistent/git-of-nobody"])


# In a process of its own: the pytest worker's other threads (a test's before, still ending)
# open and close descriptors of their own meanwhile (ci4, 2026-12-07: fd 14 closed and 13
# opened during the call, by another thread, failed the check of this process's descriptors).
OUTLASTING = """
import os, sys
from pathlib import Path
from mgmt import version as said

def children():
    found = []
    for task in Path("/proc/self/task").iterdir():
        found += (task / "children").read_text().split()
    return found

said.TIMEOUT = 0.2
before, kids = set(os.listdir("/proc/self/fd")), set(children())
try:
    said._git_output(["sleep", "60"])
except TimeoutError:
    pass
else:
    sys.exit("no TimeoutError")
after = set(os.listdir("/proc/self/fd"))
assert after <= before, (before, after)
assert set(children()) <= kids, (kids, children())  # killed and reaped (not a zombie)
print("ok")
"""


def test_a_command_outlasting_the_timeout_is_killed_and_reaped() -> None:
    """A git that hangs (a stuck network file system): killed after TIMEOUT, reaped (no
    zombie left), TimeoutError; its descriptors closed."""
    done = python(OUTLASTING, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
