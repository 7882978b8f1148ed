"""Two resources that claim one key of one file (an authorized key, a JSON path) would undo
each other forever: the graph is refused at load, naming both with their lines, exit 2,
nothing applied (tester10 #2c). One sysctl `path` shared by two keys is no claim: each keeps
its own line (docs/resources/sysctl.md)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from tests.e2e.helpers import run_mgmt, run_once


def ed25519(seed: int) -> str:
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + bytes([seed] * 32)
    return base64.b64encode(blob).decode()


def test_two_resources_of_one_key_of_one_file_are_refused(tmp_path: Path) -> None:
    keys, doc, graph = tmp_path / "authorized_keys", tmp_path / "doc.json", tmp_path / "g.yaml"
    keys.write_text("")
    doc.write_text("{}\n")
    key = ed25519(3)
    graph.write_text(
        "graph: f\nresources:\n  ssh:authorized_key:\n"
        f"    - {{name: add, file: '{keys}', state: exists, type: ssh-ed25519, key: {key}}}\n"
        f"    - {{name: other, file: '{keys}', state: exists, content: 'ssh-ed25519 {ed25519(4)}'}}\n"
        f"    - {{name: del, file: '{keys}/../authorized_keys', state: absent, "
        f"content: 'no-pty ssh-ed25519 {key} x'}}\n"
        "  json:edit:\n"
        f"    - {{name: j1, store: '{doc}', edits: ['.x = 1', '.[\"a\"] = 1']}}\n"
        f"    - {{name: j2, store: 'file://{doc}', edits: ['.y = 2', '.a = 2']}}\n"
        f"    - {{name: j3, store: '{doc}', edits: ['.b = 2']}}\n"
    )
    code, out = run_once("yaml", graph)
    assert code == 2, out
    assert "g.yaml:6: ssh:authorized_key[del]: " in out
    assert f"both manage ssh:authorized_key {keys} {key}: each would undo" in out
    assert "(also declared at line 4)" in out
    assert "g.yaml:9: json:edit[j2]: " in out and f"both manage json:edit {doc} .a:" in out
    assert "other]" not in out and "j3" not in out and "Traceback" not in out
    assert keys.read_text() == "" and doc.read_text() == "{}\n"  # nothing applied


def test_two_kinds_fighting_over_a_file_are_named(tmp_path: Path) -> None:
    """A `line` that keeps a key line and an `ssh:authorized_key` that revokes that key: two
    kinds, not refused at load; the run names them (once a minute) while they fight."""
    keys, graph = tmp_path / "authorized_keys", tmp_path / "g.yaml"
    keys.write_text("")
    key = ed25519(5)
    graph.write_text(
        "graph: f\nresources:\n"
        f"  line:\n    - {{name: keep, file: '{keys}', state: exists, "
        f"content: 'ssh-ed25519 {key}'}}\n"
        f"  ssh:authorized_key:\n    - {{name: revoke, file: '{keys}', state: absent, "
        f"type: ssh-ed25519, key: {key}}}\n"
    )
    args = ["run", "--tmp-prefix", "--max-runtime", "4", "yaml", str(graph)]
    _code, out = run_mgmt(args, 120)
    warnings = [line for line in out.splitlines() if "was rewritten" in line]
    assert len(warnings) == 1, out[-3000:]
    assert f"{keys} was rewritten 10 times in the last minute, in turn by " in warnings[0]
    assert "line[keep]" in warnings[0] and "ssh:authorized_key[revoke]" in warnings[0]
