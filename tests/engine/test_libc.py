"""engine/libc.py: the event loop's and the writing threads' quick calls, on the real kernel."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

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


def test_lstat_open_path_and_file_type_look_up_as_lstat_open_and_stat(tmp_path: Path) -> None:
    """lstat: os.stat's stat_result (follow_symlinks=False), every field equal, None only for
    a missing name (a dangling symlink is there), os.stat's error otherwise; open_path: the
    name itself opened O_PATH (a symlink not followed); file_type: the type bits as lstat or
    stat give them, None for a missing path or one under a file."""
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "to_d").symlink_to(tmp_path / "d")
    here = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert libc.lstat(here, "nowhere") is None
        for name in ("f", "d", "dangling", "to_d"):
            want = os.stat(name, dir_fd=here, follow_symlinks=False)
            got = libc.lstat(here, name)
            assert got == want
            assert got is not None
            fields = [f for f in dir(want) if f.startswith("st_")]
            assert [getattr(got, f) for f in fields] == [getattr(want, f) for f in fields]
            held = libc.open_path(here, name)
            try:
                assert os.fstat(held).st_ino == want.st_ino  # (a link: its own inode)
            finally:
                os.close(held)
        with pytest.raises(NotADirectoryError):  # ENOTDIR: as os.stat's
            libc.lstat(here, "f/under")
        with pytest.raises(FileNotFoundError):
            libc.open_path(here, "nowhere")
    finally:
        os.close(here)
    for name in ("f", "d", "dangling", "to_d"):
        path = str(tmp_path / name)
        assert libc.file_type(path, False) == stat.S_IFMT(os.lstat(path).st_mode)
    assert libc.file_type(str(tmp_path / "to_d"), True) == stat.S_IFDIR
    assert libc.file_type(str(tmp_path / "dangling"), True) is None
    assert libc.file_type(str(tmp_path / "f" / "under"), False) is None
    with pytest.raises(OSError) as raised:
        libc.file_type(str(tmp_path / ("x" * 300)), False)
    assert raised.value.errno == errno.ENAMETOOLONG


def test_random_bytes_are_as_many_as_asked_and_differ() -> None:
    assert len({libc.random_bytes(6) for _ in range(100)}) == 100
    assert all(len(libc.random_bytes(n)) == n for n in (1, 6, 32))


def test_write_all_writes_everything_or_says_why(tmp_path: Path) -> None:
    """write_all puts every byte in place (none, a few, a megabyte); a write that stops
    short goes on from where it stopped, and its error is raised (a full non-blocking pipe:
    EAGAIN, the first part written in order); the eventfd wake-up adds one."""
    for size in (0, 5, 1 << 20):
        data = os.urandom(size)
        fd = os.open(tmp_path / f"f{size}", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            libc.write_all(fd, data)
        finally:
            os.close(fd)
        assert (tmp_path / f"f{size}").read_bytes() == data
    reader, writer = os.pipe2(os.O_NONBLOCK)
    try:
        room = fcntl.fcntl(writer, fcntl.F_GETPIPE_SZ)
        data = os.urandom(room + 100)
        with pytest.raises(BlockingIOError):
            libc.write_all(writer, data)
        assert os.read(reader, room + 100) == data[:room]
    finally:
        os.close(reader)
        os.close(writer)
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        libc.signal_eventfd(wake)
        libc.signal_eventfd(wake)
        assert os.eventfd_read(wake) == 2
    finally:
        os.close(wake)


def test_fs_type_forgets_a_device_number_given_to_another_mount(tmp_path: Path) -> None:
    """review_ops: fs_type kept what it read for ever, but a file system without a disk gets
    its device number (0:N) from a pool the next such mount takes it from again: an overlay
    (or NFS) mounted after a tmpfs was taken off was "tmpfs" at the tmpfs's number, so its
    files got no spare and their repairs wrote, fsync and all, on the event loop
    (resources/_lib/spare.py, NO_GAIN). Forgotten once the mount table changes."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8)")
    point = tmp_path / "point"
    for name in ("point", "lower", "upper", "work"):
        (tmp_path / name).mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def device() -> tuple[int, int]:
        dev = os.stat(point).st_dev
        return os.major(dev), os.minor(dev)

    if run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)).returncode != 0:
        pytest.skip("the kernel or the container refuses a tmpfs mount")
    try:
        assert libc.fs_type(*device()) == "tmpfs"
    finally:
        run("umount", str(point))
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    done = run("mount", "-t", "overlay", "overlay", "-o", options, str(point))
    if done.returncode != 0:
        pytest.skip(f"the kernel or the container refuses an overlay: {done.stderr.strip()}")
    try:
        assert libc.fs_type(*device()) == "overlay"  # (its number is the tmpfs's, mostly)
    finally:
        run("umount", str(point))
