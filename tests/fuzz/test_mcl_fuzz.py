"""Fuzzing the language: random programs (structure-level) and mutated examples (byte-level).

The invariant, for every input: `mgmt check`'s own code path (mgmt.cli.check) exits 0 with
`FILE: ok`, or 2 with one-line `FILE:LINE:COL: message` problems; never another exception,
never a traceback, never a hang, nothing written. Well-typed random expressions also run: an
overflow or an impossible value is a function error, never an internal one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgmt import cli
from mgmt.lang.parser import MAX_DEPTH
from tests import fuzz
from tests.e2e.helpers import MGMT, ROOT
from tests.fuzz import fuzz_settings
from tests.mgmt.lang.helpers import run

EXAMPLES = {p.name: p.read_bytes() for p in sorted((ROOT / "examples").glob("*.mcl"))}
# 10,000 cases of a target take minutes (--fuzz-long); a few hundred, seconds.
pytestmark = pytest.mark.timeout(3600 if fuzz.LONG else 120)
HANG = 20.0  # seconds: a generous bound that only a hang (or a quadratic blow-up) crosses

# What would write to disk (audit events; os.open's flags checked separately).
_WRITES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link"}
_WRITES |= {"os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_watching: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _watching:
        return
    if event == "open":
        _path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _watching[-1].append(f"open {args!r}")
    elif event in _WRITES:
        _watching[-1].append(f"{event} {args!r}")


sys.addaudithook(_audit)  # (hooks cannot be removed: it records only inside _no_writes)


@contextlib.contextmanager
def _no_writes() -> Iterator[None]:
    writes: list[str] = []
    _watching.append(writes)
    try:
        yield
    finally:
        _watching.pop()
    assert writes == [], writes


def check_invariant(program: Path, data: bytes) -> None:
    """Check `data` as `mgmt check PROGRAM` does (in this process) and assert the invariant."""
    program.write_bytes(data)
    stderr = io.StringIO()
    start = time.monotonic()
    with _no_writes(), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stderr):
        code = cli.check([str(program)])
    elapsed = time.monotonic() - start
    lines = stderr.getvalue().splitlines()
    assert elapsed < HANG, f"{elapsed:.1f} s"
    if code == 0:
        assert lines == [f"{program}: ok"]
        return
    assert code == 2, (code, lines)
    assert lines, "exit 2 without a message"
    where = re.compile(rf"^{re.escape(str(program))}:[1-9]\d*:[1-9]\d*: \S|^and \d+ more problems$")
    for line in lines:
        assert where.match(line), line


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.mcl"


# structure-level: random programs ------------------------------------------------------------

_NAMES = ["a", "b", "x", "ok", "if", "for", "true", "map", "struct", "in", "Noop", "_", "é", "a.b"]
_name = st.sampled_from(_NAMES) | st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
_var = _name.map(lambda n: f"${n}")
_FUNCS = [
    "len", "fmt.printf", "math.mod", "math.pow", "math.abs", "math.floor", "strings.repeat",
    "strings.left_pad", "convert.to_int", "convert.str_to_int", "iter.range", "iter.map",
    "list.concat", "map.keys", "golang.template", "datetime.print", "os.readfile",
    "sys.getenv", "nope.nothing", "structlookup", "history", "template",
]  # fmt: skip
_KINDS = ["noop", "file", "exec", "print", "msg", "kv", "nope", "file:x", "collect noop"]
_PARAMS = ["comment", "content", "path", "mode", "state", "cmd", "owner", "nope", "name"]
_METAS = ["retry", "delay", "limit", "burst", "sema", "noop", "poll", "hidden", "nope"]
_TYPES = ["int", "str", "float", "bool", "[]int", "map{str: int}", "struct{a int}", "nope"]
# Text that stresses the lexer: unicode, control characters, escapes, interpolation.
_junk = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("\x00\x01\x7f\t\r"),
    max_size=8,
)


def _int_literal() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=0, max_value=2**64).map(str),
        st.sampled_from([str(2**63 - 1), str(2**63), "0" * 50 + "7"]),
        st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    )


def _string_literal() -> st.SearchStrategy[str]:
    escapes = st.sampled_from(["\\n", "\\t", '\\"', "\\\\", "\\$", "\\q", "${a}", "${", "}"])
    parts = st.lists(st.one_of(escapes, _junk.map(lambda s: s.replace('"', ""))), max_size=5)
    return parts.map(lambda p: '"' + "".join(p).replace("\n", "") + '"')


_atoms = st.one_of(
    _int_literal(),
    st.sampled_from(["1.5", "0.0", "1" + "0" * 400 + ".0", "1.0e308", "1.0e309", "2.5e-400"]),
    _string_literal(),
    st.sampled_from(["true", "false"]),
    _var,
)


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["+", "-", "*", "/", "==", "<", "and", "or", "in", "&&", "||"])
    args = st.lists(inner, max_size=3).map(", ".join)
    return st.one_of(
        st.tuples(inner, ops, inner).map(" ".join),
        st.tuples(st.sampled_from(["-", "not ", "!"]), inner).map("".join),
        st.tuples(st.sampled_from(_FUNCS), args).map(lambda t: f"{t[0]}({t[1]})"),
        args.map(lambda a: f"[{a}]"),
        st.lists(st.tuples(inner, inner), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k} => {v}" for k, v in kv) + "}"
        ),
        st.lists(st.tuples(_name, inner), max_size=3).map(
            lambda fs: "struct{" + ", ".join(f"{k} => {v}" for k, v in fs) + "}"
        ),
        st.tuples(st.lists(_var, max_size=2), inner).map(
            lambda t: f"func({', '.join(t[0])}) {{ {t[1]} }}"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"if {t[0]} {{ {t[1]} }} else {{ {t[2]} }}"),
        st.tuples(inner, _name).map(lambda t: f"{t[0]}->{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, inner).map(lambda t: f"$a({t[0]}, {t[1]})"),
        inner.map(lambda e: f"({e})"),
    )


expressions = st.recursive(_atoms, _compound, max_leaves=12)


def _resource(expr: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    field = st.one_of(
        st.tuples(st.sampled_from(_PARAMS), expr).map(lambda t: f"{t[0]} => {t[1]}"),
        st.tuples(st.sampled_from(_METAS), expr).map(lambda t: f"Meta:{t[0]} => {t[1]}"),
        st.tuples(expr, st.sampled_from(_PARAMS), expr).map(
            lambda t: f"{t[1]} => {t[0]} ?: {t[2]}"
        ),
        st.sampled_from(['Depend => File["/x"]', 'Notify => Noop["n"].x', "Bogus => 1"]),
    )
    return st.tuples(st.sampled_from(_KINDS), expr, st.lists(field, max_size=4)).map(
        lambda t: f"{t[0]} {t[1]} {{\n" + "".join(f"\t{f},\n" for f in t[2]) + "}"
    )


def _statements(expr: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    simple = st.one_of(
        st.tuples(_var, expr).map(lambda t: f"{t[0]} = {t[1]}"),
        st.tuples(_var, st.sampled_from(_TYPES), expr).map(lambda t: f"{t[0]} {t[1]} = {t[2]}"),
        _resource(expr),
        st.sampled_from(['Noop["a"] -> Noop["b"]', 'File["/x"].content -> Print["p"].msg']),
        st.sampled_from(["fmt", "math", "strings", "iter", "os", "nope", "a/b"]).map(
            lambda m: f'import "{m}"'
        ),
        st.tuples(_name, st.lists(_var, max_size=2), expr).map(
            lambda t: f"func {t[0]}({', '.join(t[1])}) {{ {t[2]} }}"
        ),
        st.tuples(_name, st.lists(expr, max_size=2)).map(
            lambda t: f"include {t[0]}({', '.join(t[1])})"
        ),
    )

    def blocks(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        body = st.lists(inner, max_size=3).map("\n".join)
        return st.one_of(
            st.tuples(expr, body, body).map(
                lambda t: f"if {t[0]} {{\n{t[1]}\n}} else {{\n{t[2]}\n}}"
            ),
            st.tuples(st.sampled_from(["for", "forkv"]), _var, _var, expr, body).map(
                lambda t: f"{t[0]} {t[1]}, {t[2]} in {t[3]} {{\n{t[4]}\n}}"
            ),
            st.tuples(_name, st.lists(_var, max_size=2), body).map(
                lambda t: f"class {t[0]}({', '.join(t[1])}) {{\n{t[2]}\n}}"
            ),
        )

    return st.recursive(simple, blocks, max_leaves=8)


programs = st.lists(_statements(expressions), max_size=8).map(lambda s: "\n".join(s) + "\n")

_NESTINGS = {
    "list": ("[", "1", "]"),
    "minus": ("-", "1", ""),
    "not": ("not ", "true", ""),
    "paren": ("(", "1", ")"),
    "plus": ("1 + ", "1", ""),
    "call": ("math.abs(", "1", ")"),
    "if": ("if true { ", "1", " } else { 2 }"),
    "lambda": ("func($x) { ", "1", " }"),
    "field": ("", "$s", "->a"),
    "type": ("[]", "int", ""),
}


@st.composite
def deep_programs(draw: st.DrawFn) -> str:
    """One construct nested around the limit (below, at, far past it)."""
    kind = draw(st.sampled_from(sorted(_NESTINGS)))
    depth = draw(st.integers(0, 3 * MAX_DEPTH) | st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH]))
    before, core, after = _NESTINGS[kind]
    if kind == "type":
        return f"$x {before * depth}{core} = 1\n"
    if draw(st.booleans()):  # as statements instead
        block = "if true {\n" * depth + f'noop "n" {{ comment => {core}, }}\n' + "}\n" * depth
        return 'import "math"\n' + block
    return f'import "math"\n$x = {before * depth}{core}{after * depth}\n'


@fuzz_settings()
@given(text=st.one_of(programs, deep_programs()), junk=st.lists(st.tuples(st.integers(0), _junk)))
def test_random_programs_check_or_fail_cleanly(program: Path, text: str, junk: list[Any]) -> None:
    for where, inserted in junk[:3]:  # unicode and control characters anywhere
        at = where % (len(text) + 1)
        text = text[:at] + inserted + text[at:]
    check_invariant(program, text.encode("utf-8", "surrogatepass"))


# byte-level: mutated examples ----------------------------------------------------------------

_mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.integers(0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("duplicate"), st.integers(0), st.integers(1, 200)),
    st.tuples(st.just("flip"), st.integers(0), st.integers(0, 255)),
    st.tuples(
        st.just("insert"),
        st.integers(0),
        st.sampled_from(
            [b"{", b"}", b"[", b"(", b'"', b"$", b"${", b"\\", b"\n", b"\xff", b"\x00"]
        ),
    ),
    st.tuples(st.just("repeat"), st.integers(0), st.integers(2, 1000)),
    # a literal or a variable replaced by a random expression: still parses, mostly, so the
    # checker gets to work on it
    st.tuples(st.just("splice"), st.integers(0), expressions.map(str.encode)),
)
_OPERAND = re.compile(rb'"(?:[^"\\\n]|\\.)*"|\b\d+\b|\$[a-z_][a-z0-9_.]*')


def mutate(data: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    for op, where, arg in mutations:
        at = where % (len(data) + 1)
        if op == "delete":
            data = data[:at] + data[at + arg :]
        elif op == "insert":
            data = data[:at] + arg + data[at:]
        elif op == "duplicate":
            data = data[:at] + data[at : at + arg] + data[at:]
        elif op == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ (arg or 1)]) + data[at + 1 :]
        elif op == "repeat":  # one character many times: deep nesting, long tokens
            data = data[:at] + data[at : at + 1] * arg + data[at:]
        elif op == "splice":
            operands = list(_OPERAND.finditer(data))
            if operands:
                found = operands[where % len(operands)]
                data = data[: found.start()] + arg + data[found.end() :]
    return data


@fuzz_settings()
@given(example=st.sampled_from(sorted(EXAMPLES)), mutations=st.lists(_mutation, max_size=6))
def test_mutated_examples_check_or_fail_cleanly(
    program: Path, example: str, mutations: list[tuple[str, int, Any]]
) -> None:
    check_invariant(program, mutate(EXAMPLES[example], mutations))


# run time: well-typed expressions ------------------------------------------------------------


@functools.cache
def _typed(kind: str, depth: int) -> st.SearchStrategy[str]:
    """A well-typed expression of an mcl type (int, float, str, bool)."""
    ints = st.integers(-(2**63) + 1, 2**63 - 1).map(lambda i: f"({i})") | st.sampled_from(
        ["0", "1", "-1", str(2**63 - 1), f"(-{2**63 - 1} - 1)"]
    )
    floats = st.sampled_from(["0.0", "1.5", "-2.5", "1.0e308", "1.0e-300"])
    strs = st.sampled_from(['""', '"a"', '"é\\n"', '"0x"', '"99999999999999999999"', '"1e400"'])
    leaves = {"int": ints, "float": floats, "str": strs, "bool": st.sampled_from(["true", "false"])}
    if depth == 0:
        return leaves[kind]
    i, f, s = (_typed(k, depth - 1) for k in ("int", "float", "str"))
    b = _typed("bool", depth - 1)
    options = {
        "int": [
            st.tuples(i, st.sampled_from(["+", "-", "*"]), i).map(" ".join),  # int / int: float
            i.map(lambda e: f"-({e})"),
            st.tuples(st.sampled_from(["math.mod", "math.min", "math.max"]), i, i).map(
                lambda t: f"{t[0]}({t[1]}, {t[2]})"
            ),
            i.map(lambda e: f"math.abs({e})"),
            f.map(lambda e: f"convert.to_int({e})"),
            f.map(lambda e: f"math.floor({e})"),
            s.map(lambda e: f"convert.str_to_int({e})"),
            s.map(lambda e: f"len({e})"),
            i.map(lambda e: f"len(iter.range({e}))"),
        ],
        "float": [
            st.tuples(f, st.sampled_from(["+", "-", "*", "/"]), f).map(" ".join),
            st.tuples(i, i).map(lambda t: f"(({t[0]}) / ({t[1]}))"),  # as in mgmt
            st.tuples(f, f).map(lambda t: f"math.pow({t[0]}, {t[1]})"),
            f.map(lambda e: f"math.sqrt({e})"),
            i.map(lambda e: f"convert.to_float({e})"),
            s.map(lambda e: f"convert.str_to_float({e})"),
        ],
        "str": [
            st.tuples(s, s).map(lambda t: f"{t[0]} + {t[1]}"),
            st.tuples(s, i).map(lambda t: f"strings.repeat({t[0]}, {t[1]})"),
            st.tuples(s, s, i).map(lambda t: f"strings.left_pad({t[0]}, {t[1]}, {t[2]})"),
            i.map(lambda e: f'fmt.printf("%d", {e})'),
            f.map(lambda e: f'fmt.printf("%v", {e})'),
            i.map(lambda e: f"datetime.print({e})"),
            i.map(lambda e: f"convert.format_int({e})"),
        ],
        "bool": [
            st.tuples(i, st.sampled_from(["==", "<", ">="]), i).map(" ".join),
            st.tuples(f, st.sampled_from(["==", "<"]), f).map(" ".join),
            b.map(lambda e: f"not ({e})"),
        ],
    }
    return st.one_of(leaves[kind], *options[kind])


@fuzz_settings()
@given(expr=st.sampled_from(["int", "float", "str", "bool"]).flatmap(lambda k: _typed(k, 3)))
def test_well_typed_expressions_run_or_fail_as_function_errors(expr: str) -> None:
    imports = "".join(f'import "{m}"\n' for m in ("fmt", "math", "strings", "convert", "iter"))
    src = f'{imports}import "datetime"\n$v = {expr}\nnoop "n" {{ comment => fmt.printf("%v", $v), }}\n'
    with _no_writes():
        _changed, _items, error = run(src).evaluate()
    if error is not None:
        message = str(error)
        assert re.match(r"^t\.mcl:[1-9]\d*:[1-9]\d*: [^\n]+$", message), message
        assert "internal error" not in message, message


# the real command ----------------------------------------------------------------------------

SUBPROCESS_CASES = {
    "ok": (b'$x = 1\nnoop "n" {}\n', 0),
    "syntax": (b"$x = = 1\n", 2),
    "type": (b'$x = 1 + "a"\n', 2),
    "deep list": (b"$x = " + b"[" * 500 + b"1" + b"]" * 500 + b"\n", 2),
    "minus chain": (b"$x = " + b"-" * 800 + b"1\n", 2),
    "huge int": (b"$x = " + b"9" * 5000 + b"\n", 2),
    "huge float": (b"$x = 1" + b"0" * 400 + b".0\n", 2),
    "not utf-8": (b'$x = "\xff"\n', 2),
    "control character": (b"$x = 1\x01\n", 2),
    "newline in a name": (b'import "a\\nb"\n', 2),
    "too large": (b"$x = [" + b"1," * 9_000_000 + b"]\n", 2),  # past 16 MiB (--max-graph-size)
}


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_real_mgmt_check(tmp_path: Path, case: str) -> None:
    data, expected = SUBPROCESS_CASES[case]
    program = tmp_path / "p.mcl"
    program.write_bytes(data)
    proc = subprocess.run(
        [*MGMT, "check", str(program)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == expected, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(lines) == 1, lines
    if expected == 2:
        assert re.match(rf"^{re.escape(str(program))}:[1-9]\d*:[1-9]\d*: \S", lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mcl"]
