"""json:edit: declarative edits to one JSON document (mgmt's json:edit).

The document is a local file (an absolute path or file:///path; it must exist and hold one
JSON object) or a string of the cluster's store (etcd:///key, the kv resource's storage; a
missing key is an empty object). Edits are a small jq-like language, applied in order:

    .server01.state = "ready"            .["server-01"]["state"] = {"up": true}
    del(.server01.legacy)

Identifiers are ASCII letters, digits and '_' (not starting with a digit); bracket keys are
JSON strings. Assignments create missing objects on the way; deleting a missing path is a
no-op. The document is written (keys sorted, tab-indented, as mgmt writes it) only when the
edits change it: atomically, keeping the file's mode and owner; in the cluster with a
compare-and-set, so edits from two hosts are never lost. See docs/resources/json-edit.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from engine.world import World, check_key
from resources._lib.fight import Fight
from resources._lib.missing import Missing, read_existing, would_wait
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.proc import file_lock, tool_lock
from resources._lib.rewrites import wrote

READ_LIMIT = 64 << 20  # a bigger document is refused
CAS_ATTEMPTS = 10
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True)
class Edit:
    keys: tuple[str, ...]
    delete: bool
    value: Any = None


def parse_edit(text: str) -> Edit:
    """One edit, or ValueError saying what is wrong."""
    src = text.strip()
    pos = 0
    delete = src.startswith("del")
    if delete:
        pos = _SPACE.match(src, 3).end()  # type: ignore[union-attr]
        if src[pos : pos + 1] != "(":
            raise ValueError("expected '(' after 'del'")
        pos += 1
    keys, pos = _path(src, _SPACE.match(src, pos).end())  # type: ignore[union-attr]
    pos = _SPACE.match(src, pos).end()  # type: ignore[union-attr]
    if delete:
        if src[pos : pos + 1] != ")":
            raise ValueError("expected ')' after the path")
        if src[pos + 1 :].strip():
            raise ValueError("unexpected text after del(...)")
        return Edit(keys, True)
    if src[pos : pos + 1] != "=":
        raise ValueError("expected '=' after the path")
    rest = src[pos + 1 :].strip()
    if not rest:
        raise ValueError("expected a JSON value after '='")
    try:
        value = strict_loads(rest)
    except json.JSONDecodeError as err:
        raise ValueError(f"the value is not one JSON value: {err.msg}") from None
    try:  # what json.dumps would write must be UTF-8: no lone surrogate ("\ud800")
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("the value holds a lone surrogate (not valid Unicode)") from None
    return Edit(keys, False, value)


def strict_loads(text: str) -> Any:
    """json.loads, reading only JSON (RFC 8259) that can be written back as UTF-8: Python's
    NaN and Infinity (which jq, Go's encoding/json, mgmt's, and browsers refuse), a number too
    big for a double (1e999) and a lone surrogate ("\\ud800") are ValueError."""
    value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("a lone surrogate (\\ud800-\\udfff) is not text") from None
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too big for a JSON number")
    return number


def _path(src: str, pos: int) -> tuple[tuple[str, ...], int]:
    if src[pos : pos + 1] != ".":
        raise ValueError("a path starts with '.'")
    pos += 1
    keys: list[str] = []
    while True:
        pos = _SPACE.match(src, pos).end()  # type: ignore[union-attr]
        if src[pos : pos + 1] == "[":
            key, pos = _bracket(src, pos + 1)
        else:
            match = _IDENT.match(src, pos)
            if match is None:
                raise ValueError(f"expected a key name at column {pos + 1}")
            key, pos = match.group(), match.end()
        keys.append(key)
        after = _SPACE.match(src, pos).end()  # type: ignore[union-attr]
        if src[after : after + 1] == ".":
            pos = after + 1
        elif src[after : after + 1] != "[":
            return tuple(keys), pos


def _bracket(src: str, pos: int) -> tuple[str, int]:
    pos = _SPACE.match(src, pos).end()  # type: ignore[union-attr]
    if src[pos : pos + 1] != '"':
        raise ValueError("a bracket key must be a JSON string")
    try:
        key, end = json.JSONDecoder().raw_decode(src, pos)
    except json.JSONDecodeError:
        raise ValueError("unterminated or invalid bracket key") from None
    if not key:
        raise ValueError("a key must not be empty")
    strict_loads(src[pos:end])  # a lone surrogate: ValueError
    end = _SPACE.match(src, end).end()  # type: ignore[union-attr]
    if src[end : end + 1] != "]":
        raise ValueError("expected ']'")
    return key, end + 1


def show_path(keys: tuple[str, ...]) -> str:
    """A path as an edit writes it: `.a.b`, `.["a b"]`."""
    shown = "".join(f".{key}" if _IDENT.fullmatch(key) else f"[{json.dumps(key)}]" for key in keys)
    return shown if shown.startswith(".") else "." + shown


def apply_edit(root: dict[str, Any], edit: Edit) -> None:
    parent = root
    for key in edit.keys[:-1]:
        child = parent.get(key)
        if child is None and key not in parent:
            if edit.delete:
                return
            child = parent[key] = {}
        if not isinstance(child, dict):
            raise ResourceError(f"cannot edit inside {key!r}: it is not a JSON object")
        parent = child
    if edit.delete:
        parent.pop(edit.keys[-1], None)
    else:
        parent[edit.keys[-1]] = edit.value


def render(root: dict[str, Any]) -> str:
    return json.dumps(root, indent="\t", sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@register("json:edit")
@dataclass(kw_only=True, eq=False)
class JSONEditRes(Edgeable, Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # The document: an absolute path, file:///path or etcd:///key. Default None: the name.
    store: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The edits, applied in order (at least one). Required.
    edits: list[str]

    @property
    def _store(self) -> str:
        return self.store if self.store is not None else self.name

    def _where(self) -> tuple[str, str]:
        """("file", path) or ("etcd", key), or ValueError."""
        handle = self._store
        if handle.startswith("/"):
            return "file", handle
        parts = urlsplit(handle)
        if parts.scheme not in ("file", "etcd"):
            raise ValueError("expected an absolute path, file:///path or etcd:///key")
        if parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"a {parts.scheme} store has no host, query or fragment")
        if parts.scheme == "file":
            if not parts.path.startswith("/"):
                raise ValueError("the file path must be absolute")
            return "file", parts.path
        key = parts.path.lstrip("/")
        if not key:
            raise ValueError("the etcd key is empty")
        return "etcd", key

    def validate(self) -> None:
        super().validate()
        key = "store" if self.store is not None else "name"
        try:
            scheme, where = self._where()
        except ValueError as err:
            raise ValidationError(f"{err}, got {self._store!r}", key) from None
        if scheme == "etcd":
            try:
                check_key(where)
            except ValidationError as err:
                raise ValidationError(err.message, key) from None
        if not self.edits:
            raise ValidationError("expected at least one edit", "edits")
        for index, text in enumerate(self.edits):
            try:
                parse_edit(text)
            except ValueError as err:
                raise ValidationError(f"{err}: {text!r}", f"edits[{index}]") from None

    def uids(self) -> list[UID]:
        """Each path it edits, in its store: two resources editing one path of one document
        are refused at load, each named with its line (they would rewrite it in turn)."""
        scheme, where = self._where()
        store = os.path.normpath(where) if scheme == "file" else f"etcd:///{where}"
        paths = {show_path(parse_edit(text).keys) for text in self.edits}
        return [UID("json:edit", f"{store} {path}") for path in sorted(paths)]

    def autoedges(self) -> list[list[UID]]:
        return []

    def needs_world(self) -> bool:
        try:
            return self._where()[0] == "etcd"
        except ValueError:
            return False

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._fight = Fight()  # another writer of an etcd:/// store (resources/_lib/fight.py)

    async def watch(self) -> None:
        scheme, where = self._where()
        if scheme == "file":
            async with PathWatcher([where]) as changes:
                await self.handle.event()
                async for _ in changes:
                    await self.handle.event()
            return
        world = self.handle.world
        if world is None:
            await super().watch()  # check_apply says why it cannot work
            return
        etcd_changes = world.str_watch(where)
        async with etcd_changes:
            await self.handle.event()
            async for _ in etcd_changes:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        scheme, where = self._where()
        edits = [parse_edit(text) for text in self.edits]
        if scheme == "file":
            async with file_lock(self.handle.shared, where):
                try:
                    return await self._file(where, edits, apply)
                except Missing as err:
                    return await would_wait(self.handle, err, apply, f"edit {where}")
        async with tool_lock(self.handle.shared, f"json:edit:etcd:{where}"):
            return await self._etcd(where, edits, apply)

    async def _file(self, path: str, edits: list[Edit], apply: bool) -> bool:
        data, st = await in_thread(
            functools.partial(read_existing, path, READ_LIMIT, "the JSON store")
        )
        new = self._edited(data.decode(errors="replace"), edits, path)
        if new is None:
            return nothing_to_do(self.handle, f"{path} already has the {len(edits)} edits")
        write = functools.partial(
            _write_keeping, path, new.encode(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        )
        await apply_steps(self.handle, [self._step(path, write)], apply, errors=(OSError,))
        if apply:
            wrote(self.handle, path)
        return False

    async def _etcd(self, key: str, edits: list[Edit], apply: bool) -> bool:
        world = self._world()
        if apply:
            await self._fight.pace(self.handle)
        for _ in range(CAS_ATTEMPTS):
            current = await world.str_get(key)
            new = self._edited("{}" if current is None else current, edits, f"etcd:///{key}")
            if new is None:
                return nothing_to_do(self.handle, f"etcd:///{key} already has the edits")
            if not apply:
                await apply_steps(self.handle, [self._step(f"etcd:///{key}", None)], False)
                return False
            if await world.str_cas(key, current, new):
                self._log_done(f"etcd:///{key}")
                self._fight.wrote(self.handle, f"etcd:///{key}")
                return False
        raise ResourceError(
            f"etcd:///{key} kept changing while being edited ({CAS_ATTEMPTS} times)"
        )

    def _world(self) -> World:
        world = self.handle.world
        if world is None:
            raise ResourceError("an etcd:// store needs the cluster, which this run did not start")
        return world

    def _edited(self, text: str, edits: list[Edit], where: str) -> str | None:
        """The new document, or None when the edits change nothing (no I/O)."""
        try:
            root = strict_loads(text)
        except ValueError as err:  # a JSONDecodeError too
            raise ResourceError(f"{where} is not valid JSON: {err}") from None
        if not isinstance(root, dict):
            raise ResourceError(f"{where} does not hold a JSON object")
        before = render(root)
        for edit in edits:
            apply_edit(root, edit)
        after = render(root)
        return None if after == before else after

    def _step(self, where: str, run: functools.partial[None] | None) -> Step:
        shown = self._shown()
        return Step(f"edit {where}: {shown}", f"edited {where}: {shown}", run, slow=True)

    def _log_done(self, where: str) -> None:
        self.handle.logger.info("edited %s: %s", where, self._shown())

    def _shown(self) -> str:
        """The edits without their values (a password in a config): ".db.password set"."""
        edits = [parse_edit(text) for text in self.edits]
        return "; ".join(f"{show_path(e.keys)} {'deleted' if e.delete else 'set'}" for e in edits)


def _write_keeping(path: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    parent, name = os.path.split(path)
    with safefs.closing(safefs.open_dir(parent)) as dir_fd:
        safefs.write_at(dir_fd, name, lambda out: out.write(data), mode=mode, uid=uid, gid=gid)
