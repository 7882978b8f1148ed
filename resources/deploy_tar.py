"""deploy:tar: a tar archive of the program this agent runs (mgmt's deploy:tar).

The name (or `path`) is the archive. What goes in is `handle.program` (engine.program): the
running deploy's files when the agent runs deploys, else the local program's files, as
`mgmt deploy` would store them. The archive is deterministic: entries in lexical order,
depth first (as Go's fs.WalkDir, mgmt's order), each directory before what it holds, names
relative (`main.mcl`, `files/`, `files/motd`), mtime 0, owner 0:0 without names, modes 0644
and 0755. So the archive is a function of the program and the format alone: the check
compares its sha256 with the file's, and a re-run writes nothing; any edit of the archive is
repaired. It is written atomically (a new inode renamed over it, through directory
descriptors, no symlink followed) and durably (the file, then its directory, fsynced); an
existing archive of root or this agent's user keeps its permission bits (a file resource may
manage them), a new one (or one replacing another user's file) gets 0644.
The watch is inotify on the archive and, for a local program, on its files (`files/` or a
`lang DIR/` recursively); a new deploy is the program's change event (ProgramRef.subscribe).
See docs/resources/deploy_tar.md.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.handle import Handle
from engine.params import EMPTY_IS_UNSET
from engine.program import Program
from engine.resource import UID, Edgeable, Resource, register
from resources._lib import tarformat
from resources._lib.named import or_name
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.programwatch import current_program, follow_program
from resources._lib.stamp import check_abs_file, file_needs, file_uids

NEW_MODE = 0o600  # a new archive's mode: a program may hold secrets (an existing one keeps its own)
LINK = "a symbolic link"  # `_held` of a link at the path: no sha256


@register("deploy:tar")
@dataclass(kw_only=True, eq=False)
class DeployTarRes(Edgeable, Resource):
    # mgmt's $const.res.tar.format.<name> constants, as tar's.
    CONSTANTS: ClassVar[dict[str, dict[str, int | str]]] = tarformat.CONSTANTS

    # The archive (absolute, not ending in '/'). Default None: the name.
    path: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Header format: 0 (unknown: pax), 2 (ustar), 4 (pax) or 8 (gnu). Default 0.
    format: int = 0

    @property
    def _path(self) -> str:
        return or_name(self, "path")[0]

    def validate(self) -> None:
        super().validate()
        check_abs_file(*or_name(self, "path"))
        if self.format not in tarformat.FORMATS:
            raise ValidationError(f"{tarformat.FORMAT_HELP}, got {self.format}", "format")

    async def init(self, handle: Handle) -> None:
        await super().init(handle)
        self._program_changed = asyncio.Event()
        if handle.program is not None:
            handle.on_cleanup(handle.program.subscribe(self._program_changed.set))

    async def watch(self) -> None:
        await follow_program(self.handle, self._program_changed, [self._path])

    async def check_apply(self, apply: bool) -> bool:
        program = await self._program()
        path = self._path
        want, have = await in_thread(lambda: (archive(program, self.format), _held(path)))
        digest = hashlib.sha256(want).hexdigest()
        if have == digest:
            return nothing_to_do(
                self.handle, f"{path} holds {program.origin} ({len(program.files)} files)"
            )
        why = "is missing" if not have else "is a symbolic link" if have == LINK else "differs"
        step = Step(
            f"archive {program.origin} ({len(program.files)} files) into {path} (it {why})",
            "",
            lambda: self._write(want, program),
            slow=True,
        )
        await apply_steps(self.handle, [step], apply, errors=(OSError,))
        return False

    def uids(self) -> list[UID]:
        return file_uids(self._path)

    def autoedges(self) -> list[list[UID]]:
        return file_needs(self._path, [])

    async def _program(self) -> Program:
        return await current_program(self.handle, "to archive")

    def _write(self, data: bytes, program: Program) -> str:
        """Replace the archive with `data` (in a worker thread); the line to log."""
        parent, name = os.path.split(self._path)
        try:
            dir_fd = safefs.open_dir(parent)
        except FileNotFoundError:
            raise ResourceError(f"cannot write {self._path}: {parent} does not exist") from None
        with safefs.closing(dir_fd):
            st = safefs.lstat_at(dir_fd, name)
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise ResourceError(f"{self._path} exists and is not a regular file")
            mode = NEW_MODE
            if st is not None and st.st_uid in (0, os.geteuid()):  # not another user's (/tmp)
                mode = stat.S_IMODE(st.st_mode) & 0o777  # permission bits: no setuid, setgid
            safefs.write_at(dir_fd, name, lambda out: out.write(data), mode=mode)
            dir_only = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fsync(dir_only)  # the rename too survives a crash
            finally:
                os.close(dir_only)
        return f"archived {program.origin} ({len(program.files)} files, {len(data)} bytes)"


def _held(path: str) -> str:
    """The sha256 of the archive at `path`, "" if missing, LINK for a symbolic link: never
    read through (the write refuses it; another user's link, in /tmp, to a copy of the right
    archive is not the archive). Opened without following a link: no race with a swap."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return ""
    except OSError as err:
        if err.errno == errno.ELOOP:
            return LINK
        raise ResourceError(f"cannot read {path}: {err.strerror}") from err
    digest = hashlib.sha256()
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device: never read
            raise ResourceError(f"cannot read {path}: not a regular file")
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def archive(program: Program, fmt: int = 0) -> bytes:
    """The deterministic tar archive of the program's files (see the module docstring)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarformat.FORMATS[fmt]) as tar:
        for name, data in entries(program.files):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def entries(files: Mapping[str, bytes]) -> list[tuple[str, bytes | None]]:
    """(name, content or None for a directory ending in '/'), depth first, lexical per
    directory: `a/`, `a/b`, `c` (WalkDir's order; a plain sort would put `a.txt` before `a/`)."""
    tree: dict[str, object] = {}
    for path, data in files.items():
        *dirs, base = path.split("/")
        node = tree
        for part in dirs:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[base] = data
    out: list[tuple[str, bytes | None]] = []

    def walk(node: dict[str, object], prefix: str) -> None:
        for name in sorted(node):
            value = node[name]
            if isinstance(value, dict):
                out.append((f"{prefix}{name}/", None))
                walk(value, f"{prefix}{name}/")
            else:
                assert isinstance(value, bytes)
                out.append((prefix + name, value))

    walk(tree, "")
    return out
