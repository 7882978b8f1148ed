"""End to end: the real `mgmt` command on a prefix whose etcd data dir Go mgmt made (here: a
plain etcd, as Go mgmt embeds one, on `<prefix>/etcd`), stopped or still running."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mgmt.cluster.datadir import OWNER_FILE
from tests.e2e.helpers import run_mgmt
from tests.mgmt.cluster.helpers import free_ports

KV = "graph: t\nresources:\n  kv:\n    - name: k1\n      key: hello\n      value: world\n"


@contextmanager
def go_mgmts_etcd(prefix: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A plain etcd serving `prefix/etcd` (as Go mgmt's embedded one) until the block ends;
    it has written a key of Go mgmt's."""
    client, peer = free_ports(2)
    log = prefix.parent / "go-etcd.log"
    with (
        log.open("w") as out,
        subprocess.Popen(
            [
                "etcd",
                "--name=vm",
                f"--data-dir={prefix / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=vm=http://127.0.0.1:{peer}",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        ) as proc,
    ):
        ready = threading.Event()

        def copy() -> None:  # its log to the file, read line by line: its readiness an event
            assert proc.stderr is not None
            for line in proc.stderr:
                out.write(line.decode(errors="replace"))
                out.flush()
                if b"ready to serve client requests" in line:
                    ready.set()
            ready.set()  # it ended: the assertion below says so

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            assert ready.wait(60) and proc.poll() is None, log.read_text()  # a hang bound
            subprocess.run(
                ["etcdctl", f"--endpoints=http://127.0.0.1:{client}", "put", "/_mgmt/go", "x"],
                env={**os.environ, "ETCDCTL_API": "3"},
                check=True,
                capture_output=True,
                timeout=30,
            )
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            reader.join(timeout=30)


def run_kv(tmp_path: Path, prefix: Path, *extra: str) -> tuple[int, str]:
    graph = tmp_path / "kv.yaml"
    graph.write_text(KV)
    client, peer = free_ports(2)
    return run_mgmt(
        [
            "run",
            f"--prefix={prefix}",
            f"--client-urls=https://127.0.0.1:{client}",
            f"--server-urls=https://127.0.0.1:{peer}",
            "--converged-timeout=0",
            *extra,
            "yaml",
            str(graph),
        ]
    )


@pytest.mark.slow
def test_go_mgmts_data_dir_is_neither_adopted_nor_replaced(tmp_path: Path) -> None:
    """Refused, exit 2, one line naming it and the ways out, before anything is written
    beside it; with the owner file made by hand, adopted (its keys kept)."""
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o700)
    with go_mgmts_etcd(prefix):
        pass
    before = sorted(p.name for p in prefix.iterdir())
    code, out = run_kv(tmp_path, prefix)
    assert code == 2, out
    assert f"{prefix / 'etcd'} holds etcd data this agent did not create" in out, out
    assert f"mv {prefix / 'etcd'} {prefix / 'etcd'}.go-mgmt" in out and OWNER_FILE in out
    assert sorted(p.name for p in prefix.iterdir() if p.name != ".mgmt-agent.lock") == before
    (prefix / OWNER_FILE).write_text("")  # the operator adopts it
    code, out = run_kv(tmp_path, prefix)
    assert code == 0 and "kv[k1]: hello set" in out, out
    assert not list(prefix.glob("etcd.unusable-*"))


@pytest.mark.slow
def test_a_data_dir_in_use_by_another_etcd_is_said_with_its_holder(tmp_path: Path) -> None:
    """Go mgmt still running: etcd waited for its lock silently ("Deadline Exceeded" only)."""
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o700)
    (prefix / OWNER_FILE).write_text("")
    with go_mgmts_etcd(prefix) as etcd:
        code, out = run_kv(tmp_path, prefix, "--max-runtime=5")
    assert code == 1, out
    said = f"etcd's data dir {prefix / 'etcd'} is in use by another process (pid {etcd.pid} (etcd)"
    assert out.count(said) == 1, out  # once, though retried


@pytest.mark.slow
def test_an_older_agents_data_dir_is_ours(tmp_path: Path) -> None:
    """A data dir made before the owner file, beside this agent's own files: kept, marked."""
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o700)
    code, out = run_kv(tmp_path, prefix)
    assert code == 0, out
    (prefix / OWNER_FILE).unlink()  # as an older version left it
    code, out = run_kv(tmp_path, prefix)
    assert code == 0 and "did not create" not in out, out
    assert (prefix / OWNER_FILE).is_file() and (prefix / "etcd" / "member").is_dir()
