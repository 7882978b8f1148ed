"""reparse(): an edit inside one resource of a graph file parses that resource alone (issue 16),
and whatever the edit, the result (or the error) is exactly parse()'s."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mgmt.yamlgraph import GraphFileError, Loaded, _Parser, parse
from mgmt.yamlreparse import incremental_parse, reparse
from resources.file import FileRes

N = 40


def text(contents: dict[int, str] | None = None, tail: str = "") -> str:
    lines = ["graph: g", "resources:", "  file:"]
    for i in range(N):
        content = (contents or {}).get(i, f"number {i}")
        lines += [f"    - name: f{i}", f"      path: /tmp/g/f{i}", f'      content: "{content}"']
    return "\n".join(lines) + "\n" + tail


def outcome(data: str, previous: Loaded | None = None) -> Any:
    """What parse (or reparse) makes of `data`: vertices with params, edges, exports; or the
    error's lines."""
    try:
        loaded = reparse(data.encode(), "g.yaml", previous) if previous else parse(data, "g.yaml")
    except GraphFileError as err:
        return err.problems
    return (
        loaded.graph.name,
        {k: (type(r), r.params(), r.meta) for k, r in loaded.graph.vertices.items()},
        sorted(loaded.graph.edges(), key=repr),
        [r.params() for r in loaded.exported],
        loaded.warnings,
    )


def test_an_edit_inside_one_resource_parses_it_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    first = incremental_parse(text(), "g.yaml")
    assert first.reuse is not None
    validated: list[str] = []
    original = FileRes.validate

    def counting(self: FileRes) -> None:
        validated.append(self.name)
        original(self)

    monkeypatch.setattr(FileRes, "validate", counting)
    second = reparse(text({7: "edited"}).encode(), "g.yaml", first)
    assert validated == ["f7"]  # one resource validated, not N
    assert second.graph.vertices[("file", "f7")].content == "edited"
    for key, res in first.graph.vertices.items():
        assert (second.graph.vertices[key] is res) == (key != ("file", "f7"))
    assert second.since == (first.graph, frozenset({("file", "f7")}))
    third = reparse(text({7: "edited", 25: "x"}).encode(), "g.yaml", second)  # and again
    assert validated == ["f7", "f25"]
    assert third.graph.vertices[("file", "f7")] is second.graph.vertices[("file", "f7")]
    assert outcome(text({7: "edited", 25: "x"})) == outcome(text({7: "edited", 25: "x"}), second)


EDGES = "edges:\n  - {name: e, from: {kind: file, name: f1}, to: {kind: file, name: f2}}\n"
EDGE_34 = "  - {from: {kind: file, name: f3}, to: {kind: file, name: f4}}\n"
EDGE_34_BLOCK = "  - from: {kind: file, name: f3}\n    to: {kind: file, name: f4}\n"

EDITS = {
    "content": lambda t: t.replace('"number 5"', '"five"'),
    "a key added": lambda t: t.replace('"number 5"\n', "\"number 5\"\n      mode: '0600'\n"),
    "a bad value": lambda t: t.replace('"number 5"', "[1, 2]"),
    "an unknown key": lambda t: t.replace("path: /tmp/g/f5", "pth: /tmp/g/f5"),
    "a legacy key (a warning)": lambda t: t.replace('"number 5"\n', '"x"\n      pollint: 3\n'),
    "renamed": lambda t: t.replace("name: f5\n", "name: g5\n"),
    "renamed to a duplicate": lambda t: t.replace("name: f5\n", "name: f6\n"),
    "renamed to an edge's end": lambda t: t.replace("name: f2\n", "name: g2\n"),
    "an export": lambda t: t.replace("name: f5\n", "name: '@@f5'\n"),
    "a resource added inside": lambda t: t.replace(
        '"number 5"\n', '"number 5"\n    - name: new\n      path: /tmp/new\n'
    ),
    "a resource removed": lambda t: t.replace(
        '    - name: f5\n      path: /tmp/g/f5\n      content: "number 5"\n', ""
    ),
    "a resource added first": lambda t: t.replace(
        "  file:\n", "  file:\n    - name: new\n      path: /tmp/new\n"
    ),
    "a resource appended": lambda t: t.replace(
        f'"number {N - 1}"\n', f'"number {N - 1}"\n    - name: new\n      path: /tmp/new\n'
    ),
    "an export added": lambda t: t.replace(
        '"number 5"\n', "\"number 5\"\n    - name: '@@new'\n      path: /tmp/new\n"
    ),
    "a duplicate added": lambda t: t.replace(
        '"number 5"\n', '"number 5"\n    - name: f9\n      path: /tmp/new\n'
    ),
    "an edge's end added": lambda t: t.replace(
        '"number 5"\n', '"number 5"\n    - name: f1\n      path: /tmp/g/f1\n'
    ),
    "a bad resource added": lambda t: t.replace(
        '"number 5"\n', '"number 5"\n    - name: new\n      pth: /tmp/new\n'
    ),
    "the first removed": lambda t: t.replace(
        '    - name: f0\n      path: /tmp/g/f0\n      content: "number 0"\n', ""
    ),
    "the last removed": lambda t: t.replace(
        f'    - name: f{N - 1}\n      path: /tmp/g/f{N - 1}\n      content: "number {N - 1}"\n', ""
    ),
    "three removed": lambda t: t.replace(
        "".join(
            f'    - name: f{i}\n      path: /tmp/g/f{i}\n      content: "number {i}"\n'
            for i in (4, 5, 6)
        ),
        "",
    ),
    "an edge's end removed": lambda t: t.replace(
        '    - name: f2\n      path: /tmp/g/f2\n      content: "number 2"\n', ""
    ),
    "two swapped": lambda t: t.replace(
        '    - name: f5\n      path: /tmp/g/f5\n      content: "number 5"\n'
        '    - name: f6\n      path: /tmp/g/f6\n      content: "number 6"\n',
        '    - name: f6\n      path: /tmp/g/f6\n      content: "number 6"\n'
        '    - name: f5\n      path: /tmp/g/f5\n      content: "number 5"\n',
    ),
    "a comment between": lambda t: t.replace("    - name: f6\n", "  # six\n\n    - name: f6\n"),
    "a dash alone": lambda t: t.replace("    - name: f6\n", "    -\n      name: f6\n"),
    "all removed": lambda t: "\n".join(t.split("\n")[:3]) + "\n",
    "indent before the next item": lambda t: t.replace("\n    - name: f6", "\n      - name: f6"),
    "the next item joined": lambda t: t.replace(
        '"number 5"\n    - name: f6', '"number 5"    - name: f6'
    ),
    "line break removed": lambda t: t.replace('"number 5"\n', '"number 5" '),
    "unterminated quote": lambda t: t.replace('"number 5"', '"number 5'),
    "a comment": lambda t: t.replace('"number 5"\n', '"number 5"  # five\n  # left\n'),
    "a top-level key": lambda t: t.replace('"number 5"\n', '"number 5"\nedges: []\n'),
    "an anchor and alias": lambda t: t.replace('"number 5"', "&c five").replace('"number 6"', "*c"),
    "a flow mapping": lambda t: t.replace(
        '- name: f5\n      path: /tmp/g/f5\n      content: "number 5"',
        "- {name: f5, path: /tmp/g/f5, content: five}",
    ),
    "a tab": lambda t: t.replace('      content: "number 5"', "\tcontent: x"),
    "a document marker": lambda t: t.replace('"number 5"\n', '"number 5"\n---\n'),
    "the last resource": lambda t: t.replace(f'"number {N - 1}"', '"last"'),
    "appended": lambda t: t + "      mode: '0600'\n",
    "the graph name": lambda t: t.replace("graph: g", "graph: h"),
    "a carriage return": lambda t: t.replace('"number 5"\n', '"number 5"\r\n'),
    "unicode": lambda t: t.replace('"number 5"', '"fünf ✓"'),
    "nothing": lambda t: t,
    "deep nesting": lambda t: t.replace('"number 5"', "[" * 62 + "]" * 62),
    "too deep": lambda t: t.replace('"number 5"', "[" * 63 + "]" * 63),
    # inside the `edges` list (the "edges" base): the edges alone are parsed again
    "an edge notifies": lambda t: t.replace("{name: e, from", "{name: e, notify: true, from"),
    "an edge added": lambda t: t.replace(EDGES, EDGES + EDGE_34),
    "an edge added first": lambda t: t.replace(EDGES, "edges:\n" + EDGE_34 + EDGES[7:]),
    "an edge reversed": lambda t: t.replace(
        "name: f1}, to: {kind: file, name: f2", "name: f2}, to: {kind: file, name: f1"
    ),
    "an edge's end renamed": lambda t: t.replace(
        "to: {kind: file, name: f2}", "to: {kind: file, name: f9}"
    ),
    "an edge to nothing": lambda t: t.replace("name: f2}}", "name: nope}}"),
    "an edge to itself": lambda t: t.replace("name: f2}}", "name: f1}}"),
    "an edge closing a cycle": lambda t: t.replace(
        EDGES, EDGES + "  - {from: {kind: file, name: f2}, to: {kind: file, name: f1}}\n"
    ),
    "an edge twice": lambda t: t.replace(
        EDGES, EDGES + EDGES[7:].replace("{name: e,", "{notify: true,")
    ),
    "an edge with an unknown key": lambda t: t.replace("{name: e,", "{name: e, nope: 1,"),
    "an edge as a block mapping": lambda t: t.replace(EDGES, EDGES + EDGE_34_BLOCK),
    "an edge's key unindented": lambda t: t.replace(
        EDGES, EDGES + EDGE_34_BLOCK.replace("    to", "to")
    ),
    "an edge removed": lambda t: t.replace(EDGES, "edges: []\n"),
    "an edge commented out": lambda t: t.replace("  - {name: e", "  # - {name: e"),
    "an edge's list unindented": lambda t: t.replace(EDGES, EDGES.replace("  - {", "- {")),
}


@pytest.mark.parametrize("base", ["plain", "edges", "unicode", "export", "edges first"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_reparse_is_parse_whatever_the_edit(base: str, edit: str) -> None:
    before = text(tail=EDGES if base == "edges" else "")
    if base == "edges first":
        before = before.replace("resources:\n", EDGES + "resources:\n")
    if base == "unicode":
        before = before.replace('"number 3"', '"drei ✓ é"')
    if base == "export":  # f5, the resource most edits change, is exported only
        before = before.replace("name: f5\n", "name: '@@f5'\n")
    first = incremental_parse(before, "g.yaml")
    after = EDITS[edit](before)
    assert outcome(after, first) == outcome(after)
    try:  # an edit of the edit too, from what reparse kept
        second = reparse(after.encode(), "g.yaml", first)
    except GraphFileError:
        return
    again = after.replace('"number 9"', '"nine"')
    assert outcome(again, second) == outcome(again)


def test_no_reuse_state_without_incremental_or_with_aliases() -> None:
    assert parse(text(), "g.yaml").reuse is None
    aliased = text().replace('"number 5"', "&c five").replace('"number 6"', "*c")
    assert incremental_parse(aliased, "g.yaml").reuse is None


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace('"number 9"', "!!str nine"),  # inside a resource
        lambda t: t.replace("{name: e,", "{name: !!str e,"),  # inside the edges list
    ],
)
def test_a_directive_keeps_a_part_from_being_read_alone(edit: Any) -> None:
    """`%TAG !! ...` changes what `!!str` means in the whole document: a part read alone (one
    resource, one edge) would read it as the standard tag and take what parse() refuses."""
    before = "%TAG !! tag:example.com,2000:\n---\n" + text(tail=EDGES)
    first = incremental_parse(before, "g.yaml")
    after = edit(before)
    assert outcome(after, first) == outcome(after)
    assert "could not determine a constructor" in outcome(after)[0]


def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    validated: list[str] = []
    original = FileRes.validate

    def counting(self: FileRes) -> None:
        validated.append(self.name)
        original(self)

    monkeypatch.setattr(FileRes, "validate", counting)
    return validated


@pytest.mark.parametrize(
    ("edit", "validated", "changed"),
    [
        ("a resource added inside", ["new"], {"new"}),
        ("a resource appended", ["new"], {"new"}),
        ("a resource added first", ["new"], {"new"}),
        ("a resource removed", [], {"f5"}),
        ("three removed", [], {"f4", "f5", "f6"}),
        ("renamed", ["g5"], {"f5", "g5"}),
        ("two swapped", [], set()),
    ],
)
def test_adding_removing_renaming_parses_those_alone(
    monkeypatch: pytest.MonkeyPatch, edit: str, validated: list[str], changed: set[str]
) -> None:
    first = incremental_parse(text(), "g.yaml")
    seen = counted(monkeypatch)
    second = reparse(EDITS[edit](text()).encode(), "g.yaml", first)
    assert seen == validated  # the new resources alone, not N
    assert second.since == (first.graph, frozenset(("file", name) for name in changed))
    for key, res in second.graph.vertices.items():
        assert (first.graph.vertices.get(key) is res) == (key[1] not in changed)


def test_a_random_walk_of_edits_reparses_as_parse() -> None:
    """Resources added, removed, renamed and edited anywhere, one after the other, each
    reparse()d from the last: always what parse() makes of the text, mostly without it."""
    rng = random.Random(16)
    names = [f"f{i}" for i in range(N)]
    contents = {name: "x" for name in names}

    def render() -> str:
        lines = ["graph: g", "resources:", "  file:"]
        for name in names:
            lines += [f"    - name: {name}", f"      path: /tmp/g/{name}"]
            lines += [f'      content: "{contents[name]}"']
        return "\n".join(lines) + "\n  noop:\n    - name: n\n" + EDGES

    last = incremental_parse(render(), "g.yaml")
    full = 0
    for step in range(100):
        at = rng.randrange(3, len(names))  # f1, f2 (edges' ends) stay
        action = rng.choice(["add", "remove", "rename", "edit"])
        if action == "add" or len(names) < 10:
            names.insert(at, f"n{step}")
            contents[f"n{step}"] = "new"
        elif action == "remove":
            del names[at]
        elif action == "rename":
            names[at] = f"r{step}"
            contents[names[at]] = "renamed"
        else:
            contents[names[at]] = f"edit {step}"
        now = render()
        assert outcome(now, last) == outcome(now)
        loaded = reparse(now.encode(), "g.yaml", last)
        full += loaded.since is None
        last = loaded
    assert full == 0


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("    - name: b\n", "\n    - name: b\n"),  # a blank line before b
        lambda t: t.replace("    - name: b\n", "\n\n    - name: c\n      path: /tmp/c\n"),
        lambda t: t.replace("    - name: b\n      path: /tmp/b\n", ""),  # b removed
        lambda t: t.replace("    - name: b\n", "  # b\n\n    - name: b\n"),
    ],
)
def test_the_blank_lines_a_kept_block_scalar_ends_with_are_reparsed(edit: Any) -> None:
    """The blank lines before an item end the item before it: its `|+` or `>+` value keeps
    them, so an edit there re-parses that item too."""
    before = (
        "graph: g\nresources:\n  file:\n    - name: a\n      path: /tmp/a\n"
        "      content: |+\n        x\n\n    - name: b\n      path: /tmp/b\n\n"
        "    - name: d\n      path: /tmp/d\n      content: >+\n        y\n\n"
    )
    first = incremental_parse(before, "g.yaml")
    after = edit(before)
    assert outcome(after, first) == outcome(after)


@pytest.mark.parametrize(
    ("edit", "changed"),
    [
        ("an edge notifies", {"f1", "f2"}),
        ("an edge added", {"f3", "f4"}),
        ("an edge added first", {"f3", "f4"}),
        ("an edge reversed", {"f1", "f2"}),
        ("an edge's end renamed", {"f1", "f2", "f9"}),
        ("an edge as a block mapping", {"f3", "f4"}),
        ("a comment between", set()),
    ],
)
@pytest.mark.parametrize("first_in_file", [False, True])
def test_an_edit_of_the_edges_parses_them_alone(
    monkeypatch: pytest.MonkeyPatch, edit: str, changed: set[str], first_in_file: bool
) -> None:
    """An edit inside the `edges` list parses the items it touched alone: no resource is
    validated, each is the very object of the last parse, and `since` names the ends of the
    changed edges. (A second item of one pair of ends, merged into one edge, is a full parse:
    test_reparse_is_parse_whatever_the_edit's "an edge twice".)"""
    before = text(tail=EDGES)
    if first_in_file:
        before = text().replace("resources:\n", EDGES + "resources:\n")
    first = incremental_parse(before, "g.yaml")
    seen = counted(monkeypatch)
    after = EDITS[edit](before)
    if edit == "a comment between":
        after = before.replace("  - {name: e", "  # a comment\n\n  - {name: e")
    second = reparse(after.encode(), "g.yaml", first)
    assert seen == []
    assert second.since == (first.graph, frozenset(("file", name) for name in changed))
    for key, res in second.graph.vertices.items():
        assert first.graph.vertices[key] is res
    assert outcome(after, first) == outcome(after)
    again = after.replace('"number 9"', '"nine"')  # then a resource edit, from what it kept
    third = reparse(again.encode(), "g.yaml", second)
    assert third.since == (second.graph, frozenset({("file", "f9")}))
    assert outcome(again, second) == outcome(again)


def test_a_random_walk_of_edge_edits_reparses_as_parse() -> None:
    """Edges added, removed, reversed and changed, one after the other, each reparse()d from
    the last: always what parse() makes of the text, never a full parse for a valid one."""
    rng = random.Random(16)
    edges: list[tuple[int, int, bool]] = [(1, 2, False)]

    def render() -> str:
        lines = ["edges:"]
        for src, dst, notify in edges:
            flag = ", notify: true" if notify else ""
            lines.append(
                f"  - {{from: {{kind: file, name: f{src}}}, to: {{kind: file, name: f{dst}}}{flag}}}"
            )
        return text(tail="\n".join(lines) + "\n")

    last = incremental_parse(render(), "g.yaml")
    full = 0
    for _ in range(100):
        action = rng.choice(["add", "remove", "flip", "notify"])
        at = rng.randrange(len(edges))
        src, dst, notify = edges[at]
        if action == "add" or len(edges) < 3:
            a, b = sorted(rng.sample(range(N), 2))  # low -> high: never a cycle
            edges.insert(rng.randrange(len(edges) + 1), (a, b, rng.random() < 0.5))
        elif action == "remove":
            del edges[at]
        elif action == "flip":
            edges[at] = (dst, src, notify)  # may close a cycle: then parse's error
        else:
            edges[at] = (src, dst, not notify)
        now = render()
        expected = outcome(now)
        assert outcome(now, last) == expected
        if isinstance(expected, list):  # an error: undo it
            edges[at] = (src, dst, notify)
            continue
        loaded = reparse(now.encode(), "g.yaml", last)
        full += loaded.since is None
        last = loaded
    assert full == 0


def test_an_edit_of_one_edge_parses_that_edge_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Of a list of many edges, the item whose text changed is parsed alone (O(change))."""
    many = "edges:\n" + "".join(
        f"  - {{from: {{kind: file, name: f{i}}}, to: {{kind: file, name: f{i + 1}}}}}\n"
        for i in range(N - 1)
    )
    first = incremental_parse(text(tail=many), "g.yaml")
    read: list[Any] = []
    original = _Parser._edge
    monkeypatch.setattr(_Parser, "_edge", lambda self, *a: read.append(a[0]) or original(self, *a))
    after = text(tail=many.replace("name: f8}}", "name: f8}, notify: true}"))
    second = reparse(after.encode(), "g.yaml", first)
    assert [dict(edge) for edge in read] == [
        {
            "from": {"kind": "file", "name": "f7"},
            "to": {"kind": "file", "name": "f8"},
            "notify": True,
        }
    ]
    assert second.since == (first.graph, frozenset({("file", "f7"), ("file", "f8")}))
    assert outcome(after, first) == outcome(after)


def test_a_bad_edit_of_a_big_file_is_told_at_its_line_and_changes_nothing() -> None:
    """An edit of one of 5,000 resources that is wrong (an unknown key) is refused by the full
    parse reparse() falls back to, at the edited key's line; the last graph is left as it
    was, and a good edit after it is still parsed alone."""
    count = 5000
    lines = ["graph: g", "resources:", "  file:"]
    for i in range(count):
        lines += [f"    - name: f{i}", f"      path: /tmp/g/f{i}", f'      content: "n {i}"']
    before = "\n".join(lines) + "\n"
    first = incremental_parse(before, "g.yaml")
    vertices = dict(first.graph.vertices)
    bad = before.replace("      path: /tmp/g/f4321\n", "      pth: /tmp/g/f4321\n")
    with pytest.raises(GraphFileError) as err:
        reparse(bad.encode(), "g.yaml", first)
    line = 3 + 3 * 4321 + 2  # the key's line: after the 3 header lines and 4,321 resources
    assert err.value.problems == [
        f"g.yaml:{line}: file[f4321]: pth: unknown key (did you mean 'path'?)"
    ]
    assert first.graph.vertices == vertices
    good = before.replace('"n 4321"', '"edited"')
    second = reparse(good.encode(), "g.yaml", first)
    assert second.since == (first.graph, frozenset({("file", "f4321")}))
    assert outcome(good, first) == outcome(good)


BIG = 3000


def big(edit: Any = None) -> str:
    lines = ["graph: g", "resources:", "  file:"]
    for i in range(BIG):
        lines += [f"    - name: f{i}", f"      path: /tmp/g/f{i}", f'      content: "n {i}"']
    lines += ["  noop:", "    - name: n0", "edges:"]
    lines += [f"  - {{name: e{i}, from: {{kind: file, name: f{i}}}, to: {{kind: noop, name: n0}}}}"]
    text = "\n".join(lines) + "\n"
    return text if edit is None else str(edit(text))


# Bad edits in the middle of a big file that involve the edited items alone: refused from those
# (no full parse), and told exactly as a full parse tells them (the line in the whole file).
ALONE = {
    "an unknown key": lambda t: t.replace("path: /tmp/g/f1500\n", "pth: /tmp/g/f1500\n"),
    "a value of the wrong type": lambda t: t.replace('"n 1500"', "[1, 2]"),
    "a bad mode and a bad owner": lambda t: t.replace(
        '"n 1500"\n', "\"n 1500\"\n      mode: 'abc'\n      owner: [1]\n"
    ),
    "a relative path": lambda t: t.replace("path: /tmp/g/f1500\n", "path: tmp/g/f1500\n"),
    "mapping values in a value": lambda t: t.replace('"n 1500"', "a: b"),
    "a key without its colon": lambda t: t.replace("path: /tmp/g/f1500\n", "path /tmp/g/f1500\n"),
    "a key without its colon, last": lambda t: t.replace('content: "n 1500"', 'content "n 1500"'),
    "an item further in": lambda t: t.replace("    - name: f1500\n", "     - name: f1500\n"),
    "more after a flow item": lambda t: t.replace(
        "    - name: f1500\n      path: /tmp/g/f1500\n",
        "    - {name: f1500, path: /tmp/g/f1500} x\n",
    ),
    "an unclosed flow mapping": lambda t: t.replace('"n 1500"', "{a: 1"),
    "a duplicate key": lambda t: t.replace('"n 1500"\n', '"n 1500"\n      content: x\n'),
    "a date that is not one": lambda t: t.replace('"n 1500"', "2001-13-45"),
    "an item without a name": lambda t: t.replace(
        '"n 1500"\n', '"n 1500"\n    - path: /tmp/g/new\n'
    ),
    "a bad resource added": lambda t: t.replace(
        '"n 1500"\n', '"n 1500"\n    - name: x\n      nope: 1\n'
    ),
    "a refused resource, edged": lambda t: t.replace(
        f"path: /tmp/g/f{BIG - 1}\n", f"path: /tmp/g/f{BIG - 1}\n      mode: 5\n"
    ),
    "an edge to a missing vertex": lambda t: t.replace("name: n0}}", "name: n9}}"),
    "an edge with a bad key": lambda t: t.replace("{name: e", "{nme: e"),
    "an edge with a bad notify": lambda t: t.replace("{name: e", "{notify: 3, name: e"),
}
# ... and those that involve more: a full parse says them (still exactly).
WHOLE = {
    "a duplicate name": lambda t: t.replace("name: f1500\n", "name: f1501\n"),
    "a path another has, and a bad key": lambda t: t.replace(
        "/tmp/g/f1500\n", "/tmp/g/f1502\n"
    ).replace("path: /tmp/g/f1501\n", "pth: /tmp/g/f1501\n"),
    "an edge's end renamed away, and a bad one": lambda t: t.replace(
        f"name: f{BIG - 1}\n", "name: x\n      pth: 1\n"
    ),
    "an unclosed quote": lambda t: t.replace('"n 1500"', '"n 1500'),
    "a line less indented": lambda t: t.replace(
        "      path: /tmp/g/f1500", "   path: /tmp/g/f1500"
    ),
    "a tab": lambda t: t.replace("      path: /tmp/g/f1500", "\tpath: /tmp/g/f1500"),
}


def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The full parses reparse() makes from now on."""
    from mgmt import yamlreparse

    made: list[str] = []
    original = yamlreparse.incremental_parse

    def counting(text: str | bytes, *args: Any, **kwargs: Any) -> Loaded:
        made.append("parse")
        return original(text, *args, **kwargs)

    monkeypatch.setattr(yamlreparse, "incremental_parse", counting)
    return made


@pytest.mark.parametrize("edit", sorted(ALONE) + sorted(WHOLE))
def test_a_bad_edit_of_a_big_file_is_refused_from_its_items_alone(
    monkeypatch: pytest.MonkeyPatch, edit: str
) -> None:
    """Of a graph the engine took (`accepted`): a problem of the edited items alone is told
    from them, exactly as a full parse tells it, at its line of the whole file; one that
    involves other resources (a name or path another has, an edge to a resource renamed) is
    told by a full parse. The last graph is left as it was, and a good edit is still O(change)."""
    first = incremental_parse(big(), "g.yaml")
    first.accepted = True
    vertices = dict(first.graph.vertices)
    after = big((ALONE | WHOLE)[edit])
    expected = outcome(after)
    assert isinstance(expected, list), expected  # an error
    made = parses(monkeypatch)
    assert outcome(after, first) == expected
    assert made == ([] if edit in ALONE else ["parse"])
    assert first.graph.vertices == vertices
    good = big(lambda t: t.replace('"n 1500"', '"edited"'))
    second = reparse(good.encode(), "g.yaml", first)
    assert second.since == (first.graph, frozenset({("file", "f1500")}))


def test_a_bad_edit_of_a_graph_not_taken_yet_is_told_by_a_full_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A graph the engine has not taken may have two resources managing one file, which a full
    parse tells beside any other problem: a bad edit of it is told by a full parse."""
    before = big(lambda t: t.replace("/tmp/g/f7\n", "/tmp/g/f8\n"))
    first = incremental_parse(before, "g.yaml")
    after = before.replace("path: /tmp/g/f1500\n", "pth: /tmp/g/f1500\n")
    made = parses(monkeypatch)
    problems = outcome(after, first)
    assert made == ["parse"]
    assert len(problems) == 2 and "pth: unknown key" in problems[1], problems
