"""Where reversal data lives: one JSON file per resource under `<prefix>/reverse/`.

Each record holds the resource's kind, name and params (so that it can be rebuilt after an
agent restart) and the data its `reversal()` returned before its first change.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from engine.graph import Key


class ReverseStore:
    def __init__(self, prefix: Path) -> None:
        self.root = prefix / "reverse"

    def _path(self, key: Key) -> Path:
        kind, name = key
        return self.root / kind / (urllib.parse.quote(name, safe="") + ".json")

    def has(self, key: Key) -> bool:
        return self._path(key).exists()

    def save(self, key: Key, params: dict[str, Any], data: Any) -> None:
        """Write the record atomically (temp file + fsync + rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {"kind": key[0], "name": key[1], "params": params, "data": data}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp")
        try:
            with open(fd, "w") as out:
                json.dump(record, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, key: Key) -> dict[str, Any]:
        return json.loads(self._path(key).read_text())  # type: ignore[no-any-return]

    def delete(self, key: Key) -> None:
        self._path(key).unlink(missing_ok=True)

    def stored(self) -> list[Key]:
        """Every resource with a stored reversal."""
        if not self.root.is_dir():
            return []
        found = []
        for kind_dir in self.root.iterdir():
            for path in kind_dir.glob("*.json"):
                found.append((kind_dir.name, urllib.parse.unquote(path.stem)))
        return found
