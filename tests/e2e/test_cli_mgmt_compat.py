"""End to end: the real `mgmt` command given what Go mgmt's command lines and units give it
(flags, MGMT_ variables, prefixes): the same meaning, or a one-line refusal (exit 2)."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.e2e.helpers import MGMT, NOBODY, ROOT, SETPRIV, as_nobody, run_mgmt


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


@pytest.mark.parametrize(
    ("value", "noop"),
    [
        ("t", True),
        ("T", True),
        ("1", True),
        ("TRUE", True),
        ("True", True),
        ("ON", True),
        ("yes", True),
        ("f", False),
        ("False", False),
        ("off", False),
        ("", False),  # unset
    ],
)
def test_a_boolean_variable_takes_gos_spellings(tmp_path: Path, value: str, noop: bool) -> None:
    """MGMT_NOOP=t is a dry run, as for Go mgmt (strconv.ParseBool); it made a real run."""
    graph = graph_file(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/f1").write_text("x\n")
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout=0", "yaml", str(graph)],
        env={"MGMT_NOOP": value},
    )
    assert code == 0, out
    assert (tmp_path / "out/f1").read_text() == ("x\n" if noop else "hi\n"), out


@pytest.mark.parametrize("value", ["y", "ture", "tRUE", "2", "nope"])
def test_a_bad_boolean_variable_is_refused_naming_it(tmp_path: Path, value: str) -> None:
    graph = graph_file(tmp_path)
    for command in (["run", "--tmp-prefix", "--converged-timeout=0", "yaml"], ["check"]):
        code, out = run_mgmt([*command, str(graph)], env={"MGMT_NO_AUTOEDGES": value})
        assert code == 2 and len(out.strip().splitlines()) == 1, out
        assert "MGMT_NO_AUTOEDGES: expected a boolean" in out and repr(value) in out, out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        ("MGMT_NO_NETWORK", "true", ["yaml", "GRAPH"]),
        ("MGMT_NO_NETWORK", "t", ["empty"]),
        ("MGMT_MODULE_PATH", "/opt/modules", ["lang", "main.mcl"]),
    ],
)
def test_mgmts_variable_of_a_refused_flag_is_refused_as_its_flag(
    tmp_path: Path, variable: str, value: str, args: list[str]
) -> None:
    """MGMT_NO_NETWORK was silently ignored (etcd then listened on TCP for a kv graph)."""
    graph = str(graph_file(tmp_path))
    code, out = run_mgmt(
        [
            "run",
            "--tmp-prefix",
            "--converged-timeout=0",
            *(graph if a == "GRAPH" else a for a in args),
        ],
        env={variable: value},
    )
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    flag = "--no-network" if variable == "MGMT_NO_NETWORK" else "--module-path"
    assert f"mgmt: {variable}: {value!r}: refused, as mgmt's {flag} is: " in out, out
    assert "did you mean" not in out
    assert not (tmp_path / "out").exists()


def test_mgmt_no_network_false_is_no_refusal(tmp_path: Path) -> None:
    code, out = run_mgmt(
        ["run", "--tmp-prefix", "--converged-timeout=0", "yaml", str(graph_file(tmp_path))],
        env={"MGMT_NO_NETWORK": "false", "MGMT_MODULE_PATH": "/opt/modules"},  # not a lang run
    )
    assert code == 0 and (tmp_path / "out/f1").read_text() == "hi\n", out
    assert "MGMT_MODULE" not in out


def test_no_pgp_is_taken_and_said_once_to_change_nothing(tmp_path: Path) -> None:
    """mgmt's own shell tests' command line: it was refused (exit 2)."""
    code, out = run_mgmt(
        [
            "run",
            "--converger-timeout=0",
            "--converged-exit",
            "--no-watch",
            "--tmp-prefix",
            "--no-pgp",
            "yaml",
            str(graph_file(tmp_path)),
            "--no-pgp",
        ]
    )
    assert code == 0 and (tmp_path / "out/f1").read_text() == "hi\n", out
    assert out.count("--no-pgp changes nothing here") == 1, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--pgp-key-path", "/k", "empty"])
    assert code == 2 and "mgmt's --pgp-key-path: not needed" in out, out  # asks for keys


def test_the_default_prefix_is_systemds_state_directory(tmp_path: Path) -> None:
    """As mgmt's: $STATE_DIRECTORY (a unit's StateDirectory=) first; /var/lib/mgmt was used."""
    state = tmp_path / "state"
    code, out = run_mgmt(
        ["run", "--converged-timeout=0", "yaml", str(graph_file(tmp_path))],
        env={"STATE_DIRECTORY": f"{state}:/nonexistent"},
    )
    assert code == 0, out
    assert (state / ".mgmt-agent.lock").exists() and oct(state.stat().st_mode & 0o777) == "0o700"


@pytest.mark.skipif(SETPRIV is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_a_non_root_users_default_prefix_is_its_cache() -> None:
    """As mgmt's: ~/.cache/mgmt, or $XDG_CACHE_HOME/mgmt (it was /var/lib/mgmt: refused)."""
    home = Path(tempfile.mkdtemp(prefix="mgmt-nobody-", dir="/tmp"))  # reachable by nobody
    try:
        (home / "a.yaml").write_text("graph: t\nresources:\n  noop:\n    - name: n\n")
        os.chown(home, NOBODY, NOBODY)
        command = " ".join([*MGMT, "run", "--converged-timeout=0", "yaml", "a.yaml"])
        env = f"env -u STATE_DIRECTORY -u XDG_CACHE_HOME -u MGMT_PREFIX HOME={home}"
        as_nobody(home, f"{env} PYTHONPATH={ROOT} {command} 2>&1")
        assert (home / ".cache/mgmt/.mgmt-agent.lock").exists()
        as_nobody(home, f"{env} XDG_CACHE_HOME={home}/xdg PYTHONPATH={ROOT} {command} 2>&1")
        assert (home / "xdg/mgmt/.mgmt-agent.lock").exists()
    finally:
        shutil.rmtree(home)


def test_a_graph_from_stdin_or_inline_is_read_once_as_mgmt_reads_it(tmp_path: Path) -> None:
    """`lang -`, `yaml -` and mcl code as the argument: they exited 75 (a missing file's
    code, retried for ever by a unit) or 2."""
    once = ["run", "--tmp-prefix", "--converged-timeout=0"]
    mcl = f'file "{tmp_path}/l1" {{ content => "x\\n", }}\n'
    assert run_mgmt([*once, "lang", "-"], stdin=mcl)[0] == 0
    assert (tmp_path / "l1").read_text() == "x\n"
    code, out = run_mgmt([*once, "yaml", "-"], stdin=graph_file(tmp_path).read_text())
    assert code == 0 and (tmp_path / "out/f1").read_text() == "hi\n", out
    code, out = run_mgmt([*once, "lang", mcl.replace("l1", "l2")])
    assert code == 0 and (tmp_path / "l2").read_text() == "x\n", out
    code, out = run_mgmt([*once, mcl.replace("l1", "l3")])  # told by its words, as `FILE`
    assert code == 0 and (tmp_path / "l3").read_text() == "x\n", out
    assert run_mgmt(["check", "lang", "-"], stdin=mcl) == (0, "-: ok\n")
    code, out = run_mgmt(["check", mcl])
    assert code == 0 and out.endswith(": ok\n"), out


def test_bad_input_from_stdin_or_inline_exits_2(tmp_path: Path) -> None:
    once = ["run", "--tmp-prefix", "--converged-timeout=0"]
    code, out = run_mgmt([*once, "yaml", "-"], stdin="graph: [\n")
    assert code == 2 and "YAML syntax error" in out and "mgmt-stdin-" in out, out
    code, out = run_mgmt([*once, "lang", 'file "/x" { bogus => 1, }'])
    assert code == 2 and "file has no param 'bogus'" in out and "mgmt-inline-code-" in out, out
    code, out = run_mgmt([*once, "--max-graph-size=10", "lang", "-"], stdin="x" * 11)
    assert code == 2 and "-: larger than --max-graph-size (10 bytes)" in out, out
    code, out = run_mgmt([*once, "yaml", str(tmp_path / "missing.yaml")])
    assert code == 75, out  # a file that may appear: still the code a unit retries on


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["run", "lang", "--depth", "3", "f.mcl"], "mgmt's --depth: not offered"),
        (["run", "--converged-timeout-no-exit", "empty"], "without --converged-timeout the"),
        (["run", "empty", "--wait"], "mgmt's --wait: not offered"),
        (["run", "--no-network", "empty"], "mgmt's --no-network: not needed"),
        (["run", "--yaml", "/etc/mgmt.yaml"], "give `yaml FILE` after the flags"),
        (["run", "--yaml=/etc/mgmt.yaml"], "give `yaml FILE` after the flags"),
        (["run", "langpuppet", "--lang", "a", "--puppet", "b"], "langpuppet front-end is not"),
        (["deploy", "--sema", "2", "lang", "x.mcl"], "give it to the hosts' `mgmt run`"),
        (["run", "--noop=true", "empty"], "a flag takes no value here: give it alone for true"),
        (["get"], "mgmt's `get`: not offered"),
        (["etcd"], "mgmt's `etcd`: not needed"),
        (["--license"], "mgmt's --license: not offered"),
    ],
)
def test_mgmts_words_get_the_way_here_not_a_wrong_flag(args: list[str], hint: str) -> None:
    """tester16 #8: these named a close flag of another meaning (`--depth`: `--deploy`)."""
    code, out = run_mgmt(args)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert hint in out and "did you mean" not in out, out


def test_mgmts_values_of_cluster_and_runtime_flags(tmp_path: Path) -> None:
    """tester16 #10: `--ideal-cluster-size=-1` is mgmt's default; seeds split on `;` and
    spaces as in mgmt; `--max-runtime=-1` is refused (mgmt's is unsigned)."""
    graph = str(graph_file(tmp_path))
    code, out = run_mgmt(["run", "--tmp-prefix", "--max-runtime=-1", "yaml", graph])
    assert code == 2 and "--max-runtime: expected seconds >= 0" in out, out
    code, out = run_mgmt(["run", "--tmp-prefix", "--ideal-cluster-size=0", "empty"])
    assert code == 2 and "must be >= 1 (or -1: the default, 5), got 0" in out, out
    for seeds in ("https://127.0.0.1:1;https://127.0.0.1:2", "https://127.0.0.1:1 http://x:2"):
        code, out = run_mgmt(["run", "--tmp-prefix", "--no-server", f"--seeds={seeds}", "empty"])
        # split as mgmt splits them: the second URL is the one refused (plain http)
        assert code == 2 and "expected URLs like" not in out, out
        assert "'http://x:2': plain http" in out or "needs its credentials" in out, out
