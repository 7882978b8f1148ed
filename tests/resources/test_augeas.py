"""augeas: the timeline on a real sshd_config through the real Sshd lens (libaugeas)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources.augeas import AugeasRes, AugeasSet
from tests.conftest import Running

CONFIG = "# managed in part\nPort 22\nX11Forwarding yes\nPermitRootLogin no\n"


async def test_sshd_timeline(run_resource: object, tmp_path: Path) -> None:
    conf = tmp_path / "sshd_config"
    conf.write_text(CONFIG)
    conf.chmod(0o600)
    res = AugeasRes(
        name="sshd",
        file=str(conf),
        lens="Sshd.lns",
        sets=[
            AugeasSet(path="X11Forwarding", value="no"),
            AugeasSet(path="MaxAuthTries", value="3"),
        ],
    )
    running: Running = await run_resource(res)  # type: ignore[operator]
    assert await res.check_apply(False) is False  # noop: nothing written
    assert conf.read_text() == CONFIG
    assert await res.check_apply(True) is False
    text = conf.read_text()
    assert "X11Forwarding no\n" in text and "MaxAuthTries 3\n" in text
    assert text.startswith("# managed in part\nPort 22\n")  # the rest is kept
    assert os.stat(conf).st_mode & 0o777 == 0o600
    await running.handle.next_event()
    assert await res.check_apply(True) is True
    conf.write_text(text.replace("X11Forwarding no", "X11Forwarding yes"))  # drift
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert "X11Forwarding no\n" in conf.read_text()
    assert await res.check_apply(True) is True
    assert not list((tmp_path / "var").rglob("sshd_config"))  # the scratch copy is gone


async def test_refusals(run_resource: object, tmp_path: Path) -> None:
    sets = [AugeasSet(path="Port", value="22")]
    missing = AugeasRes(name="m", file=str(tmp_path / "none"), lens="Sshd.lns", sets=sets)
    await run_resource(missing, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="does not exist"):
        await missing.check_apply(True)
    (tmp_path / "target").write_text(CONFIG)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    linked = AugeasRes(name="l", file=str(tmp_path / "link"), lens="Sshd.lns", sets=sets)
    await run_resource(linked, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="not followed"):
        await linked.check_apply(True)
    (tmp_path / "bad").write_text("=broken\n")
    broken = AugeasRes(name="b", file=str(tmp_path / "bad"), lens="Sshd.lns", sets=sets)
    await run_resource(broken, watch=False)  # type: ignore[operator]
    with pytest.raises(ResourceError, match="cannot parse"):
        await broken.check_apply(True)
    for params, key in (
        ({"file": "rel"}, "file"),
        ({"file": "/x", "lens": "Sshd"}, "lens"),
        ({"file": "/x", "sets": [AugeasSet(path="/abs", value="1")]}, "sets[0].path"),
        ({"file": "/x", "sets": [AugeasSet(path="../../etc/passwd", value="1")]}, "sets[0].path"),
        ({"file": "/x", "sets": [AugeasSet(path="Match[1]/ .. /X", value="1")]}, "sets[0].path"),
    ):
        with pytest.raises(ValidationError) as err:
            AugeasRes(name="v", **params).validate()  # type: ignore[arg-type]
        assert err.value.key == key

    # A '..' inside a predicate's quotes is a value, not a step.
    AugeasRes(
        name="v", file="/x", sets=[AugeasSet(path='Match[Condition/User="a/.."]/X', value="1")]
    ).validate()


async def test_a_file_no_lens_handles_fails_and_is_never_written(
    run_resource: object, tmp_path: Path
) -> None:
    """Without `lens`, a file outside every lens' paths: before, each check "set" the value,
    Augeas saved nothing, the unchanged bytes were written back, and that write was the next
    event (a loop at 50% CPU); now it fails naming what to give, and the file is untouched. A
    lens that does not exist says so (before: "cannot save F: No error")."""
    conf = tmp_path / "nolens_config"
    conf.write_text("Port 22\n")
    before = os.stat(conf)
    sets = [AugeasSet(path="Port", value="2222")]
    for lens, message in (
        (None, f"no Augeas lens handles {conf}: give `lens`"),
        ("Nosuch.lns", "no lens named Nosuch.lns"),
    ):
        res = AugeasRes(name=f"n{lens}", file=str(conf), lens=lens, sets=sets)
        await run_resource(res, watch=False)  # type: ignore[operator]
        with pytest.raises(ResourceError, match=message):
            await res.check_apply(True)
    after = os.stat(conf)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "Match/..", "Port/../../x", "..[1]", "parent::*/x"]
)
def test_a_set_path_leaving_the_files_tree_is_refused(path: str) -> None:
    res = AugeasRes(name="d", file="/x", sets=[AugeasSet(path=path, value="1")])
    with pytest.raises(ValidationError, match="expected a path below the file's tree") as err:
        res.validate()
    assert err.value.key == "sets[0].path"


def test_without_lens_the_file_s_module_alone_is_loaded_after_the_first_check(
    tmp_path: Path,
) -> None:
    """Without `lens`, the first load of a file lets Augeas pick the lens by its path (every
    lens module compiled, ~300 ms); the next ones load that module alone (~20 ms,
    docs/benchmarks.md), with the same tree and the same saved bytes. A module that no longer
    loads the file falls back to every lens, and the right one is kept."""
    from resources import augeas

    file = f"/usr/local/etc/dovecot/conf.d/{tmp_path.name}.conf"  # Dovecot's path: under root
    trees = []
    for name in ("first", "second", "given"):
        root = tmp_path / name
        copy = root / file.lstrip("/")
        copy.parent.mkdir(parents=True)
        copy.write_text("protocols = imap\nmail_location = maildir:~/Maildir\n")
        aug = augeas.Augeas(str(root), "Dovecot.lns" if name == "given" else None, file)
        try:
            assert aug.get(f"/files{file}/protocols") == "imap"
            # Every module is loaded (its /augeas/load entry) only by the first, autoloading.
            assert (aug.get("/augeas/load/Sshd/lens") is not None) == (name == "first"), name
            aug.set(f"/files{file}/protocols", "imap lmtp")
            aug.save(file)
        finally:
            aug.close()
        assert augeas._MODULES[file] == "Dovecot"
        trees.append(copy.read_bytes())
    assert trees[0] == trees[1] == trees[2]
    assert b"protocols = imap lmtp\n" in trees[0]
    augeas._MODULES[file] = "Sshd"  # a module that does not load it: every lens, as first
    aug = augeas.Augeas(str(tmp_path / "first"), None, file)
    try:
        assert aug.get(f"/files{file}/protocols") == "imap lmtp"
    finally:
        aug.close()
    assert augeas._MODULES[file] == "Dovecot"


def test_a_second_augeas_handle_waits_for_the_first_to_close(tmp_path: Path) -> None:
    """libaugeas compiles a lens' patterns with glibc's process-wide `re_syntax_options` set
    around each compile: two handles in two threads could compile one with the other's
    restored default (a pattern then matching nothing: "Input string does not match at all",
    once in CI). A handle opened in another thread waits until the first is closed."""
    from resources import augeas

    file = "/etc/ssh/sshd_config"
    copy = tmp_path / file.lstrip("/")
    copy.parent.mkdir(parents=True)
    copy.write_text(CONFIG)
    opened = threading.Event()
    values: list[str | None] = []

    def second() -> None:
        aug = augeas.Augeas(str(tmp_path), "Sshd.lns", file)
        try:
            opened.set()
            values.append(aug.get(f"/files{file}/Port"))
        finally:
            aug.close()

    first = augeas.Augeas(str(tmp_path), "Sshd.lns", file)
    thread = threading.Thread(target=second)
    try:
        thread.start()
        assert not opened.wait(0.5)  # (~20 ms to open, when it may)
        assert first.get(f"/files{file}/Port") == "22"
    finally:
        first.close()
    assert opened.wait(60)
    thread.join(60)
    assert values == ["22"]
    with pytest.raises(ResourceError, match="cannot parse"):  # a failed open gives up its turn
        copy.write_text("Match\n")
        augeas.Augeas(str(tmp_path), "Sshd.lns", file)
    copy.write_text(CONFIG)
    augeas.Augeas(str(tmp_path), "Sshd.lns", file).close()
