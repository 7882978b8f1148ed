"""scripts/install.sh's choice of interpreter (`--dry-run`: it says what it would build on, and
whether it would rebuild .venv, and does nothing): the real script in a temporary copy of the
checkout's layout, real interpreters (this test's own, and a wrapper of it that lacks
`ensurepip`, as Debian's python3 without python3-venv), no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "/usr/bin/python3"
# The interpreter this test runs on (.venv's base), as install.sh names it: its real path.
PYTHON = os.path.realpath(sys._base_executable)
VERSION = "import sys; print('%d.%d.%d' % sys.version_info[:3])"  # as install.sh says it


def checkout(tmp_path: Path, system: str = SYSTEM) -> Path:
    """A copy of scripts/install.sh in a directory of its own, with `system` in place of
    /usr/bin/python3 (the script's one line that names it)."""
    (tmp_path / "scripts").mkdir()
    text = (ROOT / "scripts" / "install.sh").read_text()
    line = f"system={SYSTEM}\n"
    assert text.count(line) == 1
    script = tmp_path / "scripts" / "install.sh"
    script.write_text(text.replace(line, f"system={system}\n"))
    script.chmod(0o755)
    return tmp_path


def without_venv(tmp_path: Path) -> Path:
    """This test's interpreter, except that `ensurepip` cannot be imported: a wrapper script."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "ensurepip.py").write_text("raise ImportError('no ensurepip here')\n")
    wrapper = tmp_path / "bin" / "python3-novenv"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={hide} exec {PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def dry_run(where: Path, python: str | None = None, path: Path | None = None) -> tuple[int, str]:
    """The script's exit code and what it said (stdout and stderr, in order), with PYTHON=`python` (unset
    if None) and `path` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    if python is not None:
        env["PYTHON"] = python
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    done = subprocess.run(
        [str(where / "scripts" / "install.sh"), "--dry-run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout


def venv(where: Path, python: str) -> None:
    """A venv at where/.venv on `python` (no pip: only what install.sh reads of it)."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where / ".venv")], check=True)


def python3_on_path(tmp_path: Path) -> Path:
    """A directory whose python3 is this test's interpreter."""
    bin_ = tmp_path / "path"
    bin_.mkdir()
    (bin_ / "python3").symlink_to(PYTHON)
    return bin_


def test_python_wins_and_is_kept_by_later_runs_without_it(tmp_path: Path) -> None:
    where = checkout(tmp_path, system=str(without_venv(tmp_path)))
    code, said = dry_run(where, python=PYTHON)
    assert code == 0
    assert said.endswith(f", {PYTHON} (PYTHON)\n")
    venv(where, PYTHON)
    (where / ".venv" / "mgmt-python").write_text(PYTHON + "\n")  # as a real run records it
    code, said = dry_run(where)
    assert code == 0
    assert said.endswith(
        f", {PYTHON} (PYTHON of an earlier run, kept: rm -rf .venv to choose again)\n"
    )


def test_a_python_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    where = checkout(tmp_path)
    assert dry_run(where, python=str(tmp_path / "nothing")) == (
        2,
        f"mgmt: PYTHON={tmp_path / 'nothing'} does not run\n",
    )
    code, said = dry_run(where, python=str(without_venv(tmp_path)))
    assert code == 2
    assert said.endswith("cannot make a venv (on Debian: apt-get install python3-venv)\n")


def said_by(python: str, code: str) -> str:
    """What `python -c code` prints."""
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()


FITS = "import importlib.util, sys; print(sys.version_info >= (3, 11) and bool(importlib.util.find_spec('ensurepip')))"


@pytest.mark.skipif(
    not os.access(SYSTEM, os.X_OK) or said_by(SYSTEM, FITS) != "True",
    reason=f"{SYSTEM} is not Python >= 3.11 with its venv module",
)
def test_the_systems_python3_comes_before_pythons_on_path(tmp_path: Path) -> None:
    where = checkout(tmp_path)
    code, said = dry_run(where, path=python3_on_path(tmp_path))
    system = f"{said_by(SYSTEM, VERSION)}, {os.path.realpath(SYSTEM)}"
    assert (code, said) == (0, f"mgmt: .venv would be on Python {system} (the system's {SYSTEM})\n")


def test_without_the_systems_venv_module_python3_from_path_says_why(tmp_path: Path) -> None:
    novenv = without_venv(tmp_path)
    where = checkout(tmp_path, system=str(novenv))
    code, said = dry_run(where, path=python3_on_path(tmp_path))
    assert code == 0
    version = said_by(PYTHON, VERSION)
    assert said.splitlines() == [
        f"mgmt: {novenv} cannot make a venv (on Debian: apt-get install python3-venv): "
        "using python3 from PATH",
        f"mgmt: .venv would be on Python {version}, {PYTHON} (python3 from PATH)",
    ]


def test_a_venv_on_another_interpreter_would_be_rebuilt(tmp_path: Path) -> None:
    where = checkout(tmp_path)
    venv(where, PYTHON)
    code, said = dry_run(where, python=PYTHON)
    assert (code, len(said.splitlines())) == (0, 1)  # the same interpreter: kept
    shutil.rmtree(where / ".venv")
    (where / ".venv" / "bin").mkdir(parents=True)
    (where / ".venv" / "bin" / "python").symlink_to(tmp_path / "removed" / "python3.11")
    code, said = dry_run(where, python=PYTHON)
    assert code == 0
    assert said.splitlines()[1:] == [
        "mgmt: .venv was built on an interpreter that no longer runs: it would be rebuilt"
    ]
