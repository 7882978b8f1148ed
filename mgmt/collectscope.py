"""What a `collect` entry may bring in: a collected resource stays within what was asked.

A record in `/_mgmt/exported/` is data written by another host (or by whoever can write the
cluster): it must not make this host act outside what its own graph asked for. So:

- Only some kinds can be collected (`COLLECTABLE`); a kind whose params can point anywhere
  (exec's command, pkg, svc, user, cron...) cannot be constrained by a name and is refused when
  the graph is loaded (a collect entry of that kind is an error) and again here.
- A kind's *target* (file: `path`, else the name; kv: `key`, else the name) must be what was
  asked: under the collect pattern (normalised: `..` cannot climb out), or the very name a
  language `collect` statement named. The record's name is only a label when a target param is
  given, so both are checked.
- Params that would reach outside the target are refused in a record: a file's `source` and
  `fragments` (paths on *this* host, copied into the shared one), `follow` (a symlink's target,
  anywhere) and a setuid/setgid `mode`. The collector may still set them itself (a language `collect`
  statement's params): what the collector writes is what it asked for.

`Collect` is one collect entry (a graph file's `collect:` item, or a language `collect`
statement); `collects()` says whether the entries may bring in a given resource.
`refusal()` says why a record is refused (None: it may be collected); the caller logs it with
the key and its writer (`writer()`), and leaves the record out of the graph.

Who wrote a record: with per-host etcd identities (`--cluster-cert-dir`,
mgmt/cluster/identity.py) etcd lets only `<host>` and the core members (root) write under
`/_mgmt/exported/<host>/`, so the key's host can be trusted; otherwise the key's host is only a
claim (any holder of the cluster's CA can write any key), and the warnings say so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.params import convert, hints
from resources.file import FileRes
from resources.file.modes import mode_after

if TYPE_CHECKING:
    from engine.world import Exported


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


def shown(text: str) -> str:
    """`text` (a record's key or host, written by another host) for a log line: control
    characters escaped, so that it cannot add lines, such as a refusal naming another host."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def writer(host: str, attributed: bool) -> str:
    """Who wrote a record under `/_mgmt/exported/<host>/`, as far as this collector can know."""
    if attributed:
        return f"host {shown(host)} (or a core member: per-host identities)"
    return f"host {shown(host)} (as its key claims: unverified without per-host identities)"


def _no_extra(record: Exported, collector: dict[str, Any]) -> str | None:
    return None


def _file_extra(record: Exported, collector: dict[str, Any]) -> str | None:
    params = record.params
    for name in ("source", "fragments", "follow"):
        if params.get(name) and name not in collector:
            return f"its {name!r} param reaches outside the collected path"
    if params.get("mode") is not None and "mode" not in collector:
        return _mode_refusal(params["mode"])
    return None


def _mode_refusal(value: Any) -> str | None:
    """Why a record's mode is refused: it sets setuid or setgid bits, read exactly as the file
    resource reads it (its field's type: a JSON number 4755 is the text '4755', so octal; then
    its own `mode_after`), or the file kind would refuse it anyway. The sticky bit gives no
    privilege and is allowed."""
    try:
        spec = convert(hints(FileRes)["mode"], value, "mode")
        bits = mode_after(spec, 0, False) | mode_after(spec, 0, True)
    except ValueError:  # ValidationError too: the resource would refuse the record
        return f"its mode {value!r} is not one the file resource takes"
    if bits & 0o6000:
        return f"its mode {value!r} sets setuid/setgid bits"
    return None


# kind -> (the param naming its target, or None: the name is the target; extra checks).
COLLECTABLE: dict[str, tuple[str | None, Callable[[Exported, dict[str, Any]], str | None]]] = {
    "file": ("path", _file_extra),
    "kv": ("key", _no_extra),
    "noop": (None, _no_extra),
    "print": (None, _no_extra),
    "msg": (None, _no_extra),
    "timer": (None, _no_extra),
}


def check_kind(kind: str) -> str | None:
    """Why resources of `kind` cannot be collected (None: they can)."""
    if kind in COLLECTABLE:
        return None
    return (
        f"{kind} resources cannot be collected: a record's params could make this host do "
        f"anything (collectable kinds: {', '.join(sorted(COLLECTABLE))})"
    )


def matches(name: str, pattern: str) -> bool:
    """Whether `name` is under the collect `pattern`: a prefix of its normalised form (a
    pattern ending in '/' also matches that directory itself); '' matches everything."""
    if not pattern:
        return True
    norm = os.path.normpath(name) if name.startswith("/") else _norm_key(name)
    if norm is None:
        return False
    return (norm + "/").startswith(pattern) if pattern.endswith("/") else norm.startswith(pattern)


def _norm_key(name: str) -> str | None:
    """A relative name (a kv key, a noop's label) with no '..' or '.' segment, else None."""
    parts = name.split("/")
    return None if any(p in (".", "..") for p in parts) else name


def selects(collect: Collect, record: Exported) -> bool:
    """Whether a collect entry asks for this record (its kind; its name or pattern; its host)."""
    if collect.kind != record.kind or collect.host not in (None, record.host):
        return False
    if collect.name is not None:
        return record.name == collect.name
    return matches(record.name, collect.pattern)


def refusal(collect: Collect, record: Exported) -> str | None:
    """Why this selected record must not be collected (None: it may be)."""
    problem = check_kind(record.kind)
    if problem is not None:
        return problem
    target_param, extra = COLLECTABLE[record.kind]
    targets: list[tuple[str, Any]] = [("name", record.name)]
    # The collector's own target param is what it asked for; the record's must be checked.
    target = record.params.get(target_param or "") if target_param not in collect.params else None
    if target_param is not None and target is not None:
        targets.append((target_param, target))
    for what, value in targets:
        if not isinstance(value, str):
            return f"its {what} is not a string"
        if collect.name is not None:
            if not _same(value, collect.name):
                return f"its {what} {value!r} is not the name {collect.name!r} asked for"
        elif not matches(value, collect.pattern):
            return f"its {what} {value!r} is not under the pattern {collect.pattern!r}"
    return extra(record, collect.params)


def _same(a: str, b: str) -> bool:
    """The same path (normalised) or, for other names, the same string."""
    if a.startswith("/") and b.startswith("/"):
        return os.path.normpath(a) == os.path.normpath(b)
    return a == b
