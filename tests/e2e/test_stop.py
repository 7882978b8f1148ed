"""A stop during a large first run (engine/stopgate.py): what is in progress finishes, nothing
new starts, the agent exits promptly, and the next run does the rest. The real `mgmt` command,
real files, real signals."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon

N = 2000  # files: a first run of a few seconds here, the first ones created within ~1.5 s
CREATED = re.compile(r"file\[f(\d+)\]: created (\S+)$")


def many_files(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    lines = ["graph: many", "resources:", "  file:"]
    lines += [f'    - {{name: f{i}, path: {out}/f{i}, content: "file {i}\\n"}}' for i in range(N)]
    graph = tmp_path / "graph.yaml"
    graph.write_text("\n".join(lines) + "\n")
    return graph, out


def created(daemon: Daemon) -> set[str]:
    return {m[2] for line in daemon.lines if (m := CREATED.search(line))}


def complete(out: Path) -> set[str]:
    """The paths under `out`, each asserted to be a managed file with its whole content (no
    temp file of an interrupted write)."""
    paths = set()
    for path in out.iterdir():
        i = int(path.name.removeprefix("f"))  # a temp file (.mgmt.*) fails here
        assert path.read_text() == f"file {i}\n", path
        paths.add(str(path))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_during_a_first_run_leaves_the_rest_to_the_next_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    graph, out = many_files(tmp_path)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as first:
        await first.wait_log(": created ", timeout=120)
        first.signal(sig)
        # A hang bound: it exits in about a second here (it wrote every queued file before).
        assert await first.wait(timeout=60) == 0  # a stop asked for is a clean stop
    done = complete(out)
    assert done == created(first)  # a "created" line for each file there, and only for them
    assert 0 < len(done) < N, "every file was written after the signal"
    undone = f"stopped: {N - len(done)} of {N} resources left undone"
    assert any(undone in line for line in first.lines), first.log
    assert not any("failed" in line or "Traceback" in line for line in first.lines), first.log

    async with Daemon(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)]) as second:
        assert await second.wait(timeout=120) == 0
    assert complete(out) == done | created(second)
    assert len(created(second)) == N - len(done)
