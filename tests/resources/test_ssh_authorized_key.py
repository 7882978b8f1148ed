"""ssh:authorized_key: a real file, read back by OpenSSH's ssh-keygen, watched, repaired."""

from __future__ import annotations

import asyncio
import base64
import os
import pwd
import struct
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ResourceError, ValidationError
from resources.ssh_authorized_key import SshAuthorizedKeyRes
from tests.conftest import Running

Start = Callable[..., Awaitable[Running]]


def ed25519(seed: int) -> str:
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + bytes([seed] * 32)
    return base64.b64encode(blob).decode()


KEY = ed25519(7)
OPTIONS = ["command=\"echo 'only this'; exit\"", "no-pty", 'permitopen="127.0.0.1:2379"']


async def test_add_repair_and_remove(run_resource: Start, tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    keys.write_text("# mine\nssh-ed25519 " + ed25519(1) + " other@host\n")
    res = SshAuthorizedKeyRes(
        name="test",
        file=str(keys),
        state="exists",
        options=OPTIONS,
        type="ssh-ed25519",
        key=KEY,
        comment="root@computer",
    )
    running = await run_resource(res)
    assert await res.check_apply(True) is False
    line = ",".join(OPTIONS) + f" ssh-ed25519 {KEY} root@computer"
    assert keys.read_text().splitlines()[-1] == line
    assert await res.check_apply(True) is True
    # OpenSSH reads the file back: both keys, ours with its comment.
    proc = await asyncio.create_subprocess_exec(
        "ssh-keygen", "-l", "-f", str(keys), stdout=PIPE, stderr=PIPE, stdin=DEVNULL
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"root@computer (ED25519)" in out and b"other@host" in out
    # Drift: the line deleted by hand is put back.
    keys.write_text("# mine\n")
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert keys.read_text() == "# mine\n" + line + "\n"
    # The same line given whole, absent: removed.
    gone = SshAuthorizedKeyRes(name="gone", file=str(keys), state="absent", content=line)
    await run_resource(gone, watch=False)
    assert await gone.check_apply(True) is False
    assert keys.read_text() == "# mine\n"


async def test_a_new_file_is_private(run_resource: Start, tmp_path: Path) -> None:
    keys = tmp_path / "authorized_keys"
    res = SshAuthorizedKeyRes(name=f"ssh-ed25519 {KEY}", file=str(keys), state="exists")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False
    assert keys.read_text() == f"ssh-ed25519 {KEY}\n"
    assert os.stat(keys).st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"type": "ssh-ed25519", "key": "foo"}, "key"),
        ({"type": "ssh-rsa", "key": KEY}, "key"),  # an ed25519 key, not rsa
        ({"type": "ssh-foo", "key": KEY}, "key"),
        ({"type": "ssh-ed25519"}, "key"),
        ({"content": f"ssh-ed25519 {KEY}", "comment": "x"}, "comment"),
        ({"content": "# a comment"}, "content"),
        ({"content": f'command="x ssh-ed25519 {KEY}'}, "content"),
        ({"type": "ssh-ed25519", "key": KEY, "options": ["no pty"]}, "options"),
        ({"type": "ssh-ed25519", "key": KEY, "file": "keys"}, "file"),
        ({"type": "ssh-ed25519", "key": KEY, "file": "/k", "user": "root"}, "file"),
    ],
)
def test_validation_names_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ValidationError) as err:
        SshAuthorizedKeyRes(name="k", state="exists", **params).validate()  # type: ignore[arg-type]
    assert err.value.key == key


async def test_absent_revokes_the_key_whatever_its_options_and_comment(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A leaked key is revoked: every line holding its blob goes, not only the identical one."""
    keys = tmp_path / "authorized_keys"
    other = f"ssh-ed25519 {ed25519(1)} other@host"
    keys.write_text(
        f'# mine\nfrom="10.0.0.1",no-pty ssh-ed25519 {KEY} leaked@laptop\n{other}\n'
        f"ssh-ed25519   {KEY}\n# was: ssh-ed25519 {KEY}\n  ssh-ed25519 {KEY} again\n"
    )
    res = SshAuthorizedKeyRes(
        name="revoke", file=str(keys), state="absent", type="ssh-ed25519", key=KEY
    )
    await run_resource(res, watch=False)
    caplog.set_level("INFO")
    assert await res.check_apply(False) is False  # --noop: says so, changes nothing
    assert "leaked@laptop" in keys.read_text()
    assert await res.check_apply(True) is False
    assert keys.read_text() == f"# mine\n{other}\n# was: ssh-ed25519 {KEY}\n"  # a comment stays
    assert "removed 3 lines with the key from" in caplog.text
    assert await res.check_apply(True) is True


async def test_options_edited_by_hand_are_put_back(run_resource: Start, tmp_path: Path) -> None:
    """The options restrict the key: a line of this key with other (or no) options is replaced
    by the wanted one, in its place (sshd uses the first line that matches); copies go."""
    keys = tmp_path / "authorized_keys"
    other = f"ssh-ed25519 {ed25519(1)} other@host"
    keys.write_text(f"{other}\n")
    res = SshAuthorizedKeyRes(
        name="deploy", file=str(keys), state="exists", options=OPTIONS, type="ssh-ed25519",
        key=KEY, comment="deploy",
    )  # fmt: skip
    running = await run_resource(res)
    assert await res.check_apply(True) is False
    line = ",".join(OPTIONS) + f" ssh-ed25519 {KEY} deploy"
    assert keys.read_text() == f"{other}\n{line}\n"
    # By hand: the forced command stripped (a full shell), and a copy left at the end.
    keys.write_text(f"ssh-ed25519 {KEY} deploy\n{other}\nno-pty ssh-ed25519 {KEY}\n")
    await running.handle.next_event()
    assert await res.check_apply(True) is False
    assert keys.read_text() == f"{line}\n{other}\n"
    assert await res.check_apply(True) is True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
async def test_a_new_file_is_owned_as_its_directory(run_resource: Start, tmp_path: Path) -> None:
    """sshd reads a user's file as the user: a new file in ~/.ssh is the user's, not root's."""
    ssh = tmp_path / ".ssh"
    ssh.mkdir(mode=0o700)
    os.chown(ssh, 65534, 65534)
    keys = ssh / "authorized_keys"
    res = SshAuthorizedKeyRes(name=f"ssh-ed25519 {KEY}", file=str(keys), state="exists")
    await run_resource(res, watch=False)
    assert await res.check_apply(True) is False
    st = os.stat(keys)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


def _link_theirs(keys: Path, victim: Path) -> None:
    """The user hard-links another user's group-writable file (holding the key line) as their
    authorized_keys (tester13 #5)."""
    victim.write_text(f"ssh-ed25519 {KEY}\n")
    os.chown(victim, 65533, 65533)
    victim.chmod(0o660)
    keys.unlink()
    os.link(victim, keys)


@pytest.mark.host
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd)")
async def test_user_keeps_its_file_and_refuses_a_planted_link(
    run_resource: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With `user`: a root-owned or group-writable file is given back to the user; a ~/.ssh
    the user made a symlink (to root's files) is refused, its target untouched."""
    home = tmp_path / "home"
    home.mkdir()
    name = f"mgmt-ak-{os.getpid() % 100000}"
    proc = await asyncio.create_subprocess_exec(
        "useradd", "--home-dir", str(home), name, stdin=DEVNULL, stderr=PIPE
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err
    try:
        uid = pwd.getpwnam(name).pw_uid
        gone = SshAuthorizedKeyRes(name="g", user=name, state="absent", type="ssh-ed25519", key=KEY)
        await run_resource(gone, watch=False)
        assert await gone.check_apply(True) is True  # no ~/.ssh: no key, and none is made
        assert not (home / ".ssh").exists()
        (home / ".ssh").mkdir(mode=0o700)
        os.chown(home / ".ssh", uid, -1)
        keys = home / ".ssh" / "authorized_keys"
        keys.write_text(f"ssh-ed25519 {KEY}\n")
        os.chmod(keys, 0o620)
        res = SshAuthorizedKeyRes(name="k", user=name, state="exists", type="ssh-ed25519", key=KEY)
        await run_resource(res, watch=False)
        assert await res.check_apply(True) is False
        st = os.stat(keys)
        assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
        assert await res.check_apply(True) is True
        home.chmod(0o775)  # sshd ignores the key then: said, as a warning
        assert await res.check_apply(True) is True
        assert f"sshd (StrictModes) will ignore the key: the home {home} is owned" in caplog.text
        _link_theirs(keys, tmp_path / "theirs")  # not chowned to them
        with pytest.raises(ResourceError, match=f"{keys} has 2 hard links and its directory is"):
            await res.check_apply(True)
        st = os.stat(tmp_path / "theirs")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65533, 65533, 0o660)
        keys.unlink()
        # The user swaps ~/.ssh for a link to a directory of root's.
        secret = tmp_path / "root-only"
        secret.mkdir(mode=0o700)
        (secret / "authorized_keys").write_text("root's\n")
        os.rename(home / ".ssh", tmp_path / "old-ssh")
        os.symlink(secret, home / ".ssh")
        os.lchown(home / ".ssh", uid, -1)
        with pytest.raises(ResourceError):
            await res.check_apply(True)
        assert (secret / "authorized_keys").read_text() == "root's\n"
        assert os.stat(secret / "authorized_keys").st_uid == 0
    finally:
        proc = await asyncio.create_subprocess_exec("userdel", name, stdin=DEVNULL)
        async with asyncio.timeout(60):
            await proc.wait()
