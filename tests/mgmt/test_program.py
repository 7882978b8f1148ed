"""mgmt.program: a local program's read, kept while its files do not change."""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine.program import Program
from mgmt.program import _local_loader


def write(path: Path, version: str, mtime_ns: int | None = None) -> None:
    path.write_text(f'print "p" {{\n\tmsg => "{version}",\n}}\n')
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def msg(program: Program | None) -> bytes:
    assert program is not None
    return bytes(program.files["main.mcl"])


def test_a_read_is_kept_once_its_files_are_settled(tmp_path: Path) -> None:
    main = tmp_path / "main.mcl"
    old = time.time_ns() - 10_000_000_000  # 10 s ago: settled
    write(main, "v1", old)
    os.utime(tmp_path, ns=(old, old))
    load = _local_loader("lang", main)
    first = load()
    assert b'"v1"' in msg(first)
    assert load() is first  # kept: not read again
    write(main, "v2", old + 1)  # any change of size or mtime is a new read
    assert b'"v2"' in msg(load())


def test_a_file_written_in_the_clock_tick_of_a_read_is_read_again(tmp_path: Path) -> None:
    """The edit of a file in the same tick of the kernel's file clock as the read before it
    (or during it) leaves its size and mtime as they were: the read must not be kept (before,
    deploy:tar kept archiving what the read saw: a half-written main.mcl, never the edit)."""
    main = tmp_path / "main.mcl"
    write(main, "v1")
    load = _local_loader("lang", main)
    assert b'"v1"' in msg(load())
    same = main.stat().st_mtime_ns
    write(main, "v2", same)  # the same size, the same mtime: as within one tick
    assert b'"v2"' in msg(load())
