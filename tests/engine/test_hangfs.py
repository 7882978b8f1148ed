"""engine.hangfs: which paths are on a file system that can stop answering, by a mount table
given here (the real table of this host holds none such: tests/e2e/test_hung_fs.py mounts
one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import hangfs, libc
from tests.e2e.test_hung_fs import Hung, hung  # noqa: F401  (the fixture)
from tests.fusehang import _detach


@pytest.fixture
def nfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real directory said to be an NFS mount point (the rest: one local file system)."""
    point = tmp_path / "nfs"
    point.mkdir()
    (point / "d").mkdir()
    table = {"/": "ext4", str(point): "nfs4", str(tmp_path / "nfs" / "local"): "tmpfs"}
    monkeypatch.setattr(hangfs, "_table", lambda: table)
    return point


def test_by_the_longest_mount_point(nfs: Path, tmp_path: Path) -> None:
    assert hangfs.kind_of(str(nfs / "d" / "f")) == "nfs4"
    assert hangfs.kind_of(str(nfs)) == "nfs4"
    assert hangfs.kind_of(str(nfs / "local" / "f")) is None  # a local mount below it
    assert hangfs.kind_of(str(tmp_path / "other")) is None


def test_a_symlink_into_the_mount_is_on_it(nfs: Path, tmp_path: Path) -> None:
    """A local symlink on the way to the path, pointing into the mount: the path is on it
    (was: judged by its spelling alone, local: its check froze the agent's loop)."""
    (tmp_path / "link").symlink_to(nfs)
    (tmp_path / "rel").symlink_to("nfs/d")
    (tmp_path / "there").symlink_to(nfs / "d" / "f")  # the path itself (`follow`, a source)
    assert hangfs.kind_of(str(tmp_path / "link" / "d" / "f")) == "nfs4"
    assert hangfs.kind_of(str(tmp_path / "rel" / "f")) == "nfs4"
    assert hangfs.kind_of(str(tmp_path / "there")) == "nfs4"
    (tmp_path / "away").symlink_to(tmp_path / "elsewhere")
    assert hangfs.kind_of(str(tmp_path / "away" / "f")) is None  # a link to a local path
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert hangfs.kind_of(str(tmp_path / "loop" / "f")) is None  # a loop: not on it


def test_a_change_of_the_table_told_to_fs_type_first(
    hung: Hung,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real FUSE mount, then its unmount: the table's change, told once by the poll of it,
    told to libc.fs_type first (an I/O thread's write), is seen here too (was: the mount
    stayed "fuse" here until the table's next change)."""
    monkeypatch.setattr(hangfs, "RECHECK", 0.0)  # each question asks the kernel
    path = str(hung.mnt / "f")
    assert hangfs.kind_of(path) == "fuse"
    hung.end()
    _detach(str(hung.mnt))
    libc.fs_type(0, 0)  # told the change first
    assert hangfs.kind_of(path) is None
