"""`mgmt run --noop` of a graph whose exec guard (`ifcmd`) writes a file the graph manages, upstream
of the exec: the run says once what it would do and converges (a one-shot run exits, a
watched one settles), as a demanding operator expects of a dry run.

Until 2026-12-06 (BASE too) such a run never ended: ~1,000 log lines a second, no churn
warning. Two loops: a noop would-change refreshed its notify targets (mgmt: no activity under
noop), so the exec ran its guard again, which wrote the file again; and a noop exec check marks
no event handled, so an exec that would run was checked again (its guard run again) at each
poke of its upstream file, whose event its guard had made. The real `mgmt` command, real files
and commands, real inotify; `--max-runtime` bounds a run that would loop (exit 1).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.helpers import guarded_exec_graph, run_mgmt

# (edge, guard's exit): a notify edge and a guard that fails (the exec is skipped), or a plain
# edge and a guard that succeeds (the exec would run).
CASES = {"notify-skipped": (True, 1), "plain-would-run": (False, 0)}


def yaml_graph(tmp_path: Path, notify: bool, exits: int) -> Path:
    return guarded_exec_graph(tmp_path, "ifcmd", exits, notify=notify, name="noopguards")


def mcl_program(tmp_path: Path, notify: bool, exits: int) -> Path:
    f0 = tmp_path / "f0"
    path = tmp_path / "g.mcl"
    edge = f'Listen => File["{f0}"],' if notify else ""
    path.write_text(
        textwrap.dedent(f"""\
            file "{f0}" {{
                state => "exists",
                content => "want\\n",
            }}
            exec "guarded" {{
                cmd => "touch {tmp_path}/ran",
                shell => "/bin/sh",
                ifcmd => "printf bad > {f0}; exit {exits}",
                ifshell => "/bin/sh",
                {edge}
            }}
            File["{f0}"] -> Exec["guarded"]
            """)
    )
    return path


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("front", ["yaml", "lang"])
@pytest.mark.parametrize("timeout", ["0", "1"], ids=["one-shot", "watched"])
def test_a_noop_run_whose_guard_writes_an_upstream_file_says_it_once_and_converges(
    tmp_path: Path, case: str, front: str, timeout: str
) -> None:
    notify, exits = CASES[case]
    (tmp_path / "f0").write_text("want\n")
    make = yaml_graph if front == "yaml" else mcl_program
    path = make(tmp_path, notify, exits)
    args = ["run", "--noop", "--detailed-exitcodes", f"--converged-timeout={timeout}"]
    args += ["--tmp-prefix", "--no-watch", "--max-runtime=30"]
    code, output = run_mgmt([*args, front, str(path)], timeout=120)
    lines = output.splitlines()
    assert code == 3, output[-3000:]  # converged, and something would change
    assert len(lines) < 40, output[-3000:]  # no loop: a few lines, not thousands
    assert not (tmp_path / "ran").exists(), output
    assert (tmp_path / "f0").read_text() == "bad", output  # the guard ran: a command
    would_run = [line for line in lines if "would run" in line]
    if exits == 0:
        assert len(would_run) == 1, output  # said once
        assert "would change (noop): exec[guarded]" in output, output
    else:
        assert would_run == [], output
        assert "would change (noop): exec[guarded]" not in output, output
    refresh = [line for line in lines if "would refresh exec[guarded]" in line]
    assert bool(refresh) is notify, output  # a would-change says whom it would refresh
    assert "changed behind our back" not in output, output


def test_a_noop_would_change_refreshes_nothing_it_says_what_it_would_refresh(
    tmp_path: Path,
) -> None:
    """A `refreshonly` exec behind a file that would change: under --noop it is not refreshed
    (mgmt: no activity under noop), the file's line says it would be."""
    f0 = tmp_path / "f0"
    f0.write_text("other\n")
    path = tmp_path / "g.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            graph: refresh
            resources:
              file:
                - {{name: f0, path: {f0}, content: "want\\n"}}
              exec:
                - {{name: onchange, cmd: 'touch {tmp_path}/ran', shell: /bin/sh, refreshonly: true}}
            edges:
              - {{from: {{kind: file, name: f0}}, to: {{kind: exec, name: onchange}}, notify: true}}
            """)
    )
    args = ["run", "--noop", "--converged-timeout=0", "--tmp-prefix", "--no-watch"]
    code, output = run_mgmt([*args, "yaml", str(path)], timeout=120)
    assert code == 0, output
    assert "file[f0]: would update the content" in output, output
    assert "file[f0]: would refresh exec[onchange]" in output, output
    assert "exec[onchange]: would run" not in output, output
    assert f0.read_text() == "other\n" and not (tmp_path / "ran").exists(), output
