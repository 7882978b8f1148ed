"""A one-shot run (`mgmt run --converged-timeout=0`) whose files were found good before its
first change, then written through a hard link from another directory by a later resource:
the run repairs them before it exits, as a watched run does (each file's inode watched, not
only its directory: docs/engine.md, "A one-shot run's watches").

The real `mgmt` command as a subprocess, real files, real hard links, real inotify.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt
from tests.e2e.test_one_shot_disturbed import graph as disturbed_graph

FILES = 3  # f0, f1: right before the run; f2: absent (the run's first change)


def graph(tmp_path: Path, links: Path) -> Path:
    """f0 and f1 checked first (edges to f2), then f2 written (the first change), then an
    exec after f2 that writes f0 and f1 through their hard links in `links`."""
    cmd = f"printf other > {links}/l0 && printf other > {links}/l1 && touch {tmp_path}/marker"
    edges = (("file:f0", "file:f2"), ("file:f1", "file:f2"), ("file:f2", "exec:disturb"))
    return disturbed_graph(tmp_path, f"'{cmd}'", FILES, edges)


@pytest.mark.parametrize("timeout", ["0", "1"], ids=["one-shot", "watched"])
def test_files_found_good_then_written_through_a_hard_link_are_repaired(
    tmp_path: Path, timeout: str
) -> None:
    out, links = tmp_path / "out", tmp_path / "links"
    out.mkdir()
    links.mkdir()
    for i in (0, 1):
        (out / f"f{i}").write_text(f"want {i}\n")
        os.link(out / f"f{i}", links / f"l{i}")
    path = graph(tmp_path, links)
    args = ["run", f"--converged-timeout={timeout}", "--tmp-prefix", "--no-watch"]
    code, output = run_mgmt([*args, "yaml", str(path)], timeout=120)
    assert code == 0, output
    assert (tmp_path / "marker").exists(), output
    got = [(out / f"f{i}").read_text() for i in range(FILES)]
    assert got == [f"want {i}\n" for i in range(FILES)], output
