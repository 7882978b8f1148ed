"""Cluster options from the CLI's Config: URLs, loopback-only plain http, TLS files, auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.graph import Graph
from mgmt.cli import parse
from mgmt.cluster import needs_cluster
from mgmt.cluster.options import from_config
from mgmt.config import Config
from mgmt.yamlgraph import parse as parse_graph


def test_defaults_are_loopback() -> None:
    opts = from_config(Config(hostname="h"))
    assert opts.client_urls == ["http://127.0.0.1:2379"]
    assert opts.server_urls == ["http://127.0.0.1:2380"]
    assert opts.advertise_client_urls == opts.client_urls
    assert opts.ideal_cluster_size == 5 and opts.seeds == []
    assert opts.lease_ttl == 3 and opts.call_timeout == 2.0


def test_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGMT_IDEAL_CLUSTER_SIZE", "3")
    config = parse(
        ["run", "--seeds", "http://127.0.0.1:2379,http://[::1]:2379", "--no-server", "empty"]
    )
    opts = from_config(config)
    assert opts.seeds == ["http://127.0.0.1:2379", "http://[::1]:2379"]
    assert opts.no_server and opts.ideal_cluster_size == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seeds", "http://10.0.0.1:2379", "plain http is allowed only on loopback"),
        ("client_urls", "http://0.0.0.0:2379", "plain http is allowed only on loopback"),
        ("server_urls", "127.0.0.1:2380", "expected URLs like"),
        ("advertise_client_urls", "http://127.0.0.1", "explicit port"),
        ("client_urls", "https://127.0.0.1:2379", "https listeners need a certificate"),
        ("ideal_cluster_size", 0, "must be >= 1"),
        ("etcd_election_timeout", 20, "at least 5 heartbeats"),
        ("etcd_compaction_retention", "soon", "expected a duration"),
        ("tls_cert", Path("/nonexistent.crt"), "give both a certificate and its key"),
        ("cluster_user", "root", "needs both --cluster-user and --cluster-password-file"),
    ],
)
def test_bad_options_name_the_flag(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        from_config(Config(hostname="h", **{field: value}))  # type: ignore[arg-type]


def test_insecure_cluster_allows_plain_http_anywhere() -> None:
    opts = from_config(Config(hostname="h", seeds="http://10.0.0.1:2379", insecure_cluster=True))
    assert opts.seeds == ["http://10.0.0.1:2379"]


def test_the_password_comes_from_a_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
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
    assert needs_cluster(Config(hostname="h", seeds="http://127.0.0.1:2379"), plain)
    assert needs_cluster(Config(hostname="h", frontend="empty"), plain)
    exported = parse_graph("graph: g\nresources:\n  noop:\n    - name: '@@x'\n")
    assert needs_cluster(Config(hostname="h"), exported)
    collect = parse_graph("graph: g\ncollect:\n  - {kind: file, pattern: /tmp/}\n")
    assert needs_cluster(Config(hostname="h"), collect)
    kv = parse_graph("graph: g\nresources:\n  kv:\n    - name: k\n      value: v\n")
    assert needs_cluster(Config(hostname="h"), kv)
    assert not needs_cluster(Config(hostname="h"), type(plain)(Graph("empty")))
