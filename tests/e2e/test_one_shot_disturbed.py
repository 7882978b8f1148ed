"""A one-shot run (`mgmt run --converged-timeout=0`) whose resources disturb each other: a
file checked good, then changed by another resource later in the same run, is right when the
run exits.

The real `mgmt` command as a subprocess, real files, real commands, real inotify. Each graph
orders the file first (an edge to the resource that changes it), so its check has found it
good (or written it) before the other one runs; the run must see that change and repair the
file before it exits. Whether the file's watch was in place from the start or only from the
run's first change (docs/engine.md, "A one-shot run's watches"), the outcome is the same.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt

ARGS = ["run", "--converged-timeout=0", "--tmp-prefix", "--no-watch"]


def graph(
    tmp_path: Path, cmd: str, files: int = 3, edges: tuple[tuple[str, str], ...] = ()
) -> Path:
    """`files` file resources (wanted content `want N`), then an exec `disturb` that runs `cmd`
    once (its `creates` marker), in tmp_path/out; `edges` (from, to) as `kind:name`, by
    default one from the first file to the exec."""
    out = tmp_path / "out"
    lines = ["graph: disturbed", "resources:", "  file:"]
    for i in range(files):
        lines += [f"    - name: f{i}", f"      path: {out}/f{i}", f'      content: "want {i}\\n"']
    lines += [
        "  exec:",
        "    - name: disturb",
        f"      cmd: {cmd}",
        "      shell: /bin/sh",
        f"      creates: {tmp_path}/marker",
        "edges:",
    ]
    for ends in edges or (("file:f0", "exec:disturb"),):
        (kind, name), (to_kind, to_name) = (end.split(":") for end in ends)
        lines += [
            f"  - from: {{kind: {kind}, name: {name}}}",
            f"    to: {{kind: {to_kind}, name: {to_name}}}",
        ]
    path = tmp_path / "g.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare(tmp_path: Path, files: int = 3, right: bool = True) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    if right:
        for i in range(files):
            (out / f"f{i}").write_text(f"want {i}\n")
    return out


def run(path: Path) -> str:
    code, output = run_mgmt([*ARGS, "yaml", str(path)], timeout=120)
    assert code == 0, output
    return output


@pytest.mark.parametrize("right", [True, False], ids=["no-op-before", "first-run"])
def test_a_file_overwritten_by_a_later_exec_is_repaired_before_the_run_exits(
    tmp_path: Path, right: bool
) -> None:
    """f0 is checked (found good, or written), then the exec after it overwrites it: the run
    repairs it before it exits, and says so."""
    out = prepare(tmp_path, right=right)
    path = graph(tmp_path, f"'printf other > {out}/f0 && touch {tmp_path}/marker'")
    output = run(path)
    assert (out / "f0").read_text() == "want 0\n", output
    assert [(out / f"f{i}").read_text() for i in (1, 2)] == ["want 1\n", "want 2\n"]
    assert "all 4 resources in the desired state" in output


@pytest.mark.parametrize("right", [True, False], ids=["no-op-before", "first-run"])
def test_a_file_removed_by_a_later_exec_is_made_again_before_the_run_exits(
    tmp_path: Path, right: bool
) -> None:
    out = prepare(tmp_path, right=right)
    path = graph(tmp_path, f"'rm {out}/f0 && touch {tmp_path}/marker'")
    output = run(path)
    assert (out / "f0").read_text() == "want 0\n", output


def test_files_whose_directory_a_later_exec_moves_away_are_made_again(tmp_path: Path) -> None:
    """The exec moves the files' directory away: every file checked good before is checked
    again and written, its directory made again (not only the one the edge names)."""
    out = prepare(tmp_path)
    cmd = f"'touch {tmp_path}/marker && mv {out} {tmp_path}/moved'"
    output = run(graph(tmp_path, cmd))
    assert sorted(p.name for p in out.iterdir()) == ["f0", "f1", "f2"], output
    assert [(out / f"f{i}").read_text() for i in range(3)] == ["want 0\n", "want 1\n", "want 2\n"]


def test_a_file_changed_by_an_exec_that_fails_is_repaired(tmp_path: Path) -> None:
    """A failed apply may have changed something: the exec overwrites f0 and then fails (its
    marker made: run again, it has nothing to do); f0, checked good before, is repaired all
    the same, and the run says the exec failed once."""
    out = prepare(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            graph: failing
            resources:
              file:
                - name: f0
                  path: {out}/f0
                  content: "want 0\\n"
              exec:
                - name: disturb
                  cmd: 'printf other > {out}/f0; touch {tmp_path}/marker; exit 3'
                  shell: /bin/sh
                  creates: {tmp_path}/marker
                  meta: {{retry: 0}}
            edges:
              - from: {{kind: file, name: f0}}
                to: {{kind: exec, name: disturb}}
            """)
    )
    code, output = run_mgmt([*ARGS, "yaml", str(path)], timeout=120)
    assert code == 0, output
    assert "exec[disturb]: failed" in output
    assert (out / "f0").read_text() == "want 0\n", output
