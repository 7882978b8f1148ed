"""tar: an archive of files and directory trees (mgmt's tar).

The name (or `path`) is the archive. Each input is an absolute path: a file is stored under
its base name; a directory ending in '/' contributes its contents, one without the '/' is
stored under its own name (rsync's rule, as in mgmt). As for gzip, the sha256 of every input
file (with the format) and of the archive are stamped in the var dir, and the archive is
written again only when one of them no longer matches. The watch is inotify on the archive
and on every input (recursively for directories). See docs/resources/tar.md.
"""

from __future__ import annotations

import functools
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from engine import safefs
from engine.errors import ResourceError, ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources._lib import tarformat
from resources._lib.missing import Missing, would_wait
from resources._lib.named import or_name
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.stamp import (
    INPUT,
    OUTPUT,
    HashingWriter,
    check_abs_file,
    file_needs,
    file_uids,
    hash_fd,
    hash_file,
    output_mode,
    read_stamp,
    write_output,
    write_stamp,
)


@register("tar")
@dataclass(kw_only=True, eq=False)
class TarRes(Edgeable, Resource):
    # mgmt's $const.res.tar.format.<name> constants.
    CONSTANTS: ClassVar[dict[str, dict[str, int | str]]] = tarformat.CONSTANTS

    # The archive (absolute, not ending in '/'). Default None: the name.
    path: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # Absolute paths of the files and directories to archive, in order. Default: none.
    inputs: list[str] | None = None
    # Header format: 0 (unknown: pax), 2 (ustar), 4 (pax) or 8 (gnu). Default 0.
    format: int = 0

    @property
    def _path(self) -> str:
        return or_name(self, "path")[0]

    @property
    def _inputs(self) -> list[str]:
        return self.inputs or []

    def validate(self) -> None:
        super().validate()
        check_abs_file(*or_name(self, "path"))
        archive = os.path.normpath(self._path)
        for index, item in enumerate(self._inputs):
            if not item.startswith("/") or "\0" in item:
                raise ValidationError(
                    f"expected an absolute path, got {item!r}", f"inputs[{index}]"
                )
            inside = os.path.normpath(item)
            if archive == inside or archive.startswith(inside.rstrip("/") + "/"):
                # Each write would be a change of the input: an archive of itself, forever.
                raise ValidationError(
                    f"{item} holds the archive {self._path}: put the archive outside its inputs",
                    f"inputs[{index}]",
                )
        if self.format not in tarformat.FORMATS:
            raise ValidationError(f"{tarformat.FORMAT_HELP}, got {self.format}", "format")

    async def watch(self) -> None:
        async with PathWatcher([self._path, *self._inputs], recurse=True) as changes:
            await self.handle.event()
            async for _ in changes:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        var_dir = self.handle.var_dir
        try:
            members, wanted_in, mode, have_out, stamp_in, stamp_out = await in_thread(
                lambda: (
                    *self._scan(),
                    hash_file(self._path),
                    read_stamp(var_dir, INPUT),
                    read_stamp(var_dir, OUTPUT),
                )
            )
        except Missing as err:
            return await would_wait(self.handle, err, apply, f"archive into {self._path}")
        if wanted_in == stamp_in and have_out and have_out == stamp_out:
            return nothing_to_do(
                self.handle, f"{self._path} is up to date ({len(members)} entries)"
            )
        why = (
            "is missing"
            if not have_out
            else "was changed"
            if have_out != stamp_out
            else "is out of date"
        )
        run = functools.partial(self._archive, members, wanted_in, mode)
        step = Step(
            f"archive {len(members)} entries into {self._path} (it {why})", "", run, slow=True
        )
        await apply_steps(self.handle, [step], apply, errors=(OSError, tarfile.TarError))
        return False

    def uids(self) -> list[UID]:
        return file_uids(self._path)

    def autoedges(self) -> list[list[UID]]:
        return file_needs(self._path, self._inputs)

    def _scan(self) -> tuple[list[tuple[str, str, bool]], str, int]:
        """(source path, name in the archive, is a directory) of every entry, the input stamp
        (no I/O but reads), and the archive's mode: no wider than its narrowest entry's
        (output_mode). An error names the input it is about (`inputs[2]: ...`)."""
        members: list[tuple[str, str, bool]] = []
        lines = [f"format:{self.format}"]
        modes: list[int] = []
        for index, item in enumerate(self._inputs):
            try:  # a link on the way to an input only under the safe-path rule
                with safefs.closing(safefs.open_trusted(item)) as fd:
                    _scan_input(fd, item, members, lines, modes)
            except FileNotFoundError:
                raise Missing(f"inputs[{index}] {item} does not exist") from None
            except OSError as err:
                raise ResourceError(f"inputs[{index}]: {item}: {err.strerror}") from err
            except ResourceError as err:  # a link refused (UnsafePathError), a special file
                raise ResourceError(f"inputs[{index}]: {err}") from err
        mode = output_mode(modes)
        lines.append(f"mode:{mode:04o}")  # a narrowed input rewrites the archive
        return members, "\n".join(lines) + "\n", mode

    def _archive(self, members: list[tuple[str, str, bool]], stamp_in: str, mode: int) -> str:
        """Write the archive (in a worker thread); the line to log."""

        def fill(out: HashingWriter) -> None:
            with tarfile.open(
                fileobj=out,
                mode="w|",
                format=tarformat.FORMATS[self.format],  # type: ignore[call-overload]
            ) as archive:
                for source, name, is_dir in members:
                    if is_dir:  # its entry only, from its descriptor (no lstat by path)
                        with safefs.closing(safefs.open_trusted(source)) as fd:
                            info = archive.gettarinfo(arcname=name, fileobj=_Opened(fd, source))
                        if not info.isdir():
                            raise ResourceError(f"{source} is no longer a directory")
                        archive.addfile(info)
                        continue
                    # Read through a link only under the safe-path rule, a FIFO never waited
                    # on: tarfile's own open follows any link another user swaps in.
                    with open(safefs.open_regular(source), "rb") as handle:
                        info = archive.gettarinfo(arcname=name, fileobj=handle)
                        archive.addfile(info, handle)

        digest = write_output(self._path, fill, mode)
        var_dir = self.handle.var_dir
        write_stamp(var_dir, INPUT, stamp_in)
        write_stamp(var_dir, OUTPUT, digest)
        return f"archived {len(members)} entries into {self._path}"


class _Opened:
    """What tarfile's gettarinfo reads of an open file: its `name` and `fileno()` (fstat)."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    def fileno(self) -> int:
        return self.fd


def _scan_input(
    fd: int, item: str, members: list[tuple[str, str, bool]], lines: list[str], modes: list[int]
) -> None:
    """Add the input `item` (open as `fd`) to `members`, its lines to the stamp's, and the
    permission bits of it and of everything in it to `modes`."""
    st = os.fstat(fd)
    modes.append(stat.S_IMODE(st.st_mode))
    if not stat.S_ISDIR(st.st_mode):
        members.append((item, os.path.basename(item), False))
        lines.append(f"{item}|{_hash(fd, item)}")
        return
    base = item.rstrip("/")
    prefix = "" if item.endswith("/") else os.path.basename(base) + "/"
    if prefix:
        members.append((base, prefix.rstrip("/"), True))
    lines.append(f"{base}/|")
    for source, inner, digest, mode in _walk(fd, base):
        lines.append(f"{source}/|" if digest is None else f"{source}|{digest}")
        members.append((source, prefix + inner, digest is None))
        modes.append(mode)


def _hash(fd: int, shown: str) -> str:
    """The sha256 (hex) of the regular file open as `fd` (a FIFO or a device is never read)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise ResourceError(f"cannot archive {shown}: not a regular file or directory")
    return hash_fd(fd)


def _walk(dir_fd: int, top: str, rel: str = "") -> Iterator[tuple[str, str, str | None, int]]:
    """(path, path relative to the tree, sha256 of a file or None for a directory, its
    permission bits) of
    everything below the directory `top` (open as `dir_fd`), depth first in lexical order (as
    Go's fs.WalkDir, so that the archive's order matches mgmt's). Listed, stat'd and read
    through directory descriptors, each entry by name (no link followed, as none is inside a
    tree): a directory swapped for a link meanwhile is never gone through."""
    try:
        entries = safefs.scan(dir_fd)
    except OSError as err:
        raise ResourceError(f"cannot read {top}: {err.strerror}") from err
    for name in sorted(entries):
        source, inner, mode = os.path.join(top, name), f"{rel}{name}", entries[name].st_mode
        try:
            if stat.S_ISDIR(mode):
                yield source, inner, None, stat.S_IMODE(mode)
                with safefs.closing(safefs.open_subdir(dir_fd, name)) as sub:
                    yield from _walk(sub, source, inner + "/")
            elif stat.S_ISREG(mode):
                with safefs.closing(safefs.open_read(dir_fd, name)) as fd:
                    yield source, inner, _hash(fd, source), stat.S_IMODE(mode)
            else:
                raise ResourceError(f"cannot archive {source}: not a regular file or directory")
        except OSError as err:
            raise ResourceError(f"cannot read {source}: {err.strerror}") from err
