"""The YAML graph front-end (mgmt's graph file format), with file:line in every error.

    graph: mygraph
    resources: {file: [{name: hello, path: /tmp/mgmt/hello, content: "hi\\n"}]}
    edges: [{name: e1, from: {kind: file, name: hello}, to: {kind: exec, name: x}, notify: true}]
    collect: [{kind: file, pattern: /tmp/mgmt/shared/}]

Everything is checked before anything runs: YAML syntax, kinds, keys (with a close-match hint),
types, each kind's validate(), edges, duplicates and cycles. Every problem found is reported, one
line each. Keys mgmt once had and ignores today only warn.
"""

from __future__ import annotations

import errno
import functools
import importlib
import itertools
import logging
import operator
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import collector
from engine.autoedge import both_manage, both_write, duplicates, overwritten
from engine.errors import GraphError, MgmtError, ValidationError
from engine.graph import Change, Edge, Graph, Key, both, cycle_text, derive, fmt_key, key_of
from engine.limits import max_resources, too_many
from engine.meta import Meta, check_name
from engine.params import build, close_match, field_names, show
from engine.resource import (
    Resource,
    kinds,
    lookup,
    refused_together,
    send_mismatch,
    unsupported,
    validates_together,
)
from mgmt.config import DEFAULT_MAX_GRAPH_SIZE
from mgmt.lazyimport import pattern_source, patterns_on_use
from mgmt.listing import capped

with patterns_on_use("yaml"):  # its reader's and resolver's, mostly unused: ~7 ms of a start
    import yaml

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.engine import Since
    from mgmt.collectscope import Collect

log = logging.getLogger("main")

TOP_KEYS = ["graph", "comment", "resources", "edges", "collect"]
EDGE_KEYS = ["name", "from", "to", "notify", "send", "recv"]
VERTEX_KEYS = ["kind", "name"]
COLLECT_KEYS = ["kind", "pattern"]
# Keys mgmt once had and ignores today: a warning, not an error. "" = top level, "*" = any kind.
LEGACY: dict[str, set[str]] = {
    "": {"remote", "hostname"},
    "*": {"pollint"},
    "exec": {"state"},
}
EXPORT_PREFIX = "@@"


@functools.cache
def _legacy_keys(kind: str) -> frozenset[str]:
    """The old keys of a resource of `kind` (LEGACY's "*" and its own)."""
    return frozenset(LEGACY["*"] | LEGACY.get(kind, set()))


# The meta of a resource given none (one object: a Meta is frozen).
_NO_META = Meta()
# Keys _resource() builds itself.
_GIVEN = frozenset({"name", "meta"})

# Input limits (docs/graph-format.md#limits): each bounds the time and memory a graph file can
# cost, however hostile, and each is a one-line error naming the file and line.
MAX_SIZE = DEFAULT_MAX_GRAPH_SIZE  # bytes in the file; --max-graph-size overrides it
MAX_ALIAS_VALUES = 100_000  # values aliases add, an aliased value counted at each use
MAX_DEPTH = 64  # lists and mappings nested in each other
MAX_INT_DIGITS = 4_300  # characters of an integer (Python's own int() limit, for every base)
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


# The safe loader's implicit resolvers by a plain scalar's first character ("" for an empty
# one), those for any character (None) appended, as its resolve() tries them.
_IMPLICIT: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: tuple(found) + tuple(_BASE_LOADER.yaml_implicit_resolvers.get(None, ()))
    for first, found in _BASE_LOADER.yaml_implicit_resolvers.items()
    if first is not None
}
_ANY_FIRST: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    _BASE_LOADER.yaml_implicit_resolvers.get(None, ())
)
# The same with each pattern's bound match(), made on first use per character (the patterns
# are compiled on first use too, mgmt.lazyimport; a read of a pattern's method costs a call).
_MATCHERS: dict[str, tuple[tuple[str, Callable[[str], object]], ...]] = {}


def _matchers(first: str) -> tuple[tuple[str, Callable[[str], object]], ...]:
    found = _MATCHERS.get(first)
    if found is None:
        pairs = _IMPLICIT.get(first, _ANY_FIRST)
        found = _MATCHERS[first] = tuple(
            (tag, _words_in(regexp) or regexp.match) for tag, regexp in pairs
        )
    return found


def _words_in(regexp: Any) -> Callable[[str], object] | None:
    """For a pattern that lists words, `^(?:w1|w2|...)$` (PyYAML's bool and null resolvers),
    a set lookup that answers as its match() does (`$` also matches before a last line break),
    without compiling it: ~0.25 ms of every start (a graph's `name` keys start with n). None
    for any other pattern."""
    text, flags = pattern_source(regexp)
    if flags & (re.IGNORECASE | re.MULTILINE):
        return None
    if flags & re.VERBOSE:
        text = "".join(text.split())
    if not (text.startswith("^(?:") and text.endswith(")$")):
        return None
    words = text[4:-2].split("|")
    if not all(word.isalnum() or word in ("", "~") for word in words):
        return None
    return frozenset([*words, *(word + "\n" for word in words)]).__contains__


class _Loader(_BASE_LOADER):  # type: ignore[misc]
    """The safe loader with its resolver at one call (there are no path resolvers): ~70,000
    calls for a 10,000-resource graph, most of them plain scalars that no implicit resolver
    matches by their first character (`name`, `/etc/motd`)."""

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:  # a plain scalar: 1, true, null... by the implicit resolvers
                first = value[:1]
                found = _MATCHERS.get(first)
                for tag, match in _matchers(first) if found is None else found:
                    if match(value):
                        return tag
            return _STR_TAG
        return _MAP_TAG if kind is yaml.MappingNode else _SEQ_TAG

    # No path resolvers: the composer's two calls per node do nothing, in C (a builtin is
    # not bound as a method: called with the composer's arguments alone).
    descend_resolver = operator.is_
    ascend_resolver = tuple


_LOADER = _Loader


class GraphFileError(MgmtError):
    """One or more problems in a graph file; each is one line, `file:line: where: what`, at
    most NAMED of them then how many more there were (mgmt.listing.capped)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [one_line(p) for p in capped(problems, "problems")]
        super().__init__("\n".join(self.problems))


_BREAKS = {c: repr(chr(c))[1:-1] for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029] if c != 9}


def one_line(text: str) -> str:
    """`text` with every character that could end a line or move the cursor escaped."""
    return text.translate(_BREAKS)


class LocDict(dict[str, Any]):
    """A mapping that remembers the line of each key and the source text of plain scalars."""

    line: int
    lines: dict[str, int]
    raw: dict[str, str]


class LocList(list[Any]):
    """A sequence that remembers the line of each item."""

    line: int
    lines: list[int]


@dataclass
class Loaded:
    """A parsed, validated graph file."""

    graph: Graph
    exported: list[Resource] = field(default_factory=list)
    collect: list[Collect] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # sha256 of the text parsed (to tell a real edit from a touch).
    digest: str = ""
    # The front-end needs the cluster, whatever the graph holds (a program importing "world").
    cluster: bool = False
    # Edges to or from resources that will be collected: added once those are in the graph.
    pending: list[tuple[Key, Key, Edge]] = field(default_factory=list)
    # What a parse of the next version of the file may reuse (parse(incremental=True)).
    reuse: Reuse | None = None
    # Set by reparse(): this graph is that graph with only these resources replaced.
    since: Since | None = None
    # What the graph is of, when it is not the one file the agent was given ("deploy 30"):
    # a refusal of the next graph says that this one's still runs.
    origin: str = ""
    # Where the front-end declared each resource (mcl: `file:line:col`), by key, when it knows:
    # read only when the engine refuses the graph (check.duplicate_problems).
    declared: Callable[[], dict[Key, str]] | None = None


def load_file(path: Path, max_size: int = MAX_SIZE, incremental: bool = False) -> Loaded:
    """Read and parse a graph file of at most `max_size` bytes; GraphFileError on any problem."""
    data = read_limited(path, max_size)
    loaded = parse(data, str(path), incremental)
    loaded.digest = digest(data)
    return loaded


def digest(data: bytes) -> str:
    """What tells a real edit of a graph file from a touch: the sha256 of its bytes."""
    hexdigest: str = _sha256()(data).hexdigest()
    return hexdigest


@functools.cache
def _sha256() -> Any:
    """The interpreter's own sha256 (the same digests): hashlib's loads OpenSSL first, ~3 ms of
    every start measured (`-X importtime`), for a small file's hash. hashlib's if it has none."""
    for name in ("_sha2", "_sha256"):  # Python 3.12's name, 3.11's
        try:
            return importlib.import_module(name).sha256
        except ImportError:
            pass
    import hashlib

    return hashlib.sha256


def read_regular(path: Path, max_size: int | None = None) -> bytes:
    """The bytes of a regular file (its first `max_size` + 1 at most), through its symlinks;
    OSError for anything else ("a directory", "not a regular file"): a FIFO or a device is
    opened without blocking and never read (a FIFO's open waited for a writer forever)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # before fdopen: it raises IsADirectoryError itself
            raise IsADirectoryError(errno.EISDIR, "a directory")
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read() if max_size is None else file.read(max(max_size, 0) + 1)
    finally:
        os.close(fd)


def read_limited(path: Path, max_size: int = MAX_SIZE) -> bytes:
    """The bytes of a regular file of at most `max_size` bytes (never blocks on a FIFO)."""
    try:
        data = read_regular(path, max_size)
    except OSError as err:
        raise GraphFileError([f"{path}: cannot read: {err.strerror}"]) from err
    if len(data) > max_size:
        raise GraphFileError(
            [
                f"{path}:1: the graph file is larger than {max_size:,} bytes "
                "(--max-graph-size, MGMT_MAX_GRAPH_SIZE)"
            ]
        )
    return data


def parse(
    text: str | bytes,
    filename: str = "<graph>",
    incremental: bool = False,
    duplicates: bool = False,
) -> Loaded:
    """Parse graph-file text (bytes: UTF-8, or UTF-16 with a BOM); GraphFileError lists every
    problem found. `incremental` keeps what reparse() needs in `Loaded.reuse`. `duplicates`:
    also two resources of one kind managing one thing, each at its line (`mgmt check`, and a
    run whose graph the engine refused so: `locate_refusal`), which the engine refuses anyway
    (without lines): not on every run's path (~1% of a 1,000-file run's instructions)."""
    with collector.paused():  # many objects, no cycles: half the time went to full passes
        return _Parser(filename, incremental, duplicates).parse(text)


def located(loaded: Loaded, filename: str) -> list[str]:
    """locate_refusal's lines from where the parse of `loaded` found each resource (its
    `reuse`): no second parse (~4 s at 20,000 files, under load); [] without it."""
    reuse = loaded.reuse
    if reuse is None:
        return []
    first_lines: dict[Key, int] = {}
    for item, line in zip(reuse.items, reuse.lines, strict=True):
        first_lines.setdefault(item.key, line + 1)
    return [
        f"{filename}:{line}: {where}: {text}"
        for line, where, text in _duplicate_problems(loaded.graph, first_lines)
    ]


def _duplicate_problems(
    graph: Graph, first_lines: dict[Key, int]
) -> Iterator[tuple[int, str, str]]:
    """Two resources managing one thing (the engine's refusal), each as (line, where, text)."""
    for uid, owner, key in duplicates(graph):
        also = f" (also declared at line {first_lines[owner]})"
        yield first_lines[key], fmt_key(key), both_manage(uid, owner, key) + also
    for path, writer, editor in overwritten(graph):  # as the engine's verify
        also = f" (declared at line {first_lines[key_of(writer)]})"
        yield first_lines[key_of(editor)], str(editor), both_write(path, writer, editor) + also


def locate_refusal(path: Path, max_size: int) -> list[str]:
    """The problems, at their lines, of a graph file whose graph the engine refused (two
    resources managing one thing): [] if a parse with `duplicates` finds none."""
    try:
        parse(read_limited(path, max_size), str(path), duplicates=True)
    except GraphFileError as err:
        return list(err.problems)
    return []


class _NodeProblem(Exception):
    """A problem found while turning YAML nodes into data: its line, the value it is about
    (`where`: `resources.file[0].mode`, "" for none) and what is wrong."""

    def __init__(self, line: int, message: str, where: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.where = where

    def text(self, root: yaml.Node | None) -> str:
        """The problem as reported: the value named as other problems name it (`_by_name`),
        a path of more than _MAX_WHERE characters (a deep nesting's) cut short."""
        if not self.where:
            return self.message
        where = _by_name(root, self.where)
        if len(where) > _MAX_WHERE:
            where = where[: _MAX_WHERE - 3] + "..."
        return f"{where}: {self.message}"


_MAX_WHERE = 120


_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _compose(data: bytes) -> yaml.Node | None:
    """The YAML node tree of `data` (aliases are shared nodes, not copies, at this point)."""
    return yaml.compose(data, Loader=_LOADER)


def _yaml_problem(err: yaml.YAMLError, data: bytes) -> tuple[int, str]:
    """(line, one-line message) for any error PyYAML (or libyaml) raises."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        what = err.problem or "invalid YAML"
        if err.context and err.context_mark and err.context_mark.line + 1 != line:
            what += f" ({err.context} at line {err.context_mark.line + 1})"
        elif err.context:
            what += f" ({err.context})"
        return line, f"YAML syntax error: {what}"
    if isinstance(err, yaml.reader.ReaderError):  # a control character, or bad bytes
        line = _line_at(data, err.position)
        if "control" in str(err.reason) and isinstance(err.character, int):
            return line, f"YAML: control character U+{err.character:04X} is not allowed"
        return line, f"YAML: not UTF-8 (or UTF-16 with a BOM): {err.reason}"
    return 1, f"YAML error: {err}"


def _line_at(data: bytes, position: int) -> int:
    """The line of a byte offset (libyaml reports offsets in the input's bytes)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        head = data[:position].decode("utf-16", errors="replace")
        return head.count("\n") + 1
    return data[:position].count(b"\n") + 1


def _alias_line(data: bytes, index: int) -> int:
    """The line of the index-th alias (1-based, in document order) of `data`."""
    seen = 0
    for event in yaml.parse(data, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent) and event.start_mark is not None:
            seen += 1
            if seen == index:
                return int(event.start_mark.line) + 1
    return 1


# Every anchor is written "&name": a text without this byte has no alias (UTF-8 or UTF-16).
_ANCHOR = b"&"


def _check_shape(root: yaml.Node, data: bytes, depth: int = 0) -> int:
    """Bound nesting depth and alias expansion before anything is expanded; _NodeProblem.
    Returns how many aliases there are; `depth` is the nesting around `root`.

    One pass over the composed nodes, in document order, linear in their number however
    many times aliases would copy them: each node's expanded size and height are kept, so an
    alias adds its target's size at once (the "billion laughs" never gets built).
    """
    sizes: dict[int, int] = {}  # id(node) -> values it expands to (once complete)
    heights: dict[int, int] = {}  # id(node) -> levels of lists/mappings it expands to
    aliases = aliased = 0  # alias uses seen so far, and the values they added

    def alias(node: yaml.Node, level: int, frame: list[Any]) -> None:
        nonlocal aliases, aliased
        aliases += 1
        if id(node) not in sizes:  # still open: an alias inside its own anchor
            raise _NodeProblem(
                _alias_line(data, aliases), "YAML: a recursive alias", _where_in(stack)
            )
        aliased += sizes[id(node)]
        if aliased > MAX_ALIAS_VALUES:
            raise _NodeProblem(
                _alias_line(data, aliases),
                f"YAML: aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                "(each use counts the whole aliased value)",
                _where_in(stack),
            )
        if level + heights[id(node)] > MAX_DEPTH:
            raise _NodeProblem(
                _alias_line(data, aliases),
                f"YAML: nests deeper than {MAX_DEPTH} levels",
                _where_in(stack),
            )
        frame[2] += sizes[id(node)]
        frame[3] = max(frame[3], heights[id(node)])

    seen: set[int] = set()
    # Frames: [node, children iterator, expanded size so far, tallest child so far, children
    # taken so far (to name the value a problem is about)].
    top: list[Any] = [None, iter([root]), 0, 0, 0]
    stack = [top]
    while stack:
        frame = stack[-1]
        child = next(frame[1], None)
        if child is None:
            stack.pop()
            node = frame[0]
            if node is not None:
                sizes[id(node)], heights[id(node)] = frame[2] + 1, frame[3] + 1
                stack[-1][2] += frame[2] + 1
                stack[-1][3] = max(stack[-1][3], frame[3] + 1)
            continue
        frame[4] += 1
        level = len(stack) - 1 + depth  # lists/mappings around `child`
        if id(child) in seen:
            alias(child, level, frame)
            continue
        seen.add(id(child))
        if isinstance(child, yaml.ScalarNode):
            sizes[id(child)], heights[id(child)] = 1, 0
            frame[2] += 1
            continue
        if level + 1 > MAX_DEPTH:
            raise _NodeProblem(
                child.start_mark.line + 1,
                f"YAML: nests deeper than {MAX_DEPTH} levels",
                _where_in(stack),
            )
        pairs = isinstance(child, yaml.MappingNode)
        items = itertools.chain.from_iterable(child.value) if pairs else iter(child.value)
        stack.append([child, items, 0, 0, 0])
    return aliases


def _where_in(stack: list[list[Any]]) -> str:
    """The value the last child taken in _check_shape's `stack` is, named as _plain names it
    (`resources.file[0].content`): a key's value adds the key, a list's item its index, and a
    merge (`<<: *base`, `<<: [*a, *b]`) adds nothing (its keys are the mapping's)."""
    where, merged = "", False
    for frame in stack[1:]:
        node, taken = frame[0], frame[4] - 1
        if isinstance(node, yaml.MappingNode):
            key = node.value[taken // 2][0]
            merged = key.tag == _MERGE_TAG
            if taken % 2 and not merged:  # a value (a key is named by its mapping)
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                where = _path(where, str(name))
        elif merged:  # the list of mappings of a merge
            merged = False
        else:
            where = f"{where}[{taken}]"
    return where


def _by_name(root: yaml.Node | None, where: str) -> str:
    """`where` with a resource's `resources.KIND[N]` said `KIND[NAME]` when it has a name (as
    the problems of its parameters name it), else as it is."""
    if not where.startswith("resources.") or not isinstance(root, yaml.MappingNode):
        return where
    for key, value in root.value:
        if key.value != "resources" or not isinstance(value, yaml.MappingNode):
            continue
        for kind, items in value.value:
            head = _path("resources", str(kind.value)) + "["
            if not isinstance(items, yaml.SequenceNode) or not where.startswith(head):
                continue
            index, found, rest = where[len(head) :].partition("]")
            if not found or not index.isdigit() or int(index) >= len(items.value):
                continue
            item = items.value[int(index)]
            names = [
                v.value
                for k, v in (item.value if isinstance(item, yaml.MappingNode) else [])
                if k.value == "name" and isinstance(v, yaml.ScalarNode) and v.tag == _STR_TAG
            ]
            if names and names[0]:
                return f"{kind.value}[{names[0]}]{rest}"
    return where


def _plain(
    node: yaml.Node, constructor: yaml.constructor.SafeConstructor, where: str, depth: int = 0
) -> Any:
    """A composed YAML node as Python data, with line numbers kept (1-based); _NodeProblem.

    `where` names the value in problems (`resources.file[0].mode`); `depth`: how many lists
    and mappings are around it (bounded here too: a file without aliases skips _check_shape).
    """
    if node.__class__ is _SCALAR:
        return _scalar(node, constructor, where)
    if depth >= MAX_DEPTH:
        raise _NodeProblem(
            node.start_mark.line + 1, f"YAML: nests deeper than {MAX_DEPTH} levels", where
        )
    if isinstance(node, yaml.MappingNode):
        out = LocDict()
        out.line, out.lines, out.raw = node.start_mark.line + 1, {}, {}
        lines, raw = out.lines, out.raw
        merge: tuple[yaml.Node, yaml.Node] | None = None
        for key_node, value_node in node.value:
            if key_node.__class__ is _SCALAR and key_node.tag == _STR_TAG:
                key = key_node.value  # the common case, at no call
            elif key_node.tag == _MERGE_TAG:
                if merge is not None:
                    raise _NodeProblem(key_node.start_mark.line + 1, "two <<", where or "<<")
                merge = (key_node, value_node)
                continue
            else:
                key = _plain(key_node, constructor, where, depth + 1)
                key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise _NodeProblem(key_node.start_mark.line + 1, "duplicate key", _path(where, key))
            if value_node.__class__ is _SCALAR:
                if value_node.tag == _STR_TAG:
                    out[key] = value_node.value
                else:
                    out[key] = _scalar(value_node, constructor, _path(where, key))
                if not value_node.style:
                    raw[key] = value_node.value
            else:
                out[key] = _plain(value_node, constructor, _path(where, key), depth + 1)
            lines[key] = key_node.start_mark.line + 1
        if merge is not None:
            _merge(out, merge[0].start_mark.line + 1, merge[1], constructor, where, depth=depth)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocList(
            _plain(item, constructor, f"{where}[{i}]", depth + 1)
            for i, item in enumerate(node.value)
        )
        seq.line = node.start_mark.line + 1
        seq.lines = [item.start_mark.line + 1 for item in node.value]
        return seq
    return _scalar(node, constructor, where)


_SCALAR = yaml.ScalarNode


def _path(where: str, key: str) -> str:
    """`where` and then `key` (shortened), as problems name a value."""
    shown = key if len(key) <= 40 else key[:37] + "..."
    return f"{where}.{shown}" if where else shown


def _scalar(node: yaml.Node, constructor: yaml.constructor.SafeConstructor, where: str) -> Any:
    """A scalar node (or one of an unknown tag) as Python data; _NodeProblem."""
    if node.__class__ is _SCALAR and node.tag == _STR_TAG:
        return node.value
    line = node.start_mark.line + 1
    if node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
        raise _NodeProblem(
            line,
            f"an integer of more than {MAX_INT_DIGITS:,} digits (quote it to make it a string)",
            where,
        )
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as err:
        raise _NodeProblem(line, str(err.problem or err.context), where) from err
    except (ValueError, OverflowError, TypeError) as err:  # e.g. a date like 2001-13-45
        raise _NodeProblem(line, f"cannot read {show(node.value)}: {err}", where) from err


def _merge(
    out: LocDict,
    line: int,
    value: yaml.Node,
    constructor: yaml.constructor.SafeConstructor,
    where: str,
    *,
    depth: int,
) -> None:
    """Add to `out` the keys it lacks of the mapping(s) of a merge key (`<<: *base` or
    `<<: [*a, *b]`, the first mapping listed winning, as in go-yaml) at `line`, which is the
    line of each key it adds. Aliases were bounded by _check_shape like any others."""
    sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
    if not sources or not all(isinstance(source, yaml.MappingNode) for source in sources):
        raise _NodeProblem(
            line, "<< takes a mapping or a list of mappings, e.g. <<: *base", where or "<<"
        )
    # Each mapping is nested in the `<<` value, and in its list too when it is in one (as
    # _check_shape counts it).
    inner = depth + 1 + isinstance(value, yaml.SequenceNode)
    for source in sources:
        mapping = _plain(source, constructor, where, inner)
        for key, item in mapping.items():
            if key not in out:
                out[key] = item
                out.lines[key] = line
                if key in mapping.raw:
                    out.raw[key] = mapping.raw[key]


class _Parser:
    def __init__(self, filename: str, incremental: bool = False, duplicates: bool = False) -> None:
        self.filename = filename
        self.duplicates = duplicates
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self._lines: list[int] = []  # each problem's line: reported in file order
        # With `incremental`: each resource parsed (kind, index in its list, name, resource).
        self.parsed: list[tuple[str, int, str, Resource]] | None = [] if incremental else None
        # The edge each item of `edges` declares (None: pending, or a problem).
        self.edges: list[tuple[Key, Key, Edge] | None] = []
        # Resources declared and refused (their problem told): an edge naming one is not
        # a second problem ("no resource ... in the graph"), the rest is still checked.
        self.refused: set[Key] = set()
        self._first_lines: dict[Key, int] = {}  # where each vertex was first declared
        self._duplicates_told = False

    def problem(self, line: int, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}:{line}: {where}: {message}")
        self._lines.append(line)

    def warn(self, line: int, where: str, message: str) -> None:
        self.warnings.append(f"{self.filename}:{line}: {where}: {message}")

    def fail(self, line: int, message: str) -> GraphFileError:
        return GraphFileError([f"{self.filename}:{line}: {message}"])

    def parse(self, text: str | bytes) -> Loaded:
        try:
            data = text.encode() if isinstance(text, str) else text
        except UnicodeEncodeError as err:  # a lone surrogate
            raise self.fail(str(text)[: err.start].count("\n") + 1, "not valid Unicode") from err
        try:
            node = _compose(data)
            if node is None:
                raise self.fail(1, "the graph file must be a mapping")
            aliases = _check_shape(node, data) if _ANCHOR in data else 0
            doc = _plain(node, yaml.constructor.SafeConstructor(), "")
        except yaml.YAMLError as err:
            line, message = _yaml_problem(err, data)
            raise self.fail(line, message) from err
        except _NodeProblem as err:
            raise self.fail(err.line, err.text(node)) from err
        if not isinstance(doc, LocDict):
            raise self.fail(1, "the graph file must be a mapping")
        loaded = self._document(doc)
        if self.problems:
            # Found by pass (meta before params, resources before edges), told in file order.
            order = sorted(range(len(self.problems)), key=self._lines.__getitem__)
            raise GraphFileError([self.problems[i] for i in order])
        loaded.warnings = self.warnings
        if self.parsed is not None and not aliases and not self.warnings:
            loaded.reuse = Reuse.of(data, node, self.parsed, loaded, self.edges)
        return loaded

    def items(self, fragment: str, line: int) -> list[tuple[yaml.Node, LocDict]] | None:
        """The mappings of `fragment`, whole lines of a block list of resources starting at
        0-based `line`, with their nodes; None on any problem (or alias)."""
        data = ("\n" * line + fragment).encode()
        try:
            node = _compose(data)
            if not isinstance(node, yaml.SequenceNode) or (
                _ANCHOR in data and _check_shape(node, data, _RESOURCES_DEPTH - 1)
            ):
                return None
            seq = _plain(node, yaml.constructor.SafeConstructor(), "", _RESOURCES_DEPTH - 1)
        except (yaml.YAMLError, _NodeProblem):
            return None
        if not all(isinstance(item, LocDict) for item in seq):
            return None
        return list(zip(node.value, seq, strict=True))

    def _keys(self, data: LocDict, allowed: list[str], where: str, legacy: set[str]) -> None:
        for key in list(data):
            if key in allowed:
                continue
            if key in legacy:
                self.warn(data.lines[key], where, f"'{key}' is an old mgmt key with no effect")
                del data[key]
                continue
            self.problem(data.lines[key], where, f"unknown key '{key}'{close_match(key, allowed)}")

    def _document(self, doc: LocDict) -> Loaded:
        self._keys(doc, TOP_KEYS, "top level", LEGACY[""])
        name = doc.get("graph")
        if not isinstance(name, str) or not name:
            self.problem(
                doc.lines.get("graph", doc.line), "graph", "a non-empty graph name is required"
            )
        graph = Graph(name if isinstance(name, str) else "")
        loaded = Loaded(graph)
        resources = doc.get("resources")
        if resources is not None:
            if isinstance(resources, LocDict):
                self._resources(resources, loaded)
            else:
                self.problem(
                    doc.lines["resources"], "resources", "expected a mapping of kind -> list"
                )
        collect = doc.get("collect")
        if collect is not None:
            self._collect(collect, doc.lines["collect"], loaded)
        edges = doc.get("edges")
        edge_lines: dict[tuple[Key, Key], int] = {}
        if edges is not None:
            if isinstance(edges, LocList):
                if (refused := too_many(len(edges), "edges")) is not None:
                    raise self.fail(edges.lines[max_resources()], f"edges: {refused}")
                for index, edge in enumerate(edges):
                    found = self._edge(edge, edges.lines[index], index, loaded)
                    self.edges.append(found)
                    if found is not None:
                        graph.connect(*found)
                        edge_lines[found[:2]] = edges.lines[index]
            else:
                self.problem(doc.lines["edges"], "edges", "expected a list of edges")
        # Every independent problem at once (graph-format.md): a cycle among the resources and
        # edges that are fine is told beside a typo elsewhere, and so are duplicates (which a
        # run's parse leaves to the engine when there is no other problem: cheaper).
        cycle = graph.find_cycle()
        if cycle:
            line = edge_lines.get((cycle[-2], cycle[-1]), doc.lines.get("edges", 0))

            def place(src: Key, dst: Key) -> str | None:
                found = edge_lines.get((src, dst))
                return None if found is None else f"{self.filename}:{found}"

            self.problem(line, "edges", cycle_text(cycle, place))
        if self.problems:
            self._duplicates(loaded)
        return loaded

    def _resources(self, resources: LocDict, loaded: Loaded) -> None:
        known = kinds()
        limit = max_resources()
        first_lines = self._first_lines
        together: dict[type[Resource], list[Key]] = {}  # the kinds that validate_together
        for kind, items in resources.items():
            line = resources.lines[kind]
            cls = lookup(kind)
            if cls is None:
                refused = unsupported(kind)
                if refused is None:
                    hint = close_match(kind, known)
                    refused = f"unknown kind '{kind}'{hint}; known kinds: {', '.join(known)}"
                self.problem(line, f"resources.{kind}", refused)
                if isinstance(items, list):
                    names = (item.get("name") for item in items if isinstance(item, dict))
                    self.refused.update((kind, name) for name in names if isinstance(name, str))
                continue
            if not isinstance(items, LocList):
                self.problem(line, f"resources.{kind}", "expected a list of resources")
                continue
            checked_together = validates_together(cls)
            for index, item in enumerate(items):
                res = self._resource(cls, kind, item, items.lines[index], index)
                if res is None:
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        self.refused.add((kind, item["name"].removeprefix(EXPORT_PREFIX)))
                    continue
                if self.parsed is not None:
                    self.parsed.append((kind, index, str(item["name"]), res))
                if str(item.get("name")).startswith(EXPORT_PREFIX):
                    loaded.exported.append(res)  # validated under its name without the "@@"
                    continue
                first = first_lines.setdefault((res.kind, res.name), items.lines[index])
                try:
                    loaded.graph.add_or_merge(res)
                except (GraphError, ValidationError) as err:
                    also = (
                        f" (also declared at line {first})" if first != items.lines[index] else ""
                    )
                    self.problem(items.lines[index], str(res), f"{err}{also}")
                    continue
                if len(loaded.graph) > limit:  # stop here: the rest is not built
                    raise self.fail(items.lines[index], f"resources.{kind}: {too_many(limit + 1)}")
                if checked_together and first == items.lines[index]:
                    together.setdefault(cls, []).append((res.kind, res.name))
        vertices = loaded.graph.vertices
        by_kind = {cls: [vertices[key] for key in keys] for cls, keys in together.items()}
        for res, refusal in refused_together(by_kind):
            self.problem(first_lines[key_of(res)], str(res), str(refusal))
        if self.duplicates:
            self._duplicates(loaded)

    def _duplicates(self, loaded: Loaded) -> None:
        """Two resources managing one thing, each at its line: what the engine refuses."""
        if self._duplicates_told:
            return
        self._duplicates_told = True
        for line, where, text in _duplicate_problems(loaded.graph, self._first_lines):
            self.problem(line, where, text)

    def _resource(
        self, cls: type[Resource], kind: str, item: Any, line: int, index: int
    ) -> Resource | None:
        if not isinstance(item, LocDict):
            self.problem(line, f"{kind}[{index}]", "expected a mapping of parameters")
            return None
        name = item.get("name")
        if not isinstance(name, str) or not name:
            self.problem(
                item.lines.get("name", line),
                f"{kind}[{index}]",
                "a non-empty string 'name' is required",
            )
            return None
        where = fmt_key((kind, name))
        legacy = _legacy_keys(kind)
        if not legacy.isdisjoint(item):
            for key in [k for k in item if k in legacy]:
                self.warn(item.lines[key], where, f"'{key}' is an old mgmt key with no effect")
                del item[key]
        meta_data = item.get("meta") or {}
        meta: Meta | None = _NO_META
        if not isinstance(meta_data, dict):
            self.problem(
                item.lines.get("meta", line),
                where,
                f"meta: expected a mapping, got {show(meta_data)}",
            )
        elif meta_data:
            try:
                meta = build(Meta, meta_data, raw=getattr(meta_data, "raw", None), prefix="meta.")
            except ValidationError as err:
                meta = None
                for each in (err, *err.others):
                    self.problem(self._line_of(item, each.key, line), where, str(each))
        # The meta is given before validate: a kind may check it (http:client's poll).
        given = {"name": name.removeprefix(EXPORT_PREFIX), "meta": meta or _NO_META}
        try:
            res = build(cls, item, raw=item.raw, skip=_GIVEN, given=given)
            res.validate()
            if res.name[:1] == "$":  # (no call for every other name: ~1 M instructions a 1,000)
                check_name(res.name, res.meta)
        except ValidationError as err:
            for each in (err, *err.others):  # every key's problem at once
                self.problem(self._line_of(item, each.key, line), where, str(each))
            return None
        return res if meta is not None else None

    @staticmethod
    def _line_of(item: LocDict, key: str | None, default: int) -> int:
        if not key:
            return default
        top = key.split(".")[0].split("[")[0]
        if top == "meta" and "." in key and isinstance(item.get("meta"), LocDict):
            sub = key.split(".")[1].split("[")[0]
            return int(item["meta"].lines.get(sub, item.lines.get("meta", default)))
        return item.lines.get(top, default)

    def _vertex(self, data: Any, line: int, where: str, loaded: Loaded) -> Key | None:
        if not isinstance(data, LocDict):
            self.problem(line, where, "expected {kind: ..., name: ...}")
            return None
        self._keys(data, VERTEX_KEYS, where, set())
        kind, name = data.get("kind"), data.get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            self.problem(data.line, where, "expected {kind: ..., name: ...}")
            return None
        if (kind, name) not in loaded.graph:
            from mgmt.collectscope import collects  # only for a vertex not in the graph

            if (kind, name) in self.refused:  # its own problem is told
                return None
            if not collects(loaded.collect, kind, name):
                self.problem(data.line, where, f"no resource {kind}[{name}] in the graph")
                return None
        return (kind, name)

    def _edge(
        self, edge: Any, line: int, index: int, loaded: Loaded
    ) -> tuple[Key, Key, Edge] | None:
        """The edge of the graph `edge` declares (None when it names a resource that will be
        collected: it is pending, or after reporting a problem); loaded.graph is not changed."""
        graph = loaded.graph
        if not isinstance(edge, LocDict):
            self.problem(line, f"edges[{index}]", "expected a mapping with from, to")
            return None
        where = f"edge {edge.get('name') or index}"
        self._keys(edge, EDGE_KEYS, where, set())
        for key in ("from", "to"):
            if key not in edge:
                self.problem(line, where, f"'{key}' is required")
        notify = edge.get("notify", False)
        if not isinstance(notify, bool):
            self.problem(
                edge.lines["notify"], where, f"notify: expected true or false, got {show(notify)}"
            )
            return None
        if "from" not in edge or "to" not in edge:
            return None
        src = self._vertex(edge["from"], edge.lines["from"], f"{where}: from", loaded)
        dst = self._vertex(edge["to"], edge.lines["to"], f"{where}: to", loaded)
        if src is None or dst is None:
            return None
        if src == dst:
            self.problem(line, where, f"edge from {fmt_key(src)} to itself")
            return None
        if src not in graph or dst not in graph:  # to or from a collected resource
            if "send" in edge or "recv" in edge:
                self.problem(line, where, "send/recv cannot involve a collected resource (yet)")
                return None
            loaded.pending.append((src, dst, Edge(str(edge.get("name") or ""), notify)))
            return None
        pairs = self._sendrecv(edge, line, where, graph.vertices[src], graph.vertices[dst])
        if pairs is None:
            return None
        return src, dst, Edge(str(edge.get("name") or ""), notify, pairs)

    def _sendrecv(
        self, edge: LocDict, line: int, where: str, sender: Resource, receiver: Resource
    ) -> tuple[tuple[str, str], ...] | None:
        """The (send, recv) pair of an edge, () for none, None after reporting a problem."""
        send, recv = edge.get("send"), edge.get("recv")
        if send is None and recv is None:
            return ()
        if not isinstance(send, str) or not isinstance(recv, str):
            self.problem(line, where, "send and recv go together, each naming one value")
            return None
        sends = type(sender).SENDS
        if send not in sends:
            offer = ", ".join(sends) or "nothing"
            self.problem(edge.lines["send"], where, f"send: {sender} sends {offer}, not '{send}'")
            return None
        params = [n for n in field_names(type(receiver)) if n not in ("name", "meta")]
        if recv not in params:
            hint = close_match(recv, params)
            self.problem(edge.lines["recv"], where, f"recv: {receiver} has no param '{recv}'{hint}")
            return None
        if mismatch := send_mismatch(type(sender), send, type(receiver), recv):
            self.problem(
                edge.lines["recv"], where, f"recv: {sender}.{send} -> {receiver}.{recv}: {mismatch}"
            )
            return None
        return ((send, recv),)

    def _collect(self, collect: Any, line: int, loaded: Loaded) -> None:
        from mgmt.collectscope import Collect, check_kind  # a graph with collect: only

        if not isinstance(collect, LocList):
            self.problem(line, "collect", "expected a list of {kind, pattern}")
            return
        for index, item in enumerate(collect):
            where = f"collect[{index}]"
            if not isinstance(item, LocDict):
                self.problem(collect.lines[index], where, "expected {kind: ..., pattern: ...}")
                continue
            self._keys(item, COLLECT_KEYS, where, set())
            kind, pattern = item.get("kind"), item.get("pattern", "")
            if not isinstance(kind, str) or lookup(kind) is None:
                self.problem(item.lines.get("kind", item.line), where, f"unknown kind {show(kind)}")
                continue
            if (refused := check_kind(kind)) is not None:
                self.problem(item.lines.get("kind", item.line), where, refused)
                continue
            if not isinstance(pattern, str):
                self.problem(item.lines["pattern"], where, "pattern: expected a string")
                continue
            loaded.collect.append(Collect(kind, pattern))


# Incremental re-parsing (issue 16) ------------------------------------------------------------
#
# An edit of a few resources of a big graph file re-parses those alone: the text is compared
# with the last version's, and when everything that changed lies within the items of one block
# list of resources (edited, added, removed, renamed), the whole lines of those items are parsed
# on their own, at their own line, as a list; an item whose text is unchanged, and every other
# resource, is the very object of the last parse (so the engine keeps those vertices on an
# identity check). Anything else, or any problem or warning at all, is a full parse: its result
# and its messages are always those of parse().

_BREAKS_BUT_NL = ("\r", "\x85", "\u2028", "\u2029")  # YAML line breaks other than "\n"
_RESOURCES_DEPTH = 3  # lists/mappings around a resource: the file, `resources`, its kind's list
_CHUNK = 4096


@dataclass(frozen=True)
class _Item:
    """A resource of the parsed file, as reparse() may reuse it."""

    kind: str
    name: str  # as written ("@@" for an export)
    res: Resource
    # its mapping's text at column `col` of its line, to the next token's line (what it is
    # read from: the same text there is the same resource)
    text: str

    @property
    def key(self) -> Key:
        return (self.kind, self.name.removeprefix(EXPORT_PREFIX))

    @property
    def export(self) -> bool:
        return self.name.startswith(EXPORT_PREFIX)


Ends = tuple[Key, Key]


@dataclass(frozen=True)
class _Span:
    """Where the `edges` block list lies in the text: its whole lines, from the one of its
    first "-" (character offsets `start`, `end`, 0-based `line`), the "-"s at column `dash`."""

    start: int
    end: int
    line: int
    dash: int

    @staticmethod
    def node(root: yaml.Node) -> yaml.Node | None:
        """The top-level `edges` list of a composed file, if it is a block list of mappings."""
        if not isinstance(root, yaml.MappingNode):
            return None
        lists = [value for key, value in root.value if key.value == "edges"]
        if len(lists) != 1 or not isinstance(lists[0], yaml.SequenceNode):
            return None
        node = lists[0]
        if node.flow_style or not node.value:
            return None
        if not all(isinstance(item, yaml.MappingNode) for item in node.value):
            return None
        return node

    @classmethod
    def item_lines(cls, root: yaml.Node) -> list[int]:
        """The 0-based line of each item of the `edges` list (see node())."""
        node = cls.node(root)
        return [item.start_mark.line for item in node.value] if node is not None else []

    @classmethod
    def of(cls, root: yaml.Node, text: str) -> _Span | None:
        """The span of the top-level `edges` list of `text` (composed: `root`), if it is a
        block list of mappings."""
        node = cls.node(root)
        if node is None:
            return None
        start = text.rfind("\n", 0, node.start_mark.index) + 1
        if text[start : node.start_mark.index].strip(" "):
            return None
        end = node.end_mark.index - _indent_of_next(text, node.end_mark.index)
        return cls(start, end, node.start_mark.line, node.start_mark.column)

    def moved(self, at: int, shift: int, lines: int) -> _Span:
        """This span after an edit at offset `at` (not inside it) that added `shift`
        characters and `lines` lines."""
        if self.start < at:
            return self
        return _Span(self.start + shift, self.end + shift, self.line + lines, self.dash)


@dataclass(frozen=True)
class Reuse:
    """A parsed graph file, for the next parse of its edited text: its text, where each
    resource's mapping lies (character offsets, 0-based line and column), the resources, and
    the graph as parsed (copied before anyone can change it)."""

    text: str
    starts: list[int]
    ends: list[int]
    lines: list[int]
    cols: list[int]
    items: list[_Item]
    graph: Graph
    exported: list[Resource]
    collect: list[Collect]
    pending: list[tuple[Key, Key, Edge]]
    # Where the `edges` block list lies (None: no such list, or not one reparse() may redo),
    # the edges it declares, one per pair of ends (as Graph.connect merges them), and the edge
    # of each item's text (an item whose text is unchanged is not parsed again).
    edge_span: _Span | None = None
    edges: dict[Ends, Edge] = field(default_factory=dict)
    edge_items: dict[str, tuple[Key, Key, Edge]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        data: bytes,
        root: yaml.Node,
        parsed: list[tuple[str, int, str, Resource]],
        loaded: Loaded,
        edges: list[tuple[Key, Key, Edge] | None],
    ) -> Reuse | None:
        """The reusable state of a full parse; None when a later edit must parse it all."""
        if data[:3] == b"\xef\xbb\xbf" or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return None  # marks count characters after a BOM, or in UTF-16
        if data[:1] == b"%" or b"\n%" in data:
            return None  # a directive (%TAG !! ...): a part read alone would read tags otherwise
        spans = _item_nodes(root)
        if spans is None or len(spans) != len(parsed):
            return None  # a resource was refused, or the resources are not all in block lists
        if len({(kind, name.removeprefix(EXPORT_PREFIX)) for kind, _, name, _ in parsed}) != len(
            parsed
        ):
            return None  # the same resource twice
        text = data.decode("utf-8")
        items, starts, ends, lines, cols = [], [], [], [], []
        for (kind, _index, name, res), node in zip(parsed, spans, strict=True):
            start, end = node.start_mark.index, node.end_mark.index
            items.append(_Item(kind, name, res, text[start:end].rstrip(" ")))
            starts.append(start)
            ends.append(end)
            lines.append(node.start_mark.line)
            cols.append(node.start_mark.column)
        return cls(
            text,
            starts,
            ends,
            lines,
            cols,
            items,
            loaded.graph.copy(),
            list(loaded.exported),
            list(loaded.collect),
            list(loaded.pending),
            *_edge_state(root, text, edges),
        )

    def _chunk(self, k: int) -> tuple[int, int]:
        """The whole lines of the k-th resource in the text: from its line (the one of its "-")
        to the line of the next token."""
        text = self.text
        return text.rfind("\n", 0, self.starts[k]) + 1, self.ends[k] - _indent_of_next(
            text, self.ends[k]
        )

    def _locate(self, at: int) -> int | None:
        """The resource whose chunk holds offset `at` (or ends at it), if any."""
        from bisect import bisect_right  # an edit's re-parse only, not a first load

        k = bisect_right(self.starts, at) - 1
        if k + 1 < len(self.starts) and at >= self._chunk(k + 1)[0]:
            k += 1
        if k < 0 or at > self._chunk(k)[1]:
            return None
        return k

    def edited(self, data: bytes, filename: str, base: Graph) -> Loaded | None:
        """The parse of `data`, an edit of this text that adds, removes, renames or changes
        resources of one block list only (whole resources, or inside them); None if it is not
        one, or on any problem (a full parse then reports it). `base` is the graph of this text
        as given out: the new one is it with only the changed resources replaced, added or
        removed (Loaded.since)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        old = self.text
        head = _common_prefix(old, text, min(len(old), len(text)))
        tail = _common_suffix(old, text, min(len(old), len(text)) - head)
        span = self.edge_span
        if span is not None and span.start <= head and len(old) - tail <= span.end:
            return self._edges_edited(text, filename, base)
        i, j = self._locate(head), self._locate(len(old) - tail)
        if i is None or j is None:
            return None
        lo, hi = min(i, j), max(i, j)
        kind = self.items[lo].kind
        if self.items[hi].kind != kind:
            return None  # the change spans two lists
        if lo > 0 and self.items[lo - 1].kind == kind and head < self.starts[lo]:
            lo -= 1  # the lines before the first one end the one before it (`|+` keeps them)
        start, end = self._chunk(lo)[0], self._chunk(hi)[1]
        shift = len(text) - len(old)
        fragment = text[start : end + shift]
        prefix = old[start : self.starts[lo]]
        dash = len(prefix) - len(prefix.lstrip(" "))
        if prefix[dash:].rstrip(" ") != "-" or not _block_items(fragment, dash):
            return None
        if not fragment:  # every resource of the range removed: the list must keep one
            first = lo == 0 or self.items[lo - 1].kind != kind
            last = hi + 1 == len(self.items) or self.items[hi + 1].kind != kind
            if first and last:
                return None
        found = _Parser(filename).items(fragment, self.lines[lo]) if fragment else []
        if found is None:
            return None
        new = self._new_items(
            found=found, lo=lo, hi=hi, filename=filename, start=start, end=end + shift, text=text
        )
        if new is None:
            return None
        moved = fragment.count("\n") - old.count("\n", start, end)
        after = start + dash if new else end + shift + _next_indent(text, end + shift)
        return self._replaced(
            text=text, lo=lo, hi=hi, new=new, moves=(shift, moved, after), base=base
        )

    def _new_items(
        self,
        *,
        found: list[tuple[yaml.Node, LocDict]],
        lo: int,
        hi: int,
        filename: str,
        start: int,
        end: int,
        text: str,
    ) -> list[tuple[_Item, int, int, int, int]] | None:
        """The resources of the new fragment `text[start:end]` (found: its nodes and
        mappings), each with its offsets, 0-based line and column in `text`; a resource whose
        text is unchanged is the very object of the last parse. None on any problem."""
        kind = self.items[lo].kind
        cls = lookup(kind)
        if cls is None or validates_together(cls):
            return None  # (a kind checked together: a full parse checks them all)
        known = {(self.cols[k], self.items[k].text): self.items[k] for k in range(lo, hi + 1)}
        line = self.lines[lo]  # the lines before the fragment: one character each in `data`
        out = []
        for n, (node, data) in enumerate(found):
            first = start + node.start_mark.index - line
            last = start + node.end_mark.index - line if n + 1 < len(found) else end
            if last == end:  # the last one ends where the old range did: at the next token
                last += _next_indent(text, end)
            name, col = data.get("name"), node.start_mark.column
            lead = text[text.rfind("\n", 0, first) + 1 : first]
            if not isinstance(name, str) or lead.strip(" ") != "-" or col != len(lead):
                return None  # the mapping must start on its "-" line
            item = known.get((col, text[first:last].rstrip(" ")))
            if item is None or item.name != name:
                parser = _Parser(filename)
                res = parser._resource(cls, kind, data, node.start_mark.line + 1, 0)
                if res is None or parser.problems or parser.warnings:
                    return None
                item = _Item(kind, name, res, text[first:last].rstrip(" "))
            out.append((item, first, last, node.start_mark.line, col))
        return out

    def _replaced(
        self,
        *,
        text: str,
        lo: int,
        hi: int,
        new: list[tuple[_Item, int, int, int, int]],
        moves: tuple[int, int, int],
        base: Graph,
    ) -> Loaded | None:
        """This parse with the resources lo..hi replaced by `new` (of the edited `text`); None
        if that changes more than those resources (a duplicate, an edge's end). `moves`: how
        many characters and lines the text after them moved, and where the resource before
        them now ends (the next token)."""
        shift, moved, after = moves
        olds = self.items[lo : hi + 1]
        gone = {item.key: item for item in olds}
        came: dict[Key, _Item] = {}
        for item, *_ in new:
            if item.key in came:
                return None  # the same resource twice
            came[item.key] = item
        exports = {key_of(res) for res in self.exported}
        for key in came.keys() - gone.keys():
            if key in self.graph.vertices or key in exports:
                return None
        edged = {key for edge in self.pending for key in edge[:2]}
        for key in gone.keys() ^ came.keys():
            if self.graph.succ.get(key) or self.graph.pred.get(key) or key in edged:
                return None  # an edge names it: a full parse says what that means
        for key in gone.keys() & came.keys():
            if gone[key].export != came[key].export:
                return None
        rest = range(hi + 1, len(self.items))
        derived = derive(
            self.graph,
            Change(
                put={key: item.res for key, item in came.items() if not item.export},
                remove={key for key, item in gone.items() if not item.export and key not in came},
            ),
        )
        graph = derived.graph
        items = [*self.items[:lo], *(n[0] for n in new), *self.items[hi + 1 :]]
        ends = [*self.ends[:lo], *(n[2] for n in new), *(self.ends[k] + shift for k in rest)]
        if lo > 0 and items[lo - 1].kind == olds[0].kind:  # its end was the first one's "-"
            prev = items[lo - 1]
            ends[lo - 1] = after
            items[lo - 1] = _Item(
                prev.kind, prev.name, prev.res, text[self.starts[lo - 1] : after].rstrip(" ")
            )
        if any(item.export for item in olds) or any(item.export for item in came.values()):
            exported = [item.res for item in items if item.export]
        else:
            exported = list(self.exported)
        loaded = Loaded(graph, exported, list(self.collect), pending=list(self.pending))
        loaded.since = (base, derived.touched)
        loaded.reuse = Reuse(
            text,
            [*self.starts[:lo], *(n[1] for n in new), *(self.starts[k] + shift for k in rest)],
            ends,
            [*self.lines[:lo], *(n[3] for n in new), *(self.lines[k] + moved for k in rest)],
            [*self.cols[:lo], *(n[4] for n in new), *self.cols[hi + 1 :]],
            items,
            _share(graph),
            list(exported),
            self.collect,
            self.pending,
            self.edge_span.moved(self.starts[lo], shift, moved) if self.edge_span else None,
            self.edges,
            self.edge_items,
        )
        return loaded

    def _edges_edited(self, text: str, filename: str, base: Graph) -> Loaded | None:
        """The parse of `text`, an edit inside the `edges` list alone: that list is parsed on
        its own (the resources are the very objects of the last parse) and the graph derived
        with the edges that changed; None on any problem (a full parse then reports it)."""
        span = self.edge_span
        if span is None or self.pending:
            return None
        shift = len(text) - len(self.text)
        fragment = text[span.start : span.end + shift]
        if not fragment or not _block_items(fragment, span.dash):
            return None
        parser = _Parser(filename)
        loaded = Loaded(self.graph, collect=list(self.collect))  # _edge reads the graph only
        items: dict[str, tuple[Key, Key, Edge]] = {}
        edges: dict[Ends, Edge] = {}
        for index, (offset, chunk) in enumerate(_edge_chunks(fragment, span.dash)):
            edge = self.edge_items.get(chunk)
            if edge is None:  # a new or edited item: parsed alone, at its line
                found = parser.items(chunk, span.line + offset)
                if found is None or len(found) != 1:
                    return None
                node, data = found[0]
                edge = parser._edge(data, node.start_mark.line + 1, index, loaded)
                if edge is None or parser.problems or parser.warnings or loaded.pending:
                    return None
            items[chunk] = edge
            edges[edge[:2]] = both(edges.get(edge[:2]), edge[2])
        last = self.edges
        change = Change(
            connect=[
                (src, dst, edge)
                for (src, dst), edge in edges.items()
                if last.get((src, dst)) != edge
            ],
            disconnect=[ends for ends, edge in last.items() if edges.get(ends) != edge],
        )
        try:
            derived = derive(self.graph, change)
        except GraphError:
            return None  # a cycle: a full parse says which edge closes it
        moved = fragment.count("\n") - self.text.count("\n", span.start, span.end)
        after = range(len(self.starts))
        out = Loaded(derived.graph, list(self.exported), list(self.collect))
        out.since = (base, derived.touched)
        out.reuse = Reuse(
            text,
            [a + shift * (a >= span.end) for a in self.starts],
            [
                a + shift * (self.starts[k] >= span.end)
                for k, a in zip(after, self.ends, strict=True)
            ],
            [
                a + moved * (self.starts[k] >= span.end)
                for k, a in zip(after, self.lines, strict=True)
            ],
            self.cols,
            self.items,
            _share(derived.graph),
            list(self.exported),
            self.collect,
            self.pending,
            _Span(span.start, span.end + shift, span.line, span.dash),
            edges,
            items,
        )
        return out


def reparse(data: bytes, filename: str, previous: Loaded | None) -> Loaded:
    """parse(data, incremental=True), reusing what `previous` (the last version) parsed: in
    O(change) when the edit lies inside one resource (see Reuse)."""
    if previous is None or previous.reuse is None:
        return parse(data, filename, incremental=True)
    with collector.paused():  # as parse(): a big edit makes many objects, no cycles
        loaded = previous.reuse.edited(data, filename, previous.graph)
    if loaded is None or too_many(len(loaded.graph)) is not None:
        return parse(data, filename, incremental=True)  # (which says where it is too large)
    return loaded


def _item_nodes(root: yaml.Node) -> list[yaml.Node] | None:
    """The nodes of `resources`' items in document order; None unless all are mappings in
    block lists."""
    if not isinstance(root, yaml.MappingNode):
        return None
    out: list[yaml.Node] = []
    for key, value in root.value:
        if key.value != "resources":
            continue
        if not isinstance(value, yaml.MappingNode):
            return None
        for _kind, items in value.value:
            if not isinstance(items, yaml.SequenceNode) or items.flow_style:
                return None
            if not all(isinstance(item, yaml.MappingNode) for item in items.value):
                return None
            out += items.value
    return out


def _indent_of_next(text: str, end: int) -> int:
    """How many of the characters before `end` (where a block mapping's node ends: the next
    token) are the indentation of that token, on its line: an edit may not touch them nor the
    line break before them (that would move the next token into the mapping)."""
    line = text[text.rfind("\n", 0, end) + 1 : end]
    return len(line) if not line.strip(" ") else 0


def _next_indent(text: str, at: int) -> int:
    """How many spaces start the line at offset `at` (the indentation of its token)."""
    return len(text[at : at + 256]) - len(text[at : at + 256].lstrip(" "))


def _block_items(fragment: str, dash: int) -> bool:
    """Whether `fragment`, whole lines of a block list whose "-" are at column `dash`, is read
    the same on its own: every line is blank, a comment, an item's "- " at `dash`, or indented
    further with spaces (a less indented line, or another token at `dash`, would end the list),
    and the first that is none of the first two starts an item."""
    if (fragment and not fragment.endswith("\n")) or any(b in fragment for b in _BREAKS_BUT_NL):
        return False
    started = False
    for line in fragment.split("\n")[:-1]:
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if not body or body.startswith("#"):
            continue
        if indent == dash and body.startswith("- "):
            started = True
        elif not started or indent <= dash or body.startswith("\t"):
            return False
    return True


def _edge_chunks(fragment: str, dash: int) -> list[tuple[int, str]]:
    """The items of `fragment` (whole lines of a block list whose "-" are at column `dash`,
    checked by _block_items): each one's first line (0-based, in the fragment) and its text,
    from its "- " line to the next one's (the blank and comment lines before the first are
    no item's)."""
    starts: list[tuple[int, int]] = []  # line number and offset of each item's "- " line
    at = 0
    for number, line in enumerate(fragment.split("\n")[:-1]):
        if line[dash : dash + 2] == "- " and not line[:dash].strip(" "):
            starts.append((number, at))
        at += len(line) + 1
    ends = [offset for _number, offset in starts[1:]] + [len(fragment)] * bool(starts)
    return [(number, fragment[o:e]) for (number, o), e in zip(starts, ends, strict=True)]


def _edge_state(
    root: yaml.Node, text: str, edges: list[tuple[Key, Key, Edge] | None]
) -> tuple[_Span | None, dict[Ends, Edge], dict[str, tuple[Key, Key, Edge]]]:
    """Reuse's edge fields for the `edges` list of `text` (composed: `root`) whose items
    declared `edges`: none when an item is pending, or the items are not one per "- " line."""
    span = _Span.of(root, text)
    if span is None or None in edges:
        return None, {}, {}
    chunks = _edge_chunks(text[span.start : span.end], span.dash)
    lines = [span.line + number for number, _chunk in chunks]
    if lines != _Span.item_lines(root):
        return None, {}, {}
    merged: dict[Ends, Edge] = {}
    items: dict[str, tuple[Key, Key, Edge]] = {}
    for (_number, chunk), edge in zip(chunks, edges, strict=True):
        assert edge is not None
        merged[edge[:2]] = both(merged.get(edge[:2]), edge[2])
        items[chunk] = edge
    return span, merged, items


def _common_prefix(a: str, b: str, limit: int) -> int:
    """The length of the common prefix of `a` and `b`, at most `limit` (compared by chunks)."""
    lo = 0
    while lo + _CHUNK <= limit and a[lo : lo + _CHUNK] == b[lo : lo + _CHUNK]:
        lo += _CHUNK
    hi = min(lo + _CHUNK, limit)
    while lo < hi:  # a[:lo] == b[:lo]; the first difference is at or before hi
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """The length of the common suffix of `a` and `b`, at most `limit`."""
    la, lb = len(a), len(b)
    lo = 0
    while lo + _CHUNK <= limit and a[la - lo - _CHUNK : la - lo] == b[lb - lo - _CHUNK : lb - lo]:
        lo += _CHUNK
    hi = min(lo + _CHUNK, limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _share(graph: Graph) -> Graph:
    """A graph with the vertices of `graph` (to change) and its edges, shared: nobody changes
    a graph once given (Engine.apply prepares a copy)."""
    out = Graph(graph.name)
    out.vertices = dict(graph.vertices)
    out.succ, out.pred = dict(graph.succ), dict(graph.pred)
    return out
