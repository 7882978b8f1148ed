"""`mgmt deploy`'s thin client: which commands it takes, what files it sends (real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgmt.deploy import bundle
from mgmt.deploy import client as thin
from tests.e2e.helpers import ROOT


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
    """No agent here: `main` says so (None) having imported nothing heavy."""
    script = (
        "import sys\n"
        "from mgmt.deploy import client\n"
        f"assert client.main(['--prefix', {str(tmp_path)!r}, '--unsigned', 'lang', 'x/']) is None\n"
        "heavy = {'asyncio', 'argparse', 'grpc', 'typing', 'mgmt.lang', 'mgmt.cli', 'socket'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
