"""ssh:authorized_key: one key line of an authorized_keys file (mgmt's `ssh:authorized_key`).

The line is given whole (`content`, or else the resource's name) or in parts (`options`,
`type`, `key`, `comment`); either way it is parsed and checked: a known key type, a key that
is base64 of an SSH public key blob of that type, options without newlines and with balanced
quotes. Every line of the file that holds this key (its blob, whatever the line's options and
comment) is the resource's: with "exists" the first becomes the wanted line and the others go
(a line whose restricting options were edited away is repaired; sshd would use the first one
that matches); with "absent" every one goes, so a key is revoked. The file is read and
rewritten as the `line` kind does (resources/_lib/lines.py: atomic, durable, inotify-watched,
under the shared file lock). With `user`, the user is looked up when the resource runs (it may
be made by the same graph), and the file and its ~/.ssh are the user's, as sshd's StrictModes
needs: ~/.ssh is made 0700 if missing, the file is owned by the user and never group or other
writable. A new file elsewhere takes the owner of its directory (0600).
"""

from __future__ import annotations

import base64
import binascii
import os
import pwd
import re
import stat
import struct
from dataclasses import dataclass, field
from typing import Literal

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.resource import UID, Edgeable, Resource, register
from resources._lib import tablefile
from resources._lib.ids import await_account, lookup_user
from resources._lib.lines import rejoin, split_lines, watch_file, write_step
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.proc import file_lock
from resources._lib.rewrites import wrote
from resources._lib.stamp import file_needs

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_TOKEN = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^\s"])+')  # a field; quoted strings may hold spaces
_USER = re.compile(r"[a-z_][a-z0-9_.-]*\$?", re.IGNORECASE)


@register("ssh:authorized_key")
@dataclass(kw_only=True, eq=False)
class SshAuthorizedKeyRes(Edgeable, Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # "exists": the line is in the file; "absent": it is not. Required.
    state: Literal["exists", "absent"]
    # The authorized_keys file (absolute, or ~/..., ~user/...). Default ~/.ssh/authorized_keys
    # of the user the agent runs as. Not with `user`.
    file: str = ""
    # Whose ~user/.ssh/authorized_keys. Not with `file`.
    user: str = ""
    # The whole line. Not with options, type, key or comment. Default: the resource's name
    # (when type and key are not given).
    content: str = ""
    # The line's options ("no-pty", 'command="..."'), joined with ",".
    options: list[str] = field(default_factory=list)
    # The key's type ("ssh-ed25519"...); with `key`.
    type: str = ""
    # The base64 public key; with `type`.
    key: str = ""
    # The comment at the end of the line.
    comment: str = ""

    def validate(self) -> None:
        super().validate()
        if self.file and self.user:
            raise ValidationError("cannot be given with 'user'", "file")
        if self.user and not _USER.fullmatch(self.user):
            raise ValidationError(f"expected a user name, got {self.user!r}", "user")
        if self.content:
            for key in ("options", "type", "key", "comment"):
                if getattr(self, key):
                    raise ValidationError("cannot be given with 'content'", key)
        if bool(self.type) != bool(self.key):
            raise ValidationError("type and key go together", "key" if self.type else "type")
        self.line()
        if not self.user:
            path = self.path()
            if not os.path.isabs(path) or path.endswith("/"):
                raise ValidationError(f"expected an absolute file path, got {path!r}", "file")

    EDITS_FILES = True

    def edited_files(self) -> list[str]:
        """The file given by `file` (a user's own is looked up at run time: not known here)."""
        return [os.path.normpath(self.path())] if self.file and not self.user else []

    def holds_edit(self, text: str) -> bool:
        lines = split_lines(text)
        return self._edited(lines, self.line())[0] == lines

    def _edited(self, lines: list[str], line: str) -> tuple[list[str], list[int]]:
        """The lines with this resource's edit made (`line`: its checked line), and the
        indices of the old lines with its key."""
        blob = _blob(line)
        assert blob is not None  # a checked line
        key = base64.b64encode(blob).decode()

        def holds(old: str) -> bool:  # the text first: parsing each line costs ~30x more
            return key in old and _blob(old) == blob

        mine = [i for i, old in enumerate(lines) if holds(old)]
        wanted = line if self.state == "exists" else None
        return tablefile.replace(lines, holds, wanted), mine

    def uids(self) -> list[UID]:
        """The key in its file: two resources of one key in one file are refused at load, each
        named with its line (they would undo each other: add/remove, other options)."""
        where = f"~{self.user}" if self.user else os.path.normpath(self.path())
        blob = _blob(self.line())
        assert blob is not None  # a checked line
        return [UID("ssh:authorized_key", f"{where} {base64.b64encode(blob).decode()}")]

    def autoedges(self) -> list[list[UID]]:
        """The user (made first when the graph makes it), and the nearest managed directory
        above the file (a file resource for ~/.ssh/), when the path is known at load."""
        if self.user:
            entry = lookup_user(self.user)
            wants = file_needs(self._file(entry.pw_dir), []) if entry is not None else []
            return [[UID("user", self.user)], *wants]
        return file_needs(self.path(), [])

    async def watch(self) -> None:
        if self.user:  # the home is known once the user exists (a graph may make both)
            entry = await in_thread(lambda: lookup_user(self.user))
            if entry is None:
                entry = await await_account(self.handle, lambda: lookup_user(self.user))
            path = self._file(entry.pw_dir)
        else:
            path = self.path()
        await watch_file(self.handle, path)

    async def check_apply(self, apply: bool) -> bool:
        line = self.line()
        owner: tuple[int, int] | None = None
        if self.user:
            entry = await in_thread(lambda: lookup_user(self.user))
            if entry is None:
                if not apply:  # --noop: the user may be made by an earlier resource
                    return await self._would(f"add the key once user {self.user} exists")
                raise ResourceError(f"user: no such user: {self.user!r}")
            path, owner = self._file(entry.pw_dir), (entry.pw_uid, entry.pw_gid)
            if self.state == "absent":  # nothing to make: no ~/.ssh, no key
                if not await in_thread(lambda: os.path.lexists(os.path.dirname(path))):
                    return nothing_to_do(self.handle, f"{os.path.dirname(path)} does not exist")
            elif not await self._ssh_dir(entry, apply):
                return False
        else:
            path = self.path()
        async with file_lock(self.handle.shared, path):  # other resources of this file wait
            return await self._edit(path, line, owner, apply)

    async def _edit(self, path: str, line: str, owner: tuple[int, int] | None, apply: bool) -> bool:
        text = await in_thread(lambda: tablefile.read_text(path, errors="surrogateescape"))
        lines = split_lines(text or "")
        new, mine = self._edited(lines, line)
        steps: list[Step] = []
        if new != lines:
            if owner is None and text is None and os.geteuid() == 0:  # a new file: as its dir
                owner = await in_thread(lambda: _dir_owner(path))
            steps.append(self._rewrite(path, text, new, mine, owner))
        elif text is not None and owner is not None:
            steps += await in_thread(lambda: _owner_steps(path, owner))
        if not steps:
            what = "the line" if self.state == "exists" else "no line with the key"
            return nothing_to_do(self.handle, f"{path} has {what}")
        await apply_steps(self.handle, steps, apply, errors=(OSError,))
        if apply:
            wrote(self.handle, path)
        return False

    def _rewrite(
        self,
        path: str,
        text: str | None,
        new: list[str],
        mine: list[int],
        owner: tuple[int, int] | None,
    ) -> Step:
        lines = f"{len(mine)} line{'s' if len(mine) > 1 else ''} with the key"
        if self.state == "absent":
            what, verbs = f"{lines} from {path}", ("remove", "removed")
        elif not mine:
            what, verbs = f"a line in {path}", ("add", "added")
        else:
            what, verbs = f"{lines} in {path} with the wanted line", ("replace", "replaced")
        data = rejoin(new, text)
        return write_step(
            path,
            data,
            text is None,
            f"{verbs[0]} {what}",
            f"{verbs[1]} {what}",
            owner=owner,
        )

    async def _ssh_dir(self, entry: pwd.struct_passwd, apply: bool) -> bool:
        """~user/.ssh as sshd's StrictModes needs it: made 0700 (the user's) when missing; one
        that others control is refused. False when it is missing under --noop."""
        home = entry.pw_dir

        def check() -> str | None:
            with safefs.closing(safefs.open_dir(home)) as home_fd:
                top = os.fstat(home_fd)
                if top.st_uid not in (0, entry.pw_uid) or top.st_mode & 0o022:
                    self.handle.logger.warning(
                        "sshd (StrictModes) will ignore the key: the home %s is owned by uid %d, "
                        "mode %04o (wanted: the user's or root's, not group or other writable)",
                        home, top.st_uid, stat.S_IMODE(top.st_mode),
                    )  # fmt: skip
                st = safefs.lstat_at(home_fd, ".ssh")
                if st is None:
                    if apply:
                        safefs.make_dir(home_fd, ".ssh", 0o700, entry.pw_uid, entry.pw_gid)
                    return "missing"
            if not stat.S_ISDIR(st.st_mode):
                raise ResourceError(f"{home}/.ssh is not a directory")
            if st.st_uid not in (0, entry.pw_uid) or st.st_mode & 0o022:
                raise ResourceError(
                    f"sshd (StrictModes) would ignore the key: {home}/.ssh is owned by uid "
                    f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o} (wanted: the user's, 0700)"
                )
            return None

        try:
            missing = await in_thread(check)
        except FileNotFoundError:
            raise ResourceError(f"the home of {self.user}, {home}, does not exist") from None
        if missing is None:
            return True
        done = f"directory {home}/.ssh (0700, {self.user}'s)"
        if not apply:
            return await self._would(f"create {done}, then add the key")
        self.handle.logger.info("created %s", done)
        return True

    async def _would(self, what: str) -> bool:
        """Under --noop: report `what` as a change to come (a Step), and not converged."""
        await apply_steps(self.handle, [Step(what, "", None)], False)
        return False

    def _file(self, home: str) -> str:
        return os.path.join(home, ".ssh", "authorized_keys")

    def line(self) -> str:
        """The line to keep, checked and normalized (single spaces between fields)."""
        if self.type:
            options = ",".join(self.options)
            if options:
                _check_options(options, "options")
            if set("\n\r\0") & set(self.comment):
                raise ValidationError("must be one line", "comment")
            _check_key(self.type, self.key, "key")
            fields = [options, self.type, self.key, self.comment.strip()]
            return " ".join(f for f in fields if f)
        key = "content" if self.content else "name"
        return _parse(self.content or self.name, key)

    def path(self) -> str:
        """The file given by `file` (not with `user`: that one is looked up at run time)."""
        path = os.path.expanduser(self.file or "~/.ssh/authorized_keys")
        if path.startswith("~"):
            raise ValidationError(f"cannot expand {path!r}", "file")
        return path


def _blob(line: str) -> bytes | None:
    """The public key blob a line of an authorized_keys file holds (None: no key line). The
    key is the field after the type, the type the first or the second field (after options)."""
    text = line.strip()
    if text.startswith("#"):  # a comment (sshd skips it): kept as it is
        return None
    tokens = _TOKEN.findall(text[:16384])
    for i in (0, 1):
        if len(tokens) > i + 1 and tokens[i] in KEY_TYPES:
            try:
                return base64.b64decode(tokens[i + 1], validate=True)
            except (binascii.Error, ValueError):
                return None
    return None


def _dir_owner(path: str) -> tuple[int, int]:
    """The owner of the directory holding `path` (~/.ssh: the user, as sshd wants)."""
    with safefs.closing(safefs.open_dir(os.path.dirname(path))) as dir_fd:
        st = os.fstat(dir_fd)
    return (st.st_uid, st.st_gid)


def _owner_steps(path: str, owner: tuple[int, int]) -> list[Step]:
    """The step that gives an existing file `owner` and takes away group/other write, if due."""
    parent, name = os.path.split(path)
    with safefs.closing(safefs.open_dir(parent)) as dir_fd:
        st = safefs.lstat_at(dir_fd, name)
    if st is None or ((st.st_uid, st.st_gid) == owner and not st.st_mode & 0o022):
        return []
    mode = stat.S_IMODE(st.st_mode) & ~0o022
    what = f"{path} to uid {owner[0]}, gid {owner[1]}, mode {mode:04o}"

    def fix() -> None:
        with safefs.closing(safefs.open_dir(parent)) as dir_fd:
            safefs.set_attrs(
                dir_fd, name, uid=owner[0], gid=owner[1], mode=mode, expect=st, shown=path
            )

    return [Step(f"set {what}", f"set {what}", fix, slow=True)]


def _parse(text: str, where: str) -> str:
    """A whole authorized_keys line, checked and normalized."""
    line = text.strip()
    if not line or line.startswith("#") or set("\n\r\0") & set(line):
        raise ValidationError("expected one key line (not empty, not a comment)", where)
    tokens = _TOKEN.findall(line)
    if tokens and tokens[0] not in KEY_TYPES:
        _check_options(tokens[0], where)
        options, tokens = [tokens[0]], tokens[1:]
    else:
        options = []
    if len(tokens) < 2:
        raise ValidationError("expected [options] type key [comment]", where)
    _check_key(tokens[0], tokens[1], where)
    return " ".join(options + tokens[:2] + ([" ".join(tokens[2:])] if tokens[2:] else []))


def _check_options(options: str, where: str) -> None:
    if set("\n\r\0") & set(options):
        raise ValidationError("options must be one line", where)
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', "", options)
    if '"' in unquoted or re.search(r"\s", unquoted):
        raise ValidationError(f"unbalanced quotes or a space outside quotes: {options!r}", where)


def _check_key(kind: str, key: str, where: str) -> None:
    if kind not in KEY_TYPES:
        raise ValidationError(f"unknown key type {kind!r}; known: {', '.join(KEY_TYPES)}", where)
    try:
        blob = base64.b64decode(key, validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + size].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise ValidationError("the key is not base64 of an SSH public key", where) from None
    if inner != kind:
        raise ValidationError(f"the key is a {inner!r} key, not {kind!r}", where)
    if kind == "ssh-ed25519" and len(blob) != 4 + size + 4 + 32:
        raise ValidationError("an ssh-ed25519 key must hold 32 bytes", where)
