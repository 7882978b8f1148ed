"""Content stamps: what a kind that builds an output file from inputs (gzip, tar) last wrote.

mgmt's way, kept here: the sha256 of what went in and of what came out are stored in the
resource's private var dir; the output is rebuilt when either no longer matches (an input
changed, a param that shapes the output changed, or the output was edited or removed). So
an unchanged input is never re-compressed, and the check costs two hashes, no compression.
Outputs are written through `engine.safefs` (atomic, durable, no symlink followed).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.resource import UID

CHUNK = 1 << 16
INPUT, OUTPUT = "input.sha256", "output.sha256"


def check_abs_file(value: str, key: str) -> None:
    """An absolute path to a file (not ending in '/'), or ValidationError naming `key`."""
    if not value.startswith("/"):
        raise ValidationError(f"expected an absolute path, got {value!r}", key)
    if value.endswith("/"):
        raise ValidationError(f"expected a file, not a directory (ends with '/'): {value!r}", key)
    if "\0" in value:
        raise ValidationError("must not contain a NUL character", key)


def hash_file(path: str) -> str:
    """The sha256 (hex) of a file (a symlink is read through, as mgmt does); "" if missing.

    A FIFO or a device is refused, never read (`safefs.open_regular`): --max-runtime and
    SIGTERM never ended a run waiting on a FIFO."""
    return hash_and_mode(path)[0]


def hash_and_mode(path: str) -> tuple[str, int]:
    """hash_file's digest ("" if missing) and the file's permission bits (0 if missing)."""
    try:
        with safefs.closing(safefs.open_regular(path)) as fd:
            return hash_fd(fd), stat.S_IMODE(os.fstat(fd).st_mode)
    except FileNotFoundError:
        return "", 0
    except OSError as err:
        raise ResourceError(f"cannot read {path}: {err.strerror}") from err


def output_mode(modes: Iterable[int]) -> int:
    """The mode of an output made of inputs with these permission bits (an archive, a
    compressed copy): read and write for its owner, read for the group and others only where
    every input lets them read. A 0600 file archived into a 0644 tar was readable by every user
    through it (tester10, tester13); mgmt creates its outputs with os.Create (0666 less the
    umask) whatever the inputs."""
    common = 0o044
    for mode in modes:
        common &= mode
    return 0o600 | common


def hash_fd(fd: int) -> str:
    """The sha256 (hex) of what the descriptor `fd` reads from where it is (left open)."""
    digest = hashlib.sha256()
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def read_stamp(var_dir: Path, name: str) -> str:
    """A stamp stored by `write_stamp`, or "" if there is none."""
    try:
        return (var_dir / name).read_text()
    except FileNotFoundError:
        return ""
    except OSError as err:
        raise ResourceError(f"cannot read the stamp {var_dir / name}: {err.strerror}") from err


def write_stamp(var_dir: Path, name: str, value: str) -> None:
    safefs.write_file(str(var_dir / name), value.encode(), 0o600, parents=0o700)


class HashingWriter:
    """A write-only stream that hashes what goes through it to the file beneath."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def write_output(path: str, fill: Callable[[HashingWriter], None], mode: int = 0o644) -> str:
    """Atomically replace the file `path` with what `fill` writes; the sha256 of the content.
    The parent directory must exist (a missing one is an error naming it)."""
    digests: list[str] = []

    def run(out: BinaryIO) -> None:
        writer = HashingWriter(out)
        fill(writer)
        digests.append(writer.digest.hexdigest())

    parent, name = os.path.split(path)
    try:
        dir_fd = safefs.open_dir(parent)
    except FileNotFoundError as err:
        raise ResourceError(f"cannot write {path}: {parent} does not exist") from err
    with safefs.closing(dir_fd):
        st = safefs.lstat_at(dir_fd, name)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise ResourceError(f"{path} exists and is not a regular file")
        safefs.write_at(dir_fd, name, run, mode=mode)
    return digests[0]


def file_uids(path: str) -> list[UID]:
    """What a kind writing the file `path` is, to automatic edges: that file."""
    return [UID("file", path)]


def file_needs(output: str, inputs: list[str]) -> list[list[UID]]:
    """What such a kind depends on: the nearest managed parent directory of its output, and
    each input (a file, or a directory when it ends with '/' or is managed as one)."""
    parents, path = [], output
    while path != "/":
        path = os.path.dirname(path)
        parents.append(UID("file", path if path == "/" else path + "/"))
    wants = [parents]
    for item in inputs:
        bare = os.path.normpath(item)
        wants.append([UID("file", bare), UID("file", bare.rstrip("/") + "/")])
    return wants
