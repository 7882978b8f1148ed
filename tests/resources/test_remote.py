"""remote: its URL, its params and its zipapp (the SSH part: tests/e2e/test_remote_e2e.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from engine.errors import ValidationError
from mgmt.version import VERSION
from resources.remote import HELPER, RemoteRes, Target, known_key, parse_remote, redacted, zipapp

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_urls_as_mgmt_reads_them() -> None:
    assert parse_remote("ssh://bob@h:2222/") == Target("h", 2222, "bob", None)
    assert parse_remote("h") == Target("h", 22, "root", None)
    assert parse_remote("h:23") == Target("h", 23, "root", None)
    assert parse_remote("ssh://u:pw@h/").password == "pw"
    assert redacted("ssh://u:hunter2@h:22/") == "ssh://u@h:22/"
    for bad in ("http://h/", "ssh://", "ssh://h:port/"):
        with pytest.raises(ValueError):
            parse_remote(bad)


@pytest.mark.parametrize(
    ("params", "key", "says"),
    [
        ({"name": "http://h/"}, "name", "unknown scheme"),
        ({"name": "r", "remote": "ssh://u:pw@h/"}, "remote", "allow_cleartext_password"),
        ({"name": "ssh://u:pw@h/", "allow_cleartext_password": True}, "name", "logged"),
        ({"name": "h", "state": "gone"}, "state", "running or stopped"),
        ({"name": "h", "interactive": True}, "name", "never prompts"),
        ({"name": "h", "converger_timeout": -1}, "converger_timeout", "negative"),
        ({"name": "h", "transient": False}, "tunnelled", "needs transient"),
        (
            {"name": "h", "transient": False, "tunnelled": False, "converger_timeout": 1},
            "converger_timeout",
            "needs transient",
        ),
        ({"name": "h", "tunnel_addr": "nowhere"}, "tunnel_addr", "HOST:PORT"),
        ({"name": "h", "hostkey": "not base64!"}, "hostkey", "known_hosts"),
        ({"name": "h", "python": " "}, "python", "empty"),
    ],
)
def test_validation(params: dict[str, object], key: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as err:
        RemoteRes(**params).validate()  # type: ignore[arg-type]
    assert err.value.key == key
    assert "pw@" not in str(err.value)


def test_valid_params() -> None:
    RemoteRes(name="r", remote="ssh://u:pw@h/", allow_cleartext_password=True).validate()
    RemoteRes(name="h", hostkey=KEY, transient=False, tunnelled=False).validate()
    assert known_key(KEY) == f"ssh-ed25519 {KEY}"


def test_the_zipapp_is_deterministic_and_runs(tmp_path: Path) -> None:
    first = zipapp()
    assert hashlib.sha256(first).digest() == hashlib.sha256(zipapp()).digest()
    with zipfile.ZipFile(BytesIO(first)) as zf:
        names = zf.namelist()
    assert names[0] == "__main__.py" and "mgmt/cli.py" in names and "engine/engine.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    pyz = tmp_path / "mgmt.pyz"
    pyz.write_bytes(first)
    done = subprocess.run(
        [sys.executable, str(pyz), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == f"{VERSION}\n", done  # bare: not a checkout


def test_the_helper_finds_no_child_without_its_pid(tmp_path: Path) -> None:
    def helper(*args: str) -> int:
        argv = [sys.executable, "-c", HELPER, *args]
        return subprocess.run(argv, timeout=30, check=False, stdin=subprocess.DEVNULL).returncode

    pid, pyz = tmp_path / "pid", str(tmp_path / "mgmt.pyz")
    assert helper("status", str(pid), pyz) == 1  # no pid file
    pid.write_text("1\n")  # a pid that is not ours (its command line does not name the zipapp)
    assert helper("status", str(pid), pyz) == 1
    assert helper("stop", str(pid), pyz, "1") == 0  # nothing of ours to stop: init untouched


def test_two_declarations_differing_in_their_url_keep_its_password_secret(tmp_path: Path) -> None:
    """`mgmt check` (and the agent's log) names the param that differs, not the passwords."""
    from tests.e2e.helpers import run_mgmt

    block = (
        'remote "far" {{\n\tremote => "ssh://root:{}@127.0.0.1:1/",\n'
        "\tallow_cleartext_password => true,\n\ttunnelled => false,\n}}\n"
    )
    (tmp_path / "main.mcl").write_text(block.format("hunter2") + block.format("hunter3"))
    code, out = run_mgmt(["check", "lang", str(tmp_path / "main.mcl")])
    assert code == 2 and "incompatible duplicate resource remote[far]: remote: differs" in out
    assert "hunter" not in out and "ssh://root@127.0.0.1:1/" in out, out


def test_a_password_is_percent_decoded_and_never_in_a_parse_error() -> None:
    """As Go's url.Parse (mgmt): userinfo is percent-decoded. A '/', '?', '#' or '@' left
    raw in the password splits the URL elsewhere: refused, the message naming no part of it
    (a fragment of the password was taken for the host, the port or the path)."""
    assert parse_remote("ssh://b%40b:p%40ss%2Fw%23@h:2/") == Target("h", 2, "b@b", "p@ss/w#")
    for raw in (
        "ssh://root:hunter/2@h/",
        "ssh://root:hunter#2@h/",
        "ssh://root:hun?ter2@h/",
        "ssh://root:22/hunter2@h/",
    ):
        with pytest.raises(ValueError) as err:
            RemoteRes(name="r", remote=raw, allow_cleartext_password=True).validate()
        assert "hunter" not in str(err.value) and "ter2" not in str(err.value), err.value
        assert "percent-encoded" in str(err.value)
