"""A Puppet catalog (Puppet's JSON) translated into our graph, with Puppet's meaning.

Classes, stages and defined types are containers: they are flattened, as Puppet's catalog
already does, and a relationship to or from one holds for every resource inside it. The
relationship metaparams become edges: `before`/`require` plain edges, `notify`/`subscribe`
notify edges (a refresh: a refreshonly exec runs, a service restarts). Puppet's implicit
manifest ordering is not kept: resources without a relationship run in parallel (docs/puppet.md).

A resource type, or a parameter, without a translation is an error listing every such resource
with its file and line; with `fallback` (a directory), such a resource runs instead as an exec
of `puppet resource TYPE TITLE param=value...` (as mgmt's Puppet support did), whose Puppet
keeps its settings and state in that directory (the agent's prefix/puppet), not the host's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ValidationError
from engine.graph import Edge, Graph, Key, cycle_text
from engine.limits import too_many
from engine.resource import lookup
from mgmt.lang.kinds import build_resource
from mgmt.puppet.compile import MODULEPATH, isolated, module_file
from mgmt.yamlgraph import GraphFileError, Loaded

# Metaparams every type accepts: edges, or nothing to do for us (docs/puppet.md says why for
# each). `schedule` is not one: it limits when Puppet applies the resource.
EDGE_PARAMS = ("before", "require", "notify", "subscribe")
IGNORED_META = frozenset({"tag", "alias", "loglevel", "stage", "audit"})
EXEC_TIMEOUT = 300  # Puppet's default exec timeout, in seconds
CONTAINER_KINDS = frozenset({"unknown", "defined_type"})  # classes, stages, defines


class Untranslatable(Exception):
    """This resource (or one of its params) has no translation: why."""


class Invalid(Untranslatable):
    """This resource is one Puppet refuses too: why (in Puppet's words). No fallback."""


@dataclass
class PRes:
    """One resource of a Puppet catalog."""

    type: str
    title: str
    params: dict[str, Any]
    where: str
    container: bool
    modulepath: str = MODULEPATH  # where `puppet:///modules/` sources are

    @property
    def ref(self) -> str:
        return f"{self.type}[{self.title}]"

    def take(self, name: str, default: Any = None) -> Any:
        """A param's value, marking it as translated."""
        return self.params.pop(name, default)


@dataclass
class Spec:
    """What a Puppet resource becomes: one of our resources."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


Translator = Callable[[PRes], Spec]


def translate(
    catalog: Any, label: str, *, fallback: Path | None = None, modulepath: str = MODULEPATH
) -> Loaded:
    """Our graph for `catalog`; GraphFileError listing every resource without a translation
    (unless `fallback`: the directory `puppet resource` runs them with, in `modulepath`)."""
    resources = [_pres(raw, label, modulepath) for raw in catalog.get("resources", [])]
    by_ref = {r.ref: r for r in resources}
    children: dict[str, list[str]] = {}
    for edge in catalog.get("edges", []):
        children.setdefault(edge["source"], []).append(edge["target"])
    loaded = Loaded(Graph(label))
    keys: dict[str, tuple[str, str]] = {}  # Puppet ref -> our (kind, name)
    problems: list[str] = []
    relations: list[tuple[PRes, dict[str, Any]]] = []
    for res in resources:
        edges = {p: res.params.pop(p) for p in EDGE_PARAMS if p in res.params}
        relations.append((res, edges))
        if res.container:
            continue
        try:
            spec = _translate(res, fallback, modulepath)
            built = build_resource(_class(spec.kind), spec.name, spec.params, spec.meta)
        except Untranslatable as why:
            problems.append(f"{res.where}: {res.ref}: {why}")
            continue
        except ValidationError as err:
            problems.append(f"{res.where}: {res.ref}: as {spec.kind}[{spec.name}]: {err}")
            continue
        key = (built.kind, built.name)
        if key in loaded.graph:
            problems.append(f"{res.where}: {res.ref}: is {built.kind}[{built.name}] twice")
            continue
        loaded.graph.add(built)
        if (refused := too_many(len(loaded.graph))) is not None:
            raise GraphFileError([f"{res.where}: {res.ref}: the catalog has {refused}"])
        keys[res.ref] = key
        loaded.warnings += [f"{res.where}: {res.ref}: {w}" for w in spec.warnings]
    if problems:
        raise GraphFileError(problems)

    def leaves(ref: str) -> Iterator[tuple[str, str]]:
        if ref in keys:
            yield keys[ref]
        for child in children.get(ref, []) if ref in by_ref and by_ref[ref].container else []:
            yield from leaves(child)

    places: dict[tuple[Key, Key], str] = {}  # each edge: where the resource that made it is
    for res, edges in relations:
        for param, value in edges.items():
            for target in value if isinstance(value, list) else [value]:
                if target not in by_ref:
                    problems.append(f"{res.where}: {res.ref}: {param} {target}: no such resource")
                    continue
                first, second = (
                    (res.ref, target) if param in ("before", "notify") else (target, res.ref)
                )
                for src in leaves(first):
                    for dst in leaves(second):
                        if src != dst:
                            loaded.graph.connect(
                                src, dst, Edge("", notify=param in ("notify", "subscribe"))
                            )
                            places.setdefault((src, dst), res.where)
                if (refused := too_many(len(places), "edges")) is not None:
                    raise GraphFileError([f"{res.where}: {res.ref}: the catalog has {refused}"])
    if problems:
        raise GraphFileError(problems)
    return _acyclic(loaded, places)


def _acyclic(loaded: Loaded, places: dict[tuple[Key, Key], str]) -> Loaded:
    """`loaded`, or GraphFileError for a cycle of the catalog's relationships (as `mgmt run`
    refuses it) naming where each was written (`places`: the resource whose relationship made
    an edge; the catalog does not say where a chaining arrow is)."""
    cycle = loaded.graph.find_cycle()
    if cycle:
        text = cycle_text(cycle, lambda src, dst: places.get((src, dst)))
        raise GraphFileError([f"{places[cycle[-2], cycle[-1]]}: {text}"])
    return loaded


def _pres(raw: dict[str, Any], label: str, modulepath: str) -> PRes:
    file, line = raw.get("file"), raw.get("line")
    where = f"{file or label}:{line}" if line is not None else str(file or label)
    return PRes(
        type=str(raw["type"]),
        title=str(raw["title"]),
        params=dict(raw.get("parameters") or {}),
        where=where,
        container=raw.get("kind") in CONTAINER_KINDS or raw["type"] in ("Stage", "Class", "Node"),
        modulepath=modulepath,
    )


def _class(kind: str) -> Any:
    cls = lookup(kind)
    if cls is None:
        raise Untranslatable(f"this version has no {kind} kind")
    return cls


def _translate(res: PRes, fallback: Path | None, modulepath: str) -> Spec:
    """Translate one resource, or its `puppet resource` exec with `fallback`."""
    params = dict(res.params)
    try:
        translator = TRANSLATORS.get(res.type)
        if translator is None:
            raise Untranslatable(f"no translation for Puppet type {res.type}")
        noop = res.take("noop")
        schedule = res.take("schedule")
        if schedule is not None:
            raise Untranslatable(
                f"schedule => {schedule!r} has no translation: a Puppet schedule limits when "
                "the resource is applied, ours are applied at once and kept so"
            )
        for name in IGNORED_META:
            res.take(name)
        spec = translator(res)
        if noop is not None:
            spec.meta["noop"] = _bool(noop, "noop")
        if res.params:
            raise Untranslatable(
                f"no translation for param{'s' if len(res.params) > 1 else ''} "
                + ", ".join(sorted(res.params))
            )
        return spec
    except Invalid:
        raise
    except Untranslatable:
        if fallback is None:
            raise
    res.params = params
    return _puppet_resource(res, fallback, modulepath)


# Values -----------------------------------------------------------------------------------


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise Untranslatable(f"{name} => {value!r}: expected true or false")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _str(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Untranslatable(f"{name} => {value!r}: expected a string")
    return str(value)


def _whole(value: Any, name: str, scale: float | None = None) -> int:
    """A whole number (`tries => 3`); `scale`: a number of seconds (`timeout => 2.5`) times it,
    rounded down."""
    text = _str(value, name)
    try:
        return int(text) if scale is None else int(float(text) * scale)
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        raise Untranslatable(f"{name} => {value!r}: expected a number") from None


def _default_provider(res: PRes, *allowed: str) -> None:
    provider = res.take("provider")
    if provider is not None and provider not in allowed:
        raise Untranslatable(f"provider => {provider!r} has no translation")


def _ignore(res: PRes, *names: str) -> None:
    """Params that change nothing in our model (e.g. Puppet's file backups): each is listed,
    with why, in docs/puppet.md's table (tests/mgmt/test_puppet.py checks it)."""
    for name in names:
        res.take(name)


# Types ------------------------------------------------------------------------------------


def _file(res: PRes) -> Spec:
    path = _str(res.take("path", res.title), "path").rstrip("/") or "/"
    _ignore(res, "backup", "show_diff", "checksum", "selinux_ignore_defaults")
    ensure = res.take("ensure")
    path, params, untouched, warnings = _file_state(res, path, ensure)
    _unapplied(res, ensure, bool(params.get("symlink")))
    source = res.take("source")
    for ours in ("content", "owner", "group", "mode"):
        value = res.take(ours)
        if value is not None:
            params[ours] = _str(value, ours)
    if source is not None and params.get("symlink"):
        params["source"] = _str(source, "source")
    elif source is not None:
        params["source"] = _source(source, res.modulepath) + ("/" if path.endswith("/") else "")
    recurse = res.take("recurse")
    if "mode" in params:
        is_dir = {"file": False, "directory": None if recurse else True}.get(ensure or "")
        params["mode"] = _dir_mode(params["mode"], is_dir)
    if recurse is not None:
        if recurse == "remote":
            raise Untranslatable("recurse => remote has no translation")
        params["recurse"] = _bool(recurse, "recurse")
        if params["recurse"] and "mode" in params and "source" in params:
            params["recurse_mode"] = True  # Puppet gives every copied entry the mode
    for flag in ("purge", "force"):
        value = res.take(flag)
        if value is not None:
            params[flag] = _bool(value, flag)
    _file_replace(res, path, params)
    if ensure == "absent" and params.get("force"):
        params["recurse"] = True  # Puppet's force removes a directory with what is in it
    elif ensure == "absent" and os.path.isdir(path) and not os.path.islink(path):
        # Without force Puppet removes no directory, empty or not: a notice, nothing done.
        warnings.append("Not removing directory; use force => true to override (as Puppet)")
        untouched = True
    if untouched:
        return Spec("noop", f"file:{path}", {}, warnings=warnings)
    return Spec("file", path, {"path": path, **params}, warnings=warnings)


def _source(value: Any, modulepath: str) -> str:
    """The local path of a file's `source`: a path, `file://PATH`, or a module's file
    (`puppet:///modules/MODULE/PATH`, in the module path as `puppet apply` finds it); of a
    list, the first that is there, as Puppet takes it."""
    looked = _sources(value, modulepath)
    found = [paths[-1] for paths in looked if os.path.lexists(paths[-1])]
    if found:
        return str(found[0])
    if len(looked) == 1 and not str(value).startswith("puppet:"):
        return str(looked[0][-1])  # a local path: the resource fails until it is there
    where = ", ".join(str(p) for paths in looked for p in paths)
    raise Untranslatable(f"source => {value!r}: not found (looked for {where})")


def _sources(value: Any, modulepath: str) -> list[list[Path]]:
    """Where each of a file's sources (`source => [A, B]`: the first that is there) is looked
    for; the last path of each: where it is, if anywhere."""
    looked = []
    for item in _list(value):
        text = _str(item, "source")
        if text.startswith("puppet:"):
            try:
                looked.append(module_file(text, modulepath))
            except ValueError as why:
                raise Untranslatable(f"source => {text!r}: {why}") from None
            continue
        local = text.removeprefix("file://")
        if not local.startswith("/"):
            raise Untranslatable(
                f"source => {text!r}: expected an absolute path, file:// or puppet:///modules/"
            )
        looked.append([Path(local)])
    return looked


def source_files(catalog: Any, modulepath: str) -> list[Path]:
    """What a file `source` of `catalog` that is not (yet) there was looked for at, and those
    of a list before the one taken: writing one changes the translation (the compile
    watches them); the source taken is the file resource's to watch."""
    files: list[Path] = []
    for raw in catalog.get("resources", []):
        source = (raw.get("parameters") or {}).get("source") if raw.get("type") == "File" else None
        try:
            looked = _sources(source, modulepath)
        except Untranslatable:
            continue
        found = next((i for i, paths in enumerate(looked) if os.path.lexists(paths[-1])), None)
        for i, paths in enumerate(looked):
            files += paths if i != found else paths[:-1]
    return files


def _file_replace(res: PRes, path: str, params: dict[str, Any]) -> None:
    """`replace => false` (or `no`): a file already there keeps its content, its owner, group
    and mode still managed (our `replace`). It concerns content only: a directory, or an
    absent path, has none to keep; a tree copy or a link would keep what the file resource
    cannot say, so they are refused."""
    value = res.take("replace")
    if value is None or _bool({"yes": "true", "no": "false"}.get(value, value), "replace"):
        return
    if params.get("recurse") or params.get("symlink"):
        raise Untranslatable("replace => false has no translation with recurse or a link")
    if not path.endswith("/") and ("content" in params or "source" in params):
        params["replace"] = False


def _file_state(res: PRes, path: str, ensure: Any) -> tuple[str, dict[str, Any], bool, list[str]]:
    """What `ensure` makes of `path`: (our path, our params, untouched: a noop, warnings)."""
    params: dict[str, Any] = {}
    # No ensure: Puppet manages only the attributes of what is there, so a missing path is
    # left missing (a noop vertex, kept for the relationships that name it).
    untouched = False
    warnings = []
    typed = bool({"content", "source"} & res.params.keys())
    if ensure in ("present", None) and (ensure or not typed) and os.path.islink(path):
        # Puppet's `present` (or no ensure, no content or source) takes a symlink as it is:
        # its owner and group are the link's own, no content is synced (Puppet warns too).
        # Kept as it points when the manifest is translated.
        if typed:
            warnings.append("a symlink: its content is not synced (ensure => present)")
            _ignore(res, "content", "source")
        params.update(state="exists", symlink=True, source=os.readlink(path))
    elif ensure in ("file", "present", None):
        if ensure is not None:
            params["state"] = "exists"
        # Puppet's `present` (or no ensure) takes whatever is there: an existing directory is
        # managed as one, not refused as "a directory, expected a file".
        typeless = ensure != "file" and not typed
        if typeless and os.path.isdir(path):
            path += "/"
        untouched = ensure is None and typeless and not os.path.lexists(path)
        # Where Puppet makes a file, it replaces a symlink at the path without force (the
        # link only: its target is never opened). Not a file, nor a directory, without force.
        if ensure == "file" or (ensure is None and typed):
            params["replace_link"] = True
    elif ensure == "directory":
        path += "/"
        params.update(state="exists", replace_link=True)
    elif ensure == "absent":
        params["state"] = "absent"
    elif ensure == "link" or (isinstance(ensure, str) and ensure.startswith("/")):
        target = res.take("target") if ensure == "link" else ensure
        if not isinstance(target, str) or not target:
            raise Untranslatable("ensure => link needs a target")
        params.update(state="exists", symlink=True, source=target)
    else:
        raise Untranslatable(f"ensure => {ensure!r} has no translation")
    return path, params, untouched, warnings


def _unapplied(res: PRes, ensure: Any, symlink: bool) -> None:
    """Drop what Puppet does not apply, as resource defaults (`File { mode => '0600' }`) give it
    to every file: all but the removal of an absent path, a link's mode (and recursion)."""
    links = res.take("links")
    if links not in (None, "manage"):
        raise Untranslatable(
            f"links => {links!r} has no translation: a symlink at the path is never followed "
            "(links => manage, Puppet's default)"
        )
    if ensure == "absent":
        _ignore(res, "content", "source", "owner", "group", "mode", "purge")
    elif symlink:
        _ignore(res, "mode", "recurse", "purge")


def _dir_mode(mode: str, is_dir: bool | None) -> str:
    """Puppet gives a directory the search bit wherever a numeric mode has the read bit
    (`0644` makes a directory 0755). `is_dir` None: a file or a directory (no `ensure`, or
    `recurse`), so `X` in a symbolic mode does it; a mode with execute bits cannot, kept."""
    if not re.fullmatch(r"[0-7]{3,4}", mode):
        return mode
    bits = int(mode, 8)
    search = (bits & 0o444) >> 2
    if is_dir is False or not search & ~bits:
        return mode
    if is_dir:
        return f"{bits | search:04o}"
    if bits & 0o111:
        return mode
    clauses = ["a="]
    for who, shift, special in (("u", 6, "s"), ("g", 3, "s"), ("o", 0, "t")):
        perms = "r" * bool(bits >> shift & 4) + "w" * bool(bits >> shift & 2)
        perms += "X" * bool(bits >> shift & 4)
        perms += special * bool(bits & (0o4000 >> (2 - shift // 3)))
        clauses.append(f"{who}={perms}")
    return ",".join(clauses)


def _exec(res: PRes) -> Spec:
    command = res.take("command", res.title)
    params: dict[str, Any] = {}
    if isinstance(command, list):
        argv = [_str(a, "command") for a in command]
        if not argv:
            raise Untranslatable("command => []: nothing to run")
        params["cmd"], params["args"] = argv[0], argv[1:]
    else:
        params["cmd"], params["shell"] = _str(command, "command"), "/bin/sh"
    _ignore(res, "logoutput")
    env = _exec_env(res, command)
    if env:
        params["env"] = env
    for ours, theirs in (("cwd", "cwd"), ("user", "user"), ("group", "group")):
        value = res.take(theirs)
        if value is not None:
            params[ours] = _str(value, theirs)
    timeout = res.take("timeout", EXEC_TIMEOUT)
    params["timeout"] = _whole(timeout, "timeout", scale=1)
    # Each command in a subshell of its own; `)` on a line of its own, as a command may end
    # with a comment (`test -d /srv # the tree`).
    guards = [f"({_str(c, 'onlyif')}\n)" for c in _list(res.take("onlyif"))]
    guards += [f"! ({_str(c, 'unless')}\n)" for c in _list(res.take("unless"))]
    creates = [_str(c, "creates") for c in _list(res.take("creates"))]
    if len(creates) == 1:
        params["creates"] = creates[0]
    else:
        guards += [f"[ ! -e '{_quote(c)}' ]" for c in creates]
    if guards:
        params["ifcmd"], params["ifshell"] = " && ".join(guards), "/bin/sh"
    refreshonly = res.take("refreshonly")
    if refreshonly is not None and _bool(refreshonly, "refreshonly"):
        params["refreshonly"] = True
    if res.take("refresh") is not None:
        raise Untranslatable("refresh => (a command run on refresh) has no translation")
    returns = [_whole(r, "returns") for r in _list(res.take("returns", 0))]
    if returns != [0]:
        _returns(params, returns)
    meta: dict[str, Any] = {}
    tries = _whole(res.take("tries", 1), "tries")
    if tries > 1:
        meta["retry"] = tries - 1
        meta["delay"] = _whole(res.take("try_sleep", 0), "try_sleep", scale=1000)
    res.take("try_sleep")
    return Spec("exec", res.title, params, meta)


def _returns(params: dict[str, Any], returns: list[int]) -> None:
    """`returns => [0, 2]`: the exit codes that are a success, as Puppet takes them (0 too
    only if listed). Ours succeeds on 0: the command runs in a shell that exits 0 on one of
    them, and fails saying so on another (as Puppet: "returned 1 instead of one of [0, 2]")."""
    codes = ", ".join(map(str, returns))
    check = (
        f"rc=$?; case $rc in {'|'.join(map(str, returns))}) exit 0;; esac; "
        f'echo "returned $rc instead of one of [{codes}]" >&2; [ $rc -ne 0 ] || exit 1; exit $rc'
    )
    if "shell" in params:  # a string: the command itself, in a subshell (it may end with a #)
        params["cmd"] = f"({params['cmd']}\n); {check}"
    else:  # an argv, as "$@"
        argv = [params.pop("cmd"), *params.pop("args")]
        params["cmd"], params["args"] = "/bin/sh", ["-c", f'"$@"; {check}', "sh", *argv]


def _exec_env(res: PRes, command: Any) -> dict[str, str]:
    """An exec's environment: `path` (PATH), `environment` (NAME=VALUE...). Without `path`,
    the posix provider's commands must be absolute paths, as Puppet's (_qualified)."""
    provider = res.params.get("provider", "posix")
    _default_provider(res, "posix", "shell")
    env: dict[str, str] = {}
    path = res.take("path")
    if path is None and provider == "posix":
        for each in [command, *_list(res.params.get("onlyif")), *_list(res.params.get("unless"))]:
            _qualified(each)
    if path is not None:
        env["PATH"] = ":".join(_str(p, "path") for p in _list(path))
    for entry in _list(res.take("environment")):
        key, sep, value = _str(entry, "environment").partition("=")
        if not sep:
            raise Untranslatable(f"environment => {entry!r}: expected NAME=VALUE")
        env[key] = value
    return env


def _qualified(command: Any) -> None:
    """Puppet's posix provider refuses a command (`command`, each of `onlyif` and `unless`)
    whose program is not an absolute path when no `path` is given: it would depend on the
    agent's PATH. Of an array (argv), the first; of a string, the first word (or quoted)."""
    if isinstance(command, list):
        exe = str(command[0]) if command else "/"
    else:
        quoted = re.match(r"^\"([^\"]+)\"|^'([^']+)'", str(command))
        exe = (quoted[1] or quoted[2]) if quoted else str(command).split(" ")[0]
    if not exe.startswith("/"):
        raise Invalid(
            f"'{exe}' is not qualified and no path was specified. Please qualify the "
            "command or specify a path."
        )


def _quote(text: str) -> str:
    return text.replace("'", "'\\''")


def _package(res: PRes) -> Spec:
    _default_provider(res, "apt", "dpkg")
    name = _str(res.take("name", res.title), "name")
    ensure = res.take("ensure", "present")
    warnings = []
    if ensure in ("present", "installed"):
        state = "installed"
    elif ensure == "latest":
        state = "newest"
    elif ensure in ("absent", "purged"):
        state = "uninstalled"
        if ensure == "purged":
            warnings.append("purged: removed, but its configuration files stay (apt-get remove)")
    elif isinstance(ensure, str) and ensure and ensure[0].isdigit():
        state = ensure
    else:
        raise Untranslatable(f"ensure => {ensure!r} has no translation")
    return Spec("pkg", name, {"state": state}, warnings=warnings)


def _service(res: PRes) -> Spec:
    _default_provider(res, "systemd")
    _ignore(res, "hasstatus", "hasrestart")
    name = _str(res.take("name", res.title), "name").removesuffix(".service")
    params: dict[str, Any] = {}
    ensure = res.take("ensure")
    if ensure is not None:
        key = str(ensure).lower()
        table = {"running": "running", "true": "running", "stopped": "stopped", "false": "stopped"}
        if key not in table:
            raise Untranslatable(f"ensure => {ensure!r} has no translation")
        params["state"] = table[key]
    enable = res.take("enable")
    if enable is not None:
        params["startup"] = "enabled" if _bool(enable, "enable") else "disabled"
    return Spec("svc", name, params)


def _user(res: PRes) -> Spec:
    name = _str(res.take("name", res.title), "name")
    params: dict[str, Any] = {}
    ensure = res.take("ensure", "present")
    params["state"] = {"present": "exists", "absent": "absent"}.get(str(ensure))
    if params["state"] is None:
        raise Untranslatable(f"ensure => {ensure!r} has no translation")
    uid = res.take("uid")
    if uid is not None:
        params["uid"] = _whole(uid, "uid")
    gid = res.take("gid")
    if gid is not None:
        text = _str(gid, "gid")
        params["gid" if text.isdigit() else "group"] = int(text) if text.isdigit() else text
    groups = res.take("groups")
    if groups is not None:
        params["groups"] = [_str(g, "groups") for g in _list(groups)]
    for ours, theirs in (("homedir", "home"), ("shell", "shell")):
        value = res.take(theirs)
        if value is not None:
            params[ours] = _str(value, theirs)
    allowdupe = res.take("allowdupe")
    if allowdupe is not None and _bool(allowdupe, "allowdupe"):
        params["allowduplicateuid"] = True
    managehome = res.take("managehome")
    if managehome is not None and _bool(managehome, "managehome"):
        raise Untranslatable("managehome => true has no translation (home directories)")
    if params["state"] == "absent":  # Puppet ignores the other attributes of an absent user
        params = {"state": "absent"}
    return Spec("user", name, params)


def _group(res: PRes) -> Spec:
    name = _str(res.take("name", res.title), "name")
    ensure = res.take("ensure", "present")
    state = {"present": "exists", "absent": "absent"}.get(str(ensure))
    if state is None:
        raise Untranslatable(f"ensure => {ensure!r} has no translation")
    params: dict[str, Any] = {"state": state}
    gid = res.take("gid")
    if gid is not None and state == "exists":
        params["gid"] = _whole(gid, "gid")
    return Spec("group", name, params)


def _notify(res: PRes) -> Spec:
    message = res.take("message", res.title)
    res.take("name")
    _ignore(res, "withpath")
    return Spec("msg", res.title, {"body": _str(message, "message")})


# cron: Puppet's crontab entries become systemd timers (our cron kind), named puppet-<title>.
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_SPECIAL = {
    "hourly": "hourly",
    "daily": "daily",
    "weekly": "weekly",
    "monthly": "monthly",
    "annually": "yearly",
    "yearly": "yearly",
    "midnight": "daily",
}


def _cron(res: PRes) -> Spec:
    name = "puppet-" + re.sub(r"[^A-Za-z0-9_.-]", "-", res.title)
    _ignore(res, "name", "target")
    user = res.take("user", "root")
    if user != "root":
        raise Untranslatable(f"user => {user!r}: only root's jobs translate (systemd timers)")
    if res.take("environment") is not None:
        raise Untranslatable("environment has no translation")
    ensure = res.take("ensure", "present")
    if ensure == "absent":
        for field_name in ("command", "special", "minute", "hour", "monthday", "month", "weekday"):
            res.take(field_name)
        return Spec("cron", name, {"state": "absent"})
    command = _str(res.take("command"), "command")
    special = res.take("special")
    params: dict[str, Any] = {"cmd": command, "description": f"Puppet cron {res.title}"}
    if special is not None:
        if special == "reboot":
            params.update(trigger="OnBootSec", time="0")
        elif special in _SPECIAL:
            params.update(trigger="OnCalendar", time=_SPECIAL[special])
        else:
            raise Untranslatable(f"special => {special!r} has no translation")
        return Spec("cron", name, params)
    fields = {f: _cron_field(res, f) for f in ("minute", "hour", "monthday", "month", "weekday")}
    if fields["monthday"] != "*" and fields["weekday"] != "*":
        raise Untranslatable(
            "monthday and weekday both set: cron runs when either matches, a systemd calendar "
            "only when both do"
        )
    days = "" if fields["weekday"] == "*" else fields["weekday"] + " "
    when = f"{days}*-{fields['month']}-{fields['monthday']} {fields['hour']}:{fields['minute']}:00"
    params.update(trigger="OnCalendar", time=when)
    return Spec("cron", name, params)


def _cron_field(res: PRes, name: str) -> str:
    """One crontab field in systemd's calendar syntax: lists, ranges (a..b), steps (x/n)."""
    value = res.take(name, "*")
    parts = []
    for item in _list(value):
        text = _str(item, name).strip().lower()
        if text in ("*", "absent"):
            parts.append("*")
            continue
        base, _, step = text.partition("/")
        if base == "*":
            base = "1" if name in ("monthday", "month") else "0"
        if name == "weekday":
            base = "..".join(_weekday(p) for p in base.split("-"))
        else:
            base = "..".join(_number(p, name) for p in base.split("-"))
        parts.append(base + (f"/{step}" if step else ""))
    if name == "weekday" and any("/" in p for p in parts):
        raise Untranslatable("weekday with a step has no translation")
    return ",".join(parts)


def _weekday(text: str) -> str:
    if text.isdigit() and int(text) < len(_DAYS):
        return _DAYS[int(text)]
    for day in _DAYS:
        if text[:3] == day.lower():
            return day
    raise Untranslatable(f"weekday {text!r}: expected 0-7 or a day's name")


def _number(text: str, name: str) -> str:
    if name == "month" and text[:3] in _MONTHS:
        return f"{_MONTHS.index(text[:3]) + 1:02d}"
    if not text.isdigit():
        raise Untranslatable(f"{name} {text!r}: expected a number")
    return f"{int(text):02d}"


def _host(res: PRes) -> Spec:
    name = _str(res.take("name", res.title), "name")
    _default_provider(res, "parsed")
    ensure = res.take("ensure", "present")
    if ensure not in ("present", "absent"):
        raise Untranslatable(f"ensure => {ensure!r} has no translation")
    params: dict[str, Any] = {"state": "exists" if ensure == "present" else "absent"}
    target = res.take("target")
    if target is not None:
        params["target"] = _str(target, "target")
    ip, aliases, comment = res.take("ip"), res.take("host_aliases"), res.take("comment")
    if ensure == "present":
        if ip is not None:
            params["ip"] = _str(ip, "ip")
        if aliases is not None:
            params["aliases"] = [_str(a, "host_aliases") for a in _list(aliases)]
        if comment is not None:
            params["comment"] = _str(comment, "comment")
    return Spec("host", name, params)


def _mount(res: PRes) -> Spec:
    point = _str(res.take("name", res.title), "name")
    _default_provider(res, "parsed")
    _ignore(res, "remounts", "atboot")
    ensure = res.take("ensure", "mounted")
    if ensure == "absent":
        for name in ("device", "fstype", "options", "dump", "pass"):
            res.take(name)
        return Spec("mount", point, {"state": "absent"})
    if ensure != "mounted":
        raise Untranslatable(
            f"ensure => {ensure!r} has no translation (our mount is mounted and in fstab, "
            "or neither)"
        )
    if res.take("target") not in (None, "/etc/fstab"):
        raise Untranslatable("target (another fstab) has no translation")
    options: dict[str, str] = {}
    for option in _str(res.take("options", "defaults"), "options").split(","):
        key, _, value = option.partition("=")
        options[key.strip()] = value
    params: dict[str, Any] = {
        "state": "exists",
        "device": _str(res.take("device"), "device"),
        "type": _str(res.take("fstype"), "fstype"),
        "options": options,
        "freq": _whole(res.take("dump", 0), "dump"),
        "passno": _whole(res.take("pass", 0), "pass"),
    }
    return Spec("mount", point, params)


def _puppet_resource(res: PRes, work: Path, modulepath: str) -> Spec:
    """The fallback: `puppet resource TYPE TITLE param=value...` as an exec (at startup and on
    each refresh; Puppet makes it idempotent), its settings and state in `work`."""
    args = ["resource", *isolated(work), "--basemodulepath", modulepath]
    args += [res.type.lower(), res.title]
    params = dict(res.params)
    if res.type == "Exec" and isinstance(params.get("path"), list):
        params["path"] = ":".join(map(str, params["path"]))  # an exec's: colon-separated too
    for name, value in sorted(params.items()):
        if name in IGNORED_META:
            continue
        if isinstance(value, list | dict):
            raise Untranslatable(
                f"no translation, and {name} => {value!r} cannot be passed to "
                "`puppet resource` (a list or a hash)"
            )
        args.append(f"{name}={str(value).lower() if isinstance(value, bool) else value}")
    spec = Spec(
        "exec",
        f"puppet resource {res.ref}",
        {"cmd": "puppet", "args": args, "timeout": EXEC_TIMEOUT},
    )
    spec.warnings.append("no translation: runs through `puppet resource` (--puppet-fallback)")
    return spec


TRANSLATORS: dict[str, Translator] = {
    "File": _file,
    "Exec": _exec,
    "Package": _package,
    "Service": _service,
    "User": _user,
    "Group": _group,
    "Notify": _notify,
    "Cron": _cron,
    "Mount": _mount,
    "Host": _host,
}
