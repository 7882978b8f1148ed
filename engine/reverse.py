"""Where reversal data lives: one JSON file per resource under `<prefix>/reverse/<kind>/`.

Each record holds the resource's kind, name and params (so that it can be rebuilt after an
agent restart) and the data its `reversal()` returned before its first change. It may hold a
file's previous contents: the directories are 0700 and the records 0600 (looser ones are
tightened). A record's file name is the quoted resource name, or `#<sha256>.json` when that
would be too long for the file system; `prepare()` makes sure, before the resource changes
anything, that the record can be written.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

from engine import safefs
from engine.errors import ResourceError
from engine.graph import Key

log = logging.getLogger("engine")

PATH_MAX = 4096  # longest path Linux takes, terminating NUL included


class ReverseStore:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.root = prefix / "reverse"

    def _path(self, key: Key) -> Path:
        kind, name = key
        return self.root / kind / safefs.fit_name(urllib.parse.quote(name, safe=""), ".json")

    def prepare(self, key: Key) -> Path:
        """The record's path, its private directory made: called before anything is applied."""
        path = self._path(key)
        if len(os.fsencode(path)) >= PATH_MAX:
            raise ResourceError(f"reversal record path too long ({path}): use a shorter prefix")
        safefs.private_dir(path.parent, root=self.prefix)
        return path

    def has(self, key: Key) -> bool:
        return self._path(key).exists()

    def save(self, key: Key, params: dict[str, Any], data: Any) -> None:
        """Write the record atomically (new inode + fsync + rename), mode 0600."""
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        record = {"kind": key[0], "name": key[1], "params": params, "data": data}
        safefs.write_file(str(self.prepare(key)), json.dumps(record).encode(), 0o600)

    def load(self, key: Key) -> dict[str, Any]:
        import json  # here: a cron run needs no json (~5 M instructions of its start)

        return json.loads(self._path(key).read_text())  # type: ignore[no-any-return]

    def delete(self, key: Key) -> None:
        self._path(key).unlink(missing_ok=True)

    def stored(self) -> list[Key]:
        """Every resource with a stored reversal (the directories made private on the way)."""

        if not self.root.is_dir():
            return []
        found = []
        for kind_dir in self.root.iterdir():
            if not kind_dir.is_dir():
                continue
            try:
                safefs.private_dir(kind_dir, root=self.prefix)
            except (OSError, ResourceError) as err:
                log.error("reversal records in %s are not used: %s", kind_dir, err)
                continue
            for path in kind_dir.glob("*.json"):
                if path.name.startswith("#"):  # a hashed name: the record knows the real one
                    import json  # here: a cron run needs no json (~5 M instructions of its start)

                    name = json.loads(path.read_text())["name"]
                else:
                    name = urllib.parse.unquote(path.stem)
                found.append((kind_dir.name, name))
        return found
