"""A watched graph file's parses: the first keeps what an edit's re-parse needs
(`incremental_parse`, `Reuse`), then each edit is re-parsed in O(change) (`reparse`). A daemon's
agent imports it for its watched file; a run of a graph file that ends at its first convergence
never does (mgmt.yamlgraph's parse alone: ~700 lines and three dataclasses it no longer loads,
docs/benchmarks.md, "startown").
"""

from __future__ import annotations

import copy
import functools
import logging
import operator
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# (imported by mgmt.yamlgraph already, its resolver's patterns on use)
from yaml.error import Mark, MarkedYAMLError, YAMLError
from yaml.nodes import MappingNode, Node, SequenceNode

from engine import collector
from engine.derive import Change, Derived, derive
from engine.errors import GraphError
from engine.graph import Edge, Graph, Key, both, key_of
from engine.limits import too_many
from engine.resource import Resource, lookup, validates_together
from mgmt.yamlgraph import (
    _ANCHOR,
    EXPORT_PREFIX,
    GraphFileError,
    Loaded,
    LocDict,
    _check_shape,
    _compose,
    _importing,
    _name_of,
    _NodeProblem,
    _NoYAML,
    _Parser,
    _path,
    _plain,
    _safe_constructor,
    _yaml_problem,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mgmt.collectscope import Collect

log = logging.getLogger("main")

# Incremental re-parsing (issue 16) ------------------------------------------------------------
#
# An edit of a few resources (or edges) of a big graph file re-parses those alone, in
# O(change): the new bytes are compared with the last version's (at memcmp speed), and when
# everything that changed lies within the items of one block list (a kind's resources, or the
# `edges`), the whole lines of those items are parsed on their own, as a list; an item whose
# text is unchanged, and every other resource, is the very object of the last parse (so the
# engine keeps those vertices on an identity check). Anything else, or any problem or warning at
# all, is a full parse: its result and its messages are always those of parse().
#
# Where the items are is not kept per item (offsets that every edit would shift): a full parse
# checks that in each such list the lines that start with the list's "- " at its column (its
# "dash lines") are exactly its items' first lines, and every edit keeps it so (the new lines'
# dash lines are their items'); so the items an edit touches are found by looking for the dash
# lines around it in the text. What is kept per item is its text, whole lines from its dash line
# to the next one's (its "chunk"): the same chunk is the same item.

_BREAKS_BUT_NL = ("\r", "\x85", "\u2028", "\u2029")  # YAML line breaks other than "\n"
_BYTE_BREAKS = tuple(b.encode() for b in _BREAKS_BUT_NL)
_RESOURCES_DEPTH = 3  # lists/mappings around a resource: the file, `resources`, its kind's list


@functools.cache
def _refused_char() -> re.Pattern[str]:
    """A character YAML does not take (its reader's check: C0 controls but tab and line
    breaks, DEL, C1 but NEL, surrogates, U+FFFE and U+FFFF); compiled on first use."""
    return re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Told(Exception):
    """A problem of items of a list read alone (Reuse._fragment) that a full parse of the file
    would stop at and tell just so: a YAML error, or a value's (_NodeProblem, with the list's
    node, whose items name it); `at`: the byte of the file where those items start, `first`:
    where the list's first item does."""

    def __init__(self, err: YAMLError | _NodeProblem, node: Node | None) -> None:
        super().__init__(str(err))
        self.err = err
        self.node = node
        self.at = self.first = 0


def _alone(err: YAMLError, fragment: bytes, found: _List, more: bool) -> bool:
    """Whether the YAML error of `fragment`, whole items of the block list `found` read alone
    (`more`: the next line of the file is another item's dash line), is the one a full parse of
    the file stops at, at the same place: the text before them has none, and they read as they
    do in the file (_block_items) up to the error, if it is
    - the scanner's or the parser's (not about an alias: its anchor may be elsewhere);
    - at a line of the fragment; or at its end, where the file has the next item's "-" (the
      next token, on the same line), but for an end of the stream (an unclosed quote goes on
      in the file) or a message naming that token (PyYAML's, not libyaml's);
    - about the list itself (its context the fragment's first "-") only if it is `nested`:
      then the file has the same tokens there (else a "- " further in, or a key less indented
      than an item's, ends the list there, and the mapping of its key tells);
    - in a fragment without a character YAML refuses: the reader tells one before a syntax
      error up to a buffer earlier, and the buffers' bounds differ."""
    with _importing():
        from yaml.parser import ParserError
        from yaml.scanner import ScannerError

    if not isinstance(err, (ScannerError, ParserError)):
        return False
    mark, context, problem = err.problem_mark, err.context_mark, str(err.problem)
    if mark is None or mark.line > (lines := fragment.count(b"\n")):
        return False
    if mark.line == lines and (not more or "end of stream" in problem or "<" in problem):
        return False
    listed = context is not None and (context.line, context.column) == (0, found.dash)
    if isinstance(err, ParserError) and (context is None or (listed and not found.nested)):
        return False
    return _refused_char().search(fragment.decode("utf-8", errors="replace")) is None


def _refusal(parser: _Parser, offset: int) -> GraphFileError:
    """The full parse's error for the problems `parser` found in items read alone, whose first
    line is the file's line `offset` + 1: each at its line of the file, in their order."""
    order = sorted(range(len(parser.problems)), key=parser._lines.__getitem__)
    problems = []
    for i in order:
        line = parser._lines[i]
        told = parser.problems[i][len(f"{parser.filename}:{line}: ") :]
        problems.append(f"{parser.filename}:{line + offset}: {told}")
    return GraphFileError(problems)


def _items(fragment: bytes, found: _List, more: bool) -> list[tuple[Node, Any]] | None:
    """The items of `fragment`, whole lines of the block list `found` (of resources or
    edges) from an item's dash line (`more`: followed by another item's in the file), with
    their nodes (lines and marks counted from the fragment's start); _Told for a problem a
    full parse would tell as it is found here (`_alone`), None on any other (or an alias):
    a full parse says it."""
    node = None
    try:
        node = _compose(fragment)
        if not isinstance(node, SequenceNode) or (
            _ANCHOR in fragment and _check_shape(node, fragment, _RESOURCES_DEPTH - 1)
        ):
            return None
        seq = _plain(node, _safe_constructor()(), "", _RESOURCES_DEPTH - 1)
    except YAMLError as err:
        if _alone(err, fragment, found, more):
            raise _Told(err, None) from err
        return None
    except _NodeProblem as err:
        # (not a bound of the shape, which _check_shape finds first in a file with "&")
        told = node is not None and _ANCHOR not in fragment and err.where.startswith("[")
        if told and not err.message.startswith("YAML:"):
            raise _Told(err, node) from err
        return None
    return list(zip(node.value, seq, strict=True))


@dataclass(frozen=True)
class _Item:
    """A resource of the parsed file, as reparse() may reuse it."""

    kind: str
    name: str  # as written ("@@" for an export)
    res: Resource

    @property
    def key(self) -> Key:
        return (self.kind, self.name.removeprefix(EXPORT_PREFIX))

    @property
    def export(self) -> bool:
        return self.name.startswith(EXPORT_PREFIX)


Ends = tuple[Key, Key]
EdgeItem = tuple[Key, Key, Edge]


@dataclass(frozen=True)
class _List:
    """A block list of the file whose items reparse() may redo: its whole lines (byte offsets
    `start`, the first dash line's, and `end`, the line of the next token), the column of its
    "-"s, its kind ("" for `edges`), and what each chunk of it declared (shared from one
    version to the next: see Reuse.owner)."""

    start: int
    end: int
    dash: int
    kind: str
    chunks: dict[bytes, Any]  # _Item (resources) or EdgeItem (edges)
    # Its "-"s further in than its key (not YAML's "indentless" list, at the key's column):
    # read alone, its items read as in the file, what ends it too.
    nested: bool = False

    @property
    def marker(self) -> bytes:
        """What precedes each item's "-" but the first: a line break and the indentation."""
        return b"\n" + b" " * self.dash + b"- "

    def moved(self, at: int, shift: int) -> _List:
        """This list after an edit before `at` (not inside this list) that added `shift`
        bytes."""
        if self.start < at:
            return self
        start, end = self.start + shift, self.end + shift
        return _List(start, end, self.dash, self.kind, self.chunks, self.nested)

    def split(self, data: bytes, start: int, end: int) -> list[bytes]:
        """The chunks of `data[start:end]` (whole items of this list, from a dash line)."""
        marker, out = self.marker, []
        at = start
        while at < end:
            nxt = data.find(marker, at, end)
            cut = end if nxt < 0 else nxt + 1
            out.append(data[at:cut])
            at = cut
        return out

    def around(self, data: bytes, head: int, last: int) -> tuple[int, int]:
        """The whole items of this list (in `data`) around bytes head..last (the bytes an edit
        changed): from the dash line before the line of `head` (so an edit on an item's first
        line redoes the item before it too: what ends it may change, `|+`; and the two versions
        may have the next line's indentation in common, lines inserted), to the next dash line
        at or after `last` (or the list's end)."""
        marker = self.marker
        target = max(data.rfind(b"\n", 0, head), self.start)
        found = data.rfind(marker, self.start - 1, target - 1 + len(marker))
        start = found + 1 if found >= 0 else self.start
        nxt = data.find(marker, max(last, start + 1) - 1, self.end)
        return start, self.end if nxt < 0 else nxt + 1


class _Owner:
    """Which version's the chunks of a parse's lists are now: an edit changes them in place (no
    copy of a map of N items) and hands them to its own Reuse, which keeps how to undo that
    (`Reuse.undo`): an edit of an older version (the agent went back to the graph before, the
    engine having refused the new one) undoes the edits since (`Reuse.hold`)."""

    current: Reuse | None = None


# A change of a map shared from version to version: the map, the entries the edit removed
# (their values then), and the entries it set then.
_Undo = tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]


def _changed(target: dict[Any, Any], gone: Iterable[Any], came: Iterable[tuple[Any, Any]]) -> _Undo:
    """Remove the keys `gone` from `target`, then set `came`; what undoes and redoes it."""
    removed = {key: target.pop(key) for key in gone}
    added = dict(came)
    target.update(added)
    return target, removed, added


def _redo(changes: tuple[_Undo, ...], undo: bool) -> None:
    """Undo (or make again) an edit's `changes` of the shared maps."""
    for target, removed, added in changes:
        before, after = (added, removed) if undo else (removed, added)
        for key in before:
            del target[key]
        target.update(after)


@dataclass(frozen=True)
class Reuse:
    """A parsed graph file, for the next parse of its edited text: its bytes, its lists of
    resources (and `edges`) whose items may be parsed alone, its exports, collects and
    pending edges, and the edges its `edges` list declares (one per pair of ends, as
    Graph.connect merges them) with how many items declare each pair."""

    data: bytes
    lists: tuple[_List, ...]
    edge_list: _List | None
    exported: list[Resource]
    export_keys: frozenset[Key]
    collect: list[Collect]
    pending: list[tuple[Key, Key, Edge]]
    edges: dict[Ends, Edge]
    declared: dict[Ends, int]
    owner: _Owner
    # The version this one was edited from (while it lives) and how to make its maps its again.
    parent: weakref.ref[Reuse] | None = None
    undo: tuple[_Undo, ...] = ()

    def hold(self) -> bool:
        """Make the shared maps this version's: the edits from their last common version to
        the one that holds them are undone, the latest first, then this one's made again;
        False if a version between is gone (then a full parse)."""
        mine = self._lineage()
        depth = {id(version): n for n, version in enumerate(mine)}
        undone: list[Reuse] = []
        current = self.owner.current
        while current is not None and id(current) not in depth:
            undone.append(current)
            current = current.parent() if current.parent is not None else None
        if current is None:
            return False
        for version in undone:
            _redo(version.undo, undo=True)
        for version in reversed(mine[: depth[id(current)]]):
            _redo(version.undo, undo=False)
        self.owner.current = self
        return True

    def _lineage(self) -> list[Reuse]:
        """This version and those it was edited from that still live, back to the full
        parse or the first gone."""
        out: list[Reuse] = [self]
        while (parent := out[-1].parent() if out[-1].parent is not None else None) is not None:
            out.append(parent)
        return out

    @classmethod
    def of(
        cls,
        data: bytes,
        root: Node,
        parsed: list[tuple[str, int, str, Resource]],
        loaded: Loaded,
        edges: list[EdgeItem | None],
    ) -> Reuse | None:
        """The reusable state of a full parse; None when a later edit must parse it all."""
        if data[:3] == b"\xef\xbb\xbf" or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return None  # marks count characters after a BOM, or in UTF-16
        if data[:1] == b"%" or b"\n%" in data:
            return None  # a directive (%TAG !! ...): a part read alone would read tags otherwise
        if any(b in data for b in _BYTE_BREAKS) or not isinstance(root, MappingNode):
            return None  # another line break: lines are found by "\n" alone
        if len({(kind, name.removeprefix(EXPORT_PREFIX)) for kind, _, name, _ in parsed}) != len(
            parsed
        ):
            return None  # the same resource twice
        at = _Offsets(data)
        lists: list[_List] = []
        taken = 0
        for key, value in root.value:
            if key.value != "resources":
                continue
            if not isinstance(value, MappingNode):
                return None
            for kind_node, seq in value.value:
                if not isinstance(seq, SequenceNode):
                    return None
                items = parsed[taken : taken + len(seq.value)]
                taken += len(seq.value)
                if len(items) != len(seq.value) or any(i[0] != kind_node.value for i in items):
                    return None  # a resource was refused
                made = [_Item(k, n, r) for k, _, n, r in items]
                found = _list_of(data, at, seq, made, kind_node.start_mark.column)
                if found is None:
                    return None
                lists.append(found)
        if taken != len(parsed):
            return None
        edge_list = None
        pair = _edges_node(root)
        if pair is not None and None not in edges and len(edges) == len(pair[1].value):
            edge_list = _list_of(data, at, pair[1], edges, pair[0].start_mark.column)
        merged: dict[Ends, Edge] = {}
        declared: dict[Ends, int] = {}
        if edge_list is not None:
            for edge in edges:
                assert edge is not None
                merged[edge[:2]] = both(merged.get(edge[:2]), edge[2])
                declared[edge[:2]] = declared.get(edge[:2], 0) + 1
        owner = _Owner()
        reuse = cls(
            data,
            tuple(sorted(lists, key=operator.attrgetter("start"))),
            edge_list,
            list(loaded.exported),
            frozenset(key_of(res) for res in loaded.exported),
            list(loaded.collect),
            list(loaded.pending),
            merged,
            declared,
            owner,
        )
        owner.current = reuse
        return reuse

    def edited(
        self, data: bytes, filename: str, base: Graph, accepted: bool = False
    ) -> Loaded | None:
        """The parse of `data`, an edit of this text that adds, removes, renames or changes
        resources of one block list only, or edges of the `edges` list (whole items, or inside
        them); None if it is not one (a full parse then). `base` is the graph of this text as
        given out: the new one is it with only the changed resources and edges replaced, added
        or removed (Loaded.since). GraphFileError, as a full parse's, when what is wrong lies
        in those items alone (`_refusal`; with `accepted`, base is a graph the engine took:
        a full parse would find no other problem); None when it may involve more."""
        old = self.data
        if data == old or not self.hold():
            return None
        from mgmt.spans import common_ends  # an edit's: not a cron run's

        head, tail = common_ends(old, data)
        last = len(old) - tail
        edges = self.edge_list
        if edges is not None and edges.start <= head and last <= edges.end:
            return self._edges_edited(data, filename, base, (head, last), accepted=accepted)
        for found in self.lists:
            if found.start <= head and last <= found.end:
                where = (head, last)
                return self._resources_edited(found, data, filename, base, where, accepted=accepted)
        return None

    def _fragment(
        self, found: _List, data: bytes, changed: tuple[int, int], parser: _Parser
    ) -> tuple[_List, list[bytes], dict[bytes, Any], list[tuple[Node, Any]], int] | None:
        """Where the items of `found` an edit changed (bytes head..last of the old text) lie:
        the list after the edit, the chunks of the new text of those items (whole lines from
        a dash line, checked to read alike on their own), what each old chunk declared, the
        new items parsed (by `parser`) and the byte where the first starts; None if it is not
        such an edit; _Told (with that byte) for a problem in them a full parse would tell."""
        old, (head, last) = self.data, changed
        start, end = found.around(old, head, last)
        shift = len(data) - len(old)
        if end + shift < start:
            return None
        fragment = data[start : end + shift]
        marker = found.marker
        lead = 0  # blank and comment lines before the list's first item, at its start
        if fragment and not fragment.startswith(marker[1:]):
            if start != found.start:
                return None  # they would end the item before them
            lead = data.find(marker, start - 1, end + shift) + 1 - start
            lead = len(fragment) if lead <= 0 else lead
        try:
            text = fragment.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not _block_items(text, found.dash):
            return None
        known = {chunk: found.chunks.get(chunk) for chunk in found.split(old, start, end)}
        if None in known.values():
            return None
        body = fragment[lead:]
        if not body and start == found.start and end == found.end:
            return None  # every item of the list removed: the list must keep one
        first = found.start  # where the list's first dash line is now
        if start == found.start:
            first = start + lead if body else end + shift
        after = _List(first, found.end + shift, found.dash, found.kind, found.chunks, found.nested)
        chunks = found.split(body, 0, len(body))
        try:
            items = self._parsed(found, parser, body, chunks, end < found.end)
        except _Told as told:
            told.at, told.first = start + lead, first
            raise
        return None if items is None else (after, chunks, known, items, start + lead)

    def _parsed(
        self, found: _List, parser: _Parser, fragment: bytes, chunks: list[bytes], more: bool
    ) -> list[tuple[Node, Any]] | None:
        """The items of `fragment` (chunks: `chunks`; `more`: another item follows), each
        checked to start on its chunk's dash line; None on any problem but those items()
        tells (_Told)."""
        if not fragment:
            return []
        items = _items(fragment, found, more)
        if items is None or len(items) != len(chunks):
            return None
        line = 0
        for (node, _data), chunk in zip(items, chunks, strict=True):
            dash = found.dash
            if node.start_mark.line != line or node.start_mark.column < dash + 2:
                return None  # the mapping must start on its dash line, after "- " and spaces
            if chunk[dash + 2 : node.start_mark.column].strip(b" "):
                return None
            line += chunk.count(b"\n")
        return items

    def _resources_edited(
        self,
        found: _List,
        data: bytes,
        filename: str,
        base: Graph,
        changed: tuple[int, int],
        *,
        accepted: bool,
    ) -> Loaded | None:
        """An edit of the resources of the list `found` alone (see edited())."""
        cls = lookup(found.kind)
        if cls is None or validates_together(cls):
            return None  # (a kind checked together: a full parse checks them all)
        parser = _Parser(filename)
        cut = self._cut(found, data, changed, parser)
        if cut is None:
            return None
        moved, chunks, known, items, at = cut
        olds: list[_Item] = list(known.values())
        new: list[tuple[bytes, _Item]] = []
        refused: set[Key] = set()  # the keys of the items refused (edges to them: no problem)
        fresh = exports = False  # a resource parsed anew; an export among the items
        for i, ((node, item_data), chunk) in enumerate(zip(items, chunks, strict=True)):
            name = item_data.get("name") if isinstance(item_data, LocDict) else None
            exports |= isinstance(name, str) and name.startswith(EXPORT_PREFIX)
            item = known.get(chunk)
            if item is None or item.name != name:
                index = i  # (a problem names an item without a name by its index in the list)
                if not isinstance(name, str) or not name:
                    index += self._index(found, data, at)
                line = node.start_mark.line + 1
                res = parser._resource(cls, found.kind, item_data, line, index)
                if res is None:
                    if isinstance(name, str):
                        refused.add((found.kind, name.removeprefix(EXPORT_PREFIX)))
                    continue
                fresh, item = True, _Item(found.kind, str(name), res)
            new.append((chunk, item))
        if parser.problems:
            if not accepted or fresh or exports or any(item.export for item in olds):
                return None  # (a new resource may clash with others: a full parse checks)
            kept = {item.key for _chunk, item in new} | refused
            if self._edged(base, {item.key for item in olds} - kept):
                return None  # an edge names one gone: a full parse says where that edge is
            raise _refusal(parser, data.count(b"\n", 0, at))
        if parser.warnings:
            return None
        gone = {item.key: item for item in olds}
        came: dict[Key, _Item] = {}
        for _chunk, item in new:
            if item.key in came:
                return None  # the same resource twice
            came[item.key] = item
        if any(item.export for item in [*olds, *came.values()]):
            return None  # (the exports' order: a full parse)
        for key in came.keys() - gone.keys():
            if key in base.vertices or key in self.export_keys:
                return None
        if self._edged(base, gone.keys() ^ came.keys()):
            return None  # an edge names it: a full parse says what that means
        derived = derive(
            base,
            Change(
                put={key: item.res for key, item in came.items()},
                remove={key for key in gone if key not in came},
            ),
        )
        undo = (_changed(found.chunks, known, new),)  # nothing fails from here on
        shift = len(data) - len(self.data)
        lists = tuple(
            moved if each is found else each.moved(found.end, shift) for each in self.lists
        )
        edge_list = self.edge_list.moved(found.end, shift) if self.edge_list is not None else None
        return self._next(data, derived, (lists, edge_list), undo)

    def _edges_edited(
        self,
        data: bytes,
        filename: str,
        base: Graph,
        changed: tuple[int, int],
        *,
        accepted: bool,
    ) -> Loaded | None:
        """An edit inside the `edges` list alone: the items it touched are parsed on their own
        (the resources are the very objects of the last parse) and the graph derived with the
        edges that changed; None when a full parse must say it (see edited())."""
        found = self.edge_list
        if found is None or self.pending:
            return None
        parser = _Parser(filename)
        cut = self._cut(found, data, changed, parser)
        if cut is None:
            return None
        moved, chunks, known, items, at = cut
        loaded = Loaded(base, collect=list(self.collect))  # _edge reads the graph only
        olds: list[EdgeItem] = list(known.values())
        new: list[tuple[bytes, EdgeItem]] = []
        fresh = False  # an edge parsed anew between resources the last graph did not link
        for i, ((node, item_data), chunk) in enumerate(zip(items, chunks, strict=True)):
            edge = known.get(chunk)
            if edge is None:
                index = i  # (a problem names an edge without a name by its index)
                if not (isinstance(item_data, LocDict) and item_data.get("name")):
                    index += self._index(found, data, at)
                edge = parser._edge(item_data, node.start_mark.line + 1, index, loaded)
                if edge is None:  # refused (or pending: to a resource collected)
                    continue
                fresh |= edge[:2] not in self.edges  # (a pair of the last graph: no cycle)
            new.append((chunk, edge))
        # (With none parsed anew, the edges kept are some of the last graph's: no cycle.)
        total = sum(self.declared.values()) - len(olds) + len(chunks)
        clean = accepted and not fresh and not loaded.pending  # (too many: a full parse says)
        if parser.problems and clean and too_many(total, "edges") is None:
            raise _refusal(parser, data.count(b"\n", 0, at))
        if parser.problems or parser.warnings or loaded.pending:
            return None
        was = {edge[:2]: edge[2] for edge in olds}
        now = {edge[:2]: edge[2] for _chunk, edge in new}
        if len(was) != len(olds) or len(now) != len(new):
            return None  # two items of one pair: merged, in a full parse
        if any(self.declared.get(ends, 0) != 1 for ends in was):
            return None
        if any(ends in self.declared and ends not in was for ends in now):
            return None
        if too_many(total, "edges") is not None:
            return None  # a full parse says where
        change = Change(
            connect=[(*ends, edge) for ends, edge in now.items() if was.get(ends) != edge],
            disconnect=[ends for ends, edge in was.items() if now.get(ends) != edge],
        )
        try:
            derived = derive(base, change)
        except GraphError:
            return None  # a cycle: a full parse says which edge closes it
        undo = (  # nothing fails from here on
            _changed(found.chunks, known, new),
            _changed(self.edges, was, now.items()),
            _changed(self.declared, was, dict.fromkeys(now, 1).items()),
        )
        shift = len(data) - len(self.data)
        lists = tuple(each.moved(found.end, shift) for each in self.lists)
        return self._next(data, derived, (lists, moved), undo)

    def _cut(
        self, found: _List, data: bytes, changed: tuple[int, int], parser: _Parser
    ) -> tuple[_List, list[bytes], dict[bytes, Any], list[tuple[Node, Any]], int] | None:
        """_fragment(), or the GraphFileError of a full parse for a problem it tells."""
        try:
            return self._fragment(found, data, changed, parser)
        except _Told as told:
            refusal = self._told(told, found, data, filename=parser.filename)
            if refusal is None:
                return None
            raise refusal from None

    def _edged(self, base: Graph, keys: Iterable[Key]) -> bool:
        """Whether an edge of `base`, or one pending, names one of `keys`."""
        edged = {key for edge in self.pending for key in edge[:2]}
        return any(base.succ.get(key) or base.pred.get(key) or key in edged for key in keys)

    @staticmethod
    def _index(found: _List, data: bytes, at: int) -> int:
        """How many items of `found` are before byte `at` (a dash line of it) of `data` (an
        edit of its text after `at`): counted in C, when a problem names an item by it."""
        if at <= found.start:
            return 0
        marker = found.marker  # (each item's but the first, which found.start - 1 makes one)
        return data.count(marker, found.start - 1, at - 2 + len(marker))

    def _told(self, told: _Told, found: _List, data: bytes, filename: str) -> GraphFileError | None:
        """The full parse's error for a problem of the items of `found` read alone from byte
        `told.at` of `data`: lines counted from the file's start, the item named as a full
        parse names it; None when a full parse might stop at another."""
        offset = data.count(b"\n", 0, told.at)
        err = told.err
        if not isinstance(err, _NodeProblem):
            mark = err.context_mark if isinstance(err, MarkedYAMLError) else None
            if mark is not None and (mark.line, mark.column) == (0, found.dash):  # the list's
                moved: Any = copy.copy(err)  # at its first "-", in the file
                line = data.count(b"\n", 0, told.first) - offset
                moved.context_mark = Mark(mark.name, 0, line, found.dash, "", 0)
                err = moved
            line, message = _yaml_problem(err, b"", offset)
            return GraphFileError([f"{filename}:{line}: {message}"])
        if _ANCHOR in data:
            return None  # a full parse bounds the shape of the whole file first
        assert told.node is not None
        index, _, rest = err.where[1:].partition("]")
        name = _name_of(told.node.value[int(index)]) if found.kind else ""
        if name:
            where = f"{found.kind}[{name}]{rest}"
        else:
            head = _path("resources", found.kind) if found.kind else "edges"
            where = f"{head}[{self._index(found, data, told.at) + int(index)}]{rest}"
        return GraphFileError([f"{filename}:{err.line + offset}: {err.text(None, where)}"])

    def _next(
        self,
        data: bytes,
        derived: Derived,
        where: tuple[tuple[_List, ...], _List | None],
        undo: tuple[_Undo, ...],
    ) -> Loaded:
        """The Loaded of the edited `data` (its graph `derived`; its lists `where`), which
        holds the shared maps now (`undo` makes them this version's again)."""
        lists, edge_list = where
        loaded = Loaded(derived.graph, list(self.exported), list(self.collect))
        loaded.pending = list(self.pending)
        loaded.since = (derived.base, derived.touched)
        loaded.reuse = Reuse(
            data,
            lists,
            edge_list,
            self.exported,
            self.export_keys,
            self.collect,
            self.pending,
            self.edges,
            self.declared,
            self.owner,
            weakref.ref(self),
            undo,
        )
        self.owner.current = loaded.reuse
        return loaded


class _Offsets:
    """Byte offsets of character offsets (a mark's index) of `data`, asked in increasing
    order (one pass); the same number for ASCII text."""

    def __init__(self, data: bytes) -> None:
        self.text = None if data.isascii() else data.decode("utf-8")
        self.chars = self.bytes = 0

    def __call__(self, index: int) -> int:
        if self.text is None:
            return index
        if index < self.chars:
            self.chars = self.bytes = 0
        self.bytes += len(self.text[self.chars : index].encode("utf-8"))
        self.chars = index
        return self.bytes


def _list_of(
    data: bytes, at: _Offsets, seq: Node, declared: list[Any], key_column: int
) -> _List | None:
    """The _List of a block list `seq` of `data` (the value of a key at `key_column`) whose items
    declared `declared` (in order), if its dash lines are its items' first lines, one per
    item, and each item's text is its own; else None."""
    if not isinstance(seq, SequenceNode) or seq.flow_style:
        return None
    if not seq.value or len(declared) != len(seq.value):
        return None
    starts: list[int] = []
    dash = -1
    for node in seq.value:
        if not isinstance(node, MappingNode):
            return None
        first = at(node.start_mark.index)
        line = data.rfind(b"\n", 0, first) + 1
        lead = data[line:first]
        column = lead.find(b"-")
        if column < 0 or lead[:column].strip(b" ") or lead[column + 1 :].strip(b" "):
            return None  # the mapping must start on its dash line
        if len(lead) < column + 2 or dash not in (-1, column):
            return None
        dash = column
        starts.append(line)
    last = at(seq.end_mark.index)  # the next token (a block list's end is there)
    end = data.rfind(b"\n", 0, last) + 1
    if data[end:last].strip(b" ") or end <= starts[-1]:
        return None  # the next token is on the last item's line
    kind = declared[0].kind if isinstance(declared[0], _Item) else ""
    found = _List(starts[0], end, dash, kind, {}, dash > key_column)
    if (b"\n" + data[found.start : end]).count(found.marker) != len(starts):
        return None  # a line like an item's first inside an item (a quoted scalar's)
    bounds = [*starts[1:], end]
    for begin, stop, item in zip(starts, bounds, declared, strict=True):
        found.chunks[data[begin:stop]] = item
    if len(found.chunks) != len(starts):
        return None
    return found


def incremental_parse(text: str | bytes, filename: str = "<graph>") -> Loaded:
    """mgmt.yamlgraph's parse(), keeping in `Loaded.reuse` what reparse() needs for the next
    version (None with an alias or a warning: its next version is parsed whole)."""
    with collector.paused():  # as parse()
        try:
            parser = _Parser(filename, incremental=True)
            loaded = parser.parse(text)
        except _NoYAML as err:
            raise GraphFileError([f"{filename}: {err}"]) from err
        if parser.kept is not None:
            assert parser.parsed is not None
            data, node = parser.kept
            loaded.reuse = Reuse.of(data, node, parser.parsed, loaded, parser.edges)
    return loaded


def reparse(data: bytes, filename: str, previous: Loaded | None) -> Loaded:
    """incremental_parse(data), reusing what `previous` (the last version) parsed: in
    O(change) when the edit lies inside the items of one list of resources, or of the edges
    (see Reuse)."""
    if previous is None or previous.reuse is None:
        return incremental_parse(data, filename)
    with collector.paused():  # as parse(): a big edit makes many objects, no cycles
        try:
            loaded = previous.reuse.edited(data, filename, previous.graph, previous.accepted)
        except GraphFileError:
            log.debug("graph file: the edit refused from the items it changed alone")
            raise
        except _NoYAML as err:
            raise GraphFileError([f"{filename}: {err}"]) from err
    if loaded is None or too_many(len(loaded.graph)) is not None:
        log.debug("graph file: parsed whole")
        return incremental_parse(data, filename)  # (which says where it is too large)
    return loaded


def _edges_node(root: Node) -> tuple[Node, Node] | None:
    """The top-level `edges` key of a composed file and its list, if it is a list."""
    if not isinstance(root, MappingNode):
        return None
    lists = [(key, value) for key, value in root.value if key.value == "edges"]
    if len(lists) != 1 or not isinstance(lists[0][1], SequenceNode):
        return None
    return lists[0]


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
