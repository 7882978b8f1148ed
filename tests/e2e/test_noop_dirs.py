"""`mgmt run --noop` says each directory it would create once, by one resource: the examples'
Puppet manifest (a directory and a file in it, under a missing /tmp/mgmt) said
`file[/tmp/mgmt/puppet/motd]: would create parent directory /tmp/mgmt/puppet` beside
`file[/tmp/mgmt/puppet/]: would create directory /tmp/mgmt/puppet` (operator tester,
2026-12-07): in a run, the directory's resource makes it (the automatic edge runs it first) and
the file finds it. The real `mgmt` command, real files; nothing is created."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.e2e.helpers import run_mgmt


def test_a_noop_run_says_each_directory_it_would_create_once(tmp_path: Path) -> None:
    top = tmp_path / "top"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\n"
        "resources:\n"
        "  file:\n"
        f"    - {{name: dir, path: {top}/a/d/, state: exists}}\n"
        f"    - {{name: in-dir, path: {top}/a/d/f, content: x}}\n"
        f"    - {{name: deep, path: {top}/a/d/e/g, content: x}}\n"
        f"    - {{name: one, path: {top}/b/s1, content: x}}\n"
        f"    - {{name: two, path: {top}/b/s2, content: x}}\n"
    )
    code, log = run_mgmt(
        ["run", "--tmp-prefix", "--noop", "--converged-timeout", "0", "yaml", str(graph)]
    )
    assert code == 0, log
    made = re.findall(r"\]: would create (?:parent )?directory (\S+)", log)
    assert Counter(made) == Counter(
        [str(top), f"{top}/a", f"{top}/a/d", f"{top}/b", f"{top}/a/d/e"]
    ), log
    assert f"file[dir]: would create directory {top}/a/d" in log, log
    assert "file[in-dir]: would create parent" not in log, log
    assert f"file[deep]: would create parent directory {top}/a/d/e" in log, log
    for name in ("a/d/f", "a/d/e/g", "b/s1", "b/s2"):
        assert f"would create {top}/{name}\n" in log, log
    assert not top.exists()
