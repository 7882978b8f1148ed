"""Cluster options from the CLI's Config: URLs, loopback-only plain http, TLS files, auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.graph import Graph
from mgmt.cli import parse
from mgmt.cluster import needs_cluster
from mgmt.cluster.options import from_config
from mgmt.cluster.pki import create_ca
from mgmt.config import Config
from mgmt.yamlgraph import parse as parse_graph
from tests.mgmt.cluster.certs import CA


def test_defaults_are_loopback_with_mutual_tls(tmp_path: Path) -> None:
    opts = from_config(Config(hostname="h", prefix=tmp_path))
    assert opts.client_urls == ["https://127.0.0.1:2379"]
    assert opts.server_urls == ["https://127.0.0.1:2380"]
    assert opts.advertise_client_urls == opts.client_urls
    assert opts.ideal_cluster_size == 5 and opts.seeds == []
    # mgmt's -1 is its default; URLs split on ',', ';' and white space, as mgmt splits them.
    seeds = "https://10.0.0.1:2379; https://10.0.0.2:2379 https://10.0.0.3:2379"
    opts = from_config(
        Config(hostname="h", prefix=tmp_path, ideal_cluster_size=-1, client_urls=seeds)
    )
    assert opts.ideal_cluster_size == 5 and len(opts.client_urls) == 3
    assert opts.lease_ttl == 3 and opts.call_timeout == 2.0
    # The first host creates the cluster's CA under its prefix and mints from it.
    assert opts.ca_dir == tmp_path / "cluster-ca" and opts.create_ca and not opts.insecure


def test_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MGMT_IDEAL_CLUSTER_SIZE", "3")
    create_ca(tmp_path / "ca")
    config = parse(
        [
            "run",
            "--seeds",
            "https://127.0.0.1:2379,https://[::1]:2379",
            "--cluster-ca-dir",
            str(tmp_path / "ca"),
            "--no-server",
            "empty",
        ]
    )
    opts = from_config(config)
    assert opts.seeds == ["https://127.0.0.1:2379", "https://[::1]:2379"]
    assert opts.no_server and opts.ideal_cluster_size == 3
    assert opts.ca_dir == tmp_path / "ca" and not opts.create_ca  # a joiner never creates one


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seeds", "http://10.0.0.1:2379", "plain http lets any local user write the cluster"),
        ("client_urls", "http://127.0.0.1:2379", "plain http lets any local user write"),
        ("server_urls", "127.0.0.1:2380", "expected URLs like"),
        ("advertise_client_urls", "https://127.0.0.1", "explicit port"),
        ("ideal_cluster_size", 0, "must be >= 1"),
        ("etcd_election_timeout", 20, "at least 5 heartbeats"),
        ("etcd_compaction_retention", "soon", "expected a duration"),
        ("tls_cert", Path("/nonexistent.crt"), "give both a certificate and its key"),
        ("cluster_user", "root", "needs both --cluster-user and --cluster-password-file"),
        ("seeds", "https://127.0.0.1:2379", "joining a cluster needs its credentials"),
        # Hosts and URLs urllib, idna or etcd would choke on: one line each, naming the flag.
        ("client_urls", "https://[::1:2379", "is not a URL: Invalid IPv6 URL"),
        ("server_urls", "https://a..b:2380", "'a..b' is neither an IP address nor a host"),
        ("seeds", f"https://{'x' * 64}.example:2379", "is neither an IP address nor a host"),
        ("advertise_server_urls", "https://-a.b:2380", "is neither an IP address nor a host"),
        ("advertise_client_urls", "https://a*b:2379", "is neither an IP address nor a host"),
        ("advertise_client_urls", "https://a b:2379", "'https://a' needs an explicit port"),
        # Its etcd keys would overlap host a's (withdrawn with a's), or name an operator.
        ("hostname", "a/b", "--hostname: 'a/b' cannot be a host's identity"),
        ("hostname", "operator:x", "cannot be a host's identity"),
        ("hostname", "h\nforged", "cannot be a host's identity"),
    ],
)
def test_bad_options_name_the_flag(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config = {"hostname": "h", "prefix": Path("/nonexistent"), field: value}
        from_config(Config(**config))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["https://localhost:2379", "https://[fe80::1%25eth0]:2379", "https://bücher.example:2379"],
)
def test_good_hosts_pass(url: str) -> None:
    assert from_config(Config(hostname="h", prefix=Path("/nonexistent"), client_urls=url))


def test_a_joiner_needs_the_cluster_ca_or_its_files(tmp_path: Path) -> None:
    seeds = "https://127.0.0.1:2379"
    with pytest.raises(ValidationError, match="--seeds: joining a cluster needs"):
        from_config(Config(hostname="h", prefix=tmp_path, seeds=seeds))
    with pytest.raises(ValidationError, match="--cluster-ca-dir: no cluster CA in"):
        from_config(Config(hostname="h", seeds=seeds, cluster_ca_dir=tmp_path / "none"))
    ca = CA(tmp_path / "pki")
    leaf = ca.leaf("h")
    with pytest.raises(ValidationError, match="--tls-ca: mutual TLS needs a CA"):
        from_config(Config(hostname="h", seeds=seeds, tls_cert=leaf.cert, tls_key=leaf.key))
    opts = from_config(
        Config(hostname="h", seeds=seeds, tls_ca=ca.path, tls_cert=leaf.cert, tls_key=leaf.key)
    )
    assert opts.ca_dir is None and opts.tls.cert == leaf.cert and opts.peer_tls.ca == ca.path
    # A host whose prefix holds the CA (the first host, restarted with --seeds) uses it.
    create_ca(tmp_path / "prefix" / "cluster-ca")
    opts = from_config(Config(hostname="h", prefix=tmp_path / "prefix", seeds=seeds))
    assert opts.ca_dir == tmp_path / "prefix" / "cluster-ca"


def test_insecure_cluster_is_the_plain_mode() -> None:
    opts = from_config(Config(hostname="h", seeds="http://10.0.0.1:2379", insecure_cluster=True))
    assert opts.seeds == ["http://10.0.0.1:2379"] and opts.client_urls[0].startswith("http://")
    assert opts.insecure and opts.ca_dir is None and not opts.tls.enabled


def test_the_password_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    opts = from_config(Config(hostname="h", cluster_user="root", cluster_password_file=secret))
    assert opts.password == "hunter2"
    assert "hunter2" not in repr(opts)
    secret.write_text("")
    with pytest.raises(ValidationError, match="empty"):
        from_config(Config(hostname="h", cluster_user="root", cluster_password_file=secret))
    with pytest.raises(ValidationError, match="cannot read"):
        from_config(
            Config(hostname="h", cluster_user="root", cluster_password_file=tmp_path / "none")
        )


def test_which_runs_need_the_cluster() -> None:
    plain = parse_graph("graph: g\nresources:\n  file:\n    - name: /tmp/x\n      content: x\n")
    assert not needs_cluster(Config(hostname="h"), plain)
    assert needs_cluster(Config(hostname="h", seeds="https://127.0.0.1:2379"), plain)
    assert needs_cluster(Config(hostname="h", frontend="empty"), plain)
    exported = parse_graph("graph: g\nresources:\n  noop:\n    - name: '@@x'\n")
    assert needs_cluster(Config(hostname="h"), exported)
    collect = parse_graph("graph: g\ncollect:\n  - {kind: file, pattern: /tmp/}\n")
    assert needs_cluster(Config(hostname="h"), collect)
    kv = parse_graph("graph: g\nresources:\n  kv:\n    - name: k\n      value: v\n")
    assert needs_cluster(Config(hostname="h"), kv)
    assert not needs_cluster(Config(hostname="h"), type(plain)(Graph("empty")))


@pytest.mark.parametrize(
    ("mode", "taken"), [(0o600, True), (0o640, True), (0o440, True), (0o604, False), (0o644, False)]
)
def test_a_password_file_its_group_may_read_but_not_others(
    tmp_path: Path, mode: int, taken: bool
) -> None:
    """A group may read the password file (root's 0640 file of the agent's group, as a previous
    run's `file` resource wrote it; the 0440 LoadCredential= shows for its ACL with a User=);
    others may not. Refused on main 776e6558: 'must be readable by this agent's user only'."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    secret.chmod(mode)
    config = Config(hostname="h", cluster_user="root", cluster_password_file=secret)
    if taken:
        assert from_config(config).password == "hunter2"
        return
    with pytest.raises(ValidationError, match=r"mode 06.4\): the cluster's password must not"):
        from_config(config)


def test_a_tls_key_behind_root_links_is_taken(tmp_path: Path) -> None:
    """Let's Encrypt's layout: live/<name>/privkey.pem -> ../../archive/<name>/privkey1.pem,
    links owned by root in directories only root writes. The key was checked by lstat, so the
    link itself was refused as 'a private key (mode 0777)' (main 776e6558); now where it leads
    is checked (the whole path was by check_given), and a 0644 key there still is refused."""
    ca = CA(tmp_path / "pki")
    leaf = ca.leaf("h")
    (tmp_path / "archive" / "h").mkdir(parents=True)
    (tmp_path / "live" / "h").mkdir(parents=True)
    for name, made in (("privkey", leaf.key), ("cert", leaf.cert)):
        made.rename(tmp_path / "archive" / "h" / f"{name}1.pem")
        (tmp_path / "live" / "h" / f"{name}.pem").symlink_to(f"../../archive/h/{name}1.pem")
    live = tmp_path / "live" / "h"
    config = Config(
        hostname="h",
        seeds="https://127.0.0.1:2379",
        tls_ca=ca.path,
        tls_cert=live / "cert.pem",
        tls_key=live / "privkey.pem",
    )
    assert from_config(config).tls.key == live / "privkey.pem"
    (tmp_path / "archive" / "h" / "privkey1.pem").chmod(0o644)
    with pytest.raises(
        ValidationError, match=r"--tls-key: .*privkey1.pem \(owner uid 0, mode 0644"
    ):
        from_config(config)


def test_a_password_from_the_operators_pipe(tmp_path: Path) -> None:
    """`--cluster-password-file <(pass show etcd)`: the shell hands a pipe as /dev/fd/N, whose
    link leads to no file (`pipe:[...]`). Read before 2026-12-06 (eighth session), then refused
    as 'No such file or directory' (main 776e6558): now read from the descriptor itself."""
    import os

    for given in ("/dev/fd/{}", "/proc/self/fd/{}"):
        read, write = os.pipe()
        try:
            os.write(write, b"hunter2\n")
            os.close(write)
            config = Config(
                hostname="h",
                cluster_user="root",
                cluster_password_file=Path(given.format(read)),
            )
            assert from_config(config).password == "hunter2"
        finally:
            os.close(read)
    read, write = os.pipe()
    os.close(write)
    with os.fdopen(read, "rb"):
        config = Config(
            hostname="h", cluster_user="root", cluster_password_file=Path(f"/dev/fd/{read}")
        )
        with pytest.raises(ValidationError, match="the password file is empty"):
            from_config(config)
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")  # 0644 by the umask
    with secret.open("rb") as opened:
        config = Config(
            hostname="h",
            cluster_user="root",
            cluster_password_file=Path(f"/dev/fd/{opened.fileno()}"),
        )
        with pytest.raises(ValidationError, match=r"mode 0644\): the cluster's password must not"):
            from_config(config)
