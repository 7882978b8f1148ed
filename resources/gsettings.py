"""gsettings: one GSettings key (dconf...), through the `gsettings` tool (mgmt's gsettings).

The schema and key are the params, or the name "schema key" (one space). The value is typed
by `type`: bool, int, str, or custom (GVariant text, given as `gsettings get` prints it).
`gsettings get` observes, `gsettings set` changes, and `gsettings monitor` is the watch (a
process owned by the watch; one line per change). With `user`, the tools run as that user with
its session bus (/run/user/<uid>/bus), as in mgmt; without it they run with the agent's own
environment (GSETTINGS_BACKEND, DBUS_SESSION_BUS_ADDRESS...). See docs/resources/gsettings.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import Resource, register
from resources._lib.ids import (
    await_account,
    id_number,
    lookup_uid,
    lookup_user,
    passwd,
    resolve_gid,
    user_env,
)
from resources._lib.plan import Step, apply_steps, nothing_to_do, value_change
from resources._lib.proc import run_command, stop_group, tool_lock

TIMEOUT = 30
# How GLib logs a warning or a critical error on stderr: "(process:7381): dconf-WARNING **: ...".
GLIB_ALARM = re.compile(r"^\(\S+:\d+\): [\w-]*-(?:WARNING|CRITICAL) \*\*: (?:[\d:.]+: )?")
_ESCAPES = {"\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_ESCAPES |= {"\t": "\\t", "\v": "\\v"}


def gvariant_str(text: str) -> str:
    """A string as GVariant text (how `gsettings get` prints it): single quotes, or double
    quotes when it holds a single quote and no double one."""
    quote = '"' if "'" in text and '"' not in text else "'"
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return quote + "".join(out) + quote


def lookup_user_or_uid(user: str) -> object | None:
    number = id_number(user)
    return lookup_uid(number) if number is not None else lookup_user(user)


@register("gsettings")
@dataclass(kw_only=True, eq=False)
class GsettingsRes(Resource):
    # The schema (or schema:path for a relocatable one). Default None: from the name.
    schema: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The key. Default None: from the name ("schema key").
    key: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # How `value` is written: "bool", "int", "str", or "custom" (GVariant text). Required.
    type: Literal["bool", "int", "str", "custom"]
    # The value, of the kind `type` says. Required.
    value: bool | int | str | None = None
    # Run the tools as this user (name or uid), with its session bus. Default: the agent's.
    user: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Run the tools with this group (name or gid). Default: the user's.
    group: str | None = field(default=None, metadata=EMPTY_IS_UNSET)

    def _target(self) -> tuple[str, str]:
        schema, key = self.schema, self.key
        parts = self.name.split(" ")
        if schema is None and key is None and len(parts) == 2:
            schema, key = parts
        return schema or "", key or ""

    def _text(self) -> str:
        """The value as GVariant text, or ValueError."""
        value = self.value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError("expected true or false for type bool")
            return "true" if value else "false"
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("expected an integer for type int")
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected a string for type {self.type}, got {type(value).__name__}")
        return gvariant_str(value) if self.type == "str" else value.strip()

    def validate(self) -> None:
        super().validate()
        schema, key = self._target()
        if not schema or not key:
            where = "schema" if not schema else "key"
            raise ValidationError(
                "set schema and key, or name the resource 'schema key' (one space)",
                where if (self.schema, self.key) != (None, None) else "name",
            )
        for what, text in (("schema", schema), ("key", key)):
            if text.startswith("-") or any(c.isspace() or c == "\0" for c in text):
                raise ValidationError(f"expected no spaces and no leading '-', got {text!r}", what)
        try:
            self._text()
        except ValueError as err:
            raise ValidationError(str(err), "value") from None

    async def watch(self) -> None:
        if (user := self.user) is not None and lookup_user_or_uid(user) is None:
            await await_account(self.handle, lambda: lookup_user_or_uid(user))
        schema, key = self._target()
        argv = [self._tool(), "monitor", schema, key]
        proc = await asyncio.create_subprocess_exec(
            *self._as_user(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env() or dict(os.environ),
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            await self.handle.event()
            while await proc.stdout.readline():
                await self.handle.event()
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            raise ResourceError(f"gsettings monitor {schema} {key} ended: {err or 'no output'}")
        finally:
            await stop_group(proc)

    async def check_apply(self, apply: bool) -> bool:
        schema, key = self._target()
        wanted = self._text()
        _code, out, _err = await run_command(
            self._as_user([self._tool(), "get", schema, key]),
            timeout=TIMEOUT,
            env=self._env(),
            inherit=self.user is None,
            label=f"gsettings get {schema} {key}",
        )
        have = out.strip()
        # The key, unless the resource's name is it (every line already starts with the name).
        target = "" if self.name == f"{schema} {key}" else f"{schema} {key} "
        if have == wanted:
            return nothing_to_do(self.handle, f"{target or 'the value '}is the wanted one")
        setter = self._as_user([self._tool(), "set", schema, key, wanted])
        # One `gsettings set` at a time per user: with a file backend (GLib's keyfile) each
        # one reads the whole file, changes its key and writes it all back, so two at once
        # lose one's change (dconf's service queues them anyway).
        lock = tool_lock(self.handle.shared, f"gsettings:{self.user or ''}")
        run = _runner(setter, self._env(), f"gsettings set {schema} {key}", lock, self._no_bus)
        # Not the value, old or new (a proxy's password: docs/security.md, "Secrets").
        would, done = value_change(target.strip() or "the value", True)
        step = Step(would, done, run)
        await apply_steps(self.handle, [step], apply)
        return False

    @staticmethod
    def _tool() -> str:
        tool = shutil.which("gsettings")
        if tool is None:
            raise ResourceError("the gsettings tool is not installed (Debian: libglib2.0-bin)")
        return tool

    def _as_user(self, argv: list[str]) -> list[str]:
        """argv, run as `user`/`group` through setpriv(1) when they are set."""
        if self.user is None and self.group is None:
            return argv
        prefix = ["setpriv"]
        if self.user is not None:
            entry = passwd(self.user, "user")
            prefix += [f"--reuid={entry.pw_uid}", "--init-groups"]
            gid = entry.pw_gid
        else:
            prefix.append("--clear-groups")
            gid = os.getegid()
        if self.group is not None:
            gid = resolve_gid(self.group, "group")
        return [*prefix, f"--regid={gid}", "--", *argv]

    def _env(self) -> dict[str, str]:
        """With `user`, the whole environment of the tools: a fresh one (`user_env`, not the
        agent's) with the user's session bus (mgmt's); without it {} (the agent's own)."""
        if self.user is None:
            return {}
        entry = passwd(self.user, "user")
        run = f"/run/user/{entry.pw_uid}"
        return {
            **user_env(entry),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run}/bus",
            "XDG_RUNTIME_DIR": run,
        }

    def _no_bus(self) -> str:
        """Why `user`'s settings cannot be saved, if its session bus is missing ("" if not)."""
        if self.user is None:
            return ""
        entry = passwd(self.user, "user")
        bus = f"/run/user/{entry.pw_uid}/bus"
        if os.path.exists(bus):
            return ""
        return f" ({entry.pw_name} has no session bus {bus}: is the user logged in?)"


def _runner(
    argv: list[str],
    env: dict[str, str],
    label: str,
    lock: asyncio.Lock,
    why: Callable[[], str],
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with lock:
            _code, _out, err = await run_command(
                argv, timeout=TIMEOUT, env=env, inherit=not env, label=label
            )
        # gsettings exits 0 when its backend cannot save (dconf without a session bus logs
        # "failed to commit changes to dconf" and keeps nothing): GLib's warnings say so.
        problems = [GLIB_ALARM.sub("", line) for line in err.splitlines() if GLIB_ALARM.match(line)]
        if problems:
            raise ResourceError(f"{label} saved nothing{why()}: {problems[-1].strip()}")

    return run
