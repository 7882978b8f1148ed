"""PyYAML broken while an agent runs (upgraded, removed): the parts of it a parse imports on
first use (libyaml's parser, the constructor, PyYAML's own modules) cannot be imported. An
edit of the graph file then is refused as a bad edit is, one line naming the file, the
running graph kept, never a traceback; the next edit, once PyYAML can be imported again, is
applied. A start whose first parse needs them is refused so too (exit 75, one line).

The agent is the real `mgmt` command; its imports fail for real: a `sitecustomize` on its
PYTHONPATH puts an import finder first that refuses PyYAML's lazily imported modules while a
flag file exists (the modules imported at start are already loaded: only a lazy import meets
it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import textwrap
from pathlib import Path

import pytest

from tests.e2e.helpers import Daemon, has_content, run_mgmt, wait_path

# The modules a composing parse imports on its first use: libyaml's extension, and what the
# pure-Python loader it falls back to without it needs (PyYAML's package code, its constructor).
REFUSED = ("yaml._yaml", "yaml.cyaml", "yaml.loader", "yaml.constructor")
SAID = "cannot parse it: PyYAML cannot be imported"

FINDER = textwrap.dedent(
    """\
    import os, sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name in {refused!r} and os.path.exists({flag!r}):
                if {error!r} == "OSError":  # (a file gone in the middle of an upgrade)
                    raise FileNotFoundError(2, "No such file or directory", name)
                raise ImportError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    """
)


def broken_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str) -> Path:
    """A PYTHONPATH for `mgmt` on which PyYAML's lazy imports fail while the returned flag
    file exists (it does)."""
    shadow, flag = tmp_path / "shadow", tmp_path / "broken"
    shadow.mkdir()
    finder = FINDER.format(refused=REFUSED, flag=str(flag), error=error)
    (shadow / "sitecustomize.py").write_text(finder)
    flag.touch()
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    return flag


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.mark.parametrize("error", ["ImportError", "OSError"])
async def test_an_edit_while_pyyaml_is_broken_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    flag = broken_pyyaml(tmp_path, monkeypatch, error)
    fifo, out, path = tmp_path / "fifo", tmp_path / "out", tmp_path / "g.yaml"
    os.mkfifo(fifo)
    held = f"  exec:\n  - {{name: held, cmd: cat {fifo}, shell: /bin/sh}}\n"
    # A run that ends at its first convergence reads its file in block style (no libyaml);
    # an exec reading a FIFO holds that convergence until the test has edited the file.
    write(path, f"graph: g\nresources:\n  exec:\n  - name: held\n    cmd: cat {fifo}\n"
          f"    shell: /bin/sh\n  file:\n  - name: {out}\n    content: a\n")  # fmt: skip

    def edit(content: str) -> None:  # a flow mapping: composed by libyaml (a lazy import)
        write(
            path, f"graph: g\nresources:\n{held}  file:\n  - {{name: {out}, content: {content}}}\n"
        )

    args = ["run", "--tmp-prefix", "--converged-timeout=0", "yaml", str(path)]
    try:
        async with Daemon(args) as daemon:
            await daemon.wait_log(f"created {out}")
            await daemon.wait_log(f"running: cat {fifo}")
            edit("b")
            await daemon.wait_log("keeping the running graph")
            said = [line for line in daemon.lines if SAID in line]
            raised = "FileNotFoundError" if error == "OSError" else error
            assert len(said) == 1 and f"{path}: {SAID} ({raised}: " in said[0], daemon.log
            assert out.read_text() == "a"  # the running graph is kept
            flag.unlink()  # PyYAML is whole again: the next edit is parsed and applied
            edit("c")
            await wait_path(out, has_content("c"), timeout=30)
            await asyncio.to_thread(fifo.write_text, "go\n")  # the exec ends: the run converges
            assert await daemon.wait() == 0, daemon.log
    finally:  # a failed test's exec, `cat`, gets its end (it was left blocked for ever)
        with contextlib.suppress(OSError):  # ENXIO: nobody reads it any more
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert "Traceback" not in daemon.log and "unexpectedly" not in daemon.log, daemon.log


@pytest.mark.parametrize("error", ["ImportError", "OSError"])
def test_a_start_while_pyyaml_is_broken_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """A run that watches its file composes it at start (what its edits reuse): refused as a
    host problem that may pass (75, agent.refusal: the file may be fine, a reinstall ends it;
    a unit restarts on 75, not on 2, bad input)."""
    broken_pyyaml(tmp_path, monkeypatch, error)
    path = tmp_path / "g.yaml"
    write(path, f"graph: g\nresources:\n  file:\n  - name: {tmp_path / 'out'}\n    content: a\n")
    code, out = run_mgmt(["run", "--tmp-prefix", "yaml", str(path)], env=dict(os.environ))
    errors = [line for line in out.splitlines() if SAID in line]
    assert code == 75 and len(errors) == 1 and f"{path}: {SAID}" in errors[0], out
    assert "Traceback" not in out and not (tmp_path / "out").exists(), out
