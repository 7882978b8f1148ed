"""A file system that stops answering (a hung NFS server, a FUSE daemon that stopped): the real
agent with a real FUSE mount whose file's READ is never answered (tests/fusehang.py).

The other resources of the graph converge and are repaired, `mgmt status` answers, the resource
on the mount fails per its meta params naming the path, and a SIGTERM stops the agent at once.
Its last thread, in the kernel's wait for the read (uninterruptible once the server took the
request), keeps the process from being reaped until the server ends (no pidfd tells the exit of
its main thread alone: a PIDFD_THREAD one is not woken for a group leader that waits for the
rest): the test ends the server once the agent said it stopped.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import ROOT, Daemon, has_content, run_mgmt, wait_path
from tests.fusehang import _detach


@dataclass
class Hung:
    mnt: Path  # the mount point; its file `f` is never read
    server: subprocess.Popen[bytes]

    def end(self) -> None:
        end(self.server)


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Hung]:
    """A FUSE mount (tests/fusehang.py) at tmp_path/mnt, its file `f` never read; ended and
    detached whatever the test's outcome."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fusehang", str(mnt)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        line = server.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            server.kill()
            _, err = server.communicate(timeout=10)
            pytest.skip(f"no FUSE mount here: {err.decode(errors='replace').strip()}")
        yield Hung(mnt, server)
    finally:
        end(server)
        _detach(str(mnt))


def end(server: subprocess.Popen[bytes]) -> None:
    """End the FUSE server (its stdin closed: the kernel aborts its connection, every read
    still waiting fails), then collect it."""
    if server.stdin is not None and not server.stdin.closed:
        server.stdin.close()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)
    for stream in (server.stdout, server.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.slow
async def test_a_hung_file_system_holds_only_its_own_resource(hung: Hung, tmp_path: Path) -> None:
    """On main the agent's loop blocked in the pread of the small-file compare: the other
    file was never made, SIGTERM unheard."""
    other = tmp_path / "other"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        f"    - name: {hung.mnt / 'f'}\n      content: abcd\n"
        "      meta: {timeout: 1000, retry: -1, delay: 200}\n"
        f"    - name: {other}\n      content: hello\n"
    )
    # A temporary prefix: the Daemon's end checks that the agent removed it.
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        try:
            await daemon.wait_log(f"created {other}", timeout=30)
            found = re.search(r"temporary prefix (\S+) ", daemon.log)
            assert found, daemon.log
            prefix = found[1]
            await daemon.wait_log(f"{hung.mnt / 'f'}: the file system (fuse) does not answer", 30)
            other.unlink()  # still repaired
            await wait_path(other, has_content("hello"), timeout=30)
            code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", prefix], 30)
            assert code == 1, out  # it answers: not converged, naming what hangs
            assert "mnt/f: the file system (fuse) does not answer" in out, out
            daemon.signal(signal.SIGTERM)
            await daemon.wait_log("stopped: 1 of 2 resources left undone", 15)
        finally:
            hung.end()  # the read fails: the last thread ends, the process can be reaped
        assert await daemon.wait(15) == 0, daemon.log


@pytest.mark.slow
async def test_without_a_timeout_the_wait_is_said_and_a_stop_ends_it(
    hung: Hung, tmp_path: Path
) -> None:
    """No meta timeout: a warning says what the check waits for, and the graceful stop (which
    waits for a check in progress) ends that wait at once."""
    path = hung.mnt / "f"
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: {path}\n      content: abcd\n")
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        try:
            await daemon.wait_log(f"{path}: the file system (fuse) does not answer: its check", 30)
            daemon.signal(signal.SIGTERM)
            await daemon.wait_log("does not answer (waited", 15)
            assert "stopped while it waited" in daemon.log
        finally:
            hung.end()
        assert await daemon.wait(15) == 0, daemon.log


@pytest.mark.slow
async def test_a_program_reading_a_hung_file_says_so_and_stops_at_once(
    hung: Hung, tmp_path: Path
) -> None:
    """On main nothing was logged while the first graph waited for the read (not even "agent
    starting"), and the stop waited READ_CLOSE_WAIT (5 s) for it."""
    program = tmp_path / "p.mcl"
    path = hung.mnt / "f"
    program.write_text(
        f'import "os"\n$x = os.readfile("{path}")\nfile "{tmp_path / "out"}" {{\n'
        "\tcontent => $x,\n}\n"
    )
    args = ["run", "--prefix", str(tmp_path / "prefix"), "lang", str(program)]
    async with Daemon(args) as daemon:
        try:
            await daemon.wait_log(f"{program}: the graph waits for os.readfile('{path}'", 30)
            assert f"(on fuse: a file system that can stop answering)) at {program}:2:6" in (
                daemon.log
            )
            await daemon.wait_log("agent starting", 30)
            daemon.signal(signal.SIGTERM)
            # Not waited for (was: READ_CLOSE_WAIT, 5 s, then a warning).
            await daemon.wait_log(f"{path} (fuse): still being read at the program's close", 15)
        finally:
            hung.end()
        assert await daemon.wait(15) == 0, daemon.log


def test_a_fuse_mount_is_known_by_the_mount_table_alone(
    hung: Hung, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine.hangfs: the path under the mount (and the mount point) is on `fuse`, the
    directory above it is not (nothing on the path is touched: its READ would never return)."""
    from engine import hangfs

    # The table's change asked for now (a check of this process's may have asked < 0.5 s ago).
    monkeypatch.setattr(hangfs, "_asked", [-hangfs.RECHECK])

    assert hangfs.kind_of(str(hung.mnt / "f")) == "fuse"
    assert hangfs.kind_of(str(hung.mnt)) == "fuse"
    assert hangfs.kind_of(f"{hung.mnt}/../other") is None
    assert hangfs.kind_of(str(tmp_path)) is None
    assert hangfs.hangs("fuse.sshfs") and hangfs.hangs("nfs4") and not hangfs.hangs("ext4")
