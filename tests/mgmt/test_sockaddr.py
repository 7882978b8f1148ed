"""mgmt.sockaddr: a Unix socket's address for a path of any length (real sockets)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from mgmt.sockaddr import Address
from tests.child import python

BIND = """
import socket, sys
from mgmt.sockaddr import Address
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    with Address(sys.argv[1]) as where:
        sock.bind(where)
except OSError as err:
    print(err.errno, err.strerror)
"""


def _deep(tmp_path: Path) -> Path:
    prefix = tmp_path / ("deep" * 15) / ("er" * 30)
    prefix.mkdir(parents=True)
    assert len(os.fsencode(prefix / "s.sock")) > 107
    return prefix / "s.sock"


def test_a_deep_path_is_bound_and_reached_where_it_is(tmp_path: Path) -> None:
    path = _deep(tmp_path)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
    ):
        opened = sorted(os.listdir("/proc/self/fd"))
        with Address(path) as where:
            server.bind(where)
        server.listen()
        assert path.is_socket()
        client.settimeout(30)
        with Address(path) as where:
            client.connect(where)
        assert sorted(os.listdir("/proc/self/fd")) == opened  # the directory's closed again
    with Address(tmp_path / "short.sock") as where:  # fits: itself, no descriptor
        assert where == str(tmp_path / "short.sock")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_without_proc_a_deep_path_says_so(tmp_path: Path) -> None:
    """Without /proc (a chroot's) a deep path cannot be reached through its directory: the
    error says why, not "No such file or directory" of a prefix that is there."""
    path = _deep(tmp_path)
    unmounted = 'umount -l /proc && exec "$@"'  # in a mount namespace of its own
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c", unmounted, "sh"]
    out = python(BIND, str(path), wrapper=unshare, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "36 longer than a Unix socket's address (107 bytes), and /proc is not mounted"
    ), out.stdout
