"""An operator's identity, for real: one etcd with per-host identities (authentication on), an
operator's certificate minted and admitted by the `mgmt cluster` commands; it pushes deploys
and writes nothing else (every refusal etcd's own)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.errors import WorldError
from mgmt import cli
from mgmt.cluster.client import EtcdClient
from mgmt.cluster.cluster import Cluster
from mgmt.cluster.identity import HOSTS, operator_permissions
from mgmt.cluster.pki import host_files, read_identity
from mgmt.deploy.status import status_key
from mgmt.deploy.store import NEWEST, records
from tests.e2e.helpers import run_mgmt
from tests.mgmt.cluster.helpers import options


def _mint(tmp_path: Path, *who: str) -> Path:
    out = tmp_path / "creds" / who[-1]
    args = ["cluster", "mint-cert", *who, "--ca-dir", str(tmp_path / "ca"), "--out", str(out)]
    assert cli.main(args) == 0  # in-process: fast
    return out


def test_an_operator_name_is_checked_and_never_a_host(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir(mode=0o700)
    base = ["cluster", "mint-cert", "--ca-dir", str(tmp_path / "ca")]
    for bad in (
        [*base, "--operator", "a/b", "--out", str(tmp_path / "x")],
        [*base, "--operator", "alice", "--core", "--out", str(tmp_path / "x")],
        [*base, "h1", "--operator", "alice", "--out", str(tmp_path / "x")],
        [*base, "operator:alice", "--out", str(tmp_path / "x")],  # a host taking its name
    ):
        assert cli.main(bad) == 2
    assert not (tmp_path / "x").exists()
    creds = _mint(tmp_path, "--operator", "alice")
    assert read_identity(creds / "host.pem") == ("operator:alice", False)
    assert {bytes(p.key) for p in operator_permissions()} == {b"/_mgmt/", b"/_mgmt/deploy/"}


async def test_an_operator_pushes_deploys_and_writes_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir(mode=0o700)
    core = _mint(tmp_path, "--core", "h1")
    alice = _mint(tmp_path, "--operator", "alice")
    tls_core = host_files(core)
    opts = options("h1", scheme="https", tls=tls_core, peer_tls=tls_core, identities=True)
    cluster = Cluster(opts, tmp_path / "h1")
    url = opts.advertise_client_urls[0]
    client = EtcdClient([url], tls=host_files(alice), call_timeout=1, retry_for=1)
    try:
        assert await cluster.start()
        admit = ["cluster", "admit", "--operator", "alice", "--cert-dir", str(core)]
        code, text = await asyncio.to_thread(run_mgmt, [*admit, "--endpoints", url])
        assert (code, text.strip()) == (
            0,
            "admitted operator:alice: may read the cluster and push deploys",
        )
        # `mgmt deploy` with the operator's certificate: stored.
        (tmp_path / "g.yaml").write_text("graph: g\n")
        tls = [f"--tls-{n}={alice / f}" for n, f in (("ca", "ca.pem"), ("cert", "host.pem"))]
        push = ["deploy", "--seeds", url, *tls, f"--tls-key={alice / 'host.key'}", "--unsigned"]
        code, text = await asyncio.to_thread(run_mgmt, [*push, "yaml", str(tmp_path / "g.yaml")])
        assert code == 0 and "deploy 1: yaml g.yaml" in text, text
        assert [r.id for r in await records(client)] == [1]  # it reads the cluster
        assert await client.get(NEWEST.encode()) == b"1"
        # Anything but the deploys: etcd refuses.
        for key in (status_key("h1"), HOSTS + "h1", "/_mgmt/exported/h1/x", "/_mgmt/deployx"):
            with pytest.raises(WorldError, match="permission denied"):
                await client.put(key.encode(), b"forged")
    finally:
        await client.close()
        await cluster.stop()


def test_without_credentials_the_commands_say_where_they_are(tmp_path: Path) -> None:
    """A host with per-host identities keeps its certificate in --cluster-cert-dir, not in
    <prefix>/cluster-tls/: `mgmt status --cluster --prefix P` said `(give --prefix or --tls-*)`
    to an operator who had given --prefix. A prefix that does not exist (a typo), or holds no
    credentials, is said as such: it said `mgmt: --tls-ca: no such file: /typo/cluster-tls/ca.pem`,
    naming a flag not given (operator tester, 2026-12-07)."""
    prefix, empty = tmp_path / "prefix", tmp_path / "empty"
    empty.mkdir()
    for command in (["status", "--cluster"], ["deploy", "--list"]):
        for given, says in (
            (prefix, f"mgmt: the prefix {prefix} does not exist: give --prefix DIR"),
            (empty, f"mgmt: the prefix {empty} holds no cluster credentials (no {empty}/"),
        ):
            code, text = run_mgmt([*command, "--prefix", str(given)])
            assert code == 2 and text.count("\n") == 1, text
            assert text.startswith(says), text
            assert "ca.pem, host.pem and host.key of a --cluster-cert-dir" in text, text
        code, text = run_mgmt([*command, "--tls-ca", str(tmp_path / "ca.pem")])
        assert code == 2 and text.strip() == f"mgmt: --tls-ca: no such file: {tmp_path}/ca.pem"


def test_a_password_or_key_file_that_is_not_one_is_one_line_at_once(tmp_path: Path) -> None:
    """--cluster-password-file: a FIFO waited for a writer forever, /dev/zero was read until
    memory ran out (12 GB in 20 s), a byte not UTF-8 was a traceback; --sign-key: a directory
    or a FIFO was "no such file". Each is one line, exit 2, before connecting."""
    program = tmp_path / "g.yaml"
    program.write_text("graph: g\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "latin1").write_bytes(b"pa\xe9ss\n")
    (tmp_path / "long").write_bytes(b"x" * (65 << 10))
    for name in ("latin1", "long"):  # (read as a key is: mode 0600, mgmt.cluster.options)
        (tmp_path / name).chmod(0o600)
    deploy = ["deploy", "--insecure-cluster", "--seeds", "http://127.0.0.1:9"]
    password = [*deploy, "--unsigned", "--cluster-user", "u", "--cluster-password-file"]
    for argv, said in (
        ([*password, str(tmp_path / "fifo")], "fifo: not a regular file"),
        ([*password, "/dev/zero"], "/dev/zero can be written by others (mode 0666)"),
        ([*password, str(tmp_path / "latin1")], "latin1 is not UTF-8 text"),
        ([*password, str(tmp_path / "long")], "long is larger than 4096 bytes"),
        ([*deploy, "--sign-key", str(tmp_path / "dir")], "dir: cannot read: a directory"),
        ([*deploy, "--sign-key", str(tmp_path / "fifo")], "fifo: cannot read: not a regular"),
    ):
        code, text = run_mgmt([*argv, "yaml", str(program)], timeout=60)  # a bound: the hang
        assert code == 2 and text.count("\n") == 1 and said in text, text
        assert "Traceback" not in text


def test_credentials_another_user_could_change_are_refused(tmp_path: Path) -> None:
    """`mgmt deploy --prefix P` and the --tls-* files: a CA that another local user could swap
    (a file writable by others, a directory they own) would have the command trust their
    server as the cluster, and give it the deploy. Refused before connecting, one line, exit 2."""
    (tmp_path / "creds").mkdir(mode=0o700)
    alice = _mint(tmp_path, "--operator", "alice")
    own = tmp_path / "prefix" / "cluster-tls"
    own.parent.mkdir(mode=0o700)
    own.mkdir(mode=0o700)
    for name in ("ca.pem", "host.pem", "host.key"):
        (own / name).write_bytes((alice / name).read_bytes())
        (own / name).chmod(0o600)
    listing = ["deploy", "--list", "--seeds", "https://127.0.0.1:9", "--prefix", str(own.parent)]

    def refused(argv: list[str], says: str) -> None:
        code, text = run_mgmt(argv)
        assert code == 2 and text.count("\n") == 1 and says in text, text

    (own / "ca.pem").chmod(0o666)
    refused(listing, f"{own}/ca.pem can be written by others (mode 0666): refusing to trust")
    (own / "ca.pem").chmod(0o644)
    (own / "host.key").chmod(0o644)
    refused(listing, f"{own}/host.key (owner uid 0, mode 0644): a private key must be")
    (own / "host.key").chmod(0o600)
    os.chown(own, 65534, 65534)  # nobody's directory: they could swap what is in it
    refused(listing, f"{own} is owned by uid 65534: refusing to trust {own}/ca.pem")
    os.chown(own, 0, 0)
    explicit = [*listing[:4], f"--tls-ca={own / 'ca.pem'}", f"--tls-cert={alice / 'host.pem'}"]
    (alice / "host.key").chmod(0o604)
    refused([*explicit, f"--tls-key={alice / 'host.key'}"], "a private key must be a file")


def test_a_prefix_that_is_a_file_or_flags_half_given_are_said_as_such(tmp_path: Path) -> None:
    """leaks review, 2026-12-07: a --prefix naming a file was said not to exist, and --tls-ca
    and --tls-cert given without --tls-key were said as a prefix with no credentials (`the
    prefix /var/lib/mgmt does not exist`, a prefix not given), not as the flag missing."""
    given = tmp_path / "a-file"
    given.write_text("")
    ca, cert = tmp_path / "ca.pem", tmp_path / "host.pem"
    ca.write_text("")
    cert.write_text("")
    half = ["--tls-ca", str(ca), "--tls-cert", str(cert), "--prefix", str(tmp_path / "p")]
    for command in (["status", "--cluster"], ["deploy", "--list"]):
        code, text = run_mgmt([*command, "--prefix", str(given)])
        assert code == 2 and text.count("\n") == 1, text
        assert text.startswith(f"mgmt: the prefix {given} is not a directory: give"), text
        code, text = run_mgmt([*command, *half])
        assert code == 2 and text.count("\n") == 1, text
        assert text.startswith(
            f"mgmt: --tls-key not given (and no {tmp_path}/p/cluster-tls/host.key): "
            "give --tls-ca, --tls-cert and --tls-key together"
        ), text
