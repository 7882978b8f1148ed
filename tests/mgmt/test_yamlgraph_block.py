"""The block-style reader of graph files (mgmt.yamlgraph._block_doc): for every text it reads,
the same data, lines and raw texts as libyaml's nodes give (`_plain`); any other text (and
every bad one) it leaves to libyaml, whose problems are told as before."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.constructor import SafeConstructor

from mgmt.yamlgraph import (
    GraphFileError,
    LocDict,
    LocList,
    _block_doc,
    _compose,
    _plain,
    parse,
)


def _shape(value: Any) -> Any:
    """Everything of a parsed value that the parser reads: types, lines, raw texts, order."""
    if isinstance(value, LocDict):
        items = [(k, _shape(v)) for k, v in value.items()]
        return ("map", value.line, dict(value.lines), dict(value.raw), items)
    if isinstance(value, LocList):
        return ("seq", value.line, list(value.lines), [_shape(v) for v in value])
    return (type(value).__name__, value)


def _libyaml(data: bytes) -> Any:
    node = _compose(data)
    return None if node is None else _plain(node, SafeConstructor(), "")


def _same_or_left(text: str) -> bool:
    """The block reader gives what libyaml's parse gives, or leaves the text to it; whether
    it read it."""
    data = text.encode()
    block = _block_doc(data)
    if block is None:
        return False
    assert _shape(block) == _shape(_libyaml(data)), text
    return True


READ = [
    # the shape bench/common.py's files_graph writes
    'graph: g\nresources:\n  file:\n    - name: f0\n      path: /tmp/f0\n      content: "n 0\\n"\n',
    # a list at its key's indentation, comments and blank lines, the next kind after it
    "graph: g # c\n\nresources:\n  file:\n  - name: a\n    # between\n    path: /tmp/a\n"
    "  noop:\n  - name: b\n\n# end\n",
    # nested mappings and lists, values of other types kept with their source text
    "graph: g\nresources:\n  print:\n    - name: p\n      msg: 0644\n      meta:\n"
    "        retry: 2\n        sema:\n          - 'lock:2'\n        noop: yes\n",
    "graph: g\nresources:\n  file:\n    - name: a\n      mode: ~\n      owner:\n"
    "      content: 'it''s # not a comment'\n      x: a#b [c] {d}, e\n",
    'graph: "g"\nresources:\n  file:\n    -   name: x\n        content: "a\\\\nb\\"\\t"\n',
    # an empty flow mapping or list as a key's whole value: an empty graph's
    "graph: g\nresources: {}\nedges: []\n",
]

LEFT = [
    "graph: g\nresources: {file: [{name: a}]}\n",  # flow
    "graph: g\nbase: &b {x: 1}\n",  # an anchor
    "graph: g\ncontent: |\n  x\n",  # a block scalar
    "graph: g\nname: a\n  b\n",  # a plain scalar over two lines
    "graph: g\ngraph: h\n",  # a duplicate key (libyaml's parse tells it)
    "graph: g\n  x: 1\n",  # a bad indentation
    "graph: g\r\n",  # a CR
    "graph: \u00e9\n",  # not ASCII
    "graph: g\nyes: 1\n",  # a key that is not a string
    "---\ngraph: g\n",  # a document marker
    "graph: g\nx: a: b\n",  # a mapping value in a value
    'graph: "g\\x41"\n',  # an escape it does not read
    "graph: g\nresources:\n  file:\n    -\n      name: a\n",  # an item's value on the next line
    "graph: g\nl:\n  - - a\n",  # a list in a list
    "graph: g\nt: 2001-13-45\n",  # a value libyaml's constructor refuses
    "- a\n",  # not a mapping
]


@pytest.mark.parametrize("text", READ)
def test_the_block_reader_reads_the_plain_block_style_as_libyaml_does(text: str) -> None:
    assert _same_or_left(text)


@pytest.mark.parametrize("text", LEFT)
def test_the_block_reader_leaves_every_other_text_to_libyaml(text: str) -> None:
    assert _block_doc(text.encode()) is None


def test_a_bad_block_graph_is_told_at_its_line_and_key() -> None:
    """A problem of a resource read by the block reader: the same one line as before."""
    text = textwrap.dedent(
        """\
        graph: g
        resources:
          file:
            - name: a
              path: /tmp/a
              contnet: "x"
            - name: b
              path: relative
        """
    )
    assert _block_doc(text.encode()) is not None
    with pytest.raises(GraphFileError) as err:
        parse(text, "g.yaml")
    assert err.value.problems == [
        "g.yaml:6: file[a]: contnet: unknown key (did you mean 'content'?)",
        "g.yaml:8: file[b]: path: expected an absolute path, got 'relative'",
    ]


def test_a_duplicate_key_is_told_by_libyaml_at_its_line() -> None:
    text = "graph: g\nresources:\n  file:\n    - name: a\n      name: b\n"
    with pytest.raises(GraphFileError) as err:
        parse(text, "g.yaml")
    assert err.value.problems == ["g.yaml:5: file[a].name: duplicate key"]


# Texts made of the pieces that matter to YAML's block style: keys (some not strings to
# YAML), scalars of every kind in every quoting, comments, indentations, lists at their key's
# column; then, often, one character changed, added or removed anywhere.
_KEYS = ["name", "path", "a:b", "x.y", "_k", "yes", "null", "on", "N", "k-1", "content"]
_SCALARS = [
    "a", "a b", "a#b", "a # c", "/tmp/x", "0644", "1", "-1", "0x1F", "1.5", ".inf", "true",
    "no", "~", "null", "", "2001-12-14", "a: b", "a:", "a:b", "[x]", "{x}", "x, y", "'q'",
    '"q"', "it's", "*a", "&a", "!t", "|", ">", "%", "@", "`", "-", "- a", "? a", "a  ",
    '"a\\nb"', '"a\\\\"', '"\\t"', '"\\x41"', '"a" # c', "'a''b'", "'a' x", '"a"b', "#",
    "{}", "[]", "{} # c", "[ ]", "{}x",
]  # fmt: skip
_NOISE = ["\n", " ", "  ", "-", ":", "#", "\t", "'", '"', "\\", "&", "*", "{", "[", "\r", "é"]


@st.composite
def _block_texts(draw: st.DrawFn) -> str:
    lines: list[str] = []

    def value(column: int, depth: int) -> None:
        kind = draw(
            st.sampled_from(["scalar", "map", "seq", "inline"] if depth < 3 else ["scalar"])
        )
        if kind == "map":
            mapping(column + draw(st.sampled_from([1, 2, 4])), depth + 1)
        elif kind in ("seq", "inline"):
            at = column if kind == "inline" else column + draw(st.sampled_from([1, 2]))
            for _ in range(draw(st.integers(1, 3))):
                dash = "-" + " " * draw(st.integers(1, 3))
                if draw(st.booleans()) and depth < 3:
                    first = len(lines)
                    mapping(at + len(dash), depth + 1)
                    lines[first] = " " * at + dash + lines[first].lstrip(" ")
                else:
                    lines.append(" " * at + dash + draw(st.sampled_from(_SCALARS)))
        if draw(st.integers(0, 5)) == 0:
            lines.append(" " * draw(st.integers(0, 6)) + draw(st.sampled_from(["", "# c"])))

    def mapping(column: int, depth: int) -> None:
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(_KEYS))
            if draw(st.booleans()):
                lines.append(" " * column + f"{key}: {draw(st.sampled_from(_SCALARS))}")
            else:
                lines.append(" " * column + f"{key}:" + draw(st.sampled_from(["", " # c", " "])))
                value(column, depth)

    mapping(0, 0)
    text = "\n".join(lines) + draw(st.sampled_from(["\n", ""]))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["add", "cut", "swap"]))
        noise = draw(st.sampled_from(_NOISE))
        cut = 1 if how != "add" else 0
        text = text[:at] + (noise if how != "cut" else "") + text[at + cut :]
    return text


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_block_texts())
def test_the_block_reader_gives_what_libyaml_gives_or_nothing(text: str) -> None:
    """Whatever the text, the block reader's data is libyaml's (a text libyaml refuses, it
    never reads)."""
    data = text.encode()
    block = _block_doc(data)
    if block is None:
        return
    try:
        expected = _libyaml(data)
    except Exception as err:  # any refusal: the reader must have left it
        pytest.fail(f"read a text libyaml refuses ({err!r}): {text!r}")
    assert _shape(block) == _shape(expected), text
