"""The ports this host's etcd listens on (mgmt/cluster/ports.py): a `--tmp-prefix` run's are
free loopback ones, and one another process holds is a one-line refusal before anything is
applied. Real sockets, real agents."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import ValidationError
from mgmt.cluster.options import from_config
from mgmt.cluster.ports import check_free, tmp_ports
from mgmt.config import Config
from tests.e2e.helpers import free_port, run_mgmt


@pytest.fixture
def held() -> Iterator[int]:
    """A port this test listens on (as another program's etcd would)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_tmp_prefix_takes_free_loopback_ports() -> None:
    config = Config(hostname="h", tmp_prefix=True)
    tmp_ports(config)
    for url in (config.client_urls, config.server_urls):
        match = re.fullmatch(r"https://127\.0\.0\.1:(\d+)", url)
        assert match, url
        assert int(match[1]) not in (2379, 2380)
    assert config.client_urls != config.server_urls


def test_tmp_prefix_keeps_the_urls_given() -> None:
    config = Config(hostname="h", tmp_prefix=True, client_urls="https://127.0.0.1:4001")
    config.advertise_server_urls = "https://10.0.0.1:4002"
    tmp_ports(config)
    assert config.client_urls == "https://127.0.0.1:4001"
    assert config.server_urls == ""  # its advertised one was given: the default listens
    plain = Config(hostname="h")  # not a --tmp-prefix run: the defaults (2379/2380)
    tmp_ports(plain)
    assert plain.client_urls == plain.server_urls == ""


def test_a_taken_port_is_named_with_its_flag_and_holder(tmp_path: Path, held: int) -> None:
    url = f"https://127.0.0.1:{held}"
    options = from_config(
        Config(
            hostname="h",
            prefix=tmp_path,
            client_urls=f"https://127.0.0.1:{free_port()}",
            server_urls=url,
        )
    )
    with pytest.raises(ValidationError) as err:
        check_free(options)
    assert err.value.key == "--server-urls"
    assert f"port {held} of {url} is taken by " in str(err.value)
    assert f"(pid {os.getpid()})" in str(err.value)  # this test's process: /proc says
    assert "give this host another --server-urls" in str(err.value)


def test_free_ports_pass_and_no_server_listens_on_none(tmp_path: Path, held: int) -> None:
    free = f"https://127.0.0.1:{free_port()}"
    check_free(
        from_config(
            Config(
                hostname="h",
                prefix=tmp_path,
                client_urls=free,
                server_urls=f"https://127.0.0.1:{free_port()}",
            )
        )
    )
    taken = f"http://127.0.0.1:{held}"
    options = from_config(
        Config(
            hostname="h",
            prefix=tmp_path,
            client_urls=taken,
            seeds=f"http://127.0.0.1:{free_port()}",
            no_server=True,
            insecure_cluster=True,
        )
    )
    check_free(options)  # a client only: it listens on none


def test_agent_refuses_a_taken_port_before_applying(tmp_path: Path, held: int) -> None:
    made = tmp_path / "made"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"graph: g\nresources:\n  file:\n  - name: {made}\n    content: x\n"
        "  kv:\n  - name: k\n    key: k\n    value: v\n"
    )
    code, out = run_mgmt(
        [
            "run",
            "--prefix",
            str(tmp_path / "p"),
            "--converged-timeout=0",
            "--client-urls",
            f"https://127.0.0.1:{held}",
            "--server-urls",
            f"https://127.0.0.1:{free_port()}",
            "yaml",
            str(graph),
        ]
    )
    assert code == 75, out  # the host's state, not bad input: a unit restarts on it
    lines = [line for line in out.splitlines() if "error" in line or "taken" in line]
    assert len(lines) == 1 and f"--client-urls: port {held} of " in lines[0], out
    assert not made.exists()  # nothing applied


def test_tmp_prefix_run_beside_a_cluster_on_the_default_ports() -> None:
    """Its etcd serves on a loopback port of its own, not 2379 (on which another agent may
    serve: before 2026-12-06 it then reached that cluster and failed on its certificate)."""
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", "empty"], timeout=90)
    assert code == 0, out
    served = re.search(r"serving clients on https://127\.0\.0\.1:(\d+)", out)
    assert served, out
    assert int(served[1]) != 2379, out


def test_a_joining_host_is_warned_once_and_goes_on(
    tmp_path: Path, held: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A host given --seeds runs a member only if nominated: its taken port is a warning,
    said once (the agent checks again as its cluster starts), not a refusal."""
    url = f"http://127.0.0.1:{held}"
    options = from_config(
        Config(hostname="h", prefix=tmp_path, server_urls=url, insecure_cluster=True,
               seeds=f"http://127.0.0.1:{free_port()}",
               client_urls=f"http://127.0.0.1:{free_port()}")
    )  # fmt: skip
    check_free(options)
    check_free(options)
    said = [r.getMessage() for r in caplog.records if "is taken by" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"--server-urls: port {held} of {url} is taken by ")
    assert "cannot start if the cluster nominates it" in said[0]
