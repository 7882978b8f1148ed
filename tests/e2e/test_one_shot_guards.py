"""A one-shot run (`mgmt run --converged-timeout=0`, from cron) whose exec's guard command
(`ifcmd`, `nifcmd`) changes a file of the graph checked good before it: the run repairs the
file before it exits, as a watched run and the tree before late watches do.

A guard is a command: it may change anything (an operator's `ifcmd` that refreshes a cache,
regenerates a file, then tests it), though the exec then runs nothing and changes nothing
itself. The real `mgmt` command as a subprocess, real files, real commands, real inotify.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import guarded_exec_graph, run_mgmt


@pytest.mark.parametrize(
    ("guard", "exits"), [("ifcmd", 1), ("nifcmd", 0)], ids=["ifcmd-fails", "nifcmd-succeeds"]
)
@pytest.mark.parametrize("timeout", ["0", "1"], ids=["one-shot", "watched"])
def test_a_file_overwritten_by_a_later_guard_is_repaired_before_the_run_exits(
    tmp_path: Path, guard: str, exits: int, timeout: str
) -> None:
    (tmp_path / "f0").write_text("want\n")
    path = guarded_exec_graph(tmp_path, guard, exits)
    args = ["run", f"--converged-timeout={timeout}", "--tmp-prefix", "--no-watch"]
    code, output = run_mgmt([*args, "yaml", str(path)], timeout=120)
    assert code == 0, output
    assert not (tmp_path / "ran").exists(), output
    assert (tmp_path / "f0").read_text() == "want\n", output


@pytest.mark.parametrize("timeout", ["0", "1"], ids=["one-shot", "watched"])
def test_a_noop_run_reports_the_drift_a_guard_made(tmp_path: Path, timeout: str) -> None:
    """Under `--noop` the guard runs all the same (exec's guards are evaluated): its change
    to f0 is drift to report, `--detailed-exitcodes`' 3, with late watches too."""
    (tmp_path / "f0").write_text("want\n")
    path = guarded_exec_graph(tmp_path, "ifcmd", 1)
    args = ["run", f"--converged-timeout={timeout}", "--tmp-prefix", "--no-watch", "--noop"]
    code, output = run_mgmt([*args, "--detailed-exitcodes", "yaml", str(path)], timeout=120)
    assert code == 3, output
    assert "file[f0]: would" in output, output
    assert (tmp_path / "f0").read_text() == "bad", output
