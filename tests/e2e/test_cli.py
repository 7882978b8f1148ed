"""End to end: the real `mgmt` command on real files, processes and signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from resources.pkg import usrmerged
from tests.e2e.helpers import (
    MGMT,
    ROOT,
    Daemon,
    free_port,
    has_content,
    has_mode,
    pid_alive,
    run_mgmt,
    run_once,
    wait_path,
)
from tests.fuzz.hostile import BIG, HUGE, LAUGHS


def graph_file(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("TMP", str(tmp_path)))
    return path


def run_graph(tmp_path: Path, text: str, *flags: str, timeout: float = 60) -> tuple[int, str]:
    """`mgmt run --tmp-prefix FLAGS GRAPH` to its end, GRAPH the file graph_file makes of
    `text`: (exit code, output)."""
    return run_mgmt(["run", "--tmp-prefix", *flags, str(graph_file(tmp_path, text))], timeout)


HELLO = """
graph: hello
resources:
  file:
    - name: hello
      path: TMP/out/hello
      state: exists
      content: "hello world\\n"
      mode: "0644"
"""


def test_version_and_help() -> None:
    code, out = run_mgmt(["--version"])  # the bare version, as mgmt's, and the commit
    assert code == 0 and re.fullmatch(r"0\.\d+\.\d+\+[0-9a-f]{12}\n", out), out
    code, out = run_mgmt(["run", "--help"])
    assert code == 0 and "--converged-timeout" in out and "MGMT_" in out
    assert "(default: 300)" in out and "(default: 5)" in out  # tester14: defaults shown


def test_version_imports_no_event_loop() -> None:
    """`mgmt --version` answers without importing asyncio, the CLI or subprocess (its start-up
    was ~4x the bare interpreter's): `mgmt.version` alone; `mgmt run` imports them."""
    code, out = run_mgmt(["--version"], env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert code == 0 and re.search(r"^0\.\d+\.\d+", out, re.MULTILINE), out
    imported = re.findall(r"^import time:.*\|\s+(\S+)$", out, re.MULTILINE)
    assert "mgmt.version" in imported
    assert not {"asyncio", "mgmt.cli", "subprocess", "logging"} & set(imported), imported


def test_version_the_same_through_the_launcher_and_the_cli() -> None:
    """The `mgmt` command's own answer (mgmt.__main__, no CLI) is the CLI's, word for word:
    an extra argument is ignored as the CLI's parse ignores it."""
    from mgmt.cli import parse
    from mgmt.version import version

    for args in (["--version"], ["--version", "run"]):
        code, out = run_mgmt(args)
        assert (code, out) == (0, f"{version()}\n"), out
    with pytest.raises(SystemExit) as stop:
        parse(["--version"])
    assert stop.value.code == 0


def test_usage_error_exits_2() -> None:
    code, out = run_mgmt(["run", "yaml"])
    assert code == 2 and "expected `yaml FILE`" in out
    code, out = run_mgmt(["bogus"])
    assert code == 2 and "invalid choice" in out
    for args in (["bogus"], ["run", "--converged-timeout=x", "yaml", "f"], ["deploy", "--list=x"]):
        code, out = run_mgmt(args)  # one line saying what is wrong, not the whole synopsis
        assert code == 2 and len(out.strip().splitlines()) == 1 and "--help)" in out, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--prefix", "/nonexistent", "yaml", "f"])
    assert code == 2 and "--prefix and --tmp-prefix exclude each other" in out, out  # not silent


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["run", "--only-unify", "lang", "x.mcl"], "`mgmt check FILE.mcl` is that"),
        (["run", "--download", "lang", "x.mcl"], "remote modules are not downloaded here"),
        (["deploy", "--no-git", "lang", "x.mcl"], "not needed: deploys are chained by id"),
        (["run", "--noopp", "empty"], "(did you mean '--noop'?)"),
    ],
)
def test_a_flag_of_mgmts_says_what_to_do_here(args: list[str], hint: str) -> None:
    """A flag mgmt has and this project does not take: one line, the way here or why none is
    needed; any other unknown flag: the close one."""
    code, out = run_mgmt(args)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "unrecognized arguments: " in out and hint in out, out


def test_cron_run_converges_and_second_run_changes_nothing(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)])
    assert code == 0, out
    assert (tmp_path / "out/hello").read_text() == "hello world\n"
    assert "file[hello]" in out
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
    assert code == 0, out
    assert "file[hello]" not in out  # nothing to do, nothing logged at info level


TWO_LINES = """
graph: edit
resources:
  line:
    - {name: l1, file: TMP/lines.txt, state: exists, content: "managed line\\n"}
    - {name: l2, file: TMP/lines.txt, state: absent, content: "b\\n"}
"""


def test_two_lines_of_one_file_each_edit_once(tmp_path: Path) -> None:
    """tester6's finding 3: unserialised, l1 added its line twice in about half the runs."""
    graph = graph_file(tmp_path, TWO_LINES)
    for _ in range(4):
        (tmp_path / "lines.txt").write_text("a\nb\n")
        code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
        assert code == 0, out
        assert out.count("line[l1]: added") == 1, out
        assert (tmp_path / "lines.txt").read_text() == "a\nmanaged line\n"


def test_newer_converger_flag_spelling_and_env(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    code, out = run_mgmt(
        ["run", "--converger-timeout", "0", "--converged-exit", "--tmp-prefix", "yaml", str(graph)]
    )
    assert code == 0, out
    code, out = run_mgmt(["run", "--tmp-prefix", str(graph)], env={"MGMT_CONVERGED_TIMEOUT": "0"})
    assert code == 0, out


def test_noop_reports_and_changes_nothing(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    code, out = run_mgmt(["run", "--noop", "--converged-timeout=0", "--tmp-prefix", str(graph)])
    assert code == 0, out
    assert not (tmp_path / "out").exists()
    assert "would" in out and "file[hello]" in out
    assert "1 of 1 resource would change: file[hello]" in out
    # The summary tells the truth: nothing is in the desired state, nothing was left undone.
    assert (
        "converged: 0 of 1 resource in the desired state; would change (noop): file[hello]" in out
    )
    assert "converged: all" not in out and "left undone" not in out


def test_noop_checks_a_slow_resource_once_though_its_dependent_asks_meanwhile(
    tmp_path: Path,
) -> None:
    """Under --noop, a dependent that starts while its slow predecessor is being checked asks
    it to run (a back-poke); the check under way answers it. It ran again: `would run` twice
    for each (a grouped pkg and an exec after it; tester7's notes)."""
    program = tmp_path / "slow.mcl"
    program.write_text(
        'exec "slow" { cmd => "/bin/true", ifcmd => "sleep 1", }\n'
        'exec "after" { cmd => "/bin/true", }\n'
        'Exec["slow"] -> Exec["after"]\n'
    )
    args = ["run", "--noop", "--converged-timeout=0", "--tmp-prefix", str(program)]
    code, out = run_mgmt(args)
    assert code == 0, out
    assert out.count("exec[slow]: would run: /bin/true") == 1, out
    assert out.count("exec[after]: would run: /bin/true") == 1, out


async def test_under_noop_status_says_what_differs_as_the_log_does(tmp_path: Path) -> None:
    """--noop: a resource found not in the desired state reads `differs` in `mgmt status` (and
    its count, the JSON), as the log says it would change: not `converged`. Exit 0 (nothing
    failed). Repaired by hand, it is checked again and reads `converged`."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "same").write_text("same\n")
    graph = graph_file(
        tmp_path,
        """
        graph: noop
        resources:
          file:
            - {name: same, path: TMP/out/same, content: "same\\n"}
            - {name: new, path: TMP/out/new, content: "new\\n"}
        """,
    )
    prefix = tmp_path / "prefix"
    status = ["status", "--prefix", str(prefix)]
    async with Daemon(["run", "--noop", "--verbose", "--prefix", str(prefix), str(graph)]) as d:
        await d.wait_log("converged: 1 of 2 resources in the desired state; would change (noop)")
        assert f"file[new]: would create {tmp_path}/out/new" in d.log
        code, out = await asyncio.to_thread(run_mgmt, status)
        assert code == 0, out
        assert "2 resources: 1 converged, 1 differs\n" in out, out
        assert re.search(rf"file\[new\] +differs +\S+ +would create {tmp_path}/out/new\n", out)
        assert re.search(r"file\[same\] +converged ", out), out
        code, out = await asyncio.to_thread(run_mgmt, [*status, "--json"])
        snapshot = json.loads(out)
        assert snapshot["counts"]["differs"] == 1 and snapshot["counts"]["converged"] == 1
        (tmp_path / "out" / "new").write_text("new\n")
        await d.wait_log("file[new]: check_apply(apply=False) -> True")
        code, out = await asyncio.to_thread(run_mgmt, status)
        assert code == 0 and "2 resources: 2 converged\n" in out, out
        d.signal(signal.SIGTERM)
        assert await d.wait() == 0


REPAIRS = {  # what differs on disk -> the line that repairs it
    "mode": "mode 0644 -> 0600",
    "owner": "owner nobody -> root",
    "content": "content updated",
}


@pytest.mark.parametrize("differs", sorted(REPAIRS))
def test_a_repair_converges_true_without_checking_its_own_events(
    tmp_path: Path, differs: str
) -> None:
    """A repair's own chmod, chown or write is seen by the file's watch: that event must not
    make it look unconverged (the summary named it "would change (noop)" outside noop mode),
    nor check it a second time (engine/watcher.py, settle() after the check's own changes)."""
    path = tmp_path / "a"
    path.write_text("a\n" if differs != "content" else "old\n")
    path.chmod(0o644 if differs == "mode" else 0o600)
    if differs == "owner":
        if os.geteuid() != 0:
            pytest.skip("needs root (chown)")
        os.chown(path, 65534, -1)
    graph = graph_file(
        tmp_path,
        """
        graph: repair
        resources:
          file:
            - name: a
              path: TMP/a
              content: "a\\n"
              mode: "600"
        """
        + ("      owner: root\n" if differs == "owner" else ""),
    )
    args = ["run", "--tmp-prefix", "--converged-timeout=0", "--verbose", "yaml", str(graph)]
    code, out = run_mgmt(args)
    assert code == 0, out
    assert f"file[a]: {REPAIRS[differs]}" in out
    assert "converged: the 1 resource in the desired state" in out, out
    assert "would change" not in out and "converged again" not in out
    assert out.count("file[a]: check_apply(") == 1, out
    st = path.stat()
    assert (path.read_text(), st.st_mode & 0o777) == ("a\n", 0o600)
    assert differs != "owner" or st.st_uid == 0


def test_bad_input_exits_2_before_applying_anything(tmp_path: Path) -> None:
    graph = graph_file(
        tmp_path,
        """
        graph: bad
        resources:
          file:
            - name: good
              path: TMP/good
              content: "x"
            - name: bad
              path: TMP/bad
              contnet: "y"
        """,
    )
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
    assert code == 2
    assert f"{graph}:10: file[bad]: contnet: unknown key (did you mean 'content'?)" in out
    assert not (tmp_path / "good").exists()


def test_problems_are_told_in_file_order(tmp_path: Path) -> None:
    """A param's wrong type (line 9) before its meta's (line 10), though meta is checked first
    (a tester saw line 10 before line 9)."""
    graph = graph_file(
        tmp_path,
        """
        graph: bad
        resources:
          file:
            - name: f
              path: TMP/f
              state: exists
              content: [1]
              meta: {retry: x}
        """,
    )
    code, out = run_mgmt(["check", str(graph)])
    assert code == 2
    assert out.splitlines() == [
        f"{graph}:8: file[f]: content: expected a string, got [1]",
        f"{graph}:9: file[f]: meta.retry: expected an integer, got 'x'",
    ]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "g.yaml",
            "graph: g\nresources:\n  flie:\n  - name: f\n    path: /f\n",
            "3: resources.flie",
        ),
        ("g.mcl", 'flie "/f" {\n}\n', "1:1"),
    ],
)
def test_a_swapped_kind_suggests_the_kind_both_front_ends(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    """`flie` is one swap from `file` and two edits from `line`: both suggest `file`."""
    path = tmp_path / name
    path.write_text(text)
    code, out = run_mgmt(["check", str(path)])
    assert code == 2
    assert f"{path}:{where}: unknown " in out
    assert "kind 'flie' (did you mean 'file'?)" in out


def test_bad_merge_key_exits_2_naming_its_line(tmp_path: Path) -> None:
    graph = graph_file(
        tmp_path,
        """
        graph: bad
        comment: &notmap [1]
        resources:
          file:
            - name: good
              path: TMP/good
              content: "x"
              <<: *notmap
        """,
    )
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
    assert code == 2
    assert f"{graph}:9: file[good]: << takes a mapping or a list of mappings" in out
    assert not (tmp_path / "good").exists()


def test_failing_resource_exits_1_naming_it_and_siblings_still_run(tmp_path: Path) -> None:
    code, out = run_graph(
        tmp_path,
        """
        graph: failing
        resources:
          exec:
            - name: broken
              cmd: "false"
              meta: {retry: 1, delay: 10}
            - name: after
              cmd: touch TMP/after
            - name: sibling
              cmd: touch TMP/sibling
        edges:
          - {name: e, from: {kind: exec, name: broken}, to: {kind: exec, name: after}}
        """,
        "--converged-timeout=1",
        "--max-runtime=60",
    )
    assert code == 1, out
    assert "exec[broken]: failed" in out
    assert (tmp_path / "sibling").exists()
    assert not (tmp_path / "after").exists()
    # The convergence line tells the truth: not "all 3", and names the failed and blocked ones.
    assert "converged: all" not in out
    assert (
        "converged: 1 of 3 resources in the desired state; failed: exec[broken]; "
        "blocked by a failure: exec[after]"
    ) in out


@pytest.mark.parametrize("retry", [0, 2])
def test_a_failing_exec_runs_once_per_attempt_though_its_successor_waits(
    tmp_path: Path, retry: int
) -> None:
    """Its successor back-pokes it while it runs (it has not run yet); that asks nothing of
    it once it has failed: 1 + retry runs. (It ran once more, retry 0 too: a command with side
    effects run twice.)"""
    code, out = run_graph(
        tmp_path,
        f"""
        graph: once
        resources:
          exec:
            - name: bad
              cmd: "echo run >> TMP/runs; exit 1"
              shell: /bin/sh
              meta: {{retry: {retry}, delay: 10}}
          file:
            - name: TMP/out
              content: x
        edges:
          - {{name: e, from: {{kind: exec, name: bad}}, to: {{kind: file, name: TMP/out}}}}
        """,
        "--converged-timeout=0",
    )
    assert code == 1, out
    assert (tmp_path / "runs").read_text() == "run\n" * (1 + retry), out
    assert out.count("exec[bad]: running") == 1 + retry, out
    assert not (tmp_path / "out").exists()


async def test_the_converged_line_is_logged_when_the_graph_converges(tmp_path: Path) -> None:
    """Not held back until the converged timeout has run out (it was: its time included the
    wait); the exit, after the timeout, says so on a line of its own."""
    graph = graph_file(tmp_path, HELLO)
    args = ["run", "--converged-timeout=3600", "--tmp-prefix", "yaml", str(graph)]
    async with Daemon(args) as daemon:
        await daemon.wait_log("converged: the 1 resource in the desired state", timeout=60)
        assert "exiting" not in daemon.log
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_polled_resources_converge(tmp_path: Path) -> None:
    """A poll tick that changes nothing is not activity: the converged timeout still fires."""
    code, out = run_graph(
        tmp_path,
        """
        graph: polled
        resources:
          file:
            - name: polled
              path: TMP/polled
              content: "x\\n"
              meta: {poll: 1}
          exec:
            - name: downstream
              cmd: touch TMP/downstream
              ifcmd: test ! -e TMP/downstream
              meta: {poll: 1}
        edges:
          - {name: e, from: {kind: file, name: polled}, to: {kind: exec, name: downstream}}
        """,
        "--converged-timeout=3",
        "--max-runtime=30",
    )
    assert code == 0, out
    assert "converged: all 2 resources in the desired state" in out
    assert "converged for 3s, exiting" in out


def test_meta_timeout_is_in_milliseconds_as_in_mgmt(tmp_path: Path) -> None:
    """mgmt's Timeout is a uint64 of milliseconds (engine/graph/actions.go): `timeout: 300` stops
    a 30 s check after 300 ms, from a graph file and from a program (it was 300 s here)."""
    graph = graph_file(
        tmp_path,
        """
        graph: slow
        resources:
          exec:
            - name: slow
              cmd: sleep 30
              meta: {timeout: 300}
        """,
    )
    program = tmp_path / "slow.mcl"
    program.write_text('exec "slow" {\n\tcmd => "sleep 30",\n\tMeta:timeout => 300,\n}\n')
    for front in (["yaml", str(graph)], ["lang", str(program)]):
        code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", *front], timeout=25)
        assert code == 1, out
        assert "exec[slow]: failed: check_apply timed out after 300 ms (meta timeout)" in out, out


def test_exec_empty_strings_mean_not_set_as_in_mgmt(tmp_path: Path) -> None:
    """mgmt's example graphs write `shell: ''`, `ifcmd: ''` ... for "not set"."""
    code, out = run_graph(
        tmp_path,
        """
        graph: empties
        resources:
          exec:
            - name: exec1
              cmd: touch TMP/ran
              shell: ''
              timeout: 0
              watchcmd: ''
              watchshell: ''
              ifcmd: ''
              ifshell: ''
        """,
        "--converged-timeout=1",
        "--max-runtime=60",
    )
    assert code == 0, out
    assert (tmp_path / "ran").exists()


async def test_exec_watchfiles_counts_its_directory_appearing_not_higher_ones(
    tmp_path: Path,
) -> None:
    """`watchfiles: [a/b/trigger]` with `a`, `a/b` and the file made by hand ran 3 times: as in
    mgmt's recwatch, `a/b` appearing (the file's own directory) is an event, `a` is not; the
    file's removal (rm -rf a) is one, its directories going with it are not."""
    graph = graph_file(
        tmp_path,
        """
        graph: deep
        resources:
          exec:
            - name: deep
              cmd: /bin/true
              watchfiles: [TMP/a/b/trigger]
        """,
    )
    ran, skipped = "exec[deep]: ran: /bin/true", "a directory above changed: no event"
    async with Daemon(["run", "--tmp-prefix", "--verbose", "yaml", str(graph)]) as daemon:
        await daemon.wait_log(ran)  # the startup event
        (tmp_path / "a").mkdir()
        await daemon.wait_log(skipped)
        (tmp_path / "a/b").mkdir()
        await daemon.wait_log(ran, count=2)
        # Renamed in: one event (touch's ATTRIB and its later close of fd 0 may be two wakes).
        (tmp_path / "staged").write_text("go\n")
        (tmp_path / "staged").rename(tmp_path / "a/b/trigger")
        await daemon.wait_log(ran, count=3)
        await asyncio.to_thread(subprocess.run, ["rm", "-rf", str(tmp_path / "a")], check=True)
        await daemon.wait_log(ran, count=4)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert sum(ran in line for line in daemon.lines) == 4, daemon.log


@pytest.mark.parametrize("realize", [False, True])
async def test_meta_realize_runs_a_resource_before_a_swap_removes_it(
    tmp_path: Path, realize: bool
) -> None:
    """mgmt's meta realize: the graph is edited while the exec runs; the swap that removes
    both waits for the exec (always), then, with realize, for the file it was holding back."""
    graph = graph_file(
        tmp_path,
        f"""
        graph: first
        resources:
          exec:
            - name: slow
              cmd: sleep 2
          file:
            - name: TMP/out
              content: x
              meta: {{realize: {str(realize).lower()}}}
        edges:
          - {{name: e, from: {{kind: exec, name: slow}}, to: {{kind: file, name: TMP/out}}}}
        """,
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[slow]: running: sleep 2")
        staged = tmp_path / "staged.yaml"
        staged.write_text("graph: second\nresources:\n  noop:\n    - name: n\n")
        staged.rename(graph)
        await daemon.wait_log("graph swap: 0 kept, 2 stopped, 1 started")
        assert (tmp_path / "out").exists() is realize, daemon.log
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0, daemon.log


async def test_a_failed_watch_starts_again_meta_retry_times(tmp_path: Path) -> None:
    """As mgmt's Worker: a watch that fails is started again `retry` times, then the resource
    is failed for good."""
    graph = graph_file(
        tmp_path,
        """
        graph: watch
        resources:
          exec:
            - name: w
              cmd: "true"
              watchcmd: "echo started >> TMP/starts; exit 3"
              watchshell: /bin/sh
              meta: {retry: 2, delay: 10}
        """,
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("exec[w]: watch failed: ")
        daemon.signal(signal.SIGTERM)
        await daemon.wait()
    out = daemon.log
    assert (tmp_path / "starts").read_text() == "started\n" * 3, out
    assert out.count("exec[w]: watch failed, restarting (2 left): ") == 1, out
    assert out.count("exec[w]: watch failed, restarting (1 left): ") == 1, out
    assert out.count("exec[w]: watch failed: ") == 1, out


async def test_meta_rewatch_starts_a_failed_resource_again_at_the_next_swap(
    tmp_path: Path,
) -> None:
    """mgmt's rewatch: the swap that follows (here, a resource added) replaces the unchanged
    resource whose watch failed for good, and its watch runs again; not one without rewatch."""
    text = """
        graph: rewatch
        resources:
          exec:
            - name: w
              cmd: "true"
              watchcmd: "echo w >> TMP/starts; exit 3"
              watchshell: /bin/sh
              meta: {rewatch: true}
            - name: x
              cmd: "true"
              watchcmd: "echo x >> TMP/starts; exit 3"
              watchshell: /bin/sh
        """
    graph = graph_file(tmp_path, text)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("watch failed: ", count=2)
        staged = graph_file(
            tmp_path, text.rstrip() + "\n          noop: [{name: n}]\n", "staged.yaml"
        )
        staged.rename(graph)
        await daemon.wait_log("graph swap: 1 kept, 1 stopped, 2 started")
        await daemon.wait_log("exec[w]: watch failed: ", count=2)
        daemon.signal(signal.SIGTERM)
        await daemon.wait()
    assert sorted((tmp_path / "starts").read_text().split()) == ["w", "w", "x"], daemon.log


def test_not_converged_names_the_unsettled_resources(tmp_path: Path) -> None:
    code, out = run_graph(
        tmp_path,
        """
        graph: slow
        resources:
          exec:
            - name: slow
              cmd: sleep 8
            - name: quick
              cmd: "true"
        """,
        "--converged-timeout=1",
        "--max-runtime=2",
    )
    assert code == 1, out
    assert "did not converge: not settled: exec[slow] (running)" in out
    assert "exec[quick]" not in out.split("not settled:")[1].splitlines()[0]


@pytest.mark.parametrize("converged", [[], ["--converged-timeout=5"]], ids=["alone", "cron"])
def test_max_runtime_names_what_did_not_converge(tmp_path: Path, converged: list[str]) -> None:
    """--max-runtime alone, too: exit 1, naming the resources not settled and why (the
    command is sent its sig: a graceful stop)."""
    code, out = run_graph(
        tmp_path,
        """
        graph: never
        resources:
          exec:
            - name: slow
              cmd: sleep 30
        """,
        *converged,
        "--max-runtime=1",
        "yaml",
    )
    assert code == 1, out
    assert "did not converge: not settled: exec[slow] (running)" in out
    assert "exec[slow]: cmd: stopping: sent SIGTERM" in out


def _failing_exec(tmp_path: Path, retry: int, delay: int) -> Path:
    """A graph of one exec that always fails, retried per `retry` and `delay` (ms)."""
    return graph_file(
        tmp_path,
        f"""
        graph: retry
        resources:
          exec:
            - name: f
              cmd: /bin/false
              meta: {{retry: {retry}, delay: {delay}}}
        """,
    )


def test_each_failed_attempt_logs_its_error_and_what_is_left(tmp_path: Path) -> None:
    """As mgmt logs each retry: one line per failed attempt, with its error (attempts 2 and 3
    were silent, even with --verbose)."""
    graph = _failing_exec(tmp_path, retry=3, delay=10)
    code, out = run_once("yaml", graph)
    assert code == 1, out
    error = "cmd exited with code 1; no stderr"
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if "exec[f]: " in line]
    assert lines == [
        "exec[f]: running: /bin/false",
        f"exec[f]: failed, retrying in 0.01s (3 left): {error}",
        "exec[f]: running: /bin/false",
        f"exec[f]: failed, retrying in 0.01s (2 left): {error}",
        "exec[f]: running: /bin/false",
        f"exec[f]: failed, retrying in 0.01s (1 left): {error}",
        "exec[f]: running: /bin/false",
        f"exec[f]: failed: {error}",
    ], out


def test_retrying_forever_says_a_repeated_failure_once(tmp_path: Path) -> None:
    """tester11's finding 7: `retry: -1` logged three lines per attempt (`running:`, the
    output, `failed, retrying ...`), ~2,400 a second with `delay: 0`. The failure is said once,
    then counted (a line with the count once a minute: REPEAT_EVERY), and the resource's own
    lines once while it keeps failing (--verbose: each attempt at DEBUG); the retries run at
    mgmt's fixed delay as before."""
    graph = _failing_exec(tmp_path, retry=-1, delay=20)
    code, out = run_mgmt(["run", "--tmp-prefix", "--max-runtime=1", "yaml", str(graph)])
    assert code == 1, out
    assert out.count("exec[f]: failed, retrying in 0.02s (forever): cmd exited with code 1") == 1
    assert out.count("exec[f]: running: /bin/false") == 2, out  # the 1st attempt's, the 2nd's
    known = ("running: /bin/false", "failed, retrying in", "cmd: stopping:", "cmd stopped (")
    others = [line for line in out.splitlines() if "exec[f]: " in line]
    assert not [line for line in others if not any(k in line for k in known)], out
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--max-runtime=1", "--verbose", "yaml", str(graph)]
    )
    again = out.count("exec[f]: failed, retrying in 0.02s (forever) again: cmd exited with code 1")
    assert again >= 3 and out.count("exec[f]: running: /bin/false") >= again, out


@pytest.mark.parametrize("retryreset", [False, True])
def test_retries_are_spent_for_good_unless_retryreset(tmp_path: Path, retryreset: bool) -> None:
    """mgmt's meta retry: a success does not give the retries back unless `retryreset`. The
    command fails on its 1st and 3rd runs (a poll tick brings the 3rd): its one retry was spent
    on the 1st, so the 3rd fails the resource, unless retryreset gave it back. The count is
    written whole (a file renamed into place): --max-runtime's stop, at 4 s as the 5th poll
    tick's run, sends that run SIGTERM, which could end its shell between `>`'s truncation and
    the write (an empty file: seen about once in 12 runs at load 8)."""
    graph = graph_file(
        tmp_path,
        f"""
        graph: spent
        resources:
          exec:
            - name: x
              cmd: "n=$(($(cat TMP/n 2>/dev/null || echo 0) + 1)); echo $n > TMP/m; mv TMP/m TMP/n; [ $n != 1 ] && [ $n != 3 ]"
              shell: /bin/sh
              meta: {{retry: 1, delay: 10, poll: 1, retryreset: {str(retryreset).lower()}}}
        """,
    )
    _code, out = run_mgmt(["run", "--tmp-prefix", "--max-runtime=4", "yaml", str(graph)])
    assert int((tmp_path / "n").read_text()) >= 4, out
    retried = out.count("exec[x]: failed, retrying in 0.01s (1 left): cmd exited with code 1")
    assert retried == (2 if retryreset else 1), out
    assert ("exec[x]: failed: cmd exited with code 1" in out) is not retryreset, out


def test_mgmts_meta_dollar_and_async_in_a_graph(tmp_path: Path) -> None:
    """mgmt's engine refuses a name that starts with `$` unless meta dollar; meta async is
    accepted (our swaps never pause a running check), not with hidden or export (mgmt's
    MetaParams.Validate)."""
    graph = graph_file(
        tmp_path,
        """
        graph: dollar
        resources:
          noop:
            - name: $oops
            - name: $ok
              meta: {dollar: true, async: true}
            - name: h
              meta: {async: true, hidden: true}
            - name: e
              meta: {async: true, export: ["*"]}
        """,
    )
    code, out = run_once("yaml", graph)
    assert code == 2, out
    assert f"{graph}:5: noop[$oops]: name: starts with $ (a variable not interpolated?)" in out
    assert f"{graph}:9: noop[h]: meta.async: cannot be combined with hidden" in out
    assert f"{graph}:11: noop[e]: meta.async: cannot be combined with export" in out
    assert "noop[$ok]" not in out, out
    graph.write_text("graph: g\nresources:\n  noop:\n    - {name: $ok, meta: {dollar: true}}\n")
    code, out = run_once("yaml", graph)
    assert code == 0, out


def test_max_runtime_bounds_a_run_that_never_converges(tmp_path: Path) -> None:
    code, out = run_graph(
        tmp_path,
        """
        graph: busy
        resources:
          timer:
            - name: tick
              interval: 0.2
        """,
        "--converged-timeout=5",
        "--max-runtime=2",
    )
    assert code == 1, out
    assert "did not converge" in out


def test_max_runtime_bounds_a_run_whose_command_never_ends(tmp_path: Path) -> None:
    """The flag is a bound: a command still running after its `sig` (here one that does not
    end it) gets a grace, then it is cancelled."""
    code, out = run_graph(
        tmp_path,
        """
        graph: stuck
        resources:
          exec:
            - name: stuck
              cmd: /bin/sleep 600
              sig: SIGCONT
        """,
        "--max-runtime=1",
        timeout=40,
    )
    assert code == 1, out
    lines = out.splitlines()
    reached = next(
        i for i, line in enumerate(lines) if "max runtime of 1s reached: stopping" in line
    )
    grace = next(i for i, line in enumerate(lines) if "max runtime's grace: stopping now" in line)
    assert reached < grace, out  # said when the stop starts, not once its grace is over


def test_converged_exit_without_its_timeout_is_warned_about(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    args = ["run", "--converged-exit", "--max-runtime=1", "--tmp-prefix", str(graph)]
    code, out = run_mgmt(args)
    assert code == 0, out
    assert "--converged-exit without --converger-timeout N: the run will not exit" in out


def test_max_runtime_bounds_a_run_whose_input_is_a_fifo(tmp_path: Path) -> None:
    """A FIFO where a gzip reads (its input, or its output that a local user replaced): opening
    it waited for a writer in a thread that no cancel ends, so neither --max-runtime nor
    SIGTERM ended the run. It is refused as not a regular file."""
    os.mkfifo(tmp_path / "in")
    os.mkfifo(tmp_path / "out.gz")
    code, out = run_graph(
        tmp_path,
        f"""
        graph: fifo
        resources:
          gzip:
            - name: {tmp_path}/a.gz
              input: {tmp_path}/in
            - name: {tmp_path}/out.gz
              content: "x"
        """,
        "--max-runtime=2",
        timeout=40,
    )
    assert code == 1, out
    assert f"cannot read {tmp_path}/in: not a regular file" in out
    assert f"cannot read {tmp_path}/out.gz: not a regular file" in out


def test_a_directory_given_as_the_graph_file_is_one_line(tmp_path: Path) -> None:
    """It was a traceback (IsADirectoryError from the file object), exit 1."""
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(tmp_path)])
    assert code == 2, out
    assert out.strip().endswith(f"{tmp_path}: cannot read: a directory"), out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out


def test_two_resources_managing_one_file_are_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """They would undo each other's changes forever (a tester saw 511 log lines in 4 s): `mgmt
    run` and `mgmt check` refuse the graph in one line naming both, exit 2, nothing applied;
    the same for a program (`mgmt check` runs it to its first graph)."""
    graph = graph_file(
        tmp_path,
        """
        graph: clash
        resources:
          file:
            - name: a
              path: TMP/out/same
              content: "x"
            - name: b
              path: TMP/out/same
              content: "y"
        """,
    )
    clash = (
        f"file[b] and file[a] both manage file {tmp_path}/out/same: each would undo the other's"
        " changes (keep one of them)"
    )
    want = f"{graph}:8: file[b]: {clash} (also declared at line 5)"  # the graph file's lines
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)])
    assert code == 2 and out.strip().endswith(want) and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "out").exists()
    code, out = run_mgmt(["check", str(graph)])
    assert (code, out.strip()) == (2, want), out
    program = tmp_path / "clash.mcl"
    program.write_text(
        "".join(
            f'file "{name}" {{\n\tpath => "{tmp_path}/out/same",\n\tcontent => "{name}",\n}}\n'
            for name in "ab"
        )
    )
    # At the statements (before 2026-12-05 the engine's words without them, and only with
    # --graph: tester6's finding 2).
    mcl = f"{program}:5:1: {clash} (also declared at {program}:1:1)"
    for check in (["check"], ["check", "--graph"]):
        code, out = run_mgmt([*check, str(program)])
        assert (code, out.strip()) == (2, mcl), out


def test_two_files_of_one_path_are_refused_after_an_archive_of_it(tmp_path: Path) -> None:
    """The engine kept one owner per path whatever its kind: a `tar` of a path listed first,
    then two `file` of it, passed (the second file compared with the tar, not the first file).
    Every pair of one kind is refused, in any order and with automatic edges off for one: a
    program (`mgmt check --graph`, `mgmt run`: at its statements) and a graph file (its lines)."""
    (tmp_path / "tree").mkdir()
    archive = tmp_path / "site.tar"
    clash = (
        f"file[b] and file[a] both manage file {archive}: each would undo the other's changes"
        " (keep one of them)"
    )
    tar = f'tar "{archive}" {{\n\tinputs => ["{tmp_path}/tree/",],\n}}\n'
    files = [
        f'file "{name}" {{\n\tpath => "{archive}",\n\tmode => "060{i}",\n{meta}}}\n'
        for i, (name, meta) in enumerate([("a", ""), ("b", "\tMeta:autoedge => false,\n")])
    ]
    for order, lines in (([tar, *files], (4, 8)), ([files[0], tar, files[1]], (1, 8))):
        program = tmp_path / "clash.mcl"
        program.write_text("".join(order))
        at = f"{program}:{lines[1]}:1: {clash} (also declared at {program}:{lines[0]}:1)"
        code, out = run_mgmt(["check", "--graph", str(program)])
        assert (code, out.strip()) == (2, at), out
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "lang", str(program)])
    assert code == 2 and out.strip().endswith(at), out
    assert not archive.exists()
    graph = graph_file(
        tmp_path,
        """
        graph: archive-then-two-files
        resources:
          tar:
            - name: TMP/site.tar
              inputs: [TMP/tree/]
          file:
            - name: a
              path: TMP/site.tar
            - name: b
              path: TMP/site.tar
        """,
    )
    want = f"{graph}:10: file[b]: {clash} (also declared at line 8)"
    for argv in (["check"], ["run", "--converged-timeout=0", "--tmp-prefix", "yaml"]):
        code, out = run_mgmt([*argv, str(graph)])
        assert code == 2 and out.strip().endswith(want), out
        assert len(out.strip().splitlines()) == 1, out
    assert not archive.exists()


def test_resources_of_two_kinds_may_manage_one_file(tmp_path: Path) -> None:
    """mgmt's deploy-tar.mcl: an archive's kind writes it, a `file` of its path sets its mode.
    Only resources of one kind clash (the test above); this graph checks and runs."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/hello").write_text("hello\n")
    graph = graph_file(
        tmp_path,
        """
        graph: two-kinds
        resources:
          tar:
            - name: TMP/site.tar
              inputs: [TMP/tree/]
          file:
            - name: TMP/site.tar
              mode: "0600"
        edges:
          - from: {kind: tar, name: TMP/site.tar}
            to: {kind: file, name: TMP/site.tar}
        """,
    )
    code, out = run_mgmt(["check", str(graph)])
    assert (code, out.strip()) == (0, f"{graph}: ok"), out
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)])
    assert code == 0, out
    assert (tmp_path / "site.tar").stat().st_mode & 0o777 == 0o600, out


def test_diamond_runs_in_parallel(tmp_path: Path) -> None:
    """b and c overlap in time; d starts after both ended; e does not wait for anything."""
    stamp = "date +%s.%N >> TMP/{name}.{what}"
    resources = []
    for name in "abcde":
        script = f"{stamp.format(name=name, what='start')}; sleep 0.5; {stamp.format(name=name, what='end')}"
        resources.append(f'    - name: {name}\n      shell: /bin/sh\n      cmd: "{script}"\n')
    text = "graph: diamond\nresources:\n  exec:\n" + "".join(resources) + "edges:\n"
    for src, dst in ["ab", "ac", "bd", "cd"]:
        text += f"  - {{name: {src}{dst}, from: {{kind: exec, name: {src}}}, to: {{kind: exec, name: {dst}}}}}\n"
    graph = graph_file(tmp_path, text)
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
    assert code == 0, out

    def times(name: str) -> tuple[float, float]:
        start = float((tmp_path / f"{name}.start").read_text())
        end = float((tmp_path / f"{name}.end").read_text())
        return start, end

    a, b, c, d, e = (times(n) for n in "abcde")
    assert b[0] >= a[1] and c[0] >= a[1]
    assert b[0] < c[1] and c[0] < b[1]  # b and c overlap
    assert d[0] >= max(b[1], c[1])
    assert e[0] < a[1]  # the independent branch ran alongside a


@pytest.mark.parametrize("drift", ["rm", "overwrite", "chmod"])
async def test_daemon_repairs_drift(tmp_path: Path, drift: str) -> None:
    graph = graph_file(tmp_path, HELLO)
    target = tmp_path / "out/hello"
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        await daemon.wait_log("file[hello]")
        for _ in range(3):
            if drift == "rm":
                target.unlink()
            elif drift == "overwrite":
                target.write_text("tampered\n")
            else:
                os.chmod(target, 0o600)
            await wait_path(
                target, lambda p: has_content("hello world\n")(p) and has_mode(0o644)(p)
            )
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_daemon_repairs_a_file_whose_ancestor_was_moved_away(tmp_path: Path) -> None:
    """`mv top old` above the file's directory moves the watched directory along (a watch
    follows its inode): the watch of top's own move says so (engine/watcher.py, Hub.guarded),
    and the file is made again at its path at once, each time."""
    graph = graph_file(tmp_path, HELLO.replace("TMP/out/hello", "TMP/top/out/hello"))
    target = tmp_path / "top/out/hello"
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        for attempt in range(3):
            (tmp_path / "top").rename(tmp_path / f"old{attempt}")
            await wait_path(target, has_content("hello world\n"))
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def _remove_tree(top: Path) -> None:
    """`rm -rf top` until one pass removes it whole (blocking; bounded)."""
    for _ in range(10_000):
        try:
            shutil.rmtree(top)
            return
        except OSError:
            continue  # the agent made something again meanwhile
    raise AssertionError(f"{top} could not be removed whole")


async def test_daemon_repairs_a_file_after_rm_rf_of_a_directory_a_shell_is_in(
    tmp_path: Path,
) -> None:
    """An operator's shell sits in the file's directory while another removes the tree: the
    directory's own deletion event waits until nothing holds it, and the agent stayed
    "converged" with nothing repaired. Its parent's deletion of its name is seen: repaired."""
    graph = graph_file(tmp_path, HELLO.replace("TMP/out/hello", "TMP/top/out/hello"))
    target = tmp_path / "top/out/hello"
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        shell = await asyncio.create_subprocess_exec("sleep", "60", cwd=target.parent)
        try:
            for _ in range(3):
                # The agent repairs at once: removed again until the whole tree went at once.
                await asyncio.wait_for(asyncio.to_thread(_remove_tree, tmp_path / "top"), 30)
                await wait_path(target, has_content("hello world\n"))
        finally:
            shell.kill()
            await shell.wait()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_daemon_swaps_graph_on_edit_and_keeps_unchanged(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await wait_path(tmp_path / "out/hello", has_content("hello world\n"))
        text = HELLO.replace("TMP", str(tmp_path)) + textwrap.indent(
            textwrap.dedent(
                f"""
                - name: second
                  path: {tmp_path}/out/second
                  content: "two\\n"
                """
            ),
            "    ",
        )
        tmp = graph.with_suffix(".new")
        tmp.write_text(text)
        tmp.replace(graph)  # what editors do
        await wait_path(tmp_path / "out/second", has_content("two\n"))
        await daemon.wait_log("graph swap: 1 kept, 0 stopped, 1 started")
        daemon.signal(signal.SIGHUP)  # unchanged file: nothing to swap, the signal said
        await daemon.wait_log("SIGHUP: reading")
        graph.write_text(text.replace("two", "three"))
        await wait_path(tmp_path / "out/second", has_content("three\n"))
        await daemon.wait_log("graph swap: 1 kept, 1 stopped, 1 started")
        graph.write_text("graph: [broken\n")  # a bad edit keeps the running graph
        await daemon.wait_log("keeping the running graph")
        (tmp_path / "out/second").unlink()
        await wait_path(tmp_path / "out/second", has_content("three\n"))
        daemon.signal(signal.SIGINT)
        assert await daemon.wait() == 0


async def test_no_watch_ignores_edits_but_sighup_reloads(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    async with Daemon(["run", "--tmp-prefix", "--no-watch", str(graph)]) as daemon:
        await wait_path(tmp_path / "out/hello", has_content("hello world\n"))
        graph.write_text(HELLO.replace("TMP", str(tmp_path)).replace("hello world", "bye"))
        daemon.signal(signal.SIGHUP)
        await wait_path(tmp_path / "out/hello", has_content("bye\n"))
        await daemon.wait_log("graph file changed")  # the log's writer may lag the file
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_sighup_retries_a_dead_watch_and_a_failed_resource(tmp_path: Path) -> None:
    """A reload retries what failed, the graph file unchanged: a watch failed for good starts
    again, a resource out of retries is checked once more."""
    graph = graph_file(
        tmp_path,
        """
        graph: g
        resources:
          exec:
            - name: watched
              shell: /bin/sh
              cmd: "true"
              watchshell: /bin/sh
              watchcmd: "test -e TMP/ok && echo $$ > TMP/watching && exec sleep 600"
            - name: failing
              shell: /bin/sh
              cmd: "test -e TMP/ok"
        """,
    )
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log("exec[watched]: watch failed")
        await daemon.wait_log("exec[failing]: failed")
        (tmp_path / "ok").touch()
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("SIGHUP: restarting 1 dead and re-checking 1 failed resources")
        await wait_path(tmp_path / "watching", lambda p: p.exists())
        await daemon.wait_log("exec[failing]: recovered")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert daemon.log.count("watch failed") == 1


def retrying_for_ever(tmp_path: Path, name: str, cmd: str) -> Path:
    """A graph of one exec `name` running `cmd` (TMP: tmp_path), retried every ten minutes
    for ever (`retry: -1, delay: 600000`)."""
    return graph_file(
        tmp_path,
        f"""
        graph: g
        resources:
          exec:
            - name: {name}
              shell: /bin/sh
              cmd: "{cmd}"
              meta: {{retry: -1, delay: 600000}}
        """,
    )


async def test_sighup_runs_a_retry_now_not_at_its_meta_delay(tmp_path: Path) -> None:
    """A resource retrying with a long delay (`retry: -1, delay: 600000`), its cause fixed by
    hand, then `systemctl reload`: the reload re-checked dead and failed resources only, so it
    waited on for its ten minutes (`stopped: ... retrying after a failure` at a stop before:
    user3). Its retry runs now, said in the reload's line; the file beside it is left alone."""
    graph = retrying_for_ever(tmp_path, "slow", "test -e TMP/ok")
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log("exec[slow]: failed, retrying in 600s (forever)")
        (tmp_path / "ok").touch()
        daemon.signal(signal.SIGHUP)
        said = "SIGHUP: restarting 0 dead and re-checking 0 failed resources; retrying 1 now"
        await daemon.wait_log(said)
        await daemon.wait_log("exec[slow]: recovered")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    assert "left undone" not in daemon.log


async def test_a_storm_of_reloads_retries_a_failing_resource_once_a_second_at_most(
    tmp_path: Path,
) -> None:
    """Thirty reloads in a row against a resource that keeps failing (`retry: -1, delay:
    600000`): each reload cut the wait of the retry the one before had run, so the service
    was hit at each reload, its delay gone (review_user3). A reload now runs a retry no
    sooner than RELOAD_GAP s after its failure: at most one attempt a second."""
    from engine.engine import RELOAD_GAP

    runs = tmp_path / "runs"
    graph = retrying_for_ever(tmp_path, "down", "echo x >> TMP/runs; false")
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log("exec[down]: failed, retrying in 600s (forever)")
        began = time.monotonic()
        for count in range(1, 31):
            daemon.signal(signal.SIGHUP)
            await daemon.wait_log("SIGHUP: reading", count=count)
        took = time.monotonic() - began
        attempts = len(runs.read_text().splitlines())
        assert attempts <= 2 + took / RELOAD_GAP, (attempts, took)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_signal_is_graceful_and_a_second_one_forces(
    tmp_path: Path, sig: signal.Signals
) -> None:
    graph = graph_file(
        tmp_path,
        """
        graph: slow
        resources:
          exec:
            - name: slow
              shell: /bin/sh
              cmd: "echo $$ > TMP/pid; exec sleep 30"
              sig: SIGCONT
        """,
    )
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await wait_path(tmp_path / "pid", lambda p: p.exists() and p.read_text().strip() != "")
        pid = int((tmp_path / "pid").read_text())
        daemon.signal(sig)
        await daemon.wait_log("exec[slow]: cmd: stopping: sent SIGCONT")
        assert daemon.proc is not None
        with pytest.raises(TimeoutError):  # still waiting for the command its sig left running
            async with asyncio.timeout(0.5):
                await asyncio.shield(daemon.proc.wait())
        daemon.signal(sig)
        assert await daemon.wait() == 1  # forced: a check_apply was interrupted
        assert "stopping now" in daemon.log
    assert not pid_alive(pid)  # the command's process was killed, not orphaned


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_signal_exits_0_though_a_resource_failed(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A stop asked for is a clean stop (`systemctl stop` must not leave the unit failed):
    exit 0, and the failure, logged when it happened, is not logged again at the stop."""
    graph = graph_file(
        tmp_path,
        """
        graph: failing
        resources:
          exec:
            - {name: broken, cmd: "false"}
          file:
            - {name: TMP/ok, content: "ok\\n"}
        """,
    )
    async with Daemon(["run", "--tmp-prefix", "yaml", str(graph)]) as daemon:
        await daemon.wait_log("converged: 1 of 2 resources in the desired state")
        daemon.signal(sig)
        assert await daemon.wait() == 0, daemon.log
    assert "stopping gracefully" in daemon.log
    assert sum("exec[broken]: failed" in line for line in daemon.lines) == 1, daemon.log


async def test_a_forced_stop_of_a_first_run_makes_no_change_it_does_not_log(
    tmp_path: Path,
) -> None:
    """A second SIGTERM during a first run of 2,000 files: the writes queued for the I/O
    threads are given up, not made, and each write made has its line, those a thread
    finished while the stop was under way too. (The queued ones were all made in the
    seconds after "stopping now", unlogged: ~2,000 files on disk, a few hundred lines.)"""
    out = tmp_path / "out"
    out.mkdir()
    items = "".join(f"    - name: {out}/f{i}\n      content: x\n" for i in range(2000))
    graph = graph_file(tmp_path, f"graph: g\nresources:\n  file:\n{items}")
    async with Daemon(["run", "--tmp-prefix", str(graph)]) as daemon:
        await daemon.wait_log(": created ")
        daemon.signal(signal.SIGTERM)
        await daemon.wait_log("stopping gracefully")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 1
    logged = {m.group(1) for m in re.finditer(r": created (\S+)", "\n".join(daemon.lines))}
    made = {str(path) for path in out.iterdir()}
    assert made == logged, (len(made - logged), len(logged - made))


def _status_to_a_full_disk(prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [*MGMT, "status", "--prefix", str(prefix), *extra],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            cwd=ROOT,
            check=False,
        )


async def test_mgmt_status_says_it_cannot_write_its_output(tmp_path: Path) -> None:
    """`mgmt status > file` on a full disk: one line saying so and exit 1, not a traceback."""
    prefix = tmp_path / "prefix"
    graph = graph_file(tmp_path, HELLO)
    async with Daemon(["run", "--prefix", str(prefix), str(graph)]) as daemon:
        await daemon.wait_log("converged:")
        for extra in ([], ["--json"]):
            proc = await asyncio.to_thread(_status_to_a_full_disk, prefix, *extra)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr == "mgmt status: cannot write the status: No space left on device\n"
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_a_file_name_cannot_forge_log_lines_or_reach_the_terminal(tmp_path: Path) -> None:
    """A local user names a file in a purged directory with a newline and a log line after
    it, or with an escape sequence: the agent's "purged" line shows them escaped, one line."""
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    forged = "00:00:00 main: converged: the 1 resource in the desired state (0.001s)"
    (tmp_path / "dst" / f"evil\n{forged}").touch()
    (tmp_path / "dst" / "red\x1b[31m").touch()
    code, out = run_graph(
        tmp_path,
        """
        graph: purge
        resources:
          file:
            - name: TMP/dst/
              source: TMP/src/
              recurse: true
              purge: true
        """,
        "--converged-timeout",
        "0",
    )
    assert code == 0, out
    assert forged not in out.splitlines() and "\x1b" not in out, out
    assert f"purged evil\\n{forged}\n" in out and "purged red\\x1b[31m\n" in out, out


def test_purge_without_state_purges(tmp_path: Path) -> None:
    """tester14's finding 2: `recurse: true, purge: true` and no `state` did nothing, silently
    (`nothing to do: none of state, content, ... is set`). Purge implies `exists`, as content
    does: the stray entry goes, the managed one stays; a missing directory is made."""
    (tmp_path / "pur").mkdir()
    (tmp_path / "pur" / "junk").write_text("x")
    graph = graph_file(
        tmp_path,
        """
        graph: purge
        resources:
          file:
            - name: pur
              path: TMP/pur/
              recurse: true
              purge: true
            - name: keep
              path: TMP/pur/keep
              content: "k\\n"
        """,
    )
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout", "0", str(graph)])
    assert code == 0 and "file[pur]: purged junk" in out, out
    assert sorted(p.name for p in (tmp_path / "pur").iterdir()) == ["keep"]
    shutil.rmtree(tmp_path / "pur")
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout", "0", str(graph)])
    assert code == 0 and (tmp_path / "pur" / "keep").read_text() == "k\n", out


@pytest.mark.parametrize("given", [["--hostname", ""], ["--hostname="]])
def test_an_empty_hostname_is_the_systems(tmp_path: Path, given: list[str]) -> None:
    """As mgmt (lib/main.go: an empty --hostname is the system's): a unit's `--hostname
    "$HOST"` with HOST unset runs as this host. Until 2026-12-07 the program's $hostname was
    the empty string."""
    program = tmp_path / "h.mcl"
    program.write_text('print "h" {\n\tmsg => "host=" + $hostname,\n}\n')
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", *given, str(program)])
    assert code == 0 and f"msg: host={socket.gethostname()}\n" in out, out


@pytest.mark.parametrize(
    ("given", "env"),
    [
        (["--hostname", ""], {}),
        (["--hostname="], {"MGMT_HOSTNAME": "x"}),
        ([], {"MGMT_HOSTNAME": ""}),
    ],
)
def test_check_takes_an_empty_hostname_as_run_does(
    tmp_path: Path, given: list[str], env: dict[str, str]
) -> None:
    """`mgmt check` runs the program as `mgmt run` would: an empty --hostname (or
    MGMT_HOSTNAME) is the system's there too. Until 2026-12-07 check refused `--hostname ''`
    (run took it) and ran the program with MGMT_HOSTNAME="" as the empty string."""
    program = tmp_path / "h.mcl"
    program.write_text('print "host=${hostname}" {\n\tmsg => "x",\n}\n')
    code, out = run_mgmt(["check", "--graph", *given, str(program)], env=env)
    assert code == 0 and f"print[host={socket.gethostname()}]" in out, out


def test_graphviz_output(tmp_path: Path) -> None:
    graph = graph_file(
        tmp_path,
        """
        graph: dot
        resources:
          noop:
            - name: a
            - name: b
        edges:
          - {name: e, from: {kind: noop, name: a}, to: {kind: noop, name: b}, notify: true}
        """,
    )
    dot = tmp_path / "g.dot"
    code, out = run_mgmt(
        ["run", "--converged-timeout=0", "--tmp-prefix", "--graphviz", str(dot), str(graph)]
    )
    assert code == 0, out
    assert '"noop[a]" -> "noop[b]"' in dot.read_text()


def test_graphviz_into_a_missing_directory_is_a_warning_and_makes_none(tmp_path: Path) -> None:
    """As mgmt's graphviz (os.WriteFile): a FILE whose directory is missing is not written, and
    the warning says why; the run goes on. Until 2026-12-07 the directories were made, silently
    (`--graphviz /tmp/grpah/g.dot`: a root-owned /tmp/grpah, not a word in the log)."""
    graph = graph_file(tmp_path, "graph: dot\nresources:\n  noop:\n    - name: a\n")
    dot = tmp_path / "missing" / "g.dot"
    code, out = run_mgmt(
        ["run", "--converged-timeout=0", "--tmp-prefix", "--graphviz", str(dot), str(graph)]
    )
    assert code == 0, out
    assert f"--graphviz: cannot write {dot}: No such file or directory" in out, out
    assert not (tmp_path / "missing").exists()


def test_a_prefix_that_is_a_link_of_roots_is_followed(tmp_path: Path) -> None:
    """`--prefix /var/lib/mgmt` linked to /srv/mgmt (mgmt follows it): the agent keeps its state
    where the link leads, and `mgmt status --prefix LINK` finds it. Until 2026-12-07: exit 2,
    "is not a directory (a symlink or a file)". A link another user owns: still refused."""
    tmp_path.chmod(0o755)
    real = tmp_path / "srv-mgmt"
    real.mkdir(mode=0o700)
    link = tmp_path / "mgmt"
    link.symlink_to(real.name)
    graph = graph_file(tmp_path, "graph: g\nresources:\n  noop:\n    - name: a\n")
    code, out = run_mgmt(["run", "--converged-timeout=0", "--prefix", str(link), str(graph)])
    assert code == 0, out
    assert (real / ".mgmt-agent.lock").exists() and link.is_symlink()
    os.chown(link, 65534, 65534, follow_symlinks=False)
    code, out = run_mgmt(["run", "--converged-timeout=0", "--prefix", str(link), str(graph)])
    assert code == 2 and f"refusing to follow the symlink {link}" in out, out


def test_a_package_comes_before_what_runs_or_manages_its_files(tmp_path: Path) -> None:
    """As mgmt's autoedges5.yaml: an installed package's files (dpkg's list) give it an edge to
    the exec running one of its programs, the file resource managing one of its files and the
    svc of its unit. A package not installed lists nothing yet (as in mgmt on Debian), and one
    to remove gives no edge. Packages of scripts/apt-packages.txt, installed here."""
    text = """
        graph: pkgedges
        resources:
          pkg:
            - name: inotify-tools
            - name: dbus
            - name: openssh-server
              state: uninstalled
            - name: hello-not-installed-here
          exec:
            - name: watch
              cmd: /usr/bin/inotifywait --help
            - name: shell
              cmd: echo hi
              shell: /usr/sbin/sshd
            - name: hello
              cmd: /usr/bin/hello-not-installed-here
          file:
            - name: doc
              path: /usr/share/doc/inotify-tools/copyright
              state: exists
          svc:
            - name: dbus
        """
    code, out = run_mgmt(["check", "--graph", str(graph_file(tmp_path, text))])
    assert code == 0, out
    edges = [line for line in out.splitlines() if line.startswith("Edge:")]
    assert edges == [
        "Edge: pkg[dbus] -> svc[dbus] # autoedge",
        "Edge: pkg[inotify-tools] -> exec[watch] # autoedge",
        "Edge: pkg[inotify-tools] -> file[doc] # autoedge",
    ]


@pytest.mark.skipif(
    not {"bin", "sbin"} <= usrmerged(), reason="needs a merged /usr (/bin -> usr/bin)"
)
def test_a_package_gives_its_edges_under_both_names_of_a_merged_usr(tmp_path: Path) -> None:
    """On a merged /usr, /bin/ls and /usr/bin/ls are one file, whichever name dpkg lists
    (bookworm's coreutils: /bin/ls): both get the package's edge (tester7's notes: only the
    listed name did)."""
    text = """
        graph: usrmerge
        resources:
          pkg:
            - name: coreutils
          exec:
            - name: usr
              cmd: /usr/bin/ls
            - name: short
              cmd: /bin/ls
            - name: sbin
              cmd: /usr/sbin/chroot --help
        """
    code, out = run_mgmt(["check", "--graph", str(graph_file(tmp_path, text))])
    assert code == 0, out
    edges = [line for line in out.splitlines() if line.startswith("Edge:")]
    assert edges == [
        "Edge: pkg[coreutils] -> exec[sbin] # autoedge",
        "Edge: pkg[coreutils] -> exec[short] # autoedge",
        "Edge: pkg[coreutils] -> exec[usr] # autoedge",
    ], out


def test_an_exec_runs_after_the_user_and_group_it_runs_as(tmp_path: Path) -> None:
    """An exec with `user`/`group` gets automatic edges from the `user` and `group` resources
    that make them (mgmt's exec: UserUID, GroupUID), by name or by the id one sets."""
    text = """
        graph: runas
        resources:
          user:
            - name: builder
            - name: other
              uid: 4321
          group:
            - name: builders
          exec:
            - name: build
              cmd: "true"
              user: builder
              group: builders
            - name: by-id
              cmd: "true"
              user: "4321"
            - name: plain
              cmd: "true"
        """
    code, out = run_mgmt(["check", "--graph", str(graph_file(tmp_path, text))])
    assert code == 0, out
    edges = [line for line in out.splitlines() if line.startswith("Edge:") and "exec[" in line]
    assert sorted(edges) == [
        "Edge: group[builders] -> exec[build] # autoedge",
        "Edge: user[builder] -> exec[build] # autoedge",
        "Edge: user[other] -> exec[by-id] # autoedge",
    ], out


def test_a_file_runs_after_the_user_and_group_that_own_it_in_each_front_end(
    tmp_path: Path,
) -> None:
    """A file's `owner`/`group` give automatic edges from the `user` and `group` resources
    that make them, by name or by the id one sets (Puppet's autorequire; tester7's report,
    item 8): in YAML, mcl and a Puppet manifest."""
    t = tmp_path
    graph = graph_file(
        t,
        f"""
        graph: owners
        resources:
          user:
            - name: app
          group:
            - name: apps
              gid: 4242
          file:
            - name: {t}/conf
              content: "x"
              owner: app
              group: "4242"
        """,
    )
    program = t / "owners.mcl"
    program.write_text(
        'user "app" { state => "exists", }\n'
        'group "apps" { state => "exists", gid => 4242, }\n'
        f'file "{t}/conf" {{ content => "x", owner => "app", group => "4242", }}\n'
    )
    manifest = t / "site.pp"
    manifest.write_text(
        "user { 'app': ensure => present }\n"
        "group { 'apps': ensure => present }\n"
        f"file {{ '{t}/conf': content => 'x', owner => 'app', group => 'apps' }}\n"
    )
    for path in (graph, program, manifest):
        code, out = run_mgmt(["check", "--graph", str(path)])
        assert code == 0, out
        edges = sorted(line for line in out.splitlines() if line.startswith("Edge:"))
        assert edges == [
            f"Edge: group[apps] -> file[{t}/conf] # autoedge",
            f"Edge: user[app] -> file[{t}/conf] # autoedge",
        ], out


def test_conflicting_semaphore_sizes_exit_2(tmp_path: Path) -> None:
    code, out = run_graph(
        tmp_path,
        """
        graph: sema
        resources:
          noop:
            - {name: a, meta: {sema: ["x:1"]}}
            - {name: b, meta: {sema: ["x:2"]}}
        """,
        "--converged-timeout=0",
    )
    assert code == 2
    assert "semaphore 'x' has size 1 in noop[a] but 2 in noop[b]" in out


def test_bad_env_value_exits_2(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    code, out = run_mgmt(["run", "--tmp-prefix", str(graph)], env={"MGMT_SEMA": "many"})
    assert code == 2 and "MGMT_SEMA: expected a 64-bit integer, got 'many'" in out


def test_misspelled_env_variable_is_named_with_the_nearest(tmp_path: Path) -> None:
    """A typo of a flag's MGMT_<FLAG> is one warning line naming the variable it is close to
    (the run goes on, without it); a name close to none is a program's own (sys.getenv)."""
    graph = graph_file(tmp_path, HELLO)
    env = {"MGMT_CONVERGED_TIMOUT": "5", "MGMT_DEMO_GREETING": "hi", "MGMT_NOOP": "1"}
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)], env=env)
    warnings = [line for line in out.splitlines() if "warning: MGMT_" in line]
    assert code == 0 and warnings == [
        "mgmt: warning: MGMT_CONVERGED_TIMOUT is not a variable mgmt reads (ignored): "
        "did you mean MGMT_CONVERGED_TIMEOUT?"
    ], out
    assert not (tmp_path / "out").exists()  # MGMT_NOOP=1 was read: a known name is used
    code, out = run_mgmt(["check", str(graph)], env={"MGMT_MAX_GRAPH_SIZ": "9"})
    assert code == 0 and "MGMT_MAX_GRAPH_SIZ is not a variable mgmt reads" in out, out
    assert "did you mean MGMT_MAX_GRAPH_SIZE?" in out
    # status and deploy read MGMT_PREFIX: the same line, once (deploy's thin path finds no
    # agent here and hands over to the CLI, which does not say it again).
    perfix = (
        "mgmt: warning: MGMT_PERFIX is not a variable mgmt reads (ignored): did you mean "
        "MGMT_PREFIX?\n"
    )
    nowhere = ["--prefix", str(tmp_path / "nowhere")]
    for args in (
        ["status", *nowhere],
        ["deploy", *nowhere, "--unsigned", "yaml", str(graph)],
        ["deploy", "--list", "--bad-flag"],
    ):
        code, out = run_mgmt(args, env={"MGMT_PERFIX": "/elsewhere"})
        assert code == 2 and out.count(perfix) == 1, (args, out)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_misspelled_env_warning_is_a_json_line_with_log_format_json(
    tmp_path: Path, how: str
) -> None:
    """Said before logging starts, it was plain text among JSON lines: with json (the flag
    or MGMT_LOG_FORMAT), it is one JSON line like the others."""
    graph = graph_file(tmp_path, HELLO)
    args = ["run", "--converged-timeout=0", "--tmp-prefix", str(graph)]
    env = {"MGMT_CONVERGED_TIMOUT": "5"}
    if how == "flag":
        args.insert(1, "--log-format=json")
    else:
        env["MGMT_LOG_FORMAT"] = "json"
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]  # every line is JSON
    warnings = [line for line in lines if "MGMT_CONVERGED_TIMOUT" in line["message"]]
    assert [(w["level"], w["logger"]) for w in warnings] == [("warning", "main")], out
    assert warnings[0]["message"] == (
        "MGMT_CONVERGED_TIMOUT is not a variable mgmt reads (ignored): "
        "did you mean MGMT_CONVERGED_TIMEOUT?"
    )


def test_every_mgmt_variable_read_is_known() -> None:
    """The MGMT_ names the code reads are flags' or mgmt.OTHER_ENV: none is taken for a
    typo; mgmt.FLAG_ENV is every flag's."""
    from mgmt import FLAG_ENV, OTHER_ENV
    from mgmt.config import option_fields

    assert {"MGMT_" + f.name.upper() for f in option_fields()} == FLAG_ENV
    known = FLAG_ENV | OTHER_ENV
    read = re.compile(r"""environ(?:\.get\(|\[|\.pop\()["'](MGMT_[A-Z0-9_]+)["']""")
    found: set[str] = set()
    for top in ("mgmt", "engine", "resources", "bench", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            found.update(read.findall(path.read_text()))
    assert "MGMT_PROC_SYS" in found and found <= known, sorted(found - known)


async def test_sighup_without_a_graph_file_is_harmless(tmp_path: Path) -> None:
    async with Daemon(["run", "--tmp-prefix", "empty"]) as daemon:
        await daemon.wait_log("converged")
        daemon.signal(signal.SIGHUP)  # `run empty` runs deploys: it reads them again
        await daemon.wait_log("SIGHUP: reading the cluster's newest deploy again")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


# Hostile graph files (issue 11): a one-line error and exit 2, never a traceback or a hang.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LAUGHS, ":7: f[0]: YAML: aliases expand to more than 100,000 values"),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\x01\n",
            ":4: YAML: control character U+0001 is not allowed",
        ),
        (f"graph: g\nresources:\n  noop:\n    - {{name: a, meta: {{retry: {HUGE}}}}}\n", ":4: "),
        (f"graph: g\nresources:\n  noop:\n    - {{name: a, meta: {{limit: {BIG}}}}}\n", ":4: "),
        (  # a retry never due: a cron run waited for it forever
            "graph: g\nresources:\n  noop:\n    - {name: a, meta: {delay: 9223372036854775807}}\n",
            ":4: noop[a]: meta.delay: must be at most 86400000 ms (a day) between retries, got",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - {name: a, meta: {poll: 2147483648}}\n",
            ":4: noop[a]: meta.poll: must be -1 (once), 0 (watch) or from 1 to 2147483647 s, got",
        ),
        ("graph: g\nresources:\n  noop:\n    - {name: a, meta: {sema: ['a:²']}}\n", ":4: "),
        ('graph: g\nresources:\n  exec:\n    - {name: a, cmd: "true", user: "²"}\n', ":4: "),
    ],
)
def test_check_refuses_hostile_graphs_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    graph = tmp_path / "graph.yaml"
    graph.write_text(text)
    code, out = run_mgmt(["check", str(graph)], timeout=30)  # a hang guard: the bomb took 36 s
    assert code == 2, out
    assert "Traceback" not in out
    (line,) = out.splitlines()
    assert line.startswith(f"{graph}{expected}"), line


def _refused_in_one_line(path: Path, *, lang: bool = False) -> str:
    """`mgmt run` of a bad graph file (or mcl program): exit 2, nothing done, its one line.
    A prefix of its own: the default one (/var/lib/mgmt) is the machine's, and an agent running
    with it (another test run, an operator's) refuses this one first ("another agent (pid N)
    runs with --prefix /var/lib/mgmt"), exit 2 without the line looked for."""
    front = ["lang"] if lang else []
    args = ["run", "--tmp-prefix", "--converged-timeout=0", *front, str(path)]
    code, out = run_mgmt(args, timeout=60)
    assert code == 2, out
    assert "Traceback" not in out
    (line,) = [line for line in out.splitlines() if str(path) in line]
    return line.split(" main: ", 1)[-1]


def test_an_alias_bomb_or_deep_nesting_names_the_key_path(tmp_path: Path) -> None:
    """The limits' problems name the value as any other problem does, by its resource's name."""
    out = tmp_path / "out"
    head = f"graph: g\nresources:\n  file:\n    - name: f0\n      path: {out}/f0\n"
    laughs = "".join(f"{line.replace('graph: bomb', '')}\n" for line in LAUGHS.splitlines()[1:])
    bomb = graph_file(
        tmp_path, head.replace("graph: g\n", "graph: g\n" + laughs) + "      content: *i\n"
    )
    line = _refused_in_one_line(bomb)
    assert line.startswith(f"{bomb}:7: f[0]: YAML: aliases expand to more than 100,000"), line
    small = "a: &a [lol, lol]\n"
    bomb2 = graph_file(
        tmp_path,
        head.replace("graph: g\n", "graph: g\n" + small)
        + "      content: ["
        + ", ".join(["*a"] * 60_000)
        + "]\n",
        "bomb2.yaml",
    )
    line = _refused_in_one_line(bomb2)
    assert line.startswith(f"{bomb2}:7: file[f0].content[33333]: YAML: aliases expand"), (
        line
    )  # 3 values a use
    deep = graph_file(tmp_path, head + "      content: " + "[" * 70 + "]" * 70 + "\n", "deep.yaml")
    line = _refused_in_one_line(deep)
    assert line.startswith(f"{deep}:6: file[f0].content[0][0]"), line
    assert line.endswith(": YAML: nests deeper than 64 levels"), line
    assert not out.exists()


def test_a_duplicate_key_names_its_resource_by_name(tmp_path: Path) -> None:
    items = "".join(f"    - name: f{i}\n      path: TMP/out/f{i}\n" for i in range(4000))
    dup = "    - name: f4000\n      path: TMP/out/x\n      path: TMP/out/y\n"
    graph = graph_file(tmp_path, "graph: g\nresources:\n  file:\n" + items + dup)
    assert _refused_in_one_line(graph) == f"{graph}:8006: file[f4000].path: duplicate key"
    program = tmp_path / "dup.mcl"
    program.write_text('file "f1" {\n  path => "/tmp/x",\n  path => "/tmp/y",\n}\n')
    line = _refused_in_one_line(program, lang=True)
    assert line == f"{program}:3:3: file[f1]: param path is set twice"
    assert not (tmp_path / "out").exists()


def test_ten_thousand_bad_keys_list_twenty_problems_and_how_many_more(tmp_path: Path) -> None:
    items = "".join(
        f"    - name: f{i}\n      path: TMP/out/f{i}\n      contnet: x\n" for i in range(10_000)
    )
    graph = graph_file(tmp_path, "graph: g\nresources:\n  file:\n" + items)
    program = tmp_path / "many.mcl"
    program.write_text(
        "".join(
            f'file "f{i}" {{\n  path => "/tmp/x{i}",\n  contnet => "x",\n}}\n' for i in range(3000)
        )
    )
    for path, front, first in [
        (graph, [], ":6: file[f0]: contnet: unknown key"),
        (program, ["lang"], ":3:3: file has no param 'contnet'"),
    ]:
        code, out = run_mgmt(
            ["run", "--tmp-prefix", "--converged-timeout=0", *front, str(path)], timeout=60
        )
        assert code == 2, out
        lines = [line.split(" main: ", 1)[-1] for line in out.splitlines()]
        assert len(lines) == 21, lines
        assert lines[0].startswith(f"{path}{first}"), lines[0]
        assert all(line.startswith(f"{path}:") for line in lines[:20]), lines
        assert lines[20] == f"and {10_000 - 20 if path == graph else 3000 - 20} more problems"
    assert not (tmp_path / "out").exists()


def test_two_ui_inputs_with_one_id_are_a_bad_graph(tmp_path: Path) -> None:
    """mgmt does not check (every save went to the first input): one line, exit 2, at the
    second input, from a graph file and from a program."""
    graph = graph_file(
        tmp_path,
        """
        graph: g
        resources:
          http:server:ui:
            - name: /ui/
          http:server:ui:input:
            - {name: a, id: x}
            - {name: b, id: x}
        """,
    )
    assert _refused_in_one_line(graph) == (
        f"{graph}:8: http:server:ui:input[b]: id: 'x' is also the id of http:server:ui:input[a] "
        "in the same ui (ids are unique in a ui: a save goes to one input)"
    )
    program = tmp_path / "ui.mcl"
    program.write_text(
        'http:server:ui "/ui/" {}\n'
        'http:server:ui:input "a" { id => "x", }\n'
        'http:server:ui:input "b" { id => "x", }\n'
    )
    line = _refused_in_one_line(program, lang=True)
    assert line.startswith(f"{program}:3:1: http:server:ui:input[b]: id: 'x' is also the id"), line


def test_check_takes_the_front_end_word_as_run_does(tmp_path: Path) -> None:
    """`mgmt check lang FILE` as `mgmt run lang FILE` (an operator's habit): the word names the
    files' front-end; it was read as a file that does not exist."""
    program = tmp_path / "main.txt"  # no .mcl suffix: the word decides
    program.write_text('print "p" {\n\tmsg => "x",\n\nprint "q" { msg => "y", }\n')
    code, out = run_mgmt(["check", "lang", str(program)])
    assert code == 2, out
    assert out.strip() == (
        f"{program}:4:7: syntax error: unexpected '\"q\"' (the '{{' at 1:11 is not closed: a "
        "missing '}'?)"
    )
    program.write_text('print "p" { msg => "x", }\n')
    code, out = run_mgmt(["check", "lang", str(program)])
    assert code == 0 and out.strip() == f"{program}: ok", out
    code, out = run_mgmt(["check", "yaml", "-e", "x"])
    assert code == 2 and "`mgmt check puppet -e CODE`" in out, out


def test_check_warns_about_old_mgmt_keys_as_run_does(tmp_path: Path) -> None:
    """tester14's finding 8: `mgmt run` logs `'X' is an old mgmt key with no effect` for each;
    `mgmt check` said `ok` without a word. It shows the same lines, as warnings (exit 0)."""
    graph = graph_file(
        tmp_path,
        """
        graph: g
        hostname: h1
        resources:
          exec:
            - name: e
              cmd: "true"
              state: present
              pollint: 5
        """,
    )
    code, out = run_mgmt(["check", str(graph)])
    assert code == 0 and out.endswith(f"{graph}: ok\n"), out
    warned = [line.removeprefix("warning: ") for line in out.splitlines()[:-1]]
    assert len(warned) == 3 and all("is an old mgmt key with no effect" in w for w in warned), out
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", str(graph)])
    assert code == 0 and all(f"main: {w}\n" in out for w in warned), out


def test_every_independent_problem_of_a_graph_is_told_in_one_run(tmp_path: Path) -> None:
    """tester14's finding 9: a typo and a cycle (or two files of one path) were told in
    stages: the typo, then, once fixed, the cycle. check and run tell all three at once; an
    edge naming the resource refused for its typo is not a second problem ("no resource")."""
    graph = graph_file(
        tmp_path,
        """
        graph: g
        resources:
          file:
            - name: a
              path: TMP/a
              modee: "0644"
            - {name: b, path: TMP/b, content: "y"}
            - {name: c, path: TMP/b, content: "z"}
          noop:
            - name: n1
            - name: n2
        edges:
          - {from: {kind: file, name: a}, to: {kind: noop, name: n1}}
          - {from: {kind: noop, name: n1}, to: {kind: noop, name: n2}}
          - {from: {kind: noop, name: n2}, to: {kind: noop, name: n1}}
        """,
    )
    told = [
        f"{graph}:7: file[a]: modee: unknown key (did you mean 'mode'?)",
        f"{graph}:9: file[c]: file[c] and file[b] both manage file {tmp_path}/b: each would "
        "undo the other's changes (keep one of them) (also declared at line 8)",
        f"{graph}:16: edges: cycle: noop[n1] -> noop[n2] -> noop[n1] (edges at {graph}:15, "
        f"{graph}:16)",
    ]
    code, out = run_mgmt(["check", str(graph)])
    assert code == 2 and out.splitlines() == told, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", str(graph)])
    assert code == 2 and [line.partition(" main: ")[2] for line in out.splitlines()] == told, out


def test_check_refuses_a_graph_file_over_the_size_limit(tmp_path: Path) -> None:
    graph = graph_file(tmp_path, HELLO)
    code, out = run_mgmt(["check", str(graph)], env={"MGMT_MAX_GRAPH_SIZE": "100"})
    assert code == 2, out
    assert out.strip() == f"{graph}:1: the graph file is larger than 100 bytes " + (
        "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
    )
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--max-graph-size=100", "--converged-timeout=0", str(graph)]
    )
    assert code == 2 and "larger than 100 bytes" in out, out
    assert not (tmp_path / "out").exists()


async def test_daemon_keeps_repairing_while_a_hostile_graph_is_written(tmp_path: Path) -> None:
    """The bomb written over the graph file of a running daemon stalled all repair for 38 s."""
    graph = graph_file(tmp_path, HELLO)
    target = tmp_path / "out/hello"
    async with Daemon(["run", "--tmp-prefix", "--verbose", "yaml", str(graph)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        bomb = graph.with_suffix(".new")
        bomb.write_text(LAUGHS)
        bomb.replace(graph)
        target.unlink()
        await wait_path(target, has_content("hello world\n"), timeout=10)
        await daemon.wait_log("keeping the running graph")
        daemon.signal(signal.SIGHUP)  # the same bad file again: not reported again
        await daemon.wait_log("unchanged since it was last loaded or refused")
        target.unlink()  # the running graph is still the old one
        await wait_path(target, has_content("hello world\n"), timeout=10)
        assert sum("aliases expand to more than" in line for line in daemon.lines) == 1
        assert sum("keeping the running graph" in line for line in daemon.lines) == 1
        assert "Traceback" not in daemon.log
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_daemon_repairs_drift_while_a_big_graph_file_is_parsed(tmp_path: Path) -> None:
    """The graph file is parsed off the event loop: a file that takes seconds to parse (a
    comment of a million values, 3 MB) does not hold up the repair of the running graph."""
    graph = graph_file(tmp_path, HELLO)
    target = tmp_path / "out/hello"
    async with Daemon(["run", "--tmp-prefix", "--verbose", "yaml", str(graph)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        big = graph.with_suffix(".new")
        comment = "comment: [" + "x, " * 1_000_000 + "]\n"
        big.write_text(HELLO.replace("TMP", str(tmp_path)) + comment)
        big.replace(graph)
        await daemon.wait_log("graph file changed (3000")  # parsing has begun
        target.unlink()
        await wait_path(target, has_content("hello world\n"), timeout=30)
        assert "swapping in the new graph" not in daemon.log  # repaired during the parse
        await daemon.wait_log("graph swap: 1 kept, 0 stopped, 0 started", timeout=120)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_duplicate_resources_merge_or_refuse_before_anything_runs(tmp_path: Path) -> None:
    """mgmt's duplicate rules through the real command: identical and compatible declarations
    run as one resource; an incompatible pair is one line naming both, exit 2, nothing done."""
    merged = graph_file(
        tmp_path,
        """
        graph: dup
        resources:
          file:
            - {name: f, path: TMP/out/f, content: "x\\n"}
            - {name: f, path: TMP/out/f, content: "x\\n"}
          pkg:
            - {name: bash, state: installed}
            - {name: bash, state: newest}
        """,
    )
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "--noop", str(merged)])
    assert code == 0, out
    assert "converged: 0 of 2 resources in the desired state; would change (noop)" in out
    clash = graph_file(
        tmp_path,
        """
        graph: dup
        resources:
          file:
            - {name: f, path: TMP/out/f, content: "x\\n"}
          pkg:
            - {name: bash, state: installed}
            - {name: bash, state: uninstalled}
        """,
        name="clash.yaml",
    )
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(clash)])
    assert code == 2, out
    assert f"{clash}:8: pkg[bash]: incompatible duplicate resource pkg[bash]: state:" in out
    assert "(also declared at line 7)" in out
    assert not (tmp_path / "out").exists()


def test_a_shared_prefix_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """`--prefix /tmp` (or any directory others may write) must not be chmod-ed to 0700 with
    its files: other users keep theirs there. The run stops before applying anything."""
    graph = graph_file(tmp_path, HELLO)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "theirs").write_text("x")
    (shared / "theirs").chmod(0o755)
    code, out = run_mgmt(["run", "--converged-timeout=0", "--prefix", str(shared), str(graph)])
    assert code == 2, out
    assert f"--prefix: {shared} can be written by others (mode 1777)" in out
    assert has_mode(0o1777)(shared) and has_mode(0o755)(shared / "theirs")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="files owned by another uid")
def test_a_graph_file_another_user_controls_is_named_in_a_warning(tmp_path: Path) -> None:
    """tester13 #14: a graph file uid 1001 owns (or in a directory they own, or that any user
    may write) ran as root without a word, and a daemon applied their every edit. It still
    runs (`sudo mgmt run` of one's own checkout is the usual try), with one warning naming who
    controls it; a root-owned file in root's directories gets none. `mgmt setup` warns too."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 1001, 1001)
    mine = tmp_path / "mine"
    mine.mkdir()
    cases = {
        graph_file(theirs, HELLO): f"{theirs} is owned by uid 1001",
        graph_file(mine, HELLO, "owned.yaml"): f"{mine}/owned.yaml is owned by uid 1001",
        graph_file(mine, HELLO, "open.yaml"): f"{mine}/open.yaml can be written by others",
        graph_file(mine, HELLO, "ok.yaml"): "",
    }
    os.chown(mine / "owned.yaml", 1001, 1001)
    (mine / "open.yaml").chmod(0o666)
    for graph, why in cases.items():
        code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(graph)])
        assert code == 0, out
        warned = [line for line in out.splitlines() if "every edit there is applied" in line]
        if not why:
            assert not warned, out
            continue
        (line,) = warned
        assert f"main: {graph}: {why}" in line and "(uid 0); keep it owned by root" in line
    args = ["setup", "--install-service", "--dry-run", "--prefix", str(tmp_path / "p")]
    code, out = run_mgmt([*args, "yaml", str(theirs / "graph.yaml")])
    assert code == 0 and f"warning: {theirs}/graph.yaml: {theirs} is owned by uid 1001" in out


def test_an_own_prefix_is_tightened_but_not_the_files_the_operator_keeps_in_it(
    tmp_path: Path,
) -> None:
    graph = graph_file(tmp_path, HELLO)
    prefix = tmp_path / "home"
    prefix.mkdir()
    prefix.chmod(0o755)
    (prefix / "script").write_text("#!/bin/sh\n")
    (prefix / "script").chmod(0o755)
    code, out = run_mgmt(["run", "--converged-timeout=0", "--prefix", str(prefix), str(graph)])
    assert code == 0, out
    assert "was mode 0755: tightened to 0700" in out
    assert has_mode(0o700)(prefix) and has_mode(0o755)(prefix / "script")


def test_a_prefix_ending_in_dot_dot_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """`--prefix /tmp/..` passed the check (the name `..` looked like a private directory of
    root's) and made `/` 0700; here, tmp_path stands for `/`."""
    graph = graph_file(tmp_path, HELLO)
    (tmp_path / "sub").mkdir()
    tmp_path.chmod(0o755)
    prefix = tmp_path / "sub" / ".."
    code, out = run_mgmt(["run", "--converged-timeout=0", "--prefix", str(prefix), str(graph)])
    assert code == 2, out
    assert "name the directory itself" in out
    assert has_mode(0o755)(tmp_path)
    assert not (tmp_path / "out").exists()


def test_a_prefix_whose_parent_is_missing_exits_75_and_makes_nothing(tmp_path: Path) -> None:
    """tester14's finding 5: `--prefix /mnt/data/mgmt` with /mnt/data not mounted yet (or a
    typo) made the whole tree on the disk below and ran, exit 0. The prefix is made, not its
    parents: exit 75 (the unit retries until the mount is there), the first missing directory
    named, nothing created, nothing applied; once it is there the run goes on as usual."""
    graph = graph_file(tmp_path, HELLO)
    prefix = tmp_path / "mnt" / "data" / "mgmt"
    args = ["--converged-timeout=0", "--prefix", str(prefix), str(graph)]
    code, out = run_mgmt(["run", *args])
    assert code == 75, out
    assert f"main: --prefix: {tmp_path / 'mnt'}: No such file or directory" in out, out
    assert not (tmp_path / "mnt").exists() and not (tmp_path / "out").exists()
    code, out = run_mgmt(["setup", "--install-service", "--dry-run", *args[1:]])
    assert code == 2 and f"--prefix: {tmp_path / 'mnt'}: No such file" in out, out
    (tmp_path / "mnt" / "data").mkdir(parents=True)
    code, out = run_mgmt(["run", *args])
    assert code == 0 and has_mode(0o700)(prefix), out


def test_run_with_stderr_closed_applies_the_graph(tmp_path: Path) -> None:
    """Started with fd 2 closed (`2>&-`, as some cron jobs and daemons are), Python's
    sys.stderr is None: the agent still applies the graph and exits 0 (it crashed with an
    AttributeError in its log setup, and applied nothing)."""
    spec = tmp_path / "graph.yaml"
    out = tmp_path / "out"
    spec.write_text(
        f"graph: g\nresources:\n  file:\n    - name: a\n      path: {out}\n      content: x\n"
    )
    argv = [*MGMT, "run", "--tmp-prefix", "--converged-timeout", "0", "yaml", str(spec)]
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", *argv],
        check=False,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 0
    assert out.read_text() == "x"


INTERRUPT_AT_CLI = """
import os, signal, sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "mgmt.cli":
            sys.meta_path.remove(self)
            for _ in range(int(os.environ["SIGNALS"])):
                os.kill(os.getpid(), getattr(signal, os.environ["SIG"]))
        return None

sys.meta_path.insert(0, Interrupt())
"""


@pytest.mark.parametrize(("sig", "signals"), [("SIGINT", 1), ("SIGTERM", 1), ("SIGINT", 2)])
def test_a_stop_signal_while_starting_up_is_a_clean_stop(
    tmp_path: Path, sig: str, signals: int
) -> None:
    """A Ctrl-C or SIGTERM during the imports (before the event loop and the agent's handlers) is held
    until the agent runs (mgmt.hold_signals): a graceful stop before anything is applied,
    exit 0; a second one stops at once, exit 1 (as later); no KeyboardInterrupt traceback."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(INTERRUPT_AT_CLI)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "SIGNALS": str(signals), "SIG": sig}
    graph = graph_file(tmp_path, HELLO)
    done = subprocess.run(
        [sys.executable, "-m", "mgmt", "run", "--prefix", str(tmp_path / "p"), str(graph)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert not (tmp_path / "out").exists()  # nothing applied
    assert "Traceback" not in done.stderr
    if signals == 1:
        assert done.returncode == 0, done.stderr
        assert f"{sig}: stopping gracefully" in done.stderr
        # Nothing had begun: nothing refused or interrupted to tell, no "(0 ...)".
        assert "stopped: 1 of 1 resource left undone; the next run" in done.stderr
    else:
        assert (done.returncode, done.stderr) == (1, "")


def test_a_refused_entry_of_a_tree_does_not_stop_the_repair_of_the_rest(tmp_path: Path) -> None:
    """examples/file-dir.yaml, its copy broken twice: index.html made a symlink (refused
    without force) and css/ moved away. css/ is put back all the same; the resource fails,
    naming the refused entry, and that failure is logged once."""
    example = (ROOT / "examples/file-dir.yaml").read_text()
    graph = graph_file(tmp_path, example.replace("/tmp/mgmt", "TMP"))
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)]
    code, out = run_mgmt(args)
    assert code == 0, out
    site = tmp_path / "site"
    (site / "index.html").unlink()
    (site / "index.html").symlink_to(tmp_path / "elsewhere")
    (site / "css").rename(tmp_path / "css.away")
    code, out = run_mgmt(args)
    assert code == 1, out
    assert (site / "css/style.css").read_text() == "h1 { color: teal; }\n", out
    assert (site / "index.html").is_symlink()
    refused = "file[site]: failed: index.html is a symlink, expected a file: set force: true"
    assert sum(refused in line for line in out.splitlines()) == 1, out
    assert "1 of 3 resources failed: file[site]" in out


async def test_one_agent_per_prefix(tmp_path: Path) -> None:
    """A second agent on a prefix an agent runs with is refused (exit 2, one line naming the
    prefix and the other agent's pid) before it takes anything (its status socket); readers
    (`mgmt status`) keep working beside the agent; the lock goes with the agent, even when it
    is killed with -9."""
    graph = graph_file(tmp_path, HELLO)
    prefix = tmp_path / "prefix"
    args = ["run", "--prefix", str(prefix), "yaml", str(graph)]
    async with Daemon(args) as first:
        await first.wait_log("converged:")
        assert first.proc is not None
        sock = prefix / "status.sock"
        inode = sock.stat().st_ino
        code, out = await asyncio.to_thread(run_mgmt, ["run", "--converged-timeout=0", *args[1:]])
        assert code == 2, out
        lines = out.strip().splitlines()
        assert len(lines) == 1, out
        assert f"another agent (pid {first.proc.pid}) runs with --prefix {prefix}" in lines[0]
        assert sock.stat().st_ino == inode  # still the first agent's
        code, out = await asyncio.to_thread(run_mgmt, ["status", "--prefix", str(prefix)])
        assert code == 0 and "file[hello]" in out, out
        first.proc.kill()
        await first.proc.wait()
    code, out = await asyncio.to_thread(run_mgmt, ["run", "--converged-timeout=0", *args[1:]])
    assert code == 0, out


def test_quiet_and_detailed_exitcodes_for_cron(tmp_path: Path) -> None:
    """--quiet: a run that changes nothing writes nothing (cron mails nothing); one that
    changes, fails or would change (--noop) says its summary (and what changed), besides the
    warnings and errors. --detailed-exitcodes: 0 nothing changed, 3 changed (or would), 1 a
    failure. Both read their MGMT_ variables too."""
    graph = graph_file(
        tmp_path,
        """
        graph: cron
        resources:
          file:
            - {name: a, path: TMP/a, content: "a\\n"}
            - {name: b, path: TMP/b, content: "b\\n"}
          noop:
            - {name: n}
        """,
    )
    cron = ["run", "--tmp-prefix", "--converged-timeout", "0"]
    code, out = run_mgmt([*cron, "--quiet", "--detailed-exitcodes", str(graph)])
    lines = [re.sub(r"\(\d+\.\d+s\)", "(Ns)", line.split(" ", 1)[1]) for line in out.splitlines()]
    assert code == 3 and lines == [
        "main: converged: all 3 resources in the desired state (Ns)",
        "main: changed: 2 of 3 resources: file[a], file[b]",
        "main: converged for 0s, exiting",
    ], out
    # Nothing to do: not a line, exit 0.
    assert run_mgmt([*cron, "--quiet", "--detailed-exitcodes", str(graph)]) == (0, "")
    env = {"MGMT_QUIET": "1", "MGMT_DETAILED_EXITCODES": "1"}
    assert run_mgmt([*cron, str(graph)], env=env) == (0, "")
    # Drift, under --noop: would change, exit 3; nothing changed.
    (tmp_path / "a").write_text("drift\n")
    code, out = run_mgmt([*cron, "--noop", str(graph)], env=env)
    assert code == 3 and "noop: 1 of 3 resources would change: file[a]" in out, out
    assert "changed:" not in out and (tmp_path / "a").read_text() == "drift\n"
    # Without --detailed-exitcodes the exit codes are as before: 0 for a change.
    code, out = run_mgmt([*cron, "--quiet", str(graph)])
    assert code == 0 and "changed: 1 of 3 resources: file[a]" in out, out
    # A resource's own `noop` meta param in a run that applies: nothing would change, exit 0.
    held = graph_file(
        tmp_path,
        "graph: m\nresources:\n  file:\n    - {name: m, path: TMP/m, content: x, meta: {noop: true}}\n",
    )
    assert run_mgmt([*cron, "--detailed-exitcodes", str(held)])[0] == 0
    # A failure: its error and the summary, exit 1.
    bad = graph_file(tmp_path, "graph: f\nresources:\n  exec:\n    - {name: x, cmd: /bin/false}\n")
    code, out = run_mgmt([*cron, str(bad)], env=env)
    assert code == 1 and "exec[x]: failed" in out and "1 of 1 resource failed" in out, out
    code, out = run_mgmt([*cron, "--quiet", "--verbose", str(graph)])
    assert code == 2 and "--quiet and --verbose exclude each other" in out, out


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ([], "without --prometheus or --status: nothing is served there"),
        (["--status"], "without --prometheus: the status page is served there, /metrics is not"),
        (["--prometheus"], ""),
        (["--status", "--prometheus"], ""),
    ],
)
def test_prometheus_listen_without_prometheus_is_said_once(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """--prometheus-listen without --prometheus served no /metrics (404 with --status), and
    nothing said so (tester17 F4): now one warning, and the run as before."""
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: f\n      path: {tmp_path}/f\n")
    port = free_port()
    args = ["run", "--tmp-prefix", "--converged-timeout=0", *flags]
    code, out = run_mgmt([*args, "--prometheus-listen", f"127.0.0.1:{port}", "yaml", str(graph)])
    assert code == 0, out
    warnings = [line for line in out.splitlines() if "--prometheus-listen" in line]
    if said:
        assert len(warnings) == 1, out
        assert f" main: --prometheus-listen 127.0.0.1:{port} {said}" in warnings[0], out
    else:
        assert not warnings, out


async def test_a_working_directory_removed_under_the_agent_is_said_without_a_traceback(
    tmp_path: Path,
) -> None:
    """`mgmt run yaml g.yaml` from a directory that is then removed (a checkout deleted under
    a running agent): the graph file cannot be read, which is said, and the running graph is
    kept; before 2026-12-06 the watch's next look raised FileNotFoundError from getcwd (a
    traceback: `agent: task ... failed`) and ended."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    graph = f"""\
        graph: g
        resources:
          file:
            - name: f
              path: {out}/f
              content: "x"
        """
    (work / "g.yaml").write_text(textwrap.dedent(graph))
    args = ["run", "--tmp-prefix", "yaml", "g.yaml"]
    async with Daemon(args, cwd=work) as daemon:
        await daemon.wait_log("converged")
        await asyncio.to_thread(shutil.rmtree, work)
        await daemon.wait_log("g.yaml: cannot read")
        await daemon.wait_log("keeping the running graph")
        (out / "f").unlink()  # the running graph still repairs
        await daemon.wait_log(f"created {out}/f", count=2)
        assert await daemon.stop(signal.SIGINT) == 0
    assert "Traceback" not in daemon.log and "failed" not in daemon.log, daemon.log


def test_a_device_as_the_graph_file_is_one_line(tmp_path: Path) -> None:
    """`mgmt run yaml /dev/null` said two lines: that others could write /dev/null (mode 0666),
    then that it is not a regular file. What is no file is refused, in that line alone."""
    code, out = run_mgmt(["run", "--tmp-prefix", "yaml", "/dev/null"])
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1, out
    assert "/dev/null: cannot read: not a regular file" in lines[0], out


@pytest.mark.parametrize("command", ["run", "check"])
def test_a_negative_size_limit_is_refused_naming_what_it_takes(
    tmp_path: Path, command: str
) -> None:
    """`--max-graph-size -1` was taken by run as a limit nothing is within (`the graph file is
    larger than -1 bytes`), and check said it `needs a value`: both refuse it, saying what it
    takes, from the flag or its variable; a word that is no number still needs one."""
    graph = str(graph_file(tmp_path, HELLO))
    pre = ["run", "--tmp-prefix"] if command == "run" else ["check"]
    for flag, unit in (("max-graph-size", "bytes"), ("max-resources", "resources"),
                       ("max-steps", "steps")):  # fmt: skip
        want = f"expected a number of {unit} >= 0, got -1"
        code, out = run_mgmt([*pre, f"--{flag}", "-1", "yaml", graph])
        assert code == 2 and want in out and f"--{flag} (or MGMT_" in out, out
        variable = "MGMT_" + flag.upper().replace("-", "_")
        code, out = run_mgmt([*pre, "yaml", graph], env={variable: "-1"})
        assert code == 2 and want in out, out
    if command == "check":
        code, out = run_mgmt(["check", "--max-steps", "-x", graph])
        assert code == 2 and "--max-steps needs a whole number" in out, out
