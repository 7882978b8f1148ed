"""Values written into config files are not logged (docs/security.md, "Secrets"): json:edit and
augeas say which path they set, never the value; Augeas' save error, which holds the file's
whole tree, is cut to its first line. Through the real CLI, --noop and a real run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.helpers import run_mgmt

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
    assert f"{conf}: requirepass changed" in out
    assert f"cannot save {bad}: Failed to match tree under / (put_failed; path " in out
    assert len(max(out.splitlines(), key=len)) < 400, out  # not the 12 KB tree and pattern
    assert SECRET in doc.read_text() and f"requirepass {SECRET}" in conf.read_text()


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
