"""The systemd journal's native protocol: one datagram a record, to journald's socket.

Each field is `KEY=value\\n`, or, when the value holds a newline, `KEY\\n`, its length as a
little-endian 64-bit integer, the value and `\\n`. MGMT_JOURNAL_SOCKET overrides the socket's
path (tests, containers).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

SOCKET = "/run/systemd/journal/socket"
MAX_DATAGRAM = 200_000  # journald takes larger records only through a passed memfd


def socket_path() -> str:
    return os.environ.get("MGMT_JOURNAL_SOCKET") or SOCKET


def encode(record: Mapping[str, str]) -> bytes:
    """The datagram for `record` (field names: upper-case letters, digits, '_')."""
    return b"".join(_field(key, value) for key, value in record.items())


def _field(key: str, value: str) -> bytes:
    raw = value.encode(errors="replace")
    if b"\n" not in raw:
        return key.encode() + b"=" + raw + b"\n"
    return key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
