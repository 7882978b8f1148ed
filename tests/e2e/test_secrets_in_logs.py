"""Values written into config files are not logged (docs/security.md, "Secrets"): json:edit and
augeas say which path they set, never the value; Augeas' save error, which holds the file's
whole tree, is cut to its first line. Through the real CLI, --noop and a real run."""

from __future__ import annotations

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
