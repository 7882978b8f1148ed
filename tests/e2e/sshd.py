"""A real OpenSSH server on 127.0.0.1 for the remote kind's tests.

A free port, a throwaway host key and client key, root's login by key only. It runs in a
private mount namespace (unshare) where a scratch directory is bound over /run (sshd's
privilege separation directory, /run/sshd, exists there without touching the host's /run)
and another over /var/lib (where `remote` keeps its cache: /var/lib/mgmt/remote/): nothing
of the host's system directories changes. The remote agents it starts run in that namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.mgmt.cluster.helpers import free_ports

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    client_key: Path  # the private key root logs in with
    hostkey: str  # the host key's base64 part (a known_hosts line's key)
    var_lib: Path  # what the sessions see as /var/lib
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}/"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        check=True,
        timeout=30,
    )


def _prepare(root: Path, port: int, users: bool) -> Path:
    """Keys, authorized_keys, the directories to bind, the config: its path. With `users`,
    each user's own ~/.ssh/authorized_keys, under StrictModes (sshd's defaults)."""
    assert shutil.which("ssh-keygen") and os.path.exists(SSHD), "scripts/apt-packages.txt"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _keygen(root / "host_key")
    _keygen(root / "id_ed25519")
    (root / "authorized_keys").write_bytes((root / "id_ed25519.pub").read_bytes())
    (root / "run" / "sshd").mkdir(parents=True, mode=0o755)
    (root / "var_lib").mkdir(mode=0o755)
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\n"
        f"AuthorizedKeysFile {'.ssh/authorized_keys' if users else f'{root}/authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes {'yes' if users else 'no'}\nPidFile none\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    return config


def _left_in(namespace: str) -> list[int]:
    """The processes still in the mount namespace `namespace` (what our sshd started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    found.append(int(entry))
    return found


@contextlib.asynccontextmanager
async def sshd(root: Path, *, users: bool = False) -> AsyncIterator[Sshd]:
    (port,) = free_ports(1)
    config = await asyncio.to_thread(_prepare, root, port, users)
    inner = (
        f"mount --bind {root}/run /run && mount --bind {root}/var_lib /var/lib && "
        f"exec {SSHD} -D -e -f {config}"
    )
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):  # readiness: its own "listening" line
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                raise AssertionError("sshd exited: " + "".join(lines))
            lines.append(raw.decode(errors="replace"))
            if "Server listening on" in lines[-1]:
                break
    drain = asyncio.create_task(_drain(proc.stderr))
    hostkey = (root / "host_key.pub").read_text().split()[1]
    namespace = os.readlink(f"/proc/{proc.pid}/ns/mnt")
    try:
        yield Sshd(port, root / "id_ed25519", hostkey, root / "var_lib", proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        for pid in await asyncio.to_thread(_left_in, namespace):  # a remote agent left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
