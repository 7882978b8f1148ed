"""End to end: the real `mgmt` command given what Go mgmt's command lines and units give it
(flags, MGMT_ variables, prefixes): the same meaning, or a one-line refusal (exit 2)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.helpers import run_mgmt


def graph_file(tmp_path: Path) -> Path:
    """A graph of one file resource, tmp_path/out/f1 with "hi\\n"."""
    path = tmp_path / "a.yaml"
    path.write_text(
        textwrap.dedent(f"""
        graph: t
        resources:
          file:
            - name: f1
              path: {tmp_path}/out/f1
              content: "hi\\n"
        """)
    )
    return path


def test_no_server_without_seeds_is_refused_as_in_mgmt(tmp_path: Path) -> None:
    """`--no-server` (or MGMT_NO_SERVER) without seeds: exit 2, one line, nothing applied and
    no etcd started (it started a member and a new cluster, the flag's meaning inverted)."""
    graph = graph_file(tmp_path)
    for args, env in (
        (["--no-server"], {}),
        ([], {"MGMT_NO_SERVER": "true"}),
        (["--no-server", "--seeds="], {}),
    ):
        code, out = run_mgmt(
            ["run", "--tmp-prefix", *args, "--converged-timeout=0", "yaml", str(graph)], env=env
        )
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert "--no-server (MGMT_NO_SERVER) needs --seeds" in out, out
        assert not (tmp_path / "out").exists()
