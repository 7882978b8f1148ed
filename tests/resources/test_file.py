"""file: the idempotency timeline per feature, atomicity, symlinks, validation and watch."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import shutil
import signal
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import resources.file as file_module
from engine import libc, safefs
from engine.errors import ResourceError, ValidationError
from engine.resource import UID
from engine.safefs import TEMP_PREFIX
from engine.watcher import FILE_MASK, Hub
from resources._lib.plan import in_thread as _in_thread
from resources.file import INLINE_LIMIT, FileRes
from resources.file.extras import selinux_enabled
from resources.file.modes import mode_after

Entry = tuple[str, int, int, int, int, bytes | str | None]


def bits(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def entry(path: Path) -> Entry:
    st = os.lstat(path)
    data: bytes | str | None = None
    if stat.S_ISREG(st.st_mode):
        data = path.read_bytes()
    elif stat.S_ISLNK(st.st_mode):
        data = os.readlink(path)
    return (stat.filemode(st.st_mode), st.st_ino, st.st_uid, st.st_gid, st.st_size, data)


def snapshot(root: Path) -> dict[str, Entry]:
    """Everything at and below root (type, bits, inode, owner, content), to prove no change."""
    if not os.path.lexists(root):
        return {}
    found = {".": entry(root)}
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(dirpath, name)
                found[str(path.relative_to(root))] = entry(path)
    return found


def tree(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Type+bits and content of everything below root (what a copy must reproduce)."""
    return {k: (v[0], v[5]) for k, v in snapshot(root).items() if k != "."}


def temp_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


async def make(run_resource: Any, **params: Any) -> FileRes:
    """A validated, initialised file resource (no watch)."""
    res = FileRes(name=params.pop("name", "test"), **params)
    await run_resource(res, watch=False)
    return res


async def converges(res: FileRes) -> None:
    """One apply fixes everything; the next one finds nothing to do."""
    assert await res.check_apply(True) is False
    assert await res.check_apply(True) is True


async def noop_reports(res: FileRes, root: Path) -> None:
    """check_apply(False) reports a change and changes nothing under root."""
    before = snapshot(root)
    assert await res.check_apply(False) is False
    assert snapshot(root) == before


# the idempotency timeline ------------------------------------------------------------------


@pytest.mark.parametrize("size", [6, INLINE_LIMIT * 3], ids=["small", "large"])
async def test_content_timeline(tmp_path: Path, run_resource: Any, size: int) -> None:
    path = tmp_path / "f"
    content = ("hello\n" * size)[:size]
    res = await make(run_resource, path=str(path), content=content)
    await noop_reports(res, tmp_path)
    assert not path.exists()
    await converges(res)
    assert path.read_text() == content
    assert bits(path) == 0o644

    path.write_text("other")
    await noop_reports(res, tmp_path)
    assert path.read_text() == "other"
    await converges(res)
    assert path.read_text() == content

    path.write_text("j" + content[1:])  # same size, other bytes
    await converges(res)
    assert path.read_text() == content

    path.unlink()
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.read_text() == content
    assert await res.check_apply(False) is True


@pytest.mark.parametrize("size", [6, INLINE_LIMIT * 3], ids=["small", "large"])
async def test_content_timeline_on_a_file_system_that_can_stop_answering(
    tmp_path: Path, run_resource: Any, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same timeline, checked aside (resources/file/aside.py: a thread and a loop of its
    own), as on an NFS mount: here a real directory said to be on one (engine.hangfs); its
    lookups, compares and writes run in the check's thread, none on the test's loop."""
    from engine import hangfs

    top = str(tmp_path)
    monkeypatch.setattr(hangfs, "kind_of", lambda p: "nfs4" if p.startswith(top) else None)
    loop_thread = threading.get_ident()
    opened: list[int] = []
    open_read = safefs.open_read

    def spied(fd: int, name: str) -> int:
        opened.append(threading.get_ident())
        return open_read(fd, name)

    monkeypatch.setattr(safefs, "open_read", spied)
    path = tmp_path / "f"
    content = ("hello\n" * size)[:size]
    res = await make(run_resource, path=str(path), content=content)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.read_text() == content
    path.write_text("j" + content[1:])  # same size, other bytes: compared, then replaced
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.read_text() == content
    path.unlink()
    await converges(res)
    assert path.read_text() == content
    assert await res.check_apply(False) is True
    assert opened and loop_thread not in opened
    assert res.waiting_on() is None  # no check waits


async def test_directory_timeline(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "d"
    res = await make(run_resource, path=f"{path}/", state="exists", mode="0750")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.is_dir()
    assert bits(path) == 0o750

    path.chmod(0o777)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert bits(path) == 0o750

    path.rmdir()
    await converges(res)
    assert path.is_dir()


async def test_new_directory_default_mode(tmp_path: Path, run_resource: Any) -> None:
    res = await make(run_resource, path=f"{tmp_path}/d/", state="exists")
    await converges(res)
    assert bits(tmp_path / "d") == 0o755


@pytest.mark.parametrize(
    "case",
    [
        # spec, start bits, bits wanted, drift, bits after the repair
        ("0600", 0o644, 0o600, 0o666, 0o600),
        ("640", 0o644, 0o640, 0o600, 0o640),
        ("u=rw,go=r", 0o600, 0o644, 0o777, 0o644),
        ("go-rwx", 0o644, 0o600, 0o755, 0o700),
        ("a+x", 0o644, 0o755, 0o600, 0o711),
        ("u=rwx,g=u,o=", 0o644, 0o770, 0o705, 0o770),
    ],
)
async def test_mode_timeline(
    tmp_path: Path, run_resource: Any, case: tuple[str, int, int, int, int]
) -> None:
    spec, start, want, drift, repaired = case
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(start)
    res = await make(run_resource, path=str(path), mode=spec)
    await noop_reports(res, tmp_path)
    assert bits(path) == start
    await converges(res)
    assert bits(path) == want
    path.chmod(drift)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert bits(path) == repaired
    assert path.read_text() == "x"


async def test_mode_alone_creates_the_file(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    res = await make(run_resource, path=str(path), mode="u=rw,go=")
    await converges(res)
    assert path.read_bytes() == b""
    assert bits(path) == 0o600


@pytest.mark.parametrize(
    ("spec", "current", "is_dir", "want"),
    [
        ("0644", 0o777, False, 0o644),
        ("4755", 0, False, 0o4755),
        ("u+x", 0o644, False, 0o744),
        ("a-w", 0o666, False, 0o444),
        ("=r", 0o777, False, 0o444),
        ("u=rw,go=r", 0o7777, False, 0o644),
        ("a+X", 0o644, False, 0o644),
        ("a+X", 0o744, False, 0o755),
        ("a+X", 0o644, True, 0o755),
        ("g=u", 0o640, False, 0o660),
        ("o=g-w", 0o674, False, 0o675),
        ("u+s,g+s", 0o755, False, 0o6755),
        ("+t", 0o777, True, 0o1777),
        ("u+rw,g-x", 0o070, False, 0o660),
    ],
)
def test_mode_after(spec: str, current: int, is_dir: bool, want: int) -> None:
    assert oct(mode_after(spec, current, is_dir)) == oct(want)


async def test_absent_timeline(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    res = await make(run_resource, path=str(path), state="absent")
    await noop_reports(res, tmp_path)
    assert path.exists()
    await converges(res)
    assert not path.exists()
    path.write_text("back")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert not path.exists()


async def test_absent_directory(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "d"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "f").write_text("x")
    careful = await make(run_resource, name="careful", path=f"{path}/", state="absent")
    with pytest.raises(ResourceError, match="not empty: set recurse: true and force: true"):
        await careful.check_apply(True)
    assert (path / "sub" / "f").exists()

    res = await make(run_resource, path=f"{path}/", state="absent", recurse=True, force=True)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert not path.exists()
    path.mkdir()  # an empty directory needs neither
    await converges(careful)
    assert not path.exists()


async def test_source_file_timeline(tmp_path: Path, run_resource: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("v1")
    src.chmod(0o640)
    res = await make(run_resource, path=str(dst), source=str(src))
    await noop_reports(res, tmp_path)
    await converges(res)
    assert dst.read_text() == "v1"
    assert bits(dst) == 0o640  # the source's bits

    dst.write_text("drift")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert dst.read_text() == "v1"

    src.write_text("v2")
    src.chmod(0o600)
    await converges(res)
    assert dst.read_text() == "v2"
    assert bits(dst) == 0o600

    own = await make(run_resource, name="own", path=str(dst), source=str(src), mode="0644")
    await converges(own)
    assert bits(dst) == 0o644  # mode wins over the source's bits


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "sub" / "deeper" / "c").write_text("c" * (INLINE_LIMIT + 1))
    (root / "link").symlink_to("a.txt")


async def test_tree_copy_timeline_with_purge(tmp_path: Path, run_resource: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    dst.mkdir()
    (dst / "stale").write_text("old")
    res = await make(
        run_resource, path=f"{dst}/", source=f"{src}/", recurse=True, purge=True, state="exists"
    )
    await noop_reports(res, tmp_path)
    assert (dst / "stale").exists()
    await converges(res)
    assert tree(dst) == tree(src)

    (dst / "sub" / "run.sh").unlink()
    (dst / "a.txt").write_text("changed")
    (dst / "sub" / "deeper").chmod(0o700)
    (dst / "sub" / "extra").mkdir()
    (dst / "sub" / "extra" / "x").write_text("x")
    (dst / "link").unlink()
    (dst / "link").symlink_to("elsewhere")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert tree(dst) == tree(src)

    (src / "new").write_text("new")
    await converges(res)
    assert (dst / "new").read_text() == "new"
    assert temp_files(dst) == []


async def test_tree_copy_without_purge_keeps_extras(tmp_path: Path, run_resource: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    res = await make(run_resource, path=f"{dst}/", source=f"{src}/", recurse=True)
    await converges(res)
    (dst / "mine").write_text("keep")
    assert await res.check_apply(True) is True
    assert (dst / "mine").read_text() == "keep"


async def test_replace_false_keeps_a_files_content_but_not_its_mode(
    tmp_path: Path, run_resource: Any
) -> None:
    """A file already there keeps its content; its mode is still repaired; a missing file is
    written (Puppet's `replace => false`, docs/puppet.md)."""
    path = tmp_path / "seed"
    path.write_text("the host's")
    path.chmod(0o644)
    res = await make(run_resource, path=str(path), content="managed", mode="0600", replace=False)
    await converges(res)
    assert path.read_text() == "the host's"
    assert path.stat().st_mode & 0o7777 == 0o600
    path.unlink()
    await converges(res)
    assert path.read_text() == "managed"
    other = tmp_path / "other"
    other.write_text("mine")
    plain = await make(run_resource, name="p", path=str(other), content="x", replace=False)
    assert await plain.check_apply(True) is True  # nothing to do
    assert other.read_text() == "mine"


async def test_recurse_mode_gives_every_copied_entry_the_mode(
    tmp_path: Path, run_resource: Any
) -> None:
    """Without recurse_mode a copied entry keeps its source's bits (mode is path's own); with
    it every entry but a symlink gets mode (`X`: search bits on directories only), and a
    drift of an entry's mode is seen and repaired (Puppet's recurse, docs/puppet.md)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("f")
    (src / "x").write_text("x")
    (src / "x").chmod(0o755)
    (src / "sub/g").write_text("g")
    (src / "link").symlink_to("f")
    mode = "a=,u=rwX,g=rX"
    res = await make(
        run_resource, path=f"{dst}/", source=f"{src}/", recurse=True, mode=mode, recurse_mode=True
    )
    await converges(res)
    got = {n: (dst / n).stat().st_mode & 0o7777 for n in ("", "f", "x", "sub", "sub/g")}
    assert got == {"": 0o750, "f": 0o640, "x": 0o640, "sub": 0o750, "sub/g": 0o640}
    assert (dst / "link").is_symlink()
    (dst / "sub/g").chmod(0o666)
    assert await res.check_apply(False) is False
    await converges(res)
    assert (dst / "sub/g").stat().st_mode & 0o7777 == 0o640


async def test_tree_copy_type_clash_needs_force(tmp_path: Path, run_resource: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    dst.mkdir()
    (dst / "sub").write_text("a file where the source has a directory")
    res = await make(run_resource, path=f"{dst}/", source=f"{src}/", recurse=True)
    with pytest.raises(ResourceError, match="set force: true"):
        await res.check_apply(True)
    forced = await make(
        run_resource, name="forced", path=f"{dst}/", source=f"{src}/", recurse=True, force=True
    )
    await converges(forced)
    assert tree(dst) == tree(src)


# set-ID bits (tester13's finding 0): never carried to an inode of another owner -------------


def _setid_tree(root: Path, uid: int) -> None:
    """root/tool (4755) and root/sub/ (a 2775 directory) holding run (2755), owned by uid."""
    (root / "sub").mkdir(parents=True)
    (root / "tool").write_bytes(b"\x7fELF not really")
    (root / "sub" / "run").write_text("#!/bin/sh\n")
    for path, mode in (
        (root / "tool", 0o4755),
        (root / "sub", 0o2775),
        (root / "sub" / "run", 0o2755),
    ):
        os.chown(path, uid, uid)
        path.chmod(mode)
    os.chown(root, uid, uid)


async def test_a_copy_drops_the_set_id_bits_of_another_owners_source(
    tmp_path: Path, run_resource: Any
) -> None:
    """A user's 4755 file copied by root: root's copy gets 0755 (as cp), a tree per entry."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _setid_tree(src, NOBODY)
    single = await make(run_resource, name="one", path=str(tmp_path / "one"), source=f"{src}/tool")
    copy = await make(run_resource, name="tree", path=f"{dst}/", source=f"{src}/", recurse=True)
    for res in (single, copy):
        await converges(res)
    assert bits(tmp_path / "one") == 0o755
    assert {k: v[0] for k, v in snapshot(dst).items()} == {
        ".": "drwxr-xr-x",
        "tool": "-rwxr-xr-x",
        "sub": "drwxrwxr-x",
        "sub/run": "-rwxr-xr-x",
    }
    # a copy made before this fix (or chmod'ed since) is repaired
    for path in (tmp_path / "one", dst / "tool"):
        path.chmod(0o4755)
    for res in (single, copy):
        await converges(res)
    assert bits(tmp_path / "one") == bits(dst / "tool") == 0o755


async def test_a_copy_keeps_set_id_bits_for_the_same_owner_or_when_mode_asks(
    tmp_path: Path, run_resource: Any
) -> None:
    src = tmp_path / "src"
    _setid_tree(src, NOBODY)
    theirs = await make(
        run_resource,
        path=f"{tmp_path}/theirs/",
        source=f"{src}/",
        recurse=True,
        owner="65534",
        group="65534",
    )
    await converges(theirs)
    assert bits(tmp_path / "theirs" / "tool") == 0o4755  # the user's own, still theirs
    assert bits(tmp_path / "theirs" / "sub" / "run") == 0o2755
    asked = await make(
        run_resource, name="asked", path=str(tmp_path / "asked"), source=f"{src}/tool", mode="4755"
    )
    await converges(asked)
    assert bits(tmp_path / "asked") == 0o4755  # the operator's `mode`
    ours = tmp_path / "ours"
    ours.write_text("root's")
    ours.chmod(0o4750)
    copy = await make(run_resource, name="ours", path=str(tmp_path / "copy"), source=str(ours))
    await converges(copy)
    assert bits(tmp_path / "copy") == 0o4750  # root's own set-ID file, root's copy


async def test_a_set_group_id_directorys_group_is_the_one_the_set_id_rule_compares(
    tmp_path: Path, run_resource: Any
) -> None:
    """A new file in a set-group-ID directory takes the directory's group: root's own 2755
    file (group root) copied there keeps no set-group-ID bit, which would be on the
    directory's group (before 2026-12-05 it did: a set-group-ID 65534 program); one whose group
    is the directory's keeps it; a tree's new set-group-ID directory passes its group on."""
    shared, src = tmp_path / "shared", tmp_path / "src"
    for directory in (shared, src):
        directory.mkdir()
        os.chown(directory, 0, NOBODY)
        directory.chmod(0o2775)
    (src / "tool").write_text("root's\n")
    os.chown(src / "tool", 0, 0)  # not the group of src, set-group-ID: root's
    (src / "theirs").write_text("group 65534's\n")  # src's group
    for name in ("tool", "theirs"):
        (src / name).chmod(0o2755)
    made = [
        await make(run_resource, name="one", path=f"{shared}/one", source=f"{src}/tool"),
        await make(run_resource, name="two", path=f"{shared}/two", source=f"{src}/theirs"),
        await make(run_resource, name="t", path=f"{shared}/tree/", source=f"{src}/", recurse=True),
    ]
    for res in made:
        await converges(res)

    def group_and_bits(path: Path) -> tuple[int, int]:
        return path.stat().st_gid, bits(path)

    assert group_and_bits(shared / "one") == (NOBODY, 0o755)
    assert group_and_bits(shared / "two") == (NOBODY, 0o2755)
    assert group_and_bits(shared / "tree") == (NOBODY, 0o2775)  # its source's group: kept
    assert group_and_bits(shared / "tree" / "tool") == (NOBODY, 0o755)
    assert group_and_bits(shared / "tree" / "theirs") == (NOBODY, 0o2755)


@pytest.mark.parametrize("content", [None, "new\n"], ids=["chown", "rewrite"])
async def test_chown_to_another_owner_drops_set_id_bits(
    tmp_path: Path, run_resource: Any, content: str | None
) -> None:
    """A user's 4755 file in their directory, managed with owner root: it does not stay
    set-ID (chown(2) drops the bits; a rewrite must not put them back), nor after g+w."""
    path = tmp_path / "tool"
    path.write_text("old\n")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o6755)
    res = await make(run_resource, path=str(path), content=content, owner="root", mode="g+w")
    await converges(res)
    st = path.stat()
    assert (st.st_uid, st.st_gid, bits(path)) == (0, NOBODY, 0o2775)  # group kept: setgid too


async def test_a_tree_entry_swapped_after_the_plan_gets_no_set_id_bits(tmp_path: Path) -> None:
    """Where.copy's own check: the set-ID bits planned for one inode are not given to another
    one renamed in by whoever controls the source tree between the plan and the copy."""
    from resources.file.where import Where

    src = tmp_path / "src"
    src.mkdir()
    (src / "tool").write_text("root's own set-ID tool")
    (src / "tool").chmod(0o4755)
    planned = (src / "tool").lstat()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with Where(str(tmp_path / "kept")) as where:
            where.copy((), (fd, ("tool",)), 0o4755, -1, -1, seen=planned)
        (src / "evil").write_text("the user's")
        (src / "evil").chmod(0o755)
        (src / "evil").rename(src / "tool")
        with Where(str(tmp_path / "swapped")) as where:
            where.copy((), (fd, ("tool",)), 0o4755, -1, -1, seen=planned)
    finally:
        os.close(fd)
    assert bits(tmp_path / "kept") == 0o4755
    assert (tmp_path / "swapped").read_text() == "the user's"
    assert bits(tmp_path / "swapped") == 0o755


@pytest.mark.parametrize("theirs", [True, False], ids=["their directory", "root's directory"])
async def test_a_hard_link_is_not_chowned_in_a_directory_another_user_controls(
    tmp_path: Path, run_resource: Any, theirs: bool
) -> None:
    """tester13 #5: uid 1001 hard-links uid 1002's group-writable file as ~/report; `owner:
    1001, mode: 0600` of ~/report made it theirs. Refused there; root's own links are fine."""
    victim = tmp_path / "data2"
    victim.write_text("their data\n")
    os.chown(victim, 65533, 65533)
    victim.chmod(0o660)
    home = tmp_path / "home"
    home.mkdir()
    os.link(victim, home / "report")
    if theirs:
        os.chown(home, NOBODY, NOBODY)
    res = await make(run_resource, path=str(home / "report"), owner=str(NOBODY), mode="0600")
    if not theirs:
        await converges(res)
        assert (victim.stat().st_uid, bits(victim)) == (NOBODY, 0o600)
        return
    for apply in (False, True):
        refused = f"{home}/report has 2 hard links and its directory is owned by uid {NOBODY}"
        with pytest.raises(ResourceError, match=refused) if apply else contextlib.nullcontext():
            await res.check_apply(apply)
    st = victim.stat()
    assert (st.st_uid, st.st_gid, bits(victim)) == (65533, 65533, 0o660)
    rewrite = await make(run_resource, name="w", path=str(home / "report"), content="new\n")
    await converges(rewrite)  # a new inode: the other link keeps the old one, untouched
    assert victim.read_text() == "their data\n" and (home / "report").stat().st_nlink == 1


async def test_owner_group_timeline(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    res = await make(run_resource, path=str(path), owner="65534", group="nogroup")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)

    os.chown(path, 0, -1)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.stat().st_uid == 65534

    back = await make(run_resource, name="back", path=str(path), owner="root", group="0")
    await converges(back)
    assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)


async def test_rewrite_keeps_unmanaged_owner_and_mode(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    os.chown(path, 65534, 65534)
    path.chmod(0o600)
    res = await make(run_resource, path=str(path), content="new")
    await converges(res)
    st = path.stat()
    assert (st.st_uid, st.st_gid, bits(path)) == (65534, 65534, 0o600)


async def test_rewrite_sets_owner_and_mode_with_the_content(
    tmp_path: Path, run_resource: Any
) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    res = await make(run_resource, path=str(path), content="new", owner="nobody", mode="0600")
    await converges(res)
    st = path.stat()
    assert (path.read_text(), st.st_uid, bits(path)) == ("new", 65534, 0o600)


# atomicity ---------------------------------------------------------------------------------


async def test_writes_leave_no_temp_files(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    res = await make(run_resource, path=str(path), content="one", mode="0600")
    await converges(res)
    path.write_text("two")
    await converges(res)
    assert temp_files(tmp_path) == []
    assert os.listdir(tmp_path) == ["f"]


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes fail with EFBIG (instead of SIGXFSZ killing the process)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


async def test_failed_write_keeps_the_old_file(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("old\n")
    before = snapshot(path)
    res = await make(run_resource, path=str(path), content="x" * (4 * INLINE_LIMIT))
    with file_size_limit(INLINE_LIMIT), pytest.raises(ResourceError) as err:
        await res.check_apply(True)
    assert str(err.value) == f"could not update the content of {path}: File too large"
    assert snapshot(path) == before
    assert temp_files(tmp_path) == []


async def test_unknown_owner_keeps_the_old_file(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("old\n")
    before = snapshot(tmp_path)
    res = await make(run_resource, path=str(path), content="new\n", owner="no-such-user-here")
    with pytest.raises(ResourceError, match="owner: no such user 'no-such-user-here'"):
        await res.check_apply(True)
    assert snapshot(tmp_path) == before


# symlinks, types, parents ------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """tmp_path with "link" -> "target" (a file holding "target\\n")."""
    (tmp_path / "target").write_text("target\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    return tmp_path


async def test_symlink_is_not_followed(linked: Path, run_resource: Any) -> None:
    link = linked / "link"
    res = await make(run_resource, path=str(link), content="new\n")
    with pytest.raises(ResourceError, match=r"is a symlink .* not followed"):
        await res.check_apply(True)
    with pytest.raises(ResourceError, match="is a symlink"):
        await res.check_apply(False)
    assert link.is_symlink()
    assert link.read_text() == "target\n"


async def test_symlink_replaced_with_force(linked: Path, run_resource: Any) -> None:
    link = linked / "link"
    res = await make(run_resource, path=str(link), content="new\n", force=True)
    await noop_reports(res, link.parent)
    await converges(res)
    assert not link.is_symlink()
    assert link.read_text() == "new\n"
    assert (link.parent / "target").read_text() == "target\n"


async def test_replace_link_replaces_a_link_only(linked: Path, run_resource: Any) -> None:
    """`replace_link` (Puppet's `ensure => file` and `directory`): the link at path is replaced
    (its target, a file or a directory, never opened), but not a directory, nor a file by a
    directory: those still need force."""
    link, target = linked / "link", linked / "target"
    res = await make(run_resource, path=str(link), content="new\n", replace_link=True)
    await noop_reports(res, linked)
    await converges(res)
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert target.read_text() == "target\n"
    (linked / "d").mkdir()
    (linked / "dlink").symlink_to(linked / "d")
    res = await make(run_resource, path=f"{linked}/dlink/", state="exists", replace_link=True)
    await converges(res)
    assert (linked / "dlink").is_dir() and not (linked / "dlink").is_symlink()
    res = await make(run_resource, path=f"{linked}/d", content="x", replace_link=True)
    with pytest.raises(ResourceError, match="is a directory, expected a file: set force"):
        await res.check_apply(True)
    res = await make(run_resource, path=f"{target}/", state="exists", replace_link=True)
    with pytest.raises(ResourceError, match="is a file, expected a directory: set force"):
        await res.check_apply(True)
    assert (linked / "d").is_dir() and target.read_text() == "target\n"
    with pytest.raises(ValidationError, match="cannot be combined with symlink or follow"):
        await make(run_resource, path=str(link), content="x", replace_link=True, follow=True)


async def test_symlink_followed(linked: Path, run_resource: Any) -> None:
    link = linked / "link"
    res = await make(run_resource, path=str(link), content="new\n", mode="0600", follow=True)
    await converges(res)
    assert link.is_symlink()
    assert (link.parent / "target").read_text() == "new\n"
    assert bits(link.parent / "target") == 0o600


async def test_dangling_symlink_followed_creates_the_target(
    tmp_path: Path, run_resource: Any
) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "new" / "target")
    res = await make(run_resource, path=str(link), content="made\n", follow=True)
    await converges(res)
    assert (tmp_path / "new" / "target").read_text() == "made\n"


async def test_absent_removes_the_link_not_the_target(linked: Path, run_resource: Any) -> None:
    link = linked / "link"
    res = await make(run_resource, path=str(link), state="absent")
    await converges(res)
    assert snapshot(link) == {}
    assert (link.parent / "target").read_text() == "target\n"


async def test_type_clash_needs_force(tmp_path: Path, run_resource: Any) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside").write_text("x")
    (tmp_path / "f").write_text("x")
    to_file = await make(run_resource, name="to_file", path=f"{tmp_path}/d", content="x")
    to_dir = await make(run_resource, name="to_dir", path=f"{tmp_path}/f/", state="exists")
    for res in (to_file, to_dir):
        with pytest.raises(ResourceError, match="set force: true to replace it"):
            await res.check_apply(True)
    assert (tmp_path / "d" / "inside").exists()
    assert (tmp_path / "f").is_file()

    for res in (to_file, to_dir):
        res.force = True
        await noop_reports(res, tmp_path)
        await converges(res)
    assert (tmp_path / "d").read_text() == "x"
    assert (tmp_path / "f").is_dir()


async def test_missing_parents_are_created(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "a" / "b" / "f"
    res = await make(run_resource, path=str(path), content="x")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert path.read_text() == "x"
    assert bits(tmp_path / "a") == bits(tmp_path / "a" / "b") == 0o755


async def test_nothing_managed_is_a_noop(tmp_path: Path, run_resource: Any) -> None:
    res = await make(run_resource, path=str(tmp_path / "f"))
    assert await res.check_apply(True) is True
    assert not (tmp_path / "f").exists()


async def test_logs_say_what_and_why(
    tmp_path: Path, run_resource: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="engine")
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o644)
    res = await make(run_resource, name="f", path=str(path), content="new", mode="0600")
    await res.check_apply(False)
    assert f"file[f]: would update the content of {path}" in caplog.messages
    assert "file[f]: would chmod 0644 -> 0600" in caplog.messages
    caplog.clear()
    await res.check_apply(True)
    assert caplog.messages == ["file[f]: content updated", "file[f]: mode 0644 -> 0600"]
    caplog.clear()
    await res.check_apply(True)
    assert caplog.messages == [
        f"file[f]: nothing to do: file {path} exists with the wanted content, mode"
    ]


async def test_a_first_write_beside_others_looks_up_and_creates_in_one_hop(
    tmp_path: Path,
    run_resource: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While other writes are in flight (a first run), a file's first check looks its path up
    in the I/O thread (with the GIL held: libc.lstat) and creates it there: no lookup on the
    event loop, the plan's lines, the file's own rename not reported, a later change seen. A
    file found there with other content (its owner and mode as wanted) is replaced there too
    (its update logged as such), its own replace not reported."""
    monkeypatch.setattr(file_module, "_writing", [1])  # another file's write is in flight
    looked: list[tuple[str, bool]] = []
    real, real_held = safefs.lstat_at, libc.lstat

    def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
        looked.append((name, threading.current_thread() is threading.main_thread()))
        return real(dir_fd, name)

    def held(dir_fd: int, name: str) -> os.stat_result | None:
        looked.append(("held " + name, threading.current_thread() is threading.main_thread()))
        return real_held(dir_fd, name)

    monkeypatch.setattr(safefs, "lstat_at", lstat_at)
    monkeypatch.setattr(libc, "lstat", held)
    caplog.set_level(logging.INFO, logger="engine")
    (tmp_path / "d").mkdir()
    path, other = tmp_path / "d" / "f", tmp_path / "d" / "g"
    res = FileRes(name="f", path=str(path), content="x", mode="0600")
    running = await run_resource(res)
    assert await res.check_apply(True) is False
    assert looked == [("held f", False)]
    assert caplog.messages == [f"file[f]: created {path}"]
    assert path.read_text() == "x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await running.handle.no_event()  # its own rename
    assert await res.check_apply(True) is True  # not its first write: looked up on the loop
    assert looked[-1] == ("f", True)
    path.chmod(0o644)
    await running.handle.next_event()
    other.write_text("old")
    second = FileRes(name="g", path=str(other), content="new")
    running_second = await run_resource(second)
    caplog.clear()
    events = running_second.handle.events
    assert await second.check_apply(True) is False
    # There: its one lookup says what it is, and the content is replaced there, in the same hop.
    assert looked[-2:] == [("f", True), ("held g", False)]
    assert await running_second.handle.no_event()
    assert running_second.handle.events == events
    assert caplog.messages == ["file[g]: content updated"]
    assert other.read_text() == "new"
    other.write_text("drift")  # the new inode's watch: a change to it is seen
    await running_second.handle.next_event()
    assert await second.check_apply(True) is False
    assert other.read_text() == "new"


async def test_a_first_write_in_one_hop_makes_missing_parents(
    tmp_path: Path,
    run_resource: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lookup and the write in the I/O thread make the missing parents first; the new
    file's own inode is watched after that one check (its directory was not watched before
    it: the re-sync looks), so a write through another hard link of it is seen."""
    monkeypatch.setattr(file_module, "_writing", [1])
    caplog.set_level(logging.INFO, logger="engine")
    path = tmp_path / "a" / "b" / "f"
    res = FileRes(name="f", path=str(path), content="x")
    running = await run_resource(res)
    assert await res.check_apply(True) is False
    assert caplog.messages[:3] == [
        f"file[f]: created parent directory {tmp_path / 'a'}",
        f"file[f]: created parent directory {tmp_path / 'a' / 'b'}",
        f"file[f]: created {path}",
    ]
    assert path.read_text() == "x"
    hub = Hub.running()
    assert hub is not None
    assert hub.kernel_mask.get(str(path), 0) & FILE_MASK == FILE_MASK  # the inode's own watch
    assert hub.holding == 0  # the loop reads the queue as it becomes readable again
    assert await res.check_apply(True) is True
    hard = tmp_path / "hard"
    os.link(path, hard)  # in a directory this watch does not read: only the inode's watch
    hard.write_text("y")
    await running.handle.next_event()
    await converges(res)
    assert path.read_text() == "x"


# symlink races and the safe-path rule (issue 11) ---------------------------------------------

NOBODY = 65534


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory (with a file "f") that no write through a planted link may touch."""
    root = tmp_path / "victim"
    root.mkdir()
    (root / "f").write_text("victim\n")
    return root


async def test_a_symlink_in_a_parent_directory_is_not_followed(
    shared: Path, victim: Path, run_resource: Any
) -> None:
    link = shared / "sub"
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)  # planted by another user
    before = snapshot(victim)
    writes = await make(run_resource, name="w", path=f"{link}/f", content="pwned\n", mode="0600")
    chmods = await make(run_resource, name="m", path=f"{link}/f", mode="4755")
    makes = await make(run_resource, name="n", path=f"{link}/new/deeper", content="x")
    for res in (writes, chmods, makes):
        for apply in (False, True):
            with pytest.raises(ResourceError, match=f"refusing to follow the symlink {link} "):
                await res.check_apply(apply)
    assert snapshot(victim) == before


async def test_a_safe_symlink_in_a_parent_directory_is_followed(
    tmp_path: Path, run_resource: Any
) -> None:
    """Like /var/run -> /run: a link that only root (this agent) controls."""
    (tmp_path / "run").mkdir()
    (tmp_path / "var").symlink_to("run")
    res = await make(run_resource, path=f"{tmp_path}/var/a/f", content="x\n")
    await converges(res)
    assert (tmp_path / "run" / "a" / "f").read_text() == "x\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-owned 0600 file (issue 11's /victim) that no followed link may reach."""
    path = tmp_path / "secret"
    path.write_text("secret\n")
    path.chmod(0o600)
    return path


def _own(path: Path, uid: int) -> Path:
    os.lchown(path, uid, uid)
    return path


@pytest.mark.parametrize("state", ["exists", "absent"])
@pytest.mark.parametrize(
    "plant",
    [
        "link owned by another user",
        "link in a directory another user owns",
        "link in a directory anyone can write",
        "chained link owned by another user",
        "link to a path through another user's link",
    ],
)
async def test_follow_refuses_a_link_another_user_controls(
    plant: str, state: str, tmp_path: Path, secret: Path, run_resource: Any
) -> None:
    """Issue 11's follow probe: `ln -s /victim /tmp/A/l` as uid 65534, then follow: true."""
    shared = tmp_path / "shared"  # like /tmp
    shared.mkdir()
    shared.chmod(0o1777)
    theirs = tmp_path / "theirs"  # like /tmp/A, a directory uid 65534 owns (mode 0755)
    theirs.mkdir()
    mine = tmp_path / "mine"  # a root-owned 0755 directory
    mine.mkdir(mode=0o755)
    if plant == "link owned by another user":
        (mine / "l").symlink_to(secret)
        link = bad = _own(mine / "l", NOBODY)
    elif plant == "link in a directory another user owns":
        (theirs / "l").symlink_to(secret)  # root-owned, but its directory is not
        link = bad = theirs / "l"
        _own(theirs, NOBODY)
    elif plant == "link in a directory anyone can write":
        (shared / "l").symlink_to(secret)
        link = bad = shared / "l"
    elif plant == "chained link owned by another user":
        (theirs / "l").symlink_to(secret)
        bad = _own(theirs / "l", NOBODY)
        _own(theirs, NOBODY)
        link = mine / "l"
        link.symlink_to(bad)  # root's own link, to theirs
    else:
        _own(theirs, NOBODY)
        (theirs / "d").symlink_to(tmp_path)  # theirs/d/secret is the secret
        bad = _own(theirs / "d", NOBODY)
        link = mine / "l"
        link.symlink_to(theirs / "d" / "secret")
    before = snapshot(tmp_path)
    wants: dict[str, Any] = {"content": "pwned\n", "mode": "0644"}
    if state == "absent":
        wants = {"state": "absent"}
    res = await make(run_resource, path=str(link), follow=True, **wants)
    refused = f"^refusing to follow the symlink {bad} \\(-> .*(uid {NOBODY}|others)"
    for apply in (False, True):
        with pytest.raises(ResourceError, match=refused):
            await res.check_apply(apply)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "secret").read_text() == "secret\n"
    assert bits(secret) == 0o600


async def test_follow_names_the_owner_of_the_link(
    tmp_path: Path, secret: Path, run_resource: Any
) -> None:
    theirs = tmp_path / "A"
    theirs.mkdir()
    (theirs / "l").symlink_to(secret)
    _own(theirs / "l", NOBODY)
    _own(theirs, NOBODY)
    res = await make(run_resource, path=f"{theirs}/l", content="pwned\n", follow=True)
    with pytest.raises(ResourceError) as err:
        await res.check_apply(True)
    assert str(err.value) == (
        f"refusing to follow the symlink {theirs}/l (-> {secret}): it is owned by uid {NOBODY}; "
        "only links owned by root (or this agent's user), in directories only they can write, "
        "are followed"
    )
    assert (tmp_path / "secret").read_text() == "secret\n"


async def test_follow_follows_a_link_only_root_controls(
    tmp_path: Path, secret: Path, run_resource: Any
) -> None:
    """A root-owned link in a root-owned 0755 directory, to a chain of such links: managed."""
    mine = tmp_path / "etc"
    mine.mkdir(mode=0o755)
    (mine / "real").symlink_to(secret)
    (mine / "l").symlink_to("real")  # relative, and a chain
    res = await make(run_resource, path=f"{mine}/l", content="managed\n", follow=True)
    await converges(res)
    assert (mine / "l").is_symlink() and (mine / "real").is_symlink()
    assert (tmp_path / "secret").read_text() == "managed\n"
    assert bits(secret) == 0o600


ATTACKER = r"""
import os, shutil, sys
spot, victim, mode = sys.argv[1:]
swap, aside = spot + ".swap", spot + ".aside"
def real():  # a real file (or a directory holding one) of ours at spot
    if mode == "file":
        with open(swap, "w") as out:
            out.write("attacker\n")
        os.replace(swap, spot)
    else:
        os.mkdir(swap)
        with open(os.path.join(swap, "f"), "w") as out:
            out.write("attacker\n")
        if os.path.islink(spot) or os.path.isfile(spot):
            os.unlink(spot)
        os.rename(swap, spot)
asides = 0
def link():  # the symlink swapped in, aimed at the victim
    global asides
    if mode == "dir" and os.path.isdir(spot) and not os.path.islink(spot):
        # a new name each time: a write through a descriptor of the moved directory can
        # land in it while it is removed; one fixed name would then stay non-empty and
        # every later rename onto it fail: no swap ever again (ci: 0 refused in 60 s)
        asides += 1
        os.rename(spot, f"{aside}.{asides}")
        shutil.rmtree(f"{aside}.{asides}", ignore_errors=True)
    os.symlink(victim, swap)
    os.replace(swap, spot)
ready = False
while True:
    for step in (real, link):
        try:
            step()
        except OSError:
            shutil.rmtree(swap, ignore_errors=True)
            if os.path.lexists(swap):
                os.unlink(swap)
    if not ready:
        print("ready", flush=True)
        ready = True
"""


@contextlib.asynccontextmanager
async def attacker(spot: Path, target: Path, mode: str) -> AsyncIterator[None]:
    """Another process that swaps spot between a real file/dir and a symlink to target."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ATTACKER,
        str(spot),
        str(target),
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(30):
            assert await proc.stdout.readline() == b"ready\n"
        yield
        if proc.returncode is not None or proc.stdout.at_eof():
            async with asyncio.timeout(30):
                said = (await proc.stderr.read()).decode(errors="replace")
            raise AssertionError(f"the attacker ended during the race: {said}")
    finally:
        proc.kill()
        await proc.wait()


RACES = 400  # check_applies per race test; each one races the attacker's swaps
RACE_BOUND = 60.0  # seconds: on a loaded machine, more until both outcomes were seen


async def race(res: FileRes, victim: Path) -> tuple[int, int]:
    """Run check_apply RACES times (more, for up to RACE_BOUND seconds, until it was both
    applied and refused: the race really ran; a starved attacker may not swap for a while);
    the victim must never change. (applied, refused) counts."""
    before = snapshot(victim)
    applied = refused = done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RACE_BOUND
    while not (done >= RACES and applied and refused) and loop.time() < deadline:
        done += 1
        try:
            await res.check_apply(True)
            applied += 1
        except ResourceError:
            refused += 1  # a symlink (or a swap) was seen: refused, retried later
        assert snapshot(victim) == before, "the victim was touched"
    return applied, refused


@pytest.mark.parametrize("params", [{"mode": "0600"}, {"content": "managed\n", "mode": "0640"}])
async def test_a_symlink_swapped_in_at_the_path_is_never_followed(
    shared: Path, victim: Path, run_resource: Any, params: dict[str, str]
) -> None:
    spot = shared / "f"
    res = await make(run_resource, path=str(spot), **params)
    async with attacker(spot, victim / "f", "file"):
        applied, refused = await race(res, victim)
    assert applied and refused  # both happened: the race was run


async def test_a_symlink_swapped_in_for_a_parent_is_never_followed(
    shared: Path, victim: Path, run_resource: Any
) -> None:
    spot = shared / "sub"
    res = await make(run_resource, path=f"{spot}/f", content="managed\n", mode="0600")
    async with attacker(spot, victim, "dir"):
        applied, refused = await race(res, victim)
    assert applied and refused


async def test_a_symlink_swapped_into_a_copied_tree_is_never_followed(
    tmp_path: Path, victim: Path, run_resource: Any
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("copied\n")
    (src / "sub" / "g").write_text("copied too\n")
    src.chmod(0o777)  # copied: dst is writable by anyone too
    res = await make(run_resource, path=f"{dst}/", source=f"{src}/", recurse=True, force=True)
    await converges(res)
    async with attacker(dst / "sub", victim, "dir"):
        applied, refused = await race(res, victim)
    assert applied and refused


# created directories, leftovers of crashed writes (issue 11) -------------------------------


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


async def test_created_directories_get_their_mode_whatever_the_umask(
    tmp_path: Path, run_resource: Any, umask_077: None
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub").chmod(0o751)
    parents = await make(run_resource, name="p", path=f"{tmp_path}/a/b/f", content="x")
    directory = await make(run_resource, name="d", path=f"{tmp_path}/c/", state="exists")
    copy = await make(run_resource, name="t", path=f"{tmp_path}/t/", source=f"{src}/", recurse=True)
    for res in (parents, directory, copy):
        await converges(res)
    assert bits(tmp_path / "a") == bits(tmp_path / "a" / "b") == bits(tmp_path / "c") == 0o755
    assert bits(tmp_path / "t" / "sub") == 0o751


def leftover(directory: Path, name: str) -> Path:
    """A temp file as a crashed write left it: older than this process."""
    path = directory / name
    path.write_text("a full copy of managed content\n")
    old = (safefs.STARTED_NS - 10**9) / 1e9
    os.utime(path, (old, old))
    return path


async def test_leftover_temp_files_are_removed(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    ours = [leftover(tmp_path, ".mgmt.k7x_2abc"), leftover(tmp_path, ".mgmt.0123456789ab")]
    theirs = [leftover(tmp_path, ".mgmt.conf"), tmp_path / ".mgmt.fedcba987654"]
    theirs[1].write_text("a live write (newer than this process)")
    res = await make(run_resource, path=str(path), content="x")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert [p.exists() for p in ours + theirs] == [False, False, True, True]


async def test_leftovers_in_a_copied_tree_are_removed(tmp_path: Path, run_resource: Any) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    res = await make(run_resource, path=f"{dst}/", source=f"{src}/", recurse=True)
    await converges(res)
    stale = leftover(dst / "sub" / "deeper", ".mgmt.abcdefgh")
    await noop_reports(res, tmp_path)
    await converges(res)
    assert not stale.exists()
    assert tree(dst) == tree(src)


# validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key", "message"),
    [
        ({"path": "relative/f"}, "path", "expected an absolute path, got 'relative/f'"),
        ({"name": "nope"}, "name", "expected an absolute path"),
        ({"path": "/"}, "path", "refusing to manage '/'"),
        ({"path": "/tmp/f", "content": "x", "source": "/tmp/s"}, "source", "cannot be combined"),
        ({"path": "/tmp/d/", "content": "x"}, "content", "directory path"),
        ({"path": "/tmp/f", "state": "absent", "content": "x"}, "content", "state 'absent'"),
        ({"path": "/tmp/f", "state": "absent", "mode": "0644"}, "mode", "state 'absent'"),
        ({"path": "/tmp/d/", "source": "/tmp/s/"}, "recurse", "only with recurse"),
        ({"path": "/tmp/f", "source": "/tmp/s/", "recurse": True}, "path", "ending in '/'"),
        ({"path": "/tmp/d/", "source": "s/", "recurse": True}, "source", "absolute path"),
        ({"path": "/tmp/d/", "source": "/tmp/d/s/", "recurse": True}, "source", "contain"),
        ({"path": "/tmp/f", "state": "exists", "recurse": True}, "recurse", "directory path"),
        ({"path": "/tmp/f", "recurse": True, "purge": True}, "recurse", "directory path"),
        ({"path": "/tmp/f", "content": "a", "fragments": ["/a"]}, "fragments", "content"),
        ({"path": "/tmp/d/", "fragments": ["/a"]}, "fragments", "directory path"),
        ({"path": "/tmp/f", "fragments": ["/a", "b"]}, "fragments[1]", "absolute"),
        ({"path": "/tmp/f", "symlink": True}, "symlink", "needs source"),
        ({"path": "/tmp/d/", "symlink": True, "source": "x"}, "symlink", "does not end"),
        ({"path": "/tmp/f", "symlink": True, "source": "x", "mode": "0644"}, "mode", "symlink"),
        ({"path": "/tmp/f", "selinux": "bin_t"}, "selinux", "expected a context"),
        ({"path": "/tmp/d/", "state": "exists", "purge": True}, "purge", "needs recurse"),
        ({"path": "/tmp/d/", "state": "exists", "replace": False}, "replace", "only a file"),
        (
            {"path": "/tmp/d/", "source": "/tmp/s/", "recurse": True, "recurse_mode": True},
            "recurse_mode",
            "needs mode, source",
        ),
        ({"path": "/tmp/f", "mode": "0999"}, "mode", "expected octal like '0644'"),
        ({"path": "/tmp/f", "mode": "rw"}, "mode", "got 'rw'"),
        ({"path": "/tmp/f", "mode": "u+q"}, "mode", "symbolic"),
        ({"path": "/tmp/f", "mode": ""}, "mode", "got ''"),
        ({"path": "/tmp/f", "owner": ""}, "owner", "a name or a numeric id"),
        ({"path": "/tmp/f", "group": "4294967295"}, "group", "numeric id up to"),
        ({"path": "/tmp/f", "owner": "\u00b2"}, "owner", "a name or a numeric id"),
        ({"path": "/tmp/f", "group": "\u0663"}, "group", "a name or a numeric id"),
        ({"path": "/tmp/f", "owner": "a:b"}, "owner", "a name or a numeric id"),
    ],
)
def test_validate_rejects(params: dict[str, Any], key: str, message: str) -> None:
    res = FileRes(name=params.pop("name", "test"), **params)
    with pytest.raises(ValidationError, match=message) as info:
        res.validate()
    assert info.value.key == key


@pytest.mark.parametrize(
    "params",
    [
        {"name": "/tmp/mgmt/f", "content": "x"},
        {"path": "/tmp/d/", "source": "/tmp/s/", "recurse": True, "purge": True},
        {"path": "/tmp/d/", "state": "absent", "recurse": True, "force": True},
        {"path": "/tmp/f", "mode": "u=rw,go=r", "owner": "root", "group": "0"},
        {"path": "/tmp/f", "source": "/tmp/s"},
    ],
)
def test_validate_accepts(params: dict[str, Any]) -> None:
    FileRes(name=params.pop("name", "test"), **params).validate()


# watch -------------------------------------------------------------------------------------


def overwrite(path: Path) -> None:
    path.write_text("changed")


def replace_by_rename(path: Path) -> None:
    (path.parent / "new").write_text("changed")
    os.replace(path.parent / "new", path)


@pytest.mark.parametrize(
    "drift",
    [Path.unlink, overwrite, replace_by_rename, lambda p: p.chmod(0o600)],
    ids=["rm", "overwrite", "rename-over", "chmod"],
)
async def test_watch_sees_drift(tmp_path: Path, run_resource: Any, drift: Any) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    running = await run_resource(FileRes(name="f", path=str(path), content="x"))
    drift(path)
    await running.handle.next_event()


async def test_watch_then_repair(tmp_path: Path, run_resource: Any) -> None:
    """The daemon's loop: drift -> event -> check_apply repairs; what the repair itself
    causes is subsumed by the check after it (settle), so no event is left over."""
    path = tmp_path / "f"
    res = FileRes(name="f", path=str(path), content="x\n", mode="0640")
    running = await run_resource(res)
    await converges(res)
    assert await running.handle.no_event()  # our own rename was not reported
    for drift in (Path.unlink, overwrite, lambda p: p.chmod(0o777)):
        drift(path)
        await running.handle.next_event()
        await converges(res)
        assert (path.read_text(), bits(path)) == ("x\n", 0o640)
        assert await running.handle.no_event()


async def test_watch_sees_missing_parents_appear(tmp_path: Path, run_resource: Any) -> None:
    path = tmp_path / "a" / "b" / "f"
    running = await run_resource(FileRes(name="f", path=str(path), content="x"))
    (tmp_path / "a").mkdir()
    await running.handle.next_event()
    (tmp_path / "a" / "b").mkdir()
    await running.handle.next_event()
    path.write_text("y")
    await running.handle.next_event()


async def test_watch_sees_source_changes(tmp_path: Path, run_resource: Any) -> None:
    src = tmp_path / "src"
    make_tree(src)
    res = FileRes(name="d", path=f"{tmp_path}/dst/", source=f"{src}/", recurse=True)
    running = await run_resource(res)
    (src / "sub" / "deeper" / "c").write_text("new")
    await running.handle.next_event()


async def test_watch_follows_a_moved_link(tmp_path: Path, run_resource: Any) -> None:
    one, two, link = tmp_path / "one", tmp_path / "two", tmp_path / "link"
    one.write_text("1")
    two.write_text("2")
    link.symlink_to(one)
    running = await run_resource(FileRes(name="l", path=str(link), content="x", follow=True))
    one.chmod(0o600)
    await running.handle.next_event()
    (tmp_path / "relink").symlink_to(two)
    os.replace(tmp_path / "relink", link)
    while str(two) not in running.res._watching:  # re-watched, then sent a catch-up event
        await running.handle.next_event()
    two.chmod(0o600)
    await running.handle.next_event()


async def test_a_cancelled_check_waits_for_its_thread_before_closing_descriptors() -> None:
    """A thread still using the check's directory descriptors outlives no close of them."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def step() -> None:
        started.set()
        release.wait(10)
        finished.set()

    task = asyncio.ensure_future(_in_thread(step))
    assert await asyncio.to_thread(started.wait, 10)  # the thread runs the step
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.2)  # a task that did not wait ends at once
    assert not done  # cancelled, yet still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


# mgmt's purge without a source, fragments, symlink, selinux ---------------------------------


async def test_purge_without_source_keeps_what_the_graph_manages(
    tmp_path: Path, run_resource: Any
) -> None:
    """mgmt's purge1 example: everything below the directory that no other file resource of
    the graph manages goes; the managed paths and the directories on the way stay."""
    top = tmp_path / "d"
    (top / "sub").mkdir(parents=True)
    (top / "kept").mkdir()
    (top / "fileA").write_text("a")
    (top / "stray").write_text("x")
    (top / "sub" / "deep").write_text("y")
    (top / "kept" / "z").write_text("z")
    (top / "kept" / "w").write_text("w")
    (top / "link").symlink_to(tmp_path)  # removed itself, never followed
    res = FileRes(name="d", path=f"{top}/", state="exists", recurse=True, purge=True)
    running = await run_resource(res, watch=False)
    peers = [FileRes(name=str(top / n), state="exists") for n in ("fileA", "kept/z")]
    running.handle.graph = [res, *peers, FileRes(name=str(tmp_path / "elsewhere"))]
    await noop_reports(res, tmp_path)
    await converges(res)
    assert sorted(str(p.relative_to(top)) for p in top.rglob("*")) == ["fileA", "kept", "kept/z"]
    assert (tmp_path / "d").exists()
    (top / "new").write_text("n")
    await converges(res)
    assert not (top / "new").exists()


async def test_purge_without_source_watches_the_tree(tmp_path: Path, run_resource: Any) -> None:
    """A stray file in a kept subdirectory is an event, so the daemon purges it at once."""
    top = tmp_path / "d"
    (top / "kept").mkdir(parents=True)
    (top / "kept" / "z").write_text("z")
    res = FileRes(name="d", path=f"{top}/", state="exists", recurse=True, purge=True)
    running = await run_resource(res)
    running.handle.graph = [res, FileRes(name=str(top / "kept" / "z"), state="exists")]
    assert await res.check_apply(True) is True  # nothing stray yet
    (top / "kept" / "stray").write_text("x")
    await running.handle.next_event()
    await converges(res)
    assert sorted(p.name for p in (top / "kept").iterdir()) == ["z"]


async def test_fragments_build_the_content_and_are_watched(
    tmp_path: Path, run_resource: Any
) -> None:
    frags, bonus, whole = tmp_path / "frags", tmp_path / "bonus", tmp_path / "whole"
    frags.mkdir()
    (frags / "f2").write_text("two\n")
    (frags / "f1").write_text("one\n")
    (frags / "sub").mkdir()  # one level only: a directory in it is not a fragment
    (frags / "ln").symlink_to(bonus)  # nothing below a fragment directory is followed
    bonus.write_text("bonus\n")
    res = FileRes(name=str(whole), state="exists", fragments=[f"{frags}/", str(bonus)])
    res.validate()
    running = await run_resource(res)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert whole.read_text() == "one\ntwo\nbonus\n"
    (frags / "f1").write_text("ONE\n")
    await running.handle.next_event()
    await converges(res)
    assert whole.read_text() == "ONE\ntwo\nbonus\n"
    assert [u.key for req in res.autoedges()[1:] for u in req] == [f"{frags}/", str(bonus)]


async def test_a_missing_fragment_fails_clearly(tmp_path: Path, run_resource: Any) -> None:
    res = await make(run_resource, path=str(tmp_path / "w"), fragments=[str(tmp_path / "no")])
    with pytest.raises(ResourceError, match=r"fragments\[0\]: cannot open .*no"):
        await res.check_apply(True)


async def test_symlink_timeline(tmp_path: Path, run_resource: Any) -> None:
    link, target = tmp_path / "link", tmp_path / "target"
    target.mkdir()
    res = await make(run_resource, path=str(link), state="exists", source="food/", symlink=True)
    await noop_reports(res, tmp_path)
    await converges(res)
    assert os.readlink(link) == "food/"  # relative, need not exist
    link.unlink()
    link.symlink_to(target)  # pointed elsewhere: replaced, the old target is not touched
    await converges(res)
    assert os.readlink(link) == "food/"
    assert target.is_dir()
    assert temp_files(tmp_path) == []


async def test_symlink_replaces_a_file_only_with_force(tmp_path: Path, run_resource: Any) -> None:
    link = tmp_path / "link"
    link.write_text("data")
    res = await make(run_resource, path=str(link), source="/etc/hostname", symlink=True)
    with pytest.raises(ResourceError, match="is a file, expected a symlink: set force"):
        await res.check_apply(True)
    forced = await make(
        run_resource, name="f", path=str(link), source="/etc/hostname", symlink=True, force=True
    )
    await converges(forced)
    assert os.readlink(link) == "/etc/hostname"


async def test_selinux_without_selinux_is_a_clear_error(tmp_path: Path, run_resource: Any) -> None:
    if selinux_enabled():
        pytest.skip("SELinux is enabled here: this test covers hosts without it")
    path = tmp_path / "f"
    res = await make(
        run_resource, path=str(path), content="x", selinux="system_u:object_r:bin_t:s0"
    )
    with pytest.raises(ResourceError, match="selinux: SELinux is not enabled on this host"):
        await res.check_apply(True)
    assert not path.exists()  # nothing applied


def _checks_counted(engine: Any) -> dict[str, int]:
    """The check_applies of `engine`'s resources from now on, by name."""
    from engine.events import CheckApplied

    checks: dict[str, int] = {}
    engine.listeners.subscribe(
        CheckApplied,
        lambda e: checks.__setitem__(e.vertex.res.name, checks.get(e.vertex.res.name, 0) + 1),
    )
    return checks


@pytest.mark.parametrize("max_checks", [0, 4])
async def test_a_first_run_checks_each_file_once(tmp_path: Path, max_checks: int) -> None:
    """A first run in a missing directory: one check_apply per file (and one more for the
    file that made the directory, whose creation is someone else's event for it). Before,
    the directory's appearance and each file's own rename were each checked again; and with
    fewer check slots than files (10,000 files, 5,000 slots), a file whose check waited for a
    slot while the directory appeared was checked twice: the event counted against a check
    that had not started yet."""
    from engine.engine import Engine
    from engine.graph import Graph
    from tests.engine.conftest import settle

    out = tmp_path / "out"
    graph = Graph("files")
    for i in range(40):
        graph.add(FileRes(name=f"f{i}", path=f"{out}/f{i}", content=f"number {i}\n"))
    engine = Engine(hostname="test", prefix=tmp_path / "prefix", max_checks=max_checks)
    checks = _checks_counted(engine)
    try:
        await engine.apply(graph)
        await settle(engine)
        assert len(checks) == 40
        assert sum(checks.values()) <= 41, checks
        # Someone else's change is still seen; and the directory's events come in order, so
        # once it is repaired any late event about our own writes has been read and checked.
        (out / "f7").write_text("drift\n")
        await settle(engine, lambda: checks["f7"] >= 2)
        await settle(engine)
        assert (out / "f7").read_text() == "number 7\n"
        assert sum(n for name, n in checks.items() if name != "f7") <= 40, checks
    finally:
        await engine.stop(graceful=False)


async def test_a_drift_in_a_managed_directory_checks_that_file_alone(tmp_path: Path) -> None:
    """A managed directory's state does not depend on its entries: a file of it deleted or
    chmod-ed is repaired without a check of the directory. Before, the directory was checked
    for each event of the file's repair (~4), and each check poked all of its files (through
    their automatic edges): 1,000 files in a directory made each repair ~35 ms of CPU, not 1."""
    from engine.engine import Engine
    from engine.graph import Graph
    from tests.engine.conftest import settle

    out = tmp_path / "out"
    graph = Graph("files")
    graph.add(FileRes(name="dir", path=f"{out}/", mode="0755"))
    for i in range(20):
        graph.add(FileRes(name=f"f{i}", path=f"{out}/f{i}", content=f"number {i}\n"))
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")
    checks = _checks_counted(engine)
    try:
        await engine.apply(graph)
        await settle(engine)
        assert any(len(edges) == 20 for edges in engine.graph.succ.values())  # autoedges
        checks.clear()
        (out / "f7").unlink()
        await settle(engine, lambda: checks.get("f7", 0) >= 1)
        await settle(engine)
        # The directory's events come in order: once a later drift is repaired, those of
        # f7's repair have been read (and their checks run, settle()).
        os.chmod(out / "f3", 0o600)
        await settle(engine, lambda: checks.get("f3", 0) >= 1)
        await settle(engine)
        assert (out / "f7").read_text() == "number 7\n"
        assert checks == {"f7": 1, "f3": 1}
        # The directory's own drift is still an event, and repaired.
        os.chmod(out, 0o700)
        await settle(engine, lambda: checks.get("dir", 0) >= 1)
        await settle(engine)
        assert stat.S_IMODE(out.stat().st_mode) == 0o755
    finally:
        await engine.stop(graceful=False)


async def test_a_file_is_repaired_after_rm_rf_of_its_tree_made_again_while_held(
    tmp_path: Path,
) -> None:
    """`rm -rf top` while something holds top/out (a shell in it, the file's spare), the tree
    made again before the agent reads the removal, then removed again, and again: each time
    the file is repaired, and so is a drift afterwards. Before, the watch above top/out stayed
    on the removed top (held through top/out): the second removal went unseen, and nothing
    was repaired until the holders let go (tests/e2e/test_cli.py's rm -rf test waited ~10 s
    for a repair once, its shell holding the directory)."""
    from engine.engine import Engine
    from engine.graph import Graph
    from tests.engine.conftest import settle

    top = tmp_path / "top"
    path = top / "out" / "hello"
    graph = Graph("files")
    graph.add(FileRes(name="hello", path=str(path), content="hello world\n"))
    engine = Engine(hostname="test", prefix=tmp_path / "prefix")

    def repaired() -> bool:
        try:
            return path.read_text() == "hello world\n"
        except OSError:
            return False

    held: list[int] = []
    try:
        await engine.apply(graph)
        await settle(engine, repaired)
        for attempt in range(3):
            held.append(os.open(path.parent, os.O_RDONLY))  # as a shell's cwd would
            shutil.rmtree(top)
            if attempt == 0:  # made again in the same step of the loop: read after
                path.parent.mkdir(parents=True)
            await settle(engine, repaired)
        path.unlink()
        await settle(engine, repaired)
    finally:
        for fd in held:
            os.close(fd)
        await engine.stop(graceful=False)


def test_the_files_of_a_directory_share_their_list_of_parents() -> None:
    """autoedges() asks for the nearest managed parent directory; the list of parents is
    built once per directory, not once per file (half of add_autoedges at 10,000 files)."""
    a = FileRes(name="a", path="/srv/data/a", content="a\n")
    b = FileRes(name="b", path="/srv/data/b", content="b\n")
    want = [UID("file", "/srv/data/"), UID("file", "/srv/"), UID("file", "/")]
    assert a.autoedges() == [want] and b.autoedges() == [want]
    assert a.autoedges()[0] is b.autoedges()[0]
    assert FileRes(name="top", path="/top", content="").autoedges() == [[UID("file", "/")]]
    # Only beside a package: the package owning it (a directory is not asked for).
    pkg = frozenset({"pkgfile"})
    assert a.lazy_autoedges(pkg) == [[UID("pkgfile", "/srv/data/a")]]
    assert FileRes(name="d", path="/d/", state="exists").lazy_autoedges(pkg) == []


def test_a_checks_held_descriptors_are_all_closed_even_if_one_close_fails(tmp_path: Path) -> None:
    """Held (a check's ExitStack, leaner): what it holds is closed newest first at the end,
    each one even when closing another fails; that failure is raised."""
    from resources.file.where import Held, Where

    (tmp_path / "d").mkdir()
    closed: list[int] = []

    def failing(fd: int) -> None:
        closed.append(fd)
        raise OSError(9, "a failing close")

    with pytest.raises(OSError, match="a failing close"), Held() as held:
        first = held.enter_context(Where(str(tmp_path / "f")))
        held.callback(failing, -1)
        second = held.enter_context(Where(str(tmp_path / "d" / "g")))
        fds = (first.fd, second.fd)
    assert closed == [-1]
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_content_compared_to_the_files_end(tmp_path: Path) -> None:
    """A file's content is what is wanted only if the file ends where it does: one that grew
    after the check's lstat (its size compared then) is not taken as the wanted content."""
    from resources.file.where import same_content

    path = tmp_path / "f"
    path.write_bytes(b"wanted\n and more")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not same_content(fd, b"wanted\n", len(b"wanted\n"))
        assert same_content(fd, b"wanted\n and more", len(b"wanted\n and more"))
        assert not same_content(fd, b"wanted\n and mOre", len(b"wanted\n and mOre"))
    finally:
        os.close(fd)


def test_the_path_a_file_manages_follows_a_received_path() -> None:
    """_fs_path keeps its answer while the spec is the same object: a path received later
    (engine.resource.receive sets it, then validates; a refused one is set back) is
    normalized anew, and the one set back is answered again."""
    from engine.resource import Received, receive

    res = FileRes(name="f", path="/tmp/x//a/../f", content="x")
    res.validate()
    assert res._fs_path == "/tmp/x/f"
    receive(res, {"path": Received("/srv//new/./f", "exec[e].output")})
    assert res._fs_path == "/srv/new/f"
    with pytest.raises(ResourceError):
        receive(res, {"path": Received("relative", "exec[e].output")})
    assert res.path == "/srv//new/./f"
    assert res._fs_path == "/srv/new/f"
    assert FileRes(name="/etc//g", content="x")._fs_path == "/etc/g"  # the name, no path


async def test_a_check_aside_leaves_the_watcher_to_the_loop(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path on a file system that can stop answering, watched without a task (listen(): the
    engine's way for a plain file), repaired by its check aside: the agent's watcher (its
    expected renames, the hub's inotify drain and re-sync, the reports they make) is touched on
    the loop only, never from the check's thread (was: _rename_in's expecting() ran there).
    The mount came after the watch was placed; before it, listen() leaves it to a task."""
    from engine import hangfs, watcher

    top, mounted = str(tmp_path), [False]
    monkeypatch.setattr(
        hangfs, "kind_of", lambda p: "nfs4" if mounted[0] and p.startswith(top) else None
    )
    loop_thread = threading.get_ident()
    touched: list[int] = []
    enter = watcher._Expecting.__enter__

    def spied(self: Any) -> Any:
        touched.append(threading.get_ident())
        return enter(self)

    monkeypatch.setattr(watcher._Expecting, "__enter__", spied)
    path = tmp_path / "f"
    path.write_text("old\n")
    res = await make(run_resource, path=str(path), content="new\n")
    close = res.listen(lambda: None, lambda err: None)
    try:
        mounted[0] = True  # the mount table changed since: an NFS mount there now
        await converges(res)
    finally:
        if close is not None:
            close()
    assert path.read_text() == "new\n"
    assert all(ident == loop_thread for ident in touched)


def held_writes(
    monkeypatch: pytest.MonkeyPatch, which: Any
) -> tuple[threading.Event, threading.Event]:
    """(started, release): the writes of the file resources `which(res)` picks wait, in their
    thread, until `release` is set (at most 30 s), `started` set as the first begins: a write
    on a file system that does not answer."""
    started, release = threading.Event(), threading.Event()
    rename_in = FileRes._rename_in

    def held(write: Any) -> None:
        started.set()
        release.wait(30)
        write()

    async def spied(self: FileRes, write: Any, inline: bool = False) -> None:
        await rename_in(self, functools.partial(held, write) if which(self) else write, inline)

    monkeypatch.setattr(FileRes, "_rename_in", spied)
    return started, release


async def test_a_write_aside_that_waits_holds_no_local_write(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a check aside waits in its write (a file system that does not answer), a local
    file's repair on the loop is checked as without it: the write aside is not one of the
    loop's writes in flight (was: it counted in _writing, from its own thread, unlocked:
    every local first write and repair took the I/O-thread path, and _written let go of no
    batch's old inodes, while it waited; a lost update left the count wrong for good)."""
    from engine import hangfs

    far, near = tmp_path / "far", tmp_path / "near"
    far.mkdir()
    near.mkdir()
    monkeypatch.setattr(hangfs, "kind_of", lambda p: "nfs4" if p.startswith(str(far)) else None)
    started, release = held_writes(monkeypatch, lambda res: res._fs_path.startswith(str(far)))
    (far / "f").write_text("old\n")
    (near / "f").write_text("old\n")
    aside = await make(run_resource, name="far", path=str(far / "f"), content="new\n")
    local = await make(run_resource, name="near", path=str(near / "f"), content="new\n")
    close = local.listen(lambda: None, lambda err: None)
    waiting = asyncio.create_task(aside.check_apply(True))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        assert not local._creates_in_thread()  # none of the loop's writes is in flight
        assert await local.check_apply(True) is False
        assert (near / "f").read_text() == "new\n"
    finally:
        release.set()
        assert await waiting is False
        if close is not None:
            close()
    assert (far / "f").read_text() == "new\n"


async def test_a_check_aside_that_waits_is_waited_for_once_the_mount_is_gone(
    tmp_path: Path, run_resource: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check aside cut short (a meta timeout) still waits in its write; the mount leaves the
    table (`umount -l`, a hung NFS server's remedy): the next check fails at once, as while it
    was mounted (was: it ran on the loop, beside the thread still in the same resource's check,
    both changing its fields and its file)."""
    from engine import hangfs
    from resources.file import aside as aside_module

    top, mounted = str(tmp_path), [True]
    monkeypatch.setattr(
        hangfs, "kind_of", lambda p: "nfs4" if mounted[0] and p.startswith(top) else None
    )
    started, release = held_writes(monkeypatch, lambda res: mounted[0])
    ended = asyncio.Event()
    told = aside_module.Aside._ended

    def spied_end(self: Any, future: Any, result: Any) -> None:
        told(self, future, result)
        ended.set()

    monkeypatch.setattr(aside_module.Aside, "_ended", spied_end)
    path = tmp_path / "f"
    path.write_text("old\n")
    res = await make(run_resource, path=str(path), content="new\n")
    waiting = asyncio.create_task(res.check_apply(True))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        mounted[0] = False
        with pytest.raises(ResourceError, match="its last check still waits"):
            await res.check_apply(True)
        assert path.read_text() == "old\n"
    finally:
        release.set()
    await asyncio.wait_for(ended.wait(), 30)  # its thread's end reached the loop
    assert res.waiting_on() is None
    assert path.read_text() == "new\n"  # written by the thread, once it could
    assert await res.check_apply(True) is True  # on the loop now: nothing left to do
