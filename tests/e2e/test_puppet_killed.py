"""A Puppet compile does not outlive a killed agent (leaks, 2026-12-07): Puppet ran in a session
of its own, so a SIGKILLed agent's compile ran on, orphaned, for up to its timeout (5 min), and
its private directory (`mgmt-puppet-*`, made by tempfile.mkdtemp, removed in a `finally` that a
killed agent never runs) was left in $TMPDIR for good, empty once Puppet had ended. Now Puppet
has a death signal, and its directory is a locked temporary prefix the next `--tmp-prefix` run
sweeps.

The real agent and the real Puppet, whose compile says it started (a `generate()` writing
Puppet's pid) and then runs on (a loop over two billion integers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, listing, run_mgmt, wait_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("puppet") is None, reason="needs puppet"),
]


def endless(started: Path) -> str:
    """A manifest whose compile writes Puppet's pid to `started`, then does not end."""
    new = f"{started}.new"
    script = f"echo $PPID > {new} && mv {new} {started}"
    return f"$s = generate('/bin/sh', '-c', '{script}')\nInteger[1, 2000000000].each |$i| {{ }}\n"


@contextlib.contextmanager
def pidfd_of(pid: int) -> Iterator[int]:
    """A pidfd of `pid` (it names that process for good, whatever reuses the pid); the process
    is SIGKILLed at the end if it still runs (a failure of the test: never left running)."""
    fd = os.pidfd_open(pid)
    try:
        yield fd
    finally:
        if not select.select([fd], [], [], 0)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.close(fd)


def cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as proc:
        return proc.read()


async def ended(pidfd: int, timeout: float) -> None:
    """Wait until the process of `pidfd` has ended (it is readable then)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await done
    finally:
        loop.remove_reader(pidfd)


async def test_a_killed_agents_compile_ends_and_its_directory_is_swept(tmp_path: Path) -> None:
    started, pp = tmp_path / "started", tmp_path / "endless.pp"
    pp.write_text(endless(started))
    async with Daemon(["run", "--tmp-prefix", "puppet", str(pp)]) as daemon:
        await wait_path(started, Path.exists, timeout=60)
        puppet = int(started.read_text())
        with pidfd_of(puppet) as pidfd:
            assert b"catalog" in cmdline(puppet)
            daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
            await ended(pidfd, 60)  # (before: it ran on, to the compile's 5 min timeout)
        assert daemon.tmpdir is not None
        left = {name.split("/")[0] for name in listing(daemon.tmpdir)}
        assert len(left) == 2, left  # the killed run's prefix, and Puppet's directory
        code, out = await asyncio.to_thread(
            run_mgmt, ["run", "--tmp-prefix", "--converged-timeout=0", "empty"], env=daemon.env
        )
        assert code == 0, out
        assert listing(daemon.tmpdir) == []  # both swept
