"""The ports this host's etcd listens on: free loopback ones for a `--tmp-prefix` run, and a
port another process holds said before anything is applied.

A `--tmp-prefix` run is thrown away at its end: it must not collide with a cluster already on
this host. Its etcd listens on two ports the kernel picks free on 127.0.0.1 (`tmp_ports`), for
each of `--client-urls`/`--server-urls` not given (nor its `--advertise-*`). Before 2026-12-06
it took 2379/2380 as any run: beside an agent already serving there, its etcd could not bind,
and its client reached the other cluster instead ("presents a certificate that the CA ... did
not sign"). mgmt (Go) takes etcd's defaults there too, and its embedded etcd fails to bind.

Each port this host's etcd would listen on is bound once, as etcd binds it (SO_REUSEADDR),
before anything is applied (`check_free`): one taken by another process is a one-line error
naming the port, the flag to change and, when /proc says, the process (exit 75: a host's state
that may pass, as a full disk is: a unit restarts on it, not on exit 2's bad input), for a host
that starts a cluster (no `--seeds`: its member is needed at once). A host that joins one
(`--seeds`) runs a member only if the leader nominates it, maybe never: the same line is a
warning, and it goes on as a client (its member, if nominated, fails to bind, says so once
and backs off: mgmt/cluster/cluster.py, `_cool_down`; tester9's design). The port can still be taken between that look and etcd's start: etcd then fails to
bind and the cluster says so (mgmt/cluster/cluster.py, `_cool_down`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
from typing import TYPE_CHECKING

from engine.errors import ValidationError
from mgmt.address import split_url

if TYPE_CHECKING:
    from mgmt.cluster.options import Options
    from mgmt.config import Config

LOOPBACK = "127.0.0.1"
log = logging.getLogger("cluster")
_warned: set[str] = set()  # the URLs a joining host was warned of


class PortTaken(ValidationError):
    """A port this host's etcd listens on is held by another process (exit 75, not 2: the
    flags are fine, the host's state may pass)."""


def tmp_ports(config: Config) -> None:
    """For a `--tmp-prefix` run: `config`'s client and server URLs on free loopback ports, for
    those neither given nor advertised (`--client-urls`, `--advertise-client-urls`...). The
    ports are the kernel's pick (a bind to port 0), let go at once for etcd to take."""
    if not config.tmp_prefix or config.no_server:
        return
    scheme = "http" if config.insecure_cluster else "https"
    for listen, advertise in (
        ("client_urls", "advertise_client_urls"),
        ("server_urls", "advertise_server_urls"),
    ):
        if not getattr(config, listen) and not getattr(config, advertise):
            setattr(config, listen, f"{scheme}://{LOOPBACK}:{free_port(LOOPBACK)}")


def free_port(host: str) -> int:
    """A TCP port free on `host` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_free(options: Options) -> None:
    """PortTaken (naming the flag) if a port this host's etcd listens on is held by
    another process (none with --no-server: it listens on none); for a host joining a
    cluster (--seeds), a warning of it instead."""
    if options.no_server:
        return
    for flag, urls in (
        ("--client-urls", options.client_urls),
        ("--server-urls", options.server_urls),
    ):
        for url in urls:
            parts = split_url(url, flag)
            host, port = parts.hostname, parts.port
            if host is None or port is None:
                continue  # (refused by options.check_url already)
            if _taken(host, port):
                who = holder(port) or "another process"
                if not options.seeds:
                    raise PortTaken(
                        f"port {port} of {url} is taken by {who}: stop it or give this host "
                        f"another {flag}",
                        flag,
                    )
                if url in _warned:  # (checked again as the cluster starts: said once)
                    continue
                _warned.add(url)
                log.warning(
                    "%s: port %d of %s is taken by %s: this host's etcd member cannot start "
                    "if the cluster nominates it (a client until then); stop it or give this "
                    "host another %s",
                    flag, port, url, who, flag,
                )  # fmt: skip


def _taken(host: str, port: int) -> bool:
    """Whether binding `host:port` as etcd does fails because another socket holds it. A host
    that is not an IP address, or not one of this host's, is left to etcd to say."""
    if host == "localhost":
        host = LOOPBACK
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners
        try:
            sock.bind((host, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def holder(port: int) -> str:
    """ "PROGRAM (pid N)" of the process listening on TCP `port`, when /proc tells ("": not
    known: another user's process, unless we run as root). Only on the error path: a walk of
    every process's descriptors."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                # local address HEX:PORT, state 0A (LISTEN), inode
                if (
                    len(fields) > 9
                    and fields[3] == "0A"
                    and int(fields[1].rpartition(":")[2], 16) == port
                ):
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return ""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        with open(f"/proc/{pid}/comm") as comm:
                            return f"{comm.read().strip()} (pid {pid})"
    return ""
