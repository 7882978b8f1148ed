"""line: real files, edited, watched with inotify, repaired (mgmt's line0 cases)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ValidationError
from resources.line import LineRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]


async def test_add_keep_and_repair(run_resource: Start, tmp_path: Path) -> None:
    path = tmp_path / "lines"
    res = LineRes(name="add", file=str(path), state="exists", content="hello")
    running = await run_resource(res)
    assert await res.check_apply(False) is False  # noop: nothing written
    assert not path.exists()
    assert await res.check_apply(True) is False
    assert path.read_text() == "hello\n"
    assert os.stat(path).st_mode & 0o777 == 0o600  # a new file is 0600, as mgmt's
    assert await res.check_apply(True) is True
    # Drift: an edit by hand is an event; the line comes back at the end, the rest is kept.
    path.write_text("other")
    os.chmod(path, 0o640)
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert path.read_text() == "other\nhello\n"  # the file had no final newline
    assert os.stat(path).st_mode & 0o777 == 0o640  # the mode is kept


async def test_a_block_of_lines(run_resource: Start, tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_text("a\nhello\nb\nworld\n")
    res = LineRes(name="multiple", file=str(path), state="exists", content="hello\nworld\n")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False  # not consecutive: appended
    assert path.read_text() == "a\nhello\nb\nworld\nhello\nworld\n"
    assert await res.check_apply(True) is True
    gone = LineRes(name="gone", file=str(path), state="absent", content="hello\nworld")
    await run_resource(gone, watch=False)
    assert await gone.check_apply(True) is False
    assert path.read_text() == "a\nhello\nb\nworld\n"
    assert await gone.check_apply(True) is True


async def test_no_final_newline(run_resource: Start, tmp_path: Path) -> None:
    # mgmt's "nonl": a file without a final newline already holds the line.
    nonl = tmp_path / "nonl"
    nonl.write_text("hello")
    res = LineRes(name="nonl", file=str(nonl), state="exists", content="hello")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is True
    assert nonl.read_text() == "hello"
    # mgmt's "rmnl": removing a line keeps the file's lack of a final newline.
    rmnl = tmp_path / "rmnl"
    rmnl.write_text("hello\nworld\nhello\nx")
    res = LineRes(name="rmnl", file=str(rmnl), state="absent", content="hello")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False
    assert rmnl.read_text() == "world\nx"
    # Absent from a missing file, and empty content: nothing to do, nothing made.
    missing = tmp_path / "missing"
    for params in ({"state": "absent", "content": "x"}, {"state": "exists", "content": ""}):
        noop = LineRes(name=str(params), file=str(missing), **params)  # type: ignore[arg-type]
        await run_resource(noop, watch=False)
        assert await noop.check_apply(True) is True
    assert not missing.exists()


async def test_bytes_that_are_not_utf8_are_kept(run_resource: Start, tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"\xff\xfe\r\nkeep\n")
    res = LineRes(name="add", file=str(path), state="exists", content="new")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False
    assert path.read_bytes() == b"\xff\xfe\r\nkeep\nnew\n"


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"file": "lines", "state": "exists"}, "file"),
        ({"file": "/tmp/dir/", "state": "exists"}, "file"),
        ({"file": "/tmp/x", "state": "exists", "content": "a\0b"}, "content"),
    ],
)
def test_validation_names_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        LineRes(name="l", **params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


async def test_two_lines_of_one_file_keep_each_others_edits(
    run_resource: Start, tmp_path: Path
) -> None:
    """Two resources of one file, applied at once (as an engine does): neither loses the
    other's edit (they hold the file's lock, proc.file_lock, from read to write)."""
    path = tmp_path / "lines"
    add = LineRes(name="l1", file=str(path), state="exists", content="managed line\n")
    drop = LineRes(name="l2", file=str(path), state="absent", content="b\n")
    await run_resource(add)
    await run_resource(drop)
    for _ in range(30):  # unserialised, about half of the rounds lost an edit
        path.write_text("a\nb\n")
        assert await asyncio.gather(add.check_apply(True), drop.check_apply(True)) == [
            False,
            False,
        ]
        assert path.read_text() == "a\nmanaged line\n"
