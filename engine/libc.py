"""The quick system calls of the event loop, made with the GIL held (ctypes.PyDLL).

`os.read`, `os.fstat` and ctypes' CDLL release the GIL around the call, and then wait to get
it back. While the I/O threads write (a first run), they hold it: each such call on the event
loop waited ~0.1-0.3 ms at 10,000 files (cProfile), where the call itself takes a few
microseconds. The calls here cannot wait for another thread's work on the filesystem (a
non-blocking read, a statx of an open descriptor, `openat2` of a directory path that is in
the kernel's cache), so they keep the GIL: the loop does not queue behind the threads for it.
A lookup of a name in a directory being written is not one of them (engine/watcher.py,
_kind).

The I/O threads' quick calls of a small file's durable write are made here too (`write`,
`fchmod`, `linkat`, `renameat`, `close`; engine/safefs.py, write_at), so are the wake-up of
the loop when a job's reply is ready and its reset by the loop (an eventfd: `signal_eventfd`,
`read`; engine/stopgate.py, Replies), and so are the lookup
before a first write in a writing thread (`lstat`) and the hold of the inode it replaces (`open_path`), its temp name's `getrandom`, the look
at a watcher's other paths after its rename (`file_type`) and the read of the mounts' types
as the threads begin (`local_dev`, a file the kernel makes as it is read): a thread that released the GIL for each of them
waited for it after each, behind the event loop that holds it while a first run's writes
complete (10,000 writes on 8 threads beside a thread running Python: 9.8-27 s with the GIL
released around every call, 4.8-5.7 s with it held for these; bare, 2 s). The O_TMPFILE open
and the fsync still release it (two waits for the GIL per file, not five): the fsync waits for
the disk, and the open allocates an inode, which on ext4 right after many deletes scans
every inode freed in the last minutes (see bench/cron.py), for milliseconds. None of the held
calls waits for another of this process's threads: the directory's lock, which a lookup of a
name not in the kernel's cache waits for, is taken by this process's links and renames with
the GIL held. Only on a local file system (`local_fs`): on a network one (NFS, CIFS, FUSE...)
a link or a rename waits for a server, and with the GIL held the whole process would wait with
it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
import threading

_libc = ctypes.PyDLL(None, use_errno=True)
_ENCODING, _ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def fsencode(path: str) -> bytes:
    """os.fsencode of a str, without its Python frame (a few calls per file written)."""
    return path.encode(_ENCODING, _ERRORS)


def fsdecode(name: bytes) -> str:
    """os.fsdecode of bytes, without its Python frame (an inotify event's entry name)."""
    return name.decode(_ENCODING, _ERRORS)


# read(fd, buffer, size) -> size, or -1 with ctypes.get_errno(); `size` a ctypes.c_size_t (no
# argtypes: the inotify drain reads once per check, see below).
read = _libc.read
read.restype = ctypes.c_ssize_t

syscall = _libc.syscall  # syscall(number, ...) -> result, or -1 with ctypes.get_errno()

# The calls made for each file a check looks at (close, statx, and inotify's add_watch) have no
# argtypes: ctypes converts each argument through its argtype's from_param (~1 K instructions
# an argument, a statx ~9 K in all against ~4 K without); their arguments are ints that fit a
# C int, bytes and buffers, which ctypes passes as such without them.
_close = _libc.close


def close_path(fd: int) -> None:
    """Close an O_PATH descriptor (a directory held for its name lookups): nothing to flush,
    so the call cannot wait (os.close released the GIL: 1.2 s of waiting to get it back, on
    the event loop, in a 10,000-file first run)."""
    close(fd)


def _failed(src: str | None = None, dst: str | None = None) -> OSError:
    """The OSError of the call that just failed, named as `os`'s functions name theirs."""
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), src, None, dst)


# write(fd, data, count) -> count written: no argtypes (each argument's conversion costs
# ~1 K instructions), the count passed as what it is, a size_t.
_write = _libc.write
_write.restype = ctypes.c_ssize_t
_size_t = ctypes.c_size_t
# No argtypes (as close's and statx's above, ~1 K instructions an argument less, ~7 K a file
# written): descriptors, a mode and flags that fit a C int, and bytes (fsencode'd names).
_fchmod = _libc.fchmod  # (int, mode_t)
_linkat = _libc.linkat  # (int, const char *, int, const char *, int)
_renameat = _libc.renameat  # (int, const char *, int, const char *)
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (a small file's content: a copy into the page cache) to fd."""
    size = len(data)
    wrote = _write(fd, data, _size_t(size))  # the usual case: all at once, no copy
    done = 0
    while True:
        if wrote >= 0:
            done += wrote
        elif ctypes.get_errno() != errno.EINTR:
            raise _failed()
        if done >= size:
            return
        wrote = _write(fd, data[done:], _size_t(size - done))


_ONE, _EIGHT = (1).to_bytes(8, sys.byteorder), _size_t(8)


def signal_eventfd(fd: int) -> None:
    """Add 1 to the counter of the non-blocking eventfd `fd` (it never waits: a failure, the
    counter full, is ignored; the reader wakes all the same)."""
    _write(fd, _ONE, _EIGHT)


def fchmod(fd: int, mode: int) -> None:
    if _fchmod(fd, mode) < 0:
        raise _failed()


def link(src: str, dst_dir_fd: int, dst: str) -> None:
    """os.link(src, dst, dst_dir_fd=dst_dir_fd, follow_symlinks=True)."""
    if _linkat(_AT_FDCWD, fsencode(src), dst_dir_fd, fsencode(dst), _AT_SYMLINK_FOLLOW) < 0:
        raise _failed(src, dst)


def rename(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)."""
    if _renameat(src_dir_fd, fsencode(src), dst_dir_fd, fsencode(dst)) < 0:
        raise _failed(src, dst)


_openat = _libc.openat  # (int, const char *, int): no argtypes, as close's
_O_PATH_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def open_path(dir_fd: int, name: str) -> int:
    """An O_PATH descriptor of dir_fd/name, not followed (a link is opened as itself): a
    lookup, as `lstat` below, on a local file system only."""
    fd: int = _openat(dir_fd, fsencode(name), _O_PATH_NOFOLLOW)
    if fd < 0:
        raise _failed(name)
    return fd


def close(fd: int) -> None:
    """Close a descriptor whose close cannot wait: an O_PATH one, or a file already fsynced.
    Like os.close, the descriptor is gone even when the call reports an error."""
    if _close(fd) < 0:
        raise _failed()


_getrandom = _libc.getrandom
_getrandom.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
_getrandom.restype = ctypes.c_ssize_t
_GRND_NONBLOCK = 0x1


def random_bytes(count: int) -> bytes:
    """os.urandom(count) for a small count (a temp file's name): getrandom(2) does not wait
    once the kernel's pool is ready (GRND_NONBLOCK: before then, os.urandom's wait)."""
    buffer = ctypes.create_string_buffer(count)
    if _getrandom(buffer, count, _GRND_NONBLOCK) != count:
        return os.urandom(count)
    return buffer.raw


# File systems whose link, rename, chmod and close of an fsynced file wait for no server.
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay"})
_fs_types: dict[tuple[int, int], str] = {}  # device (major, minor) -> type, from mountinfo


def local_fs(fd: int) -> bool:
    """Whether the file open as fd is on a local file system (LOCAL_FS), by its device's
    entry in /proc/self/mountinfo (read again for a device not seen yet); False if unknown."""
    return local_dev(file_id(fd))


def local_dev(ident: tuple[int, int, int]) -> bool:
    """local_fs of the file whose `file_id` is `ident` (its device's part)."""
    return fs_type(ident[0], ident[1]) in LOCAL_FS


def fs_type(major: int, minor: int) -> str:
    """The type of the file system mounted from device major:minor ("tmpfs"), by its entry in
    /proc/self/mountinfo (read again for a device not seen yet); "" if unknown. What was read
    is forgotten once the mount table changed (table_changed): a device number of a file
    system without a disk (0:N: tmpfs, overlay, NFS, btrfs) is given again to the next such
    mount, and a tmpfs's, kept, made an overlay or NFS mount at the same number "tmpfs"."""
    with mounts_read:  # the I/O threads' first writes ask at once: one reads, for all
        if table_changed():
            forget_types()
        kind = _fs_types.get((major, minor))
        if kind is None:
            _fs_types.update(_mount_types())
            kind = _fs_types.setdefault((major, minor), "")
    return kind


mounts_read = threading.Lock()


def forget_types() -> None:
    """What fs_type read is stale (the table changed: table_changed, mounts_read held)."""
    _fs_types.clear()


# /proc/self/mountinfo polled (POLLPRI: the table changed since its last poll), opened at the
# first question: empty before, [None] where there is no such file (nothing is forgotten).
_mounts_poll: list[select.poll | None] = []


def table_changed() -> bool:
    """Whether the mount table changed since the last call (mounts_read held: a poll object
    is one thread's at a time); True at the first. Polled without waiting, before the table
    is read: a change after the poll is told at the next call."""
    if not _mounts_poll:
        try:
            fd = os.open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _mounts_poll.append(None)
            return False
        watch = select.poll()
        watch.register(fd, select.POLLPRI)  # (kept open for the process's life)
        watch.poll(0)
        _mounts_poll.append(watch)
        changes[0] += 1
        return True
    poll = _mounts_poll[0]
    if poll is None or not poll.poll(0):
        return False
    changes[0] += 1
    return True


# How many changes of the mount table table_changed told (a poll tells one caller only: each
# cache of the table, fs_type's and engine.hangfs's, compares the count it read at).
changes = [0]


_open = _libc.open  # (const char *, int): no argtypes, as close's
_MOUNTINFO = b"/proc/self/mountinfo"
_CHUNK = 65536


def _mount_types() -> dict[tuple[int, int], str]:
    """Each mounted device's file system type ("major:minor ... - type source options").

    Read with the GIL held (a file of the kernel's, made as it is read: no disk to wait for):
    the 8 I/O threads of a first run each read it as they began, `open()`'s six calls each
    releasing the GIL and waiting to get it back behind the others (strace: 15-20 ms before a
    100-file first run's second write)."""
    types: dict[tuple[int, int], str] = {}
    fd = _open(_MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
    if fd < 0:
        return types
    chunks: list[bytes] = []
    buffer = ctypes.create_string_buffer(_CHUNK)
    try:
        while (size := read(fd, buffer, _size_t(_CHUNK))) != 0:
            if size < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                return types
            chunks.append(buffer.raw[:size])
    finally:
        _close(fd)
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        fields, _dash, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 3 or not rest:
            continue
        major, _colon, minor = parts[2].partition(":")
        if major.isdigit() and minor.isdigit():
            types.setdefault((int(major), int(minor)), rest.split(" ", 1)[0])
    return types


_statx = _libc.statx  # (int, const char *, int, unsigned int, struct statx *): no argtypes
_AT_EMPTY_PATH = 0x1000
_STATX_INO = 0x100
_STATX_SIZE = 256  # struct statx
# Offsets in struct statx (the same on every architecture): stx_ino (u64), stx_dev_major and
# stx_dev_minor (u32 each).
_INO, _DEV_MAJOR = 32, 136
_U64, _DEV = struct.Struct("=Q"), struct.Struct("=II")
_local = threading.local()


def file_id(fd: int) -> tuple[int, int, int]:
    """What identifies the file open as `fd`: (device major, device minor, inode number)."""
    try:
        buffer = _local.statx
    except AttributeError:  # one per thread: the GIL may pass between the call and the read
        buffer = _local.statx = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_INO, buffer) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    (ino,) = _U64.unpack_from(buffer, _INO)
    major, minor = _DEV.unpack_from(buffer, _DEV_MAJOR)
    return major, minor, ino


_STATX_MNT_ID = 0x1000
_MNT_ID = 144  # stx_mnt_id (u64), after the devices
_U32 = struct.Struct("=I")


def mount_id(fd: int) -> int:
    """The id of the mount the file open as `fd` was reached through (mountinfo's first field:
    statx's STATX_MNT_ID, Linux 5.8); 0 where the kernel does not tell it (or on an error)."""
    try:
        buffer = _local.statx
    except AttributeError:
        buffer = _local.statx = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buffer) < 0:
        return 0
    if not _U32.unpack_from(buffer, 0)[0] & _STATX_MNT_ID:  # (stx_mask: what it filled)
        return 0
    return int(_U64.unpack_from(buffer, _MNT_ID)[0])


_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_BASIC_STATS = 0x7FF
# struct statx up to stx_mtime, then its devices: mask, blksize, attributes, nlink, uid, gid,
# mode (and a pad), ino, size, blocks, attributes_mask, then atime, btime, ctime, mtime (each
# seconds, nanoseconds and a pad); rdev major and minor, dev major and minor.
_STATX = struct.Struct("=IIQIIIH2xQQQQ" + "qI4x" * 4 + "IIII")
_BILLION = 1_000_000_000


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    """os.stat(name, dir_fd=dir_fd, follow_symlinks=False), None where it does not exist
    (ENOENT); OSError otherwise, as os.stat's.

    Only for a name in a directory on a local file system (`local_fs`) that this process's
    writing threads write into: the lookup of a name not in the kernel's cache waits for the
    directory's lock, which their links and renames take with the GIL held, so not while
    this call holds it."""
    try:
        buffer = _local.statx
    except AttributeError:
        buffer = _local.statx = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(dir_fd, fsencode(name), _AT_SYMLINK_NOFOLLOW, _STATX_BASIC_STATS, buffer) < 0:
        code = ctypes.get_errno()
        if code == errno.ENOENT:
            return None
        raise OSError(code, os.strerror(code), name)
    (_mask, blksize, _attrs, nlink, uid, gid, mode, ino, size, blocks, _amask,
     a_s, a_ns, _b_s, _b_ns, c_s, c_ns, m_s, m_ns,
     r_major, r_minor, major, minor) = _STATX.unpack_from(buffer)  # fmt: skip
    return os.stat_result(
        (
            mode, ino, os.makedev(major, minor), nlink, uid, gid, size, a_s, m_s, c_s,
            a_s + a_ns * 1e-9, m_s + m_ns * 1e-9, c_s + c_ns * 1e-9,
            a_s * _BILLION + a_ns, m_s * _BILLION + m_ns, c_s * _BILLION + c_ns,
            blksize, blocks, os.makedev(r_major, r_minor),
        )
    )  # fmt: skip


_STATX_TYPE = 0x1
_MODE = struct.Struct("=H")  # stx_mode, at offset 28 of struct statx
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR)


def file_type(path: str, follow: bool) -> int | None:
    """The file type bits of `path` (stat.S_IFMT), None if it does not exist: for a watcher's
    other paths after this thread renamed onto one (engine/watcher.py, Rename.run), as
    `lstat` on a local file system. OSError otherwise."""
    try:
        buffer = _local.statx
    except AttributeError:
        buffer = _local.statx = ctypes.create_string_buffer(_STATX_SIZE)
    flags = 0 if follow else _AT_SYMLINK_NOFOLLOW
    if _statx(_AT_FDCWD, fsencode(path), flags, _STATX_TYPE, buffer) < 0:
        code = ctypes.get_errno()
        if code in _NOT_THERE:
            return None
        raise OSError(code, os.strerror(code), path)
    mode: int = _MODE.unpack_from(buffer, 28)[0]
    return mode & 0o170000
