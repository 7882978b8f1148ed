"""Log setup: one line per event, `HH:MM:SS engine: file[hello]: content updated`, or JSON."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, kind, name, message."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        kind = getattr(record, "res_kind", None)
        message = record.getMessage()
        if kind is not None:
            data["kind"] = kind
            data["name"] = getattr(record, "res_name", "")
            message = message.removeprefix(f"{kind}[{data['name']}]: ")
        data["message"] = message
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data)


def setup(fmt: str = "text", verbose: bool = False) -> None:
    """Configure the root logger to write to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
