"""Local values: what resources and the language share on this host (mgmt's `Local` API).

mgmt's `value` resource stores its value under its name here, and the language's
`value.get_str(name)` (and friends) read and watch it: a cheap channel from the resource graph
back into the program that stays on one host (the World is the cluster's). Values are plain JSON
data, kept in memory and written to `<prefix>/local/value/<name>.json` (private, 0600), so that a
restarted agent starts with the last value instead of nothing (mgmt's cold-cache warming; a
file is read once, on the first `get` of its key).

`pool(namespace, uid)` and `vardir(dir)` (mgmt's `local.pool` and `local.vardir`) keep their
files under `<prefix>/local/pool/` and `<prefix>/local/vardir/`.

`get(key)` (None: no value), `set(key, value)` (None deletes; returns whether it changed) and
`subscribe(key, signal)`, which calls `signal()` after every change of the key and returns the
unsubscribe callable. Reads and writes touch small files: callers on the event loop go through
`asyncio.to_thread` for `set` and for a first `get`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import ResourceError, ValidationError
from engine.safefs import fit_name, private_dir, write_file

log = logging.getLogger("engine")


def plain(value: Any) -> Any:
    """`value` as JSON data: tuples become lists, mappings dicts (the language's frozen values)."""
    import json  # here: a cron run needs no json (~5 M instructions of its start)

    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, tuple | frozenset | set):
        return list(value)
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"not plain data: {type(value).__name__}")


class LocalValues:
    """The host's local values (see the module doc). Thread-safe: a lock guards the maps."""

    def __init__(self, prefix: Path, readonly: bool = False) -> None:
        self.prefix = prefix
        # Nothing is written (`mgmt check`: a fresh host's reads; local.pool and local.vardir,
        # which write, fail).
        self.readonly = readonly
        self._prefix = prefix
        self._dir = prefix / "local" / "value"
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._loaded: set[str] = set()  # keys whose file was read (or written) already
        self._watchers: dict[str, list[Callable[[], None]]] = {}

    def _path(self, key: str) -> Path:
        return self._dir / fit_name(key, ".json")

    def get(self, key: str) -> Any:
        """The value under `key`, or None (blocking on the first read of a key)."""
        with self._lock:
            if key not in self._loaded:
                self._loaded.add(key)
                stored = self._read(key)
                if stored is not None:
                    self._values[key] = stored
            return self._values.get(key)

    def set(self, key: str, value: Any) -> bool:
        """Store `value` (None deletes it); True if that changed it. Watchers are signalled."""
        value = None if value is None else plain(value)
        with self._lock:
            if key not in self._loaded:
                self._loaded.add(key)
                stored = self._read(key)
                if stored is not None:
                    self._values[key] = stored
            if self._values.get(key) == value:
                return False
            self._write(key, value)
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = value
            signals = list(self._watchers.get(key, ()))
        for signal in signals:
            signal()
        return True

    def subscribe(self, key: str, signal: Callable[[], None]) -> Callable[[], None]:
        """Call `signal()` after each change of `key` (from the thread that made it: a caller on
        the event loop passes a thread-safe one); returns the unsubscribe callable."""
        with self._lock:
            self._watchers.setdefault(key, []).append(signal)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._watchers[key].remove(signal)

        return unsubscribe

    def _read(self, key: str) -> Any:
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        try:
            text = self._path(key).read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("local value %r: cannot read %s: %s", key, self._path(key), err)
            return None
        try:
            return json.loads(text)
        except ValueError:
            log.warning("local value %r: %s is not JSON: ignored", key, self._path(key))
            return None

    def _write(self, key: str, value: Any) -> None:
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        path = self._path(key)
        if self.readonly:
            raise ValidationError("this host's local values are read-only here", "local")
        if value is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        private_dir(self._dir, root=self._prefix)
        write_file(str(path), (json.dumps(value, sort_keys=True) + "\n").encode(), 0o600)

    # pools and vardirs (mgmt's local.pool, local.vardir) ---------------------------------

    def _private(self, *parts: str) -> Path:
        path = self._prefix.joinpath("local", *parts)
        if self.readonly:
            raise ValidationError(f"cannot use {path}: read-only here (a check)", "local")
        try:
            return private_dir(path, root=self._prefix)
        except (OSError, ResourceError) as err:
            raise ValidationError(f"cannot use {path}: {err}", "local") from err

    def pool(self, namespace: str, uid: str) -> int:
        """The number of `uid` in `namespace` (1, 2, ...): allocated once, the same after."""
        _check_name("namespace", namespace)
        _check_name("uid", uid)
        with self._lock:
            directory = self._private("pool", namespace)
            mine = directory / f"{uid}.uid"
            numbers: list[int] = []
            for entry in directory.iterdir():
                if entry.suffix != ".uid":
                    continue
                try:
                    number = int(entry.read_text().strip())
                except ValueError as err:
                    raise ValidationError(f"corrupt pool entry {entry}: {err}", "pool") from err
                if entry == mine:
                    return number
                numbers.append(number)
            number = max(numbers, default=0) + 1
            write_file(str(mine), f"{number}\n".encode(), 0o600)
            return number

    def vardir(self, relative: str) -> Path:
        """A private directory of the agent's: `relative` is relative and ends with '/'."""
        if relative.startswith("/") or not relative.endswith("/"):
            raise ValidationError(
                f"{relative!r}: expected a relative directory ending with '/'", "vardir"
            )
        if ".." in relative.split("/"):
            raise ValidationError(f"{relative!r}: '..' is not allowed", "vardir")
        return self._private("vardir", *relative.strip("/").split("/"))


def _check_name(what: str, name: str) -> None:
    if not name:
        raise ValidationError(f"{what} is empty", what)
    if "/" in name or name in (".", ".."):
        raise ValidationError(f"{what} {name!r} must not contain '/' (or be . or ..)", what)
