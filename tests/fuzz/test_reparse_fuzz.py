"""Differential fuzzing of reparse() (issue 16): random graph files, random chains of edits
(lines added, removed, moved, swapped, re-indented; characters inserted and cut), each
reparse()d from the last version's result and compared with parse() of the same text: the
graph, exports, collects, pending edges, warnings or the problems (FILE:LINE) must be equal,
and `since` must name every resource that is not the very object of the base graph.

Seeded (random.Random), so a failure names its seed; `--fuzz-long` runs many more seeds.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from mgmt.yamlgraph import GraphFileError, Loaded
from mgmt.yamlreparse import incremental_parse, reparse
from tests import fuzz

LINES = [
    "    - name: a\n",
    "    - name: b\n",
    "    - name: '@@a'\n",
    "      path: /tmp/x/a\n",
    "      path: /tmp/x/b\n",
    "      content: hi\n",
    "      content: &c ho\n",
    "      content: *c\n",
    "      content: |+\n        k\n\n",
    "      mode: '0600'\n",
    "      pollint: 3\n",
    "      <<: {mode: '0644'}\n",
    "      meta: {retry: 2}\n",
    "  # comment\n",
    "\n",
    "\n\n",
    "    -\n",
    "      name: d\n",
    "        more\n",
    "     content: bad\n",
    "\t  path: /x\n",
    "      path: /tmp/x/a\r\n",
    "    - {name: f, path: /tmp/f}\n",
    "  noop: [{name: z}]\n",
    "  noop:\n",
    "  file:\n",
    "resources:\n",
    "---\n",
    "edges:\n  - {from: {kind: file, name: a0}, to: {kind: file, name: b0}}\n",
    "collect:\n  - {kind: file, pattern: x}\n",
    "  - {from: {kind: file, name: a0}, to: {kind: file, name: b0}}\n",
    "  - {from: {kind: file, name: b0}, to: {kind: file, name: a0}, notify: true}\n",
    "  - from: {kind: noop, name: z}\n    to: {kind: file, name: a0}\n",
    "- {from: {kind: file, name: a0}, to: {kind: noop, name: a0}}\n",
]
CONTENTS = ["x", "&q z", "|\n        block\n", "|+\n        keep\n\n", ">+\n        fold\n"]
INSERTS = ["x", " ", "\n", "-", ":", "#", "\r", "'", "a0", "- ", "\n    - name: q\n"]


def graph_file(rng: random.Random) -> str:
    lines = ["graph: g\n", "resources:\n"]
    declared: list[tuple[str, str]] = []
    for kind in rng.sample(["file", "noop"], rng.randint(1, 2)):
        lines.append(f"  {kind}:\n")
        for _ in range(rng.randint(1, 5)):
            name = rng.choice("abcdefgh") + str(rng.randint(0, 3))
            declared.append((kind, name))
            lines.append(f"    - name: {name}\n")
            if kind == "file":
                lines.append(f"      path: /tmp/x/{name}\n")
                if rng.random() < 0.5:
                    lines.append(f"      content: {rng.choice(CONTENTS)}\n")
            if rng.random() < 0.2:
                lines.append(rng.choice(["  # c\n", "\n", "      # deep\n"]))
    if rng.random() < 0.4:
        lines.append("edges:\n  - {from: {kind: file, name: a0}, to: {kind: file, name: b0}}\n")
    elif rng.random() < 0.5 and len(set(declared)) > 1:  # edges between declared resources
        lines.append("edges:\n")
        for _ in range(rng.randint(1, 3)):
            (k1, n1), (k2, n2) = sorted(rng.sample(sorted(set(declared)), 2))  # no cycle
            notify = ", notify: true" if rng.random() < 0.3 else ""
            lines.append(
                f"  - {{from: {{kind: {k1}, name: {n1}}}, to: {{kind: {k2}, name: {n2}}}{notify}}}\n"
            )
    return "".join(lines)


def edit(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True)
    op, at = rng.randrange(8), rng.randrange(len(lines) + 1)
    if len(lines) < 2:
        op = 0
    last = min(at, len(lines) - 1)
    if op == 0:
        lines.insert(at, rng.choice(LINES))
    elif op == 1:
        del lines[last]
    elif op == 2:
        lo, hi = sorted(rng.sample(range(len(lines) + 1), 2))
        del lines[lo:hi]
    elif op == 3:
        lo, hi = sorted(rng.sample(range(len(lines)), 2))
        lines[lo], lines[hi] = lines[hi], lines[lo]
    elif op == 4:
        lines[last] = rng.choice([" ", "  ", "\t"]) + lines[last]
    elif op == 5:
        lines[last] = lines[last][2:] if lines[last].startswith("  ") else lines[last]
    elif op == 6:
        lo, hi = sorted(rng.sample(range(len(lines) + 1), 2))
        chunk = lines[lo:hi]
        del lines[lo:hi]
        to = rng.randrange(len(lines) + 1)
        lines[to:to] = chunk
    else:
        joined = "".join(lines)
        where = rng.randrange(len(joined))
        if rng.random() < 0.5:
            return joined[:where] + rng.choice(INSERTS) + joined[where:]
        return joined[:where] + joined[where + rng.randint(1, 30) :]
    return "".join(lines)


def outcome(data: str, previous: Loaded | None) -> tuple[Any, Loaded | None]:
    try:
        if previous is None:
            loaded = incremental_parse(data, "g.yaml")
        else:
            loaded = reparse(data.encode(), "g.yaml", previous)
    except GraphFileError as err:
        return err.problems, None
    seen = (
        loaded.graph.name,
        {k: (type(r), r.params(), r.meta) for k, r in loaded.graph.vertices.items()},
        sorted(map(repr, loaded.graph.edges())),
        [r.params() for r in loaded.exported],
        loaded.collect,
        loaded.pending,
        loaded.warnings,
    )
    return seen, loaded


def check_since(loaded: Loaded) -> None:
    """Every resource that `since` does not name is the very object of its base graph."""
    if loaded.since is None:
        return
    base, changed = loaded.since
    for key in base.vertices.keys() | loaded.graph.vertices.keys():
        if key not in changed:
            assert base.vertices.get(key) is loaded.graph.vertices.get(key), key


@pytest.mark.parametrize("chunk", range(4))
def test_reparse_after_random_edits_is_parse(chunk: int) -> None:
    seeds = 2500 if fuzz.LONG else 250
    for seed in range(chunk * seeds, (chunk + 1) * seeds):
        rng = random.Random(seed)
        text = graph_file(rng)
        try:
            last = incremental_parse(text, "g.yaml")
        except GraphFileError:
            continue
        for _ in range(rng.randint(1, 8)):
            now = edit(rng, text)
            seen, loaded = outcome(now, last)
            assert seen == outcome(now, None)[0], (seed, text, now)
            if loaded is None:
                continue
            check_since(loaded)
            text, last = now, loaded


@pytest.mark.parametrize("chunk", range(2))
def test_reparse_of_an_older_version_is_parse(chunk: int) -> None:
    """Edits made from any version kept (the agent goes back to the graph before when the
    engine refuses a new one): each reparse()d from it is parse() of its text, though the
    versions share what they keep of their lists (Reuse.hold undoes and redoes the edits
    between); and such a reparse of a big list is incremental (`since`)."""
    seeds = 1000 if fuzz.LONG else 100
    for seed in range(chunk * seeds, (chunk + 1) * seeds):
        rng = random.Random(seed)
        text = graph_file(rng)
        try:
            versions = [(text, incremental_parse(text, "g.yaml"))]
        except GraphFileError:
            continue
        for _ in range(rng.randint(2, 10)):
            text, last = rng.choice(versions)
            now = edit(rng, text)
            seen, loaded = outcome(now, last)
            assert seen == outcome(now, None)[0], (seed, text, now)
            if loaded is not None:
                check_since(loaded)
                versions.append((now, loaded))


def test_edits_of_older_versions_of_a_big_list_stay_incremental() -> None:
    names = [f"f{i}" for i in range(300)]

    def render(content: dict[str, str]) -> str:
        lines = ["graph: g", "resources:", "  file:"]
        for name in names:
            lines += [f"    - name: {name}", f"      path: /tmp/x/{name}"]
            lines += [f"      content: {content[name]}"] if name in content else []
        return "\n".join(lines) + "\n"

    rng = random.Random(7)
    versions = [({}, incremental_parse(render({}), "g.yaml"))]
    for step in range(60):
        content, last = rng.choice(versions)
        now = {**content, rng.choice(names): f"c{step}"}
        loaded = reparse(render(now).encode(), "g.yaml", last)
        assert loaded.since is not None, step
        assert outcome(render(now), None)[0] == outcome(render(now), last)[0]
        versions.append((now, loaded))


# Bad edits of one item of a longer list (issue 16's "a bad edit refused at once"): what goes
# wrong inside an item, and what involves others (a name or path another has, an edge's end).
BAD = [
    "x",
    ":",
    ": x",
    " #",
    "'",
    '"',
    "[",
    "]",
    "{",
    "}",
    ",",
    "\t",
    "@",
    "`",
    "%",
    "!x ",
    "!!int ",
    "*a",
    "&a ",
    "- ",
    "\n",
    "\n      ",
    "\n     x",
    "\n       y: 1",
    "\n    - ",
    "\n  - x",
    "\x01",
    "|",
    ">",
    "?",
]
KEYS = ["pth: /x", "mode: [1]", "mode: 'abc'", "content: {a: 1}", "meta: 3", "meta: {retry: x}"]
KEYS += ["name: ''", "name: [1]", "path: relative", "owner: 5", "state: gone", "nope: 1"]


def big_file(rng: random.Random, count: int) -> str:
    lines = ["graph: g", "resources:"]
    for kind in ("file", "noop"):
        lines.append(f"  {kind}:" if rng.random() < 0.7 else f"  {kind}:\n")
        for i in range(count):
            lines.append(f"    - name: {kind[0]}{i}")
            if kind == "file":
                lines += [f"      path: /tmp/x/{i}", f"      content: c{i}"]
    lines.append("edges:")
    for i in range(0, count - 1, 3):
        lines.append(
            f"  - {{name: e{i}, from: {{kind: file, name: f{i}}}, to: {{kind: noop, name: n{i}}}}}"
        )
    return "\n".join(lines).replace("\n\n", "\n") + "\n"


def bad_edit(rng: random.Random, text: str, count: int) -> str:
    lines = text.splitlines(keepends=True)
    at = rng.randrange(3, len(lines))
    op = rng.randrange(6)
    line = lines[at]
    if op == 0:  # a character (or a few) inserted in a line
        where = rng.randrange(len(line))
        lines[at] = line[:where] + rng.choice(BAD) + line[where:]
    elif op == 1:  # a key added to an item
        indent = " " * (len(line) - len(line.lstrip(" ").lstrip("- ")))
        lines.insert(at + 1, f"{indent}{rng.choice(KEYS)}\n")
    elif op == 2:  # a name or path another has, an edge's end missing
        i, j = rng.randrange(count), rng.randrange(count)
        pairs = [(f"name: f{i}\n", f"name: f{j}\n"), (f"/tmp/x/{i}\n", f"/tmp/x/{j}\n")]
        pairs += [(f"name: n{i}}}}}", f"name: m{i}}}}}"), (f"name: f{i}\n", f"name: g{i}\n")]
        old, new = rng.choice(pairs)
        return text.replace(old, new, 1)
    elif op == 3:  # a line cut
        del lines[at]
    elif op == 4:  # a line's last characters cut
        lines[at] = line[: rng.randrange(len(line))] + "\n"
    else:  # a line indented or unindented
        lines[at] = rng.choice([" ", "  ", "\t"]) + line if rng.random() < 0.5 else line[1:]
    return "".join(lines)


def test_a_bad_edit_of_a_longer_list_is_refused_as_parse_refuses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each edit reparse()d from a graph the engine would take (`accepted`) gives exactly what
    parse() gives, and most of the refusals come from the edited items alone (no full parse)."""
    from mgmt import yamlreparse

    whole = 0
    original = yamlreparse.incremental_parse

    def counting(*args: Any, **kwargs: Any) -> Loaded:
        nonlocal whole
        whole += 1
        return original(*args, **kwargs)

    refused = alone = 0
    seeds = 4000 if fuzz.LONG else 600
    for seed in range(seeds):
        rng = random.Random(seed)
        count = rng.randint(6, 20)
        text = big_file(rng, count)
        last = incremental_parse(text, "g.yaml")
        last.accepted = True
        now = bad_edit(rng, text, count)
        expected = outcome(now, None)[0]
        monkeypatch.setattr(yamlreparse, "incremental_parse", counting)
        whole = 0
        try:
            seen = outcome(now, last)[0]
        finally:
            monkeypatch.setattr(yamlreparse, "incremental_parse", original)
        assert seen == expected, (seed, now)
        if isinstance(expected, list):
            refused += 1
            alone += whole == 0
    assert refused > seeds // 3
    assert alone > refused // 2, (alone, refused)
