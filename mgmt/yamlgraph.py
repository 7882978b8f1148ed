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

import contextlib
import errno
import functools
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
from engine.graph import (
    Edge,
    Graph,
    Key,
    cycle_text,
    fmt_key,
    key_of,
)
from engine.limits import max_resources, too_many
from engine.meta import Meta, check_name
from engine.params import build, close_match, field_names, plain_keys, show
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

# PyYAML's parts a parse uses, each from its own module: the `mgmt` command defers the package's
# own code (its dumpers, emitter, pure-Python scanner and parser: mgmt.lazyimport) to the first
# read of one of its names (`yaml.safe_load`...), which a graph file's run never makes. A file
# in the block style _block_doc reads needs only the resolver's table (and its nodes and
# errors): libyaml's parser, the constructor, the reader and the events are imported by the
# first parse that uses them (_loader, _safe_constructor): ~6.5 M instructions of a cron run.
with patterns_on_use("yaml"):  # its resolver's, mostly unused: ~7 ms of a start
    from yaml.error import Mark, MarkedYAMLError, YAMLError
    from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
    from yaml.resolver import Resolver

if TYPE_CHECKING:
    from collections.abc import Callable

    from yaml.constructor import SafeConstructor

    from engine.engine import Since
    from mgmt.collectscope import Collect
    from mgmt.yamlreparse import Reuse

log = logging.getLogger("main")

TOP_KEYS = ["graph", "comment", "resources", "edges", "collect"]
# An empty file, or one of comments (`---`, `~` alone) alike: said so, not "must be a mapping".
EMPTY_GRAPH = "the graph file is empty (a graph file is a mapping: `graph: NAME`, `resources:`)"
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
_ONLY_STR = {str}
# The first characters of a name that _resource reads itself: none (an empty name), an
# export's "@@", a "$" (check_name).
_NOT_PLAIN_NAME = frozenset(["", EXPORT_PREFIX[0], "$"])


@functools.cache
def _plain_keys(cls: type, kind: str) -> tuple[frozenset[str], frozenset[str]]:
    """The keys of a resource of `kind` that it builds from strings as they are, with its
    name and without its old keys (LEGACY: a warning each), and the keys it requires: once
    per kind, not per resource (params.plain_keys)."""
    text, required = plain_keys(cls)
    return (text | {"name"}) - _legacy_keys(kind), required


def _built(
    cls: type[Resource], item: Any, plain: frozenset[str], required: frozenset[str]
) -> Resource | None:
    """The resource `item` declares, valid, if it holds only strings of `plain` keys (and
    `required`'s) and a plain name: as _Parser._resource would build it, at one call. None
    for any other, or for a problem: _resource builds it, or tells each problem at its line."""
    name = item.get("name") if item.__class__ is LocDict else None
    if not (
        name.__class__ is str
        and name[:1] not in _NOT_PLAIN_NAME
        and plain.issuperset(item)
        and required.issubset(item)
        and {*map(type, item.values())} == _ONLY_STR
    ):
        return None
    try:
        res = cls(meta=_NO_META, **item)
        res.validate()
    except ValidationError:
        return None
    return res


# Keys _resource() builds itself.
_GIVEN = frozenset({"name", "meta"})

# Input limits (docs/graph-format.md#limits): each bounds the time and memory a graph file can
# cost, however hostile, and each is a one-line error naming the file and line.
MAX_SIZE = DEFAULT_MAX_GRAPH_SIZE  # bytes in the file; --max-graph-size overrides it
MAX_ALIAS_VALUES = 100_000  # values aliases add, an aliased value counted at each use
MAX_DEPTH = 64  # lists and mappings nested in each other
MAX_INT_DIGITS = 4_300  # characters of an integer (Python's own int() limit, for every base)


class _NoYAML(Exception):
    """A part of PyYAML a parse needs could not be imported (PyYAML upgraded, removed or broken
    while the agent runs): parse() and reparse() tell it as the file's GraphFileError, so that a
    running agent keeps its graph and says why in one line (a start is refused so)."""


@contextlib.contextmanager
def _importing() -> Iterator[None]:
    """Around a lazy import of PyYAML's: its ImportError or OSError as _NoYAML."""
    try:
        yield
    except (ImportError, OSError) as err:
        raise _NoYAML(
            f"cannot parse it: PyYAML cannot be imported ({type(err).__name__}: {err}); "
            "was it upgraded or removed? (reinstall it)"
        ) from err


@functools.cache
def _safe_constructor() -> type[SafeConstructor]:
    """PyYAML's SafeConstructor, imported at its first use (its patterns compiled at theirs)."""
    with _importing(), patterns_on_use("yaml"):
        from yaml.constructor import SafeConstructor

    return SafeConstructor


def _base_loader() -> Any:
    """PyYAML's CSafeLoader (libyaml's parser, the safe constructor, the resolver), made of the
    same three parts as yaml.cyaml makes it (that module also makes the dumpers); without
    libyaml (or if it cannot be imported), its pure-Python SafeLoader."""
    try:
        with patterns_on_use("yaml"):  # the extension imports the reader and the constructor
            from yaml._yaml import CParser
    except (ImportError, OSError):
        with _importing():
            import yaml

            return yaml.SafeLoader

    constructor = _safe_constructor()

    class CSafeLoader(CParser, constructor, Resolver):  # type: ignore[misc,valid-type]
        def __init__(self, stream: bytes | str) -> None:
            CParser.__init__(self, stream)
            constructor.__init__(self)
            Resolver.__init__(self)

    return CSafeLoader


_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


# The safe loader's implicit resolvers by a plain scalar's first character ("" for an empty
# one), those for any character (None) appended, as its resolve() tries them: the resolver's
# own table, which the loaders (CSafeLoader, SafeLoader) inherit.
_IMPLICIT: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: tuple(found) + tuple(Resolver.yaml_implicit_resolvers.get(None, ()))
    for first, found in Resolver.yaml_implicit_resolvers.items()
    if first is not None
}
_ANY_FIRST: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    Resolver.yaml_implicit_resolvers.get(None, ())
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


@functools.cache
def _loader() -> Any:
    """The loader of a parse libyaml composes, made at the first one (_base_loader)."""

    class _Loader(_base_loader()):  # type: ignore[misc]
        """The safe loader with its resolver at one call (there are no path resolvers): ~70,000
        calls for a 10,000-resource graph, most of them plain scalars that no implicit resolver
        matches by their first character (`name`, `/etc/motd`)."""

        def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is ScalarNode:  # a plain scalar: 1, true, null... by the implicit resolvers
                return _resolved(value) if implicit[0] else _STR_TAG
            return _MAP_TAG if kind is MappingNode else _SEQ_TAG

        # No path resolvers: the composer's two calls per node do nothing, in C (a builtin is
        # not bound as a method: called with the composer's arguments alone).
        descend_resolver = operator.is_
        ascend_resolver = tuple

    return _Loader


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
    # What tells a real edit from a touch: a digest of the sources, or a graph file's bytes
    # themselves (compared at memcmp speed: a sha256 of 100,000 resources took 31 ms).
    digest: str | bytes = ""
    # The front-end needs the cluster, whatever the graph holds (a program importing "world").
    cluster: bool = False
    # Edges to or from resources that will be collected: added once those are in the graph.
    pending: list[tuple[Key, Key, Edge]] = field(default_factory=list)
    # What a parse of the next version of the file may reuse (yamlreparse.incremental_parse).
    reuse: Reuse | None = None
    # Set by reparse(): this graph is that graph with only these resources replaced.
    since: Since | None = None
    # The engine took this graph (the agent sets it): no two of its resources manage one thing,
    # so a bad edit of a few of its resources is told from those alone (Reuse.edited).
    accepted: bool = False
    # What the graph is of, when it is not the one file the agent was given ("deploy 30"):
    # a refusal of the next graph says that this one's still runs.
    origin: str = ""
    # Where the front-end declared each resource (mcl: `file:line:col`), by key, when it knows:
    # read only when the engine refuses the graph (check.duplicate_problems).
    declared: Callable[[], dict[Key, str]] | None = None


def load_file(
    path: Path, max_size: int = MAX_SIZE, parsing: Callable[[bytes, str], Loaded] | None = None
) -> Loaded:
    """Read and parse a graph file of at most `max_size` bytes; GraphFileError on any problem.
    `parsing`: another parse than parse() (a watched file's: yamlreparse.incremental_parse)."""
    data = read_limited(path, max_size)
    loaded = (parsing or parse)(data, str(path))
    loaded.digest = data
    return loaded


def read_regular(path: Path, max_size: int | None = None) -> bytes:
    """The bytes of a regular file (its first `max_size` + 1 at most), through its symlinks;
    OSError for anything else ("a directory", "not a regular file"): a FIFO or a device is
    opened without blocking and never read (a FIFO's open waited for a writer forever)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory")
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        # Read in a buffer of the size the file has (one more byte tells it grew): a buffered
        # read(max_size + 1) made a 16 MB buffer for every read, 4 ms of a 100,000-resource
        # file's 0.4 ms read here.
        left = None if max_size is None else max(max_size, 0) + 1
        parts: list[bytes] = []
        want = info.st_size + 1
        while left is None or left > 0:
            part = os.read(fd, want if left is None else min(want, left))
            if not part:
                break
            parts.append(part)
            left = None if left is None else left - len(part)
            want = 1 << 16  # it grew since fstat: the rest, by pieces
        return parts[0] if len(parts) == 1 else b"".join(parts)  # (b"" for none)
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


def parse(text: str | bytes, filename: str = "<graph>", duplicates: bool = False) -> Loaded:
    """Parse graph-file text (bytes: UTF-8, or UTF-16 with a BOM); GraphFileError lists every
    problem found (a parse that keeps what an edit's re-parse needs, in `Loaded.reuse`:
    mgmt.yamlreparse.incremental_parse). `duplicates`:
    also two resources of one kind managing one thing, each at its line (`mgmt check`, and a
    run whose graph the engine refused so: `locate_refusal`), which the engine refuses anyway
    (without lines): not on every run's path (~1% of a 1,000-file run's instructions)."""
    with collector.paused():  # many objects, no cycles: half the time went to full passes
        try:
            return _Parser(filename, duplicates=duplicates).parse(text)
        except _NoYAML as err:
            raise GraphFileError([f"{filename}: {err}"]) from err


def located(loaded: Loaded, filename: str) -> list[str]:
    """locate_refusal's lines from where the parse of `loaded` found each resource (its
    `reuse`): no second parse (~4 s at 20,000 files, under load); [] without it."""
    reuse = loaded.reuse
    if reuse is None or not reuse.hold():  # (hold: the shared chunk maps made this version's)
        return []
    data, first_lines = reuse.data, dict[Key, int]()
    for found in reuse.lists:
        line = data.count(b"\n", 0, found.start) + 1
        for chunk in found.split(data, found.start, found.end):
            item = found.chunks.get(chunk)
            if item is None:
                return []
            first_lines.setdefault(item.key, line)
            line += chunk.count(b"\n")
    try:
        return [
            f"{filename}:{line}: {where}: {text}"
            for line, where, text in _duplicate_problems(loaded.graph, first_lines)
        ]
    except KeyError:  # a resource not from the lists (none expected): parsed again
        return []


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

    def text(self, root: Node | None, where: str | None = None) -> str:
        """The problem as reported: the value named as other problems name it (`_by_name`;
        `where`: so named already), a path of more than _MAX_WHERE characters (a deep
        nesting's) cut short."""
        if not self.where:
            return self.message
        where = _by_name(root, self.where) if where is None else where
        if len(where) > _MAX_WHERE:
            where = where[: _MAX_WHERE - 3] + "..."
        return f"{where}: {self.message}"


_MAX_WHERE = 120


_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _compose(data: bytes) -> Node | None:
    """The YAML node tree of `data` (aliases are shared nodes, not copies, at this point)."""
    loader = _loader()(data)  # as yaml.compose(data, Loader=_loader())
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def _yaml_problem(err: YAMLError, data: bytes, offset: int = 0) -> tuple[int, str]:
    """(line, one-line message) for any error PyYAML (or libyaml) raises; `offset`: lines of
    the file before `data` (a part of it read alone: Reuse)."""
    if isinstance(err, MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 + offset if mark else 1
        what = err.problem or "invalid YAML"
        if err.context and err.context_mark and err.context_mark.line + 1 + offset != line:
            what += f" ({err.context} at line {err.context_mark.line + 1 + offset})"
        elif err.context:
            what += f" ({err.context})"
        return line, f"YAML syntax error: {what}"
    with _importing(), patterns_on_use("yaml"):
        from yaml.reader import ReaderError

    if isinstance(err, ReaderError):  # a control character, or bad bytes
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
    with _importing():
        from yaml.events import AliasEvent

    loader = _loader()(data)  # as yaml.parse(data, Loader=_loader())
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, AliasEvent) and event.start_mark is not None:
                seen += 1
                if seen == index:
                    return int(event.start_mark.line) + 1
    finally:
        loader.dispose()
    return 1


# Every anchor is written "&name": a text without this byte has no alias (UTF-8 or UTF-16).
_ANCHOR = b"&"


def _check_shape(root: Node, data: bytes, depth: int = 0) -> int:
    """Bound nesting depth and alias expansion before anything is expanded; _NodeProblem.
    Returns how many aliases there are; `depth` is the nesting around `root`.

    One pass over the composed nodes, in document order, linear in their number however
    many times aliases would copy them: each node's expanded size and height are kept, so an
    alias adds its target's size at once (the "billion laughs" never gets built).
    """
    sizes: dict[int, int] = {}  # id(node) -> values it expands to (once complete)
    heights: dict[int, int] = {}  # id(node) -> levels of lists/mappings it expands to
    aliases = aliased = 0  # alias uses seen so far, and the values they added

    def alias(node: Node, level: int, frame: list[Any]) -> None:
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
        if isinstance(child, ScalarNode):
            sizes[id(child)], heights[id(child)] = 1, 0
            frame[2] += 1
            continue
        if level + 1 > MAX_DEPTH:
            raise _NodeProblem(
                child.start_mark.line + 1,
                f"YAML: nests deeper than {MAX_DEPTH} levels",
                _where_in(stack),
            )
        pairs = isinstance(child, MappingNode)
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
        if isinstance(node, MappingNode):
            key = node.value[taken // 2][0]
            merged = key.tag == _MERGE_TAG
            if taken % 2 and not merged:  # a value (a key is named by its mapping)
                name = key.value if isinstance(key, ScalarNode) else "?"
                where = _path(where, str(name))
        elif merged:  # the list of mappings of a merge
            merged = False
        else:
            where = f"{where}[{taken}]"
    return where


def _by_name(root: Node | None, where: str) -> str:
    """`where` with a resource's `resources.KIND[N]` said `KIND[NAME]` when it has a name (as
    the problems of its parameters name it), else as it is."""
    if not where.startswith("resources.") or not isinstance(root, MappingNode):
        return where
    for key, value in root.value:
        if key.value != "resources" or not isinstance(value, MappingNode):
            continue
        for kind, items in value.value:
            head = _path("resources", str(kind.value)) + "["
            if not isinstance(items, SequenceNode) or not where.startswith(head):
                continue
            index, found, rest = where[len(head) :].partition("]")
            if not found or not index.isdigit() or int(index) >= len(items.value):
                continue
            name = _name_of(items.value[int(index)])
            if name:
                return f"{kind.value}[{name}]{rest}"
    return where


def _name_of(item: Node) -> str:
    """The name a composed resource gives itself (its first `name` key's string), or ""."""
    names = [
        v.value
        for k, v in (item.value if isinstance(item, MappingNode) else [])
        if k.value == "name" and isinstance(v, ScalarNode) and v.tag == _STR_TAG
    ]
    return str(names[0]) if names else ""


def _plain(node: Node, constructor: SafeConstructor, where: str, depth: int = 0) -> Any:
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
    if isinstance(node, MappingNode):
        out = LocDict()
        out.line, out.lines, out.raw = node.start_mark.line + 1, {}, {}
        lines, raw = out.lines, out.raw
        merge: tuple[Node, Node] | None = None
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
    if isinstance(node, SequenceNode):
        seq = LocList(
            _plain(item, constructor, f"{where}[{i}]", depth + 1)
            for i, item in enumerate(node.value)
        )
        seq.line = node.start_mark.line + 1
        seq.lines = [item.start_mark.line + 1 for item in node.value]
        return seq
    return _scalar(node, constructor, where)


_SCALAR = ScalarNode


def _path(where: str, key: str) -> str:
    """`where` and then `key` (shortened), as problems name a value."""
    shown = key if len(key) <= 40 else key[:37] + "..."
    return f"{where}.{shown}" if where else shown


def _scalar(node: Node, constructor: SafeConstructor, where: str) -> Any:
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
    except MarkedYAMLError as err:
        raise _NodeProblem(line, str(err.problem or err.context), where) from err
    except (ValueError, OverflowError, TypeError) as err:  # e.g. a date like 2001-13-45
        raise _NodeProblem(line, f"cannot read {show(node.value)}: {err}", where) from err


def _merge(
    out: LocDict,
    line: int,
    value: Node,
    constructor: SafeConstructor,
    where: str,
    *,
    depth: int,
) -> None:
    """Add to `out` the keys it lacks of the mapping(s) of a merge key (`<<: *base` or
    `<<: [*a, *b]`, the first mapping listed winning, as in go-yaml) at `line`, which is the
    line of each key it adds. Aliases were bounded by _check_shape like any others."""
    sources = value.value if isinstance(value, SequenceNode) else [value]
    if not sources or not all(isinstance(source, MappingNode) for source in sources):
        raise _NodeProblem(
            line, "<< takes a mapping or a list of mappings, e.g. <<: *base", where or "<<"
        )
    # Each mapping is nested in the `<<` value, and in its list too when it is in one (as
    # _check_shape counts it).
    inner = depth + 1 + isinstance(value, SequenceNode)
    for source in sources:
        mapping = _plain(source, constructor, where, inner)
        for key, item in mapping.items():
            if key not in out:
                out[key] = item
                out.lines[key] = line
                if key in mapping.raw:
                    out.raw[key] = mapping.raw[key]


# A graph file in plain block style (most are: `key: value` lines, `- ` items, plain or quoted
# scalars on one line) is read here by lines, without libyaml's nodes: ~80 K instructions of a
# resource's ~125 K went to composing its nodes (a node and two marks a scalar, their
# resolve() and __init__ calls) and turning them into data. Any other text (a flow `{...}`, an
# anchor, a tag, a block scalar, a scalar over lines, a tab, bytes outside printable ASCII, a
# duplicate key, a bad indentation, a value libyaml's constructor refuses...) is composed by
# libyaml as before: this reader makes the data _plain makes of libyaml's nodes (lines and raw
# texts included), or none (tests/mgmt/test_yamlgraph_block.py compares them on random
# texts), and every problem is told by the full parse.
class _NotBlock(Exception):
    """Not in the block style _block_doc reads: libyaml composes the text."""


_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\n"  # a tab, a CR, a control, a non-ASCII: libyaml's
# A plain key: a letter or "_", then up to 199 of these or digits, ".", ":" or "-" (ASCII), checked
# without a regular expression (its compile cost every run ~0.5 M instructions, for the few
# distinct keys a graph has: _plain_key keeps each answer).
_KEY_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_KEY_REST = _KEY_FIRST | frozenset("0123456789.:-")
_KEY_LONGEST = 200
_KEYS: dict[str, bool] = {}  # each key seen: whether it is a plain string key (_plain_key)
_KEYS_KEPT = 4096
# What a plain scalar may not start with (YAML's indicators; `-`, `?` and `:` too, though a
# plain scalar may start with one before a non-space: `-1`).
_NOT_FIRST = frozenset("-?:,[]{}#&*!|>'\"%@`")
_QUOTES = frozenset("\"'")
_BLOCK_DEPTH = 16  # nested deeper: libyaml's (its bound, MAX_DEPTH, told there)
Row = tuple[int, int, str]  # a line's number, its indentation and its text after it


def _block_doc(data: bytes) -> LocDict | None:
    """The data _plain makes of `data`'s nodes, if `data` is in the block style read here;
    else None (libyaml composes it)."""
    if data.translate(None, _PRINTABLE):
        return None
    rows = [
        (number, len(line) - len(text), text)
        for number, line in enumerate(data.decode("ascii").split("\n"), 1)
        if (text := line.lstrip(" ")) and text[0] != "#"
    ]
    if not rows or rows[0][1]:
        return None
    try:
        doc, at = _BlockReader(rows).mapping(0, 0, rows[0][2], 0)
    except _NotBlock:
        return None
    return doc if at == len(rows) else None


def _word(key: str) -> bool:
    """Whether `key` is a plain word (_KEY_FIRST, then _KEY_REST), at most _KEY_LONGEST long."""
    return (
        0 < len(key) <= _KEY_LONGEST
        and key[0] in _KEY_FIRST
        and all(char in _KEY_REST for char in key)
    )


def _plain_key(key: str) -> bool:
    """Whether `key` is a key read here: a plain word that YAML takes as a string."""
    known = _KEYS.get(key)
    if known is None:
        if len(_KEYS) >= _KEYS_KEPT:  # a graph of many keys: bounded, whatever it holds
            _KEYS.clear()
        known = _KEYS[key] = _word(key) and _resolved(key) == _STR_TAG
    return known


class _BlockReader:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.constructor: SafeConstructor | None = None

    def mapping(self, at: int, column: int, text: str, depth: int) -> tuple[LocDict, int]:
        """The mapping whose first key is rows[at] (its `text` at `column`: after an item's
        dash, or the row's own); and the row after it."""
        if depth > _BLOCK_DEPTH:
            raise _NotBlock
        rows, end = self.rows, len(self.rows)
        out = LocDict()
        number = out.line = rows[at][0]
        lines: dict[str, int] = {}
        raw: dict[str, str] = {}
        out.lines, out.raw = lines, raw
        while True:
            key, colon, rest = text.partition(": ")
            if not colon:
                if text[-1:] != ":":
                    raise _NotBlock  # a scalar among keys
                key, rest = text[:-1], ""
            if not _plain_key(key) or key in out:
                raise _NotBlock  # a key YAML reads otherwise, or a duplicate
            lines[key] = number
            at += 1
            rest = rest.strip(" ")
            if rest == "{}":  # `resources: {}`: as _plain makes libyaml's node
                out[key] = mapping = LocDict()
                mapping.line, mapping.lines, mapping.raw = number, {}, {}
            elif rest == "[]":  # `edges: []`
                out[key] = seq = LocList()
                seq.line, seq.lines = number, []
            elif rest and rest[0] != "#":
                out[key], source = self.scalar(rest)
                if source is not None:
                    raw[key] = source
            elif at < end and rows[at][1] > column:  # a block below the key
                out[key], at = self.block(at, depth + 1)
            elif at < end and rows[at][1] == column and rows[at][2][:2] == "- ":
                out[key], at = self.sequence(at, column, depth + 1)  # `key:` then `- a`
            else:
                out[key], raw[key] = None, ""  # an empty value: null
            if at == end:
                return out, at
            number, col, text = rows[at]
            if col != column:
                break
            if text[:2] == "- " or text == "-":
                raise _NotBlock  # an item among keys
        if col > column:
            raise _NotBlock  # a scalar over lines, or a bad indentation
        return out, at

    def sequence(self, at: int, column: int, depth: int) -> tuple[LocList, int]:
        """The sequence whose first dash is rows[at] (at `column`); and the row after it."""
        if depth > _BLOCK_DEPTH:
            raise _NotBlock
        rows, end = self.rows, len(self.rows)
        out = LocList()
        out.line, out.lines = rows[at][0], []
        while True:
            number, _, text = rows[at]
            body = text[2:].lstrip(" ")
            item = body.rstrip(" ")
            if not item or item[0] == "#" or item[:2] == "- " or item == "-":
                raise _NotBlock  # an item on its own line, or a list in a list
            first = item[0]
            if first not in _QUOTES and (": " in item or item[-1] == ":"):
                value, at = self.mapping(at, column + len(text) - len(body), item, depth + 1)
                out.append(value)
            else:
                out.append(self.scalar(item)[0])
                at += 1
                if at < end and rows[at][1] > column:
                    raise _NotBlock  # a scalar over lines
            out.lines.append(number)
            if at == end:
                return out, at
            col, text = rows[at][1], rows[at][2]
            if col != column or text[:2] != "- ":
                break
        if col > column:
            raise _NotBlock
        return out, at

    def block(self, at: int, depth: int) -> tuple[Any, int]:
        """The mapping or the sequence that starts at rows[at]."""
        _, column, text = self.rows[at]
        if text[:2] == "- ":
            return self.sequence(at, column, depth)
        return self.mapping(at, column, text, depth)

    def scalar(self, text: str) -> tuple[Any, str | None]:
        """The value of a scalar's `text` (stripped; no comment after a quoted one), and its
        source for a plain one (LocDict.raw), None for a quoted one."""
        first = text[0]
        if first == '"':
            inner = text[1:-1]
            if text[-1] != '"' or len(text) < 2:
                raise _NotBlock
            if "\\" not in inner.replace("\\n", "").replace("\\t", ""):  # the usual escapes
                if '"' in inner:
                    raise _NotBlock
                return inner.replace("\\n", "\n").replace("\\t", "\t"), None
            # \\ and \" too (no other escape): \\ first, then each backslash starts a pair
            bare = inner.replace("\\\\", "").replace("\\n", "").replace("\\t", "")
            bare = bare.replace('\\"', "")
            if "\\" in bare or '"' in bare:
                raise _NotBlock
            inner = "\\".join(
                part.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')
                for part in inner.split("\\\\")
            )
            return inner, None
        if first == "'":
            inner = text[1:-1]
            if text[-1] != "'" or len(text) < 2 or "'" in inner.replace("''", ""):
                raise _NotBlock
            return inner.replace("''", "'"), None
        if first in _NOT_FIRST:
            raise _NotBlock
        cut = text.find(" #")
        if cut >= 0:
            text = text[:cut].rstrip(" ")
        if ": " in text or text[-1] == ":":
            raise _NotBlock  # YAML's "mapping values are not allowed here"
        if first in _IMPLICIT or _ANY_FIRST:
            tag = _resolved(text)
            if tag != _STR_TAG:
                return self.typed(tag, text), text
        return text, text

    def typed(self, tag: str, value: str) -> Any:
        """A plain scalar of another type than a string (1, true, null...), constructed as
        _scalar constructs it; a problem: libyaml's parse tells it."""
        if self.constructor is None:
            self.constructor = _safe_constructor()()
        mark = Mark("", 0, 0, 0, None, 0)  # (only a problem reads it: then libyaml's)
        try:
            return _scalar(ScalarNode(tag, value, mark, mark), self.constructor, "")
        except _NodeProblem:
            raise _NotBlock from None


def _resolved(value: str) -> str:
    """The tag of a plain scalar `value`, as _Loader.resolve gives it."""
    first = value[:1]
    found = _MATCHERS.get(first)
    for tag, match in _matchers(first) if found is None else found:
        if match(value):
            return tag
    return _STR_TAG


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
        # With `incremental`, a parse without aliases nor warnings: its bytes and libyaml's
        # nodes, for yamlreparse's Reuse (Loaded.reuse).
        self.kept: tuple[bytes, Node] | None = None

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
        # A plain block-style file is read by lines (_block_doc); else, or for a parse whose
        # nodes the next one reuses (`incremental`), libyaml composes it.
        doc: Any = _block_doc(data) if self.parsed is None else None
        node: Node | None = None
        aliases = 0
        if doc is None:
            try:
                node = _compose(data)
                if node is None or node.tag.endswith(":null"):  # nothing, or `---`, `~`
                    raise self.fail(1, EMPTY_GRAPH)
                aliases = _check_shape(node, data) if _ANCHOR in data else 0
                doc = _plain(node, _safe_constructor()(), "")
            except YAMLError as err:
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
            assert node is not None  # (composed: an incremental parse reads no block)
            self.kept = (data, node)  # (mgmt.yamlreparse.incremental_parse makes its Reuse)
        return loaded

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
        graph = loaded.graph
        vertices = graph.vertices
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
            plain, required = _plain_keys(cls, kind)  # type: ignore[arg-type]
            for index, item in enumerate(items):
                # Most resources are of string params only, written plainly: built at one
                # call (_plain_keys); any other, or any problem, by _resource.
                res = _built(cls, item, plain, required) or self._resource(
                    cls, kind, item, items.lines[index], index
                )
                if res is None:
                    if isinstance(item, dict) and isinstance(item.get("name"), str):
                        self.refused.add((kind, item["name"].removeprefix(EXPORT_PREFIX)))
                    continue
                given = item["name"]  # a string, as _resource() checked
                if self.parsed is not None:
                    self.parsed.append((kind, index, given, res))
                if given.startswith(EXPORT_PREFIX):
                    loaded.exported.append(res)  # validated under its name without the "@@"
                    continue
                first = first_lines.setdefault((res.kind, res.name), items.lines[index])
                try:
                    graph.add_or_merge(res)
                except (GraphError, ValidationError) as err:
                    also = (
                        f" (also declared at line {first})" if first != items.lines[index] else ""
                    )
                    self.problem(items.lines[index], str(res), f"{err}{also}")
                    continue
                if len(vertices) > limit:  # stop here: the rest is not built
                    raise self.fail(items.lines[index], f"resources.{kind}: {too_many(limit + 1)}")
                if checked_together and first == items.lines[index]:
                    together.setdefault(cls, []).append((res.kind, res.name))
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
        # (`where`, the resource's name in a problem, is made only for one: fmt_key's call
        # and its string for every resource were ~2% of a 1,000-file graph's parse.)
        legacy = _legacy_keys(kind)
        if not legacy.isdisjoint(item):
            for key in [k for k in item if k in legacy]:
                where = fmt_key((kind, name))
                self.warn(item.lines[key], where, f"'{key}' is an old mgmt key with no effect")
                del item[key]
        meta_data = item.get("meta")
        meta: Meta | None = _NO_META
        if not meta_data:  # none (or an empty value: no meta either)
            pass
        elif not isinstance(meta_data, dict):
            self.problem(
                item.lines.get("meta", line),
                fmt_key((kind, name)),
                f"meta: expected a mapping, got {show(meta_data)}",
            )
        else:
            try:
                meta = build(Meta, meta_data, raw=getattr(meta_data, "raw", None), prefix="meta.")
            except ValidationError as err:
                meta = None
                for each in (err, *err.others):
                    where = fmt_key((kind, name))
                    self.problem(self._line_of(item, each.key, line), where, str(each))
        # The meta is given before validate: a kind may check it (http:client's poll).
        given = {"name": name.removeprefix(EXPORT_PREFIX), "meta": meta or _NO_META}
        try:
            res = build(cls, item, raw=item.raw, skip=_GIVEN, given=given)
            res.validate()
            if res.name[:1] == "$":  # (no call for every other name: ~1 M instructions a 1,000)
                check_name(res.name, res.meta)
        except ValidationError as err:
            where = fmt_key((kind, name))
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
