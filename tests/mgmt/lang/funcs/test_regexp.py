"""import "regexp": Go's RE2 syntax and answers, in time linear in the text (mgmt.lang.funcs.regexp)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mgmt.lang.errors import FuncError
from mgmt.lang.funcs import regexp
from tests.mgmt.lang.helpers import problems, value_of

PRELUDE = 'import "regexp"\nimport "golang/strings" as golang_strings\nimport "golang"'


def mcl(text: str) -> str:
    """`text` as an mcl string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def matches(pattern: str, s: str) -> bool:
    value = value_of(f"regexp.match({mcl(pattern)}, {mcl(s)})", PRELUDE)
    assert isinstance(value, bool)
    return value


# mgmt's own cases (lang/core/regexp/match_func_test.go): not anchored, as Go's MatchString.
@pytest.mark.parametrize(
    ("pattern", "s", "expected"),
    [
        ("(mgmt){2}", "mgmt", False),
        ("(mgmt){2}", "mgmtmgmt", True),
        ("(mgmt){2}", "mgmtmgmtmgmt", True),
        (r"^db\d+\.example\.com$", "db1.example.com", True),
        (r"^db\d+\.example\.com$", "dbX.example.com", False),
        (r"^db\d+\.example\.com$", "db1.exampleXcom", False),
    ],
)
def test_mgmts_cases(pattern: str, s: str, expected: bool) -> None:
    assert matches(pattern, s) is expected


# Where Python's re and Go's regexp disagree, Go's (RE2's) answer.
@pytest.mark.parametrize(
    ("pattern", "s", "expected"),
    [
        ("a$", "a\n", False),  # $ is the end of the text (Python's: also before a final \n)
        ("(?m)a$", "a\nb", True),
        (r"a\z", "a", True),  # \z: RE2's end of the text (Python 3.11 refuses it)
        (r"\d", "\u0663", False),  # \d, \w, \s, \b are ASCII (Python's: Unicode)
        (r"\w", "é", False),
        (r"\s", "\u00a0", False),
        (r"\bé", " é", False),
        (r"\pL", "é", True),  # Unicode classes by name (Python's re has none)
        (r"\p{Greek}+", "λόγος", True),
        (r"[[:alpha:]]", "x", True),  # POSIX classes (Python's: a set of those characters)
        (r"(?P<word>\w+) (?<other>\w+)", "a b", True),  # both ways of naming a group
        (r"(?U)a+b", "aab", True),  # ungreedy flag
        (r"\Qa.b\E", "axb", False),  # quoted literal text
        (r"\Qa.b\E", "a.b", True),
        ("(?i)\u03c3", "\u03a3", True),  # sigma, capital sigma: Unicode case folding
        (r"(?s)a.b", "a\nb", True),
        (r"a.b", "a\nb", False),
        (r"\x{263a}", "☺", True),
    ],
)
def test_go_answers(pattern: str, s: str, expected: bool) -> None:
    assert matches(pattern, s) is expected


def test_a_pathological_pattern_on_a_long_text_finishes() -> None:
    """`(a+)+$` on 100,000 a's and a b: Python's re backtracks for ever (2**n ways); RE2 reads
    the text once. The bound is pytest-timeout's, against a hang only."""
    long = 'golang_strings.repeat("a", 100000) + "b"'
    assert value_of(f'regexp.match("(a+)+$", {long})', PRELUDE) is False
    assert value_of(f'regexp.match("(a|aa)*c", {long})', PRELUDE) is False
    assert value_of(f'regexp.match("(a+)+b$", {long})', PRELUDE) is True
    assert regexp.match(r"(x+x+)+y", "x" * 1_000_000) is False


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        (r"(a)\1", r"invalid escape sequence: \1 (backreferences are not RE2)"),
        ("(?=a)b", "invalid perl operator: (?= (lookarounds are not RE2)"),
        ("(?<!a)b", "invalid perl operator: (?<! (lookarounds are not RE2)"),
        (r"a\Z", r"invalid escape sequence: \Z (RE2's end of the text is \z)"),
        ("a++", "bad repetition operator: ++ (possessive repeats are not RE2)"),
        ("a{1001}", "invalid repetition size: {1001}"),  # Go's limit too
        ("(a", "missing ): (a"),
        ("[z-a]", "invalid character class range: z-a"),
        (r"a\Cb", r"invalid escape sequence: \C (one byte: not in Go's syntax)"),
        (r"\pL{1000}", "pattern too large - compile failed"),
    ],
)
def test_a_constant_bad_pattern_is_a_check_error_at_the_pattern(pattern: str, said: str) -> None:
    found = problems(f'{PRELUDE}\n$v = regexp.match({mcl(pattern)}, "x")\n')
    assert found == [f"t.mcl:4:19: regexp.match: bad pattern {pattern!r}: {said}"]


def test_a_pattern_bound_to_a_variable_is_checked_too_and_one_computed_when_applied() -> None:
    found = problems(f'{PRELUDE}\n$p = "(?!x)"\n$v = regexp.match($p, "x")\n')
    assert found == [
        "t.mcl:5:19: regexp.match: bad pattern '(?!x)': "
        "invalid perl operator: (?! (lookarounds are not RE2)"
    ]
    with pytest.raises(FuncError, match=r"bad pattern '\(\?!x\)': invalid perl operator"):
        value_of('regexp.match(golang_strings.to_lower("(?!X)"), "x")', PRELUDE)


def test_what_re2_accepts_that_go_refuses_and_escapes_of_it() -> None:
    assert regexp.check(r"\C") is not None
    assert regexp.check(r"[\C]") is not None
    assert regexp.check(r"\\C") is None  # a backslash, then C
    assert regexp.check(r"\Q\C\E") is None  # quoted
    assert regexp.check(r"\Qx") is None


def test_a_long_bad_pattern_is_shown_short() -> None:
    problem = regexp.check("x" * 5000 + "(")
    assert problem is not None and len(problem) < 250


def test_text_that_is_not_utf8() -> None:
    """A lone surrogate (JSON's "\\ud800") is U+FFFD, as Go reads a byte that is not UTF-8;
    a pattern holding one is refused, as Go's."""
    assert regexp.match("^\ufffd$", "\ud800") is True
    assert regexp.check("\ud800") == "bad pattern '\\ud800': invalid UTF-8"


def test_templates_call_the_same_function() -> None:
    assert value_of('golang.template("{{ regexp_match \\"^a+$\\" . }}", "aaa")', PRELUDE) == "true"
    with pytest.raises(FuncError, match="bad pattern"):
        value_of('golang.template("{{ regexp_match \\"(?=a)\\" . }}", "a")', PRELUDE)


def test_re2_is_imported_by_the_first_pattern_only() -> None:
    """A program that matches nothing never loads RE2 (nor does start-up)."""
    script = (
        "import sys\n"
        "from mgmt.lang import compile_text\n"
        "compile_text('import \"regexp\"\\n$f = \"x\"\\n', 't.mcl')\n"
        "print('re2' in sys.modules)\n"
        'compile_text(\'import "regexp"\\n$v = regexp.match("x", "y")\\n\', \'t.mcl\')\n'
        "print('re2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "True"]
