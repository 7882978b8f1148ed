"""line: one or more lines kept in, or removed from, a file (mgmt's `line`).

`content` is a block of consecutive lines (a trailing newline in it ends its last line, it
does not ask for an empty line after it). With state `exists` the block is appended at the end
when the file does not hold it; with `absent` every occurrence of it is removed. Every other
byte of the file is kept, including whether it ends with a newline (a line added to a file
without one starts on a line of its own). The file is read through its directory's descriptor
and rewritten atomically and durably (engine.safefs), keeping its mode and owner; a missing
file is created 0600 (its directory must exist), as mgmt does. Watched with inotify. The work
is in resources/_lib/lines.py, shared with ssh:authorized_key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import ValidationError
from engine.resource import Resource, register
from resources._lib.lines import edit, watch_file


@register("line")
@dataclass(kw_only=True, eq=False)
class LineRes(Resource):
    DRIFTS = True  # its repairs are watched for churn (engine.churn)
    # The file (absolute). Required.
    file: str
    # "exists": the lines are in the file; "absent": they are not. Required.
    state: Literal["exists", "absent"]
    # The lines to keep or remove, one block. Empty: nothing is done (mgmt's).
    content: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.file.startswith("/"):
            raise ValidationError(f"expected an absolute path, got {self.file!r}", "file")
        if self.file.endswith("/"):
            raise ValidationError(f"expected a file, not a directory: {self.file!r}", "file")
        if "\0" in self.content:
            raise ValidationError("must not contain a NUL byte", "content")

    async def watch(self) -> None:
        await watch_file(self.handle, self.file)

    async def check_apply(self, apply: bool) -> bool:
        return await edit(self.handle, self.file, self.state, self.content, apply)
