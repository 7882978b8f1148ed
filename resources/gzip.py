"""gzip: a file compressed with gzip from another file or from `content` (mgmt's gzip).

The name (or `path`) is the compressed file. As in mgmt, the sha256 of the input (with the
level) and of the output are stamped in the resource's var dir (`resources._lib.stamp`): the
file is compressed again only when the input or level changed, or the output was changed or
removed. The watch is inotify on the output and the input. See docs/resources/gzip.md.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

from engine import safefs
from engine.errors import ValidationError
from engine.params import EMPTY_IS_UNSET
from engine.resource import UID, Edgeable, Resource, register
from engine.watcher import PathWatcher
from resources._lib.missing import Missing, would_wait
from resources._lib.named import or_name
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.stamp import (
    CHUNK,
    INPUT,
    OUTPUT,
    HashingWriter,
    check_abs_file,
    file_needs,
    file_uids,
    hash_and_mode,
    hash_file,
    output_mode,
    read_stamp,
    write_output,
    write_stamp,
)

DEFAULT_COMPRESSION, HUFFMAN_ONLY = -1, -2  # Go's compress/gzip levels, kept by mgmt


@register("gzip")
@dataclass(kw_only=True, eq=False)
class GzipRes(Edgeable, Resource):
    # mgmt's $const.res.gzip.level.<name> constants.
    CONSTANTS: ClassVar[dict[str, dict[str, int | str]]] = {
        "level": {
            "no_compression": 0,
            "best_speed": 1,
            "best_compression": 9,
            "default_compression": DEFAULT_COMPRESSION,
            "huffman_only": HUFFMAN_ONLY,
        }
    }

    # The compressed file (absolute, not ending in '/'). Default None: the name.
    path: str | None = field(default=None, metadata=EMPTY_IS_UNSET)
    # The file to compress (absolute). Default None: compress `content` instead.
    input: str | None = None
    # The data to compress when there is no `input`. Default "" (an empty stream).
    content: str = ""
    # 0 (none) to 9 (best), -1 (zlib's default, 6) or -2 (Huffman coding only). Default -1.
    level: int = DEFAULT_COMPRESSION

    @property
    def _path(self) -> str:
        return or_name(self, "path")[0]

    def validate(self) -> None:
        super().validate()
        check_abs_file(*or_name(self, "path"))
        if self.input is not None:
            check_abs_file(self.input, "input")
            if os.path.normpath(self.input) == os.path.normpath(self._path):
                raise ValidationError("must not be the compressed file itself", "input")
        if not HUFFMAN_ONLY <= self.level <= 9:
            raise ValidationError(
                f"expected -2 (huffman_only), -1 (default_compression) or 0 to 9, got {self.level}",
                "level",
            )

    async def watch(self) -> None:
        paths = [self._path] + ([self.input] if self.input is not None else [])
        async with PathWatcher(paths) as changes:
            await self.handle.event()
            async for _ in changes:
                await self.handle.event()

    async def check_apply(self, apply: bool) -> bool:
        var_dir = self.handle.var_dir
        try:
            (wanted_in, mode), have_out, stamp_in, stamp_out = await in_thread(
                lambda: (
                    self._input_stamp(),
                    hash_file(self._path),
                    read_stamp(var_dir, INPUT),
                    read_stamp(var_dir, OUTPUT),
                )
            )
        except Missing as err:
            return await would_wait(self.handle, err, apply, f"compress into {self._path}")
        if wanted_in == stamp_in and have_out and have_out == stamp_out:
            return nothing_to_do(self.handle, f"{self._path} is up to date ({self._source()})")
        why = (
            "is missing"
            if not have_out
            else "was changed"
            if have_out != stamp_out
            else "is out of date"
        )
        run = functools.partial(self._compress, wanted_in, mode)
        step = Step(f"compress {self._source()} into {self._path} (it {why})", "", run, slow=True)
        await apply_steps(self.handle, [step], apply, errors=(OSError,))
        return False

    def uids(self) -> list[UID]:
        return file_uids(self._path)

    def autoedges(self) -> list[list[UID]]:
        return file_needs(self._path, [self.input] if self.input is not None else [])

    def _source(self) -> str:
        return (
            self.input if self.input is not None else f"{len(self.content)} characters of content"
        )

    def _input_stamp(self) -> tuple[str, int]:
        """What the output is made of (the level, the input's digest and, for a file, the
        output's mode: a narrowed input rewrites the output), and the output's mode: 0644 for
        `content`, else no wider than the input's (output_mode)."""
        if self.input is None:
            digest = hashlib.sha256(self.content.encode()).hexdigest()
            return f"level:{self.level}|{digest}", 0o644
        digest, bits = hash_and_mode(self.input)
        if not digest:
            raise Missing(f"the input {self.input} does not exist")
        mode = output_mode([bits])
        return f"level:{self.level}|{digest}|mode:{mode:04o}", mode

    def _compress(self, stamp_in: str, mode: int) -> str:
        """Write the output (in a worker thread); the line to log."""
        level = 6 if self.level == HUFFMAN_ONLY else self.level
        strategy = zlib.Z_HUFFMAN_ONLY if self.level == HUFFMAN_ONLY else zlib.Z_DEFAULT_STRATEGY
        read = [0]

        def fill(out: HashingWriter) -> None:
            packer = zlib.compressobj(level, zlib.DEFLATED, 31, strategy=strategy)  # 31: gzip
            if self.input is None:
                data = self.content.encode()
                read[0] = len(data)
                out.write(packer.compress(data))
            else:
                with open(safefs.open_regular(self.input), "rb") as source:
                    while chunk := source.read(CHUNK):
                        read[0] += len(chunk)
                        out.write(packer.compress(chunk))
            out.write(packer.flush())

        digest = write_output(self._path, fill, mode)
        var_dir = self.handle.var_dir
        write_stamp(var_dir, INPUT, stamp_in)
        write_stamp(var_dir, OUTPUT, digest)
        return f"compressed {read[0]} bytes of {self._source()} into {self._path}"
