"""golang.template: Go's text/template language, through the compiler and the runtime.

Each expected output is what Go's text/template documents (and prints) for the template:
variables, define/template/block, with/else, break/continue, the builtin functions, trimming,
comments, and values formatted as Go's fmt prints them."""

from __future__ import annotations

import pytest

from mgmt.lang.errors import FuncError
from tests.mgmt.lang.helpers import problems, value_of

PRELUDE = 'import "golang"'
DATA = (
    'struct{name => "Bob <b&b>", m => {"k" => "v", "a" => "b"}, items => ["x", "y", "z"],'
    ' n => 3, f => 1.5, on => true, empty => "", s => struct{inner => 7}}'
)


def mcl_string(text: str) -> str:
    """TEXT as an mcl string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("${", "\\${") + '"'


def render(text: str, data: str = DATA) -> str:
    value = value_of(f"golang.template({mcl_string(text)}, {data})", PRELUDE)
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # variables
        ("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", "a=b;k=v;"),
        ("{{ $x := .Name }}{{ $x }}", "Bob <b&b>"),
        ("{{ range $i, $e := .Items }}{{ $i }}:{{ $e }} {{ end }}", "0:x 1:y 2:z "),
        ("{{ range $e := .Items }}{{ $e }}{{ end }}", "xyz"),
        ("{{ $x := 1 }}{{ range .Items }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ with $x := .N }}{{ $x }}{{ . }}{{ end }}", "33"),
        ("{{ range .Items }}{{ $.N }}{{ end }}", "333"),
        # a struct is a map of its Title-cased fields, as mgmt hands it to Go
        (
            "{{ $ }}",
            "map[Empty: F:1.5 Items:[x y z] M:map[a:b k:v] N:3 Name:Bob <b&b> On:true S:map[Inner:7]]",
        ),
        ("{{ .S.nope }}|{{ range .S }}{{ . }}{{ end }}|{{ len .S }}", "<no value>|7|1"),
        # define, template, block
        (
            '{{ define "t" }}T{{ . }}{{ end }}{{ template "t" .N }}{{ template "t" }}',
            "T3T<no value>",
        ),
        ('{{ block "b" .S }}B{{ .Inner }}{{ end }}', "B7"),
        # if / with / range with else, break, continue
        ("{{ with .Empty }}yes{{ else }}no{{ end }}", "no"),
        ("{{ with .Empty }}a{{ else with .N }}b{{ . }}{{ end }}", "b3"),
        ("{{ if lt .N 2 }}s{{ else if lt .N 5 }}m{{ else }}l{{ end }}", "m"),
        ("{{ range (slice .Items 0 0) }}{{ else }}none{{ end }}", "none"),
        ('{{ range .Items }}{{ if eq . "y" }}{{ continue }}{{ end }}{{ . }}{{ end }}', "xz"),
        ('{{ range .Items }}{{ if eq . "y" }}{{ break }}{{ end }}{{ . }}{{ end }}', "x"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        # trimming and comments
        ("a  {{- .N -}}  b", "a3b"),
        ("a {{/* a comment */}} b", "a  b"),
        ("a\n  {{- /* trimmed */ -}}\n  b", "ab"),
        ("{{ 3 -}} {{- -4 }}", "3-4"),
        # functions
        ("{{ html .Name }}", "Bob &lt;b&amp;b&gt;"),
        ('{{ html "it\'s \\"q\\"" }}', "it&#39;s &#34;q&#34;"),
        ("{{ js .Name }}", "Bob \\u003Cb\\u0026b\\u003E"),
        ('{{ js "a\'b\\"c=\\\\" }}', "a\\'b\\\"c\\u003D\\\\"),
        ('{{ urlquery "a b&c=d/é" }}', "a+b%26c%3Dd%2F%C3%A9"),
        ("{{ slice .Name 0 3 }}|{{ slice .Items 1 }}|{{ slice .Items 1 2 3 }}", "Bob|[y z]|[y]"),
        ('{{ len .Items }} {{ len .M }} {{ len "é" }}', "3 2 2"),
        ('{{ index .M "k" }} {{ index .Items 2 }} {{ index .M "nope" }}', "v z "),
        ('{{ print 1 2 "a" 3 "b" "c" }}', "1 2a3bc"),
        ('{{ println 1 "a" .On }}', "1 a true\n"),
        ('{{ printf "%05.1f|%q|%v" .F .Empty .Items }}', '001.5|""|[x y z]'),
        ('{{ .N | printf "%d-%d" 1 }}', "1-3"),
        ('{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 "" }} {{ or 0 .N }} {{ not .On }}', "0 2  3 false"),
        (
            '{{ eq .N 1 2 3 }} {{ ne .Name "x" }} {{ le 1.5 .F }} {{ ge "b" "a" }}',
            "true true true true",
        ),
        ("{{ golang_strings_to_upper .Name }}", "BOB <B&B>"),
        # operands and formatting
        (
            "{{ 0x1F }} {{ 1e3 }} {{ 'a' }} {{ 1.0 }} {{ -2 }} {{ 1_000 }} {{ 017 }}",
            "31 1000 97 1 -2 1000 15",
        ),
        ('{{ "a\\u00e9\\t" }}{{ `raw\\n` }}', "a\u00e9\traw\\n"),
        ("{{ (.S).Inner }} {{ .S.Inner }} {{ .M.k }} {{ .M.nope }}", "7 7 v <no value>"),
        ("{{ .F }} {{ .On }} {{ .M }} {{ print nil }}", "1.5 true map[a:b k:v] <nil>"),
    ],
)
def test_go_text_template(text: str, expected: str) -> None:
    assert render(text) == expected


def test_a_template_without_data() -> None:
    """mgmt's one-argument form: the data is nil (Go prints it as `<no value>`)."""
    assert value_of('golang.template("{{ . }}|{{ .X }}|{{ 1 }}")', PRELUDE) == (
        "<no value>|<no value>|1"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ $x }}", "template:1:4: undefined variable: $x"),
        ("{{ if .N }}", "template:1:12: unexpected EOF"),
        ("a\nb {{ end }}", "template:2:6: unexpected {{end}}"),
        ("{{ nosuch 1 }}", 'template:1:4: function "nosuch" not defined'),
        ("{{ .N.x", "template:1:1: unclosed action"),
        (
            '{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}',
            'multiple definition of template "a"',
        ),
        ("{{ break }}", "template:1:4: {{break}} outside {{range}}"),
        ("{{ printf(1) }}", "template:1:10: missing space?"),
        ('{{ "\\q" }}', "template:1:4: invalid syntax: unknown escape '\\q'"),
        ("{{/* open", "template:1:3: unclosed comment"),
        ("{{ $x := 1 }}{{ range .N }}{{ $y := 2 }}{{ end }}{{ $y }}", "undefined variable: $y"),
    ],
)
def test_a_constant_template_go_refuses_is_a_check_error(text: str, message: str) -> None:
    """Parsed when the program is checked, at the call, with the template's own line:col."""
    (problem,) = problems(f"{PRELUDE}\n$t = golang.template({mcl_string(text)}, 1)\n")
    assert problem.startswith("t.mcl:2:6: golang.template: template: ") and message in problem, (
        problem
    )


def test_a_template_in_a_variable_is_checked_and_the_older_name_too() -> None:
    (problem,) = problems('$t = "{{ end }}"\n$v = template($t, 1)\n')
    assert problem == "t.mcl:2:6: template: template: template:1:4: unexpected {{end}}"


def test_a_template_known_only_at_run_time_fails_there() -> None:
    with pytest.raises(FuncError, match=r"template:1:4: unexpected \{\{end\}\}"):
        value_of('golang.template("{{ " + "end }}", 1)', PRELUDE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{{ .N.nope }}",
            'template:1:4: executing "template": can\'t evaluate field nope in type int64',
        ),
        ("{{ index .Items 5 }}", "error calling index: index out of range: 5"),
        ("{{ eq .N .F }}", "error calling eq: incompatible types for comparison"),
        ("{{ slice .Name 2 1 }}", "error calling slice: invalid slice index: 2 > 1"),
        ("{{ range .F }}{{ end }}", "range can't iterate over 1.5"),
        ('{{ template "nope" }}', 'no template "nope" associated with template "template"'),
        (
            '{{ define "l" }}{{ template "l" }}{{ end }}{{ template "l" }}',
            "exceeded maximum template depth (100)",
        ),
        ("{{ len .N }}", "error calling len: len of type int64"),
        ("{{ .N 1 }}", "can't give argument to non-function .N"),
    ],
)
def test_execution_errors_name_the_template_position(text: str, message: str) -> None:
    with pytest.raises(FuncError) as info:
        render(text)
    assert message in str(info.value), str(info.value)
