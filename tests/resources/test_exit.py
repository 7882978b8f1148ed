"""exit: the real agent (`mgmt run`) ends gracefully with the resource's code."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.helpers import run_mgmt

GRAPH = """graph: bye
resources:
  exec:
    - name: slow
      cmd: "echo started > {fifo} && sleep 0.5 && echo drained > {out}"
      shell: /bin/sh
      sig: SIGCONT
    # Done once `slow` has started (it writes the FIFO, whose open waits for this reader):
    # the exit after it arrives while `slow` runs, whatever the machine's load.
    - name: started
      cmd: "cat {fifo}"
      shell: /bin/sh
  exit:
    - name: bye
      code: {code}
edges:
  - from: {{kind: exec, name: started}}
    to: {{kind: exit, name: bye}}
"""


def test_a_running_agent_exits_with_the_code_after_draining(tmp_path: Path) -> None:
    out = tmp_path / "drained"
    graph = tmp_path / "g.yaml"
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    graph.write_text(GRAPH.format(out=out, fifo=fifo, code=42))
    # Not cron mode: without the exit resource this run would last until --max-runtime (exit 0).
    code, log = run_mgmt(["run", "--max-runtime=50", "--tmp-prefix", "yaml", str(graph)])
    assert code == 42, log
    assert "exit[bye]: asked the agent to exit with code 42" in log
    assert "max runtime" not in log
    # A graceful stop: the running exec, sent its sig (SIGCONT: it runs on), finished.
    assert "exec[slow]: cmd: stopping: sent SIGCONT" in log
    assert out.read_text() == "drained\n"


def test_noop_only_says_it_would_exit(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.format(out=tmp_path / "x", fifo=tmp_path / "f", code=42))
    args = ["run", "--noop", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)]
    code, log = run_mgmt(args)
    assert code == 0, log
    assert "exit[bye]: would exit with code 42" in log


def test_a_code_out_of_range_is_refused(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.format(out=tmp_path / "x", fifo=tmp_path / "f", code=126))
    code, log = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)])
    assert code == 2, log
    assert "code" in log and "Traceback" not in log
    assert not (tmp_path / "x").exists()
