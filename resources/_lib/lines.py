"""A block of lines kept in, or removed from, a file (the `line` kind; `ssh:authorized_key`).

`edit` is the check_apply: `content` is a block of consecutive lines (a trailing newline in it
ends its last line). With state "exists" the block is appended at the end when the file does
not hold it; with "absent" every occurrence is removed. Every other byte of the file is kept,
including whether it ends with a newline (a line added to a file without one starts on a line
of its own). The file is read through its directory's descriptor and rewritten atomically and
durably (engine.safefs), keeping its mode and owner; a missing file is created 0600 (its
directory must exist). Edits of one file are serialised within the engine (proc.file_lock). `watch_file` watches it with inotify.
"""

from __future__ import annotations

import os

from engine import safefs
from engine.handle import Handle
from engine.watcher import PathWatcher
from resources._lib import tablefile
from resources._lib.events import pump_events
from resources._lib.plan import Step, apply_steps, in_thread, nothing_to_do
from resources._lib.proc import file_lock
from resources._lib.rewrites import wrote

NEW_MODE = 0o600  # a file a line creates (mgmt's)


async def watch_file(handle: Handle, path: str) -> None:
    """The startup event, then one per change of the file (inotify), until cancelled."""
    async with PathWatcher([path]) as changes:
        await handle.event()
        await pump_events(handle, [changes])


async def edit(handle: Handle, path: str, state: str, content: str, apply: bool) -> bool:
    """check_apply of a block of lines `content` kept in (state exists) or removed from a file
    (see the module docstring); shared with the kinds made of a line (ssh:authorized_key)."""
    if not content:
        return nothing_to_do(handle, "no content: nothing to keep or remove")
    async with file_lock(handle.shared, path):  # other resources of this file wait
        return await _edit(handle, path, state, content, apply)


async def _edit(handle: Handle, path: str, state: str, content: str, apply: bool) -> bool:
    text = await in_thread(lambda: tablefile.read_text(path, errors="surrogateescape"))
    block = _block(content)
    lines = split_lines(text or "")
    found = _find(lines, block) >= 0
    what = f"{len(block)} lines in {path}" if len(block) > 1 else f"a line in {path}"
    if state == "exists":
        if found:
            return nothing_to_do(handle, f"{path} has the line(s)")
        new = (text or "") + ("\n" if text and not text.endswith("\n") else "")
        new += "".join(line + "\n" for line in block)
        step = write_step(path, new, text is None, f"add {what}", f"added {what}")
    else:
        if not found:
            return nothing_to_do(handle, f"{path} does not have the line(s)")
        assert text is not None
        new = join_lines(_remove(lines, block), text)
        step = write_step(path, new, False, f"remove {what}", f"removed {what}")
    await apply_steps(handle, [step], apply, errors=(OSError,))
    if apply:
        wrote(handle, path)
    return False


def write_step(
    path: str,
    text: str,
    create: bool,
    would: str,
    done: str,
    *,
    owner: tuple[int, int] | None = None,
    new_mode: int = NEW_MODE,
) -> Step:
    """The step that rewrites `path` with `text`: its mode and owner kept (a new file: new_mode,
    the agent's). With `owner` (uid, gid), the file gets that owner and loses any group or
    other write bit (what sshd's StrictModes asks of an authorized_keys file)."""
    data = text.encode(errors="surrogateescape")

    def write() -> None:
        parent, name = os.path.split(path)
        with safefs.closing(safefs.open_dir(parent)) as dir_fd:
            st = None if create else safefs.lstat_at(dir_fd, name)
            mode, uid, gid = new_mode, -1, -1
            if st is not None:
                mode = st.st_mode & 0o7777
                if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    uid, gid = st.st_uid, st.st_gid
            if owner is not None:
                (uid, gid), mode = owner, mode & ~0o022
            safefs.write_at(dir_fd, name, data, mode=mode, uid=uid, gid=gid)

    return Step(would, done, write, slow=True)


def join_lines(lines: list[str], text: str) -> str:
    """`lines` as a file's text, ending with a newline when `text` (the file's before) did."""
    return "\n".join(lines) + ("\n" if lines and text.endswith("\n") else "")


def rejoin(lines: list[str], text: str | None) -> str:
    """`lines`, the file's lines after an edit, as its new text: each line ends with a newline,
    except the last when it is the old last line, which had none (as the file was)."""
    new = "".join(line + "\n" for line in lines)
    if text and not text.endswith("\n") and lines and lines[-1] == split_lines(text)[-1]:
        return new[:-1]
    return new


def _block(content: str) -> list[str]:
    return content.removesuffix("\n").split("\n")


def split_lines(text: str) -> list[str]:
    """The file's lines: split on newlines only, without the empty one after a final newline."""
    return text.removesuffix("\n").split("\n") if text else []


def _find(lines: list[str], block: list[str], start: int = 0) -> int:
    """The first index >= start where `block` is in `lines`, or -1."""
    for i in range(start, len(lines) - len(block) + 1):
        if lines[i : i + len(block)] == block:
            return i
    return -1


def _remove(lines: list[str], block: list[str]) -> list[str]:
    """`lines` without any occurrence of `block` (scanned left to right, not overlapping)."""
    out: list[str] = []
    i = 0
    while (found := _find(lines, block, i)) >= 0:
        out += lines[i:found]
        i = found + len(block)
    return out + lines[i:]
