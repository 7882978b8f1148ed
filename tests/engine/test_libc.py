"""engine/libc.py: the event loop's quick calls, on the real kernel."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from engine import libc


def test_file_id_is_that_of_fstat(tmp_path: Path) -> None:
    """file_id names a file as fstat does (device and inode): the same for two descriptors
    of one directory, another for another."""
    (tmp_path / "d").mkdir()
    one = os.open(tmp_path, os.O_PATH)
    two = os.open(tmp_path, os.O_RDONLY)
    other = os.open(tmp_path / "d", os.O_PATH)
    try:
        st = os.fstat(one)
        assert libc.file_id(one) == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        assert libc.file_id(two) == libc.file_id(one) != libc.file_id(other)
    finally:
        for fd in (one, two, other):
            os.close(fd)


def test_read_reports_errno(tmp_path: Path) -> None:
    """read() of a non-blocking descriptor with nothing to read: -1 and EAGAIN, no wait."""
    reader, writer = os.pipe2(os.O_NONBLOCK)
    buffer = ctypes.create_string_buffer(16)
    try:
        assert libc.read(reader, buffer, 16) == -1
        assert ctypes.get_errno() == errno.EAGAIN
        os.write(writer, b"abc")
        assert libc.read(reader, buffer, 16) == 3
        assert buffer.raw[:3] == b"abc"
    finally:
        os.close(reader)
        os.close(writer)
