"""End to end: a graph file's `collect` whose pattern matches none of the exports of its kind
(mgmt's graphs: there the pattern is the directory collected files are written into)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt
from tests.mgmt.cluster.helpers import free_ports


@pytest.mark.slow
def test_a_collect_pattern_matching_no_export_is_warned_once(tmp_path: Path) -> None:
    shared, elsewhere = tmp_path / "shared", tmp_path / "mgmtB"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        f'    - name: "@@{shared}/f3b"\n      content: "x\\n"\n'
        "collect:\n"
        f"  - {{kind: file, pattern: {elsewhere}/}}\n"  # as mgmt's graph3b.yaml: nothing here
        f"  - {{kind: file, pattern: {shared}/}}\n"
    )
    client, peer = free_ports(2)
    code, out = run_mgmt(
        [
            "run",
            "--tmp-prefix",
            f"--client-urls=https://127.0.0.1:{client}",
            f"--server-urls=https://127.0.0.1:{peer}",
            "--converged-timeout=1",
            "yaml",
            str(graph),
        ]
    )
    assert code == 0 and (shared / "f3b").read_text() == "x\n", out
    said = f"collect file pattern '{elsewhere}/' matches none of the 1 exported file resources"
    assert out.count(said) == 1, out
    assert f"pattern '{shared}/' matches none" not in out
    assert "in mgmt it is the directory every collected file is written into" in out
