"""Log setup: one line per event, `HH:MM:SS engine: file[hello]: content updated`, or JSON.

Under systemd, when stderr is the journal (JOURNAL_STREAM names it), records go to the journal
through its native protocol instead, with structured fields: PRIORITY, MGMT_LOGGER, and for a
resource's lines MGMT_KIND and MGMT_NAME (`journalctl MGMT_KIND=file`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from typing import Any

from resources._lib import journal


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


# logging's levels as syslog's priorities (the journal's PRIORITY field).
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


class JournalHandler(logging.Handler):
    """Each record as one journal entry with structured fields (see the module docstring)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {
                "MESSAGE": message,
                "PRIORITY": str(PRIORITIES.get(record.levelno, 7)),
                "SYSLOG_IDENTIFIER": "mgmt",
                "MGMT_LOGGER": record.name,
            }
            kind = getattr(record, "res_kind", None)
            if kind is not None:
                fields["MGMT_KIND"] = str(kind)
                fields["MGMT_NAME"] = str(getattr(record, "res_name", ""))
            data = journal.encode(fields)[: journal.MAX_DATAGRAM]
            self.sock.sendto(data, self.path)
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        super().close()


def journal_stream() -> bool:
    """Whether stderr is the journal stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"


def setup(fmt: str = "text", verbose: bool = False) -> None:
    """Configure the root logger: the journal under systemd, otherwise stderr."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if journal_stream() and os.path.exists(journal.socket_path()):
        handler = JournalHandler(journal.socket_path())
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
