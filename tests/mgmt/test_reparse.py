"""reparse(): an edit inside one resource of a graph file parses that resource alone (issue 16),
and whatever the edit, the result (or the error) is exactly parse()'s."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mgmt.yamlgraph import GraphFileError, Loaded, parse, reparse
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
    first = parse(text(), "g.yaml", incremental=True)
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
}


@pytest.mark.parametrize("base", ["plain", "edges", "unicode", "export"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_reparse_is_parse_whatever_the_edit(base: str, edit: str) -> None:
    before = text(tail=EDGES if base == "edges" else "")
    if base == "unicode":
        before = before.replace('"number 3"', '"drei ✓ é"')
    if base == "export":  # f5, the resource most edits change, is exported only
        before = before.replace("name: f5\n", "name: '@@f5'\n")
    first = parse(before, "g.yaml", incremental=True)
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
    assert parse(aliased, "g.yaml", incremental=True).reuse is None


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
    first = parse(text(), "g.yaml", incremental=True)
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

    last = parse(render(), "g.yaml", incremental=True)
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
    first = parse(before, "g.yaml", incremental=True)
    after = edit(before)
    assert outcome(after, first) == outcome(after)
