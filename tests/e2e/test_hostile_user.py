"""End to end: a hostile local user (uid 65534, through setpriv) against a root agent, as
tester13 played it (2026-12-05): what they put where the operator's graph reads or writes
must not give them root's privileges or files (docs/security.md)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

from tests.e2e.helpers import NOBODY, as_nobody, needs_another_user, run_once

pytestmark = needs_another_user


def run_graph(tmp_path: Path, resources: str) -> tuple[int, str]:
    spec = tmp_path / "graph.yaml"
    body = textwrap.indent(textwrap.dedent(resources).replace("TMP", str(tmp_path)), "  ")
    spec.write_text(f"graph: hostile\nresources:\n{body}")
    return run_once("yaml", spec)


def theirs(tmp_path: Path) -> Path:
    """tmp_path/a, a directory the other user owns (their home, an upload directory)."""
    home = tmp_path / "a"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    return home


def test_a_copy_of_a_users_set_id_binary_does_not_run_as_root(tmp_path: Path) -> None:
    """Finding 0: the user's own 4755 `id` (and a 2755 file in a tree), copied by root's
    `source`, came out root-owned and set-ID: `uid=65534 ... euid=0(root)`."""
    home = theirs(tmp_path)
    ident = shutil.which("id")
    as_nobody(
        home,
        f"mkdir tree && cp {ident} tree/myid && chmod 4755 tree/myid && echo hi > tree/f "
        "&& chmod 2755 tree/f",
    )
    (tmp_path / "root").mkdir()
    code, out = run_graph(
        tmp_path,
        """
        file:
          - {name: TMP/root/treecopy/, state: exists, source: TMP/a/tree/, recurse: true}
          - {name: TMP/root/single, source: TMP/a/tree/myid}
        """,
    )
    assert code == 0, out
    for name, mode in (("single", 0o755), ("treecopy/myid", 0o755), ("treecopy/f", 0o755)):
        st = (tmp_path / "root" / name).stat()
        assert (st.st_uid, oct(st.st_mode & 0o7777)) == (0, oct(mode)), name
    ran = as_nobody(tmp_path / "root", "./single && ./treecopy/myid")
    assert "euid=" not in ran and ran.count(f"uid={NOBODY}") == 2, ran
