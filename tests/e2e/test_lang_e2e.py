"""End to end: the real `mgmt` command on mcl programs (check, cron runs, daemons)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mgmt.cluster.world import EtcdWorld
from tests.e2e.helpers import (
    MGMT,
    ROOT,
    Daemon,
    has_content,
    run_mgmt,
    run_once,
    wait_logs,
    wait_path,
)
from tests.e2e.test_cluster_e2e import Host, client_of, fleet
from tests.mgmt.cluster.helpers import cluster_env

EXAMPLES = sorted((ROOT / "examples").glob("*.mcl"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_type_checks(example: Path) -> None:
    code, out = run_mgmt(["check", str(example)])
    assert code == 0, out


def test_check_also_validates_graph_files_and_needs_a_file() -> None:
    code, out = run_mgmt(["check", "examples/hello.yaml", "examples/hello.mcl"])
    assert code == 0, out
    code, out = run_mgmt(["check"])
    assert code == 2 and "usage: mgmt check" in out
    for flag in ("--help", "-h"):  # as run's, status's and deploy's: the usage and options, 0
        code, out = run_mgmt(["check", flag])
        assert code == 0 and "usage: mgmt check" in out and "--puppet-fallback" in out, out
    code, out = run_mgmt(["check", "--grap", "examples/hello.mcl"])  # a typo: named
    assert code == 2 and "mgmt check: unknown option '--grap' (did you mean '--graph'?)" in out
    code, out = run_mgmt(["check", "--only-unify", "examples/hello.mcl"])  # mgmt's: a hint
    assert code == 2 and "(mgmt's --only-unify: `mgmt check FILE.mcl` is that" in out
    code, out = run_mgmt(["check", "--hostname", "h1", "--no-autoedges", "examples/hello.mcl"])
    assert code == 0, out  # run's front-end options mean the same here


def test_check_reports_every_problem_with_file_line_col_and_exits_2(tmp_path: Path) -> None:
    """In file order, though names, types and resources are checked one after the other."""
    program = tmp_path / "bad.mcl"
    program.write_text('file "/tmp/x" {\n\tcontnet => "y",\n}\n$a = 1 + "x"\n$b = $nope\n')
    code, out = run_mgmt(["check", str(program)])
    assert code == 2
    assert [line.split(" (did")[0] for line in out.splitlines()] == [
        f"{program}:2:2: file has no param 'contnet'",
        f"{program}:4:6: type error: operator + cannot combine int and str",
        f"{program}:5:6: undefined variable $nope",
    ]


def test_go_templates_with_variables_render_and_a_bad_constant_one_fails_the_check(
    tmp_path: Path,
) -> None:
    """tester7's #4: `range $k, $v := .M` passed `mgmt check` and failed at run time; a
    constant template Go refuses is a check error at the call, with the template's line:col."""
    out_file = tmp_path / "o"
    program = tmp_path / "t.mcl"
    program.write_text(
        'import "golang"\n'
        f'file "{out_file}" {{ state => "exists", content => golang.template('
        '"{{ range $k, $v := .M }}{{ $k }}={{ html $v }};{{ end }}'
        '{{ define \\"t\\" }}[{{ . }}]{{ end }}{{ template \\"t\\" .N }}", '
        'struct{m => {"k" => "<v>", "a" => "b"}, n => 2}), }\n'
    )
    code, out = run_mgmt(["check", str(program)])
    assert code == 0, out
    code, out = run_once("lang", program)
    assert code == 0, out
    assert out_file.read_text() == "a=b;k=&lt;v&gt;;[2]"
    bad = tmp_path / "bad.mcl"
    bad.write_text(
        'import "golang"\n$t = "line1\\n{{ if .X }}"\n'
        f'file "{out_file}" {{\n\tcontent => golang.template($t, struct{{x => 1}}),\n}}\n'
    )
    code, out = run_mgmt(["check", str(bad)])
    assert code == 2
    assert out.strip() == f"{bad}:4:13: golang.template: template: template:2:12: unexpected EOF"


def test_printf_and_templates_print_values_as_mgmt_does(tmp_path: Path) -> None:
    """tester12's #1: mgmt's fmt.printf prints `%f` and `%v` of a float, and `%v` of a list, a
    map or a struct, as its Value.String() (a ported file kept its content); explicit widths
    and precisions (not in mgmt's printf) are Go's. A template sees a struct as a map of its
    Title-cased fields, as mgmt hands it to Go, and prints with Go's %v."""
    out_file, tmpl_file = tmp_path / "pf.conf", tmp_path / "t.conf"
    program = tmp_path / "pf.mcl"
    source = r"""import "fmt"
import "golang"
file "OUT" { state => "exists", content => fmt.printf(
	"threshold = %f\nhosts = %v\nlimits = %v\ns = %v\nbig = %f %v %G\ngo = %.2f|%8.3f|%g|%q\n",
	0.75, ["a", "b\t"], {"cpu" => 2, "a" => 1}, struct{x => 1.5, y => "s"},
	1.0e21, 2.0, 1.0e21, 0.756, 1.5, 0.5, "q\"\\é"), }
file "TMPL" { state => "exists", content => golang.template(
	"{{ . }} {{ .Name }} {{ .Ports }} {{ .F }} {{ .nope }}",
	struct{name => "web", ports => [80, 443], f => 0.5}), }
"""
    program.write_text(source.replace("OUT", str(out_file)).replace("TMPL", str(tmpl_file)))
    code, out = run_once("lang", program)
    assert code == 0, out
    assert out_file.read_text() == (
        'threshold = 0.75\nhosts = ["a", "b\\t"]\nlimits = {"a": 1, "cpu": 2}\n'
        's = struct{x: 1.5; y: "s"}\nbig = 1000000000000000000000 2 1E+21\n'
        'go = 0.76|   1.500|0.5|"q\\"\\\\é"\n'
    )
    assert tmpl_file.read_text() == "map[F:0.5 Name:web Ports:[80 443]] web [80 443] 0.5 <no value>"


def test_a_string_literal_spanning_lines_is_a_file_content(tmp_path: Path) -> None:
    """As mgmt's lexer reads it: the newlines are the string's; an escape mgmt does not have
    (`\\u`) is an error at its line:col."""
    out_file = tmp_path / "o"
    program = tmp_path / "t.mcl"
    program.write_text(
        f'$x = "X"\nfile "{out_file}" {{\n\tcontent => "line1\n\t${{x}}line2\n",\n}}\n'
    )
    code, out = run_once("lang", program)
    assert code == 0, out
    assert out_file.read_text() == "line1\n\tXline2\n"
    program.write_text('$x = "a\nb\\u00e9"\n')
    code, out = run_mgmt(["check", str(program)])
    assert code == 2 and out.startswith(f"{program}:2:2: unknown escape '\\u' (mgmt's: "), out


def test_include_inside_a_for_loop_per_element(tmp_path: Path) -> None:
    """As in mgmt: a class included in a loop body, once per element (`mgmt check --graph`
    shows the first graph)."""
    program = tmp_path / "loop.mcl"
    program.write_text(
        'class greet($x) {\n\t$result = "hi " + $x\n\tprint "p-${x}" { msg => $result, }\n}\n'
        'for $i, $v in ["a", "b",] {\n\tinclude greet($v) as g\n\ttest [$g.result,] {}\n}\n'
    )
    code, out = run_mgmt(["check", "--graph", str(program)])
    assert code == 0, out
    vertices = sorted(line for line in out.splitlines() if line.startswith("Vertex: "))
    assert vertices == [
        "Vertex: print[p-a]",
        "Vertex: print[p-b]",
        "Vertex: test[hi a]",
        "Vertex: test[hi b]",
    ], out


def test_mgmts_meta_params_in_a_program(tmp_path: Path) -> None:
    """mgmt's engine refuses a name that starts with `$` (a variable not interpolated?) unless
    Meta:dollar; Meta:async is accepted (our swaps never pause a running check), not with
    Meta:hidden (mgmt's MetaParams.Validate)."""
    program = tmp_path / "main.mcl"
    program.write_text(
        'noop "\\$oops" {}\n'
        'noop "\\$ok" { Meta:dollar => true, Meta:async => true, }\n'
        'noop "h" { Meta:async => true, Meta:hidden => true, }\n'
        'noop "r" { Meta:async => true, Meta:realize => true, }\n'
    )
    code, out = run_once("lang", program)
    assert code == 2, out
    assert f"{program}:1:1: noop[$oops]: name: starts with $ (a variable not interpolated?)" in out
    assert f"{program}:3:1: noop[h]: Meta:async: cannot be combined with hidden" in out
    assert f"{program}:4:1: noop[r]: Meta:async: cannot be combined with realize" in out
    assert "noop[$ok]" not in out, out
    program.write_text(
        'noop "\\$ok" { Meta:dollar => true, Meta:async => false, }\n'
        'noop "r" { Meta:realize => true, Meta:reset => true, Meta:retryreset => true, '
        "Meta:rewatch => true, }\n"
    )
    code, out = run_once("lang", program)
    assert code == 0, out


def test_check_finds_an_edge_to_a_resource_no_statement_declares(tmp_path: Path) -> None:
    program = tmp_path / "edge.mcl"
    program.write_text('print "p" {\n\tmsg => "hi",\n}\nFile["/nope"] -> Print["p"]\n')
    code, out = run_mgmt(["check", str(program)])
    assert (code, out) == (
        2,
        f"{program}:4:1: edge to file[/nope]: no such resource in the program\n",
    )


def test_send_recv_values_are_type_checked_then_validated_when_received(tmp_path: Path) -> None:
    """`check` refuses a send/recv edge whose types do not fit (mcl and YAML); a received value
    is validated as a written one: a relative path is refused, nothing written (not even
    under the agent's working directory), retried per the meta params, exit 1."""
    mismatch = tmp_path / "mismatch.mcl"
    mismatch.write_text(
        'exec "e" { cmd => "echo", }\nexec "f" { cmd => "echo", }\n'
        'Exec["e"].output -> Exec["f"].timeout\n'
    )
    code, out = run_mgmt(["check", str(mismatch)])
    assert (code, out.strip()) == (
        2,
        f'{mismatch}:3:21: Exec["e"].output -> Exec["f"].timeout: '
        "output is a string, timeout takes an integer",
    )
    target = tmp_path / "target"
    relative = tmp_path / "relative.mcl"
    relative.write_text(
        'exec "g" { cmd => "printf rel/path", }\n'
        f'file "{target}" {{ state => "exists", content => "x", '
        "Meta:retry => 1, Meta:delay => 10, }\n"
        f'Exec["g"].output -> File["{target}"].path\n'
    )
    graph = tmp_path / "relative.yaml"
    graph.write_text(
        "graph: g\nresources:\n  exec:\n    - {name: g, cmd: printf ../../escape}\n"
        f"  file:\n    - {{name: {target}, state: exists}}\n"
        f"edges:\n  - {{from: {{kind: exec, name: g}}, to: {{kind: file, name: {target}}}, "
        "send: stdout, recv: path}\n"
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    logs = []
    for program, value, where in (
        (relative, "rel/path", "exec[g].output"),
        (graph, "../../escape", "exec[g].stdout"),
    ):
        code, out = run_mgmt(["check", str(program)])
        assert code == 0, out  # the types fit: the value is known only when run
        proc = subprocess.run(
            [*MGMT, "run", "--tmp-prefix", "--converged-timeout=0", str(program)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            check=False,
        )
        refused = (
            f"file[{target}]: failed: refused path '{value}' received from {where}: "
            f"expected an absolute path, got '{value}'"
        )
        assert proc.returncode == 1 and refused in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(cwd.iterdir()) == [] and not target.exists()
        assert not (tmp_path.parent / "escape").exists()
        logs.append(proc.stderr)
    assert "failed, retrying in 0.01s (1 left): refused path 'rel/path'" in logs[0]  # Meta:retry


def test_a_cycle_of_edges_is_refused_by_check_as_by_run_at_its_edges(tmp_path: Path) -> None:
    """Edge statements, `Depend =>` and an edge in a class: `check`, `check --graph` and `run`
    refuse the cycle with where each of its edges was made, exit 2; a graph file too."""
    statements = tmp_path / "cy.mcl"
    statements.write_text(
        'print "a" {}\nprint "b" {}\nPrint["a"] -> Print["b"]\nPrint["b"] -> Print["a"]\n'
    )
    depend = tmp_path / "depend.mcl"
    depend.write_text(
        'print "a" { Depend => Print["b"], }\n'
        "class c {\n"
        '\tprint "b" { Depend => Print["a"], }\n'
        "}\n"
        "include c\n"
    )
    graph = tmp_path / "cy.yaml"
    graph.write_text(
        "graph: g\nresources:\n  print:\n    - {name: a}\n    - {name: b}\nedges:\n"
        "  - {from: {kind: print, name: a}, to: {kind: print, name: b}}\n"
        "  - {from: {kind: print, name: b}, to: {kind: print, name: a}}\n"
    )
    cycle = "cycle: print[a] -> print[b] -> print[a]"
    for program, refused in (
        (statements, f"{statements}:4:1: {cycle} (edges at {statements}:3:1, {statements}:4:1)"),
        (depend, f"{depend}:1:13: {cycle} (edges at {depend}:3:14, {depend}:1:13)"),
        (graph, f"{graph}:8: edges: {cycle} (edges at {graph}:7, {graph}:8)"),
    ):
        for args in (["check", str(program)], ["check", "--graph", str(program)]):
            code, out = run_mgmt(args)
            assert (code, out.strip()) == (2, refused)
        code, out = run_once("lang" if program.suffix == ".mcl" else "yaml", program)
        assert code == 2 and refused in out, out


def test_os_exec_names_mgmts_os_system(tmp_path: Path) -> None:
    """mgmt's examples/lang/exec_func.mcl calls os.exec, which mgmt's source names os.system."""
    program = tmp_path / "exec_func.mcl"
    program.write_text(
        'import "os"\n$n = os.exec("echo hi")\ntest "out" {\n\tanotherstr => $n,\n}\n'
    )
    code, out = run_mgmt(["check", str(program)])
    assert code == 2
    assert out.strip() == f"{program}:2:6: module os has no function exec (mgmt calls it os.system)"
    program.write_text(program.read_text().replace("os.exec", "os.system"))
    code, out = run_mgmt(["check", str(program)])
    assert code == 0, out


def test_deploy_directory_of_a_local_run_is_the_programs_own(tmp_path: Path) -> None:
    """mgmt's directory0.mcl, run locally: the directory beside the program is the source;
    a path that is not a directory of it is a run-time error naming the call."""
    (tmp_path / "files/foo/sub").mkdir(parents=True)
    (tmp_path / "files/foo/sub/b").write_text("b\n")
    program = tmp_path / "directory0.mcl"
    program.write_text(
        'import "deploy"\n'
        f'file "{tmp_path}/out/foo/" {{\n\tstate => "exists",\n'
        '\tsource => deploy.directory("/files/foo/"),\n\trecurse => true,\n}\n'
    )
    code, out = run_once("lang", program)
    assert code == 0, out
    assert (tmp_path / "out/foo/sub/b").read_text() == "b\n"
    for bad, why in [
        ("/files/nope/", "no such directory in the deploy"),
        ("files/foo/", "a deploy path starts with /"),
        ("/files/foo", "ends with /"),
        ("/files/../../", "'..' is not allowed"),
    ]:
        program.write_text(program.read_text().replace("/files/foo/", bad, 1))
        code, out = run_mgmt(["run", "--tmp-prefix", "--converged-timeout=0", str(program)])
        assert code == 2 and f"{program}:4:12: deploy.directory: {bad!r}: " in out, out
        assert why in out, out
        program.write_text(program.read_text().replace(bad, "/files/foo/", 1))


def test_the_deploy_directory_example_copies_its_site(tmp_path: Path) -> None:
    """examples/deploy-directory/: a directory program whose files/site/ is copied, recursively
    and purged, by a local run; a file dropped there is purged again by the next run."""
    env = {"MGMT_DEMO_DIR": str(tmp_path)}
    args = ["run", "--tmp-prefix", "--converged-timeout=0", "lang", "examples/deploy-directory/"]
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    site = ROOT / "examples/deploy-directory/files/site"
    assert (tmp_path / "site/index.html").read_bytes() == (site / "index.html").read_bytes()
    assert (tmp_path / "site/css/site.css").read_bytes() == (site / "css/site.css").read_bytes()
    (tmp_path / "site/stray").write_text("x")
    code, out = run_mgmt(args, env=env)
    assert code == 0 and not (tmp_path / "site/stray").exists(), out


def test_deploy_readfile_stays_within_the_deploy(tmp_path: Path) -> None:
    """deploy.readfile refuses '..' as deploy.directory does: a deploy's paths name its files."""
    (tmp_path / "files").mkdir()
    (tmp_path / "secret").write_text("s\n")
    program = tmp_path / "main.mcl"
    program.write_text(
        'import "deploy"\n'
        f'file "{tmp_path}/out" {{\n\tcontent => deploy.readfile("/files/../secret"),\n}}\n'
    )
    code, out = run_once("lang", program)
    assert code == 2 and "deploy.readfile: '/files/../secret': '..' is not allowed" in out, out
    assert not (tmp_path / "out").exists()


def test_check_takes_a_program_directory_as_run_does(tmp_path: Path) -> None:
    """`mgmt check DIR/` (docs/language.md) was `DIR: cannot read: Is a directory`, exit 2, and
    so was `mgmt setup --install-service ... lang DIR/`, which checks the same way."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "lib.mcl").write_text('$path = "/tmp/x"\n')
    (site / "main.mcl").write_text('import "lib.mcl"\nfile $lib.path { content => "y", }\n')
    code, out = run_mgmt(["check", f"{site}/"])
    assert code == 0 and f"{site}: ok" in out, out
    (site / "main.mcl").write_text('file "/tmp/x" {\n\tcontnet => "y",\n}\n')
    code, out = run_mgmt(["check", str(site)])
    assert code == 2 and f"{site}/main.mcl:2:2: file has no param 'contnet'" in out, out


def test_run_refuses_a_program_that_does_not_compile(tmp_path: Path) -> None:
    program = tmp_path / "bad.mcl"
    program.write_text(
        f'file "{tmp_path}/good" {{ content => "x" }}\nfile "{tmp_path}/bad" {{ content => 1 }}\n'
    )
    code, out = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", str(program)])
    assert code == 2, out
    assert "type error: file param content: expected str, got int" in out
    assert not (tmp_path / "good").exists()
    # A first evaluation that fails: a cron run exits 2 too, at the call (tester12 #9: the
    # docs said 1).
    program.write_text(
        f'import "os"\nfile "{tmp_path}/r" {{ content => os.readfile("{tmp_path}/no"), }}\n'
    )
    code, out = run_mgmt(["run", "--converged-timeout=1", "--tmp-prefix", str(program)])
    assert code == 2 and f"{program}:2:" in out and "(no graph yet)" in out, out


def test_a_first_evaluation_that_fails_exits_2_in_a_program_that_reads_the_world_too(
    tmp_path: Path,
) -> None:
    """As without the world (above): the error comes once the cluster is up, but it is
    still the program's before any graph (mgmt's schedule-withdraw without /tmp/flipflop
    exited 1, 'the program produced no graph', where background0 exits 2)."""
    program = tmp_path / "world.mcl"
    program.write_text(
        f'import "os"\nimport "world"\n$set = world.schedule("parity")\n'
        f'file "{tmp_path}/r" {{ content => os.readfile("{tmp_path}/no"), }}\n'
    )
    with cluster_env() as env:
        args = ["run", "--converged-timeout=1", "--tmp-prefix", str(program)]
        code, out = run_mgmt(args, env=env)
    assert code == 2 and f"{program}:4:" in out and "(no graph yet)" in out, out
    assert "produced no graph" not in out


def test_classes_and_loops_example_converges(tmp_path: Path) -> None:
    env = {"MGMT_DEMO_DIR": str(tmp_path)}
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "lang", "examples/classes.mcl"]
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    sites = tmp_path / "sites"
    assert sorted(p.name for p in sites.iterdir()) == [
        "api.conf",
        "mirror-eu",
        "mirror-us",
        "www.conf",
        "www.privileged",
    ]
    assert (sites / "mirror-us").read_text() == "us is mirror 2\n"
    assert (sites / "www.conf").read_text() == "www listens on 80\n"
    assert (sites / "www.privileged").read_text() == "www needs CAP_NET_BIND_SERVICE\n"


def test_stdlib_example_runs_with_mgmt_meaning(tmp_path: Path) -> None:
    """Go's strings, iter, JSON, list.concat of several lists, `/` as a float division, and
    local.pool kept under the agent's prefix: the same slot on the next run."""
    env = {"MGMT_DEMO_DIR": str(tmp_path)}
    prefix = tmp_path / "prefix"
    args = ["run", "--converged-timeout=0", f"--prefix={prefix}", "lang", "examples/stdlib.mcl"]
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    report = tmp_path / "stdlib-report"
    assert report.read_text() == (
        "roles: base, web, db, monitoring\nletters: 19, per role: 4.75\nslot: 1\nenabled: false\n"
    )
    assert (prefix / "local" / "pool" / "demo").is_dir()
    (tmp_path / "enable").write_text("")
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    assert report.read_text().endswith("slot: 1\nenabled: true\n")


def test_value_get_follows_the_value_resource(tmp_path: Path) -> None:
    """The value kind stores under its name; value.get_str reads it back into the program
    (the agent's one local store), and the graph it then produces converges."""
    program, out = tmp_path / "v.mcl", tmp_path / "out"
    program.write_text(
        'import "value"\nvalue "k" { any => "wow" }\n$r = value.get_str("k")\n'
        f'file "{out}" {{ state => "exists", '
        'content => if $r->ready { $r->value } else { "not yet" } }\n'
    )
    code, log = run_mgmt(["run", "--converged-timeout=1", "--tmp-prefix", "lang", str(program)])
    assert code == 0, log
    assert out.read_text() == "wow"


def test_hello_converges_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    env = {"MGMT_DEMO_DIR": str(tmp_path)}
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "lang", "examples/hello.mcl"]
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    assert (tmp_path / "hello-lang").read_text() == "hello world\n"
    code, out = run_mgmt(args, env=env)
    assert code == 0, out
    assert [line for line in out.splitlines() if " engine: " in line] == [], out


def _datetime_values(path: Path) -> dict[str, int] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    found = dict(re.findall(r"^(now|1s ago|2s ago|3s ago): (\d+)", text, re.M))
    return {k: int(v) for k, v in found.items()} if len(found) == 4 else None


async def test_datetime_demo_updates_every_second_with_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "datetime"
    monkeypatch.setenv("MGMT_DEMO_DIR", str(tmp_path))  # the daemon inherits it
    async with Daemon(["run", "--tmp-prefix", "lang", "examples/datetime.mcl"]) as daemon:
        await wait_path(out, lambda p: _datetime_values(p) is not None)
        first = _datetime_values(out)
        assert first is not None
        assert "load average: " in out.read_text()

        def caught_up(p: Path) -> bool:
            values = _datetime_values(p)
            return (
                values is not None
                and values["now"] >= first["now"] + 2
                and values["1s ago"] == values["now"] - 1
                and values["2s ago"] == values["now"] - 2
            )

        await wait_path(out, caught_up, timeout=15)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_history_is_the_previous_value_as_in_mgmt(tmp_path: Path) -> None:
    """tester7's #7: `history($now, 1)` was the value 1 ms ago (the same second); in mgmt it
    is the previous value. The file appears once the clock has had two values."""
    out = tmp_path / "o"
    program = tmp_path / "h.mcl"
    program.write_text(
        'import "datetime"\nimport "fmt"\n$now = datetime.now()\n'
        f'file "{out}" {{ state => "exists", '
        'content => fmt.printf("%d %d %d\\n", $now, history($now, 1), history($now, 2)), }\n'
    )

    def shown(p: Path) -> bool:
        if not p.exists() or not p.read_text().endswith("\n"):
            return False
        now, prev, prev2 = (int(v) for v in p.read_text().split())
        return prev == now - 1 and prev2 == now - 2

    async with Daemon(["run", "--tmp-prefix", "lang", str(program)]) as daemon:
        await wait_path(out, shown, timeout=30)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_autoscaler_flips_only_after_the_load_held_for_the_hold_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The VM (libvirt's test driver, whose state is private to the daemon) is followed through
    the daemon's log: shut down once the load has stayed high for the hold time, started again
    once it has stayed low; a load that does not parse keeps the last graph."""
    hold = 0.4
    load = tmp_path / "load"
    load.write_text("0.3\n")
    env = {"MGMT_DEMO_LOADFILE": str(load), "MGMT_DEMO_HOLD_MS": str(int(hold * 1000))}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the daemon inherits them
    vm = "virt[autoscaled]"

    def set_load(value: str) -> None:
        tmp = load.with_suffix(".new")
        tmp.write_text(value + "\n")
        tmp.replace(load)

    async with Daemon(["run", "--tmp-prefix", "examples/autoscaler.mcl"]) as daemon:
        await daemon.wait_log(f"{vm}: started")
        await daemon.wait_log("converged: the 1 resource")
        for value, expected, count in (("2.5", "shut down: done", 1), ("0.2", "started", 2)):
            start = time.monotonic()
            set_load(value)
            await daemon.wait_log(f"{vm}: {expected}", count=count)
            assert time.monotonic() - start >= hold
        set_load("garbage")  # a run-time error: the last graph stays
        await daemon.wait_log("cannot parse 'garbage' as a float")
        assert "keeping the last good graph" in daemon.log
        start = time.monotonic()  # before the write: the test may be descheduled after it
        set_load("2.0")  # the program recovers and still flips only after the hold time
        await daemon.wait_log(f"{vm}: shut down: done", count=2)
        assert time.monotonic() - start >= hold
        assert "the program produces a graph again" in daemon.log
        daemon.signal(signal.SIGINT)
        assert await daemon.wait() == 0, daemon.log


async def test_world_functions_show_what_another_agent_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/world.mcl on two real agents (their own etcd members): each one's file shows
    the status the other wrote with its kv resource, follows an edit of it, and the motd."""
    monkeypatch.setenv("MGMT_DEMO_DIR", str(tmp_path))  # the daemons inherit it
    h1, h2 = Host("h1", tmp_path, frontend="lang"), Host("h2", tmp_path, frontend="lang")
    for host in (h1, h2):
        host.graph.write_text((ROOT / "examples" / "world.mcl").read_text())

    def shows(host: str, motd: str, h1_status: str) -> str:
        return f"seen by {host}\nmotd: {motd}\nh1: {h1_status}\nh2: up\n"

    async with fleet([h1, h2]):
        await h1.start()
        await h2.start(seeds=[h1])
        for host in (h1, h2):
            await wait_path(
                tmp_path / f"world-{host.name}", has_content(shows(host.name, "(none)", "up")), 20
            )
        # h1's program changes its status: a graph swap, its kv writes it, h2's file follows.
        text = h1.graph.read_text()
        tmp = h1.graph.with_suffix(".new")
        tmp.write_text(text.replace('sys.defaultenv("MGMT_DEMO_STATUS", "up")', '"busy"'))
        tmp.replace(h1.graph)
        await wait_path(tmp_path / "world-h2", has_content(shows("h2", "(none)", "busy")))
        # A string set by anyone in the cluster.
        async with client_of(h1, h2) as client:
            await EtcdWorld(client, "test").str_set("demo/motd", "hello")
        for host in (h1, h2):
            await wait_path(
                tmp_path / f"world-{host.name}", has_content(shows(host.name, "hello", "busy"))
            )
        assert await h2.stop() == 0
        assert await h1.stop() == 0


async def test_export_and_collect_between_two_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/collect.mcl on two real agents: each exports its hidden file and collects both;
    an edit on one host reaches the file; a host that stops leaves the others' collect.res."""
    monkeypatch.setenv("MGMT_DEMO_DIR", str(tmp_path))
    h1, h2 = Host("h1", tmp_path, frontend="lang"), Host("h2", tmp_path, frontend="lang")
    for host in (h1, h2):
        host.graph.write_text((ROOT / "examples" / "collect.mcl").read_text())
    shared = tmp_path / "shared"

    def listing(*hosts: str) -> str:
        return "".join(f"{shared}/{h} from {h}\n" for h in hosts)

    async with fleet([h1, h2]):
        await h1.start()
        await wait_path(shared / "h1", has_content("hello from h1\n"), 20)
        await h2.start(seeds=[h1])
        await wait_path(shared / "h2", has_content("hello from h2\n"), 20)
        for host in (h1, h2):
            await wait_path(tmp_path / f"exports-{host.name}", has_content(listing("h1", "h2")))
        # h2's program changes its greeting: its export changes, and the collectors follow.
        assert h1.daemon is not None and h2.daemon is not None
        daemons = [h1.daemon, h2.daemon]

        def refreshes() -> int:
            return sum("msg: a collected file changed" in line for d in daemons for line in d.lines)

        before = refreshes()
        text = h2.graph.read_text()
        tmp = h2.graph.with_suffix(".new")
        tmp.write_text(
            text.replace('sys.defaultenv("MGMT_DEMO_GREETING", "hello from ${me}")', '"bye"')
        )
        tmp.replace(h2.graph)
        await wait_path(shared / "h2", has_content("bye\n"))
        # Each print listens to the collected files: the host that applied the change (either
        # one: both collect the file and the first to write it changes it) refreshes its print.
        await wait_logs(daemons, lambda: True if refreshes() > before else None)
        (shared / "h2").write_text("drift\n")  # a collected file is enforced like any other
        await wait_path(shared / "h2", has_content("bye\n"))
        assert await h2.stop() == 0
        await wait_path(tmp_path / "exports-h1", has_content(listing("h1")))
        assert (shared / "h2").read_text() == "bye\n"  # stays: no Meta:reverse
        assert "Traceback" not in h1.daemon.log
        assert await h1.stop() == 0


async def test_schedule_hands_the_singleton_over_when_its_host_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/schedule.mcl on three agents: only the first to join has the marker; kill -9
    it and, once its lease has expired (ttl 3 s), the next one in join order takes over."""
    monkeypatch.setenv("MGMT_DEMO_DIR", str(tmp_path))
    hosts = [Host(f"h{i}", tmp_path, frontend="lang") for i in (1, 2, 3)]
    for host in hosts:
        host.graph.write_text((ROOT / "examples" / "schedule.mcl").read_text())
    h1, h2, h3 = hosts
    marker = {h.name: tmp_path / f"singleton-{h.name}" for h in hosts}
    async with fleet(hosts):
        await h1.start()
        await wait_path(marker["h1"], has_content("h1 runs the singleton job\n"), 20)
        await h2.start(seeds=[h1])
        assert h2.daemon is not None
        await h2.daemon.wait_log("converged", timeout=20)
        await h3.start(seeds=[h1, h2])
        assert h3.daemon is not None
        await h3.daemon.wait_log("converged", timeout=20)
        assert not marker["h2"].exists() and not marker["h3"].exists()
        # Three voting members before one is killed: the other two keep a quorum (h2's too:
        # h3 can be a voter without it, had h2's member failed to start).
        for host in (h2, h3):
            assert host.daemon is not None
            await host.daemon.wait_log("this host's member is now a voting member", timeout=20)
        await h1.kill()
        killed = time.monotonic()
        await wait_path(marker["h2"], has_content("h2 runs the singleton job\n"), 30)
        assert time.monotonic() - killed >= 2  # the lease had to expire first
        assert not marker["h3"].exists()
        assert await h2.stop() == 0  # a clean stop leaves at once: h3 follows
        await wait_path(marker["h3"], has_content("h3 runs the singleton job\n"), 10)
        assert await h3.stop() == 0


async def test_daemon_repairs_drift_while_a_big_program_is_checked(tmp_path: Path) -> None:
    """An edited program is compiled off the event loop: one that takes seconds to check (2,500
    lambdas and printf calls, ~220 KB, under the size limit) does not hold up the repair of the
    running graph."""
    target = tmp_path / "hello"
    head = f'file "{target}" {{ state => "exists", content => "hello world\\n", }}\n'
    program = tmp_path / "main.mcl"
    program.write_text(head)
    async with Daemon(["run", "--tmp-prefix", "--verbose", "lang", str(program)]) as daemon:
        await wait_path(target, has_content("hello world\n"))
        bindings = "".join(
            f"$f{i} = func($x) {{ $x + {i} }}\n"
            f'$s{i} = fmt.printf("%d-%s", $f{i}({i}), "v{i}") + "x"\n'
            for i in range(2500)
        )
        big = program.with_suffix(".new")
        big.write_text(f'import "fmt"\n{head}{bindings}')
        big.replace(program)
        await daemon.wait_log("program file changed (")  # checking has begun
        target.unlink()
        await wait_path(target, has_content("hello world\n"), timeout=30)
        assert "swapping in the new program" not in daemon.log  # repaired during the check
        await daemon.wait_log("swapping in the new program", timeout=120)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
        assert "Traceback" not in daemon.log


def test_a_program_directory_with_modules_and_mgmts_syntax_converges(tmp_path: Path) -> None:
    """mgmt's forms, run for real: a directory with metadata.yaml, a local file and directory
    module, `include ... as` and `class a:b`, `<|>`, `$hostname`, Title-cased template fields,
    a lambda used at two types."""
    prog, out = tmp_path / "prog", tmp_path / "out"
    (prog / "lib").mkdir(parents=True)
    (prog / "metadata.yaml").write_text('main: "site.mcl"\n')
    (prog / "lib" / "main.mcl").write_text(
        'class page($name) {\n\tfile "OUT/${name}" { content => $text + "\\n" }\n'
        '\t$text = "page " + $name\n}\n'.replace("OUT", str(out))
    )
    (prog / "util.mcl").write_text("$join = func($a, $b) { $a + $b }\n")
    (prog / "site.mcl").write_text(
        f"""import "golang"
import "os"
import "lib/"
import "util.mcl"
include lib.page("index") as index
class base($n) {{
	$mid = "base " + $n
}}
class base:inner {{
	file "{out}/inner" {{ content => $mid + "\\n" }}
}}
include base("b") as b
include b.inner
file "{out}/host" {{ content => golang.template("{{{{ .Host }}}} {{{{ .N }}}}\\n",
	struct{{host => $hostname, n => $util.join(1, 2)}}), }}
file "{out}/fallback" {{ content => os.readfile("{tmp_path}/missing") <|> $util.join($index.text, "!"), }}
"""
    )
    out.mkdir()
    args = ["run", "--converged-timeout=0", "--tmp-prefix", "--hostname=h1", "lang", str(prog)]
    code, log = run_mgmt(args)
    assert code == 0, log
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "index": "page index\n",
        "inner": "base b\n",
        "host": "h1 3\n",
        "fallback": "page index!",
    }


def test_a_bad_module_is_one_error_line_with_its_position_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "lib.mcl").write_text('$x = 1\nfile "/tmp/x" {}\n')
    program = tmp_path / "main.mcl"
    program.write_text('import "lib.mcl"\nimport "nope/"\n$v = $lib.x <|> "s"\n')
    code, out = run_mgmt(["check", str(program)])
    assert code == 2
    assert out.splitlines() == [
        f"{tmp_path}/lib.mcl:2:1: a module holds only imports, bindings, funcs and classes "
        "(put resources in a class and include it)",
        f'{program}:2:1: import "nope/": no such directory {tmp_path}/nope',
        f"{program}:3:17: type error: both sides of <|> must have one type: expected int, got str",
    ]


def test_check_graph_prints_the_first_graph_of_a_directory_and_applies_nothing(
    tmp_path: Path,
) -> None:
    """`mgmt check --graph DIR`: mgmt's `Vertex:`/`Edge:` lines, sorted; a metadata.yaml with
    tabs before its comments, as mgmt's examples write them; a module imported by a module
    resolves against its own directory."""
    prog, out = tmp_path / "prog", tmp_path / "out"
    (prog / "lib" / "deep").mkdir(parents=True)
    (prog / "metadata.yaml").write_text('main: "site.mcl"\t# not the default\n')
    (prog / "lib" / "main.mcl").write_text('import "deep/"\n$names = $deep.names\n')
    (prog / "lib" / "deep" / "main.mcl").write_text('$names = ["b", "a"]\n')
    (prog / "site.mcl").write_text(
        f"""import "lib/"
for $i, $n in $lib.names {{
	file "{out}/${{n}}" {{ content => "x", }}
}}
if false {{
	file "{out}/never" {{}}
}}
exec "e" {{ cmd => "true", Listen => File["{out}/b"], }}
File["{out}/a"] -> File["{out}/b"]
"""
    )
    code, log = run_mgmt(["check", "--graph", str(prog)])
    assert code == 0, log
    assert log.splitlines() == [
        f"{prog}: ok",  # stderr first (run_mgmt joins stderr + stdout)
        f"Edge: file[{out}/a] -> file[{out}/b]",
        f"Edge: file[{out}/b] -> exec[e] # notify",
        "Vertex: exec[e]",
        f"Vertex: file[{out}/a]",
        f"Vertex: file[{out}/b]",
    ]
    assert not out.exists()
    # A program that fails when run: its error, where it is, exit 2.
    bad = tmp_path / "div.mcl"
    bad.write_text('$z = 0\ntest "t" { float64 => 42 / $z, }\n')
    code, log = run_mgmt(["check", "--graph", str(bad)])
    assert code == 2 and log.splitlines() == [f"{bad}:2:23: /: can't divide by zero"], log
    # A function's run-time error has the call's position too; `mgmt run`: that line, exit 2.
    missing = tmp_path / "readfile.mcl"
    missing.write_text(f'import "os"\n$x = os.readfile("{tmp_path}/nonexistent")\n'
                       f'file "{out}/x" {{ content => $x, }}\n')  # fmt: skip
    code, log = run_mgmt(["check", "--graph", str(missing)])
    assert code == 2, log
    assert log.startswith(f"{missing}:2:6: os.readfile: cannot read {tmp_path}/nonexistent"), log
    code, log = run_mgmt(["run", "--converged-timeout=0", "--tmp-prefix", "lang", str(missing)])
    assert code == 2, log
    assert f"lang: {missing}:2:6: os.readfile: cannot read" in log
    assert "produced no graph" not in log and not out.exists()
    # Local values (mgmt's http-server-ui-value.mcl reads them): those of a fresh host.
    local = tmp_path / "local.mcl"
    local.write_text(
        'import "value"\n$v = value.get_str("k")\n'
        'test (if $v->ready { "set" } else { "not-ready" }) {}\n'
    )
    code, log = run_mgmt(["check", "--graph", str(local)])
    assert code == 0 and log.splitlines() == [f"{local}: ok", "Vertex: test[not-ready]"], log


def test_http_response_follows_the_http_client_resource(tmp_path: Path) -> None:
    """net/http.response(uid): what http:client `uid` got from a real server (our http:server,
    on 127.0.0.1), as mgmt's http-client1.mcl reads it: the status and the downloaded body;
    0 and "" for a name no http:client has."""
    from tests.resources.test_http_server import free_port

    port = free_port()
    dst, out = tmp_path / "page", tmp_path / "out"
    program = tmp_path / "h.mcl"
    program.write_text(
        f"""
        import "fmt"
        import "net/http"
        http:server ":{port}" {{}}
        http:server:file "/page" {{ data => "page\\n", }}
        http:client "{dst}" {{ url => "http://127.0.0.1:{port}/page", Meta:poll => 3600, }}
        Http:Server[":{port}"] -> Http:Client["{dst}"]
        $r = http.response("{dst}")
        $none = http.response("none")
        file "{out}" {{
            state => "exists",
            content => fmt.printf("%d %s|%d %q", $r->status, $r->output, $none->status,
                $none->output),
        }}
        """
    )
    code, log = run_mgmt(["run", "--converged-timeout=1", "--tmp-prefix", "lang", str(program)])
    assert code == 0, log
    assert dst.read_text() == "page\n"
    assert out.read_text() == '200 page\n|0 ""'


def test_check_graph_shows_the_automatic_edges_and_what_is_collected(tmp_path: Path) -> None:
    """`mgmt check --graph` adds the engine's automatic edges (a file after its directory),
    marked ` # autoedge` (MGMT_NO_AUTOEDGES=1 leaves them out, as `mgmt run --no-autoedges`),
    and says as comments what the cluster would bring: what is collected, edges waiting for
    it (nothing is read from the cluster, so none of it is in the graph)."""
    out = tmp_path / "out"
    program = tmp_path / "main.mcl"
    program.write_text(
        f"""file "{out}/" {{ state => "exists", }}
file "{out}/a" {{ content => "x", }}
collect file "/shared/h1" {{}}
File["{out}/a"] -> File["/shared/h1"]
"""
    )
    code, log = run_mgmt(["check", "--graph", str(program)])
    first = log
    assert code == 0, log
    assert log.splitlines() == [
        f"{program}: ok",
        f"Edge: file[{out}/] -> file[{out}/a] # autoedge",
        f"Vertex: file[{out}/]",
        f"Vertex: file[{out}/a]",
        "# Collect: file[/shared/h1] from any host",
        f"# Edge: file[{out}/a] -> file[/shared/h1]",
    ]
    code, log = run_mgmt(["check", "--graph", str(program)], env={"MGMT_NO_AUTOEDGES": "1"})
    assert code == 0 and "autoedge" not in log, log
    assert not out.exists()
    # Importing `world/collect` (mgmt's programs do, for collect statements) reads nothing: the
    # same graph; calling one of its functions does (run it to see).
    program.write_text(f'import "world/collect"\n{program.read_text()}')
    code, again = run_mgmt(["check", "--graph", str(program)])
    assert (code, again) == (0, first)
    program.write_text(
        'import "world/collect"\nimport "fmt"\nprint "p" { msg => fmt.printf("%v", collect.res("file")), }\n'
    )
    # A valid program: exit 0 (2 was "bad input" to a script, operator tester 2026-12-07), as
    # mgmt's --only-unify; the note says why no graph is shown.
    code, log = run_mgmt(["check", "--graph", str(program)])
    assert (code, log.splitlines()) == (
        0,
        [
            f"{program}: its graph is not shown: the program reads the cluster (world.*), "
            "which only `mgmt run` does",
            f"{program}: ok",
        ],
    )
