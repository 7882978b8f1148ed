"""The kernel's inotify limits (issue 16): hitting one says which sysctl, its value and what to
set, instead of failing obscurely (a watch that silently was not there)."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
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


def _in_user_namespace(limit: str, value: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`argv` in a new user namespace whose inotify `limit` (user.max_inotify_*: that
    namespace's own, the host's sysctls untouched) is `value`: the kernel's real limit, hit."""
    script = f'echo {value} > /proc/sys/user/{limit} && exec "$@"'
    return subprocess.run(
        ["unshare", "-Ur", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("limit", "value", "says"),
    [
        # No instance at all: each resource applied once, not watched (it was a traceback,
        # and nothing applied).
        ("max_inotify_instances", 0, "no change is seen until the agent restarts"),
        # Fewer watches than files: all applied, the rest unwatched, said once.
        ("max_inotify_watches", 5, "changes there go unseen"),
    ],
)
def test_a_real_kernel_limit_is_said_once_and_the_graph_still_applied(
    tmp_path: Path, limit: str, value: int, says: str
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    if subprocess.run(["unshare", "-Ur", "true"], capture_output=True, check=False).returncode:
        pytest.skip("no new user namespace here (unshare -Ur true failed)")
    files = tmp_path / "files"
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "graph: g\nresources:\n  file:\n"
        + "".join(
            f"    - name: f{i}\n      path: {files}/d{i % 10}/f{i}\n" for i in range(30)
        ).replace("      path", '      content: "x\\n"\n      path')
    )
    from tests.e2e.helpers import MGMT

    run = ["run", "--converged-timeout=0", "--tmp-prefix", "yaml", str(graph)]
    done = _in_user_namespace(limit, value, [*MGMT, *run])
    out = done.stderr + done.stdout
    assert done.returncode == 0, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if says in line]
    assert len(errors) == 1, out
    assert f"this user namespace's limit user.{limit} is {value}" in errors[0]
    assert sorted(p.name for p in files.rglob("f*") if p.is_file()) == sorted(
        f"f{i}" for i in range(30)
    )
