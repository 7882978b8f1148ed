"""TLS (certificates generated here) and etcd authentication, for real."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import os
import ssl
import sys
import weakref
from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import WorldError
from mgmt.cluster import pki
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import Cluster
from mgmt.cluster.options import from_config
from mgmt.cluster.pki import TLSFiles
from mgmt.cluster.world import EtcdWorld
from mgmt.config import Config
from tests.mgmt.cluster.certs import CA
from tests.mgmt.cluster.helpers import (
    ELECTION_MS,
    HEARTBEAT_MS,
    free_ports,
    members,
    options,
    pid_alive,
)


async def test_tls_for_clients_and_peers(tmp_path: Path) -> None:
    ca = CA(tmp_path / "pki")
    leaves = {name: ca.leaf(name) for name in ("m0", "m1", "agent")}
    files = TLSFiles(ca.path, leaves["m0"].cert, leaves["m0"].key)
    async with members(tmp_path, 2, scheme="https", tls=files, peer_tls=files) as nodes:
        assert all(n.client_url.startswith("https://") for n in nodes)
        argv = nodes[0].proc.spec.argv()
        assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
        urls = [n.client_url for n in nodes]
        agent = TLSFiles(ca.path, leaves["agent"].cert, leaves["agent"].key)
        good = EtcdClient(urls, tls=agent, call_timeout=1, retry_for=2)
        no_cert = EtcdClient(urls, tls=TLSFiles(ca=ca.path), call_timeout=0.5, retry_for=0.5)
        other = CA(tmp_path / "other", "another CA")
        stranger = other.leaf("stranger")
        wrong_ca = EtcdClient(
            urls,
            tls=TLSFiles(other.path, stranger.cert, stranger.key),
            call_timeout=0.5,
            retry_for=0.5,
        )
        try:
            world = EtcdWorld(good, "h")
            await world.str_set("secret", "1")
            assert await world.str_get("secret") == "1"
            for client in (no_cert, wrong_ca):
                with pytest.raises(WorldError):
                    await EtcdWorld(client, "h").str_get("secret")
        finally:
            for client in (good, no_cert, wrong_ca):
                await client.close()


# A joiner's TLS refusals, said in words (tester9): run in a subprocess, whose stderr shows
# whether gRPC's core floods it (`E1205 ... Corruption detected.`, several lines a second).
_JOIN = """
import asyncio, sys
from pathlib import Path
from engine.errors import WorldError
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.pki import TLSFiles

async def main() -> None:
    url, ca, cert, key = sys.argv[1:5]
    tls = TLSFiles(Path(ca), Path(cert), Path(key))
    client = EtcdClient([url], tls=tls, call_timeout=0.5, retry_for=1.5)
    try:
        connected = await client.wait_connected(3)
        try:  # a read retried for 1.5 s: more handshakes (and gRPC's stderr lines, if any)
            await client.status()
        except WorldError:
            pass
        print("connected" if connected else client.last_error, flush=True)
    finally:
        await client.close()

asyncio.run(main())
"""


async def _join_with(url: str, ca: Path, cert: Path, key: Path) -> tuple[str, str]:
    """(stdout, stderr) of a client started in a subprocess with these files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _JOIN,
        url,
        str(ca),
        str(cert),
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return out.decode(), err.decode()


async def test_tls_refusals_are_said_in_words_without_grpcs_stderr_lines(tmp_path: Path) -> None:
    """Another cluster's CA, and a certificate minted by a clock 2 hours ahead (not yet valid
    here): one line each naming the cause, and nothing from gRPC's core on stderr."""
    ca = CA(tmp_path / "pki")
    member = ca.leaf("m0")
    files = TLSFiles(ca.path, member.cert, member.key)
    async with members(tmp_path, 1, scheme="https", tls=files, peer_tls=files) as nodes:
        url = nodes[0].client_url
        other = CA(tmp_path / "other", "another CA")
        stranger = other.leaf("stranger")
        out, err = await _join_with(url, other.path, stranger.cert, stranger.key)
        assert f"{url} presents a certificate that the CA in {other.path} did not sign" in out
        assert "another cluster's CA?" in out
        ahead = ca.leaf("ahead", ahead=datetime.timedelta(hours=2))
        out2, err2 = await _join_with(url, ca.path, ahead.cert, ahead.key)
        assert f"{url} refused this host's TLS certificate ({ahead.cert} is valid from" in out2
        assert "check this host's clock" in out2
        for text in (out, out2):
            assert "TSI_" not in text and "OPENSSL" not in text and ": OK" not in text
        for stderr in (err, err2):
            assert "Corruption detected" not in stderr and ".cc:" not in stderr, stderr


async def test_minted_certificates_start_a_day_back(tmp_path: Path) -> None:
    """A host whose clock is ahead of the cluster's by hours still joins: the CA and the
    certificates minted here are valid from a day before the minting host's time."""
    from cryptography import x509

    ca_dir = tmp_path / "ca"
    assert pki.create_ca(ca_dir)
    files = pki.mint(ca_dir, tmp_path / "tls", "h1", ["127.0.0.1"])
    now = datetime.datetime.now(datetime.UTC)
    for path in (ca_dir / pki.CA_CERT, files.cert):
        assert path is not None
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert cert.not_valid_before_utc <= now - datetime.timedelta(hours=23)


async def test_authentication_is_enabled_at_bootstrap_and_the_password_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cret-Pa55word"
    opts = options("h1", user="root", password=password, insecure=True)  # plain http
    assert password not in repr(opts)
    cluster = Cluster(opts, tmp_path / "prefix")
    try:
        assert await cluster.start()
        assert cluster.member is not None
        pid = cluster.member.pid
        await cluster.world.str_set("k", "v")  # the agent itself is authenticated
        url = opts.advertise_client_urls
        anonymous = EtcdClient(url, call_timeout=0.5, retry_for=0.5)
        wrong = EtcdClient(url, user="root", password="nope", call_timeout=0.5, retry_for=0.5)
        # Timeouts that bound a hang only: etcd checks a password with bcrypt, which took
        # longer than 0.5 s at load 27 (and the refused client retries, a check each time).
        right = EtcdClient(url, user="root", password=password, call_timeout=10, retry_for=30)
        try:
            with pytest.raises(WorldError):
                await EtcdWorld(anonymous, "x").str_get("k")
            with pytest.raises(WorldError):
                await EtcdWorld(wrong, "x").str_get("k")
            await wrong.close()  # its reconnections check its password again and again
            assert await EtcdWorld(right, "x").str_get("k") == "v"
        finally:
            for client in (anonymous, wrong, right):
                await client.close()
    finally:
        await cluster.stop()
    assert pid is not None and not pid_alive(pid)
    assert password not in caplog.text
    assert "authentication enabled for root" in caplog.text
    assert "--insecure-cluster: etcd runs without TLS or client certificates" in caplog.text


async def test_a_client_without_a_user_is_told_and_its_refused_watches_back_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host without --cluster-user of a cluster with authentication (tester9): one error
    naming the cause, and its watches, which etcd creates and cancels at once (permission
    denied), re-created with a growing delay: before, ~1,000 times a second, 57% of a core."""
    caplog.set_level(logging.DEBUG, logger="cluster")
    opts = options("h1", user="root", password="pw-for-root", insecure=True)
    cluster = Cluster(opts, tmp_path / "prefix")
    anonymous = EtcdClient(opts.advertise_client_urls, call_timeout=0.5, retry_for=0.5)
    anonymous.says_denied = True  # an agent's (mgmt.cluster.cluster.Cluster)
    try:
        assert await cluster.start()
        stamps: list[float] = []
        loop = asyncio.get_running_loop()
        six = asyncio.Event()

        class Count(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "canceled: " in record.getMessage():
                    stamps.append(loop.time())
                    if len(stamps) >= 6:
                        six.set()

        counter = Count()
        logging.getLogger("cluster").addHandler(counter)
        try:
            cancel = await anonymous.subscribe(b"/_mgmt/hosts/", lambda: None, prefix=True)
            async with asyncio.timeout(30):
                await six.wait()
            await cancel()
        finally:
            logging.getLogger("cluster").removeHandler(counter)
        # 5 re-creations back off 0.02 + 0.04 + 0.08 + 0.16 + 0.32 s: a lower bound only.
        assert stamps[5] - stamps[0] >= 0.5, stamps
        said = [
            r.getMessage() for r in caplog.records if "etcd authentication is on" in r.getMessage()
        ]
        assert said == [
            "etcd refused /_mgmt/hosts/: etcd authentication is on in this "
            "cluster and this host gives no user: give --cluster-user and "
            "--cluster-password-file (or this host's per-host credentials)"
        ], said
    finally:
        await anonymous.close()
        await cluster.stop()


async def test_a_non_root_user_gets_the_root_role(tmp_path: Path) -> None:
    opts = replace(options("h1"), user="mgmt", password="pw-for-mgmt")
    cluster = Cluster(opts, tmp_path / "prefix")
    try:
        assert await cluster.start()
        await cluster.world.str_set("k", "v")
        members_ = await cluster.client.members()  # a root-only call
        assert [m.name for m in members_] == ["h1"]
    finally:
        await cluster.stop()


async def _http_get(port: int, path: str, context: ssl.SSLContext | None) -> str:
    """What 127.0.0.1:port answers to `GET path` (its head; '' if refused or cut off)."""
    data = b""
    writer: asyncio.StreamWriter | None = None
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(request.encode())
            while b"\r\n\r\n" not in data and (chunk := await reader.read(4096)):
                data += chunk
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        pass
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await writer.wait_closed()
    return data.decode(errors="replace")


async def _etcdctl(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "etcdctl",
        "--endpoints",
        url,
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "3s",
        *args,
        env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_by_default_both_etcd_ports_refuse_whoever_has_no_cluster_certificate(
    tmp_path: Path,
) -> None:
    """The issue's attacker: a local user reaching 127.0.0.1's client port (etcdctl put) or
    the peer port (GET /members, POST /raft) without the cluster's certificate."""
    client_port, peer_port = free_ports(2)
    config = Config(
        hostname="h1",
        prefix=tmp_path / "prefix",
        client_urls=f"https://127.0.0.1:{client_port}",
        server_urls=f"https://127.0.0.1:{peer_port}",
        etcd_heartbeat_interval=HEARTBEAT_MS,
        etcd_election_timeout=ELECTION_MS,
    )
    cluster = Cluster(from_config(config, config.prefix), config.prefix)
    urls = [f"https://127.0.0.1:{client_port}"]
    tls_dir = config.prefix / "cluster-tls"
    try:
        assert await cluster.start()
        await cluster.world.str_set("k", "v")  # the agent itself, with its minted certificate
        ca = tls_dir / "ca.pem"
        assert (config.prefix / "cluster-ca").stat().st_mode & 0o777 == 0o700
        assert (config.prefix / "cluster-ca" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (tls_dir / "host.key").stat().st_mode & 0o777 == 0o600
        plain = EtcdClient([f"http://127.0.0.1:{client_port}"], call_timeout=0.5, retry_for=0.5)
        no_cert = EtcdClient(urls, tls=TLSFiles(ca=ca), call_timeout=0.5, retry_for=0.5)
        try:
            for client in (plain, no_cert):
                with pytest.raises(WorldError):
                    await EtcdWorld(client, "zz").str_set("k", "evil")
        finally:
            await plain.close()
            await no_cert.close()
        # The issue's own tool: etcdctl, without the cluster's certificate, on both schemes.
        for url, extra in ((urls[0], ["--cacert", str(ca)]), (urls[0].replace("s:", ":"), [])):
            code, out = await _etcdctl(url, *extra, "put", "/_mgmt/exported/zz/file/x", "{}")
            assert code != 0, out
        assert await cluster.world.str_get("k") == "v"
        member_files = ["--cert", str(tls_dir / "host.pem"), "--key", str(tls_dir / "host.key")]
        code, out = await _etcdctl(urls[0], "--cacert", str(ca), *member_files, "get", "k")
        assert code == 0, out  # the same tool with the certificate: the probes were sound
        # The peer port: plain HTTP, and TLS without a client certificate, get nothing; the
        # same request with the host's certificate is answered (the probe reaches etcd).
        assert "200 OK" not in await _http_get(peer_port, "/members", None)
        anonymous = ssl.create_default_context(cafile=str(ca))
        assert "200 OK" not in await _http_get(peer_port, "/members", anonymous)
        member = ssl.create_default_context(cafile=str(ca))
        member.load_cert_chain(tls_dir / "host.pem", tls_dir / "host.key")
        assert "200 OK" in await _http_get(peer_port, "/members", member)
    finally:
        await cluster.stop()


async def test_a_clean_stop_leaves_no_connection_for_etcd_to_wait_for(tmp_path: Path) -> None:
    """etcd's TLS listener waits a second for every open connection when it stops: by then the
    agent must hold no gRPC call (nor so its connection) of its own any more."""
    client_port, peer_port = free_ports(2)
    config = Config(
        hostname="h1",
        prefix=tmp_path / "prefix",
        client_urls=f"https://127.0.0.1:{client_port}",
        server_urls=f"https://127.0.0.1:{peer_port}",
        etcd_heartbeat_interval=HEARTBEAT_MS,
        etcd_election_timeout=ELECTION_MS,
    )
    cluster = Cluster(from_config(config, config.prefix), config.prefix)
    assert await cluster.start()
    await cluster.world.str_set("k", "v")
    conn = cluster.client._conn
    assert conn is not None and cluster.member is not None
    alive = weakref.ref(conn)
    del conn
    member, stop = cluster.member, cluster.member.stop
    seen: list[bool] = []

    async def checking_stop(timeout: float = 10) -> None:
        gc.collect()
        seen.append(alive() is None)
        await stop(timeout)

    member.stop = checking_stop  # type: ignore[method-assign]
    await cluster.stop()
    assert seen and all(seen)  # every time etcd was stopped, the connection was gone
