"""ssh:authorized_key: a real file, read back by OpenSSH's ssh-keygen, watched, repaired."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.errors import ValidationError
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
