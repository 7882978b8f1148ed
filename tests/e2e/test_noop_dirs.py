"""`mgmt run --noop` says each directory it would create once, by one resource: the examples'
Puppet manifest (a directory and a file in it, under a missing /tmp/mgmt) said
`file[/tmp/mgmt/puppet/motd]: would create parent directory /tmp/mgmt/puppet` beside
`file[/tmp/mgmt/puppet/]: would create directory /tmp/mgmt/puppet` (operator tester,
2026-12-07): in a run, the directory's resource makes it (the automatic edge runs it first) and
the file finds it. The real `mgmt` command, real files; nothing is created."""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

from tests.e2e.helpers import Daemon, run_mgmt


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


def one_file(top: Path, name: str) -> str:
    return (
        f"graph: g\nresources:\n  file:\n    - {{name: {name}, path: {top}/b/{name}, content: x}}\n"
    )


async def test_a_directory_said_by_a_resource_that_left_is_said_by_the_next(
    tmp_path: Path,
) -> None:
    """The resource that said it would create a directory leaves with a new graph: the next
    resource that would create it says so (until 2026-12-07 the leaver's claim stayed in the
    engine's Shared for the daemon's life: the new resource's step was left out, said by
    nobody but a debug line naming a resource no longer in the graph)."""
    top = tmp_path / "top"
    graph = tmp_path / "g.yaml"
    graph.write_text(one_file(top, "one"))
    async with Daemon(["run", "--tmp-prefix", "--noop", "yaml", str(graph)]) as daemon:
        await daemon.wait_log(f"file[one]: would create parent directory {top}/b")
        await daemon.wait_log("converged:")
        graph.write_text(one_file(top, "two"))
        await daemon.wait_log(f"file[two]: would create {top}/b/two", timeout=30)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert f"file[two]: would create parent directory {top}/b\n" in daemon.log, daemon.log
    assert not top.exists()
