"""A file system whose file never answers a read: what a hung NFS server or a FUSE daemon that
stopped answering looks like to a process reading it. A real FUSE mount (the kernel's /dev/fuse,
mount(2) through ctypes, no library), served by this module run as a process:

    python -m tests.fusehang MOUNTPOINT

mounts one directory holding one regular file, `f` (0644, 4 bytes, root's), answers the kernel's
lookups, attributes and opens, and never answers a READ. It prints "ready" once mounted. Ended
(any signal, its stdin closed), /dev/fuse is closed: the kernel aborts the connection and every
read still waiting fails (ENOTCONN); then the mount is detached. Linux only, as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import struct
import sys

ROOT, FILE = 1, 2  # node ids: the mount's root directory, its file
NAME = b"f"
SIZE = 4

_IN = struct.Struct("=IIQQIIII")  # fuse_in_header: len opcode unique nodeid uid gid pid padding
_OUT = struct.Struct("=IiQ")  # fuse_out_header: len error unique
_ATTR = struct.Struct("=QQQQQQIIIIIIIIII")  # fuse_attr (88 bytes)
LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, INIT = 1, 2, 3, 14, 15, 17, 18, 26
GETXATTR, OPENDIR, READDIR, RELEASEDIR, DESTROY, BATCH_FORGET = 22, 27, 28, 29, 38, 42
_NO_REPLY = {FORGET, BATCH_FORGET, READ}  # READ: never answered, the point of it


def _attr(node: int) -> bytes:
    mode = (stat.S_IFDIR | 0o755) if node == ROOT else (stat.S_IFREG | 0o644)
    size = 0 if node == ROOT else SIZE
    nlink = 2 if node == ROOT else 1
    return _ATTR.pack(node, size, 0, 0, 0, 0, 0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0)


_ENTRIES = ((ROOT, b".", stat.S_IFDIR), (ROOT, b"..", stat.S_IFDIR), (FILE, NAME, stat.S_IFREG))


def _dirent(index: int) -> bytes:
    """fuse_dirent of _ENTRIES[index]: ino off namelen type, the name padded to 8 bytes."""
    node, name, kind = _ENTRIES[index]
    entry = struct.pack("=QQII", node, index + 1, len(name), kind >> 12) + name
    return entry + b"\0" * (-len(entry) % 8)


def _answer(opcode: int, node: int, body: bytes) -> tuple[int, bytes]:
    """(error, reply body) for one request."""
    if opcode == INIT:
        _major, minor = struct.unpack_from("=II", body)
        # fuse_init_out for minor 23+: 64 bytes (major minor max_readahead flags
        # max_background congestion_threshold max_write time_gran max_pages map_alignment
        # flags2 unused[7])
        return 0, struct.pack(
            "=IIIIHHIIHHI7I", 7, min(minor, 31), 0, 0, 1, 1, 4096, 1, 1, 0, 0, *[0] * 7
        )
    if opcode == LOOKUP:
        if node == ROOT and body.rstrip(b"\0") == NAME:
            # fuse_entry_out: nodeid generation entry_valid attr_valid (and their nsecs), attr
            return 0, struct.pack("=QQQQII", FILE, 0, 0, 0, 0, 0) + _attr(FILE)
        return -errno.ENOENT, b""
    if opcode == GETATTR:
        return 0, struct.pack("=QII", 0, 0, 0) + _attr(node)  # fuse_attr_out
    if opcode in (OPEN, OPENDIR):
        return 0, struct.pack("=QII", 0, 0, 0)  # fuse_open_out: fh open_flags padding
    if opcode in (RELEASE, RELEASEDIR, DESTROY):
        return 0, b""
    if opcode == READDIR:  # fuse_read_in: fh offset (then size...); fuse_dirent each
        (offset,) = struct.unpack_from("=Q", body, 8)
        return 0, b"".join(_dirent(i) for i in range(offset, len(_ENTRIES)))
    if opcode == STATFS:  # fuse_kstatfs: blocks bfree bavail files ffree, bsize namelen frsize
        return 0, struct.pack("=5Q10I", 1, 0, 0, 2, 0, 4096, 255, 4096, *[0] * 7)
    if opcode == GETXATTR:
        return -errno.ENODATA, b""  # no ACL, no SELinux label
    return -errno.ENOSYS, b""


def _mount(fd: int, target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode={stat.S_IFDIR:o},user_id=0,group_id=0".encode()
    if libc.mount(b"fusehang", target.encode(), b"fuse", 0, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount: {os.strerror(err)}", target)


def _detach(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(target.encode(), 2)  # MNT_DETACH


def serve(target: str) -> None:
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    _mount(fd, target)
    try:
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select([fd, sys.stdin], [], [])
            if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
                return  # stdin closed: the test is done with it
            if fd not in ready:
                continue
            try:
                request = os.read(fd, 1 << 20)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.EINTR):  # an interrupted request
                    continue
                return  # ENODEV: unmounted
            _, opcode, unique, node, *_ = _IN.unpack_from(request)
            if opcode in _NO_REPLY:
                continue
            error, body = _answer(opcode, node, request[_IN.size :])
            try:
                os.write(fd, _OUT.pack(_OUT.size + len(body), error, unique) + body)
            except OSError as err:  # a reply the kernel refused: said, and served on
                print(f"opcode {opcode}: reply refused: {err}", file=sys.stderr, flush=True)
    finally:
        os.close(fd)  # aborts the connection: the reads still waiting fail
        _detach(target)


if __name__ == "__main__":
    serve(sys.argv[1])
