"""The checker: binding order, scopes, type inference, resources against the kinds."""

from __future__ import annotations

import pytest

from mgmt.lang import ast
from mgmt.lang.types import resolve, show
from tests.mgmt.lang.helpers import compile_ok, problems


def type_of(src: str, name: str) -> str:
    checked = compile_ok(src)
    bind = next(b for b in checked.bindings if b.name == name)
    assert isinstance(bind, ast.Bind) and bind.type is not None
    return show(resolve(bind.type))


def test_bindings_in_any_order() -> None:
    src = """
    $c = $b + 1
    $b = $a * 2
    $a = 20
    """
    assert type_of(src, "c") == "int"


def test_rebinding_in_one_scope_is_an_error() -> None:
    (problem,) = problems("$a = 1\n$b = 2\n$a = 3\n")
    assert problem == "t.mcl:3:1: $a is already bound in this scope (at t.mcl:1:1)"


def test_inner_scope_may_shadow_and_sees_outer() -> None:
    compile_ok(
        """
        $a = 1
        if true {
            $a = "inner"
            $b = $c + 1
        }
        $c = 2
        """
    )


def test_dependency_cycle_is_reported_with_its_path() -> None:
    (problem,) = problems("$a = $b + 1\n$b = $c\n$c = $a\n")
    assert problem.startswith("t.mcl:")
    assert "dependency cycle: $a -> $b -> $c -> $a" in problem


def test_recursion_is_a_cycle() -> None:
    (problem,) = problems("func f($x) { f($x) }\n")
    assert "dependency cycle: f() -> f()" in problem


def test_undefined_variable_with_hint() -> None:
    (problem,) = problems("$count = 1\n$x = $cuont + 1\n")
    assert problem == "t.mcl:2:6: undefined variable $cuont (did you mean 'count'?)"


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ('$x = 1 + "a"', "t.mcl:1:6: type error: operator + cannot combine int and str"),
        ("$x = 1.5 * 2", "t.mcl:1:6: type error: operator * cannot combine float and int"),
        ('$x = if 1 { "a" } else { "b" }', "the condition of an if: expected bool, got int"),
        ('$x = if true { "a" } else { 2 }', "t.mcl:1:29: type error: both branches of an if"),
        ('$x = [1, "a"]', "t.mcl:1:10: type error: the items of a list: expected int, got str"),
        ("$x int = 1.5", "t.mcl:1:10: type error: $x is declared as int: expected int, got float"),
        ("$x = struct{a => 1}->b", "struct{a int} has no field b"),
        ("$x = 3->a", "->a needs a struct, got int"),
        ("$x = len(1)", "len does not accept (int)"),
        ('$x = "${y}"\n$y = 4', "an interpolated ${...} must be a str"),
        (
            '$f = func($a) { $a + 1 }\n$x = $f("s")',
            "argument 1 of the function: expected int, got str",
        ),
        ("$x = [1][true]", "a list index: expected int, got bool"),
        ('$x = {"a" => 1}[2]', "a map key: expected str, got int"),
    ],
)
def test_type_errors_name_position_and_both_types(src: str, expected: str) -> None:
    found = problems(src)
    assert any(expected in p for p in found), found
    assert all(p.startswith("t.mcl:") for p in found)


def test_nested_mismatch_shows_the_inner_types() -> None:
    (problem,) = problems('$x [][]int = [["a"]]')
    assert "expected [][]int, got [][]str (int vs str)" in problem


def test_inference_through_lambdas_and_collections() -> None:
    src = """
    import "iter"
    $nums = [1, 2, 3]
    $double = func($x) { $x * 2 }
    $twice = iter.map($nums, $double)
    $names = {"a" => struct{n => 1, s => "x"}}
    $first = $names["a"]->s
    """
    assert type_of(src, "twice") == "[]int"
    assert type_of(src, "first") == "str"
    assert type_of(src, "names") == "map{str: struct{n int; s str}}"


def test_let_polymorphism_for_bound_lambdas_and_funcs() -> None:
    src = """
    import "fmt"
    $id = func($a) { $a }
    func pair($a, $b) { [$a, $b] }
    $s = $id("x") + fmt.printf("%d", $id(1))
    $p = pair(1, 2)
    $q = pair("a", "b")
    """
    assert type_of(src, "s") == "str"
    assert type_of(src, "p") == "[]int"
    assert type_of(src, "q") == "[]str"


def test_overloads_are_resolved_from_use() -> None:
    src = """
    import "math"
    $a = math.mod(7, 2)
    $b = math.mod(7.5, 2.0)
    $c = len("abc") + len([1]) + len({1 => 2})
    $d = "a" in ["a", "b"]
    $e = 2 in {2 => "x"}
    $f = "ell" in "hello"
    """
    assert type_of(src, "a") == "int"
    assert type_of(src, "b") == "float"
    assert type_of(src, "c") == "int"
    for name in "def":
        assert type_of(src, name) == "bool"


def test_printf_is_typed_from_its_format() -> None:
    assert (
        type_of('import "fmt"\n$s = fmt.printf("%s=%d %.2f %t %v", "a", 1, 2.0, true, [1])', "s")
        == "str"
    )
    (problem,) = problems('import "fmt"\n$s = fmt.printf("%d", "a")')
    assert problem == "t.mcl:2:23: type error: fmt.printf %d: expected int, got str"
    (problem,) = problems('import "fmt"\n$s = fmt.printf("%d %d", 1)')
    assert "the format has 2 verbs but 1 value follows" in problem
    (problem,) = problems('import "fmt"\n$f = "%d"\n$s = fmt.printf($f, "a")')
    assert problem == "t.mcl:3:21: type error: fmt.printf %d: expected int, got str"


def test_imports_and_functions_must_exist() -> None:
    (problem,) = problems('import "nope"')
    assert problem.startswith('t.mcl:1:1: unknown module "nope"')
    (problem,) = problems("$x = datetime.now()")
    assert "unknown package 'datetime'" in problem and 'add import "datetime"' in problem
    (problem,) = problems('import "strings"\n$x = strings.to_uper("a")')
    assert "has no function to_uper (did you mean 'to_upper'?)" in problem
    (problem,) = problems('import "sys" as s\n$x = s.hostname() + sys.hostname()')
    assert "unknown package 'sys'" in problem


def test_a_refused_import_is_the_one_error_its_calls_are_not_errors_of_their_own() -> None:
    """mgmt's fwupd-reboot: `import "sys/fwupd"` (mgmt's, not here) said so, then each call
    `fwupd.reboot_needed()` added "unknown package 'fwupd'"."""
    (problem,) = problems('import "sys/fwupd"\n$x = fwupd.reboot_needed()\n')
    assert problem.startswith('t.mcl:1:1: import "sys/fwupd": mgmt has sys/fwupd;'), problem
    (problem,) = problems('import "strngs" as s\n$x = s.join(["a"], "")\n')
    assert problem.startswith('t.mcl:1:1: unknown module "strngs"'), problem


def test_resources_are_checked_against_the_kinds() -> None:
    found = problems(
        """
        file "/tmp/a" {
            contnet => "x",
        }
        file "/tmp/b" {
            content => 42,
            state => "exist",
            Meta:retry => "3",
            Meta:bogus => 1,
        }
        fiel "/tmp/c" {}
        timer "t" {}
        file 3 {}
        """
    )
    text = "\n".join(found)
    assert "t.mcl:3:5: file has no param 'contnet' (did you mean 'content'?)" in text
    assert "t.mcl:6:16: type error: file param content: expected str, got int" in text
    assert "t.mcl:7:14: file param state: expected one of 'exists', 'absent', got 'exist'" in text
    assert "type error: Meta:retry: expected int, got str" in text
    assert "Meta has no param 'bogus'" in text
    assert "t.mcl:11:1: unknown resource kind 'fiel' (did you mean 'file'?)" in text
    assert "t.mcl:12:1: timer: param interval is required" in text
    assert "the name of a file must be a str or a list of str, got int" in text


def test_constant_resources_are_validated_by_their_kind() -> None:
    (problem,) = problems('file "relative/path" { content => "x" }')
    assert problem.startswith("t.mcl:1:1: file[relative/path]: name: expected an absolute path")
    (problem,) = problems('file "/tmp/x" {\n  content => "x",\n  mode => "rwx",\n}')
    assert problem.startswith("t.mcl:3:3: file[/tmp/x]: mode:")


def test_constants_through_variables_and_negatives_are_validated_too() -> None:
    (problem,) = problems('$p = "relative"\n$q = $p\nfile $q { content => "x" }')
    assert problem.startswith("t.mcl:3:1: file[relative]: name: expected an absolute path")
    (problem,) = problems('test "a" { Meta:poll => -2 }')
    assert (
        "t.mcl:1:1: test[a]: Meta:poll: must be -1 (once), 0 (watch) or from 1 to 2147483647 s, got -2"
        in problem
    )
    compile_ok('test "a" { Meta:poll => -1 }')  # mgmt's "once"
    # A class's argument is a constant where the include passes one.
    (problem,) = problems('class c($p) { file $p { content => "x" } }\ninclude c("rel")')
    assert "file[rel]: name: expected an absolute path" in problem


def test_list_map_and_struct_literals_of_constants_are_validated_too() -> None:
    # A list param (through a variable), a struct param: checked now, not only when run.
    (problem,) = problems(
        '$d = ["8.8.8.8", "1.1.1"]\ndhcp:server ":67" {\n  interface => "lo",\n  dns => $d,\n}'
    )
    assert problem == "t.mcl:4:3: dhcp:server[:67]: dns: expected an IPv4 address, got '1.1.1'"
    (problem,) = problems('http:server:ui "ui" { data => struct{title => "t", head => "",}, }')
    assert problem.startswith("t.mcl:1:1: http:server:ui[ui]: name: must be a URL path")
    compile_ok('http:server:ui "/ui/" { data => struct{title => "t", head => "",}, }')
    compile_ok('dhcp:server ":67" { interface => "lo", dns => ["192.0.2.53"], routers => [] }')
    # An element known only when run: not decided here.
    compile_ok('import "os"\ndhcp:server ":67" { interface => "lo", dns => [os.args()[0]] }')


def test_conflicting_duplicate_resources_are_found_when_constant_and_unconditional() -> None:
    (problem,) = problems('test "a" { anotherstr => "x" }\n$v = "y"\ntest "a" { anotherstr => $v }')
    assert problem == (
        "t.mcl:3:1: incompatible duplicate resource test[a]: anotherstr: differs: "
        "'x' vs 'y' (also at t.mcl:1:1)"
    )
    # The same declaration twice is one resource, and compatible ones merge (as when run).
    compile_ok('test "a" { anotherstr => "x" }\ntest "a" { anotherstr => "x" }')
    compile_ok('pkg "p" { state => "installed" }\npkg "p" { state => "newest" }')
    # In exclusive branches, or with a value known only when run: not decided here.
    compile_ok('if true { test "a" { anotherstr => "x" } } else { test "a" { anotherstr => "y" } }')
    compile_ok(
        'import "os"\ntest "a" { anotherstr => "x" }\ntest "a" { anotherstr => os.args()[0] }'
    )
    # Through a class included twice with different constants: found, named by the include.
    (problem,) = problems(
        'class c($x) { test "a" { anotherstr => $x } }\ninclude c("x")\ninclude c("y")'
    )
    assert "t.mcl:1:15: incompatible duplicate resource test[a]" in problem
    assert "(in include c at t.mcl:3:1)" in problem


def test_float_params_accept_ints() -> None:
    compile_ok('timer "t" { interval => 5 }\ntimer "u" { interval => 0.5 }')


def test_edges_name_known_kinds() -> None:
    compile_ok('noop "a" {}\nnoop "b" {}\nNoop["a"] -> Noop["b"]')
    (problem,) = problems('noop "a" {}\nNop["a"] -> Noop["a"]')
    assert "t.mcl:2:1: unknown resource kind Nop (did you mean 'Noop'?)" in problem


def test_an_edge_to_a_resource_no_statement_declares_is_an_error_when_certain() -> None:
    (problem,) = problems('print "p" { msg => "hi" }\nFile["/nope"] -> Print["p"]\n')
    assert problem == "t.mcl:2:1: edge to file[/nope]: no such resource in the program"
    (problem,) = problems('noop "n" { Before => File[["/a", "/b"]] }\nfile "/a" {}\n')
    assert "edge to file[/b]: no such resource in the program" in problem
    compile_ok('$f = "/x"\nfile $f {}\nnoop "n" {}\nFile["/x"] -> Noop["n"]\n')  # constants
    # Left to the run: a name known only when run, a collected kind, a resource or an edge
    # made under a condition, an end whose name is not a constant.
    compile_ok(
        'import "sys"\n$h = sys.hostname()\nfile "/x${h}" {}\nnoop "n" {}\nFile["/nope"] -> Noop["n"]\n'
    )
    compile_ok('noop "n" {}\ncollect file "/c" {}\nFile["/nope"] -> Noop["n"]\n')
    compile_ok('noop "n" {}\nif true { file "/x" {} }\nFile["/x"] -> Noop["n"]\n')
    compile_ok('noop "n" {}\nif false { File["/nope"] -> Noop["n"] }\n')
    compile_ok('noop "n" { Before => true ?: File["/nope"] }\n')
    compile_ok('import "sys"\n$h = sys.hostname()\nnoop "n" {}\nFile["/nope${h}"] -> Noop["n"]\n')
    # Through a class: its includes are checked as they are made.
    compile_ok(
        'class c($p) {\n\tfile $p {}\n}\ninclude c("/x")\nnoop "n" {}\nFile["/x"] -> Noop["n"]\n'
    )
    (problem,) = problems('class c {\n\tnoop "n" {}\n\tFile["/y"] -> Noop["n"]\n}\ninclude c\n')
    assert "edge to file[/y]: no such resource in the program" in problem


def test_send_recv_is_checked() -> None:
    compile_ok(
        'exec "x" { cmd => "echo hi" }\nfile "/tmp/y" {}\nExec["x"].output -> File["/tmp/y"].content'
    )
    (problem,) = problems(
        'exec "x" { cmd => "echo" }\nfile "/tmp/y" {}\nExec["x"].out -> File["/tmp/y"].content'
    )
    assert "Exec sends output, stdout, stderr, not 'out'" in problem
    (problem,) = problems(
        'exec "x" { cmd => "echo" }\nfile "/tmp/y" {}\nExec["x"].output -> File["/tmp/y"].contents'
    )
    assert "File has no param 'contents' (did you mean 'content'?)" in problem
    (problem,) = problems(
        'exec "x" { cmd => "echo" }\nfile "/tmp/y" {}\nExec["x"].output -> File["/tmp/y"]'
    )
    assert "a send/recv edge joins exactly two resources" in problem


def test_send_recv_types_must_fit() -> None:
    """The sent value's type against the param's, before anything runs (mgmt's
    StructFieldCompat at type unification); `any` (value's) is checked when received."""
    (problem,) = problems(
        'exec "e" { cmd => "echo" }\nexec "f" { cmd => "echo" }\n'
        'Exec["e"].output -> Exec["f"].timeout\n'
    )
    assert problem == (
        't.mcl:3:21: Exec["e"].output -> Exec["f"].timeout: '
        "output is a string, timeout takes an integer"
    )
    (problem,) = problems('test "t" {}\nfile "/y" {}\nTest["t"].answer -> File["/y"].content\n')
    assert problem.endswith("answer is an integer, content takes a string")
    # An int fits a float, a str a Literal (its value checked when received), any anything.
    compile_ok('test "t" {}\ntest "u" {}\nTest["t"].answer -> Test["u"].float64\n')
    compile_ok('exec "e" { cmd => "echo" }\nfile "/y" {}\nExec["e"].output -> File["/y"].state\n')
    compile_ok('value "v" {}\nexec "e" { cmd => "echo" }\nValue["v"].any -> Exec["e"].timeout\n')


def test_many_problems_are_reported_at_once() -> None:
    found = problems('$a = 1 + "x"\n$b = $nope\n$c = $a\nfile "/tmp/x" { content => 1 }\n')
    assert len(found) == 3  # $c depends on the broken $a: no cascade


def test_structlookup_needs_a_constant_known_field() -> None:
    assert "the field must be a constant" in "\n".join(
        problems('$f = "a"\n$x = structlookup(struct{a => 1}, $f)\nnoop "n" {}\n')
    )
    assert (
        "no field"
        in "\n".join(problems('$x = structlookup(struct{a => 1}, "b")\nnoop "n" {}\n')).lower()
    )


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ('Meta:sema => ["5",]', "Meta:sema: expected 'id' or 'id:N', got a bare number '5'"),
        ("Meta:limit => 2.0", "Meta:burst: must be >= 1 with a limit (2/s)"),
        ('Meta:export => ["",]', "Meta:export: an empty host name: ['']"),
    ],
)
def test_mgmts_metaparam_rules_hold_in_mcl(meta: str, expected: str) -> None:
    (problem,) = problems(f'test "a" {{ {meta} }}')
    assert problem.startswith(f"t.mcl:1:1: test[a]: {expected}"), problem
    compile_ok('test "a" { Meta:limit => 2.0, Meta:burst => 1, Meta:sema => ["5:2",] }')
