"""`mgmt deploy`'s thin client: which commands it takes, what files it sends (real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgmt.deploy import bundle
from mgmt.deploy import client as thin
from tests.child import python
from tests.e2e.helpers import MGMT, ROOT


@pytest.mark.parametrize(
    ("argv", "taken"),
    [
        (["--sign-key", "k", "lang", "d/"], True),
        (["--seeds=https://h:2379", "--unsigned", "--force", "--keep", "3", "yaml", "g"], True),
        (["--timings", "--prefix", "/p", "--sign-key=k", "lang", "f.mcl"], True),
        (["--direct", "--sign-key", "k", "lang", "d/"], False),
        (["--list"], False),
        (["--rollback", "3", "--sign-key", "k"], False),
        (["--tls-ca", "ca.pem", "--sign-key", "k", "lang", "d/"], False),
        (["--insecure-cluster", "--unsigned", "lang", "d/"], False),
        (["--sign-key", "k", "--unsigned", "lang", "d/"], False),  # the CLI says what's wrong
        (["lang", "d/"], False),
        (["--keep", "0", "--unsigned", "lang", "d/"], False),
        (["--keep", "1_0", "--unsigned", "lang", "d/"], False),
        (["--max-resources", "5", "--max-graph-size=100", "--unsigned", "yaml", "g"], True),
        (["--max-resources", "x", "--unsigned", "lang", "d/"], False),
        (["--sign-key", "k", "run", "d/"], False),
        (["--help"], False),
    ],
)
def test_only_a_plain_push_takes_the_thin_path(argv: list[str], taken: bool) -> None:
    assert (thin.parse(argv) is not None) == taken


def test_the_files_sent_are_those_the_direct_path_may_read(tmp_path: Path) -> None:
    assert (thin.MAX_FILES, thin.MAX_BYTES) == (bundle.MAX_FILES, bundle.MAX_BLOB)
    (tmp_path / "lib").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "files" / ".d").mkdir(parents=True)
    for name in ("main.mcl", "lib/m.mcl", "lib/metadata.yaml", ".git/x.mcl", "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "files" / ".d" / "f").write_text("f")
    os.symlink(tmp_path / "lib" / "m.mcl", tmp_path / "link.mcl")  # not sent: not a file
    name, base, files = thin.read_files("lang", str(tmp_path / "main.mcl"))
    assert name == "main.mcl" and base == str(tmp_path.resolve())
    assert sorted(files) == ["files/.d/f", "lib/m.mcl", "lib/metadata.yaml", "main.mcl"]
    name, _, files = thin.read_files("yaml", str(tmp_path / "notes.txt"))
    assert name == "notes.txt" and sorted(files) == ["files/.d/f", "notes.txt"]
    # `lang DIR/`: every file; a symbolic link is the direct path's to refuse.
    with pytest.raises(thin.Fallback, match="symbolic link"):
        thin.read_files("lang", f"{tmp_path}/")
    os.unlink(tmp_path / "link.mcl")
    assert len(thin.read_files("lang", f"{tmp_path}/")[2]) == 6


def test_the_thin_path_imports_neither_the_cli_nor_grpc_nor_the_language(tmp_path: Path) -> None:
    """No agent here: `main` says so (None) having imported nothing heavy: not even `re`
    (`json`, `base64`) nor `enum`, also not for signing (`sshkey`)."""
    script = (
        "import sys\n"
        "from mgmt.deploy import client, sshkey\n"
        f"assert client.main(['--prefix', {str(tmp_path)!r}, '--unsigned', 'lang', 'x/']) is None\n"
        "heavy = {'asyncio', 'argparse', 'grpc', 'typing', 'mgmt.lang', 'mgmt.cli', 'socket',\n"
        "         're', 'enum', 'json', 'base64'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = python(script, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out


def test_the_launcher_starts_without_site_and_the_cli_gets_it(tmp_path: Path) -> None:
    """install.sh's `mgmt` starts Python with -S (the thin path needs no installed package)
    and -P (nothing imported from .venv/bin); a command that needs the installed packages
    (the direct path, here the check's YAML parser) runs `site` first."""
    launcher = ROOT / ".venv" / "bin" / "mgmt"
    assert launcher.read_text().splitlines()[0].endswith(" -SP"), "scripts/install.sh writes it"
    graph = tmp_path / "g.yaml"
    graph.write_text(f"graph: g\nresources:\n  file:\n    - name: {tmp_path}/x\n")
    for argv in (["check", str(graph)], ["deploy", "--prefix", str(tmp_path), "--help"]):
        out = subprocess.run(
            [str(launcher), *argv], check=False, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "Traceback" not in out.stderr, out
    script = "import sys; print('site' in sys.modules)"
    out = subprocess.run(
        [*launcher.read_text().splitlines()[0][2:].split(), "-c", script],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False", out


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"files": {"a/b.mcl": "QUJD", "é": ""}, "force": True, "keep": 0, "key": "", "n": None},
        {"error": 'x\n"y" \u2028 \U0001f600', "lines": ["a", "b"], "code": 2, "f": 1.5},
    ],
)
def test_the_wire_is_json_without_importing_it(message: dict[str, object]) -> None:
    """`_json`'s encoder and scanner: the bytes of `json.dumps`, the objects of `json.loads`."""
    import json

    data = thin.dumps(message)
    assert data == json.dumps(message, separators=(",", ":")).encode()
    assert thin.loads(data) == message == thin.loads(b" \n" + json.dumps(message).encode() + b"\n")


@pytest.mark.parametrize("data", [b"", b" ", b"{", b'{"a":1}x', b'{"a":1}{}', b"\xff", b"{'a':1}"])
def test_what_is_not_json_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        thin.loads(data)


def test_base64_is_strict_as_the_agent_is() -> None:
    import base64
    import binascii

    assert thin.b64encode(b"\0\xffab") == base64.b64encode(b"\0\xffab").decode()
    assert thin.b64decode("AP9hYg==") == b"\0\xffab"
    for bad in ("AP9hYg", "AP9h Yg==", "AP9hYg==x", "é"):
        with pytest.raises((binascii.Error, ValueError)):
            thin.b64decode(bad)


HOSTILE = """
import base64, json, os, socket, sys
from mgmt.deploy import client
os.chdir(sys.argv[1])  # its parents are root's alone
os.setgroups([]); os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(client.SOCKET + ".new"); os.rename(client.SOCKET + ".new", client.SOCKET); s.listen()
print("ready", flush=True)
s.settimeout(30)
conn, _ = s.accept(); conn.settimeout(30)
got = {}
try:
    got["request"] = sorted(client.receive(conn)["files"])
    client.send(conn, {"checked": True})
    client.send(conn, {"sign": base64.b64encode(b"mgmt deploy v1\\n{chosen by uid 65534}").decode()})
    got["signed"] = client.receive(conn)
    client.send(conn, {"done": "deploy 1: yaml g.yaml, 0"})
except Exception as err:
    got["ended"] = repr(err)
print(json.dumps(got))
"""


def test_an_agent_of_another_user_is_not_trusted(tmp_path: Path) -> None:
    """A socket another user listens on (a prefix it could write in) gets neither the
    program's files nor a signature: the direct path runs."""
    from tests.mgmt.deploy.keys import make_key

    key = make_key(tmp_path / "keys", "alice")
    prefix = tmp_path / "prefix"
    prefix.mkdir(mode=0o777)
    os.chmod(prefix, 0o777)
    (tmp_path / "g.yaml").write_text("graph: g\nresources: {}\n")
    hostile = subprocess.Popen(
        [sys.executable, "-c", HOSTILE, str(prefix)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert hostile.stdout is not None and hostile.stdout.readline() == "ready\n"
        assert (prefix / thin.SOCKET).stat().st_uid == 65534
        argv = ["--prefix", str(prefix), "--sign-key", str(key.private), "yaml"]
        assert thin.main([*argv, str(tmp_path / "g.yaml")]) is None
    finally:
        if hostile.poll() is None:
            hostile.kill()
        out, _ = hostile.communicate(timeout=30)
    assert "signed" not in out and "request" not in out, out


def _stderr_closed(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """`argv` started with fd 2 closed (`2>&-`, as some cron jobs are)."""
    return subprocess.run(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", *argv],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--bogus"],
        ["deploy", "yaml"],
        ["deploy", "--keep", "0", "--unsigned", "lang", "d/"],
        ["deploy", "--list", "--unsigned", "yaml", "g"],
        ["run", "--bogus"],
    ],
)
def test_with_stderr_closed_a_usage_error_says_nothing_and_exits_2(argv: list[str]) -> None:
    """sys.stderr is None then, and print(..., file=sys.stderr) wrote the usage error to
    stdout (where `mgmt deploy --list` writes its table)."""
    proc = _stderr_closed([*MGMT, *argv])
    assert (proc.returncode, proc.stdout) == (2, b"")


def test_with_stderr_closed_fd_2_is_dev_null() -> None:
    """Not the next file opened, where what a child writes to its stderr would land."""
    code = "import os\nfrom mgmt.__main__ import quiet_stderr\nquiet_stderr()\n"
    code += "print(os.readlink('/proc/self/fd/2'), os.get_inheritable(2))\n"
    proc = _stderr_closed([sys.executable, "-c", code])
    assert (proc.returncode, proc.stdout) == (0, b"/dev/null True\n")
