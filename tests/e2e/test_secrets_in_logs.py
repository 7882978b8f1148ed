"""Values written into config files are not logged (docs/security.md, "Secrets"): json:edit and
augeas say which path they set, never the value; Augeas' save error, which holds the file's
whole tree, is cut to its first line. Through the real CLI, --noop and a real run."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from tests.e2e.helpers import MGMT, ROOT, run_mgmt
from tests.mgmt.cluster.helpers import cluster_env

SECRET, OLD = "n3w-SECRET-pw", "old-SECRET"


def test_json_edit_and_augeas_do_not_log_values(tmp_path: Path) -> None:
    doc, conf, bad = tmp_path / "doc.json", tmp_path / "redis.conf", tmp_path / "sshd_config"
    doc.write_text(f'{{"db": {{"password": "{OLD}"}}}}\n')
    conf.write_text(f"port 6379\nrequirepass {OLD}\n")
    # A new setting after a Match block: the Sshd lens cannot write that tree back.
    bad.write_text(f"Port 22\nMatch User bob\n  Banner /etc/{OLD}\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n"
        f"  json:edit:\n    - {{name: doc, store: '{doc}', "
        f"""edits: ['.db.password = "{SECRET}"', '.["a b"].c = "{SECRET}"']}}\n"""
        "  augeas:\n"
        f"    - {{name: redis, file: '{conf}', lens: Redis.lns, "
        f"sets: [{{path: requirepass, value: '{SECRET}'}}]}}\n"
        f"    - {{name: sshd, file: '{bad}', lens: Sshd.lns, "
        f"sets: [{{path: PermitRootLogin, value: '{SECRET}'}}]}}\n"
    )
    args = ["run", "--tmp-prefix", "--converged-timeout", "0"]
    for noop in (["--noop"], []):
        code, out = run_mgmt([*args, *noop, "yaml", str(graph)], 120)
        assert code == (0 if noop else 1), out  # the sshd file cannot be saved
        assert SECRET not in out and OLD not in out, out
        assert "Traceback" not in out
    assert '.db.password set; .["a b"].c set' in out
    assert f"requirepass in {conf} changed" in out
    assert f"cannot save {bad}: Failed to match tree under / (put_failed; path " in out
    assert len(max(out.splitlines(), key=len)) < 400, out  # not the 12 KB tree and pattern
    assert SECRET in doc.read_text() and f"requirepass {SECRET}" in conf.read_text()


def test_kinds_given_a_value_do_not_log_it(tmp_path: Path) -> None:
    """kv, value, sysctl and gsettings name the key they set and say that it changed, never the
    value, under --noop and in a real run (a real etcd, a network namespace of its own for the
    sysctl, GLib's keyfile backend for gsettings). Before: "app/token set to '<the token>'"."""
    conf = tmp_path / "99-mgmt-test.conf"
    conf.write_text(f"# {OLD}\n")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n"
        f"  kv:\n    - {{name: token, key: app/token, value: '{SECRET}'}}\n"
        f"  value:\n    - {{name: kept, any: '{SECRET}'}}\n"
        "  sysctl:\n"
        f"    - {{name: net.ipv4.ip_default_ttl, value: '77', path: '{conf}'}}\n"
        "  gsettings:\n"
        "    - {name: org.gnome.desktop.interface gtk-theme, type: str, "
        f"value: '{SECRET}'}}\n"
    )
    args = ["run", "--tmp-prefix", "--converged-timeout", "0"]
    with cluster_env() as env:
        env |= {"GSETTINGS_BACKEND": "keyfile", "XDG_CONFIG_HOME": str(tmp_path / "config")}
        outs = []
        for noop in (["--noop"], []):
            # Its own network namespace (loopback up, for etcd): the sysctl, a per-namespace
            # one, leaves the host alone.
            up = 'ip link set lo up && exec "$@"'
            argv = ["unshare", "--net", "--", "sh", "-c", up, "sh", *MGMT, *args, *noop]
            argv += ["yaml", str(graph)]
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=120, cwd=ROOT,
                env={**os.environ, **env}, check=False,
            )  # fmt: skip
            out = done.stderr + done.stdout
            assert done.returncode == 0, out
            assert SECRET not in out and "Traceback" not in out, out
            assert "'77'" not in out and "= 77" not in out, out  # the sysctl's value
            outs.append(out)
    assert "kv[token]: would set app/token" in outs[0]
    assert "value[kept]: would set the value" in outs[0]
    assert "sysctl[net.ipv4.ip_default_ttl]: would change net.ipv4.ip_default_ttl" in outs[0]
    assert "gsettings[org.gnome.desktop.interface gtk-theme]: would change the value" in outs[0]
    assert "kv[token]: app/token set" in outs[1]
    assert "value[kept]: the value set" in outs[1]
    assert "sysctl[net.ipv4.ip_default_ttl]: net.ipv4.ip_default_ttl changed" in outs[1]
    assert f"persisted net.ipv4.ip_default_ttl in {conf}" in outs[1]
    assert "gsettings[org.gnome.desktop.interface gtk-theme]: the value changed" in outs[1]
    assert "net.ipv4.ip_default_ttl = 77" in conf.read_text()


async def test_a_secret_received_along_an_edge_is_hidden_in_the_log_and_on_the_status_page(
    tmp_path: Path,
) -> None:
    """tester13 #8: exec's "running: <cmd>", its failure, and the status page's error, last
    change and events carried the password it received (every local user reads the page)."""
    from tests.e2e.helpers import Daemon
    from tests.e2e.test_status_page import free_port

    copy = tmp_path / "pwcopy"
    graph = tmp_path / "pw.yaml"
    graph.write_text(
        "graph: pw\nresources:\n  password: [{name: db, length: 24}]\n"
        "  exec: [{name: setpw, cmd: \"/bin/sh -c 'echo done'\"}]\n"
        f"  file: [{{name: {copy}, mode: '0600'}}]\nedges:\n"
        "  - {name: v1, from: {kind: password, name: db}, to: {kind: exec, name: setpw}, "
        "send: password, recv: cmd}\n"
        f"  - {{name: v2, from: {{kind: password, name: db}}, to: {{kind: file, name: {copy}}}, "
        "send: password, recv: content}\n"
    )
    port = free_port()
    args = ["run", "--tmp-prefix", "--status", "--prometheus-listen", f":{port}"]
    async with Daemon([*args, "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[setpw]: failed: cmd: cannot start")
        await daemon.wait_log(f"created {copy}")
        password = copy.read_text()
        assert len(password) == 24
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        page = (await reader.read()).decode()
        writer.close()
        assert "exec[setpw]: running: ***" in daemon.log
        assert "No such file or directory: '***'" in daemon.log
        assert password not in daemon.log
        assert "No such file or directory: '***'" in page and password not in page
