"""The kernel's inotify limits (issue 16): hitting one says which sysctl, its value and what to
set, instead of failing obscurely (a watch that silently was not there)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from engine import inotify
from engine.watcher import PathWatcher


def test_the_hint_names_the_sysctl_its_value_and_a_higher_one() -> None:
    now = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    hint = inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
    assert f"fs.inotify.max_user_watches is {now:,}" in hint
    assert f"sysctl -w fs.inotify.max_user_watches={max(524288, 2 * now)}" in hint
    assert "fs.inotify.max_user_instances" in inotify.limit_hint("inotify_init1", errno.EMFILE)
    assert inotify.limit_hint("inotify_add_watch", errno.ENOENT) == ""


async def test_running_out_of_watches_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The kernel's answer when the limit is reached (it cannot be lowered on a shared machine).
    def full(self: inotify.Inotify, path: object, mask: int) -> int:
        hint = inotify.limit_hint("inotify_add_watch", errno.ENOSPC)
        raise OSError(errno.ENOSPC, f"inotify_add_watch: No space left on device{hint}", path)

    monkeypatch.setattr(inotify.Inotify, "add_watch", full)
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    with caplog.at_level(logging.ERROR, "engine"):
        async with PathWatcher([tmp_path / "a"]), PathWatcher([tmp_path / "b"]):
            pass
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "fs.inotify.max_user_watches" in errors[0] and "changes there go unseen" in errors[0]
