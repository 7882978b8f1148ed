"""file: a file or a directory: existence, content (or a copy of a source), owner, group, mode.

A trailing "/" on the path means a directory. Writes are atomic (a temp file in the same
directory gets its content, owner and mode, is fsynced, then renamed over the path). Missing
parent directories are created (0755). A symlink at the path is never followed unless
`follow: true`; `force: true` replaces it. See docs/resources/file.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import grp
import io
import os
import pwd
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Literal

from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Resource, register
from engine.watcher import PathWatcher

TEMP_PREFIX = ".mgmt."  # temp files of atomic writes start with this
CHUNK = 1 << 20  # read/copy block size
INLINE_LIMIT = 1 << 16  # files up to this size are compared/written inline, bigger in a thread
FILE_BASE = 0o644  # permission bits of a new file when neither mode nor source says otherwise
DIR_BASE = 0o755  # the same for a new directory (also used for created parent directories)
MAX_ID = 2**32 - 2  # largest numeric uid/gid (2**32 - 1 means "unchanged" to chown)

_OCTAL = re.compile(r"0?[0-7]{3,4}")
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_SHIFT = {"u": 6, "g": 3, "o": 0}
_SPECIAL = {"u": stat.S_ISUID, "g": stat.S_ISGID, "o": stat.S_ISVTX}
_MANAGED = ("content", "source", "owner", "group", "mode")
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class Step:
    """One change: how `--noop` describes it, how it is logged once done, and how to do it."""

    would: str
    done: str
    run: Callable[[], object] | None = None  # None: done by an earlier step (e.g. the write)
    slow: bool = False  # run in a thread


@register("file")
@dataclass(kw_only=True, eq=False)
class FileRes(Resource):
    SENDS: ClassVar[tuple[str, ...]] = ("content",)

    # Absolute path; a trailing "/" means a directory. Default None: the resource name.
    path: str | None = None
    # "exists" or "absent"; None leaves existence alone, unless content, source, owner, group
    # or mode is set, which imply "exists". Default None.
    state: Literal["exists", "absent"] | None = None
    # The exact contents of the file, written as UTF-8; files only. Default None (unmanaged).
    content: str | None = None
    # Absolute path of a file to copy (with recurse: a directory tree); excludes content.
    # Default None (no copy).
    source: str | None = None
    # Owning user, a name or a numeric uid (with recurse: also below path). Default None.
    owner: str | None = None
    # Owning group, a name or a numeric gid (with recurse: also below path). Default None.
    group: str | None = None
    # Permission bits: octal ("0644") or chmod-style symbolic ("u=rw,go=r", "a-w") applied to
    # the current bits. Default None (unmanaged; new files 0644, directories 0755).
    mode: str | None = None
    # Allow replacing a file by a directory or the reverse, replacing a symlink at path, and
    # removing a non-empty directory (with recurse). Default false.
    force: bool = False
    # With source: copy the whole tree; with state absent: remove a directory with everything
    # in it (also needs force). Default false.
    recurse: bool = False
    # With recurse and source: delete entries below path that the source lacks. Default false.
    purge: bool = False
    # If path is a symlink, manage its target (otherwise a symlink is refused). Default false.
    follow: bool = False

    @property
    def _spec_path(self) -> str:
        return self.path if self.path is not None else self.name

    @property
    def _fs_path(self) -> str:
        return os.path.normpath(self._spec_path)

    @property
    def _is_dir(self) -> bool:
        return self._spec_path.endswith("/")

    @property
    def _managed(self) -> bool:
        return self.state is not None or any(getattr(self, k) is not None for k in _MANAGED)

    def validate(self) -> None:
        super().validate()
        self._validate_path()
        if self.content is not None and self.source is not None:
            raise ValidationError("cannot be combined with content: set one of them", "source")
        if self.content is not None and self._is_dir:
            raise ValidationError(
                f"a directory path ({self._spec_path!r} ends with '/') has no content", "content"
            )
        if self.state == "absent":
            for key in _MANAGED:
                if getattr(self, key) is not None:
                    value = getattr(self, key)
                    raise ValidationError(f"cannot be set with state 'absent' (got {value!r})", key)
        self._validate_source()
        if self.recurse and self.source is None and self.state != "absent":
            raise ValidationError(
                "needs a source (to copy a tree) or state 'absent' (to remove one)", "recurse"
            )
        if self.purge and not (self.recurse and self.source is not None):
            raise ValidationError("needs recurse: true and a source directory", "purge")
        if self.mode is not None:
            try:
                mode_after(self.mode, 0, False)
            except ValueError:
                raise ValidationError(
                    f"expected octal like '0644' or symbolic like 'u=rw,go=r', got {self.mode!r}",
                    "mode",
                ) from None
        for key in ("owner", "group"):
            _validate_id(getattr(self, key), key)

    def _validate_path(self) -> None:
        key, path = ("path" if self.path is not None else "name"), self._spec_path
        if not os.path.isabs(path) or "\0" in path:
            raise ValidationError(f"expected an absolute path, got {path!r}", key)
        if self._fs_path == "/":
            raise ValidationError("refusing to manage '/'", key)

    def _validate_source(self) -> None:
        source = self.source
        if source is None:
            return
        if not os.path.isabs(source) or "\0" in source:
            raise ValidationError(f"expected an absolute path, got {source!r}", "source")
        if self._is_dir and not self.recurse:
            raise ValidationError(
                "a directory path copies its source only with recurse: true", "recurse"
            )
        if not self._is_dir and (self.recurse or source.endswith("/")):
            raise ValidationError(
                f"a directory source needs a path ending in '/', got {self._spec_path!r}",
                "path" if self.path is not None else "name",
            )
        src, dst = os.path.normpath(source), self._fs_path
        if self._is_dir and os.path.commonpath([src, dst]) in (src, dst):
            raise ValidationError(
                f"{source!r} and path {dst!r} must not contain each other", "source"
            )

    async def watch(self) -> None:
        while True:
            paths = self._watch_paths()
            recurse = self.recurse and self.source is not None
            async with PathWatcher(paths, recurse=recurse) as watcher:
                self._watching = paths
                # The startup event; after a restart (a followed link moved) a catch-up event.
                await self.handle.event()
                async for _ in watcher:
                    await self.handle.event()
                    if self._watch_paths() != paths:
                        break  # re-watch: a symlink now points elsewhere

    def _watch_paths(self) -> list[str]:
        paths = [self._fs_path]
        if self.follow:
            paths.append(os.path.realpath(self._fs_path))
        if self.source is not None:
            paths += [os.path.normpath(self.source), os.path.realpath(self.source)]
        return list(dict.fromkeys(paths))

    async def check_apply(self, apply: bool) -> bool:
        if not self._managed:
            self.handle.logger.debug("nothing to do: none of state, %s is set", ", ".join(_MANAGED))
            return True
        try:
            path, steps = await self._plan()
        except OSError as err:
            raise ResourceError(f"cannot inspect {self._fs_path}: {err}") from err
        self.handle.send(content=functools.partial(_read_small, path))
        if not steps:
            self.handle.logger.debug("nothing to do: %s", self._why(path))
            return True
        if apply and self.meta.reverse and getattr(self, "_prior", None) is None:
            self._prior = _observe(path)
        for step in steps:
            if not apply:
                self.handle.logger.info("would %s", step.would)
                continue
            try:
                await _run(step)
            except OSError as err:
                raise ResourceError(f"could not {step.would}: {err}") from err
            self.handle.logger.info("%s", step.done)
        return False

    def _why(self, path: str) -> str:
        if self.state == "absent":
            return f"{path} is absent"
        what = [k for k in _MANAGED if getattr(self, k) is not None]
        kind = "directory" if self._is_dir else "file"
        return f"{kind} {path} exists" + (f" with the wanted {', '.join(what)}" if what else "")

    # capabilities: autoedges, reversal -----------------------------------------------------------

    def uids(self) -> list[UID]:
        return [UID("file", self._fs_path + ("/" if self._is_dir and self._fs_path != "/" else ""))]

    def autoedges(self) -> list[list[UID]]:
        """The nearest managed parent directory, and a managed source."""
        parents, path = [], self._fs_path
        while path != "/":
            path = os.path.dirname(path)
            parents.append(UID("file", path if path == "/" else path + "/"))
        wants = [parents]
        if self.source is not None:
            source = os.path.normpath(self.source)
            wants.append([UID("file", source), UID("file", source.rstrip("/") + "/")])
        return wants

    def reversal(self) -> Any:
        """What path was before this resource first changed it."""
        return getattr(self, "_prior", None) or _observe(self._fs_path)

    async def reverse(self, data: Any) -> None:
        """Put back what was there: remove what we created, or restore content and mode."""
        await asyncio.to_thread(_restore, self._fs_path, data)

    # planning: observe (lstat, read) and decide; nothing here writes --------------------------

    async def _plan(self) -> tuple[str, list[Step]]:
        path, st = self._locate()
        if self.state == "absent":
            return path, self._plan_absent(path, st)
        if self._is_dir:
            return path, await self._plan_dir(path, st)
        return path, await self._plan_file(path, st)

    def _locate(self) -> tuple[str, os.stat_result | None]:
        """The path to manage (a followed symlink's target) and its lstat (None: missing)."""
        path = self._fs_path
        st = _lstat(path)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return path, st
        if self.follow:
            real = os.path.realpath(path)
            real_st = _lstat(real)
            if real_st is not None and stat.S_ISLNK(real_st.st_mode):
                raise ResourceError(f"symlink {path} does not resolve (a loop?)")
            return real, real_st
        if self.state == "absent" or self.force:
            return path, st  # the link itself
        raise ResourceError(
            f"{path} is a symlink (to {os.readlink(path)!r}), not followed: set follow: true "
            "to manage its target, or force: true to replace the link"
        )

    def _plan_absent(self, path: str, st: os.stat_result | None) -> list[Step]:
        if st is None:
            return []
        if stat.S_ISDIR(st.st_mode) and os.listdir(path):
            if not (self.recurse and self.force):
                raise ResourceError(
                    f"directory {path} is not empty: set recurse: true and force: true "
                    "to remove it with everything in it"
                )
            return [Step(f"remove {path} recursively", f"removed {path}", _remover(path), True)]
        return [Step(f"remove {path}", f"removed {path}", _remover(path))]

    async def _plan_file(self, path: str, st: os.stat_result | None) -> list[Step]:
        steps = _parent_steps(path) if st is None else []
        after: list[Step] = []  # a replaced symlink is only reported: the rename swaps it out
        if st is not None and not stat.S_ISREG(st.st_mode):
            replace = self._replace_step(path, st, "file")
            (steps if replace.run else after).append(replace)
        cur = st if st is not None and stat.S_ISREG(st.st_mode) else None
        source, src = self._source(want_dir=False)
        uid, gid = self._ids()
        mode = self._want_mode(cur, src, is_dir=False)
        changes = attr_steps(path, "", cur, mode=mode, uid=uid, gid=gid)
        data: bytes | str | None = self.content.encode() if self.content is not None else source
        size = len(data) if isinstance(data, bytes) else src.st_size if src is not None else 0
        if cur is not None and (data is None or await _same(path, cur, data, size)):
            return steps + changes
        if cur is not None:
            uid = cur.st_uid if uid == -1 else uid
            gid = cur.st_gid if gid == -1 else gid
        write = functools.partial(atomic_write, path, _filler(data), mode, uid, gid)
        if cur is None:
            create = Step(f"create {path}", f"created {path}", write, slow=True)
            return [*steps, create, *after]
        quiet = [dataclasses.replace(c, run=None) for c in changes]  # the write sets them
        return [Step("update content", "content updated", write, slow=True), *quiet]

    async def _plan_dir(self, path: str, st: os.stat_result | None) -> list[Step]:
        steps = _parent_steps(path) if st is None else []
        if st is not None and not stat.S_ISDIR(st.st_mode):
            steps.append(self._replace_step(path, st, "directory"))
        cur = st if st is not None and stat.S_ISDIR(st.st_mode) else None
        source, src = self._source(want_dir=True)
        uid, gid = self._ids()
        mode = self._want_mode(cur, src, is_dir=True)
        if cur is None:
            make = functools.partial(make_dir, path, mode, uid, gid)
            steps.append(Step(f"create directory {path}", f"created directory {path}", make))
        steps += attr_steps(path, "", cur, mode=mode, uid=uid, gid=gid)
        if source is not None:
            tree = functools.partial(self._plan_tree, source, path, cur is not None, "", (uid, gid))
            steps += await asyncio.to_thread(tree)
        return steps

    def _plan_tree(
        self, src: str, dst: str, dst_is_dir: bool, rel: str, ids: tuple[int, int]
    ) -> list[Step]:
        """Steps that make the tree below dst mirror the one below src (runs in a thread)."""
        have = _scan(dst) if dst_is_dir else {}
        want = _scan(src)
        steps: list[Step] = []
        for name, src_st in sorted(want.items()):
            sp, dp = os.path.join(src, name), os.path.join(dst, name)
            steps += self._plan_entry(sp, dp, rel + name, src_st, have.get(name), ids=ids)
        if self.purge:
            for name in sorted(have.keys() - want.keys()):
                dp, label = os.path.join(dst, name), rel + name
                steps.append(Step(f"purge {label}", f"purged {label}", _remover(dp), True))
        return steps

    def _plan_entry(
        self,
        sp: str,
        dp: str,
        rel: str,
        src_st: os.stat_result,
        st: os.stat_result | None,
        *,
        ids: tuple[int, int],
    ) -> list[Step]:
        kind = kind_of(src_st)
        if kind not in ("file", "directory", "symlink"):
            raise ResourceError(
                f"source {sp} is a {kind}: only files, dirs and symlinks are copied"
            )
        steps: list[Step] = []
        if st is not None and kind_of(st) != kind:
            steps.append(self._replace_step(dp, st, kind, remove=True))
            st = None
        uid, gid = ids
        bits = stat.S_IMODE(src_st.st_mode)
        if kind == "directory":
            make = functools.partial(make_dir, dp, bits, uid, gid)
            if st is None:
                steps.append(Step(f"create directory {rel}/", f"created directory {rel}/", make))
            steps += attr_steps(dp, rel + " ", st, mode=bits, uid=uid, gid=gid)
            return steps + self._plan_tree(sp, dp, st is not None, rel + "/", ids)
        if kind == "symlink":
            target = os.readlink(sp)
            if st is None or os.readlink(dp) != target:
                link = functools.partial(atomic_symlink, target, dp, uid, gid)
                return [*steps, Step(f"link {rel} -> {target}", f"linked {rel} -> {target}", link)]
            return steps + attr_steps(dp, rel + " ", st, mode=None, uid=uid, gid=gid)
        if st is None or st.st_size != src_st.st_size or not same_content(dp, sp):
            copy = functools.partial(atomic_write, dp, _filler(sp), bits, uid, gid)
            return [*steps, Step(f"copy {rel}", f"copied {rel}", copy, True)]
        return steps + attr_steps(dp, rel + " ", st, mode=bits, uid=uid, gid=gid)

    def _replace_step(self, path: str, st: os.stat_result, want: str, remove: bool = False) -> Step:
        """Replacing what is at path by a `want` (needs force)."""
        have = kind_of(st)
        if not self.force:
            raise ResourceError(
                f"{path} is a {have}, expected a {want}: set force: true to replace it"
            )
        if not (remove or stat.S_ISDIR(st.st_mode) or want == "directory"):
            # The atomic rename of the new file swaps it out.
            return Step(f"replace the {have} {path} with a {want}", f"replaced the {have} {path}")
        return Step(
            f"remove the {have} {path} to replace it with a {want}",
            f"removed the {have} {path} to replace it with a {want}",
            _remover(path),
            slow=True,
        )

    def _source(self, want_dir: bool) -> tuple[str | None, os.stat_result | None]:
        """The source's resolved path and stat (a symlink named as the source is followed)."""
        if self.source is None:
            return None, None
        try:
            st = os.stat(self.source)
        except FileNotFoundError:
            raise ResourceError(f"source {self.source} does not exist") from None
        if stat.S_ISDIR(st.st_mode) != want_dir or not (want_dir or stat.S_ISREG(st.st_mode)):
            want = "directory" if want_dir else "file"
            raise ResourceError(f"source {self.source} is a {kind_of(st)}, expected a {want}")
        return os.path.realpath(self.source), st

    def _ids(self) -> tuple[int, int]:
        """The wanted uid and gid; -1 where unmanaged."""
        uid = resolve_id(self.owner, "owner") if self.owner is not None else -1
        gid = resolve_id(self.group, "group") if self.group is not None else -1
        return uid, gid

    def _want_mode(
        self, cur: os.stat_result | None, src: os.stat_result | None, is_dir: bool
    ) -> int:
        """The permission bits path must end with: `mode`, else the source's, else kept."""
        src_bits = stat.S_IMODE(src.st_mode) if src is not None else None
        if cur is not None:
            start = stat.S_IMODE(cur.st_mode)
        elif src_bits is not None:
            start = src_bits
        else:
            start = DIR_BASE if is_dir else FILE_BASE
        if self.mode is not None:
            return mode_after(self.mode, start, is_dir)
        return src_bits if src_bits is not None else start


# modes ---------------------------------------------------------------------------------------


def mode_after(spec: str, current: int, is_dir: bool) -> int:
    """The permission bits that `spec` (octal, or chmod-style symbolic) gives `current`.

    Symbolic clauses are `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma separated, applied in
    order; no "who" means "a" (the umask is not consulted). Raises ValueError for bad specs.
    """
    if _OCTAL.fullmatch(spec):
        return int(spec, 8)
    mode = current & 0o7777
    for clause in spec.split(","):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"bad mode clause {clause!r}")
        who = match.group(1).replace("a", "ugo") or "ugo"
        for op, perms in _ACTION.findall(match.group(2)):
            mode = _apply_action(mode, who, op, perms, is_dir)
    return mode


def _apply_action(mode: int, who: str, op: str, perms: str, is_dir: bool) -> int:
    bits = 0
    for w in set(who):
        if perms in _SHIFT:  # copy another class's bits, e.g. "g=u"
            bits |= ((mode >> _SHIFT[perms]) & 7) << _SHIFT[w]
            continue
        rwx = 4 * ("r" in perms) + 2 * ("w" in perms) + ("x" in perms)
        if "X" in perms and (is_dir or mode & 0o111):
            rwx |= 1
        bits |= rwx << _SHIFT[w]
        if ("s" in perms and w != "o") or ("t" in perms and w == "o"):
            bits |= _SPECIAL[w]
    if op == "+":
        return mode | bits
    if op == "-":
        return mode & ~bits
    cleared = 0
    for w in set(who):
        cleared |= (7 << _SHIFT[w]) | _SPECIAL[w]
    return (mode & ~cleared) | bits


# owners --------------------------------------------------------------------------------------


def _validate_id(value: str | None, key: str) -> None:
    if value is None:
        return
    if not value or (value.isdigit() and int(value) > MAX_ID):
        raise ValidationError(f"expected a name or a numeric id up to {MAX_ID}, got {value!r}", key)


def resolve_id(value: str, key: str) -> int:
    """A uid (key "owner") or gid (key "group") from a name or a numeric string."""
    if value.isdigit():
        return int(value)
    try:
        if key == "owner":
            return pwd.getpwnam(value).pw_uid
        return grp.getgrnam(value).gr_gid
    except KeyError:
        what = "user" if key == "owner" else "group"
        raise ResourceError(f"{key}: no such {what} {value!r}") from None


def _user(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return str(uid)


def _group(gid: int) -> str:
    with contextlib.suppress(KeyError):
        return grp.getgrgid(gid).gr_name
    return str(gid)


def attr_steps(
    path: str, label: str, st: os.stat_result | None, *, mode: int | None, uid: int, gid: int
) -> list[Step]:
    """chown/chmod steps for what differs on an existing inode (mode None or id -1: unmanaged)."""
    if st is None:
        return []
    steps = []
    if uid not in (-1, st.st_uid):
        change = f"{label}{_user(st.st_uid)} -> {_user(uid)}"
        chown = functools.partial(os.chown, path, uid, -1, follow_symlinks=False)
        steps.append(Step(f"chown {change}", f"owner {change}", chown))
    if gid not in (-1, st.st_gid):
        change = f"{label}{_group(st.st_gid)} -> {_group(gid)}"
        chgrp = functools.partial(os.chown, path, -1, gid, follow_symlinks=False)
        steps.append(Step(f"chgrp {change}", f"group {change}", chgrp))
    old = stat.S_IMODE(st.st_mode)
    if mode is not None and old != mode:  # after chown, which may clear setuid bits
        change = f"{label}{old:04o} -> {mode:04o}"
        steps.append(
            Step(f"chmod {change}", f"mode {change}", functools.partial(os.chmod, path, mode))
        )
    return steps


# filesystem helpers --------------------------------------------------------------------------


async def _run(step: Step) -> None:
    if step.run is None:
        return
    if step.slow:
        await asyncio.to_thread(step.run)
    else:
        step.run()


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _scan(path: str) -> dict[str, os.stat_result]:
    with os.scandir(path) as entries:
        return {e.name: e.stat(follow_symlinks=False) for e in entries}


def kind_of(st: os.stat_result) -> str:
    """A human name for the type of an inode."""
    return _KINDS.get(stat.S_IFMT(st.st_mode), "device")


def _parent_steps(path: str) -> list[Step]:
    """Creating the missing parent directories of path, outermost first."""
    missing: list[str] = []
    parent = os.path.dirname(path)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return [
        Step(
            f"create parent directory {p}",
            f"created parent directory {p}",
            functools.partial(_mkdir_parent, p),
        )
        for p in reversed(missing)
    ]


def _mkdir_parent(path: str) -> None:
    with contextlib.suppress(FileExistsError):  # a sibling resource made it meanwhile
        os.mkdir(path, DIR_BASE)


def _remover(path: str) -> Callable[[], None]:
    def remove() -> None:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    return remove


def same_content(path: str, want: bytes | str) -> bool:
    """True if the file at path holds `want`: bytes, or the contents of the file named by a str."""
    with contextlib.ExitStack() as stack:
        have = stack.enter_context(open(path, "rb"))
        other: BinaryIO = (
            stack.enter_context(open(want, "rb")) if isinstance(want, str) else io.BytesIO(want)
        )
        while True:
            chunk = have.read(CHUNK)
            if chunk != other.read(CHUNK):
                return False
            if not chunk:
                return True


async def _same(path: str, st: os.stat_result, want: bytes | str, size: int) -> bool:
    if st.st_size != size:
        return False
    if size <= INLINE_LIMIT:
        return same_content(path, want)
    return await asyncio.to_thread(same_content, path, want)


def _filler(data: bytes | str | None) -> Callable[[BinaryIO], object]:
    """Writes `data` into a file: bytes, the contents of the file named by a str, or nothing."""

    def fill(out: BinaryIO) -> None:
        if isinstance(data, bytes):
            out.write(data)
        elif isinstance(data, str):
            with open(data, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)

    return fill


def atomic_write(
    path: str, fill: Callable[[BinaryIO], object], mode: int, uid: int, gid: int
) -> None:
    """Fill a temp file next to path, set owner and mode, fsync it, rename it over path."""
    parent = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=TEMP_PREFIX)
    try:
        with open(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # No directory fsync: the data is on disk before the rename, so after a crash the path
    # holds the old or the new content, never a mix; a lost rename is re-applied next run.


def atomic_symlink(target: str, path: str, uid: int, gid: int) -> None:
    """Create a symlink next to path, then rename it over path."""
    tmp = os.path.join(os.path.dirname(path), TEMP_PREFIX + secrets.token_hex(6))
    os.symlink(target, tmp)
    try:
        os.chown(tmp, uid, gid, follow_symlinks=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def make_dir(path: str, mode: int, uid: int, gid: int) -> None:
    """mkdir with the final owner and mode (no window with looser bits)."""
    os.mkdir(path, 0o700)
    try:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    except BaseException:
        os.rmdir(path)
        raise


# reversal helpers ----------------------------------------------------------------------------

REVERSE_LIMIT = 1 << 20  # prior content up to 1 MiB is kept for a reversal


def _read_small(path: str) -> str | None:
    """The content of a regular file up to REVERSE_LIMIT bytes (sent along send/recv edges)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(REVERSE_LIMIT + 1)
    except OSError:
        return None
    return data.decode(errors="replace") if len(data) <= REVERSE_LIMIT else None


def _observe(path: str) -> dict[str, Any]:
    """What is at path now, as JSON data a reversal can restore."""
    st = _lstat(path)
    if st is None:
        return {"existed": False}
    prior: dict[str, Any] = {
        "existed": True,
        "kind": kind_of(st),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    if stat.S_ISREG(st.st_mode) and st.st_size <= REVERSE_LIMIT:
        with open(path, "rb") as handle:
            prior["content"] = base64.b64encode(handle.read()).decode()
    return prior


def _restore(path: str, prior: dict[str, Any]) -> None:
    st = _lstat(path)
    if not prior.get("existed"):
        if st is not None and stat.S_ISDIR(st.st_mode):
            os.rmdir(path)  # only if empty: what else is in it is not ours to remove
        elif st is not None:
            os.unlink(path)
        return
    if prior.get("kind") == "file" and "content" in prior:
        data = base64.b64decode(prior["content"])
        atomic_write(path, _filler(data), prior["mode"], prior["uid"], prior["gid"])
    elif st is not None:
        os.chown(path, prior["uid"], prior["gid"], follow_symlinks=False)
        os.chmod(path, prior["mode"])
