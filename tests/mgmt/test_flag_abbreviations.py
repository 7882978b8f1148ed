"""No command takes an abbreviated flag (mgmt's go-arg matches whole names only): argparse's
prefix matching took `mgmt setup svc --install` for --install-service. Each command's usage
error names that command (setup's said "mgmt run:" of the run flags it was given). Through
the real CLI: exit 2, one line, nothing done."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt

CASES = [
    (["run", "--tmp", "--converged-tim=0", "empty"], "mgmt run: unrecognized arguments: --tmp"),
    (
        ["setup", "svc", "--install", "--dry-run"],
        "mgmt setup: the following arguments are required: --install-service",
    ),
    (
        ["setup", "--install-service", "--dry-run", "--no-watc", "empty"],
        "mgmt setup: unrecognized arguments: --no-watc",
    ),
    (["status", "--js"], "mgmt status: unrecognized arguments: --js"),
    (["deploy", "--li"], "mgmt deploy: unrecognized arguments: --li"),
    (
        ["cluster", "mint-cert", "h1", "--ca", "CA", "--out", "OUT"],
        "mgmt cluster mint-cert: the following arguments are required: --ca-dir",
    ),
    (["check", "--gra", "g.yaml"], "mgmt check: unknown option '--gra'"),
]


@pytest.mark.parametrize(
    ("argv", "said"), CASES, ids=[c[0][0] + str(i) for i, c in enumerate(CASES)]
)
def test_an_abbreviated_flag_is_refused_by_the_command_that_got_it(
    argv: list[str], said: str, tmp_path: Path
) -> None:
    (tmp_path / "g.yaml").write_text("graph: g\nresources: {}\n")
    paths = {"CA": tmp_path / "ca", "OUT": tmp_path / "out", "g.yaml": tmp_path / "g.yaml"}
    code, out = run_mgmt([str(paths.get(word, word)) for word in argv])
    assert code == 2 and out.startswith(said), out
    assert "Traceback" not in out and "ambiguous" not in out
    assert not paths["CA"].exists() and not paths["OUT"].exists()
