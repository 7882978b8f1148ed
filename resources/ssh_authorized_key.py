"""ssh:authorized_key: one key line of an authorized_keys file (mgmt's `ssh:authorized_key`).

The line is given whole (`content`, or else the resource's name) or in parts (`options`,
`type`, `key`, `comment`); either way it is parsed and checked: a known key type, a key that
is base64 of an SSH public key blob of that type, options without newlines and with balanced
quotes. The line is then kept in (or removed from) the file as the `line` kind does
(resources/_lib/lines.py: atomic, durable, inotify-watched; a new file is 0600).
"""

from __future__ import annotations

import base64
import binascii
import os
import pwd
import re
import struct
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.resource import Resource, register
from resources._lib.lines import edit, watch_file

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
class SshAuthorizedKeyRes(Resource):
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
        path = self.path()
        if not os.path.isabs(path) or path.endswith("/"):
            raise ValidationError(f"expected an absolute file path, got {path!r}", "file")

    async def watch(self) -> None:
        await watch_file(self.handle, self.path())

    async def check_apply(self, apply: bool) -> bool:
        try:
            line, path = self.line(), self.path()
        except ValidationError as err:  # a user gone since the check
            raise ResourceError(str(err)) from None
        return await edit(self.handle, path, self.state, line, apply)

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
        if self.user:
            try:
                home = pwd.getpwnam(self.user).pw_dir
            except KeyError:
                raise ValidationError(f"no such user: {self.user!r}", "user") from None
            return os.path.join(home, ".ssh", "authorized_keys")
        path = os.path.expanduser(self.file or "~/.ssh/authorized_keys")
        if path.startswith("~"):
            raise ValidationError(f"cannot expand {path!r}", "file")
        return path


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
