"""A repair racing with an `rm -rf` of its directory: the error names the managed path and what
happened, not the agent's internals (a descriptor's /proc/self/fd/N, a temp name), and says it
was cut short by another (errors.Interfered: the engine checks the resource again at once).
Real directories, removed under an open descriptor as `rm -rf` does."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, cast

import pytest

from engine.errors import ResourceError, interfered
from engine.stopgate import Later
from engine.watcher import Rename
from resources._lib.plan import describe
from resources.file import CREATE, FileRes
from resources.file.where import TOP, SharedDir, Where


def test_a_write_into_a_removed_directory_says_it_vanished(tmp_path: Path) -> None:
    managed = tmp_path / "d" / "e" / "f"
    managed.parent.mkdir(parents=True)
    with Where(str(managed)) as where:
        managed.parent.rmdir()  # rm -rf, between the check and the write
        with pytest.raises(OSError) as caught:  # the kernel's EPERM (O_TMPFILE) or ENOENT
            where.write(TOP, b"x\n", 0o644, -1, -1, new=True)
        assert where.explain(caught.value) == f"directory {managed.parent} vanished while writing"
        assert interfered(caught.value)  # before: a plain EPERM, checked again at an event only


def test_a_missing_parent_whose_directory_was_removed_names_that_directory(
    tmp_path: Path,
) -> None:
    managed = tmp_path / "d" / "e" / "f"
    (tmp_path / "d").mkdir()
    with Where(str(managed)) as where:  # e is missing: made first, in d
        (tmp_path / "d").rmdir()
        with pytest.raises(OSError) as caught:
            where.make_parent()
        assert where.explain(caught.value) == f"directory {tmp_path / 'd'} vanished while writing"
        assert interfered(caught.value)


def test_a_write_that_fails_in_a_directory_still_there_is_not_interfered(tmp_path: Path) -> None:
    """Only another's removal makes a failure count as an event: a directory in place that
    refuses the write (here a name that is a directory) fails as before."""
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x").touch()
    with Where(str(tmp_path / "f")) as where, pytest.raises(OSError) as caught:
        where.write(TOP, b"x\n", 0o644, -1, -1)
    assert not interfered(caught.value)


@pytest.mark.parametrize(
    ("err", "shown"),
    [
        (
            OSError(
                errno.ENOENT, "No such file or directory", "/proc/self/fd/14", None, ".mgmt.ab"
            ),
            "No such file or directory",
        ),
        (OSError(errno.EPERM, "Operation not permitted", "."), "Operation not permitted"),
        (OSError(errno.ENOENT, "No such file or directory", "e"), "No such file or directory"),
        (OSError(errno.EACCES, "Permission denied", "/etc/x"), "Permission denied: '/etc/x'"),
        (ValueError("bad"), "bad"),
    ],
)
def test_describe_shows_no_name_of_ours(err: BaseException, shown: str) -> None:
    assert describe(err) == shown


def _first_write(managed: Path) -> tuple[FileRes, SharedDir, Where]:
    """A first write of a group (FileRes._create_in_thread's, stopgate.Replies): the file's
    directory open once for the group, as a worker opens it."""
    res = FileRes(name="f", path=str(managed), content="x\n")
    shared = SharedDir()
    where = shared.at(str(managed))
    assert where is not None
    return res, shared, where


def _told(managed: Path) -> tuple[Rename, list[str]]:
    return Rename(cast(Any, None), str(managed)), []  # (its watcher is told only on success)


def test_a_group_s_first_write_into_a_removed_directory_is_interfered(tmp_path: Path) -> None:
    """The first writes of a group report their failure as a ResourceError: it is chained to
    the Interfered, so the engine checks the file again at once (before: a plain EPERM, left
    FAILED until the next event, which the removal's may have been already)."""
    managed = tmp_path / "d" / "f"
    managed.parent.mkdir()
    res, shared, where = _first_write(managed)
    with shared:
        managed.parent.rmdir()  # rm -rf, between the group's opening and this write
        with pytest.raises(ResourceError) as caught:
            res._fill_in(where, _told(managed), (b"x\n", 0o644, -1, -1), shared=shared, how=CREATE)
    assert f"directory {managed.parent} vanished while writing" in str(caught.value)
    assert interfered(caught.value)


def test_a_group_s_file_named_in_a_removed_directory_is_interfered(tmp_path: Path) -> None:
    """The same when the directory goes between the group's write and its naming (the
    second part, after the fsyncs)."""
    managed = tmp_path / "d" / "f"
    managed.parent.mkdir()
    res, shared, where = _first_write(managed)
    with shared:
        later = res._fill_in(
            where, _told(managed), (b"x\n", 0o644, -1, -1), shared=shared, how=CREATE
        )
        assert isinstance(later, Later)
        managed.parent.rmdir()  # its file has no name yet: the directory is empty
        with pytest.raises(ResourceError) as caught:
            later.fn()
    assert interfered(caught.value)
    assert not managed.exists()


def test_a_group_s_write_refused_in_place_is_not_interfered(tmp_path: Path) -> None:
    """A directory still in place that refuses the name (a directory there) fails as before."""
    managed = tmp_path / "d" / "f"
    managed.mkdir(parents=True)
    (managed / "x").touch()
    res, shared, where = _first_write(managed)
    with shared:
        later = res._fill_in(
            where, _told(managed), (b"x\n", 0o644, -1, -1), shared=shared, how=CREATE
        )
        assert isinstance(later, Later)
        with pytest.raises(ResourceError) as caught:
            later.fn()
    assert not interfered(caught.value)
