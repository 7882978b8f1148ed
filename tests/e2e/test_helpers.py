"""The e2e helpers leave nothing behind (leaks, 2026-12-07): a `Daemon` left running at the end
of its block is SIGKILLed, and a killed `--tmp-prefix` run cannot remove its prefix; the
suite's last such runs left `mgmt-<12 hex>/` (its lock and status.sock) in the real /tmp."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, listing


def _graph(tmp_path: Path) -> Path:
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - {{name: {tmp_path}/f}}\n")
    return graph


@pytest.fixture
def test_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's $TMPDIR (where an agent started without one of its own makes its prefix)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("how", ["left running", "killed"])
async def test_a_killed_tmp_prefix_daemon_leaves_nothing_in_the_tests_tmpdir(
    tmp_path: Path, test_tmpdir: Path, how: str
) -> None:
    async with Daemon(["run", "--tmp-prefix", "yaml", str(_graph(tmp_path))]) as daemon:
        await daemon.wait_log("converged")
        if how == "killed":
            daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
    assert listing(test_tmpdir) == []


async def test_what_a_stopped_daemon_leaves_in_its_tmpdir_fails_the_test(
    tmp_path: Path, test_tmpdir: Path
) -> None:
    """One that exits of itself (SIGTERM) must have removed what it made there."""
    graph = _graph(tmp_path)
    with pytest.raises(AssertionError, match=r"left in its \$TMPDIR: \['stray'\]"):
        async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
            await daemon.wait_log("converged")
            assert daemon.tmpdir is not None
            (daemon.tmpdir / "stray").write_text("")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert listing(test_tmpdir) == []
