"""A repair racing with an `rm -rf` of its directory: the error names the managed path and what
happened, not the agent's internals (a descriptor's /proc/self/fd/N, a temp name), and says it
was cut short by another (errors.Interfered: the engine checks the resource again at once).
Real directories, removed under an open descriptor as `rm -rf` does."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from engine.errors import interfered
from resources._lib.plan import describe
from resources.file.where import TOP, Where


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
