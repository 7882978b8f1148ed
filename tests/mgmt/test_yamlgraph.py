"""The YAML graph front-end: every kind of bad input is one readable line with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgmt.yamlgraph import GraphFileError, load_file, parse


def problems(text: str) -> list[str]:
    with pytest.raises(GraphFileError) as err:
        parse(textwrap.dedent(text), "g.yaml")
    return err.value.problems


GOOD = """
graph: g
resources:
  noop:
    - name: a
  print:
    - name: p
      msg: 0644
      meta: {retry: 2, delay: 10, sema: ["lock:2"]}
edges:
  - name: e1
    from: {kind: noop, name: a}
    to: {kind: print, name: p}
    notify: true
"""


def test_good_graph() -> None:
    loaded = parse(GOOD, "g.yaml")
    graph = loaded.graph
    assert graph.name == "g"
    assert set(graph.vertices) == {("noop", "a"), ("print", "p")}
    printer = graph.vertices[("print", "p")]
    assert printer.msg == "0644"  # type: ignore[attr-defined]  # the scalar's text, as mgmt
    assert printer.meta.retry == 2 and printer.meta.sema == ["lock:2"]
    assert graph.succ[("noop", "a")][("print", "p")].notify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("graph: g\nresources: {noop: [{name: a}\n", "g.yaml:3: YAML syntax error"),
        (
            "graph: g\nresources:\n  nope:\n    - name: a\n",
            "g.yaml:3: resources.nope: unknown kind 'nope'",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n      coment: x\n",
            "g.yaml:5: noop[a]: coment: unknown key (did you mean 'comment'?)",
        ),
        (
            "graph: g\nresources:\n  timer:\n    - name: t\n      interval: soon\n",
            "g.yaml:5: timer[t]: interval: expected a number, got 'soon'",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n      meta:\n        retry: x\n",
            "g.yaml:6: noop[a]: meta.retry: expected an integer",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n    - name: a\n",
            "g.yaml:5: noop[a]: duplicate resource noop[a]",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\nedges:\n  - from: {kind: noop, name: a}\n    to: {kind: noop, name: b}\n",
            "g.yaml:7: edge 0: to: no resource noop[b]",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n    - name: b\nedges:\n  - {from: {kind: noop, name: a}, to: {kind: noop, name: b}}\n  - {from: {kind: noop, name: b}, to: {kind: noop, name: a}}\n",
            "cycle: noop[a] -> noop[b] -> noop[a]",
        ),
        ("resources: {}\n", "g.yaml:1: graph: a non-empty graph name is required"),
        (
            "graph: g\nresorces: {}\n",
            "g.yaml:2: top level: unknown key 'resorces' (did you mean 'resources'?)",
        ),
        ("graph: g\ngraph: h\n", "g.yaml:2: graph: duplicate key"),
        ("- a\n", "g.yaml:1: the graph file must be a mapping"),
        (
            "graph: g\nresources:\n  noop:\n    - comment: x\n",
            "g.yaml:4: noop[0]: a non-empty string 'name' is required",
        ),
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n      meta: {sema: ['x:0']}\n",
            "noop[a]: meta.sema: expected 'id' or 'id:N'",
        ),
    ],
)
def test_bad_input_names_file_line_and_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = problems(
        """
        graph: g
        resources:
          noop:
            - name: a
              bad1: x
            - name: b
              bad2: y
        """
    )
    assert len(found) == 2


def test_legacy_keys_only_warn() -> None:
    loaded = parse("graph: g\nremote: x\nresources:\n  noop:\n    - name: a\n      pollint: 5\n")
    assert len(loaded.warnings) == 2
    assert "old mgmt key" in loaded.warnings[0]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(GraphFileError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_exported_and_collect_are_parsed() -> None:
    loaded = parse(
        "graph: g\nresources:\n  noop:\n    - name: '@@x'\ncollect:\n  - {kind: noop, pattern: x}\n"
    )
    assert [r.name for r in loaded.exported] == ["x"]
    assert loaded.collect[0].kind == "noop"
    assert len(loaded.graph) == 0


def test_kinds_that_cannot_be_constrained_cannot_be_collected() -> None:
    with pytest.raises(GraphFileError) as err:
        parse("graph: g\ncollect:\n  - {kind: exec, pattern: x}\n")
    assert len(err.value.problems) == 1
    assert "line 3" in err.value.problems[0] or ":3:" in err.value.problems[0]
    assert "exec resources cannot be collected" in err.value.problems[0]


COLLECTING = """\
graph: g
resources:
  svc:
    - name: web
collect:
  - {kind: file, pattern: /etc/web/}
edges:
"""


def test_edges_to_collected_resources_wait_for_them() -> None:
    edge = "  - {from: {kind: file, name: /etc/web/site.conf}, to: {kind: svc, name: web}, notify: true}\n"
    loaded = parse(COLLECTING + edge)
    assert list(loaded.graph.edges()) == []
    ((src, dst, pending),) = loaded.pending
    assert (src, dst, pending.notify) == (("file", "/etc/web/site.conf"), ("svc", "web"), True)
    assert problems(
        COLLECTING
        + "  - {from: {kind: file, name: /etc/other}, to: {kind: svc, name: web}}\n"
        + "  - {from: {kind: file, name: /etc/web/a}, to: {kind: svc, name: web}, send: content, recv: x}\n"
    ) == [
        "g.yaml:8: edge 0: from: no resource file[/etc/other] in the graph",
        "g.yaml:9: edge 1: send/recv cannot involve a collected resource (yet)",
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_never_crashes(text: str) -> None:
    """Any text either parses or raises GraphFileError; never another exception."""
    try:
        parse(text, "fuzz.yaml")
    except GraphFileError as err:
        assert all(p.startswith("fuzz.yaml") for p in err.problems)


SENDRECV = """
graph: g
resources:
  exec:
    - name: gen
      cmd: echo hi
  file:
    - name: out
      path: /tmp/x
edges:
  - name: e1
    from: {kind: exec, name: gen}
    to: {kind: file, name: out}
    send: SEND
    recv: RECV
"""


def test_send_recv_edges() -> None:
    loaded = parse(SENDRECV.replace("SEND", "stdout").replace("RECV", "content"))
    edge = loaded.graph.succ[("exec", "gen")][("file", "out")]
    assert edge.sendrecv == (("stdout", "content"),)


@pytest.mark.parametrize(
    ("send", "recv", "expected"),
    [
        (
            "stdot",
            "content",
            "g.yaml:14: edge e1: send: exec[gen] sends output, stdout, stderr, not 'stdot'",
        ),
        (
            "stdout",
            "contnt",
            "g.yaml:15: edge e1: recv: file[out] has no param 'contnt' (did you mean 'content'?)",
        ),
    ],
)
def test_send_recv_errors(send: str, recv: str, expected: str) -> None:
    found = problems(SENDRECV.replace("SEND", send).replace("RECV", recv))
    assert expected in found, found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "graph: g\nresources:\n  noop:\n    - name: a\n      meta: 3\n",
            "g.yaml:5: noop[a]: meta: expected a mapping",
        ),
        ("graph: g\nresources: &r\n  noop: *r\n", "g.yaml"),
    ],
)
def test_odd_yaml_is_a_clear_error(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
