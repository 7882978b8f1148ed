"""Fuzzing graph files: whatever the bytes, `mgmt check` says ok or gives one-line errors.

The invariant (tests/fuzz/__init__.py): load_file (what `mgmt check` runs, called in-process
for speed) returns, or raises GraphFileError whose every problem is one line starting with
`FILE:LINE: `; never another exception, never more than a few seconds, nothing written.
Inputs: structure-level graphs (real kinds and params with values of wrong types, huge and
unicode strings, control characters, anchors and aliases, deep nesting) and byte-level
mutations of examples/*.yaml. A few cases also go through the real `mgmt check` subprocess.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

import resources
from engine.meta import Meta
from engine.params import field_names
from engine.resource import lookup
from mgmt.yamlgraph import GraphFileError, load_file
from tests import fuzz
from tests.e2e.helpers import ROOT, run_mgmt
from tests.fuzz import fuzz_settings
from tests.fuzz.hostile import BIG, LAUGHS

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SHIPPED = sorted(resources.KINDS)  # not kinds(): other tests register kinds of their own
HANG_GUARD = 10.0  # seconds one case may take before it counts as a hang (cases take ms)
# 10,000 cases per target take minutes: the suite's per-test timeout only bounds CI runs.
pytestmark = pytest.mark.timeout(0 if fuzz.LONG else 120)


# The invariant ----------------------------------------------------------------------------


@contextlib.contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging when the block takes longer than `seconds`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"one case took more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # pytest-timeout's, if any
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def tree(root: Path) -> list[tuple[str, int]]:
    """Every path under `root` with its size: what "nothing written" compares."""
    return sorted(
        (str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*") if p != root
    )


def check_in_process(data: bytes) -> list[str]:
    """load_file on `data` in a fresh directory, from another empty one as the cwd: the
    problems found ([] for a good graph). Asserts the invariant."""
    with tempfile.TemporaryDirectory(prefix="mgmt-fuzz-") as tmp:
        inputs, cwd = Path(tmp, "in"), Path(tmp, "cwd")
        inputs.mkdir()
        cwd.mkdir()
        path = inputs / "graph.yaml"
        path.write_bytes(data)
        before = tree(Path(tmp))
        previous = os.getcwd()
        os.chdir(cwd)
        try:
            with hang_guard(HANG_GUARD):
                load_file(path)
            problems: list[str] = []
        except GraphFileError as err:
            problems = err.problems
        finally:
            os.chdir(previous)
        assert tree(Path(tmp)) == before, "parsing wrote something"
    pattern = re.compile(re.escape(str(path)) + r":\d+: \S|and \d+ more problems$")
    assert problems == [] or all(pattern.match(p) for p in problems), problems
    assert all(len(p.splitlines()) == 1 for p in problems), problems
    return [p.replace(str(path), "GRAPH") for p in problems]


# Structure-level graphs -------------------------------------------------------------------

ODD_STRINGS = [
    "",
    "²",
    "٣",
    "a:²",
    "x:1",
    "x:0",
    "0644",
    "-1",
    "/tmp/mgmt/x",
    "../../etc/passwd",
    "@@x",
    "inf",
    ".nan",
    "1e309",
    BIG,
    "2001-13-45",
    "yes",
    "~",
    "*",
    "&a",
    "!!binary",
    "\x00",
    "\x01\x7f",
    "a\nb",
    "\r",
    "\u2028",
    "\ufeff",
    "\x85",
    "\t",
    "é" * 3,
    "\U0001f600",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=1, max_value=4000).map(lambda n: 10**n),  # up to 4,001 digits
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(ODD_STRINGS),
    st.integers(min_value=1, max_value=10_000).map(lambda n: "x" * n),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# sampled_from leans towards its first item: these say "usually" and "now and then".
usually = st.sampled_from([True] * 9 + [False])
rarely = st.sampled_from([False] * 9 + [True])


def param_keys(kind: str) -> st.SearchStrategy[str]:
    """Mostly the kind's real params (so values reach its validation), now and then a typo."""
    cls = lookup(kind)
    params = [n for n in field_names(cls) if n not in ("name", "meta")] if cls else []
    typo = st.text(max_size=10)
    return st.one_of(st.sampled_from(params), typo) if params else typo


@st.composite
def resource(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A resource of `kind`: some of its params, a typo or two, values of any type."""
    out: dict[str, Any] = {}
    if draw(usually):
        out["name"] = draw(st.text(min_size=1, max_size=12) | st.sampled_from(ODD_STRINGS))
    elif draw(usually):
        out["name"] = draw(values)
    for key in draw(st.lists(param_keys(kind), max_size=5)):
        out[key] = draw(values)
    if draw(st.booleans()):
        meta_keys = st.sampled_from(field_names(Meta)) | st.text(max_size=8)
        out["meta"] = draw(
            st.dictionaries(meta_keys, values, max_size=4) if draw(usually) else values
        )
    return out


@st.composite
def graph_docs(draw: st.DrawFn) -> Any:
    """A graph file's data: valid-ish, with wrong types, shared values and deep nesting."""
    kind_names = st.sampled_from(SHIPPED) | st.sampled_from(["nope", "", "File", "file:x"])
    resources: dict[str, Any] = {}
    for kind in draw(st.lists(kind_names, max_size=4, unique=True)):
        resources[kind] = draw(st.lists(resource(kind), max_size=4) if draw(usually) else values)
    doc: dict[str, Any] = {}
    if draw(usually):
        doc["graph"] = draw(st.text(min_size=1, max_size=10) if draw(usually) else values)
    doc["resources"] = resources if draw(usually) else draw(values)
    placed = [(k, r) for k, rs in resources.items() if isinstance(rs, list) for r in rs]
    placed = [(k, r) for k, r in placed if isinstance(r, dict)]
    vertex = (
        st.sampled_from(placed).map(lambda kr: {"kind": kr[0], "name": kr[1].get("name")})
        if placed
        else values
    )
    edge = st.fixed_dictionaries(
        {"from": vertex if draw(usually) else values, "to": vertex if draw(usually) else values},
        optional={
            "name": values,
            "notify": st.booleans() | values,
            "send": st.sampled_from(["stdout", "content", "nope"]) | values,
            "recv": st.sampled_from(["content", "msg", "nope"]) | values,
        },
    )
    if draw(st.booleans()):
        doc["edges"] = draw(st.lists(edge, max_size=4) if draw(usually) else values)
    if draw(rarely):
        collect = st.fixed_dictionaries({"kind": kind_names, "pattern": values})
        doc["collect"] = draw(st.lists(collect, max_size=2) if draw(usually) else values)
    if draw(rarely):
        doc[draw(st.sampled_from(["comment", "remote", "hostname", "x"]))] = draw(values)
    # Values placed twice become an anchor and aliases (a list holding itself: a recursive
    # alias); a comment nested 1-200 deep.
    shared = draw(
        st.lists(
            st.lists(values, max_size=3) | st.dictionaries(st.text(max_size=4), values, max_size=3),
            max_size=3,
        )
    )
    for value in shared:
        for _ in range(draw(st.integers(1, 4))):
            if not placed or draw(rarely):
                doc["comment"] = value
                continue
            kind, res = draw(st.sampled_from(placed))
            if isinstance(res.get("meta"), dict) and draw(st.booleans()):
                res["meta"][draw(st.sampled_from(field_names(Meta)))] = value
            else:
                res[draw(param_keys(kind))] = value
    if draw(rarely):
        loop: list[Any] = []
        loop.append(loop)
        doc["comment"] = loop
    if draw(rarely):
        doc["comment"] = nested(draw(st.integers(1, 200)))
    return doc


def dump(doc: Any, style: bool | None, unicode: bool) -> bytes:
    text = yaml.dump(
        doc,
        Dumper=yaml.SafeDumper,
        default_flow_style=style,
        allow_unicode=unicode,
        sort_keys=False,
        width=80,
    )
    return text.encode()


@fuzz_settings()
@given(graph_docs(), st.sampled_from([None, True, False]), st.booleans())
def test_structured_graphs(doc: Any, style: bool | None, unicode: bool) -> None:
    try:
        data = dump(doc, style, unicode)
    except (yaml.YAMLError, RecursionError, ValueError):  # the emitter's own limits
        return
    check_in_process(data)


# Byte-level mutations of the examples -----------------------------------------------------

# Structure first: sampled_from leans towards the front of its list.
TOKENS = [
    b"&a ",
    b"*a",
    b": ",
    b"- ",
    b"\n  ",
    b"<<: *a\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"? ",
    b"'",
    b'"',
    b"#",
    b"|",
    b">",
    b"~",
    b"!!binary ",
    b"!!python/object:os.system ",
    b"!!int ",
    b"!!float ",
    b"!!str ",
    b"!foo ",
    b"%YAML 1.1\n",
    b"---\n",
    b"...\n",
    b'"\\x01"',
    b"0x" + b"f" * 4400,
    b"1" * 5000,
    BIG.encode(),
    b"1:2:3:4:5:6",
    b"2001-13-45",
    b".nan",
    b".inf",
    b"-.inf",
    b"1.0e+400",
    "²".encode(),
    "٣".encode(),
    b"a:\xc2\xb2",
    b"[" * 100,
    LAUGHS.encode(),
    b"\t",
    b"\r",
    b"\xc2\x85",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\xff",
    b"\xc3",
]


@st.composite
def mutated_examples(draw: st.DrawFn) -> bytes:
    """An example graph with 1-8 edits: tokens inserted, lines swapped, ranges deleted or
    repeated, bytes changed."""
    data = bytearray(draw(st.sampled_from(EXAMPLES)).read_bytes())
    # Weighted: random bytes mostly stop at the reader (not UTF-8), so they come rarely.
    ops = st.sampled_from(["token"] * 4 + ["duplicate", "lines", "delete"] * 2 + ["insert", "set"])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(ops)
        if op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 256))] * draw(st.integers(1, 20))
        elif op == "lines":
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@fuzz_settings()
@given(mutated_examples())
@example(LAUGHS.encode())
@example(b"graph: g\na: &a [*a]\n")
@example(b"graph: g\nx: " + b"[" * 5000 + b"]" * 5000)
@example(b"graph: g\nx: 0x" + b"f" * 5000)
@example(b"graph: g\n\x00: \xff\xfe")
@example("graph: g\nx: y\n".encode("utf-16"))
def test_mutated_examples(data: bytes) -> None:
    check_in_process(data)


def test_the_examples_themselves_pass() -> None:
    for graph in EXAMPLES:
        assert check_in_process(graph.read_bytes()) == [], graph


# Through the real command -----------------------------------------------------------------


@settings(fuzz_settings(), max_examples=100 if fuzz.LONG else 6)
@given(mutated_examples() | graph_docs().map(lambda doc: dump(doc, None, True)))
@example(b"graph: g\nremote: null\nresources: {}\n")  # a warning, then ok (hypothesis found)
def test_mgmt_check_subprocess(data: bytes) -> None:
    """`mgmt check`: exit 0 with one `FILE: ok` line, or 2 with the problems load_file found,
    one line each; never a traceback. Warnings (an old mgmt key: `warning: FILE:LINE: ...`)
    may come before, one line each."""
    problems = check_in_process(data)
    with tempfile.TemporaryDirectory(prefix="mgmt-fuzz-") as tmp:
        path = Path(tmp, "graph.yaml")
        path.write_bytes(data)
        code, out = run_mgmt(["check", str(path)], timeout=60)  # a hang guard
    assert "Traceback" not in out, out
    lines = [line.replace(str(path), "GRAPH") for line in out.splitlines()]
    warnings = [line for line in lines if line.startswith("warning: GRAPH:")]
    lines = [line for line in lines if line not in warnings]
    if problems:  # the same lines (their texts may differ: other tests register kinds)
        assert code == 2, out
        assert [p.split(": ")[0] for p in lines] == [p.split(": ")[0] for p in problems], out
    else:
        assert (code, lines) == (0, ["GRAPH: ok"]), out
