"""mgmt's later file params: fragments, purge without a source, SELinux contexts."""

from __future__ import annotations

import functools
import os
import stat

from engine import safefs
from engine.errors import ResourceError
from resources._lib.plan import Step
from resources.file.where import TOP, Entry, Where, child, entry_label, kind_of

_SELINUX_XATTR = "security.selinux"
SELINUX_FS = "/sys/fs/selinux"  # mounted where SELinux is enabled


def plan_purge(where: Where, entry: Entry, keep: set[Entry]) -> list[Step]:
    """Steps removing what is below entry and not kept (runs in a thread); kept directories
    are walked through descriptors too (nothing is followed)."""
    steps: list[Step] = []
    for name, st in sorted(where.scan(entry).items()):
        sub = child(entry, name)
        if sub not in keep:
            label = entry_label(sub)
            purge = functools.partial(where.remove, sub)
            steps.append(Step(f"purge {label}", f"purged {label}", purge, True))
        elif stat.S_ISDIR(st.st_mode):
            steps += plan_purge(where, sub, keep)
    return steps


FRAGMENTS_LIMIT = 16 << 20  # bytes the fragments of one file may come to (held in memory)


def read_fragments(fragments: list[str]) -> bytes:
    """The content the fragments make (runs in a thread): each file's bytes in order; a
    directory's regular files by name (one level). A named path is opened like a source (a
    symlink on the way followed only under the safe-path rule: safefs.open_trusted); below a
    directory nothing is followed. ResourceError if one cannot be read, or when they come to
    more than FRAGMENTS_LIMIT bytes: a sparse 100 GB file in a fragment directory another user
    writes cost the agent its size in memory (tester13), now it is refused by its size."""
    parts: list[bytes] = []
    left = [FRAGMENTS_LIMIT]

    def read(fd: int, index: int, shown: str) -> None:
        data = safefs.read_limited(fd, left[0])
        if data is None:
            raise ResourceError(
                f"fragments[{index}]: {shown}: the fragments come to more than "
                f"{FRAGMENTS_LIMIT:,} bytes (the limit)"
            )
        left[0] -= len(data)
        parts.append(data)

    for index, fragment in enumerate(fragments):
        try:
            fd = safefs.open_trusted(fragment)
        except safefs.UnsafePathError as err:
            raise ResourceError(f"fragments[{index}]: {fragment}: {err}") from None
        except OSError as err:
            raise ResourceError(
                f"fragments[{index}]: cannot open {fragment}: {err.strerror}"
            ) from err
        with safefs.closing(fd):
            st = os.fstat(fd)
            if fragment.endswith("/") != stat.S_ISDIR(st.st_mode):
                want = "a directory (it ends in '/')" if fragment.endswith("/") else "a file"
                raise ResourceError(f"fragments[{index}]: {fragment} is not {want}")
            if stat.S_ISREG(st.st_mode):
                read(fd, index, fragment)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ResourceError(f"fragments[{index}]: {fragment} is a {kind_of(st)}")
            for name, entry in sorted(safefs.scan(fd).items()):
                if stat.S_ISREG(entry.st_mode) and not safefs.is_stale_temp(name, entry):
                    with safefs.closing(safefs.open_read(fd, name)) as file_fd:
                        read(file_fd, index, os.path.join(fragment, name))
    return b"".join(parts)


def selinux_enabled() -> bool:
    """SELinux is enabled on this host (its file system is mounted)."""
    return os.path.exists(os.path.join(SELINUX_FS, "enforce"))


def selinux_steps(where: Where, context: str, *, changing: bool) -> list[Step]:
    """Setting path's SELinux context (the security.selinux attribute, through a descriptor
    opened without following a link), after the other steps: when they change path (a write
    makes a new inode) it is set, else only if it differs. ResourceError where SELinux is not
    enabled."""
    if not selinux_enabled():
        raise ResourceError(
            f"selinux: SELinux is not enabled on this host ({SELINUX_FS} is not mounted): "
            "cannot set the context; remove the selinux param here"
        )
    path = where.path
    if not changing:
        with where.at_fd(TOP) as fd:
            have = os.getxattr(fd, _SELINUX_XATTR).rstrip(b"\0").decode(errors="replace")
        if have == context:
            return []
        change = f"{have} -> {context}"
    else:
        change = context

    def relabel() -> None:
        with where.at_fd(TOP) as fd:
            os.setxattr(fd, _SELINUX_XATTR, context.encode())

    return [Step(f"set the SELinux context of {path}: {change}", f"context {change}", relabel)]
