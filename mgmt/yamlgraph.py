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

import difflib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import GraphError, MgmtError, ValidationError
from engine.graph import Edge, Graph, Key, fmt_key
from engine.meta import Meta
from engine.params import build, close_match, field_names
from engine.resource import Resource, kinds, lookup
from mgmt.collectscope import check_kind

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


class GraphFileError(MgmtError):
    """One or more problems in a graph file; each line is `file:line: where: what`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
class Collect:
    """Which exported resources to pull into the local graph (see mgmt.cluster.link)."""

    # The kind of exported resources to pull in.
    kind: str
    # Only resources whose name starts with this (a path prefix for files). Default: all.
    pattern: str = ""
    # Only the resource of this exact name (the language's collect statement). Default: any.
    name: str | None = None
    # Only from this host. Default: any host.
    host: str | None = None
    # Params and meta params that override the exported ones.
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def collects(entries: list[Collect], kind: str, name: str) -> bool:
    """Whether a collect entry may bring in the resource `kind[name]` (its pattern, for a
    file, may also match the `path` param, which is not known here: the name is enough)."""
    return any(
        c.kind == kind and (name == c.name if c.name is not None else name.startswith(c.pattern))
        for c in entries
    )


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


def load_file(path: Path) -> Loaded:
    """Read and parse a graph file; GraphFileError on any problem."""
    try:
        data = path.read_bytes()
        text = data.decode()
    except (OSError, UnicodeDecodeError) as err:
        raise GraphFileError([f"{path}: cannot read: {err}"]) from err
    loaded = parse(text, str(path))
    loaded.digest = hashlib.sha256(data).hexdigest()  # of the bytes, as the agent compares
    return loaded


def parse(text: str, filename: str = "<graph>") -> Loaded:
    """Parse graph-file text; GraphFileError lists every problem found."""
    return _Parser(filename).parse(text)


def _plain(node: yaml.Node, constructor: yaml.constructor.SafeConstructor) -> Any:
    """A composed YAML node as Python data, with line numbers kept (1-based)."""
    if isinstance(node, yaml.MappingNode):
        out = LocDict()
        out.line, out.lines, out.raw = node.start_mark.line + 1, {}, {}
        for key_node, value_node in node.value:
            key = _plain(key_node, constructor)
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise GraphFileError([f"line {key_node.start_mark.line + 1}: {key}: duplicate key"])
            out[key] = _plain(value_node, constructor)
            out.lines[key] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.ScalarNode) and not value_node.style:
                out.raw[key] = value_node.value
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LocList(_plain(item, constructor) for item in node.value)
        seq.line = node.start_mark.line + 1
        seq.lines = [item.start_mark.line + 1 for item in node.value]
        return seq
    return constructor.construct_object(node, deep=True)


class _Parser:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, line: int, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}:{line}: {where}: {message}")

    def warn(self, line: int, where: str, message: str) -> None:
        self.warnings.append(f"{self.filename}:{line}: {where}: {message}")

    def parse(self, text: str) -> Loaded:
        try:
            node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            doc = _plain(node, yaml.constructor.SafeConstructor()) if node else None
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark else 0
            raise GraphFileError(
                [f"{self.filename}:{line}: YAML syntax error: {err.problem or err}"]
            ) from err
        except yaml.YAMLError as err:
            raise GraphFileError([f"{self.filename}: YAML error: {err}"]) from err
        except RecursionError as err:  # e.g. a recursive alias
            raise GraphFileError(
                [f"{self.filename}: YAML nests too deeply (a recursive alias?)"]
            ) from err
        except GraphFileError as err:
            raise GraphFileError(
                [f"{self.filename}:{p.removeprefix('line ')}" for p in err.problems]
            ) from err
        if not isinstance(doc, LocDict):
            raise GraphFileError([f"{self.filename}:1: the graph file must be a mapping"])
        loaded = self._document(doc)
        if self.problems:
            raise GraphFileError(self.problems)
        loaded.warnings = self.warnings
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
                for index, edge in enumerate(edges):
                    self._edge(edge, edges.lines[index], index, loaded, edge_lines)
            else:
                self.problem(doc.lines["edges"], "edges", "expected a list of edges")
        if not self.problems:
            cycle = graph.find_cycle()
            if cycle:
                line = edge_lines.get((cycle[0], cycle[1]), doc.lines.get("edges", 0))
                names = " -> ".join(fmt_key(k) for k in cycle)
                self.problem(line, "edges", f"cycle: {names}")
        return loaded

    def _resources(self, resources: LocDict, loaded: Loaded) -> None:
        known = kinds()
        for kind, items in resources.items():
            line = resources.lines[kind]
            cls = lookup(kind)
            if cls is None:
                match = difflib.get_close_matches(kind, known, n=1)
                hint = f" (did you mean '{match[0]}'?)" if match else ""
                self.problem(
                    line,
                    f"resources.{kind}",
                    f"unknown kind '{kind}'{hint}; known kinds: {', '.join(known)}",
                )
                continue
            if not isinstance(items, LocList):
                self.problem(line, f"resources.{kind}", "expected a list of resources")
                continue
            for index, item in enumerate(items):
                res = self._resource(cls, kind, item, items.lines[index], index)
                if res is None:
                    continue
                if str(item.get("name")).startswith(EXPORT_PREFIX):
                    loaded.exported.append(res)  # validated under its name without the "@@"
                    continue
                try:
                    loaded.graph.add(res)
                except GraphError as err:
                    self.problem(items.lines[index], str(res), str(err))

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
        where = f"{kind}[{name}]"
        legacy = LEGACY["*"] | LEGACY.get(kind, set())
        for key in [k for k in item if k in legacy]:
            self.warn(item.lines[key], where, f"'{key}' is an old mgmt key with no effect")
            del item[key]
        meta_data = item.get("meta") or {}
        meta: Meta | None = None
        if not isinstance(meta_data, dict):
            self.problem(
                item.lines.get("meta", line), where, f"meta: expected a mapping, got {meta_data!r}"
            )
            meta_data = {}
        try:
            meta = build(Meta, meta_data, raw=getattr(meta_data, "raw", None), prefix="meta.")
        except ValidationError as err:
            self.problem(self._line_of(item, err.key, line), where, str(err))
        try:
            data = {**item, "name": name.removeprefix(EXPORT_PREFIX)}
            res = build(cls, data, raw=item.raw, skip=frozenset({"meta"}))
            res.validate()
        except ValidationError as err:
            self.problem(self._line_of(item, err.key, line), where, str(err))
            return None
        if meta is None:
            return None
        res.meta = meta
        return res

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
        if (kind, name) not in loaded.graph and not collects(loaded.collect, kind, name):
            self.problem(data.line, where, f"no resource {kind}[{name}] in the graph")
            return None
        return (kind, name)

    def _edge(
        self, edge: Any, line: int, index: int, loaded: Loaded, lines: dict[tuple[Key, Key], int]
    ) -> None:
        graph = loaded.graph
        if not isinstance(edge, LocDict):
            self.problem(line, f"edges[{index}]", "expected a mapping with from, to")
            return
        where = f"edge {edge.get('name') or index}"
        self._keys(edge, EDGE_KEYS, where, set())
        for key in ("from", "to"):
            if key not in edge:
                self.problem(line, where, f"'{key}' is required")
        notify = edge.get("notify", False)
        if not isinstance(notify, bool):
            self.problem(
                edge.lines["notify"], where, f"notify: expected true or false, got {notify!r}"
            )
            return
        if "from" not in edge or "to" not in edge:
            return
        src = self._vertex(edge["from"], edge.lines["from"], f"{where}: from", loaded)
        dst = self._vertex(edge["to"], edge.lines["to"], f"{where}: to", loaded)
        if src is None or dst is None:
            return
        if src == dst:
            self.problem(line, where, f"edge from {fmt_key(src)} to itself")
            return
        if src not in graph or dst not in graph:  # to or from a collected resource
            if "send" in edge or "recv" in edge:
                self.problem(line, where, "send/recv cannot involve a collected resource (yet)")
                return
            loaded.pending.append((src, dst, Edge(str(edge.get("name") or ""), notify)))
            return
        pairs = self._sendrecv(edge, line, where, graph.vertices[src], graph.vertices[dst])
        if pairs is None:
            return
        graph.connect(src, dst, Edge(str(edge.get("name") or ""), notify, pairs))
        lines[(src, dst)] = line

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
        sends = getattr(type(sender), "SENDS", ())
        if send not in sends:
            offer = ", ".join(sends) or "nothing"
            self.problem(edge.lines["send"], where, f"send: {sender} sends {offer}, not '{send}'")
            return None
        params = [n for n in field_names(type(receiver)) if n not in ("name", "meta")]
        if recv not in params:
            hint = close_match(recv, params)
            self.problem(edge.lines["recv"], where, f"recv: {receiver} has no param '{recv}'{hint}")
            return None
        return ((send, recv),)

    def _collect(self, collect: Any, line: int, loaded: Loaded) -> None:
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
                self.problem(item.lines.get("kind", item.line), where, f"unknown kind {kind!r}")
                continue
            if (refused := check_kind(kind)) is not None:
                self.problem(item.lines.get("kind", item.line), where, refused)
                continue
            if not isinstance(pattern, str):
                self.problem(item.lines["pattern"], where, "pattern: expected a string")
                continue
            loaded.collect.append(Collect(kind, pattern))
