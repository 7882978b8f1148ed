"""End to end: the real `mgmt` command on programs that call regexp.match (RE2: Go's syntax,
linear time; mgmt.lang.funcs.regexp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import run_mgmt, run_once

EXAMPLE = Path(__file__).parents[2] / "examples" / "regexp.mcl"


def test_a_program_matches_in_linear_time_with_gos_answers(tmp_path: Path) -> None:
    """`(a+)+$` on 200,000 a's and a b (Python's re: minutes, the GIL held; RE2: one pass),
    mgmt's own case, and `$` before a final newline (Python's re: a match; Go's: none). The
    bound on the run is run_mgmt's, against a hang only."""
    out = tmp_path / "out"
    program = tmp_path / "re.mcl"
    program.write_text(
        'import "regexp"\nimport "golang/strings" as golang_strings\nimport "fmt"\n'
        '$long = golang_strings.repeat("a", 200000) + "b"\n'
        f'file "{out}" {{\n\tstate => "exists",\n\tcontent => fmt.printf("%v %v %v\\n", '
        'regexp.match("(a+)+$", $long), '
        'regexp.match("^db\\\\d+\\\\.example\\\\.com$", "db1.example.com"), '
        'regexp.match("a$", "a\\n")),\n}\n'
    )
    code, said = run_once("lang", program)
    assert code == 0, said
    assert out.read_text() == "false true false\n"


def test_a_pattern_re2_refuses_is_one_line_exit_2_and_nothing_applied(tmp_path: Path) -> None:
    """A constant one: `mgmt check` and `mgmt run` say so at the pattern before any resource
    is applied; one computed by the program: the run's first graph fails the same way."""
    out = tmp_path / "out"
    constant = tmp_path / "constant.mcl"
    constant.write_text(
        f'import "regexp"\n$p = "(\\\\w+) \\\\1"\nfile "{out}" {{\n'
        '\tcontent => if regexp.match($p, "a a") { "y" } else { "n" },\n}\n'
    )
    said = (
        f"{constant}:4:29: regexp.match: bad pattern '(\\\\w+) \\\\1': "
        "invalid escape sequence: \\1 (backreferences are not RE2)"
    )
    code, printed = run_mgmt(["check", str(constant)])
    assert (code, printed.strip()) == (2, said)
    code, printed = run_once("lang", constant)
    assert code == 2 and said in printed and "Traceback" not in printed, printed
    computed = tmp_path / "computed.mcl"
    computed.write_text(
        'import "regexp"\nimport "golang/strings" as golang_strings\n'
        f'file "{out}" {{\n\tcontent => if regexp.match('
        'golang_strings.to_lower("(?=X)"), "x") { "y" } else { "n" },\n}\n'
    )
    code, printed = run_once("lang", computed)
    assert code == 2 and "Traceback" not in printed, printed
    assert f"{computed}:4:16: regexp.match: bad pattern '(?=x)': invalid perl operator" in printed
    assert not out.exists()


@pytest.mark.parametrize(
    ("host", "role"),
    [("db3.example.com", "database"), ("www.example.com", "web"), ("dbx.example.com", "other")],
)
def test_the_example_gives_each_host_its_role(tmp_path: Path, host: str, role: str) -> None:
    """examples/regexp.mcl, run as its comment says, for three host names."""
    env = {"MGMT_DEMO_DIR": str(tmp_path), "MGMT_DEMO_HOST": host}
    args = ["run", "--tmp-prefix", "--converged-timeout=0", "lang", str(EXAMPLE)]
    code, said = run_mgmt(args, env=env)
    assert code == 0, said
    assert (tmp_path / "role").read_text() == f"{host}: {role}\n"
