"""file: a file or a directory: existence, content (or a copy of a source), owner, group, mode.

A trailing "/" on the path means a directory. Every change goes through descriptors
(engine.safefs): the path is walked from "/" without following unsafe symlinks, then changed
relative to its open parent directory, so a symlink swapped in after the check is never
followed. Writes are atomic (a new inode in the same directory gets its content, owner and
mode, is fsynced, then renamed over the path). Missing parent directories are created (0755).
A symlink at the path is never followed unless `follow: true`; `force: true` replaces it.
See docs/resources/file.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal, TypeVar

from engine import safefs
from engine.errors import MgmtError, ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import UID, Edgeable, Resource, Reversible, register
from engine.watcher import PathWatcher
from resources._lib.ids import (
    MAX_ID,
    check_name,
    group_name,
    id_number,
    resolve_gid,
    resolve_uid,
    user_name,
)
from resources._lib.plan import Step, apply_steps, nothing_to_do
from resources._lib.plan import in_thread as _in_thread

T = TypeVar("T")
CHUNK = 1 << 20  # read/copy block size
INLINE_LIMIT = 1 << 16  # files up to this size are compared/written inline, bigger in a thread
FILE_BASE = 0o644  # permission bits of a new file when neither mode nor source says otherwise
DIR_BASE = 0o755  # the same for a new directory (also used for created parent directories)

Entry = tuple[str, ...]  # something below the managed path, by its names; TOP: the path itself
TOP: Entry = ()
Src = tuple[int, Entry]  # something below a source directory: the open source, and names

_clean_dirs: set[tuple[int, int]] = set()  # directories (device, inode) found free of leftovers

_OCTAL = re.compile(r"0?[0-7]{3,4}")
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_SHIFT = {"u": 6, "g": 3, "o": 0}
_SPECIAL = {"u": stat.S_ISUID, "g": stat.S_ISGID, "o": stat.S_ISVTX}
_MANAGED = ("content", "source", "fragments", "owner", "group", "mode", "selinux")
_SELINUX_XATTR = "security.selinux"
SELINUX_FS = "/sys/fs/selinux"  # mounted where SELinux is enabled
_CONTEXT = re.compile(r"[A-Za-z0-9_.]+:[A-Za-z0-9_.]+:[A-Za-z0-9_.]+(:[A-Za-z0-9_.:,-]+)?")
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@register("file")
@dataclass(kw_only=True, eq=False)
class FileRes(Edgeable, Reversible, Resource):
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
    # With recurse: delete entries below path that the source lacks; without a source, every
    # entry that no other file resource of the graph manages. Default false.
    purge: bool = False
    # If path is a symlink, manage its target (otherwise a symlink is refused). Default false.
    follow: bool = False
    # Absolute paths whose contents, in this order, make the file's content; one ending in "/"
    # stands for the regular files directly in that directory, by name. Excludes content and
    # source. Default None (unmanaged).
    fragments: list[str] | None = None
    # Make path a symlink whose target is `source` (relative or absolute, need not exist).
    # Default false.
    symlink: bool = False
    # The SELinux context (user:role:type[:level]) of path; an error where SELinux is not
    # enabled. Default None (unmanaged).
    selinux: str | None = field(default=None, metadata=EMPTY_IS_UNSET)

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
        self._validate_fragments()
        self._validate_symlink()
        if self.selinux is not None and not _CONTEXT.fullmatch(self.selinux):
            raise ValidationError(
                f"expected a context like 'system_u:object_r:bin_t:s0', got {self.selinux!r}",
                "selinux",
            )
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
        if self.recurse and not self._is_dir and self.state != "absent":
            raise ValidationError(
                "needs a directory path (ending in '/') or state 'absent' (to remove a tree)",
                "recurse",
            )
        if self.purge and not (self.recurse and self._is_dir):
            raise ValidationError("needs recurse: true and a directory path", "purge")
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

    def _validate_fragments(self) -> None:
        if self.fragments is None:
            return
        if self.content is not None or self.source is not None:
            raise ValidationError("cannot be combined with content or source", "fragments")
        if self._is_dir:
            raise ValidationError("a directory path has no content to build", "fragments")
        for index, fragment in enumerate(self.fragments):
            if not os.path.isabs(fragment) or "\0" in fragment:
                raise ValidationError(
                    f"expected an absolute path, got {fragment!r}", f"fragments[{index}]"
                )

    def _validate_symlink(self) -> None:
        if not self.symlink:
            return
        if self.source is None or not self.source or "\0" in self.source:
            raise ValidationError("needs source: the target of the link", "symlink")
        if self._is_dir:
            raise ValidationError("a symlink's path does not end in '/'", "symlink")
        for key in ("mode", "fragments"):
            if getattr(self, key) is not None:
                raise ValidationError("cannot be combined with symlink: true", key)
        if self.recurse or self.follow:
            raise ValidationError("cannot be combined with recurse or follow", "symlink")

    def _validate_source(self) -> None:
        source = self.source
        if source is None or self.symlink:
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
        if self.source is not None and not self.symlink:
            paths += [os.path.normpath(self.source), os.path.realpath(self.source)]
        paths += [os.path.normpath(f) for f in self.fragments or []]
        return list(dict.fromkeys(paths))

    async def check_apply(self, apply: bool) -> bool:
        if not self._managed:
            why = f"none of state, {', '.join(_MANAGED)} is set"
            return nothing_to_do(self.handle, why)
        with contextlib.ExitStack() as held:  # descriptors from the check through the changes
            try:
                where, steps = await self._plan(held)
            except OSError as err:
                raise ResourceError(f"cannot inspect {self._fs_path}: {err}") from err
            self.handle.send(content=functools.partial(_read_small, where.path))
            if not steps:
                return nothing_to_do(self.handle, functools.partial(self._why, where.path))
            if apply and self.meta.reverse and getattr(self, "_prior", None) is None:
                self._prior = where.observe()
            await apply_steps(self.handle, steps, apply, errors=(OSError,))
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
        for fragment in self.fragments or []:
            norm = os.path.normpath(fragment)
            wants.append([UID("file", norm + "/" if fragment.endswith("/") else norm)])
        if self.source is not None and not self.symlink:
            source = os.path.normpath(self.source)
            wants.append([UID("file", source), UID("file", source.rstrip("/") + "/")])
        return wants

    def reversal(self) -> Any:
        """What path (with follow: the link's target) was before this resource changed it."""
        prior = getattr(self, "_prior", None)
        if prior is None:
            with contextlib.ExitStack() as held:
                prior = self._locate(held)[0].observe()
        return prior

    async def reverse(self, data: Any) -> None:
        """Put back what was there: remove what we created, or restore content and mode."""
        await asyncio.to_thread(self._restore, data)

    def _restore(self, prior: dict[str, Any]) -> None:
        with contextlib.ExitStack() as held:
            where, st = self._locate(held)
            if not prior.get("existed"):
                if st is not None:  # a directory only if empty: what else is in it is not ours
                    where.remove(TOP, recursive=False)
                return
            if prior.get("kind") == "file" and "content" in prior:
                while where.missing:
                    where.make_parent()
                data = base64.b64decode(prior["content"])
                where.write(TOP, _filler(data), prior["mode"], prior["uid"], prior["gid"])
            elif st is not None:
                mode = None if stat.S_ISLNK(st.st_mode) else prior["mode"]
                where.attrs(TOP, st, uid=prior["uid"], gid=prior["gid"], mode=mode)

    # planning: observe (lstat, read) and decide; nothing here writes --------------------------

    async def _plan(self, held: contextlib.ExitStack) -> tuple[Where, list[Step]]:
        where, st = self._locate(held)
        if self.state == "absent":
            return where, self._plan_absent(where, st)
        if self.symlink:
            steps = self._plan_symlink(where, st)
        elif self._is_dir:
            steps = await self._plan_dir(where, st, held)
        else:
            steps = await self._plan_file(where, st, held)
        if self.selinux is not None:
            steps += _selinux_steps(where, self.selinux, created=bool(steps))
        return where, steps

    def _plan_symlink(self, where: Where, st: os.stat_result | None) -> list[Step]:
        """path as a symlink to `source`; the link is made (atomically) and replaced, never
        followed. Something else at path is replaced only with force."""
        target, path = self.source or "", where.path
        steps = where.parent_steps()
        uid, gid = self._ids()
        if st is not None and stat.S_ISLNK(st.st_mode):
            if where.readlink(TOP) == target:
                return steps + attr_steps(where, TOP, "", st, mode=None, uid=uid, gid=gid)
        elif st is not None:
            steps.append(self._replace_step(where, TOP, st, "symlink", remove=True))
        link = functools.partial(where.symlink, TOP, target, uid, gid)
        return [*steps, Step(f"link {path} -> {target}", f"linked {path} -> {target}", link)]

    def _locate(self, held: contextlib.ExitStack) -> tuple[Where, os.stat_result | None]:
        """Where the path to manage is (a followed symlink's target) and its lstat."""
        where = held.enter_context(Where(self._fs_path))
        st = where.lstat(TOP)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return where, st
        if self.follow:
            for _ in range(safefs.MAX_LINKS):
                where = held.enter_context(where.follow())
                st = where.lstat(TOP)
                if st is None or not stat.S_ISLNK(st.st_mode):
                    return where, st
            raise ResourceError(f"symlink {self._fs_path} does not resolve (a loop?)")
        if self.state == "absent" or self.force or self.symlink:
            return where, st  # the link itself
        raise ResourceError(
            f"{where.path} is a symlink (to {where.readlink(TOP)!r}), not followed: set "
            "follow: true to manage its target, or force: true to replace the link"
        )

    def _plan_absent(self, where: Where, st: os.stat_result | None) -> list[Step]:
        path = where.path
        if st is None:
            return []
        if stat.S_ISDIR(st.st_mode) and where.scan(TOP):
            if not (self.recurse and self.force):
                raise ResourceError(
                    f"directory {path} is not empty: set recurse: true and force: true "
                    "to remove it with everything in it"
                )
            remove = functools.partial(where.remove, TOP, True)
            return [Step(f"remove {path} recursively", f"removed {path}", remove, True)]
        return [Step(f"remove {path}", f"removed {path}", functools.partial(where.remove, TOP))]

    async def _plan_file(
        self, where: Where, st: os.stat_result | None, held: contextlib.ExitStack
    ) -> list[Step]:
        steps = where.parent_steps() + where.temp_steps()
        after: list[Step] = []  # a replaced symlink is only reported: the rename swaps it out
        if st is not None and not stat.S_ISREG(st.st_mode):
            replace = self._replace_step(where, TOP, st, "file")
            (steps if replace.run else after).append(replace)
        cur = st if st is not None and stat.S_ISREG(st.st_mode) else None
        source, src = self._source(held, want_dir=False)
        uid, gid = self._ids()
        mode = self._want_mode(cur, src, is_dir=False)
        changes = attr_steps(where, TOP, "", cur, mode=mode, uid=uid, gid=gid)
        data: bytes | int | None = self.content.encode() if self.content is not None else source
        if self.fragments is not None:
            data = await _in_thread(functools.partial(_read_fragments, self.fragments))
        size = len(data) if isinstance(data, bytes) else src.st_size if src is not None else 0
        if cur is not None and (data is None or await _same(where, cur, data, size)):
            return steps + changes
        if cur is not None:
            uid = cur.st_uid if uid == -1 else uid
            gid = cur.st_gid if gid == -1 else gid
        write = functools.partial(where.write, TOP, _filler(data), mode, uid, gid)
        if cur is None:
            create = Step(f"create {where.path}", f"created {where.path}", write, slow=True)
            return [*steps, create, *after]
        quiet = [dataclasses.replace(c, run=None) for c in changes]  # the write sets them
        return [*steps, Step("update content", "content updated", write, slow=True), *quiet]

    async def _plan_dir(
        self, where: Where, st: os.stat_result | None, held: contextlib.ExitStack
    ) -> list[Step]:
        path = where.path
        steps = where.parent_steps()
        if st is not None and not stat.S_ISDIR(st.st_mode):
            steps.append(self._replace_step(where, TOP, st, "directory"))
        cur = st if st is not None and stat.S_ISDIR(st.st_mode) else None
        source, src = self._source(held, want_dir=True)
        uid, gid = self._ids()
        mode = self._want_mode(cur, src, is_dir=True)
        if cur is None:
            make = functools.partial(where.make_dir, TOP, mode, uid, gid)
            steps.append(Step(f"create directory {path}", f"created directory {path}", make))
        steps += attr_steps(where, TOP, "", cur, mode=mode, uid=uid, gid=gid)
        if source is not None:
            tree = functools.partial(
                self._plan_tree, where, (source, ()), TOP, cur is not None, (uid, gid)
            )
            steps += await _in_thread(tree)
        elif self.purge and cur is not None:
            keep = self._kept_by_peers()
            steps += await _in_thread(functools.partial(_plan_purge, where, TOP, keep))
        return steps

    def _kept_by_peers(self) -> set[Entry]:
        """What purge without a source keeps: the paths other file resources of the graph
        manage below path, and the directories on the way to them (mgmt's excludes)."""
        root = Path(self._fs_path)
        keep: set[Entry] = set()
        for peer in self.handle.peers():
            if not isinstance(peer, FileRes) or peer is self:
                continue
            other = Path(peer._fs_path)
            if other != root and other.is_relative_to(root):
                parts = other.relative_to(root).parts
                keep.update(parts[:i] for i in range(1, len(parts) + 1))
        return keep

    def _plan_tree(
        self, where: Where, src: Src, dst: Entry, dst_is_dir: bool, ids: tuple[int, int]
    ) -> list[Step]:
        """Steps that make the tree below dst mirror the one below src (runs in a thread).

        Both trees are read through descriptors, one directory at a time, and no symlink in
        them is followed: a link is an entry like any other.
        """
        src_root, src_rel = src
        have = where.scan(dst) if dst_is_dir else {}
        with safefs.closing(safefs.sub_dir(src_root, src_rel)) as src_fd:
            want = safefs.scan(src_fd)
        steps: list[Step] = []
        for name in sorted(n for n, st in have.items() if safefs.is_stale_temp(n, st)):
            label = _label(child(dst, name))
            remove = functools.partial(where.remove, child(dst, name), False)
            steps.append(Step(f"remove leftover temp file {label}", f"removed {label}", remove))
            del have[name]
        for name, src_st in sorted(want.items()):
            entry = child(dst, name)
            steps += self._plan_entry(
                where, (src_root, (*src_rel, name)), entry, src_st, have.get(name), ids=ids
            )
        if self.purge:
            for name in sorted(have.keys() - want.keys()):
                entry, label = child(dst, name), _label(child(dst, name))
                purge = functools.partial(where.remove, entry)
                steps.append(Step(f"purge {label}", f"purged {label}", purge, True))
        return steps

    def _plan_entry(
        self,
        where: Where,
        src: Src,
        entry: Entry,
        src_st: os.stat_result,
        st: os.stat_result | None,
        *,
        ids: tuple[int, int],
    ) -> list[Step]:
        src_root, src_rel = src
        rel = _label(entry)
        kind = kind_of(src_st)
        if kind not in ("file", "directory", "symlink"):
            raise ResourceError(
                f"source {os.path.join(self.source or '', *src_rel)} is a {kind}: only files, "
                "dirs and symlinks are copied"
            )
        steps: list[Step] = []
        if st is not None and kind_of(st) != kind:
            steps.append(self._replace_step(where, entry, st, kind, remove=True))
            st = None
        uid, gid = ids
        bits = stat.S_IMODE(src_st.st_mode)
        if kind == "directory":
            make = functools.partial(where.make_dir, entry, bits, uid, gid)
            if st is None:
                steps.append(Step(f"create directory {rel}/", f"created directory {rel}/", make))
            steps += attr_steps(where, entry, rel + " ", st, mode=bits, uid=uid, gid=gid)
            return steps + self._plan_tree(where, src, entry, st is not None, ids)
        with safefs.closing(safefs.sub_dir(src_root, src_rel[:-1])) as src_dir:
            if kind == "symlink":
                target = os.readlink(src_rel[-1], dir_fd=src_dir)
                if st is None or where.readlink(entry) != target:
                    link = functools.partial(where.symlink, entry, target, uid, gid)
                    done = f"linked {rel} -> {target}"
                    return [*steps, Step(f"link {rel} -> {target}", done, link)]
                return steps + attr_steps(where, entry, rel + " ", st, mode=None, uid=uid, gid=gid)
            src_fd = safefs.open_read(src_dir, src_rel[-1])
        with safefs.closing(src_fd):
            if (
                st is not None
                and st.st_size == src_st.st_size
                and where.same(entry, src_fd, st.st_size)
            ):
                return steps + attr_steps(where, entry, rel + " ", st, mode=bits, uid=uid, gid=gid)
        copy = functools.partial(where.copy, entry, src, bits, uid, gid)
        return [*steps, Step(f"copy {rel}", f"copied {rel}", copy, True)]

    def _replace_step(
        self, where: Where, entry: Entry, st: os.stat_result, want: str, remove: bool = False
    ) -> Step:
        """Replacing what is at entry by a `want` (needs force)."""
        have = kind_of(st)
        path = where.path if entry == TOP else _label(entry)
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
            functools.partial(where.remove, entry),
            slow=True,
        )

    def _source(
        self, held: contextlib.ExitStack, want_dir: bool
    ) -> tuple[int | None, os.stat_result | None]:
        """The source, open (a symlink named as the source is followed), and its stat.

        The check and the copy both use this one descriptor: what was compared is what is
        copied. Below a source directory nothing is followed (see _plan_tree).
        """
        if self.source is None:
            return None, None
        try:
            fd = os.open(self.source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ResourceError(f"source {self.source} does not exist") from None
        held.callback(os.close, fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) != want_dir or not (want_dir or stat.S_ISREG(st.st_mode)):
            want = "directory" if want_dir else "file"
            raise ResourceError(f"source {self.source} is a {kind_of(st)}, expected a {want}")
        return fd, st

    def _ids(self) -> tuple[int, int]:
        """The wanted uid and gid; -1 where unmanaged."""
        uid = resolve_uid(self.owner, "owner") if self.owner is not None else -1
        gid = resolve_gid(self.group, "group") if self.group is not None else -1
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
    number = id_number(value)
    if number is not None:
        ok = number <= MAX_ID
    else:
        try:
            check_name(value, key)
            ok = True
        except ValidationError:
            ok = False
    if not ok:
        raise ValidationError(
            f"expected a name or a numeric id up to {MAX_ID} (a name: ASCII letters, digits, "
            f"'_', '.', '-'), got {value!r}",
            key,
        )


def attr_steps(
    where: Where,
    entry: Entry,
    label: str,
    st: os.stat_result | None,
    *,
    mode: int | None,
    uid: int,
    gid: int,
) -> list[Step]:
    """chown/chmod steps for what differs on an existing inode (mode None or id -1: unmanaged)."""
    if st is None:
        return []
    steps = []
    if uid not in (-1, st.st_uid):
        change = f"{label}{user_name(st.st_uid)} -> {user_name(uid)}"
        chown = functools.partial(where.attrs, entry, st, uid=uid)
        steps.append(Step(f"chown {change}", f"owner {change}", chown))
    if gid not in (-1, st.st_gid):
        change = f"{label}{group_name(st.st_gid)} -> {group_name(gid)}"
        chgrp = functools.partial(where.attrs, entry, st, gid=gid)
        steps.append(Step(f"chgrp {change}", f"group {change}", chgrp))
    old = stat.S_IMODE(st.st_mode)
    if mode is not None and old != mode:  # after chown, which may clear setuid bits
        change = f"{label}{old:04o} -> {mode:04o}"
        chmod = functools.partial(where.attrs, entry, st, mode=mode)
        steps.append(Step(f"chmod {change}", f"mode {change}", chmod))
    return steps


# where the changes happen: descriptors, never paths ------------------------------------------


def child(entry: Entry, name: str) -> Entry:
    return (*entry, name)


def _label(entry: Entry) -> str:
    return "/".join(entry)


class Where:
    """The managed path's parent directory, held open for one check_apply.

    It is reached by `safefs.walk` (no unsafe symlink followed on the way); `missing` lists
    the parent directories still to create. Every step acts through descriptors relative to
    it, never by path, so a symlink swapped in after the check is not followed. An Entry
    addresses the path itself (TOP) or something below it (a tree copy), whose directories
    are opened one by one without following any symlink.
    """

    def __init__(
        self, path: str, *, start: tuple[int, str] | None = None, shown: str | None = None
    ) -> None:
        parent, self.name = os.path.split(path)
        self.path = shown or path  # for messages
        self.fd, self.missing = safefs.walk(parent or ".", start=start)

    def __enter__(self) -> Where:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def follow(self) -> Where:
        """Where the symlink at the path points, if the safe-path rule allows following it.

        The link itself must pass the rule (see safefs.safe_link), and every link on the way
        to its target is walked by it too: a link another user controls is never followed.
        """
        with self._at(TOP) as (fd, name):
            target = safefs.safe_link(fd, name, self.path)
        name = os.path.basename(target.rstrip("/"))
        if name in ("", ".", ".."):
            raise ResourceError(f"symlink {self.path} -> {target!r} names no file to manage")
        here = os.path.dirname(self.path)
        shown = os.path.normpath(os.path.join(here, target))
        return Where(target.rstrip("/"), start=(self.fd, here), shown=shown)

    @contextlib.contextmanager
    def _at(self, entry: Entry) -> Iterator[tuple[int, str]]:
        """The directory descriptor holding entry, and its name there."""
        if self.missing:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.path)
        if not entry:
            yield self.fd, self.name
            return
        with safefs.closing(safefs.sub_dir(self.fd, (self.name, *entry[:-1]))) as fd:
            yield fd, entry[-1]

    # reading

    def lstat(self, entry: Entry) -> os.stat_result | None:
        if self.missing:
            return None
        if not entry:  # the usual case, without the context manager's cost
            return safefs.lstat_at(self.fd, self.name)
        with self._at(entry) as (fd, name):
            return safefs.lstat_at(fd, name)

    @contextlib.contextmanager
    def at_fd(self, entry: Entry) -> Iterator[int]:
        """entry open read-only (a file or a directory; a symlink is not followed)."""
        with self._at(entry) as (dir_fd, name):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            with safefs.closing(os.open(name, flags, dir_fd=dir_fd)) as fd:
                yield fd

    def readlink(self, entry: Entry) -> str:
        with self._at(entry) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def read(self, entry: Entry, limit: int) -> bytes | None:
        """Up to `limit` bytes of a regular file (None: bigger)."""
        with self._at(entry) as (fd, name):
            return safefs.read_at(fd, name, limit)

    def scan(self, entry: Entry) -> dict[str, os.stat_result]:
        with self._at(entry) as (fd, name):
            return safefs.scan(fd, name)

    def same(self, entry: Entry, want: bytes | int, size: int) -> bool:
        if entry:
            with self._at(entry) as (fd, name):
                have = safefs.open_read(fd, name)
        else:  # the usual case, without the context manager's cost
            have = safefs.open_read(self.fd, self.name)
        try:
            return same_content(have, want, size)
        finally:
            os.close(have)

    def observe(self) -> dict[str, Any]:
        """What is at the path now, as JSON data a reversal can restore."""
        if self.missing:
            return {"existed": False}
        return _prior(self.fd, self.name)

    # changing

    def parent_steps(self) -> list[Step]:
        """Creating the missing parent directories, outermost first."""
        if not self.missing:
            return []
        shown, parent = [], os.path.dirname(self.path)
        for _ in self.missing:
            shown.append(parent)
            parent = os.path.dirname(parent)
        return [
            Step(f"create parent directory {p}", f"created parent directory {p}", self.make_parent)
            for p in reversed(shown)
        ]

    def make_parent(self) -> None:
        """Create the next missing parent directory (mode 0755, whatever the umask)."""
        fd = safefs.make_dirs(self.fd, self.missing[:1], DIR_BASE)
        os.close(self.fd)
        self.fd, self.missing = fd, self.missing[1:]

    def temp_steps(self) -> list[Step]:
        """Removing temp files that crashed writes left next to the path (once per directory)."""
        if self.missing:
            return []
        st = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) in _clean_dirs:
            return []
        stale = safefs.stale_temps(self.fd)
        if not stale:
            _clean_dirs.add((st.st_dev, st.st_ino))
        here = os.path.dirname(self.path)
        return [
            Step(
                f"remove leftover temp file {os.path.join(here, name)}",
                f"removed leftover temp file {os.path.join(here, name)}",
                functools.partial(self._unlink_temp, name),
            )
            for name in stale
        ]

    def _unlink_temp(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # a sibling resource removed it first
            os.unlink(name, dir_fd=self.fd)

    def write(
        self, entry: Entry, fill: Callable[[BinaryIO], object], mode: int, uid: int, gid: int
    ) -> None:
        with self._at(entry) as (fd, name):
            safefs.write_at(fd, name, fill, mode=mode, uid=uid, gid=gid)

    def copy(self, entry: Entry, src: Src, mode: int, uid: int, gid: int) -> None:
        """Copy the source tree's entry src (its root and names) to entry."""
        root, rel = src
        with (
            safefs.closing(safefs.sub_dir(root, rel[:-1])) as src_dir,
            safefs.closing(safefs.open_read(src_dir, rel[-1])) as src_fd,
        ):
            self.write(entry, _filler(src_fd), mode, uid, gid)

    def make_dir(self, entry: Entry, mode: int, uid: int, gid: int) -> None:
        with self._at(entry) as (fd, name):
            safefs.make_dir(fd, name, mode, uid, gid)

    def symlink(self, entry: Entry, target: str, uid: int, gid: int) -> None:
        with self._at(entry) as (fd, name):
            safefs.symlink_at(fd, name, target, uid, gid)

    def remove(self, entry: Entry, recursive: bool = True) -> None:
        with self._at(entry) as (fd, name):
            safefs.remove_at(fd, name, recursive=recursive)

    def attrs(
        self,
        entry: Entry,
        expect: os.stat_result,
        *,
        uid: int = -1,
        gid: int = -1,
        mode: int | None = None,
    ) -> None:
        """chown/chmod entry on its open descriptor (a symlink: chown the link itself)."""
        with self._at(entry) as (fd, name):
            if stat.S_ISLNK(expect.st_mode):
                os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
            else:
                safefs.set_attrs(fd, name, uid=uid, gid=gid, mode=mode, expect=expect)


# filesystem helpers --------------------------------------------------------------------------


def kind_of(st: os.stat_result) -> str:
    """A human name for the type of an inode."""
    return _KINDS.get(stat.S_IFMT(st.st_mode), "device")


def same_content(fd: int, want: bytes | int, size: int) -> bool:
    """True if the first `size` bytes of the file open as fd are `want`: bytes, or what the
    file open as `want` holds (both have that size: the caller compared their stats)."""
    offset = 0
    while offset < size:
        count = min(CHUNK, size - offset)  # no bigger buffer than needed: it costs a malloc
        chunk = os.pread(fd, count, offset)
        if isinstance(want, bytes):
            expected = want[offset : offset + count]
        else:
            expected = os.pread(want, count, offset)
        if len(chunk) != count or chunk != expected:
            return False
        offset += count
    return True


async def _same(where: Where, st: os.stat_result, want: bytes | int, size: int) -> bool:
    if st.st_size != size:
        return False
    if size <= INLINE_LIMIT:
        return where.same(TOP, want, size)
    return await _in_thread(functools.partial(where.same, TOP, want, size))


def _filler(data: bytes | int | None) -> Callable[[BinaryIO], object]:
    """Writes `data` into a file: bytes, what the file open as an int holds, or nothing."""

    def fill(out: BinaryIO) -> None:
        if isinstance(data, bytes):
            out.write(data)
        elif isinstance(data, int):
            offset = 0
            while chunk := os.pread(data, CHUNK, offset):
                out.write(chunk)
                offset += len(chunk)

    return fill


# reversal helpers ----------------------------------------------------------------------------

REVERSE_LIMIT = 1 << 20  # prior content up to 1 MiB is kept for a reversal


def _plan_purge(where: Where, entry: Entry, keep: set[Entry]) -> list[Step]:
    """Steps removing what is below entry and not kept (runs in a thread); kept directories
    are walked through descriptors too (nothing is followed)."""
    steps: list[Step] = []
    for name, st in sorted(where.scan(entry).items()):
        sub = child(entry, name)
        if sub not in keep:
            label = _label(sub)
            purge = functools.partial(where.remove, sub)
            steps.append(Step(f"purge {label}", f"purged {label}", purge, True))
        elif stat.S_ISDIR(st.st_mode):
            steps += _plan_purge(where, sub, keep)
    return steps


def _read_fragments(fragments: list[str]) -> bytes:
    """The content the fragments make (runs in a thread): each file's bytes in order; a
    directory's regular files by name (one level). A named path is followed like a source;
    below a directory nothing is. ResourceError if one cannot be read."""
    parts: list[bytes] = []
    for index, fragment in enumerate(fragments):
        try:
            fd = os.open(fragment, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as err:
            raise ResourceError(
                f"fragments[{index}]: cannot open {fragment}: {err.strerror}"
            ) from err
        with safefs.closing(fd):
            st = os.fstat(fd)
            if fragment.endswith("/") != stat.S_ISDIR(st.st_mode):
                want = "a directory (it ends in '/')" if fragment.endswith("/") else "a file"
                raise ResourceError(f"fragments[{index}]: {fragment} is not {want}")
            if stat.S_ISREG(st.st_mode):
                parts.append(_read_fd(fd))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ResourceError(f"fragments[{index}]: {fragment} is a {kind_of(st)}")
            for name, entry in sorted(safefs.scan(fd).items()):
                if stat.S_ISREG(entry.st_mode) and not safefs.is_stale_temp(name, entry):
                    with safefs.closing(safefs.open_read(fd, name)) as file_fd:
                        parts.append(_read_fd(file_fd))
    return b"".join(parts)


def _read_fd(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, CHUNK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def selinux_enabled() -> bool:
    """SELinux is enabled on this host (its file system is mounted)."""
    return os.path.exists(os.path.join(SELINUX_FS, "enforce"))


def _selinux_steps(where: Where, context: str, *, created: bool) -> list[Step]:
    """Setting path's SELinux context (the security.selinux attribute, through a descriptor
    opened without following a link). ResourceError where SELinux is not enabled."""
    if not selinux_enabled():
        raise ResourceError(
            f"selinux: SELinux is not enabled on this host ({SELINUX_FS} is not mounted): "
            "cannot set the context; remove the selinux param here"
        )
    path = where.path
    if not created:
        with where.at_fd(TOP) as fd:
            have = os.getxattr(fd, _SELINUX_XATTR).rstrip(b"\0").decode(errors="replace")
        if have == context:
            return []
        change = f"{have} -> {context}"
    else:
        change = context

    def label() -> None:
        with where.at_fd(TOP) as fd:
            os.setxattr(fd, _SELINUX_XATTR, context.encode())

    return [Step(f"set the SELinux context of {path}: {change}", f"context {change}", label)]


def _read_small(path: str) -> str | None:
    """The content of a regular file up to REVERSE_LIMIT bytes (sent along send/recv edges)."""
    try:
        with Where(path) as where:
            data = where.read(TOP, REVERSE_LIMIT)
    except (OSError, MgmtError):
        return None
    return data.decode(errors="replace") if data is not None else None


def _prior(dir_fd: int, name: str) -> dict[str, Any]:
    st = safefs.lstat_at(dir_fd, name)
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
        data = safefs.read_at(dir_fd, name, REVERSE_LIMIT)
        if data is not None:
            prior["content"] = base64.b64encode(data).decode()
    return prior
