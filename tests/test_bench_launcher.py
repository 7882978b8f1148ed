"""bench/common.base_launcher: BASE started as this tree is (leftovers5 6), real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import VENV_MGMT, base_launcher  # noqa: E402

pytestmark = pytest.mark.skipif(not VENV_MGMT.exists(), reason="no .venv/bin/mgmt launcher")


def test_a_launcher_made_for_another_checkout_starts_that_one(tmp_path: Path) -> None:
    """Made for this checkout, it is this tree's launcher byte for byte; for another (a `git
    archive`, its version changed), the same with that path: it starts that checkout's code,
    without `site` or runpy, and the checkout is not touched."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD", "mgmt", "engine", "resources"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    base = tmp_path / "base"
    base.mkdir()
    # tar(1): tarfile's extraction filters (filter="data") are Python 3.11.4's; Debian's is 3.11.2
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True, timeout=60)
    said = base / "mgmt" / "version.py"
    said.write_text(said.read_text().replace('VERSION = "0.1.0"', 'VERSION = "base"'))
    ours = base_launcher(ROOT, tmp_path / "ours")
    assert (tmp_path / "ours").read_text() == VENV_MGMT.read_text()
    argv = base_launcher(base, tmp_path / "theirs")
    text = (tmp_path / "theirs").read_text()
    assert text == VENV_MGMT.read_text().replace(repr(str(ROOT)), repr(str(base)))
    assert text.splitlines()[0].endswith(" -SP")  # no `site`, no runpy, as this tree
    assert not (base / ".venv").exists()  # the checkout is not touched
    for start, said in ((argv, "base"), (ours, "0.1.0")):  # the bare version (+COMMIT)
        done = subprocess.run(
            [*start, "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert (done.returncode, done.stdout.strip().partition("+")[0]) == (0, said), done
