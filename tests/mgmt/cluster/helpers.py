"""Real etcd members for the cluster tests: free ports, short timings, no orphans.

Every member started here is a child of the test process with PR_SET_PDEATHSIG, and every
fixture checks that its pid is gone afterwards (waiting on a pidfd, not polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mgmt.cluster.etcdproc import EtcdProcess, EtcdSpec
from mgmt.cluster.options import Options
from mgmt.cluster.pki import TLSFiles

HEARTBEAT_MS = 10
ELECTION_MS = 100


_GIVEN: set[int] = set()  # every port free_ports handed out in this process


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now, none handed out before in this
    process: the kernel may give a port back as soon as it is closed, and two hosts of one test
    with the same peer port make a cluster that cannot grow (etcd: "Peer URLs already exists")."""
    held: list[socket.socket] = []  # open until the end: the kernel gives them to no one else
    fresh: list[int] = []
    try:
        while len(fresh) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _GIVEN:
                fresh.append(port)
        _GIVEN.update(fresh)
        return fresh
    finally:
        for sock in held:
            sock.close()


def options(
    hostname: str = "t",
    client_port: int | None = None,
    peer_port: int | None = None,
    scheme: str = "http",
    **kwargs: object,
) -> Options:
    """Options for one member on 127.0.0.1 with the short test timings."""
    if client_port is None or peer_port is None:
        client_port, peer_port = free_ports(2)
    client = [f"{scheme}://127.0.0.1:{client_port}"]
    peer = [f"{scheme}://127.0.0.1:{peer_port}"]
    base = Options(
        hostname=hostname,
        seeds=[],
        client_urls=client,
        server_urls=peer,
        advertise_client_urls=client,
        advertise_server_urls=peer,
        ideal_cluster_size=5,
        no_server=False,
        tls=TLSFiles(),
        peer_tls=TLSFiles(),
        heartbeat_ms=HEARTBEAT_MS,
        election_ms=ELECTION_MS,
        quota_bytes=0,
        compaction_retention="10m",
    )
    return replace(base, **kwargs)  # type: ignore[arg-type]


async def wait_pid_gone(pid: int, timeout: float = 10) -> None:
    """Wait (on a pidfd: an event, not a poll) until process `pid` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        async with asyncio.timeout(timeout):
            await gone.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    return False


@dataclass
class Node:
    """One etcd member of a test cluster."""

    name: str
    opts: Options
    proc: EtcdProcess

    @property
    def client_url(self) -> str:
        return self.opts.advertise_client_urls[0]

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid


async def start_members(tmp_path: Path, count: int, **kwargs: object) -> list[Node]:
    """A static `count`-member cluster (all started at once, as `new`)."""
    ports = free_ports(2 * count)
    scheme = str(kwargs.pop("scheme", "http"))
    nodes = []
    for i in range(count):
        name = f"m{i}"
        opts = options(name, ports[2 * i], ports[2 * i + 1], scheme=scheme, **kwargs)
        nodes.append(Node(name, opts, EtcdProcess(EtcdSpec(name, tmp_path / name, opts))))
    initial = ",".join(f"{n.name}={n.opts.advertise_server_urls[0]}" for n in nodes)
    for node in nodes:
        node.proc.spec.initial_cluster = initial
    await asyncio.gather(*(n.proc.start(timeout=30) for n in nodes))
    return nodes


@contextlib.asynccontextmanager
async def members(tmp_path: Path, count: int = 1, **kwargs: object) -> AsyncIterator[list[Node]]:
    """Start a cluster; stop it afterwards and check that no etcd process is left."""
    nodes = await start_members(tmp_path, count, **kwargs)
    try:
        yield nodes
    finally:
        pids = [n.pid for n in nodes]
        # A leader whose peers are gone spends seconds trying to hand over its leadership.
        await asyncio.gather(*(n.proc.stop(timeout=10 if count == 1 else 1) for n in nodes))
        for pid in pids:
            await wait_pid_gone(pid)
            assert not pid_alive(pid)


@contextlib.contextmanager
def cluster_env() -> Iterator[dict[str, str]]:
    """Environment for a `mgmt` subprocess: its etcd on free ports, with the short timings."""
    client_port, peer_port = free_ports(2)
    yield {
        "MGMT_CLIENT_URLS": f"https://127.0.0.1:{client_port}",
        "MGMT_SERVER_URLS": f"https://127.0.0.1:{peer_port}",
        "MGMT_ETCD_HEARTBEAT_INTERVAL": str(HEARTBEAT_MS),
        "MGMT_ETCD_ELECTION_TIMEOUT": str(ELECTION_MS),
    }
