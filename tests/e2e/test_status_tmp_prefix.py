"""`mgmt status` against an agent run with --tmp-prefix: found, and named when it does not
answer (leads, 2026-12-06: its prefix is made at its start, so `mgmt status` could not know
it, and a stopped one read `no agent answers ...` with no pid: the pid was looked for in the
lock file of a normal prefix only)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgmt.status.command import silent
from mgmt.tmpprefix import TmpPrefix, running
from tests.e2e.helpers import Daemon, run_mgmt, short_tmpdir
from tests.sigstop import stopped


async def test_a_tmp_prefix_agent_is_found_and_named_when_stopped(tmp_path: Path) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(f"graph: tmp\nresources:\n  file:\n    - {{name: {tmp_path}/f}}\n")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("temporary prefix")
        assert daemon.proc is not None
        pid = daemon.proc.pid
        found = re.search(r"temporary prefix (\S+) ", daemon.log)
        assert found, daemon.log
        prefix = Path(found[1])
        await daemon.wait_log("converged")
        # Asked at another prefix (the default one, where no agent runs): where it runs.
        code, out = await asyncio.to_thread(
            run_mgmt, ["status", "--prefix", str(tmp_path / "none")], env=daemon.env
        )
        assert code == 2, out
        assert f"pid {pid}: mgmt status --prefix {prefix}" in out, out
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0 and "1 converged" in out, out
        # The prefix it names, given to another agent: refused, nothing made there (until
        # 2026-12-07 that agent ran, took this one's status socket and removed it at its exit).
        before = sorted(os.listdir(prefix))
        code, out = await asyncio.to_thread(
            run_mgmt, ["run", "--prefix", str(prefix), "--converged-timeout=0", str(graph)]
        )
        assert code == 2 and out.count("\n") == 1, out
        assert f"temporary prefix of a run with --tmp-prefix (pid {pid})" in out, out
        assert sorted(os.listdir(prefix)) == before
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0 and "1 converged" in out, out
        async with stopped(pid):  # (what `mgmt status` says after its 10 s wait)
            said = silent(prefix / "status.sock", prefix)
        assert said.startswith(f"the agent (pid {pid}) did not answer on {prefix}/status.sock")
        assert f"it is stopped (SIGSTOP, ^Z: `kill -CONT {pid}` resumes it)" in said, said
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A short private directory for prefixes whose status.sock the test binds."""
    with short_tmpdir() as made:
        yield made


def test_running_lists_live_prefixes_that_serve_a_socket(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp))
    with TmpPrefix(tmp) as quiet, TmpPrefix(tmp) as serving:
        assert (quiet.path, str(os.getpid())) not in running()  # no socket
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(serving.path / "status.sock"))
            mine = [found for found in running() if found[0].parent == tmp]
            assert mine == [(serving.path, str(os.getpid()))]
    assert not [found for found in running() if found[0].parent == tmp]  # gone


def test_running_trusts_no_prefix_another_user_could_have_made(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review4, 2026-12-06: a live, serving prefix is listed only when it is a directory of
    this user's, 0700, not a symlink: another user's (a plant in /tmp naming a socket of
    theirs for `mgmt status --prefix` to be pointed at), one others may enter, or a link to
    ours are not."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    monkeypatch.setenv("TMPDIR", str(tmp))
    with TmpPrefix(tmp) as theirs, TmpPrefix(tmp) as open_, TmpPrefix(tmp) as ours:
        socks = []
        for prefix in (theirs, open_, ours):
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(prefix.path / "status.sock"))
            socks.append(sock)
        try:
            os.chown(theirs.path, 65534, 65534)
            os.chmod(open_.path, 0o755)
            (tmp / "mgmt-link").symlink_to(ours.path)
            mine = [found for found in running() if found[0].parent == tmp]
            assert mine == [(ours.path, str(os.getpid()))]
        finally:
            os.chown(theirs.path, 0, 0)
            for sock in socks:
                sock.close()
