"""Whose etcd data dir `<prefix>/etcd` is, and whether another process holds it.

Go mgmt keeps its etcd data in the same place (`<prefix>/etcd`, prefix /var/lib/mgmt for root
in both): on a host migrated from it, this agent must neither adopt that data silently (its
member list, its keys, its etcd version) nor move it aside as unusable. So:

- OWNER_FILE (`<prefix>/cluster-etcd-owned`) is written when this agent first runs a member
  in a prefix (before etcd creates the data dir) and says the data dir is ours.
- A data dir without it is ours too if the prefix holds what only this agent writes there at
  a clustered start (OWNER_HINTS: an older version of ours made it before OWNER_FILE); it is
  then written. Otherwise the start is refused (ForeignDataDir: exit 2, before anything is
  written), naming the dir and the ways out (docs/operations.md, Migrating from Go mgmt).
- `holder()`: etcd locks its data (bbolt's `member/snap/db`, with flock) and waits for the
  lock silently; another etcd running on the dir (Go mgmt's) made ours hang with no word. The
  lock is tried first (shared, not waiting), and its holder named from /proc/locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from engine import safefs
from mgmt.cluster import NotAdmitted

OWNER_FILE = "cluster-etcd-owned"
# In the prefix, written only by this agent's clustered starts (mgmt.cluster.cluster).
OWNER_HINTS = ("cluster-agent-id", "cluster-urls.json", "cluster-peers.json", "cluster-tls")


class ForeignDataDir(NotAdmitted):
    """`<prefix>/etcd` holds data this agent did not create (Go mgmt's?): refused at start."""


def claim(prefix: Path, data_dir: Path) -> None:
    """Make sure `data_dir` (in `prefix`) is ours, or absent: write OWNER_FILE if missing;
    ForeignDataDir if it holds data not ours."""
    owner = prefix / OWNER_FILE
    if owner.is_file() and not owner.is_symlink():
        return
    with contextlib.suppress(FileNotFoundError):
        if any(os.scandir(data_dir)) and not any(
            os.path.lexists(prefix / hint) for hint in OWNER_HINTS
        ):
            raise ForeignDataDir(
                f"{data_dir} holds etcd data this agent did not create (Go mgmt's, which keeps "
                f"its etcd data there too?): refusing to adopt or replace it. Move it aside "
                f"(mv {data_dir} {data_dir}.go-mgmt) or give another --prefix; to adopt it "
                f"as it is (it keeps its members and keys; etcd must be able to read its "
                f"version), create {owner} (docs/operations.md, Migrating from Go mgmt)"
            )
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = f"the etcd data dir {data_dir.name}/ here is mgmt's (Python), since {stamp}\n"
    safefs.write_file(str(owner), text.encode(), 0o600)


def holder(data_dir: Path) -> str | None:
    """Who holds etcd's lock on `data_dir`'s keys ("pid N (comm)", or "another process"), or
    None if nobody does (or there is no such file yet)."""
    db = data_dir / "member" / "snap" / "db"
    try:
        fd = os.open(db, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_pid(os.fstat(fd).st_ino) or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _lock_pid(inode: int) -> str | None:
    """The process holding a lock on `inode`, from /proc/locks, as "pid N (comm)"."""
    with (
        contextlib.suppress(OSError),
        open("/proc/locks", encoding="ascii", errors="replace") as locks,
    ):
        for line in locks:
            fields = line.split()
            if len(fields) > 5 and fields[5].rsplit(":", 1)[-1] == str(inode):
                pid = fields[4]
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return f"pid {pid} ({comm})"
                return f"pid {pid}"
    return None
