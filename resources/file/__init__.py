"""file: a file or a directory: existence, content (or a copy of a source), owner, group, mode.

A trailing "/" on the path means a directory. Every change goes through descriptors
(engine.safefs): the path is walked from "/" without following unsafe symlinks, then changed
relative to its open parent directory, so a symlink swapped in after the check is never
followed. Writes are atomic (a new inode in the same directory gets its content, owner and
mode, is fsynced, then renamed over the path). Missing parent directories are created (0755).
A symlink at the path is never followed unless `follow: true`; `force: true` (or
`replace_link: true`) replaces it.
See docs/resources/file.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from engine import hangfs, safefs
from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import UID, Edgeable, Listening, Resource, Reversible, register
from engine.stopgate import Later
from engine.watcher import UNSEEN, PathWatcher, Rename
from resources._lib.named import or_name
from resources._lib.plan import Step, apply_steps, describe, in_thread, nothing_to_do
from resources._lib.rewrites import wrote
from resources.file.where import (
    DIR_BASE,
    TOP,
    Entry,
    Held,
    MakeDir,
    SharedDir,
    Src,
    StepDirs,
    Where,
    attr_steps,
    child,
    entry_label,
    filler,
    kind_of,
    new_group,
    owner_after,
    read_small,
    same,
    setid_kept,
)
from resources.file.where import INLINE_LIMIT as INLINE_LIMIT

# What serves only a parameter a file may lack (owner or group: resources._lib.ids, mode:
# resources.file.modes, fragments, purge and selinux: resources.file.extras) or a repair
# (resources._lib.spare) is imported where first used: a cron run of plain files imports none
# of it (docs/architecture.md, "Allowed imports").
if TYPE_CHECKING:
    from engine.handle import Handle
    from resources._lib.spare import Spare

Found = tuple[Where, os.stat_result | None]  # a path's Where, and its lstat (None: absent)
FILE_BASE = 0o644  # permission bits of a new file when neither mode nor source says otherwise
INLINE_SPARE = 1 << 16  # content of at most this many characters gets a spare made ahead
_SPARE = "resources._lib.spare"
_LOOP = "asyncio.loop"  # the engine's running loop, in its Shared (listen())
_STEP_DIRS = "resources.file.StepDirs"  # the parent directories a step's checks share
# Under --noop, each directory a file's check said it would create, and the resource that said
# so (FileRes._said_once), in the engine's Shared.
_NOOP_DIRS = "resources.file.noop-dirs"

REFUSED_NAMED = 5  # entries of a tree not replaced, named at most in the failure's message
_MANAGED = ("content", "source", "fragments", "owner", "group", "mode", "selinux")


@functools.cache
def _context() -> re.Pattern[str]:
    """The pattern of an SELinux context (`selinux`), compiled at its first use: at import it
    cost every run ~0.9 M instructions (0.5% of a cron run's) for a parameter few files set."""
    return re.compile(r"[A-Za-z0-9_.]+:[A-Za-z0-9_.]+:[A-Za-z0-9_.]+(:[A-Za-z0-9_.:,-]+)?")


def _dirname(path: str) -> str:
    """os.path.dirname of a normalized absolute path, without posixpath's three calls (one
    a file, for its automatic edges)."""
    head = path[: path.rfind("/") + 1]
    return head.rstrip("/") if head.strip("/") else head


@functools.lru_cache(maxsize=4096)
def _parents(directory: str) -> list[UID]:
    """The UIDs of `directory` and of each directory above it, nearest first: one list shared
    by all the files of `directory` (its users only read it), not one built per file."""
    parents, path = [], directory
    while True:
        # "//" (a path that starts with exactly two slashes: normpath keeps them, as POSIX
        # allows) is the root too, and its own dirname.
        parents.append(UID("file", "/" if path in ("/", "//") else path + "/"))
        parent = os.path.dirname(path)
        if parent == path:
            return parents
        path = parent


@register("file")
@dataclass(kw_only=True, eq=False)
class FileRes(Edgeable, Reversible, Listening, Resource):
    """A file, a directory or a symlink: its content, mode, owner and state."""

    DRIFTS = True  # its repairs are watched for churn (engine.churn)

    SENDS: ClassVar[Mapping[str, Any]] = {"content": str}
    # _fs_path's last answer, and the spec (path, else name) it was made of (the same object:
    # a value received later is another): read 5-7 times a run.
    _fs_spec: ClassVar[str | None] = None
    _fs_norm: ClassVar[str] = ""
    _claims: ClassVar[bool] = False  # noop: it said it would create a directory (_said_once)

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
    # False: a regular file already at path keeps its content (content, source or fragments
    # make a missing file only); its owner, group and mode are still managed (Puppet's
    # `replace => false`). Files only, not a tree copy. Default true.
    replace: bool = True
    # With a tree copy (recurse and source): mode applies to every entry below path too (a
    # symlink excepted), as owner and group do, instead of the source's bits (Puppet's recurse).
    # Default false.
    recurse_mode: bool = False
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
    # Replace a symlink at path (the link only: its target is never opened) by the file or
    # directory, without force's other replacements (Puppet's `ensure => file`). Default false.
    replace_link: bool = False
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
        return or_name(self, "path")[0]

    @property
    def _fs_path(self) -> str:
        spec = self.path
        if spec is None:
            spec = self.name
        if spec is self._fs_spec:
            return self._fs_norm
        norm = os.path.normpath(spec)
        self._fs_spec, self._fs_norm = spec, norm  # type: ignore[misc]  # (ClassVar: the default)
        return norm

    @property
    def _is_dir(self) -> bool:
        return (self.path if self.path is not None else self.name).endswith("/")  # _spec_path's

    def written_file(self) -> tuple[str, str | None] | None:
        """Its path and content when it writes the file's whole content (or removes it): a
        kind editing a part of it that the content lacks is refused at load
        (engine.autoedge.overwritten)."""
        if self._is_dir or self.symlink:
            return None
        if self.content is not None or self.state == "absent":
            return self._fs_path, self.content or ""
        if self.source is not None or self.fragments is not None:
            return self._fs_path, None  # not known before it runs
        return None

    @property
    def _managed(self) -> bool:
        if self.state is not None or self.content is not None:  # the usual cases, at no call
            return True
        # purge too implies exists: it was ignored without a word (tester14, finding 2)
        return self.purge or any(getattr(self, k) is not None for k in _MANAGED)

    def validate(self) -> None:
        super().validate()
        self._validate_path()
        if (  # a file of content (or none) alone, as most are: the one check left of the rest
            self.source is None
            and self.mode is None
            and self.state is None
            and self.owner is None
            and self.group is None
            and self.fragments is None
            and self.selinux is None
            and not (self.symlink or self.replace_link or self.recurse or self.purge)
        ):
            if self.content is not None and self._is_dir:
                raise ValidationError(
                    f"a directory path ({self._spec_path!r} ends with '/') has no content",
                    "content",
                )
            return
        if self.content is not None and self.source is not None:
            raise ValidationError("cannot be combined with content: set one of them", "source")
        if self.fragments is not None:
            self._validate_fragments()
        if self.symlink:
            self._validate_symlink()
        if self.replace_link and (self.symlink or self.follow):
            raise ValidationError("cannot be combined with symlink or follow", "replace_link")
        if self.selinux is not None and not _context().fullmatch(self.selinux):
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
        if self.source is not None:
            self._validate_source()
        if self.recurse and not self._is_dir and self.state != "absent":
            raise ValidationError(
                "needs a directory path (ending in '/') or state 'absent' (to remove a tree)",
                "recurse",
            )
        if not self.replace and (self._is_dir or self.symlink):
            raise ValidationError("only a file path keeps its content", "replace")
        if self.recurse_mode and (self.mode is None or self.source is None or not self.recurse):
            raise ValidationError("needs mode, source and recurse: true", "recurse_mode")
        if self.purge and not (self.recurse and self._is_dir):
            raise ValidationError("needs recurse: true and a directory path", "purge")
        if self.mode is not None:
            from resources.file.modes import mode_after

            try:
                mode_after(self.mode, 0, False)
            except ValueError:
                raise ValidationError(
                    f"expected octal like '0644' or symbolic like 'u=rw,go=r', got {self.mode!r}",
                    "mode",
                ) from None
        if self.owner is not None or self.group is not None:
            for key in ("owner", "group"):
                _validate_id(getattr(self, key), key)

    def _validate_path(self) -> None:
        path, key = or_name(self, "path")
        if not path.startswith("/") or "\0" in path:  # os.path.isabs(), at no call
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
        for key in ("mode", "fragments", "selinux"):
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
                or_name(self, "path")[1],
            )
        src, dst = os.path.normpath(source), self._fs_path
        if self._is_dir and os.path.commonpath([src, dst]) in (src, dst):
            raise ValidationError(
                f"{source!r} and path {dst!r} must not contain each other", "source"
            )

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        ahead = handle.shared.ahead  # a daemon's (engine.handle.Ahead)
        if ahead is not None and self._ahead_wanted():
            ahead.want(self._prepare_ahead)

    async def watch(self) -> None:
        while True:
            paths = self._watch_paths()
            recurse = self._recurse_watch()
            settles = self._settles()
            async with PathWatcher(
                paths, recurse=recurse, checked=settles, entries=self._entries_matter()
            ) as watcher:
                self._watching = paths
                self._watcher = watcher if settles else None
                try:
                    # The startup event; after a restart (a followed link moved) a catch-up.
                    await self.handle.event()
                    async for _ in watcher:
                        await self.handle.event()
                        if self._watch_paths() != paths:
                            break  # re-watch: a symlink now points elsewhere
                finally:
                    self._watcher = None

    def _recurse_watch(self) -> bool:
        return self.recurse and (self.source is not None or self.purge)

    def _entries_matter(self) -> bool:
        """Whether a change to the entries of a directory at the path is an event: not for a
        directory path that is wanted (its mode, owner, existence do not depend on what it
        holds; a drift of one of its 1,000 managed files checked it ~4 times, each check poking
        its 1,000 files, ~35 ms of CPU). They matter to a tree copy or purge (recurse), and
        to `state: absent`, which removes a directory once it is empty."""
        return not self._is_dir or self.state == "absent" or self._recurse_watch()

    def _settles(self) -> bool:
        """Whether the watched paths are fixed, so that a check settles what the watcher has
        pending (engine/watcher.py): else an event may mean "re-watch". Not on a file system
        that can stop answering: its check runs aside and tells the watcher nothing."""
        return not (
            self._recurse_watch() or self.follow or self.source is not None
        ) and not hangfs.kind_of(self._fs_path)

    def _watch_paths(self) -> list[str]:
        if not (self.follow or self.source is not None or self.fragments):
            return [self._fs_path]  # the usual case, at no more call
        paths = [self._fs_path]
        if self.follow:
            paths.append(os.path.realpath(self._fs_path))
        if self.source is not None and not self.symlink:
            paths += [os.path.normpath(self.source), os.path.realpath(self.source)]
        paths += [os.path.normpath(f) for f in self.fragments or []]
        return list(dict.fromkeys(paths))

    async def check_apply(self, apply: bool) -> bool:
        if not self._managed:
            why = f"none of state, {', '.join(_MANAGED)}, purge is set"
            return nothing_to_do(self.handle, why)
        if (kind := self._hang_kind()) is not None or self._aside_waits():
            return await self._check_aside(apply, kind or "")
        return await self._check(apply, getattr(self, "_watcher", None))

    def _hang_kind(self) -> str | None:
        """The type of the file system that can stop answering (engine.hangfs) which one of the
        paths the check reads or writes is on; None (the usual case) if none is."""
        for path in (self._fs_path, self.source, *(self.fragments or ())):
            if path is not None and (kind := hangfs.kind_of(path)) is not None:
                return kind
        return None

    async def _check_aside(self, apply: bool, kind: str) -> bool:
        """check_apply of a path on a file system that can stop answering: in a thread of its
        own (resources/file/aside.py), which alone waits if it does not answer. No watcher
        deferral (_settles), no step's shared directories, no spare."""
        from resources.file.aside import Aside, LoopBound

        if not isinstance(self._handle, LoopBound):
            self._handle = cast("Handle", LoopBound(self.handle, asyncio.get_running_loop()))
        aside: Aside | None = getattr(self, "_aside", None)
        if aside is None:
            aside = self._aside = Aside(self.handle)
        return await aside.run(
            functools.partial(self._check, apply, None, alone=True), self._fs_path, kind
        )

    def _aside_waits(self) -> bool:
        """Whether a check aside still waits (cut short, its thread not ended): the next check
        fails at once, also once its path is local again (a mount gone: `umount -l`), never
        beside it on the loop (both in the same fields, the same file)."""
        aside = getattr(self, "_aside", None)
        return aside is not None and aside.since is not None

    def waiting_on(self) -> str | None:
        """What a check still running waits on (a file system that does not answer), for the
        engine's meta timeout line; None if nothing."""
        aside = getattr(self, "_aside", None)
        return None if aside is None else aside.waiting()

    async def _check(
        self, apply: bool, watcher: PathWatcher | None, *, alone: bool = False
    ) -> bool:
        # What happened so far, this check sees; it looks the path up itself, once
        # (engine/watcher.py), and tells the watcher what it found (_plan). A change of its
        # paths read now may have been read after the step's walk to their directory (each
        # check reads the queue while own writes are in flight): it walks itself (StepDirs).
        # A check aside (`alone`: in its own thread) walks itself too.
        fresh = alone or (watcher is not None and watcher.settle(before=True))
        self._refused: list[str] = []  # entries of a tree not replaced (_plan_tree)
        self._not_yet: list[str] | None = None if apply else []  # owners a noop cannot find
        with Held() as held:  # descriptors from the check through the changes
            try:
                found: Found | None = None
                if watcher is not None and apply and _writing[0] and self._creates_in_thread():
                    made = await self._create_in_thread(held, watcher)
                    if made is None or made == UPDATED:  # absent or stale: written now
                        if made == UPDATED:  # (a first write of a new name is no fight)
                            wrote(self.handle, self._fs_path)
                        self.handle.send(content=functools.partial(read_small, self._fs_path))
                        return False
                    found = made
                where, steps = await self._plan(held, watcher, found, fresh=fresh)
                if not apply:
                    steps = self._said_once(steps)
                if self._not_yet:  # noop: a user/group resource before it makes them
                    owners = " and ".join(self._not_yet)
                    why = "not yet on this host: made by an earlier resource"
                    steps.append(Step(f"make {where.path} owned by {owners} ({why})", ""))
            except OSError as err:
                raise ResourceError(f"cannot inspect {self._fs_path}: {describe(err)}") from err
            finally:
                if watcher is not None:
                    watcher.observed()  # the check failed before it looked: the watcher looks
            handle = self.handle
            handle.send(content=functools.partial(read_small, where.path))
            if not steps and not self._refused:
                return nothing_to_do(handle, functools.partial(self._why, where.path))
            if apply and self.meta.reverse and getattr(self, "_prior", None) is None:
                self._prior = where.observe()
            if apply and watcher is not None:
                with watcher.changing():  # its own changes' events: not a change to check
                    await apply_steps(
                        self.handle, steps, apply, errors=(OSError,), explain=where.explain
                    )
                    if not self._refused and watcher.settle():
                        await self._look_again(held, watcher)
            else:
                await apply_steps(
                    self.handle, steps, apply, errors=(OSError,), explain=where.explain
                )
            if apply and steps:  # a fight with another kind's edits of it is named (rewrites)
                wrote(self.handle, where.path)
        if self._refused:  # the rest of the tree was repaired: it fails, naming what was not
            more = len(self._refused) - REFUSED_NAMED
            raise ResourceError(
                "; ".join(self._refused[:REFUSED_NAMED])
                + (f"; and {more} more" if more > 0 else "")
            )
        return False

    async def _look_again(self, held: Held, watcher: PathWatcher) -> None:
        """After this check's own changes, whose events settle() set aside: the path as
        wanted subsumes them (no second check for its own chmod, chown or write); anything
        else is reported as a change (engine/watcher.py)."""
        try:
            _where, steps = await self._plan(held, watcher, fresh=True)  # (its own walk)
        except (OSError, ResourceError):
            steps = None
        finally:
            watcher.observed()  # the look failed before it looked: the watcher looks
        if steps or steps is None or self._refused:
            watcher.changed()

    def _said_once(self, steps: list[Step]) -> list[Step]:
        """Under --noop, a directory is said to be made by one resource: the first whose check
        says so (its own directory's resource, which the automatic edge runs first, or the
        first file checked in a missing parent). Another's parent step for
        it is left out (a debug line): in a run, the first makes it and the others find it.
        A resource's claims end with it (_release_claims): the next to check says it."""
        said: dict[str, FileRes] = self.handle.shared.get(_NOOP_DIRS, dict)
        kept = []
        for step in steps:
            if isinstance(step, MakeDir):
                if step.directory == self._fs_path:  # its own: always said
                    self._claim(said, step.directory, replace=True)
                elif self._claim(said, step.directory) is not self:
                    by = said[step.directory]
                    self.handle.logger.debug("%s would create %s", by, step.directory)
                    continue
            kept.append(step)
        return kept

    def _claim(self, said: dict[str, FileRes], directory: str, replace: bool = False) -> FileRes:
        """`directory`'s claimant in `said` (this resource if none, or `replace`); the first
        claim registers their release at this resource's cleanup (it leaves the graph)."""
        if not self._claims:
            self._claims = True  # type: ignore[misc]  # (ClassVar: the default)
            self.handle.on_cleanup(functools.partial(self._release_claims, said))
        if replace:
            said[directory] = self
        return said.setdefault(directory, self)

    def _release_claims(self, said: dict[str, FileRes]) -> None:
        """The directories this resource said it would create are nobody's (until 2026-12-07
        they were its for the daemon's life: a resource checked after it had left did not say
        them, and the engine's Shared grew with every directory a graph ever named)."""
        for directory in [d for d, by in said.items() if by is self]:
            del said[directory]
        self._claims = False  # type: ignore[misc]  # (a resource started again claims again)

    def _why(self, path: str) -> str:
        if self.state == "absent":
            return f"{path} is absent"
        what = [k for k in _MANAGED if getattr(self, k) is not None]
        kind = "directory" if self._is_dir else "file"
        return f"{kind} {path} exists" + (f" with the wanted {', '.join(what)}" if what else "")

    # capabilities: autoedges, reversal, a watch without a task --------------------------------

    def uids(self) -> list[UID]:
        return [UID("file", self._fs_path + ("/" if self._is_dir and self._fs_path != "/" else ""))]

    def autoedges(self) -> list[list[UID]]:
        """The nearest managed parent directory, a managed source, fragments, and the managed
        user and group it is owned by (by name, or an id a `user`/`group` sets as its
        `uid`/`gid`): Puppet's autorequire; mgmt's file asks for neither (docs/resources/file.md)."""
        path = self._fs_path
        wants = [_parents(_dirname(path)) if path != "/" else []]
        if self.owner is not None:  # validate() refuses one with state absent
            wants.append([UID("user", self.owner)])
        if self.group is not None:
            wants.append([UID("group", self.group)])
        for fragment in self.fragments or []:
            norm = os.path.normpath(fragment)
            wants.append([UID("file", norm + "/" if fragment.endswith("/") else norm)])
        if self.source is not None and not self.symlink:
            source = os.path.normpath(self.source)
            wants.append([UID("file", source), UID("file", source.rstrip("/") + "/")])
        return wants

    def lazy_autoedges(self, kinds: frozenset[str]) -> list[list[UID]]:
        """Beside a package: the package owning the file (a regular file's path it lists), so
        it is installed first, as in mgmt."""
        spec = self.path if self.path is not None else self.name
        if "pkgfile" not in kinds or spec.endswith("/"):  # a directory: not asked for
            return []
        return [[UID("pkgfile", self._fs_path)]]

    def reversal(self) -> Any:
        """What path (with follow: the link's target) was before this resource changed it."""
        prior = getattr(self, "_prior", None)
        if prior is None:
            with Held() as held:
                prior = self._locate(held)[0].observe()
        return prior

    async def reverse(self, data: Any) -> None:
        """Put back what was there: remove what we created, or restore content and mode."""
        await asyncio.to_thread(self._restore, data)

    def _restore(self, prior: dict[str, Any]) -> None:
        with Held() as held:
            where, st = self._locate(held)
            if not prior.get("existed"):
                if st is not None:  # a directory only if empty: what else is in it is not ours
                    where.remove(TOP, recursive=False)
                return
            if prior.get("kind") == "file" and "content" in prior:
                while where.missing:
                    where.make_parent()
                data = base64.b64decode(prior["content"])
                where.write(TOP, filler(data), prior["mode"], prior["uid"], prior["gid"])
            elif st is not None:
                mode = None if stat.S_ISLNK(st.st_mode) else prior["mode"]
                where.attrs(TOP, st, uid=prior["uid"], gid=prior["gid"], mode=mode)

    def listen(
        self, report: Callable[[], None], failed: Callable[[Exception], None]
    ) -> Callable[[], None] | None:
        """watch() without its task where the watched paths are fixed (then watch() reports
        each change, and never re-watches); None where they may move."""
        if hangfs.kind_of(self._fs_path):
            return None  # watch()'s task: a check aside tells a `checked` watcher nothing
        if not (self.follow or self.source is not None or self.fragments or self.recurse):
            # the usual case: _settles(), _watch_paths() and _entries_matter() at no call
            paths, entries = [self._fs_path], not self._is_dir or self.state == "absent"
        elif not self._settles():
            return None
        else:
            paths, entries = self._watch_paths(), self._entries_matter()
        watcher = PathWatcher(
            paths,
            checked=True,
            entries=entries,
            on_change=report,
            on_error=failed,
        )
        # The running loop, asked once per engine (each ask is a getpid system call).
        watcher.open(self.handle.shared.get(_LOOP, asyncio.get_running_loop))
        self._watching, self._watcher = paths, watcher

        def close() -> None:
            self._watcher = None
            watcher.close()

        return close

    def unchecked(self) -> None:
        """No check follows the watch listen() put in place (Listening.unchecked): the path's
        own watch (a regular file's inode: a write through another hard link), which the
        `checked` watcher left for the check's observed(), is placed here, from one lstat
        (the watcher's own look, observed() UNSEEN, re-syncs all: ~60 K instructions a file
        against ~30 K; 99 files found good before a run's one write)."""
        watcher: PathWatcher | None = getattr(self, "_watcher", None)
        if watcher is None or not watcher.owes():
            return
        try:
            kind: int | None = stat.S_IFMT(os.lstat(self._fs_path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            kind = None
        except OSError:
            kind = UNSEEN  # the watcher looks
        watcher.observed(kind)

    # a first write beside others: the lookup and the write in one hop to an I/O thread -------

    def _creates_in_thread(self) -> bool:
        """Whether this check looks the path up in an I/O thread, and creates the file there
        if it is absent, or replaces its content if only that differs (one hop): the first
        write of a file with content, while other writes are in flight (a first run). The
        check's lookup of a new name on the event loop waited for the directory's lock and
        for the GIL that those writing threads hold (cProfile of a 10,000-file first run:
        1.5-6 s of the loop's time, by the load); with nothing in flight (a no-op run, a
        repair) the lookup on the loop costs microseconds, less than a hop."""
        return bool(
            _writing[0]
            and self.content is not None
            and not getattr(self, "_wrote", False)
            and not (self.follow or self.symlink or self.meta.reverse)
            and self.selinux is None
        )

    async def _create_in_thread(
        self, held: Held, watcher: PathWatcher
    ) -> Found | Literal["updated"] | None:
        """Look the path up in an I/O thread and, if it is absent, create it there, as
        _plan_file's steps would (its missing parents, a crashed write's leftovers, the file);
        their lines are logged here. A regular file with other content but the wanted owner
        and mode has its content replaced there (UPDATED: _replace_found). What is found
        instead is returned, for _plan."""
        assert self.content is not None
        uid, gid = self._ids()
        mode, data = self._want_mode(None, None, False, (uid, gid)), self.content.encode()
        done: list[str] = []
        path = self._fs_path
        with watcher.expecting(path, beside=True) as rename:
            create = functools.partial(
                self._locate_or_create, held, rename, (data, mode, uid, gid), done
            )
            _writing[0] += 1
            try:
                found = await in_thread(create, (("file", _dirname(path)), SharedDir))
            finally:
                _writing[0] -= 1
                for line in done:  # (log(INFO, ...) itself: info()'s frame and a format less)
                    self.handle.logger.log(logging.INFO, line)
        await _written()
        assert not isinstance(found, Later)  # Replies ran its second part
        if found is None or found == UPDATED:
            self._wrote = True
        return found

    def _locate_or_create(
        self,
        held: Held,
        rename: Rename,
        new: tuple[bytes, int, int, int],
        done: list[str],
        shared: SharedDir | None,
    ) -> Found | Later | Literal["updated"] | None:
        """_create_in_thread's part in the I/O thread; `shared`: the directory open for the
        other first writes there that this worker runs with it (stopgate.Replies)."""
        where = None if shared is None else shared.at(self._fs_path)
        if where is not None and (st := where.found()) is not None:  # its own, to replace?
            if stat.S_ISREG(st.st_mode):
                return self._replace_found(held, where, st, (rename, done), new, shared=shared)
            where = None
        if where is None:  # not open there, or not absent: alone
            where, st = self._locate(held, writing=True)
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    return where, st
                return self._replace_found(held, where, st, (rename, done), new, shared=None)
        where.local()  # asked before: the directories made on the way are on it too
        for step in [*where.parent_steps(), *where.temp_steps()]:  # usually none
            assert step.run is not None
            try:
                step.run()
            except OSError as err:
                raise ResourceError(f"could not {step.would}: {where.explain(err)}") from err
            done.append(step.done)
        return self._fill_in(where, (rename, done), new, shared=shared, how=CREATE)

    def _replace_found(
        self,
        held: Held,
        where: Where,
        st: os.stat_result,
        told: tuple[Rename, list[str]],
        new: tuple[bytes, int, int, int],
        *,
        shared: SharedDir | None,
    ) -> Found | Later | Literal["updated"] | None:
        """The regular file found at the path (st), in the I/O thread: if only its content
        differs (its owner and mode as wanted), replaced as _plan_file's step would, and
        UPDATED (or its Later); else (where, st), for _plan on the loop. `where`: the shared
        directory's (valid until the group's second parts are done), or the check's own."""
        data, _new_mode, uid, gid = new
        mode = self._want_mode(st, None, False, (uid, gid))
        if (
            uid not in (-1, st.st_uid)
            or gid not in (-1, st.st_gid)
            or mode != stat.S_IMODE(st.st_mode)
            or not self.replace
            or (st.st_size == len(data) and where.same(TOP, data, len(data)))
            or where.temp_steps()  # a crashed write's leftovers: the loop's plan removes them
        ):
            if shared is not None:  # its Where closes with the group: the check's own
                return self._locate(held, writing=True)
            return where, st
        keep = (st.st_uid if uid == -1 else uid, st.st_gid if gid == -1 else gid)
        if keep == where.new_owner():  # what the new inode gets anyway: no fchown
            keep = (-1, -1)
        return self._fill_in(where, told, (data, mode, *keep), shared=shared, how=UPDATE)

    def _fill_in(
        self,
        where: Where,
        told: tuple[Rename, list[str]],
        new: tuple[bytes, int, int, int],
        *,
        shared: SharedDir | None,
        how: tuple[str, str, bool],
    ) -> Later | Literal["updated"] | None:
        """Write `new` (data, mode, uid, gid) at the path, as `how` says (CREATE: a new name,
        None; UPDATE: an existing file replaced, UPDATED). Taken with others (`shared`):
        written now, fsynced and named after the group's other writes (stopgate.Later; each
        fsynced before it is named, as alone), so that the group's new inodes are all made
        before the first old one is freed (docs/benchmarks.md, "Updating 1,000 files")."""
        data, mode, uid, gid = new
        is_new = how[2]
        local = where.local()
        if shared is not None and not where.missing:
            try:
                fd = safefs.unnamed_filled(where.fd, data, mode=mode, uid=uid, gid=gid, local=local)
            except OSError as err:
                what = how[0].format(path=where.path)
                cause = where.cut_short(err)  # rm -rf of the directory: checked again at once
                raise ResourceError(f"could not {what}: {where.explain(err)}") from cause
            if fd is not None:
                name = functools.partial(
                    safefs.named_new, where.fd, where.name, fd, data=data, local=local, new=is_new
                )
                placed = functools.partial(self._placed, where, told, name, local, how)
                return Later(placed, (fd, where.fd, where.name if is_new else None))
        write = functools.partial(where.write, TOP, data, mode, uid, gid, new=is_new)
        return self._placed(where, told, write, local, how)

    @staticmethod
    def _placed(
        where: Where,
        told: tuple[Rename, list[str]],
        write: Callable[[], None],
        local: bool,
        how: tuple[str, str, bool],
    ) -> Literal["updated"] | None:
        """Put the new file at the path by `write` (its own rename: the watcher expects it,
        `told`'s Rename), and add `how`'s line to `told`'s."""
        rename, done = told
        try:
            rename.run(write, local)
        except OSError as err:
            what = how[0].format(path=where.path)
            cause = where.cut_short(err)  # rm -rf of the directory: checked again at once
            raise ResourceError(f"could not {what}: {where.explain(err)}") from cause
        done.append(how[1].format(path=where.path))
        return None if how[2] else UPDATED

    # planning: observe (lstat, read) and decide; nothing here writes --------------------------

    async def _plan(
        self,
        held: Held,
        watcher: PathWatcher | None = None,
        found: Found | None = None,
        *,
        fresh: bool = False,
    ) -> tuple[Where, list[Step]]:
        """`fresh`: a change of the paths was read since the step's walks (settle() said so):
        the check walks to the directory itself, not in the one its step's checks share."""
        if found is None:  # on the loop: its step's checks share the directory (StepDirs)
            where, st = self._locate(held, None if fresh else self._step_dirs())
        else:
            where, st = found
        if watcher is not None:  # not following symlinks: where.path is the watched path
            watcher.observed(None if st is None else stat.S_IFMT(st.st_mode))
        if self.state == "absent":
            return where, self._plan_absent(where, st)
        if self.symlink:
            steps = self._plan_symlink(where, st)
        elif self._is_dir:
            steps = await self._plan_dir(where, st, held)
        else:
            steps = await self._plan_file(where, st, held)
        if self.selinux is not None:
            from resources.file.extras import selinux_steps

            steps += selinux_steps(where, self.selinux, changing=bool(steps))
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

    def _step_dirs(self) -> StepDirs:
        """The engine's StepDirs (made on its loop, at the first check)."""
        return self.handle.shared.get(_STEP_DIRS, StepDirs)

    def _locate(
        self, held: Held, dirs: StepDirs | None = None, *, writing: bool = False
    ) -> tuple[Where, os.stat_result | None]:
        """Where the path to manage is (a followed symlink's target) and its lstat. `writing`:
        in a writing I/O thread, where an absent path is found with the GIL held. `dirs`: on
        the loop, the directory shared with the step's other checks (StepDirs)."""
        path = self._fs_path
        where = held.enter_context(Where(path)) if dirs is None else dirs.at(path, held)
        st = where.found() if writing else where.lstat(TOP)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return where, st
        if self.follow:
            for _ in range(safefs.MAX_LINKS):
                where = held.enter_context(where.follow())
                st = where.lstat(TOP)
                if st is None or not stat.S_ISLNK(st.st_mode):
                    return where, st
            raise ResourceError(f"symlink {self._fs_path} does not resolve (a loop?)")
        if self.state == "absent" or self.force or self.symlink or self.replace_link:
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

    async def _plan_file(self, where: Where, st: os.stat_result | None, held: Held) -> list[Step]:
        steps = where.parent_steps() + where.temp_steps()
        after: list[Step] = []  # a replaced symlink is only reported: the rename swaps it out
        if st is not None and not stat.S_ISREG(st.st_mode):
            replace = self._replace_step(where, TOP, st, "file")
            (steps if replace.run else after).append(replace)
        cur = st if st is not None and stat.S_ISREG(st.st_mode) else None
        if (
            self.content is not None
            and self.mode is None
            and self.owner is None
            and self.group is None
            and self.fragments is None
        ):  # (no source: validate) Its attributes stay as they are: a write keeps them
            source = src = None
            uid = gid = -1
            mode = FILE_BASE if cur is None else stat.S_IMODE(cur.st_mode)  # (_want_mode's)
            changes: list[Step] = []
        else:
            source, src = self._source(held, want_dir=False)
            uid, gid = self._ids()
            # A new file's group (a set-group-ID directory's) matters to a source's set-ID bit
            # only.
            setgid = cur is None and src is not None and src.st_mode & stat.S_ISGID
            new_gid = where.new_group() if setgid else None
            mode = self._want_mode(cur, src, False, (uid, gid), new_gid)
            changes = attr_steps(where, TOP, "", cur, mode=mode, uid=uid, gid=gid)
        data: bytes | int | None = self.content.encode() if self.content is not None else source
        if self.fragments is not None:
            from resources.file.extras import read_fragments

            data = await in_thread(functools.partial(read_fragments, self.fragments))
        size = len(data) if isinstance(data, bytes) else src.st_size if src is not None else 0
        if cur is not None and (
            data is None
            or not self.replace
            or (
                cur.st_size == size
                and (
                    where.same(TOP, data, size)  # a small file: inline, no coroutine
                    if size <= INLINE_LIMIT
                    else await same(where, cur, data, size)
                )
            )
        ):
            return steps + changes
        if cur is not None:
            uid = cur.st_uid if uid == -1 else uid
            gid = cur.st_gid if gid == -1 else gid
        write = functools.partial(self._write, where, data, mode, uid, gid, new=st is None)
        if cur is None:
            create = Step(f"create {where.path}", f"created {where.path}", write)
            return [*steps, create, *after]
        quiet = [dataclasses.replace(c, run=None) for c in changes]  # the write sets them
        what = f"update the content of {where.path}"  # its failure names the path
        return [*steps, Step(what, "content updated", write), *quiet]

    async def _write(
        self,
        where: Where,
        data: bytes | int | None,
        mode: int,
        uid: int,
        gid: int,
        *,
        new: bool = False,
    ) -> None:
        """Write the file; a repair links in the spare made after the last one and makes the
        next (resources/_lib/spare.py). `new`: the path was found absent (the spare is linked
        at it directly: no temp name, no rename, unless it appeared meanwhile)."""
        # Before the first write (a first run): no spare, unless a daemon made one ahead
        # (_prepare_ahead). Else the first repair writes, then imports the spare's module and
        # makes one: its import is not on that repair's path.
        spare: Spare | None = getattr(self, "_spare", None)
        spares = (
            (spare is not None or getattr(self, "_wrote", False))
            and isinstance(data, bytes)
            and not self.follow
            and getattr(self, "_aside", None) is None  # (a check aside: no spare)
        )
        if spare is None and spares and (module := sys.modules.get(_SPARE)) is not None:
            spare = self._spare = module.Spare()  # imported already (a daemon's): see below
            self.handle.on_cleanup(self._drop_spare)
        want = None
        if spare is not None and spares:
            assert isinstance(data, bytes)
            want = spare.want(where.fd, data, mode, uid, gid)
        fd = None if spare is None or want is None else await spare.take(want)
        if fd is None and want is not None:
            # None made before: one made now, its fsync through the loop's ring, awaited
            # there (no hand-off to a thread and back, each waiting for a core when both
            # are busy); without a ring, written in a thread.
            assert spare is not None
            fd = await spare.now(where.fd, want)
        if fd is None:
            # On a tmpfs (no spare: resources/_lib/spare.py, NO_GAIN) the write waits for no
            # disk: on the loop, as a spare's link is.
            inline = (
                spare is not None
                and want is None
                and isinstance(data, bytes)
                and spare.in_memory(where.fd, data)
            )
            write = functools.partial(where.write, TOP, filler(data), mode, uid, gid)
            await self._rename_in(write, inline=inline)
        else:
            # A link and a rename, no fsync: on the loop.
            await self._rename_in(functools.partial(_link_spare, where, fd, new), inline=True)
        self._wrote = True
        if not spares:
            return
        assert isinstance(data, bytes)
        if spare is None:
            from resources._lib.spare import Spare  # a repair's: a first write makes none

            want = Spare.want(where.fd, data, mode, uid, gid)
            if want is None:
                return
            spare = self._spare = Spare()
            self.handle.on_cleanup(self._drop_spare)
        if want is not None:
            spare.prepare(where.fd, want)

    def _ahead_wanted(self) -> bool:
        """Whether a spare of the file is worth making before its first drift: a file of
        `content` (its bytes known before it is written) that a repair would write."""
        return (
            self.content is not None
            and len(self.content) <= INLINE_SPARE
            and self.state != "absent"
            and not (self._is_dir or self.follow or self.symlink or self.meta.noop)
            and self.selinux is None
        )

    async def _prepare_ahead(self) -> None:
        """A daemon's idle time (engine.handle.Ahead): make the spare of the file before its
        first drift, so that its first repair only links it in, as the later ones do (before,
        the first repair wrote and fsynced: the slowest). Nothing if the resource stopped,
        holds a spare already (it was repaired), or the budget of spares made ahead is spent
        (resources/_lib/spare.py, AHEAD_MAX: its first repair writes, as before)."""
        from resources._lib import spare as spares  # a daemon's: a cron run imports none

        if self.handle.stopping or getattr(self, "_spare", None) is not None or spares.spent():
            return
        if self._hang_kind() is not None:
            return  # its lookup would be on the loop: a file system that can stop answering
        await spares.flight_room()
        if self.handle.stopping or getattr(self, "_spare", None) is not None:
            return  # stopped, or repaired, meanwhile
        assert self.content is not None
        with Held() as held:
            try:
                where, st = self._locate(held)
                if st is None or not stat.S_ISREG(st.st_mode):
                    return  # not there as wanted (its check fails, or is coming): no spare
                uid, gid = self._ids()
                mode = self._want_mode(st, None, False, (uid, gid))
                uid, gid = (st.st_uid if uid == -1 else uid), (st.st_gid if gid == -1 else gid)
                want = spares.Spare.want(where.fd, self.content.encode(), mode, uid, gid)
            except (OSError, ResourceError):
                return  # its check says what is wrong; a repair writes, as without a spare
            if want is None:
                return
            spare = spares.Spare()
            if spare.ahead(where.fd, want) is None:
                return
            self._spare = spare
            self.handle.on_cleanup(self._drop_spare)

    async def _drop_spare(self) -> None:
        spare: Spare | None = getattr(self, "_spare", None)
        if spare is not None:
            del self._spare
            await spare.close()

    async def _rename_in(self, write: functools.partial[None], inline: bool = False) -> None:
        """Run `write` (in a thread; `inline`: here, for a repair's link of its spare: no fsync
        to wait for, and under load each hand-off to a thread and back waits for a core), which renames a new file onto the path: that rename's own event is not a
        change to check again, and the writer looks at the watched paths after it
        (engine/watcher.py, expecting)."""
        watcher: PathWatcher | None = getattr(self, "_watcher", None)
        if watcher is None or self.follow or _aside_here():
            write() if inline else await _writing_in_thread(write)
            return
        with watcher.expecting(self._fs_path) as rename:
            run = functools.partial(rename.run, write)
            run() if inline else await _writing_in_thread(run)

    async def _plan_dir(self, where: Where, st: os.stat_result | None, held: Held) -> list[Step]:
        path = where.path
        steps = where.parent_steps()
        if st is not None and not stat.S_ISDIR(st.st_mode):
            steps.append(self._replace_step(where, TOP, st, "directory"))
        cur = st if st is not None and stat.S_ISDIR(st.st_mode) else None
        source, src = self._source(held, want_dir=True)
        uid, gid = self._ids()
        top_group = where.new_group() if cur is None else None  # a new directory's group
        mode = self._want_mode(cur, src, True, (uid, gid), top_group)
        if cur is None:
            make = functools.partial(where.make_dir, TOP, mode, uid, gid)
            steps.append(
                MakeDir(
                    f"create directory {path}", f"created directory {path}", make, directory=path
                )
            )
        steps += attr_steps(where, TOP, "", cur, mode=mode, uid=uid, gid=gid)
        if source is not None:
            inherit = new_group(mode, owner_after(uid, gid, cur, top_group)[1])
            tree = functools.partial(
                self._plan_tree,
                where,
                (source, ()),
                TOP,
                cur is not None,
                (uid, gid),
                inherit=inherit,
            )
            steps += await in_thread(tree)
        elif self.purge and cur is not None:
            from resources.file.extras import plan_purge

            keep = self._kept_by_peers()
            steps += await in_thread(functools.partial(plan_purge, where, TOP, keep))
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
        self,
        where: Where,
        src: Src,
        dst: Entry,
        dst_is_dir: bool,
        ids: tuple[int, int],
        *,
        inherit: int,
    ) -> list[Step]:
        """Steps that make the tree below dst mirror the one below src (runs in a thread).
        `inherit`: the group a new inode in dst gets (new_group), for the set-ID rule.

        Both trees are read through descriptors, one directory at a time, and no symlink in
        them is followed: a link is an entry like any other.
        """
        src_root, src_rel = src
        have = where.scan(dst) if dst_is_dir else {}
        with safefs.closing(safefs.sub_dir(src_root, src_rel)) as src_fd:
            want = safefs.scan(src_fd)
        steps: list[Step] = []
        for name in sorted(n for n, st in have.items() if safefs.is_stale_temp(n, st)):
            label = entry_label(child(dst, name))
            remove = functools.partial(where.remove, child(dst, name), False)
            steps.append(Step(f"remove leftover temp file {label}", f"removed {label}", remove))
            del have[name]
        for name, src_st in sorted(want.items()):
            entry = child(dst, name)
            try:
                steps += self._plan_entry(
                    where,
                    (src_root, (*src_rel, name)),
                    entry,
                    src_st,
                    have.get(name),
                    ids=ids,
                    inherit=inherit,
                )
            except ResourceError as err:  # one entry refused: its siblings are still repaired
                self._refused.append(str(err))
        if self.purge:
            for name in sorted(have.keys() - want.keys()):
                entry, label = child(dst, name), entry_label(child(dst, name))
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
        inherit: int,
    ) -> list[Step]:
        src_root, src_rel = src
        rel = entry_label(entry)
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
        have = (src_st.st_uid, src_st.st_gid)
        want = owner_after(uid, gid, st, inherit)
        bits = setid_kept(stat.S_IMODE(src_st.st_mode), have, want)
        if self.recurse_mode and self.mode is not None and kind != "symlink":
            from resources.file.modes import mode_after

            bits = mode_after(self.mode, bits, kind == "directory")
        if kind == "directory":
            make = functools.partial(where.make_dir, entry, bits, uid, gid)
            if st is None:
                steps.append(Step(f"create directory {rel}/", f"created directory {rel}/", make))
            steps += attr_steps(where, entry, rel + " ", st, mode=bits, uid=uid, gid=gid)
            below = new_group(bits, want[1])
            return steps + self._plan_tree(where, src, entry, st is not None, ids, inherit=below)
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
        copy = functools.partial(where.copy, entry, src, bits, uid, gid, seen=src_st)
        return [*steps, Step(f"copy {rel}", f"copied {rel}", copy, True)]

    def _replace_step(
        self, where: Where, entry: Entry, st: os.stat_result, want: str, remove: bool = False
    ) -> Step:
        """Replacing what is at entry by a `want` (needs force)."""
        have = kind_of(st)
        path = where.path if entry == TOP else entry_label(entry)
        if not (self.force or (self.replace_link and entry == TOP and stat.S_ISLNK(st.st_mode))):
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

    def _source(self, held: Held, want_dir: bool) -> tuple[int | None, os.stat_result | None]:
        """The source, open, and its stat. A symlink on the way to it (the source itself
        included) is followed only under the safe-path rule (safefs.open_trusted): one that
        another user controls is refused, so they cannot make us copy what only we may read.

        The check and the copy both use this one descriptor: what was compared is what is
        copied. Below a source directory nothing is followed (see _plan_tree).
        """
        if self.source is None:
            return None, None
        try:
            fd = safefs.open_trusted(self.source)
        except FileNotFoundError:
            raise ResourceError(f"source {self.source} does not exist") from None
        except safefs.UnsafePathError as err:
            raise ResourceError(f"source {self.source}: {err}") from None
        held.callback(os.close, fd)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) != want_dir or not (want_dir or stat.S_ISREG(st.st_mode)):
            want = "directory" if want_dir else "file"
            raise ResourceError(f"source {self.source} is a {kind_of(st)}, expected a {want}")
        return fd, st

    def _ids(self) -> tuple[int, int]:
        """The wanted uid and gid; -1 where unmanaged."""
        if self.owner is None and self.group is None:
            return -1, -1
        from resources._lib.ids import resolve_gid, resolve_uid

        return self._id(resolve_uid, "owner"), self._id(resolve_gid, "group")

    def _id(self, resolve: Callable[[str, str], int], key: str) -> int:
        """The id of `owner` or `group` (-1: unmanaged). One that does not exist fails the
        check, except under --noop: a user or group resource before this one (the automatic
        edge orders it) would make it, so it is reported (check_apply) and left out."""
        from resources._lib.ids import NoSuchAccount

        name: str | None = getattr(self, key)
        if name is None:
            return -1
        try:
            return resolve(name, key)
        except NoSuchAccount:
            not_yet: list[str] | None = getattr(self, "_not_yet", None)
            if not_yet is None:
                raise
            not_yet.append(f"{'user' if key == 'owner' else 'group'} {name}")
            return -1

    def _want_mode(
        self,
        cur: os.stat_result | None,
        src: os.stat_result | None,
        is_dir: bool,
        ids: tuple[int, int],
        new_gid: int | None = None,
    ) -> int:
        """The permission bits path must end with: `mode`, else the source's, else kept. The
        set-ID bits of the source, or of the current inode, are kept only for the same owner
        (setid_kept): unless `mode` sets them, root never gets a user's set-ID file."""
        # (asked only where a set-ID bit may be kept: a new file's check makes no geteuid and
        # getegid calls)
        want = None if src is None and cur is None else owner_after(*ids, cur, new_gid)
        src_bits = None
        if src is not None:
            assert want is not None
            src_bits = setid_kept(stat.S_IMODE(src.st_mode), (src.st_uid, src.st_gid), want)
        if cur is not None:
            assert want is not None
            start = setid_kept(stat.S_IMODE(cur.st_mode), (cur.st_uid, cur.st_gid), want)
        elif src_bits is not None:
            start = src_bits
        else:
            start = DIR_BASE if is_dir else FILE_BASE
        if self.mode is not None:
            from resources.file.modes import mode_after

            return mode_after(self.mode, start, is_dir)
        return src_bits if src_bits is not None else start


# A first write in an I/O thread (FileRes._fill_in): how its failure and its line say it
# (formatted with the path), and whether the name is new (else an existing file is replaced).
CREATE = ("create {path}", "created {path}", True)
UPDATE = ("update the content of {path}", "content updated", False)
UPDATED: Literal["updated"] = "updated"  # _create_in_thread replaced the file's content

_writing = [0]  # writes of file resources in flight in I/O threads (FileRes._creates_in_thread)


def _aside_here() -> bool:
    """Whether this runs in a check's own thread (resources/file/aside.py, imported once a
    path on a file system that can stop answering was checked): the agent loop's watcher is
    not touched from there (its hub's drain reports to the engine, its re-sync watches)."""
    module = sys.modules.get(_ASIDE)
    return module is not None and bool(module.here())


_ASIDE = "resources.file.aside"


async def _writing_in_thread(write: functools.partial[None]) -> None:
    if _aside_here():  # (in_thread runs it here) not one of the loop's writes in flight
        await in_thread(write)
        return
    _writing[0] += 1
    try:
        await in_thread(write)
    finally:
        _writing[0] -= 1
    await _written()


RELEASE_EACH = 32  # old inodes a thread lets go at once (_written)


async def _written() -> None:
    """After a write: once none is in flight any more, let go of the old inodes the writes
    replaced (safefs._kept), in the I/O threads side by side (each close frees an inode and
    waits for its discard: one thread took ~1 ms a file). Not on a cancel: they are let go
    at the next write's end, or at the exit."""
    if _writing[0] or not safefs.kept():
        return
    chunks = safefs.take_kept(RELEASE_EACH)
    await asyncio.gather(*(in_thread(functools.partial(safefs.close_all, c)) for c in chunks))


def _link_spare(where: Where, fd: int, new: bool) -> None:
    """Put the spare fd in place (`new`: the path was absent), and close it before its inode
    is watched: it was written through fd, so its close would be a change to check again (a
    second check per repair).

    No inode is freed here: the one the rename replaces (an overwritten file) is held across
    it, and so is the spare's own before fd's close when it was deleted again at once (fd its
    last reference); both are let go through the loop's ring (resources/_lib/spare.py,
    let_go). Freeing one waited for its blocks' discard and writeback: the rename over an
    overwritten file took 0.3-0.4 ms p50 and up to 24 ms beside two busy loops, the loop
    blocked (docs/benchmarks.md, "A repair's waits")."""
    from resources._lib.spare import let_go  # (a spare's: imported already)

    old = None if new else where.hold(TOP)
    held = None
    try:
        where.link(TOP, fd, new=new)
    finally:
        with contextlib.suppress(OSError):
            if not os.fstat(fd).st_nlink:  # deleted again already (a back-to-back drift)
                held = os.open(f"/proc/self/fd/{fd}", os.O_PATH | os.O_CLOEXEC)
        try:
            os.close(fd)  # (a failed close frees fd too: the held ones are let go anyway)
        finally:
            for one in (old, held):
                if one is not None:
                    let_go(one)


# owners --------------------------------------------------------------------------------------


def _validate_id(value: str | None, key: str) -> None:
    if value is None:
        return
    from resources._lib.ids import MAX_ID, check_name, id_number

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
