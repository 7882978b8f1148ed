"""engine.safefs on a real file system: the safe-path walk, atomic writes, leftovers, private dirs."""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from engine import libc, safefs, uring
from engine.errors import Interfered, ResourceError

NOBODY = 65534
STAFF = 50  # Debian's staff: a group of users (/usr/local was 2775 root:staff)
LOGGED_AS = {"res_kind": "http:server", "res_name": "t"}  # a served path's refusals


def bits(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def planted(link: Path, target: Path, uid: int = NOBODY) -> Path:
    """A symlink link -> target owned by uid (as another user would have planted it)."""
    link.symlink_to(target)
    os.lchown(link, uid, uid)
    return link


# the walk --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: with the openat2 fast path, and walking component by component only."""
    if request.param == "walk":
        monkeypatch.setattr(safefs, "_openat2_usable", [])


def test_walk_refuses_a_link_owned_by_another_user(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    link = planted(tmp_path / "link", victim)
    with pytest.raises(safefs.UnsafePathError, match=f"symlink {link} .*owned by uid {NOBODY}"):
        safefs.walk(f"{link}/sub")


def test_walk_refuses_a_root_link_in_a_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (tmp_path / "real").mkdir()
    link = planted(shared / "link", tmp_path / "real", uid=0)
    with pytest.raises(safefs.UnsafePathError, match="can be written by others"):
        safefs.walk(str(link))


def test_safe_link_names_who_controls_the_link(tmp_path: Path) -> None:
    """The rule `follow: true` applies to the link it follows: each refusal says why."""
    theirs = tmp_path / "A"
    theirs.mkdir()
    planted(theirs / "mine", tmp_path, uid=0)
    planted(theirs / "theirs", tmp_path)
    theirs.chmod(0o755)
    with safefs.closing(os.open(theirs, os.O_PATH)) as fd:
        assert safefs.safe_link(fd, "mine", f"{theirs}/mine") == str(tmp_path)
    os.chown(theirs, NOBODY, NOBODY)
    with safefs.closing(os.open(theirs, os.O_PATH)) as fd:
        with pytest.raises(safefs.UnsafePathError, match=f"symlink {theirs}/theirs .*uid {NOBODY}"):
            safefs.safe_link(fd, "theirs", f"{theirs}/theirs")
        with pytest.raises(
            safefs.UnsafePathError, match=f"its directory {theirs} is owned by uid {NOBODY}"
        ):
            safefs.safe_link(fd, "mine", f"{theirs}/mine")


def test_walk_follows_a_link_only_root_controls(tmp_path: Path) -> None:
    """Like /var/run -> /run: owned by root, in a directory only root can write."""
    (tmp_path / "run" / "sub").mkdir(parents=True)
    tmp_path.chmod(0o755)
    (tmp_path / "var").symlink_to("run")  # relative, as on real systems
    fd, missing = safefs.walk(f"{tmp_path}/var/sub/new/deeper")
    with safefs.closing(fd):
        assert missing == ["new", "deeper"]
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "run" / "sub"))


def _read(path: str | Path) -> bytes:
    with open(safefs.open_trusted(str(path)), "rb") as handle:
        return handle.read()


def test_open_trusted_follows_our_links_as_the_kernel_does(tmp_path: Path) -> None:
    """Absolute, relative, chained, `..` after a link (physical: from the link's target), the
    last component and the parents; a directory opens too."""
    tmp_path.chmod(0o755)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("f")
    (tmp_path / "l1").symlink_to("a/b")  # l1/../f is a/f, not tmp_path/f
    (tmp_path / "l2").symlink_to(tmp_path / "l3")
    (tmp_path / "l3").symlink_to("a/f")
    assert _read(f"{tmp_path}/l1/../f") == b"f"
    assert _read(f"{tmp_path}/l2") == b"f"
    with safefs.closing(safefs.open_trusted(f"{tmp_path}/l1")) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))
    with safefs.closing(safefs.open_trusted("/")) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat("/"))


def test_open_trusted_refuses_a_link_another_user_controls(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret")
    link = planted(tmp_path / "last", secret)
    with pytest.raises(safefs.UnsafePathError, match=f"symlink {link} .*owned by uid {NOBODY}"):
        safefs.open_trusted(str(link))
    (tmp_path / "ours").symlink_to("last")  # ours, to theirs: theirs is still refused
    with pytest.raises(safefs.UnsafePathError, match=f"symlink {link} .*owned by uid {NOBODY}"):
        safefs.open_trusted(str(tmp_path / "ours"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted(shared / "root", secret, uid=0)  # root's, in a directory others can write
    with pytest.raises(safefs.UnsafePathError, match="can be written by others"):
        safefs.open_trusted(str(shared / "root"))


def test_open_trusted_ends_a_loop_says_what_is_missing_and_leaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "x").symlink_to("y")
    (tmp_path / "y").symlink_to("x")
    with pytest.raises(OSError) as err:
        safefs.open_trusted(str(tmp_path / "x"))
    assert err.value.errno == errno.ELOOP
    with pytest.raises(FileNotFoundError):
        safefs.open_trusted(str(tmp_path / "none" / "f"))
    (tmp_path / "dangling").symlink_to("none")
    with pytest.raises(FileNotFoundError):
        safefs.open_trusted(str(tmp_path / "dangling"))
    (tmp_path / "f").write_text("f")
    (tmp_path / "abs").symlink_to(tmp_path / "f")
    (tmp_path / "rel").symlink_to("abs")
    (tmp_path / "d").mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for path in ("x", "none/f", "dangling", "y"):
        with pytest.raises(OSError):
            safefs.open_trusted(str(tmp_path / path))
    for path in ("f", "abs", "rel", "d/../rel"):
        assert _read(tmp_path / path) == b"f"
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor left open


def test_walk_names_a_component_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        safefs.walk(f"{tmp_path}/f/sub")


def test_walk_creates_with_the_exact_mode_whatever_the_umask(
    tmp_path: Path, umask_077: None
) -> None:
    with safefs.closing(safefs.open_dir(f"{tmp_path}/a/b", create=0o755)):
        pass
    assert bits(tmp_path / "a") == bits(tmp_path / "a" / "b") == 0o755


# atomic writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named-temp"])
@pytest.mark.parametrize("final", [0o644, 0o600, 0o400, 0o4755])
def test_the_temp_file_is_never_wider_than_the_final_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool, final: int
) -> None:
    monkeypatch.setattr(safefs, "_HAS_PROC", unnamed)  # the fallback: a named temp file
    seen: list[tuple[int, list[str]]] = []

    def fill(out: BinaryIO) -> None:
        out.write(b"secret")
        temps = [n for n in os.listdir(tmp_path) if n.startswith(safefs.TEMP_PREFIX)]
        seen.append((stat.S_IMODE(os.fstat(out.fileno()).st_mode), temps))

    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        safefs.write_at(fd, "f", fill, mode=final)
    [(mode, temps)] = seen
    assert mode & ~final == 0 and mode & ~0o600 == 0
    assert (len(temps) == 0) is unnamed  # O_TMPFILE: no name while it is written
    assert all(safefs.TEMP_NAME.fullmatch(n) and len(n) == len(".mgmt.") + 12 for n in temps)
    assert bits(tmp_path / "f") == final
    assert (tmp_path / "f").read_bytes() == b"secret"
    assert os.listdir(tmp_path) == ["f"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def fill(out: BinaryIO) -> None:
        out.write(b"half")
        raise OSError(28, "No space left on device")

    (tmp_path / "f").write_text("old")
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd, pytest.raises(OSError):
        safefs.write_at(fd, "f", fill, mode=0o644)
    assert os.listdir(tmp_path) == ["f"]
    assert (tmp_path / "f").read_text() == "old"


def test_a_small_write_keeps_the_gil_for_its_quick_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small content is written, chmodded, linked, renamed and closed through engine/libc.py
    (the GIL held), not through `os` (which releases it and then waits for it, behind a busy
    event loop); a content over QUICK_WRITE goes through `os`, as before."""

    def released(*_args: object) -> None:
        raise AssertionError("a call that releases the GIL")

    monkeypatch.setattr(
        safefs, "_RELEASING", safefs._Calls(*[released] * len(safefs._Calls.__slots__))
    )
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        safefs.write_at(fd, "small", b"x" * safefs.QUICK_WRITE, mode=0o640)
        with pytest.raises(AssertionError, match="releases the GIL"):
            safefs.write_at(fd, "big", b"x" * (safefs.QUICK_WRITE + 1), mode=0o640)
    assert (tmp_path / "small").read_bytes() == b"x" * safefs.QUICK_WRITE
    assert bits(tmp_path / "small") == 0o640
    assert os.listdir(tmp_path) == ["small"]  # the big one's temp file was removed
    # On a file system not known to be local (NFS...), a rename may wait for a server: `os`.
    monkeypatch.setattr(libc, "LOCAL_FS", frozenset())
    with (
        safefs.closing(safefs.open_dir(str(tmp_path))) as fd,
        pytest.raises(AssertionError, match="releases the GIL"),
    ):
        safefs.write_at(fd, "remote", b"small", mode=0o640)


def test_a_new_file_is_linked_at_its_name_without_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_at(new=True): the complete file is linked at its name, no temp name renamed
    (each a search of the directory); a name that appeared meanwhile is replaced as ever."""
    renamed: list[str] = []
    real = safefs._HOLDING

    def rename(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
        renamed.append(dst)
        real.rename(src_fd, src, dst_fd, dst)

    holding = safefs._Calls(real.write_all, real.fchmod, real.link, rename, real.close)
    monkeypatch.setattr(safefs, "_HOLDING", holding)
    (tmp_path / "there").write_text("old")
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        safefs.write_at(fd, "new", b"fresh", mode=0o640, new=True)
        safefs.write_at(fd, "there", b"replaced", mode=0o640, new=True)
    assert renamed == ["there"]
    assert (tmp_path / "new").read_bytes() == b"fresh"
    assert bits(tmp_path / "new") == 0o640
    assert (tmp_path / "there").read_bytes() == b"replaced"
    assert sorted(os.listdir(tmp_path)) == ["new", "there"]  # no temp file left


def test_the_file_system_of_a_descriptor_is_known_from_mountinfo(tmp_path: Path) -> None:
    """local_fs: this machine's tmp_path is on a local file system (ext4, tmpfs, ...); /proc
    is not one of them."""
    with safefs.closing(safefs.open_dir(str(tmp_path))) as here:
        assert libc.local_fs(here)
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)
    try:
        assert not libc.local_fs(proc)
    finally:
        os.close(proc)


def test_mountinfo_read_with_the_gil_held_gives_each_devices_type() -> None:
    """The types read by libc's own calls are those of the file as `open()` reads it, for every
    device (the kernel's file: its fields "major:minor", then " - " and the type)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        lines = mounts.read().splitlines()
    want: dict[tuple[int, int], str] = {}
    for line in lines:
        fields, _dash, rest = line.partition(" - ")
        major, minor = fields.split()[2].split(":")
        want.setdefault((int(major), int(minor)), rest.split()[0])
    assert libc._mount_types() == want
    assert "proc" in want.values()


def test_a_device_not_known_yet_asked_by_many_threads_at_once(tmp_path: Path) -> None:
    """A first run's I/O threads ask for their directory's device at once: one reads the
    mounts (the others wait for it, under a lock), and each gets the answer."""
    here = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        ident = libc.file_id(here)
        libc._fs_types.pop(ident[:2], None)
        start = threading.Barrier(8)

        def ask(_: int) -> bool:
            start.wait(30)  # bounds a hang only
            return libc.local_dev(ident)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(ask, range(8)))
        assert libc.local_fs(here)
    finally:
        os.close(here)


def test_a_small_writes_errors_name_what_os_names(tmp_path: Path) -> None:
    """The libc calls' errors are the OSError subclasses, with the names, that `os` gives: a
    rename onto a directory, a failed write of a small file, leave nothing behind."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep")
    with (
        safefs.closing(safefs.open_dir(str(tmp_path))) as fd,
        pytest.raises(IsADirectoryError) as raised,
    ):
        safefs.write_at(fd, "d", b"small", mode=0o644)
    err = raised.value
    assert err.filename.startswith(safefs.TEMP_PREFIX) and err.filename2 == "d"
    assert str(err).endswith(f"'{err.filename}' -> 'd'")
    assert sorted(os.listdir(tmp_path)) == ["d"]
    with pytest.raises(FileNotFoundError) as missing:
        libc.rename(-100, str(tmp_path / "absent"), -100, str(tmp_path / "there"))
    assert (missing.value.filename, missing.value.filename2) == (
        str(tmp_path / "absent"),
        str(tmp_path / "there"),
    )
    with pytest.raises(OSError) as bad:
        libc.fchmod(-1, 0o644)
    assert bad.value.errno == errno.EBADF


def test_an_unnamed_file_made_ahead_is_linked_in_later(tmp_path: Path) -> None:
    """unnamed_at: complete (content, mode) but invisible until link_at renames it in place."""
    (tmp_path / "f").write_text("old")
    with safefs.closing(safefs.open_dir(str(tmp_path))) as dir_fd:
        made = safefs.unnamed_at(dir_fd, lambda out: out.write(b"new"), mode=0o640)
        assert made is not None
        with safefs.closing(made):
            assert os.listdir(tmp_path) == ["f"]
            assert (tmp_path / "f").read_text() == "old"
            safefs.link_at(dir_fd, "f", made)
            assert os.fstat(made).st_ino == (tmp_path / "f").stat().st_ino
    assert os.listdir(tmp_path) == ["f"]
    assert ((tmp_path / "f").read_text(), bits(tmp_path / "f")) == ("new", 0o640)


def test_a_write_cut_short_by_another_removal_says_interfered(tmp_path: Path) -> None:
    """Its temp name (an `rm -rf` listed it between the link and the rename), or the
    directory, removed by another: errors.Interfered, the engine checks the resource again."""
    with safefs.closing(safefs.open_dir(str(tmp_path))) as dir_fd:
        with pytest.raises(Interfered), safefs._temp(dir_fd) as tmp:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd))
            os.unlink(tmp, dir_fd=dir_fd)  # what another's removal does
            os.rename(tmp, "f", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        made = safefs.unnamed_at(dir_fd, b"new", mode=0o644)
        assert made is not None
        with safefs.closing(made):
            os.mkdir(tmp_path / "d")
            with safefs.closing(safefs.open_dir(str(tmp_path / "d"))) as gone:
                os.rmdir(tmp_path / "d")
                with pytest.raises(Interfered) as caught:
                    safefs.link_at(gone, "f", made)
    assert caught.value.errno == errno.ENOENT and os.listdir(tmp_path) == []


def test_a_write_replaces_a_symlink_and_never_follows_it(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("victim")
    (tmp_path / "f").symlink_to(tmp_path / "victim")
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        safefs.write_at(fd, "f", lambda out: out.write(b"new"), mode=0o600)
        with pytest.raises(ResourceError, match="became a symlink"):
            (tmp_path / "g").symlink_to(tmp_path / "victim")
            safefs.set_attrs(fd, "g", mode=0o600)
    assert not (tmp_path / "f").is_symlink()
    assert (tmp_path / "victim").read_text() == "victim"
    assert bits(tmp_path / "victim") == 0o644


def test_set_attrs_refuses_an_inode_replaced_since_the_check(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    checked = os.lstat(tmp_path / "f")
    with open(tmp_path / "f") as keep:  # keeps the old inode (its number is not reused)
        (tmp_path / "g").write_text("y")
        os.replace(tmp_path / "g", tmp_path / "f")
        with (
            safefs.closing(safefs.open_dir(str(tmp_path))) as fd,
            pytest.raises(ResourceError, match="replaced meanwhile"),
        ):
            safefs.set_attrs(fd, "f", mode=0o600, expect=checked)
        assert stat.S_IMODE(os.fstat(keep.fileno()).st_mode) == 0o644
    assert bits(tmp_path / "f") == 0o644


# leftovers -------------------------------------------------------------------------------------


def test_stale_temps_are_ours_and_older_than_this_process(tmp_path: Path) -> None:
    old = (safefs.STARTED_NS - 10**9) / 1e9
    for name in (".mgmt.ab12_xyz", ".mgmt.0123456789ab", ".mgmt.config", ".mgmt.toolong1234567"):
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / ".mgmt.fedcba987654").symlink_to("anywhere")
    os.utime(tmp_path / ".mgmt.fedcba987654", (old, old), follow_symlinks=False)
    (tmp_path / ".mgmt.dirdirdi").mkdir()  # a directory is never one of our temps
    os.utime(tmp_path / ".mgmt.dirdirdi", (old, old))
    (tmp_path / ".mgmt.fresh0000000").write_text("a live write of another agent")
    with safefs.closing(safefs.open_dir(str(tmp_path))) as fd:
        assert safefs.stale_temps(fd) == [
            ".mgmt.0123456789ab",
            ".mgmt.ab12_xyz",
            ".mgmt.fedcba987654",
        ]


# names, private directories --------------------------------------------------------------------


def test_fit_name_hashes_what_does_not_fit() -> None:
    assert safefs.fit_name("plain", ".json") == "plain.json"
    for name in ("x" * 300, "..", "", "a/b"):
        fitted = safefs.fit_name(name, ".json")
        assert fitted.startswith("#") and len(fitted) <= safefs.NAME_MAX
    assert safefs.fit_name("é" * 126) == "é" * 126  # 252 bytes
    assert safefs.fit_name("é" * 128).startswith("#")  # 256 bytes


def test_private_dir_creates_0700_whatever_the_umask(tmp_path: Path, umask_077: None) -> None:
    os.umask(0)
    prefix = tmp_path / "prefix"
    safefs.private_dir(prefix / "reverse" / "file", root=prefix)
    for path in (prefix, prefix / "reverse", prefix / "reverse" / "file"):
        assert bits(path) == 0o700


def test_private_dir_tightens_loose_ones_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = tmp_path / "prefix"
    (prefix / "reverse").mkdir(parents=True)
    for path in (prefix, prefix / "reverse"):
        path.chmod(0o755)
    (prefix / "reverse" / "old.json").write_text("{}")
    (prefix / "reverse" / "old.json").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="engine"):
        safefs.private_dir(prefix / "reverse", root=prefix)
        safefs.private_dir(prefix / "reverse", root=prefix)
    assert bits(prefix) == bits(prefix / "reverse") == 0o700
    assert bits(prefix / "reverse" / "old.json") == 0o600
    assert [r.getMessage() for r in caplog.records] == [
        f"{prefix} was mode 0755: tightened to 0700 (and 0 files in it to 0600); it holds "
        "state such as previous file contents",
        f"{prefix / 'reverse'} was mode 0755: tightened to 0700 (and 1 files in it to 0600); "
        "it holds state such as previous file contents",
    ]


def test_private_dir_refuses_one_owned_by_another_user(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    prefix.chmod(0o777)
    os.chown(prefix, NOBODY, NOBODY)
    with pytest.raises(ResourceError, match=f"owned by uid {NOBODY}, not by this agent"):
        safefs.private_dir(prefix)
    assert bits(prefix) == 0o777


def test_private_dir_refuses_a_prefix_below_a_directory_another_user_controls(
    tmp_path: Path,
) -> None:
    """reverse/ and var/ below /tmp/mgmt/h1, /tmp/mgmt being another user's: they could
    rename h1 away and put their own in its place (the ancestor rule, as for the CA)."""
    above = tmp_path / "mgmt"
    above.mkdir()
    os.chown(above, NOBODY, NOBODY)
    prefix = above / "h1"
    with pytest.raises(ResourceError, match=f"{above} is owned by uid {NOBODY}: refusing"):
        safefs.private_dir(prefix / "reverse", root=prefix)
    assert not prefix.exists()
    os.chown(above, 0, 0)
    above.chmod(0o777)  # root's, but anyone may rename what is in it
    with pytest.raises(ResourceError, match=r"can be written by others \(mode 0777\)"):
        safefs.check_private(prefix)
    above.chmod(0o1777)  # sticky, like /tmp: fine
    safefs.private_dir(prefix / "reverse", root=prefix)
    assert bits(prefix) == bits(prefix / "reverse") == 0o700


def test_private_dir_never_changes_a_shared_directory(tmp_path: Path) -> None:
    for mode in (0o1777, 0o777, 0o775):
        shared = tmp_path / f"shared{mode:o}"
        shared.mkdir()
        os.chown(shared, -1, STAFF)  # a group of users (root's own: root's, below)
        shared.chmod(mode)
        (shared / "theirs").write_text("x")
        with pytest.raises(ResourceError, match=rf"is a shared directory \(mode {mode:04o}\)"):
            safefs.private_dir(shared / "reverse", root=shared)
        assert bits(shared) == mode and bits(shared / "theirs") == 0o644
        assert not (shared / "reverse").exists()


def test_a_private_dir_named_by_dot_dot_or_slash_is_refused_and_nothing_changes(
    tmp_path: Path,
) -> None:
    """`X/..` (or `/`, `.`) names the directory above: `--prefix /tmp/..` made `/` 0700."""
    (tmp_path / "sub").mkdir()
    tmp_path.chmod(0o755)
    for path in (tmp_path / "sub" / "..", Path("/"), Path(".")):
        with pytest.raises(ResourceError, match="name the directory itself"):
            safefs.check_private(path)
    with pytest.raises(ResourceError, match="name the directory itself"):
        safefs.private_dir(tmp_path / "sub" / "..")  # (never tried on / here: it is shared)
    assert bits(tmp_path) == 0o755


def test_a_private_dir_that_is_a_link_of_roots_is_followed_and_a_planted_one_refused(
    tmp_path: Path,
) -> None:
    """`--prefix /var/lib/mgmt` where /var/lib/mgmt -> /srv/mgmt (a relocated state dir, which
    mgmt follows): refused until 2026-12-07 ("not a directory (a symlink or a file)") while a
    link above it was followed. A link another user owns, or one in a directory another user
    may write, is still refused; links to links are followed to the end."""
    tmp_path.chmod(0o755)
    real = tmp_path / "srv" / "mgmt"
    real.mkdir(parents=True, mode=0o700)
    (tmp_path / "var").mkdir()
    link, hop = tmp_path / "var" / "mgmt", tmp_path / "hop"
    hop.symlink_to(real)
    link.symlink_to("../hop")
    assert safefs.through_links(link) == real
    safefs.check_private(link)
    safefs.private_dir(link / "var", root=link)
    assert bits(real / "var") == 0o700 and link.is_symlink()  # the link itself left as it is
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)  # a link of theirs
    with pytest.raises(ResourceError, match=f"symlink {link} .*owned by uid {NOBODY}"):
        safefs.check_private(link)
    os.chown(link, 0, 0, follow_symlinks=False)
    (tmp_path / "var").chmod(0o777)  # root's link, in a directory anyone may write
    with pytest.raises(ResourceError, match=r"can be written by others \(mode 0777\)"):
        safefs.private_dir(link / "var", root=link)
    (tmp_path / "var").chmod(0o755)
    link.unlink()
    link.symlink_to(link.name)  # a loop: ELOOP, not a hang
    with pytest.raises(OSError, match="too many symlinks"):
        safefs.check_private(link)


def test_a_relative_private_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As open() takes it: `--prefix state` was checked and made as `/state`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared").chmod(0o777)
    with pytest.raises(ResourceError, match="can be written by others"):
        safefs.check_private(Path("shared"))
    (tmp_path / "own").mkdir(mode=0o755)
    safefs.check_private(Path("own"))
    safefs.private_dir(Path("own") / "state", root=Path("own"))
    assert bits(tmp_path / "own") == bits(tmp_path / "own" / "state") == 0o700


def _unless_it_waits(fn: Callable[[], object], fifo: Path) -> object:
    """fn() in a thread; AssertionError if it still runs after 5 s (a writer is then opened
    and closed, so that a reader waiting on the FIFO returns, and the test ends)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fn)
        try:
            return future.result(timeout=5)
        except concurrent.futures.TimeoutError:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            raise AssertionError(f"waited on the FIFO {fifo}") from None


def test_a_fifo_is_refused_by_every_reader_never_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO to read waits for a writer, forever, in a thread no cancel ends: the agent
    could not stop (--max-runtime, SIGTERM), and each wait held a worker thread."""
    from engine.handle import ResourceLogger
    from resources._lib.serving import Refusals, open_file
    from resources.http_client import _read

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        _unless_it_waits(lambda: safefs.open_regular(str(fifo)), fifo)
    refused = Refusals(ResourceLogger(logging.getLogger("engine"), LOGGED_AS))
    assert _unless_it_waits(lambda: open_file(str(fifo), refused), fifo) is None  # http: 404
    assert _unless_it_waits(lambda: _read(str(fifo)), fifo) is None  # http_client: replaced
    (tmp_path / "file").write_bytes(b"x")
    fd = open_file(str(tmp_path / "file"), refused)
    assert fd is not None
    with open(fd, "rb") as served:
        assert served.read() == b"x"
    assert _read(str(tmp_path / "file")) == b"x"


def test_a_served_file_behind_a_planted_link_is_a_logged_404(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """http:server and tftp:server: a link another user controls, at a served file or on the
    way to a served root, is not followed: nothing is served (404), one warning says why."""
    from engine.handle import ResourceLogger
    from resources._lib.serving import Refusals, open_file, open_under

    (tmp_path / "secret").write_text("secret")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("secret")
    link = planted(tmp_path / "file", tmp_path / "secret")
    root = planted(tmp_path / "root", tmp_path / "d")
    refused = Refusals(ResourceLogger(logging.getLogger("engine"), LOGGED_AS))
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert open_file(str(link), refused) is None
        assert open_under(f"{root}/", "f", refused) is None
    assert [r.getMessage().split(": refusing")[0] for r in caplog.records] == [
        f"http:server[t]: not served: {link}",
        f"http:server[t]: not served: {root}/f",
    ]


def test_scan_leaves_out_an_entry_gone_before_its_lstat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sibling's temp file renamed between the listing and its lstat (two files of one
    directory written at once) is no error: the scan leaves it out."""
    (tmp_path / "kept").write_text("k")
    (tmp_path / ".mgmt.0123456789ab").write_text("t")
    real_scandir = os.scandir

    class Racing:
        """A listing whose temp file is renamed away just before its lstat."""

        def __init__(self, fd: int) -> None:
            self.it = real_scandir(fd)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            for entry in self.it:
                if entry.name.startswith(".mgmt."):
                    (tmp_path / entry.name).rename(tmp_path / "renamed")
                yield entry

        def __exit__(self, *exc: object) -> None:
            self.it.close()

    monkeypatch.setattr(safefs.os, "scandir", Racing)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = safefs.scan(fd)
    finally:
        os.close(fd)
    assert "kept" in found
    assert ".mgmt.0123456789ab" not in found


def test_a_write_in_two_parts_is_named_only_once_fsynced_and_complete(tmp_path: Path) -> None:
    """unnamed_filled then named_new (a group's writes, phased): nothing at the name until the
    second part, which names the complete file (owner, mode); a name taken meanwhile is
    replaced atomically, no temp file left."""
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fds = [
            safefs.unnamed_filled(dir_fd, f"{i}\n".encode(), mode=0o640, uid=-1, gid=-1, local=True)
            for i in range(2)
        ]
        assert all(fd is not None for fd in fds) and os.listdir(tmp_path) == []
        (tmp_path / "f1").write_text("someone else's\n")
        for i, fd in enumerate(fds):
            assert fd is not None
            safefs.named_new(dir_fd, f"f{i}", fd, data=f"{i}\n".encode(), local=True)
    finally:
        os.close(dir_fd)
    assert sorted(os.listdir(tmp_path)) == ["f0", "f1"]
    for i in range(2):
        assert (tmp_path / f"f{i}").read_text() == f"{i}\n" and bits(tmp_path / f"f{i}") == 0o640


@pytest.mark.parametrize("through", ["ring", "thread"])
def test_a_group_fsynced_together_is_named_only_where_its_fsync_succeeded(
    tmp_path: Path, through: str
) -> None:
    """A group's second parts inside named_together (its fsyncs through a real ring, or one
    after another in the thread: all before any name): each file is named by its own
    named_new, only if its fsync there succeeded; a failed fsync (a pipe's: EINVAL; its
    write-out fails before it, ignored) is that file's OSError and gives no name; a name
    taken meanwhile (a symlink to a file outside) is replaced atomically, not followed."""
    if through == "ring" and uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.write_text("victim\n")
    (tmp_path / "f2").symlink_to(victim)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    read, write = os.pipe()
    ring = uring.Ring(uring.ENTRIES) if through == "ring" else None
    try:
        fds: list[int] = []
        for i in (0, 2):
            fd = safefs.unnamed_filled(dir_fd, b"%d\n" % i, mode=0o640, uid=-1, gid=-1, local=True)
            assert fd is not None
            fds.append(fd)
        fds.insert(1, write)
        errors: list[int | None] = []
        with safefs.named_together(ring, [(fd, dir_fd, f"f{i}") for i, fd in enumerate(fds)]):
            for i, fd in enumerate(fds):
                try:
                    safefs.named_new(dir_fd, f"f{i}", fd, data=b"%d\n" % i, local=True)
                    errors.append(None)
                except OSError as err:
                    errors.append(err.errno)
    finally:
        for fd in (read, dir_fd):
            os.close(fd)
        if ring is not None:
            ring.close()
    assert errors == [None, errno.EINVAL, None]
    assert sorted(os.listdir(tmp_path)) == ["f0", "f2"]
    for i in (0, 2):
        assert (tmp_path / f"f{i}").read_text() == f"{i}\n" and bits(tmp_path / f"f{i}") == 0o640
    assert victim.read_text() == "victim\n"
    victim.unlink()


def test_a_group_whose_ring_fails_is_fsynced_and_named_without_it(tmp_path: Path) -> None:
    """The ring's io_uring_enter failing for a group (here its descriptor another file's for
    a while: a real io_uring_enter failing, as a transient EAGAIN would) is none of its files'
    error: they are fsynced one after another in the thread instead, then each named."""
    if uring.unavailable() is not None:
        pytest.skip(f"no io_uring here: {uring.unavailable()}")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    ring = uring.Ring(uring.ENTRIES)
    saved, null = os.dup(ring.fd), os.open(os.devnull, os.O_RDONLY)
    try:
        fds = []
        for i in range(3):
            fd = safefs.unnamed_filled(dir_fd, b"%d\n" % i, mode=0o640, uid=-1, gid=-1, local=True)
            assert fd is not None
            fds.append(fd)
        os.dup2(null, ring.fd)
        with safefs.named_together(ring, [(fd, dir_fd, f"f{i}") for i, fd in enumerate(fds)]):
            os.dup2(saved, ring.fd)  # (the ring again, for its close)
            for i, fd in enumerate(fds):
                safefs.named_new(dir_fd, f"f{i}", fd, data=b"%d\n" % i, local=True)
    finally:
        os.dup2(saved, ring.fd)
        ring.close()
        for fd in (saved, null, dir_fd):
            os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["f0", "f1", "f2"]
    assert [(tmp_path / f"f{i}").read_text() for i in range(3)] == ["0\n", "1\n", "2\n"]


def test_read_limited_reads_up_to_the_limit_and_no_further(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert safefs.read_limited(fd, 10) == b"x" * 10
        assert safefs.read_limited(fd, 9) is None
        os.truncate(path, 1 << 40)  # sparse: refused by its size, never read
        assert safefs.read_limited(fd, 1 << 20) is None
    finally:
        os.close(fd)
    os.truncate(path, 3)
    assert safefs.read_regular(str(path), 3) == b"xxx"
    with pytest.raises(OSError, match="larger than 2 bytes"):
        safefs.read_regular(str(path), 2)
    os.unlink(path)
    os.mkfifo(path)  # refused at once, not waited on for a writer
    with pytest.raises(OSError, match="not a regular file"):
        safefs.read_regular(str(path), 2)


def test_a_replaced_files_old_inode_is_held_until_let_go_the_oldest_beyond_the_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """named_new(new=False) renames the new file over the old one (fsynced first) and holds
    the old inode open (not freed: its link count 0) until take_kept's lists are closed; past
    keep_most() the oldest held is let go at once. The content and mode are the new file's."""
    monkeypatch.setattr(safefs, "_keep_most", [2])
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    old = {}
    try:
        for i in range(3):
            (tmp_path / f"f{i}").write_text("old\n")
            old[i] = (tmp_path / f"f{i}").stat().st_ino
            fd = safefs.unnamed_filled(directory, b"new\n", mode=0o640, uid=-1, gid=-1, local=True)
            assert fd is not None
            safefs.named_new(directory, f"f{i}", fd, data=b"new\n", local=True, new=False)
    finally:
        os.close(directory)
    for i in range(3):
        assert (tmp_path / f"f{i}").read_text() == "new\n"
        assert (tmp_path / f"f{i}").stat().st_mode & 0o777 == 0o640
    held = [os.fstat(fd) for fd in safefs._kept]
    assert [st.st_ino for st in held] == [old[1], old[2]]  # f0's let go: past the most
    assert all(st.st_nlink == 0 for st in held)
    chunks = safefs.take_kept(1)
    assert len(chunks) == 2 and not safefs.kept()
    for chunk in chunks:
        safefs.close_all(chunk)
    assert sorted(os.listdir(tmp_path)) == ["f0", "f1", "f2"]  # no temp name left


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_others_control_tree_walks_below_and_through_links(tmp_path: Path) -> None:
    """What is below a tree of root's counts (Puppet's modules): a file uid 65534 owns, one
    others may write, and what is below a directory a link of root's leads to; a loop of links
    ends."""
    from engine.safefs import others_control_tree

    tree, elsewhere = tmp_path / "mods", tmp_path / "elsewhere"
    (tree / "m" / "manifests").mkdir(parents=True)
    (elsewhere / "n").mkdir(parents=True)
    (tree / "m" / "manifests" / "init.pp").write_text("class m {}\n")
    (tree / "loop").symlink_to(tree)  # a loop: walked once
    assert others_control_tree(str(tree)) == ""
    (tree / "m" / "manifests" / "init.pp").chmod(0o666)
    assert others_control_tree(str(tree)) == (
        f"{tree}/m/manifests/init.pp can be written by others (mode 0666)"
    )
    (tree / "m" / "manifests" / "init.pp").chmod(0o644)
    (tree / "n").symlink_to(elsewhere / "n")
    (elsewhere / "n" / "init.pp").write_text("class n {}\n")
    os.chown(elsewhere / "n" / "init.pp", 65534, 65534)
    assert others_control_tree(str(tree)) == f"{tree}/n/init.pp is owned by uid 65534"
    os.chown(elsewhere / "n" / "init.pp", 0, 0)
    assert others_control_tree(str(tree)) == ""
    assert others_control_tree(str(tmp_path / "missing")) == ""


def test_others_control_tree_a_sticky_directory_below_counts(tmp_path: Path) -> None:
    """A sticky directory passes above a tree (/tmp: nobody else can rename what is ours), not
    inside it: anyone may add a name there, and a new manifest Puppet autoloads (or a `.pth`
    file in a virtualenv, Hiera data a hierarchy names) is new code. Before (the ninth
    session's review) a 1777 directory of ours in a module passed, so another user could add
    code after the start-up check."""
    from engine.safefs import others_control_tree

    manifests = tmp_path / "mods" / "m" / "manifests"
    manifests.mkdir(parents=True)
    assert others_control_tree(str(tmp_path / "mods")) == ""
    manifests.chmod(0o1777)
    assert others_control_tree(str(tmp_path / "mods")) == (
        f"{manifests} can be written by others (mode 1777)"
    )
    assert others_control_tree(str(manifests / "x")) == ""  # below /tmp-like: missing, passes


def test_others_control_tree_walks_a_deep_tree(tmp_path: Path) -> None:
    """A tree 1,500 directories deep (os.walk of Python 3.11 recurses: RecursionError, a
    traceback at `mgmt run`'s start, before the ninth session's review) is walked, and a file
    others may write at its bottom is found."""
    from engine.safefs import others_control_tree

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1500):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        assert others_control_tree(str(tmp_path)) == ""
        os.chmod("f", 0o666, dir_fd=fd)
    finally:
        os.close(fd)
    bottom = os.path.join(str(tmp_path), *["d"] * 1500, "f")
    assert others_control_tree(str(tmp_path)) == f"{bottom} can be written by others (mode 0666)"
    os.unlink(bottom)  # removed here, from the bottom up: pytest's rmtree recurses too
    for depth in range(1500, 0, -1):
        os.rmdir(os.path.join(str(tmp_path), *["d"] * depth))


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A system.posix_acl_access value: (tag, permissions, id) entries, version 2."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_a_directory_root_s_group_may_write_is_trusted_and_another_group_s_is_not(
    tmp_path: Path,
) -> None:
    """A 0775 root:root directory (root's group may write it) was refused as "can be written
    by others" above a prefix, a credentials directory or a module path (refused on main
    6729fd9a). Root's group is root's (sudo's rule for sudoers): trusted, with no ACL beyond
    the mode; another group (Debian's 2775 root:staff /usr/local), or an ACL entry that lets
    a user write (the group bits are then its mask), is still others'."""
    shared = tmp_path / "local"
    shared.mkdir()
    os.chown(shared, 0, 0)
    shared.chmod(0o775)
    prefix = shared / "mgmt"
    safefs.check_private(prefix)
    assert safefs.others_control(str(shared)) == ""
    safefs.private_dir(prefix)
    assert bits(prefix) == 0o700
    own = tmp_path / "own"  # a prefix of ours, 0775 root:root: tightened, not refused
    own.mkdir()
    own.chmod(0o775)
    safefs.private_dir(own)
    assert bits(own) == 0o700
    os.chown(shared, 0, STAFF)
    shared.chmod(0o2775)
    with pytest.raises(ResourceError, match=r"local can be written by others \(mode 2775\)"):
        safefs.check_private(prefix)
    assert "can be written by others (mode 2775)" in safefs.others_control(str(prefix))
    os.chown(shared, 0, 0)
    shared.chmod(0o775)
    rwx, rx, any_id = 7, 5, 0xFFFFFFFF
    acl = _acl(
        (1, rwx, any_id), (2, rwx, NOBODY), (4, rx, any_id), (0x10, rwx, any_id), (0x20, rx, any_id)
    )
    try:
        os.setxattr(shared, "system.posix_acl_access", acl)
    except OSError as err:  # a file system without ACLs
        pytest.skip(f"no ACLs here: {err}")
    assert bits(shared) == 0o775  # the mask: NOBODY may write, though the group is root's
    with pytest.raises(ResourceError, match=r"local can be written by others \(mode 0775\)"):
        safefs.check_private(prefix)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_root_s_group_is_others_where_another_user_has_it(tmp_path: Path) -> None:
    """RHEL's and Fedora's passwd give `sync`, `shutdown`, `halt` and `operator` gid 0 as
    their primary group: a process of theirs may write a 0775 root:root directory, which the
    merge 8623533e trusted as root's (`others_control` said nothing). Here in a mount
    namespace of its own, /etc/passwd bind-mounted with `operator:x:11:0` added (nothing
    changed outside it): refused; without that line, trusted."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 0)
    shared.chmod(0o775)
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text() + "operator:x:11:0::/root:/bin/false\n")
    check = f"from engine import safefs; print(safefs.others_control({str(shared)!r}) or 'ok')"
    for extra, says in ((False, "ok"), (True, "can be written by others (mode 0775)")):
        bind = f"mount --bind {passwd} /etc/passwd && " if extra else ""
        proc = subprocess.run(
            ["unshare", "--mount", "sh", "-c", f'{bind}exec "$0" -c "$1"', sys.executable, check],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
            check=False,
        )
        assert says in proc.stdout, proc.stdout + proc.stderr
