"""End to end: another local user (uid 65534, through setpriv) runs the operator's commands
against an agent's prefix it may not read (0700, root's). Each says it in one line naming the
file, whose prefix it is and what to give instead; exit 2, no traceback. Until 2026-12-05
`mgmt status --cluster` and `mgmt deploy --status/--list` printed a PermissionError's
traceback, and `mgmt status` said `no agent answers` of an agent that was answering."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import MGMT, ROOT, Daemon, searchable_dir

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv (another real user)"
)


def as_nobody(args: list[str]) -> tuple[int, str]:
    """The real `mgmt ARGS` as uid/gid 65534: (exit code, stderr+stdout)."""
    assert SETPRIV is not None
    argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *MGMT, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    return proc.returncode, proc.stderr + proc.stdout


@pytest.fixture
def prefix() -> Iterator[Path]:
    """A prefix as an agent run as root keeps it: 0700 in a directory every user may search
    (tmp_path's parents are root's alone: its owner could not be named)."""
    with searchable_dir("mgmt-other-user-") as top:
        path = top / "prefix"
        path.mkdir(mode=0o700)
        yield path


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--cluster", "--seeds", "https://127.0.0.1:24379"],
        ["deploy", "--status", "--seeds", "https://127.0.0.1:24379"],
        ["deploy", "--list"],
    ],
    ids=["status-cluster", "deploy-status", "deploy-list"],
)
def test_the_cluster_commands_say_the_prefix_is_another_users(
    prefix: Path, args: list[str]
) -> None:
    code, out = as_nobody([*args, "--prefix", str(prefix)])
    assert code == 2, out
    assert out.splitlines() == [
        f"mgmt: cannot read {prefix}/cluster-tls/ca.pem: Permission denied: {prefix} is "
        "root's alone: run as root, or give --prefix DIR (a host's state directory this user "
        "may read), or --tls-*"
    ]


def test_a_tls_file_given_that_this_user_may_not_read_is_named_alone(prefix: Path) -> None:
    tls = [f"--tls-{what}={prefix}/../{what}" for what in ("ca", "cert", "key")]
    secret = prefix.parent / "ca"
    secret.write_text("")
    secret.chmod(0o600)
    code, out = as_nobody(["deploy", "--list", "--prefix", "/nonexistent", *tls])
    assert code == 2, out
    assert out.splitlines() == [f"mgmt: cannot read {prefix}/../ca: Permission denied"]


async def test_status_says_the_running_agent_is_another_users(prefix: Path) -> None:
    graph = prefix.parent / "g.yaml"
    graph.write_text("graph: g\nresources:\n  noop:\n    - name: n\n")
    async with Daemon(["run", "--prefix", str(prefix), "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        code, out = await asyncio.to_thread(as_nobody, ["status", "--prefix", str(prefix)])
        assert code == 2, out
        assert out.splitlines() == [
            f"mgmt status: cannot read {prefix}/status.sock: Permission denied: {prefix} is "
            "root's alone: run as root, or give --prefix DIR of an agent of this user"
        ]
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_status_refuses_a_prefix_another_user_controls(prefix: Path) -> None:
    """tester13 #19: `mgmt status --prefix DIR` believed whatever answered on DIR/status.sock,
    whoever owned DIR: uid 65534's fake agent said `file[/etc/shadow] converged ... all good`,
    exit 0. Now a prefix another user controls (or one below a directory they do) is refused,
    exit 2, before anything is asked."""
    import json

    theirs = prefix.parent / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    fake = {"host": "vm", "converged": True, "converged_since": 1, "counts": {"converged": 1}}
    fake |= {"vertices": [{"id": "file[/etc/shadow]", "state": "converged", "since": 1}]}
    fake["vertices"][0] |= {"error": "", "last_change": "all good, nothing to see"}
    body = json.dumps(fake).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        writer.close()

    for where in (theirs, theirs / "pfx"):
        where.mkdir(exist_ok=True)
        server = await asyncio.start_unix_server(answer, str(where / "status.sock"))
        try:
            argv = [*MGMT, "status", "--prefix", str(where)]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
            )
            out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        finally:
            server.close()
            await server.wait_closed()
        assert proc.returncode == 2, out
        assert out == (
            f"mgmt status: --prefix: {theirs} is owned by uid {NOBODY}: refusing to believe "
            f"what answers on {where}/status.sock\n"
        )
